/* test_stages_lifecycle.c: tenant actions (CHANGE_PLAN, SUSPEND, RESUME, DEPROVISION) on the real
 * stack (PostgreSQL scratch database, OPA serving config/policies, real Ed25519 sealing): the dry
 * run (tp_stages_action_preview) decides and lists changes without writing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "support/pgtest.h"
#include "tp/config.h"
#include "tp/error.h"
#include "tp/policy.h"
#include "tp/receipts.h"
#include "tp/stages.h"
#include "tp/store.h"

#define ALLOWLIST "us-east-1,us-west-2,eu-central-1,eu-west-1"

typedef struct fixture {
    pgtest_db t;
    tp_db *db;
    tp_policy_client *pc;
    tp_signer *signer;
    char *tiers;
    char keydir[64];
    tp_stage_env env;
    tp_policy_context pctx;
} fixture;

static fixture fx;

static int setup(void **state) {
    char err[256], priv[128], pub[128];
    size_t len = 0;
    const char *opa = pgtest_env("TP_OPA_URL");
    memset(&fx, 0, sizeof(fx));
    if (!opa) {
        fprintf(stderr, "TP_OPA_URL is not set and .stack/env has none: run scripts/stack up\n");
        return -1;
    }
    if (pgtest_create_migrated(&fx.t) != 0)
        return -1;
    if (tp_db_connect(fx.t.dsn, &fx.db, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    fx.pc = tp_policy_client_new(opa, 3000);
    snprintf(fx.keydir, sizeof(fx.keydir), "/tmp/tp_actions_keys_XXXXXX");
    if (!fx.pc || !mkdtemp(fx.keydir))
        return -1;
    snprintf(priv, sizeof(priv), "%s/receipts.key", fx.keydir);
    snprintf(pub, sizeof(pub), "%s/receipts.pub", fx.keydir);
    if (tp_receipt_keygen(priv, pub) != 0 || tp_signer_load(priv, &fx.signer) != 0)
        return -1;
    if (tp_read_file("config/quota-tiers.json", 65536, &fx.tiers, &len) != 0)
        return -1;
    fx.env.db = fx.db;
    fx.env.policy = fx.pc;
    fx.env.signer = fx.signer;
    fx.env.tiers_json = fx.tiers;
    fx.env.region_allowlist = ALLOWLIST;
    fx.env.max_attempts = 3;
    fx.env.max_tenants_per_user = 3;
    fx.pctx.tiers_json = fx.tiers;
    *state = &fx;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    char path[128];
    tp_db_close(f->db);
    tp_policy_client_free(f->pc);
    tp_signer_free(f->signer);
    free(f->tiers);
    snprintf(path, sizeof(path), "%s/receipts.key", f->keydir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/receipts.pub", f->keydir);
    unlink(path);
    rmdir(f->keydir);
    return pgtest_drop(&f->t);
}

static void set_actor(tp_request *r, tp_source src) {
    r->source = src;
    if (src == TP_SOURCE_ADMIN_API) {
        snprintf(r->actor.id, sizeof(r->actor.id), "admin-1");
        snprintf(r->actor.type, sizeof(r->actor.type), "user");
        r->actor.n_roles = 1;
        snprintf(r->actor.roles[0], sizeof(r->actor.roles[0]), "admin");
    } else if (src == TP_SOURCE_SELF_SERVE_API) {
        snprintf(r->actor.id, sizeof(r->actor.id), "user-42");
        snprintf(r->actor.type, sizeof(r->actor.type), "user");
    } else {
        snprintf(r->actor.id, sizeof(r->actor.id), "billing");
        snprintf(r->actor.type, sizeof(r->actor.type), "system");
    }
}

/* A provisioning request (seats 40, so FREE's cap of 5 is exceeded). */
static void make_provision(tp_request *r, const char *rid, const char *slug, tp_source src,
                           tp_plan plan) {
    memset(r, 0, sizeof(*r));
    snprintf(r->request_id, sizeof(r->request_id), "%s", rid);
    set_actor(r, src);
    snprintf(r->tenant.name, sizeof(r->tenant.name), "Tenant %s", slug);
    snprintf(r->tenant.slug, sizeof(r->tenant.slug), "%s", slug);
    r->tenant.residency = TP_RESIDENCY_US;
    r->plan = plan;
    r->environment = TP_ENV_PROD;
    r->has_requested_seats = true;
    r->requested_seats = 40;
    r->has_storage_estimate = true;
    r->storage_estimate_bytes = 1000000;
    r->submitted_at_ms = 1700000000000;
}

