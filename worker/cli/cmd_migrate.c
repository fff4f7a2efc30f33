/* cmd_migrate.c: `tpctl migrate`: applies the SQL migrations (under the advisory lock). */
#include "cli/cli_common.h"
#include "tp/store.h"

#include <stdio.h>
#include <string.h>

int tpctl_cmd_migrate(int argc, char **argv) {
    const char *path = NULL;
    char err[512];
    tp_config *cfg;
    tp_db *db = NULL;
    int rc;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            path = argv[++i];
        } else {
            fprintf(stderr, "usage: tpctl migrate [--config FILE]\n");
            return strcmp(argv[i], "--help") == 0 ? 0 : 2;
        }
    }
    cfg = tpctl_config_load(path);
    if (!cfg)
        return 2;
    rc = tp_db_connect_cfg(cfg, &db, err, sizeof(err));
    if (rc == 0)
        rc = tp_store_migrate(db, tp_config_get(cfg, "store.migrations_dir"), err, sizeof(err));
    if (rc != 0)
        fprintf(stderr, "tpctl migrate: %s\n", err);
    else
        printf("migrations applied\n");
    tp_db_close(db);
    tp_config_free(cfg);
    return rc == 0 ? 0 : 1;
}
