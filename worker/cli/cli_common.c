/* cli_common.c: config loading and option-value parsing shared by tpctl's subcommands. */
#include "cli/cli_common.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

int tpctl_parse_ll(const char *s, long long min, long long max, long long *out) {
    char *end;
    errno = 0;
    *out = strtoll(s, &end, 10);
    return (errno || !*s || *end || *out < min || *out > max) ? -1 : 0;
}

int tpctl_set_roles(tp_actor *actor, const char *csv) {
    char buf[1024];
    char *save = NULL, *tok;
    snprintf(buf, sizeof(buf), "%s", csv);
    actor->n_roles = 0;
    for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (actor->n_roles == TP_ROLES_MAX || strlen(tok) > TP_ROLE_MAX)
            return -1;
        snprintf(actor->roles[actor->n_roles++], TP_ROLE_MAX + 1, "%s", tok);
    }
    return 0;
}
