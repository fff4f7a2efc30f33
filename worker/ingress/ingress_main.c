/* tp-ingress: serve the admin and self-serve HTTP API: config, the server with the production
 * hooks (PostgreSQL, Kafka, OPA: backend.c), SIGTERM drain. */
#include "tp/config.h"
#include "tp/error.h"
#include "tp/ingress.h"
#include "tp/log.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *out) {
    fprintf(out, "usage: tp-ingress [--config FILE] [--help] [--version]\n"
                 "  serve the admin and self-serve HTTP API on <ingress.listen_host>:<ingress.listen_port>\n");
}

int main(int argc, char **argv) {
    const char *config_file = NULL;
    char errstr[512] = "";
    int status = 1;
    /* Before anything can write: a closed stderr pipe or peer must give EPIPE, never kill us. */
    signal(SIGPIPE, SIG_IGN);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(argv[i], "--version") == 0) {
            printf("tp-ingress %s\n", TP_VERSION);
            return 0;
        }
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            config_file = argv[++i];
            continue;
        }
        usage(stderr);
        return 2;
    }
    /* Hooks block on the libuv pool; give it more than the default 4 threads. */
    setenv("UV_THREADPOOL_SIZE", "16", 0);

    tp_config *cfg = tp_config_new();
    tp_ingress_backend *backend = NULL;
    tp_ingress_server *srv = NULL;
    if (!cfg) {
        fprintf(stderr, "tp-ingress: out of memory\n");
        return 1;
    }
    if ((config_file && tp_config_load_file(cfg, config_file, errstr, sizeof(errstr)) != 0) ||
        tp_config_apply_env(cfg, errstr, sizeof(errstr)) != 0)
        goto out_error;
    if (tp_ingress_backend_new(cfg, &backend, errstr, sizeof(errstr)) != 0)
        goto out_error;
    tp_ingress_hooks hooks;
    tp_ingress_backend_hooks(backend, &hooks);
    if (tp_ingress_server_new(cfg, &hooks, &srv, errstr, sizeof(errstr)) != 0)
        goto out_error;
    status = tp_ingress_server_run(srv, true) == 0 ? 0 : 1;
    goto out_free;
out_error:
    tp_log_error("ingress", "startup failed: %s", errstr);
out_free:
    if (tp_ingress_server_free(srv) != 0) {
        /* A hook still runs on a pool thread and uses the backend: leave both to the exit. */
        tp_log_warn("ingress", "exiting with work still running on the pool");
        backend = NULL;
    }
    tp_ingress_backend_free(backend);
    tp_config_free(cfg);
    return status;
}