/* An action request as a TenantActionRequest decodes: only the slug of the tenant spec. */
static void make_action(tp_request *r, const char *rid, const char *slug, tp_action action,
                        tp_source src) {
    memset(r, 0, sizeof(*r));
    r->action = action;
    snprintf(r->request_id, sizeof(r->request_id), "%s", rid);
    set_actor(r, src);
    snprintf(r->tenant.slug, sizeof(r->tenant.slug), "%s", slug);
    r->submitted_at_ms = 1700000000000;
    if (action == TP_ACTION_SUSPEND)
        snprintf(r->reason, sizeof(r->reason), "PAYMENT_FAILED");
}

static void make_plan_change(tp_request *r, const char *rid, const char *slug, tp_source src,
                             tp_plan plan) {
    make_action(r, rid, slug, TP_ACTION_CHANGE_PLAN, src);
    r->has_plan = true;
    r->plan = plan;
}

static void run_ok(fixture *f, const tp_request *req) {
    tp_run_result out;
    assert_int_equal(tp_stages_run(&f->env, req, &out), 0);
    if (out.status != TP_RUN_SUCCEEDED)
        fprintf(stderr, "run %s: status %d stage %s reason %s message %s\n", req->request_id,
                out.status, tp_stage_name(out.stage), out.failure_reason, out.message);
    assert_int_equal(out.status, TP_RUN_SUCCEEDED);
}

/* A digest of every row a request or an action could touch: equal digests, nothing written. */
static void db_digest(tp_db *db, char *buf, size_t cap) {
    assert_int_equal(pgtest_query_text(db,
                                       "SELECT md5(string_agg(x, '|' ORDER BY x)) FROM ("
                                       "SELECT t::text x FROM tenants t UNION ALL "
                                       "SELECT q::text FROM tenant_quotas q UNION ALL "
                                       "SELECT p::text FROM tenant_partitions p UNION ALL "
                                       "SELECT n::text FROM tenant_namespaces n UNION ALL "
                                       "SELECT r::text FROM provisioning_requests r UNION ALL "
                                       "SELECT s::text FROM provisioning_stages s UNION ALL "
                                       "SELECT d::text FROM policy_decisions d UNION ALL "
                                       "SELECT o.receipt_id || o.sequence FROM receipt_outbox o "
                                       "UNION ALL SELECT c::text FROM tlog_counter c) u",
                                       buf, cap),
                     0);
}

/* The change of field in a changes array, or NULL. */
static json_t *change_of(json_t *arr, const char *field) {
    size_t i;
    json_t *c;
    json_array_foreach(arr, i, c) {
        if (strcmp(json_string_value(json_object_get(c, "field")), field) == 0)
            return c;
    }
    return NULL;
}

static void assert_change(json_t *arr, const char *field, const char *from, const char *to) {
    json_t *c = change_of(arr, field);
    if (!c)
        fail_msg("no change of %s", field);
    assert_string_equal(json_string_value(json_object_get(c, "from")), from);
    assert_string_equal(json_string_value(json_object_get(c, "to")), to);
}

