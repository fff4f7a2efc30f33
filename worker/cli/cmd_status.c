/* cmd_status.c: `tpctl status <requestId>`: the request's state and stage conditions as JSON. */
#include "cli/cli_common.h"
#include "tp/stages.h"
#include "tp/store.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int tpctl_cmd_status(int argc, char **argv) {
    const char *path = NULL, *id = NULL;
    char err[512];
    tp_config *cfg;
    tp_db *db = NULL;
    char *json;
    int status = 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
            path = argv[++i];
        else if (argv[i][0] != '-' && !id)
            id = argv[i];
        else {
            fprintf(stderr, "usage: tpctl status [--config FILE] REQUEST_ID\n");
            return strcmp(argv[i], "--help") == 0 ? 0 : 2;
        }
    }
    if (!id) {
        fprintf(stderr, "usage: tpctl status [--config FILE] REQUEST_ID\n");
        return 2;
    }
    cfg = tpctl_config_load(path);
    if (!cfg)
        return 2;
    if (tp_db_connect_cfg(cfg, &db, err, sizeof(err)) != 0) {
        fprintf(stderr, "tpctl status: %s\n", err);
        goto out;
    }
    json = tp_stages_status_json(db, id);
    if (!json) {
        fprintf(stderr, "tpctl status: no request %s\n", id);
        goto out;
    }
    {
        json_t *doc = json_loads(json, 0, NULL);
        char *pretty = doc ? json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
        printf("%s\n", pretty ? pretty : json);
        free(pretty);
        json_decref(doc);
    }
    free(json);
    status = 0;
out:
    tp_db_close(db);
    tp_config_free(cfg);
    return status;
}
