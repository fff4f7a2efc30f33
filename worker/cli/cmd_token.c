/* cmd_token.c: `tpctl token`: mints a development HS256 bearer token with iss and aud from the
 * config, signed with the dev secret (jwt.key_file or --key-file). */
#include "tp/config.h"
#include "tp/error.h"
#include "tp/ingress.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Runs `tpctl token ...`; argv[0] is "token". Returns the exit status (0, 1 usage/IO, 2 usage).
 * Declared here for -Wmissing-prototypes; tpctl's dispatch declares it too. */
int tpctl_cmd_token(int argc, char **argv);

static void token_usage(FILE *out) {
    fprintf(out, "usage: tpctl token --sub SUBJECT [--roles a,b] [--ttl SECONDS] [--key-file FILE]\n"
                 "                   [--config FILE]\n"
                 "  prints an HS256 development token (iss/aud from the config; ttl default 3600)\n");
}

int tpctl_cmd_token(int argc, char **argv) {
    const char *sub = NULL, *roles = NULL, *key_file = NULL, *config_file = NULL;
    long long ttl = 3600;
    char errstr[512] = "";
    int status = 2;
    /* argv[0] is "token"; options follow. */
    for (int i = 1; i < argc; i++) {
        const char *opt = argv[i];
        if (strcmp(opt, "--help") == 0 || strcmp(opt, "-h") == 0) {
            token_usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "tpctl token: %s needs a value\n", opt);
            token_usage(stderr);
            return 2;
        }
        const char *val = argv[++i];
        if (strcmp(opt, "--sub") == 0) {
            sub = val;
        } else if (strcmp(opt, "--roles") == 0) {
            roles = val;
        } else if (strcmp(opt, "--key-file") == 0) {
            key_file = val;
        } else if (strcmp(opt, "--config") == 0) {
            config_file = val;
        } else if (strcmp(opt, "--ttl") == 0) {
            char *end = NULL;
            errno = 0;
            ttl = strtoll(val, &end, 10);
            if (errno || !end || *end || ttl <= 0 || ttl > 366LL * 24 * 3600) {
                fprintf(stderr, "tpctl token: --ttl must be 1..31622400 seconds\n");
                return 2;
            }
        } else {
            fprintf(stderr, "tpctl token: unknown option %s\n", opt);
            token_usage(stderr);
            return 2;
        }
    }
    if (!sub) {
        fprintf(stderr, "tpctl token: --sub is required\n");
        token_usage(stderr);
        return 2;
    }
    tp_config *cfg = tp_config_new();
    char *token = NULL;
    if (!cfg) {
        fprintf(stderr, "tpctl token: out of memory\n");
        return 1;
    }
    if ((config_file && tp_config_load_file(cfg, config_file, errstr, sizeof(errstr)) != 0) ||
        tp_config_apply_env(cfg, errstr, sizeof(errstr)) != 0) {
        fprintf(stderr, "tpctl token: %s\n", errstr);
        goto out_free;
    }
    if (strcmp(tp_config_get(cfg, "jwt.alg"), "HS256") != 0)
        fprintf(stderr, "tpctl token: warning: jwt.alg is %s; this HS256 token will not verify\n",
                tp_config_get(cfg, "jwt.alg"));
    if (tp_auth_mint_dev(cfg, key_file, sub, roles, ttl, &token, errstr, sizeof(errstr)) != 0) {
        fprintf(stderr, "tpctl token: %s\n", errstr);
        status = 1;
        goto out_free;
    }
    printf("%s\n", token);
    status = 0;
out_free:
    free(token);
    tp_config_free(cfg);
    return status;
}
