/* cli_common.c: config loading shared by tpctl's subcommands. */
#include "cli/cli_common.h"

#include <stdio.h>

tp_config *tpctl_config_load(const char *path) {
    char err[512];
    tp_config *cfg = tp_config_new();
    if (!cfg) {
        fprintf(stderr, "tpctl: out of memory\n");
        return NULL;
    }
    if ((path && tp_config_load_file(cfg, path, err, sizeof(err)) != 0) ||
        tp_config_apply_env(cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "tpctl: config: %s\n", err);
        tp_config_free(cfg);
        return NULL;
    }
    return cfg;
}
