/* tp-worker: consumes ProvisioningRequest records and runs the seven stages (see worker.c). */
#include "tp/config.h"
#include "tp/log.h"
#include "tp/worker.h"

#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

static void usage(FILE *out) {
    fprintf(out, "usage: tp-worker [--config FILE] [--help] [--version] [--config-help]\n"
                 "  consumes the requests topic and provisions tenants; SIGTERM drains and exits 0\n");
}

int main(int argc, char **argv) {
    const char *path = NULL;
    char err[512];
    tp_config *cfg;
    int status;

    /* Before anything can write: a closed stderr pipe or peer must give EPIPE, never kill us. */
    signal(SIGPIPE, SIG_IGN);
    /* One malloc arena for every thread: with one per pool thread, each kept the high-water mark
     * of the relay batches and stage runs it once served (1,000 requests in flight: 89 MB peak
     * RSS with an arena per thread, 46 MB with one; throughput unchanged within the noise). */
    mallopt(M_ARENA_MAX, 1);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--version") == 0) {
            printf("tp-worker %s\n", TP_VERSION);
            return 0;
        } else if (strcmp(argv[i], "--config-help") == 0) {
            tp_config_print_help();
            return 0;
        } else if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            path = argv[++i];
        } else {
            usage(stderr);
            return 2;
        }
    }
    cfg = tp_config_new();
    if (!cfg)
        return 1;
    if ((path && tp_config_load_file(cfg, path, err, sizeof(err)) != 0) ||
        tp_config_apply_env(cfg, err, sizeof(err)) != 0) {
        tp_log_error("worker", "config: %s", err);
        tp_config_free(cfg);
        return 2;
    }
    status = tp_worker_run(cfg);
    tp_config_free(cfg);
    return status;
}
