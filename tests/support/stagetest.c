/* stagetest.c: the scratch world of the in-process stage tests (stagetest.h). */
#include "support/stagetest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tp/config.h"

int stagetest_open(stagetest *s) {
    char err[256], priv[128], pub[128];
    size_t len = 0;
    const char *opa = pgtest_env("TP_OPA_URL");
    memset(s, 0, sizeof(*s));
    if (!opa) {
        fprintf(stderr, "TP_OPA_URL is not set and .stack/env has none: run scripts/stack up\n");
        return -1;
    }
    if (pgtest_create_migrated(&s->t) != 0)
        return -1;
    if (tp_db_connect(s->t.dsn, &s->db, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    s->pc = tp_policy_client_new(opa, 3000);
    snprintf(s->keydir, sizeof(s->keydir), "/tmp/tp_stagetest_keys_XXXXXX");
    if (!s->pc || !mkdtemp(s->keydir)) {
        s->keydir[0] = '\0';
        return -1;
    }
    snprintf(priv, sizeof(priv), "%s/receipts.key", s->keydir);
    snprintf(pub, sizeof(pub), "%s/receipts.pub", s->keydir);
    if (tp_receipt_keygen(priv, pub) != 0 || tp_signer_load(priv, &s->signer) != 0)
        return -1;
    if (tp_read_file("config/quota-tiers.json", 65536, &s->tiers, &len) != 0 ||
        tp_quota_tiers_parse(s->tiers, s->tier_table, err, sizeof(err)) != 0)
        return -1;
    s->env.db = s->db;
    s->env.policy = s->pc;
    s->env.signer = s->signer;
    s->env.tiers_json = s->tiers;
    s->env.tiers = s->tier_table;
    s->env.region_allowlist = STAGETEST_ALLOWLIST;
    s->env.max_attempts = 3;
    s->env.max_tenants_per_user = 3;
    return 0;
}

int stagetest_close(stagetest *s) {
    char path[128];
    tp_db_close(s->db);
    tp_policy_client_free(s->pc);
    tp_signer_free(s->signer);
    free(s->tiers);
    if (s->keydir[0]) {
        snprintf(path, sizeof(path), "%s/receipts.key", s->keydir);
        unlink(path);
        snprintf(path, sizeof(path), "%s/receipts.pub", s->keydir);
        unlink(path);
        rmdir(s->keydir);
    }
    return s->t.name[0] ? pgtest_drop(&s->t) : 0;
}
