/* stagetest.h: the world of the tests that run stages in-process: a migrated scratch database and
 * a connection to it, an OPA client of the stack's OPA, a fresh receipt signing key (in a
 * temporary folder), config/quota-tiers.json, and a tp_stage_env over them (3 attempts, a cap of
 * 3 tenants per self-serve user, the region allow-list below). */
#ifndef TP_TEST_STAGETEST_H
#define TP_TEST_STAGETEST_H

#include "support/pgtest.h"
#include "tp/policy.h"
#include "tp/receipts.h"
#include "tp/stages.h"
#include "tp/store.h"

#define STAGETEST_ALLOWLIST "us-east-1,us-west-2,eu-central-1,eu-west-1"

typedef struct stagetest {
    pgtest_db t;
    tp_db *db;
    tp_policy_client *pc;
    tp_signer *signer;
    char *tiers; /* config/quota-tiers.json as text */
    tp_quota_tier tier_table[TP_QUOTA_TIERS_N]; /* the same, parsed */
    char keydir[64];
    tp_stage_env env;
} stagetest;

/* Fills s (zeroed first). 0, or -1 with the reason printed (TP_OPA_URL unset, no database...);
 * stagetest_close is safe on a half-opened s. */
int stagetest_open(stagetest *s);
/* Closes and frees what s holds, removes the key folder and drops the database; pgtest_drop's
 * result. */
int stagetest_close(stagetest *s);

#endif