static void test_preview(void **state) {
    fixture *f = *state;
    tp_request prov, req;
    tp_action_preview pv;
    char before[64], after[64];
    json_t *changes;

    make_provision(&prov, "req-pv-prov", "pv-pro", TP_SOURCE_SELF_SERVE_API, TP_PLAN_PRO);
    run_ok(f, &prov);
    db_digest(f->db, before, sizeof(before));

    /* Allowed: billing downgrades PRO to STARTER (40 seats fit STARTER's 50). */
    make_plan_change(&req, "req-pv-1", "pv-pro", TP_SOURCE_BILLING, TP_PLAN_STARTER);
    assert_int_equal(tp_stages_action_preview(f->db, f->pc, &f->pctx, &req, &pv), 0);
    assert_true(pv.allowed);
    assert_int_equal(pv.reason, TP_PREVIEW_ALLOWED);
    assert_true(pv.policy_asked);
    assert_true(pv.decision.allow);
    assert_true(pv.decision.decision_id[0] != '\0');
    assert_string_equal(pv.decision.policy_revision, "tenants.change_plan/2026-12.1");
    assert_string_equal(pv.tenant_status, "active");
    assert_true(strncmp(pv.tenant_id, "tenant-", 7) == 0);
    changes = json_loads(pv.changes_json, 0, NULL);
    assert_true(json_is_array(changes));
    assert_change(changes, "plan", "PRO", "STARTER");
    assert_change(changes, "quota.tier", "PRO", "STARTER");
    assert_int_equal(json_integer_value(json_object_get(change_of(changes, "quota.seatCap"), "to")), 50);
    assert_null(change_of(changes, "partitions.primary.isolation")); /* shared either way */
    json_decref(changes);
    tp_action_preview_release(&pv);

    /* Upgrade to ENTERPRISE by an admin: the partitions become dedicated. */
    make_plan_change(&req, "req-pv-2", "pv-pro", TP_SOURCE_ADMIN_API, TP_PLAN_ENTERPRISE);
    assert_int_equal(tp_stages_action_preview(f->db, f->pc, &f->pctx, &req, &pv), 0);
    assert_true(pv.allowed);
    changes = json_loads(pv.changes_json, 0, NULL);
    assert_change(changes, "partitions.primary.isolation", "shared", "dedicated");
    assert_change(changes, "partitions.audit.isolation", "shared", "dedicated");
    json_decref(changes);
    tp_action_preview_release(&pv);

    /* Denied: the current 40 seats exceed FREE's cap; the changes asked for are still listed. */
    make_plan_change(&req, "req-pv-3", "pv-pro", TP_SOURCE_ADMIN_API, TP_PLAN_FREE);
    assert_int_equal(tp_stages_action_preview(f->db, f->pc, &f->pctx, &req, &pv), 0);
    assert_false(pv.allowed);
    assert_int_equal(pv.reason, TP_PREVIEW_POLICY_DENIED);
    assert_true(pv.policy_asked);
    assert_false(pv.decision.allow);
    assert_int_equal(pv.decision.n_reasons, 1);
    assert_string_equal(pv.decision.reasons[0], "SEATS_OVER_PLAN_CAP");
    assert_string_equal(pv.message, "SEATS_OVER_PLAN_CAP");
    changes = json_loads(pv.changes_json, 0, NULL);
    assert_change(changes, "plan", "PRO", "FREE");
    json_decref(changes);
    tp_action_preview_release(&pv);

    /* The owner (user-42) may downgrade its own tenant; someone else may not; nobody self-serve
     * goes to ENTERPRISE. */
    make_plan_change(&req, "req-pv-4", "pv-pro", TP_SOURCE_SELF_SERVE_API, TP_PLAN_STARTER);
    assert_int_equal(tp_stages_action_preview(f->db, f->pc, &f->pctx, &req, &pv), 0);
    assert_true(pv.allowed);
    tp_action_preview_release(&pv);
    snprintf(req.actor.id, sizeof(req.actor.id), "user-99");
    assert_int_equal(tp_stages_action_preview(f->db, f->pc, &f->pctx, &req, &pv), 0);
    assert_int_equal(pv.reason, TP_PREVIEW_POLICY_DENIED);
    assert_string_equal(pv.decision.reasons[0], "NOT_TENANT_OWNER");
    tp_action_preview_release(&pv);
    make_plan_change(&req, "req-pv-5", "pv-pro", TP_SOURCE_SELF_SERVE_API, TP_PLAN_ENTERPRISE);
    assert_int_equal(tp_stages_action_preview(f->db, f->pc, &f->pctx, &req, &pv), 0);
    assert_string_equal(pv.decision.reasons[0], "ENTERPRISE_NOT_SELF_SERVE");
    tp_action_preview_release(&pv);

    /* Self-serve may not suspend, even its own tenant. */
    make_action(&req, "req-pv-6", "pv-pro", TP_ACTION_SUSPEND, TP_SOURCE_SELF_SERVE_API);
    assert_int_equal(tp_stages_action_preview(f->db, f->pc, &f->pctx, &req, &pv), 0);
    assert_int_equal(pv.reason, TP_PREVIEW_POLICY_DENIED);
    assert_string_equal(pv.decision.reasons[0], "SELF_SERVE_NOT_ALLOWED");
    tp_action_preview_release(&pv);

    /* Invalid for the state: resume an active tenant; OPA is not asked, nothing would change. */
    make_action(&req, "req-pv-7", "pv-pro", TP_ACTION_RESUME, TP_SOURCE_ADMIN_API);
    assert_int_equal(tp_stages_action_preview(f->db, f->pc, &f->pctx, &req, &pv), 0);
    assert_false(pv.allowed);
    assert_int_equal(pv.reason, TP_PREVIEW_INVALID_STATE);
    assert_false(pv.policy_asked);
    assert_string_equal(pv.tenant_status, "active");
    assert_string_equal(pv.changes_json, "[]");
    assert_non_null(strstr(pv.message, "active"));
    tp_action_preview_release(&pv);

    /* Unknown slug. */
    make_action(&req, "req-pv-8", "nobody-here", TP_ACTION_DEPROVISION, TP_SOURCE_ADMIN_API);
    assert_int_equal(tp_stages_action_preview(f->db, f->pc, &f->pctx, &req, &pv), 0);
    assert_int_equal(pv.reason, TP_PREVIEW_TENANT_NOT_FOUND);
    assert_string_equal(tp_preview_reason_name(pv.reason), "TENANT_NOT_FOUND");
    assert_string_equal(pv.tenant_id, "");
    assert_string_equal(pv.changes_json, "[]");
    tp_action_preview_release(&pv);

    /* A deprovision lists the purge-after of the tenant and each partition. */
    make_action(&req, "req-pv-9", "pv-pro", TP_ACTION_DEPROVISION, TP_SOURCE_BILLING);
    assert_int_equal(tp_stages_action_preview(f->db, f->pc, &f->pctx, &req, &pv), 0);
    assert_true(pv.allowed);
    changes = json_loads(pv.changes_json, 0, NULL);
    assert_non_null(change_of(changes, "purgeAfter"));
    assert_non_null(change_of(changes, "partitions.analytics.purgeAfter"));
    assert_change(changes, "status", "active", "deprovisioned");
    json_decref(changes);
    tp_action_preview_release(&pv);

    /* Not an action. */
    assert_int_equal(tp_stages_action_preview(f->db, f->pc, &f->pctx, &prov, &pv), 0);
    assert_int_equal(pv.reason, TP_PREVIEW_NOT_AN_ACTION);
    tp_action_preview_release(&pv);

    /* OPA unreachable: no verdict, a transient error. */
    tp_policy_client *dead = tp_policy_client_new("http://127.0.0.1:1", 300);
    make_action(&req, "req-pv-10", "pv-pro", TP_ACTION_SUSPEND, TP_SOURCE_BILLING);
    assert_int_equal(tp_stages_action_preview(f->db, dead, &f->pctx, &req, &pv), TP_EOPA_UNAVAILABLE);
    assert_false(pv.allowed);
    assert_null(pv.changes_json);
    tp_policy_client_free(dead);

    /* Nothing of all that was written. */
    db_digest(f->db, after, sizeof(after));
    assert_string_equal(before, after);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_preview, setup, teardown),
    };
    if (getenv("TP_TEST_FILTER"))
        cmocka_set_test_filter(getenv("TP_TEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
