/* test_stages_run.c: the seven stages on the real stack (PostgreSQL scratch database, the stack's
 * OPA with config/policies, real Ed25519 sealing): happy path per plan, re-runs, slug conflicts,
 * denies, retries until exhaustion and replay, the isolation kill switch, concurrent runners. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "support/e2e.h"
#include "tp/tlog_db.h"

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "support/pgtest.h"
#include "support/stagetest.h"
#include "tp/config.h"
#include "tp/error.h"
#include "tp/policy.h"
#include "tp/receipts.h"
#include "tp/stages.h"
#include "tp/store.h"


typedef stagetest fixture;

static fixture fx;

static int setup(void **state) {
    *state = &fx;
    return stagetest_open(&fx);
}

static int teardown(void **state) { return stagetest_close(*state); }

static void make_req(tp_request *r, const char *rid, const char *slug, tp_source src, tp_plan plan) {
    memset(r, 0, sizeof(*r));
    snprintf(r->request_id, sizeof(r->request_id), "%s", rid);
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
    snprintf(r->tenant.name, sizeof(r->tenant.name), "Tenant %s", slug);
    snprintf(r->tenant.slug, sizeof(r->tenant.slug), "%s", slug);
    r->tenant.residency = TP_RESIDENCY_US;
    r->plan = plan;
    r->environment = TP_ENV_PROD;
    r->has_requested_seats = true;
    r->requested_seats = 3;
    r->has_storage_estimate = true;
    r->storage_estimate_bytes = 1000000;
    r->submitted_at_ms = 1700000000000;
}

static int64_t qint(tp_db *db, const char *sql, const char *p1) {
    int64_t v = -1;
    const char *params[1] = {p1};
    assert_int_equal(pgtest_query_int_p(db, sql, p1 ? 1 : 0, params, &v), 0);
    return v;
}

static void qtext(tp_db *db, const char *sql, const char *p1, char *buf, size_t cap) {
    const char *params[1] = {p1};
    assert_int_equal(tp_db_query_text(db, sql, 1, params, buf, cap, NULL), 0);
}

/* The tenant's outbox rows form a chain: sequence 1..n, each previous_hash the prior hash. */
static void assert_chain(tp_db *db, const char *tenant_id, int want) {
    tp_res *res = NULL;
    const char *p[1] = {tenant_id};
    assert_int_equal(tp_db_query(db, "SELECT sequence, previous_hash, hash, length(payload), "
                                     "envelope->>'payloadType' FROM receipt_outbox WHERE "
                                     "tenant_id = $1 ORDER BY sequence",
                                 1, p, &res),
                     0);
    assert_int_equal(tp_res_nrows(res), want);
    for (int r = 0; r < tp_res_nrows(res); r++) {
        int64_t seq = 0, plen = 0;
        assert_int_equal(tp_res_get_int64(res, r, 0, &seq), 0);
        assert_int_equal(seq, r + 1);
        if (r == 0)
            assert_string_equal(tp_res_get(res, r, 1), TP_RECEIPT_ZERO_HASH);
        else
            assert_string_equal(tp_res_get(res, r, 1), tp_res_get(res, r - 1, 2));
        assert_int_equal(strlen(tp_res_get(res, r, 2)), 64);
        assert_int_equal(tp_res_get_int64(res, r, 3, &plen), 0);
        assert_true(plen > 0);
        assert_string_equal(tp_res_get(res, r, 4), TP_RECEIPT_PAYLOAD_TYPE);
    }
    tp_res_free(res);
}

static void assert_provisioned(fixture *f, const tp_request *req, const char *region) {
    char tid[64], buf[128], want[128];
    tp_quota_tier q;
    qtext(f->db, "SELECT tenant_id FROM provisioning_requests WHERE request_id = $1", req->request_id,
          tid, sizeof(tid));
    assert_true(strncmp(tid, "tenant-", 7) == 0);
    qtext(f->db, "SELECT state FROM provisioning_requests WHERE request_id = $1", req->request_id,
          buf, sizeof(buf));
    assert_string_equal(buf, "SUCCEEDED");
    qtext(f->db, "SELECT status FROM tenants WHERE id = $1", tid, buf, sizeof(buf));
    assert_string_equal(buf, "active");
    qtext(f->db, "SELECT slug FROM tenant_namespaces WHERE tenant_id = $1", tid, buf, sizeof(buf));
    snprintf(want, sizeof(want), "%s-%s", req->tenant.slug, tp_environment_name(req->environment));
    assert_string_equal(buf, want);
    qtext(f->db, "SELECT id FROM tenant_namespaces WHERE tenant_id = $1", tid, buf, sizeof(buf));
    snprintf(want, sizeof(want), "ns_%s", tid);
    assert_string_equal(buf, want);
    assert_int_equal(qint(f->db, "SELECT count(*) FROM tenant_partitions WHERE tenant_id = $1", tid), 3);
    assert_int_equal(qint(f->db, "SELECT count(DISTINCT name) FROM tenant_partitions WHERE "
                                 "tenant_id = $1 AND name IN ('primary','analytics','audit')", tid), 3);
    char sql[256];
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM tenant_partitions WHERE tenant_id = $1 AND "
                               "region = '%s' AND isolation = '%s'",
             region, req->plan == TP_PLAN_ENTERPRISE ? "dedicated" : "shared");
    assert_int_equal(qint(f->db, sql, tid), 3);
    /* The quota row holds the tier's full vector. */
    assert_int_equal(tp_quota_tiers_get(f->tiers, req->plan, &q), 0);
    assert_int_equal(qint(f->db, "SELECT count(*) FROM tenant_quotas WHERE tenant_id = $1", tid), 1);
    qtext(f->db, "SELECT tier FROM tenant_quotas WHERE tenant_id = $1", tid, buf, sizeof(buf));
    assert_string_equal(buf, tp_plan_name(req->plan));
    assert_int_equal(qint(f->db, "SELECT requests_per_minute FROM tenant_quotas WHERE tenant_id = $1", tid), q.requests_per_minute);
    assert_int_equal(qint(f->db, "SELECT requests_per_day FROM tenant_quotas WHERE tenant_id = $1", tid), q.requests_per_day);
    assert_int_equal(qint(f->db, "SELECT ingest_events_per_minute FROM tenant_quotas WHERE tenant_id = $1", tid), q.ingest_events_per_minute);
    assert_int_equal(qint(f->db, "SELECT max_tokens_per_request FROM tenant_quotas WHERE tenant_id = $1", tid), q.max_tokens_per_request);
    assert_int_equal(qint(f->db, "SELECT storage_bytes FROM tenant_quotas WHERE tenant_id = $1", tid), q.storage_bytes);
    assert_int_equal(qint(f->db, "SELECT seat_cap FROM tenant_quotas WHERE tenant_id = $1", tid), q.seat_cap);
    assert_int_equal(qint(f->db, "SELECT round(burst_multiplier * 1000) FROM tenant_quotas WHERE tenant_id = $1", tid),
                     (int64_t)(q.burst_multiplier * 1000 + 0.5));
    /* Every stage SUCCEEDED, once. */
    assert_int_equal(qint(f->db, "SELECT count(*) FROM provisioning_stages WHERE request_id = $1 AND "
                                 "status = 'SUCCEEDED' AND attempts = 1 AND finished_at IS NOT NULL",
                          req->request_id), 7);
    /* One receipt per action type, chained. */
    assert_int_equal(qint(f->db, "SELECT count(DISTINCT action_type) FROM receipt_outbox WHERE "
                                 "request_id = $1 AND action_type IN ('TENANT_PROVISIONED', "
                                 "'TENANT_QUOTA_ASSIGNED', 'TENANT_ISOLATION_VERIFIED')",
                          req->request_id), 3);
    assert_chain(f->db, tid, 3);
    assert_int_equal(qint(f->db, "SELECT count(*) FROM policy_decisions WHERE request_id = $1 AND allow",
                          req->request_id), 1);
}

static void run_ok(fixture *f, const tp_request *req) {
    tp_run_result out;
    assert_int_equal(tp_stages_run(&f->env, req, &out), 0);
    if (out.status != TP_RUN_SUCCEEDED)
        fprintf(stderr, "run %s: status %d stage %s reason %s message %s\n", req->request_id,
                out.status, tp_stage_name(out.stage), out.failure_reason, out.message);
    assert_int_equal(out.status, TP_RUN_SUCCEEDED);
}

static void test_happy_path_each_plan(void **state) {
    fixture *f = *state;
    static const char *slugs[] = {"acme-free", "acme-starter", "acme-pro", "acme-enterprise"};
    for (int p = TP_PLAN_FREE; p <= TP_PLAN_ENTERPRISE; p++) {
        tp_request req;
        char rid[64];
        snprintf(rid, sizeof(rid), "req-plan-%d", p);
        make_req(&req, rid, slugs[p], TP_SOURCE_ADMIN_API, (tp_plan)p);
        assert_int_equal(tp_stages_accept(f->db, &req, NULL, "tenant.provisioning.requests.v1", 2, 40 + p), 0);
        run_ok(f, &req);
        assert_provisioned(f, &req, "us-east-1");
    }
    /* EU residency with an explicit region and another environment, from billing. */
    tp_request eu;
    make_req(&eu, "req-eu", "acme-eu", TP_SOURCE_BILLING, TP_PLAN_PRO);
    eu.tenant.residency = TP_RESIDENCY_EU;
    snprintf(eu.tenant.region, sizeof(eu.tenant.region), "eu-west-1");
    eu.environment = TP_ENV_STAGING;
    run_ok(f, &eu); /* without tp_stages_accept: the runner records it */
    assert_provisioned(f, &eu, "eu-west-1");
    char buf[64];
    qtext(f->db, "SELECT origin_topic || ':' || origin_partition || ':' || origin_offset FROM "
                 "provisioning_requests WHERE request_id = $1", "req-plan-3", buf, sizeof(buf));
    assert_string_equal(buf, "tenant.provisioning.requests.v1:2:43");
    qtext(f->db, "SELECT payload->'tenant'->>'slug' FROM provisioning_requests WHERE request_id = $1",
          "req-eu", buf, sizeof(buf));
    assert_string_equal(buf, "acme-eu");
    assert_int_equal(qint(f->db, "SELECT length(payload_fingerprint) FROM provisioning_requests "
                                 "WHERE request_id = $1", "req-eu"), 64);
}

static void test_same_request_three_times(void **state) {
    fixture *f = *state;
    tp_request req;
    make_req(&req, "req-dup", "dup-co", TP_SOURCE_ADMIN_API, TP_PLAN_PRO);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(tp_stages_accept(f->db, &req, NULL, "tenant.provisioning.requests.v1", 0, 7), 0);
        run_ok(f, &req);
    }
    assert_provisioned(f, &req, "us-east-1");
    assert_int_equal(qint(f->db, "SELECT count(*) FROM tenants WHERE slug = $1", "dup-co"), 1);
    assert_int_equal(qint(f->db, "SELECT count(*) FROM tenant_namespaces", NULL), 1);
    assert_int_equal(qint(f->db, "SELECT count(*) FROM tenant_partitions", NULL), 3);
    assert_int_equal(qint(f->db, "SELECT count(*) FROM tenant_quotas", NULL), 1);
    assert_int_equal(qint(f->db, "SELECT count(*) FROM receipt_outbox", NULL), 3);
    assert_int_equal(qint(f->db, "SELECT count(*) FROM provisioning_requests", NULL), 1);
    assert_int_equal(qint(f->db, "SELECT count(*) FROM provisioning_stages", NULL), 7);
    assert_int_equal(qint(f->db, "SELECT count(*) FROM policy_decisions", NULL), 1);
}

static void test_slug_taken(void **state) {
    fixture *f = *state;
    tp_request a, b;
    tp_run_result out;
    char tid_a[64], buf[128];
    make_req(&a, "req-slug-a", "shared-slug", TP_SOURCE_ADMIN_API, TP_PLAN_PRO);
    make_req(&b, "req-slug-b", "shared-slug", TP_SOURCE_ADMIN_API, TP_PLAN_FREE);
    run_ok(f, &a);
    qtext(f->db, "SELECT tenant_id FROM provisioning_requests WHERE request_id = $1", a.request_id,
          tid_a, sizeof(tid_a));
    for (int i = 0; i < 2; i++) { /* the second run is a no-op on a terminal request */
        assert_int_equal(tp_stages_run(&f->env, &b, &out), 0);
        assert_int_equal(out.status, TP_RUN_FAILED);
        assert_string_equal(out.failure_reason, "SLUG_TAKEN");
    }
    qtext(f->db, "SELECT state || '/' || failure_reason FROM provisioning_requests WHERE request_id = $1",
          b.request_id, buf, sizeof(buf));
    assert_string_equal(buf, "FAILED/SLUG_TAKEN");
    qtext(f->db, "SELECT status || '/' || reason FROM provisioning_stages WHERE request_id = $1 "
                 "AND stage = 'tenant'", b.request_id, buf, sizeof(buf));
    assert_string_equal(buf, "FAILED/SLUG_TAKEN");
    assert_int_equal(qint(f->db, "SELECT count(*) FROM provisioning_stages WHERE request_id = $1 AND "
                                 "status = 'PENDING'", b.request_id), 5);
    assert_int_equal(qint(f->db, "SELECT count(*) FROM provisioning_requests WHERE request_id = $1 "
                                 "AND tenant_id IS NULL", b.request_id), 1);
    /* The first tenant is untouched. */
    assert_int_equal(qint(f->db, "SELECT count(*) FROM tenants", NULL), 1);
    qtext(f->db, "SELECT created_by_request || '/' || plan || '/' || status FROM tenants WHERE id = $1",
          tid_a, buf, sizeof(buf));
    assert_string_equal(buf, "req-slug-a/PRO/active");
    assert_provisioned(f, &a, "us-east-1");
    assert_int_equal(qint(f->db, "SELECT count(*) FROM receipt_outbox WHERE request_id = $1", b.request_id), 0);
}

static void test_policy_deny(void **state) {
    fixture *f = *state;
    tp_request req;
    tp_run_result out;
    char buf[256];
    make_req(&req, "req-deny", "self-ent", TP_SOURCE_SELF_SERVE_API, TP_PLAN_ENTERPRISE);
    assert_int_equal(tp_stages_run(&f->env, &req, &out), 0);
    assert_int_equal(out.status, TP_RUN_DENIED);
    assert_int_equal(out.stage, TP_STAGE_POLICY);
    assert_string_equal(out.failure_reason, "POLICY_DENIED");
    assert_non_null(strstr(out.message, "ENTERPRISE_NOT_SELF_SERVE"));
    qtext(f->db, "SELECT state || '/' || failure_reason FROM provisioning_requests WHERE request_id = $1",
          req.request_id, buf, sizeof(buf));
    assert_string_equal(buf, "DENIED/POLICY_DENIED");
    assert_int_equal(qint(f->db, "SELECT count(*) FROM policy_decisions WHERE request_id = $1 AND NOT "
                                 "allow AND reasons ? 'ENTERPRISE_NOT_SELF_SERVE' AND decision_id <> '' "
                                 "AND policy_revision <> ''", req.request_id), 1);
    assert_int_equal(qint(f->db, "SELECT count(*) FROM tenants", NULL), 0);
    assert_int_equal(qint(f->db, "SELECT count(*) FROM tenant_namespaces", NULL), 0);
    assert_int_equal(qint(f->db, "SELECT count(*) FROM tenant_partitions", NULL), 0);
    assert_int_equal(qint(f->db, "SELECT count(*) FROM tenant_quotas", NULL), 0);
    assert_int_equal(qint(f->db, "SELECT count(*) FROM receipt_outbox", NULL), 0);
    /* A re-run of a denied request is a no-op. */
    assert_int_equal(tp_stages_run(&f->env, &req, &out), 0);
    assert_int_equal(out.status, TP_RUN_DENIED);
    assert_int_equal(qint(f->db, "SELECT count(*) FROM policy_decisions", NULL), 1);
    /* Replay is only for FAILED requests. */
    assert_int_equal(tp_stages_prepare_replay(f->db, req.request_id), TP_ECONFLICT);
    char *js = tp_stages_status_json(f->db, req.request_id);
    assert_non_null(js);
    json_t *o = json_loads(js, 0, NULL);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "state")), "DENIED");
    json_t *reasons = json_object_get(json_object_get(json_object_get(o, "policy"), "opa"), "reasons");
    assert_true(json_array_size(reasons) >= 1);
    json_decref(o);
    free(js);
}

/* Provisions n self-serve STARTER tenants of user-42 (requests req-<prefix>-<i>, slugs
 * <prefix>-<i>), each owned by that user. */
static void make_owned_tenants(fixture *f, const char *prefix, int n) {
    tp_request req;
    char buf[64];
    for (int i = 0; i < n; i++) {
        char rid[32], slug[32];
        snprintf(rid, sizeof(rid), "req-%s-%d", prefix, i);
        snprintf(slug, sizeof(slug), "%s-%d", prefix, i);
        make_req(&req, rid, slug, TP_SOURCE_SELF_SERVE_API, TP_PLAN_STARTER);
        run_ok(f, &req);
        qtext(f->db, "SELECT owner_id FROM tenants WHERE created_by_request = $1", rid, buf, sizeof(buf));
        assert_string_equal(buf, "user-42");
    }
}

static void test_self_serve_owner_and_limit(void **state) {
    fixture *f = *state;
    tp_request req;
    tp_run_result out;
    make_owned_tenants(f, "mine", 3);
    make_req(&req, "req-ss-3", "mine-3", TP_SOURCE_SELF_SERVE_API, TP_PLAN_STARTER);
    assert_int_equal(tp_stages_run(&f->env, &req, &out), 0);
    assert_int_equal(out.status, TP_RUN_DENIED);
    assert_non_null(strstr(out.message, "TENANT_LIMIT_REACHED"));
    assert_int_equal(qint(f->db, "SELECT count(*) FROM tenants WHERE owner_id = $1", "user-42"), 3);
}

/* Two self-serve requests of one user, each allowed by the policy with the user one tenant below the
 * cap: the one that reaches the tenant stage second is refused there (before the fix the user
 * ended with cap + 1 tenants). Request A's decision is taken, then its tenant stage fails (an
 * injected fault); B runs through; A's retry runs on its earlier decision. */
static void test_self_serve_limit_rechecked_at_insert(void **state) {
    fixture *f = *state;
    tp_request a, b;
    tp_run_result out;
    char buf[128];
    make_owned_tenants(f, "cap", 2);
    assert_int_equal(tp_db_exec_script(f->db,
                                       "CREATE FUNCTION fault() RETURNS trigger LANGUAGE plpgsql AS $$ "
                                       "BEGIN RAISE EXCEPTION 'injected fault' USING ERRCODE = '40001'; "
                                       "END $$; CREATE TRIGGER fault BEFORE INSERT ON tenants FOR EACH "
                                       "ROW EXECUTE FUNCTION fault();"),
                     0);
    make_req(&a, "req-cap-a", "cap-a", TP_SOURCE_SELF_SERVE_API, TP_PLAN_STARTER);
    assert_int_equal(tp_stages_run(&f->env, &a, &out), 0);
    assert_int_equal(out.status, TP_RUN_RETRY);
    assert_int_equal(out.stage, TP_STAGE_TENANT);
    qtext(f->db, "SELECT status FROM provisioning_stages WHERE request_id = $1 AND stage = 'policy'",
          "req-cap-a", buf, sizeof(buf));
    assert_string_equal(buf, "SUCCEEDED"); /* allowed with 2 of 3 */
    assert_int_equal(tp_db_exec_script(f->db, "DROP TRIGGER fault ON tenants; DROP FUNCTION fault();"), 0);
    make_req(&b, "req-cap-b", "cap-b", TP_SOURCE_SELF_SERVE_API, TP_PLAN_STARTER);
    run_ok(f, &b);
    assert_int_equal(tp_stages_run(&f->env, &a, &out), 0);
    assert_int_equal(out.status, TP_RUN_FAILED);
    assert_string_equal(out.failure_reason, "TENANT_LIMIT_REACHED");
    assert_int_equal(qint(f->db, "SELECT count(*) FROM tenants WHERE owner_id = $1", "user-42"), 3);
    qtext(f->db, "SELECT state || '/' || failure_reason FROM provisioning_requests WHERE request_id = $1",
          "req-cap-a", buf, sizeof(buf));
    assert_string_equal(buf, "FAILED/TENANT_LIMIT_REACHED");
    assert_int_equal(qint(f->db, "SELECT count(*) FROM receipt_outbox WHERE request_id = $1", "req-cap-a"), 0);
}

static void test_retries_exhausted_then_replay(void **state) {
    fixture *f = *state;
    tp_request req;
    tp_run_result out;
    char buf[256];
    tp_policy_client *dead = tp_policy_client_new("http://127.0.0.1:1", 500);
    assert_non_null(dead);
    f->env.policy = dead;
    make_req(&req, "req-retry", "retry-co", TP_SOURCE_ADMIN_API, TP_PLAN_STARTER);
    for (int i = 1; i <= 2; i++) {
        assert_int_equal(tp_stages_run(&f->env, &req, &out), 0);
        assert_int_equal(out.status, TP_RUN_RETRY);
        assert_int_equal(out.stage, TP_STAGE_POLICY);
        assert_int_equal(out.attempts, i);
        assert_true(tp_err_is_transient(out.err));
        qtext(f->db, "SELECT state FROM provisioning_requests WHERE request_id = $1", req.request_id,
              buf, sizeof(buf));
        assert_string_equal(buf, "RUNNING");
        qtext(f->db, "SELECT status || '/' || attempts || '/' || reason FROM provisioning_stages "
                     "WHERE request_id = $1 AND stage = 'policy'", req.request_id, buf, sizeof(buf));
        char want[64];
        snprintf(want, sizeof(want), "RETRYING/%d/OPA_UNAVAILABLE", i);
        assert_string_equal(buf, want);
    }
    assert_int_equal(tp_stages_run(&f->env, &req, &out), 0);
    assert_int_equal(out.status, TP_RUN_FAILED);
    assert_string_equal(out.failure_reason, "RETRIES_EXHAUSTED");
    assert_int_equal(out.attempts, 3);
    qtext(f->db, "SELECT state || '/' || failure_reason FROM provisioning_requests WHERE request_id = $1",
          req.request_id, buf, sizeof(buf));
    assert_string_equal(buf, "FAILED/RETRIES_EXHAUSTED");
    assert_int_equal(qint(f->db, "SELECT count(*) FROM tenants", NULL), 0);
    assert_int_equal(qint(f->db, "SELECT count(*) FROM policy_decisions", NULL), 0);
    /* OPA is back: a replay evaluates policy again and finishes. */
    f->env.policy = f->pc;
    tp_policy_client_free(dead);
    assert_int_equal(tp_stages_run(&f->env, &req, &out), 0);
    assert_int_equal(out.status, TP_RUN_FAILED); /* terminal until replayed */
    assert_int_equal(tp_stages_prepare_replay(f->db, req.request_id), 0);
    qtext(f->db, "SELECT state FROM provisioning_requests WHERE request_id = $1", req.request_id, buf,
          sizeof(buf));
    assert_string_equal(buf, "ACCEPTED");
    run_ok(f, &req);
    assert_provisioned(f, &req, "us-east-1");
    assert_int_equal(tp_stages_prepare_replay(f->db, req.request_id), TP_ECONFLICT);
    assert_int_equal(tp_stages_prepare_replay(f->db, "no-such-request"), TP_ENOT_FOUND);
}

static void test_kill_switch_quarantines(void **state) {
    fixture *f = *state;
    tp_request req;
    tp_run_result out;
    char tid[64], buf[256];
    assert_int_equal(tp_db_exec(f->db, "UPDATE tp_flags SET enabled = true WHERE name = "
                                       "'provisioning.kill_switch'", 0, NULL, NULL), 0);
    make_req(&req, "req-kill", "kill-co", TP_SOURCE_ADMIN_API, TP_PLAN_ENTERPRISE);
    assert_int_equal(tp_stages_run(&f->env, &req, &out), 0);
    assert_int_equal(out.status, TP_RUN_FAILED);
    assert_int_equal(out.stage, TP_STAGE_ISOLATION);
    assert_string_equal(out.failure_reason, "ISOLATION_VIOLATION");
    assert_non_null(strstr(out.message, "kill_switch_off"));
    qtext(f->db, "SELECT tenant_id FROM provisioning_requests WHERE request_id = $1", req.request_id,
          tid, sizeof(tid));
    qtext(f->db, "SELECT status FROM tenants WHERE id = $1", tid, buf, sizeof(buf));
    assert_string_equal(buf, "quarantined");
    assert_int_equal(qint(f->db, "SELECT count(*) FROM receipt_outbox WHERE action_type = "
                                 "'TENANT_ISOLATION_VERIFIED'", NULL), 0);
    assert_chain(f->db, tid, 2);
    /* Switch off, replay: the guard passes, the tenant becomes active, the chain continues. */
    assert_int_equal(tp_db_exec(f->db, "UPDATE tp_flags SET enabled = false", 0, NULL, NULL), 0);
    assert_int_equal(tp_stages_prepare_replay(f->db, req.request_id), 0);
    run_ok(f, &req);
    assert_int_equal(qint(f->db, "SELECT count(*) FROM policy_decisions WHERE request_id = $1",
                          req.request_id), 2); /* policy was evaluated again */
    assert_int_equal(qint(f->db, "SELECT count(*) FROM tenants", NULL), 1);
    qtext(f->db, "SELECT status FROM tenants WHERE id = $1", tid, buf, sizeof(buf));
    assert_string_equal(buf, "active");
    assert_chain(f->db, tid, 3);
    /* The environment's kill switch works too. */
    tp_request r2;
    make_req(&r2, "req-kill-2", "kill-co-2", TP_SOURCE_ADMIN_API, TP_PLAN_FREE);
    f->env.kill_switch = true;
    assert_int_equal(tp_stages_run(&f->env, &r2, &out), 0);
    f->env.kill_switch = false;
    assert_int_equal(out.status, TP_RUN_FAILED);
    assert_string_equal(out.failure_reason, "ISOLATION_VIOLATION");
}

static void test_isolation_detects_tampering(void **state) {
    fixture *f = *state;
    tp_request req;
    tp_run_result out;
    char tid[64], buf[64];
    /* Make quota stage's insert disagree with the plan: a trigger rewrites the tier. */
    assert_int_equal(tp_db_exec_script(f->db,
        "CREATE FUNCTION tamper() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "NEW.seat_cap := NEW.seat_cap + 1; RETURN NEW; END $$; "
        "CREATE TRIGGER tamper BEFORE INSERT ON tenant_quotas FOR EACH ROW EXECUTE FUNCTION tamper();"), 0);
    make_req(&req, "req-tamper", "tamper-co", TP_SOURCE_ADMIN_API, TP_PLAN_PRO);
    assert_int_equal(tp_stages_run(&f->env, &req, &out), 0);
    assert_int_equal(out.status, TP_RUN_FAILED);
    assert_string_equal(out.failure_reason, "ISOLATION_VIOLATION");
    assert_non_null(strstr(out.message, "quota_matches_plan"));
    assert_null(strstr(out.message, "kill_switch_off"));
    qtext(f->db, "SELECT tenant_id FROM provisioning_requests WHERE request_id = $1", req.request_id,
          tid, sizeof(tid));
    qtext(f->db, "SELECT status FROM tenants WHERE id = $1", tid, buf, sizeof(buf));
    assert_string_equal(buf, "quarantined");
}

static void test_status_json(void **state) {
    fixture *f = *state;
    tp_request req;
    make_req(&req, "req-status", "status-co", TP_SOURCE_ADMIN_API, TP_PLAN_ENTERPRISE);
    assert_null(tp_stages_status_json(f->db, req.request_id));
    assert_int_equal(tp_stages_accept(f->db, &req, NULL, NULL, 0, 0), 0);
    char *js = tp_stages_status_json(f->db, req.request_id);
    assert_non_null(js);
    json_t *o = json_loads(js, 0, NULL);
    free(js);
    assert_string_equal(json_string_value(json_object_get(o, "state")), "ACCEPTED");
    assert_int_equal(json_array_size(json_object_get(o, "conditions")), 7);
    assert_true(json_is_null(json_object_get(o, "tenant")));
    json_decref(o);

    run_ok(f, &req);
    js = tp_stages_status_json(f->db, req.request_id);
    assert_non_null(js);
    o = json_loads(js, 0, NULL);
    free(js);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "state")), "SUCCEEDED");
    assert_true(json_is_null(json_object_get(o, "failureReason")));
    json_t *conds = json_object_get(o, "conditions");
    assert_int_equal(json_array_size(conds), 7);
    static const char *names[] = {"policy", "tenant", "namespace", "partitions", "quota",
                                  "receipts", "isolation"};
    for (size_t i = 0; i < 7; i++) {
        json_t *c = json_array_get(conds, i);
        assert_string_equal(json_string_value(json_object_get(c, "stage")), names[i]);
        assert_string_equal(json_string_value(json_object_get(c, "status")), "SUCCEEDED");
        assert_int_equal(json_integer_value(json_object_get(c, "attempts")), 1);
        assert_true(json_is_string(json_object_get(c, "startedAt")));
        assert_true(json_is_string(json_object_get(c, "finishedAt")));
    }
    json_t *tenant = json_object_get(o, "tenant");
    assert_true(strncmp(json_string_value(json_object_get(tenant, "id")), "tenant-", 7) == 0);
    assert_string_equal(json_string_value(json_object_get(tenant, "status")), "active");
    assert_string_equal(json_string_value(json_object_get(json_object_get(o, "namespace"), "slug")),
                        "status-co-prod");
    assert_int_equal(json_array_size(json_object_get(o, "partitions")), 3);
    assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(o, "partitions"), 0),
                                                          "isolation")), "dedicated");
    json_t *quota = json_object_get(o, "quota");
    assert_string_equal(json_string_value(json_object_get(quota, "tier")), "ENTERPRISE");
    assert_int_equal(json_integer_value(json_object_get(quota, "requestsPerDay")), 10000000);
    json_t *receipts = json_object_get(o, "receipts");
    assert_true(strncmp(json_string_value(json_object_get(json_object_get(receipts, "provisioning"), "id")),
                        "prov_", 5) == 0);
    assert_string_equal(json_string_value(json_object_get(json_object_get(receipts, "quotaAssignment"),
                                                          "actionType")), "TENANT_QUOTA_ASSIGNED");
    assert_non_null(json_object_get(receipts, "isolationVerified"));
    assert_true(json_is_true(json_object_get(json_object_get(json_object_get(o, "policy"), "opa"), "allow")));
    json_decref(o);
}

typedef struct view_arg {
    const char *dsn;
    const char *request_id;
    char *json;
} view_arg;

static void *view_thread(void *p) {
    view_arg *a = p;
    char err[256];
    tp_db *db = NULL;
    if (tp_db_connect(a->dsn, &db, err, sizeof(err)) != 0)
        return NULL;
    a->json = tp_stages_status_json(db, a->request_id);
    tp_db_close(db);
    return NULL;
}

/* The status view reads its tables from one snapshot. The view is held between its reads (a
 * lock on policy_decisions, its third table) while the receipts, read later, are marked
 * published: the view must still show them unpublished, as they were when it began (it used to
 * run each query on its own snapshot and mix the two moments). */
static void test_status_json_one_snapshot(void **state) {
    fixture *f = *state;
    tp_request req;
    tp_db *locker = NULL;
    char err[256];
    pthread_t th;
    view_arg va;
    int64_t waiting = 0;
    make_req(&req, "req-snapshot", "snapshot-co", TP_SOURCE_ADMIN_API, TP_PLAN_PRO);
    assert_int_equal(tp_stages_accept(f->db, &req, NULL, NULL, 0, 0), 0);
    run_ok(f, &req);
    assert_int_equal(qint(f->db, "SELECT count(*) FROM receipt_outbox WHERE request_id = $1 AND "
                                 "published_at IS NULL", req.request_id), 3);

    assert_int_equal(tp_db_connect(f->t.dsn, &locker, err, sizeof(err)), 0);
    assert_int_equal(tp_db_begin(locker), 0);
    assert_int_equal(tp_db_exec(locker, "LOCK TABLE policy_decisions IN ACCESS EXCLUSIVE MODE", 0, NULL, NULL), 0);
    va = (view_arg){f->t.dsn, req.request_id, NULL};
    assert_int_equal(pthread_create(&th, NULL, view_thread, &va), 0);
    for (int i = 0; i < 100 && waiting != 1; i++) {
        waiting = qint(f->db, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                              "AND wait_event_type = 'Lock' AND query LIKE '%policy_decisions%'", NULL);
        if (waiting != 1)
            usleep(50 * 1000);
    }
    /* The view has read the request and its stages; now the receipts get published. */
    assert_int_equal(qint(f->db, "WITH m AS (UPDATE receipt_outbox SET published_at = now() WHERE "
                                 "request_id = $1 RETURNING 1) SELECT count(*) FROM m", req.request_id), 3);
    assert_int_equal(tp_db_commit(locker), 0);
    pthread_join(th, NULL);
    tp_db_close(locker);
    assert_int_equal(waiting, 1);
    assert_non_null(va.json);
    json_t *o = json_loads(va.json, 0, NULL);
    free(va.json);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "state")), "SUCCEEDED");
    json_t *receipts = json_object_get(o, "receipts");
    assert_int_equal(json_object_size(receipts), 3);
    const char *key;
    json_t *r;
    json_object_foreach(receipts, key, r) {
        fprintf(stderr, "receipt %s published %s\n", key,
                json_is_true(json_object_get(r, "published")) ? "true" : "false");
        assert_true(json_is_false(json_object_get(r, "published")));
    }
    json_decref(o);
}

typedef struct runner_arg {
    const char *dsn;
    const tp_request *req;
    int rc;
    tp_run_result out;
} runner_arg;

static void *runner_thread(void *p) {
    runner_arg *a = p;
    char err[256];
    tp_stage_env env = fx.env;
    a->rc = -1;
    if (tp_db_connect(a->dsn, &env.db, err, sizeof(err)) != 0)
        return NULL;
    env.policy = tp_policy_client_new(pgtest_env("TP_OPA_URL"), 3000);
    a->rc = tp_stages_run(&env, a->req, &a->out);
    tp_policy_client_free(env.policy);
    tp_db_close(env.db);
    return NULL;
}

static void test_concurrent_runners(void **state) {
    fixture *f = *state;
    enum { N = 4 };
    tp_request req;
    pthread_t th[N];
    runner_arg args[N];
    make_req(&req, "req-race", "race-co", TP_SOURCE_ADMIN_API, TP_PLAN_PRO);
    assert_int_equal(tp_stages_accept(f->db, &req, NULL, NULL, 0, 0), 0);
    for (int i = 0; i < N; i++) {
        args[i] = (runner_arg){f->t.dsn, &req, 0, {0}};
        assert_int_equal(pthread_create(&th[i], NULL, runner_thread, &args[i]), 0);
    }
    for (int i = 0; i < N; i++)
        pthread_join(th[i], NULL); /* all joined before any assert can longjmp away */
    for (int i = 0; i < N; i++) {
        if (args[i].out.status != TP_RUN_SUCCEEDED)
            fprintf(stderr, "runner %d: %s %s\n", i, args[i].out.failure_reason, args[i].out.message);
        assert_int_equal(args[i].rc, 0);
        assert_int_equal(args[i].out.status, TP_RUN_SUCCEEDED);
    }
    assert_provisioned(f, &req, "us-east-1");
    assert_int_equal(qint(f->db, "SELECT count(*) FROM tenants", NULL), 1);
    assert_int_equal(qint(f->db, "SELECT count(*) FROM receipt_outbox", NULL), 3);
    /* Two different requests for one slug at once: exactly one wins. */
    tp_request a, b;
    pthread_t ta, tb;
    make_req(&a, "req-race-a", "race-slug", TP_SOURCE_ADMIN_API, TP_PLAN_FREE);
    make_req(&b, "req-race-b", "race-slug", TP_SOURCE_ADMIN_API, TP_PLAN_FREE);
    runner_arg ra = {f->t.dsn, &a, 0, {0}}, rb = {f->t.dsn, &b, 0, {0}};
    pthread_create(&ta, NULL, runner_thread, &ra);
    pthread_create(&tb, NULL, runner_thread, &rb);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    assert_int_equal(ra.rc, 0);
    assert_int_equal(rb.rc, 0);
    assert_true((ra.out.status == TP_RUN_SUCCEEDED) != (rb.out.status == TP_RUN_SUCCEEDED));
    runner_arg *loser = ra.out.status == TP_RUN_SUCCEEDED ? &rb : &ra;
    assert_int_equal(loser->out.status, TP_RUN_FAILED);
    assert_string_equal(loser->out.failure_reason, "SLUG_TAKEN");
    assert_int_equal(qint(f->db, "SELECT count(*) FROM tenants WHERE slug = $1", "race-slug"), 1);
}

/* The transactions that wrote a request's rows: the happy path writes every row of stages 1-7
 * and every marker in ONE transaction (one xmin), the per-stage path one per stage. */
static int64_t writer_transactions(fixture *f, const char *rid) {
    return qint(f->db,
                "SELECT count(DISTINCT x) FROM ("
                "SELECT xmin::text AS x FROM provisioning_stages WHERE request_id = $1 UNION ALL "
                "SELECT xmin::text FROM policy_decisions WHERE request_id = $1 UNION ALL "
                "SELECT t.xmin::text FROM tenants t JOIN provisioning_requests r ON r.tenant_id = t.id "
                "WHERE r.request_id = $1 UNION ALL "
                "SELECT n.xmin::text FROM tenant_namespaces n JOIN provisioning_requests r ON "
                "r.tenant_id = n.tenant_id WHERE r.request_id = $1 UNION ALL "
                "SELECT p.xmin::text FROM tenant_partitions p JOIN provisioning_requests r ON "
                "r.tenant_id = p.tenant_id WHERE r.request_id = $1 UNION ALL "
                "SELECT q.xmin::text FROM tenant_quotas q JOIN provisioning_requests r ON "
                "r.tenant_id = q.tenant_id WHERE r.request_id = $1 UNION ALL "
                "SELECT xmin::text FROM receipt_outbox WHERE request_id = $1) w",
                rid);
}

/* Everything a run left for one request, as comparable text: its state and conditions, and how
 * many rows of each kind its tenant has. */
static void request_facts(fixture *f, const char *rid, char *buf, size_t cap) {
    qtext(f->db,
          "SELECT r.state || '/' || coalesce(r.failure_reason, '-') || ' ' || "
          "(SELECT string_agg(s.stage || ':' || s.status || ':' || s.attempts || ':' || "
          "coalesce(s.reason, '-'), ' ' ORDER BY s.ordinal) FROM provisioning_stages s "
          "WHERE s.request_id = r.request_id) || ' decisions=' || (SELECT count(*) FROM "
          "policy_decisions d WHERE d.request_id = r.request_id) || ' tenants=' || (SELECT count(*) "
          "FROM tenants t WHERE t.created_by_request = r.request_id) || ' ns=' || (SELECT count(*) "
          "FROM tenant_namespaces n WHERE n.tenant_id = r.tenant_id) || ' parts=' || (SELECT "
          "count(*) FROM tenant_partitions p WHERE p.tenant_id = r.tenant_id) || ' quota=' || "
          "(SELECT count(*) FROM tenant_quotas q WHERE q.tenant_id = r.tenant_id) || ' receipts=' || "
          "(SELECT count(*) FROM receipt_outbox o WHERE o.request_id = r.request_id) || ' status=' || "
          "coalesce((SELECT t.status FROM tenants t WHERE t.id = r.tenant_id), '-') "
          "FROM provisioning_requests r WHERE r.request_id = $1",
          rid, buf, cap);
}

static void test_happy_path_is_one_transaction(void **state) {
    fixture *f = *state;
    tp_request req, again;
    tp_run_result out;
    char before[1024], after[1024];
    make_req(&req, "req-onetx", "onetx-co", TP_SOURCE_ADMIN_API, TP_PLAN_PRO);
    run_ok(f, &req);
    assert_provisioned(f, &req, "us-east-1");
    assert_int_equal(writer_transactions(f, req.request_id), 1);
    /* The per-stage path (the fallback) writes one transaction per stage. */
    make_req(&again, "req-perstage", "perstage-co", TP_SOURCE_ADMIN_API, TP_PLAN_PRO);
    f->env.per_stage_tx = true;
    run_ok(f, &again);
    f->env.per_stage_tx = false;
    assert_provisioned(f, &again, "us-east-1");
    assert_int_equal(writer_transactions(f, again.request_id), 7);
    /* A crash between the commit and the offset store: the record comes again and the run is a
     * no-op (no row added or changed, the outcome reported again). */
    request_facts(f, req.request_id, before, sizeof(before));
    int64_t xmin_rows = qint(f->db, "SELECT count(*) FROM provisioning_stages WHERE request_id = $1 "
                                    "AND xmin::text = (SELECT xmin::text FROM provisioning_requests "
                                    "WHERE request_id = $1)", req.request_id);
    assert_int_equal(tp_stages_run(&f->env, &req, &out), 0);
    assert_int_equal(out.status, TP_RUN_SUCCEEDED);
    request_facts(f, req.request_id, after, sizeof(after));
    assert_string_equal(before, after);
    assert_int_equal(writer_transactions(f, req.request_id), 1);
    assert_int_equal(qint(f->db, "SELECT count(*) FROM provisioning_stages WHERE request_id = $1 "
                                 "AND xmin::text = (SELECT xmin::text FROM provisioning_requests "
                                 "WHERE request_id = $1)", req.request_id), xmin_rows);
}

/* A provisioning commits its receipts unnumbered and leaves the log's counter alone, on both
 * paths (the request transaction takes no lock every provisioning shares); the sequencer then
 * numbers committed receipts densely from the counter, a bounded batch per transaction, in each
 * tenant's chain order, and leaves receipts published before the log (unnumbered) out. */
static void test_receipts_committed_unnumbered_then_sequenced(void **state) {
    fixture *f = *state;
    tp_request a, b, c;
    int64_t n = -1;
    bool more = false;
    make_req(&a, "req-seq-a", "seq-a-co", TP_SOURCE_ADMIN_API, TP_PLAN_PRO);
    run_ok(f, &a);
    make_req(&b, "req-seq-b", "seq-b-co", TP_SOURCE_ADMIN_API, TP_PLAN_STARTER);
    f->env.per_stage_tx = true;
    run_ok(f, &b);
    f->env.per_stage_tx = false;
    assert_int_equal(qint(f->db, "SELECT count(*) FROM receipt_outbox WHERE leaf_index IS NULL "
                                 "AND request_id LIKE $1", "req-seq-%"), 6);
    assert_int_equal(qint(f->db, "SELECT next_leaf FROM tlog_counter WHERE $1 <> ''", "x"), 0);

    /* Batches of 2: one transaction numbers 2 and says there is more; the loop then goes on. */
    assert_int_equal(tp_tlog_db_sequence(f->db, 2, 1, &n, &more), 0);
    assert_int_equal(n, 2);
    assert_true(more);
    assert_int_equal(qint(f->db, "SELECT next_leaf FROM tlog_counter WHERE $1 <> ''", "x"), 2);
    assert_int_equal(tp_tlog_db_sequence(f->db, 2, 8, &n, &more), 0);
    assert_int_equal(n, 4);
    assert_false(more);
    assert_int_equal(tp_tlog_db_sequence(f->db, 2, 8, &n, &more), 0);
    assert_int_equal(n, 0);
    assert_int_equal(qint(f->db, "SELECT next_leaf FROM tlog_counter WHERE $1 <> ''", "x"), 6);
    /* Dense from 0, unique, increasing along each tenant's chain. */
    assert_int_equal(qint(f->db, "SELECT count(DISTINCT leaf_index) FILTER (WHERE leaf_index BETWEEN 0 AND 5) "
                                 "FROM receipt_outbox WHERE request_id LIKE $1", "req-seq-%"), 6);
    assert_int_equal(qint(f->db, "SELECT count(*) FROM (SELECT leaf_index < lead(leaf_index) OVER "
                                 "(PARTITION BY tenant_id ORDER BY sequence) AS up FROM receipt_outbox "
                                 "WHERE request_id LIKE $1) x WHERE up IS FALSE", "req-seq-%"), 0);

    /* A receipt already published without a leaf (made before the log) stays out of it. */
    make_req(&c, "req-seq-c", "seq-c-co", TP_SOURCE_ADMIN_API, TP_PLAN_FREE);
    run_ok(f, &c);
    assert_int_equal(qint(f->db, "WITH u AS (UPDATE receipt_outbox SET published_at = now() WHERE "
                                 "request_id = $1 AND sequence = 1 RETURNING 1) SELECT count(*) FROM u",
                          "req-seq-c"), 1);
    assert_int_equal(tp_tlog_db_sequence(f->db, 500, 8, &n, &more), 0);
    assert_int_equal(n, 2);
    assert_int_equal(qint(f->db, "SELECT count(*) FROM receipt_outbox WHERE request_id = $1 AND "
                                 "leaf_index IS NULL AND sequence = 1", "req-seq-c"), 1);
    assert_int_equal(qint(f->db, "SELECT next_leaf FROM tlog_counter WHERE $1 <> ''", "x"), 8);
}

/* A transient fault in each stage in turn (a trigger raising 40001, as a serialization failure
 * would): the one-transaction path rolls back and the per-stage path records the retry, leaving
 * exactly the rows and conditions the per-stage path alone leaves; after the fault clears, both
 * finish the same way. So does a billing request's one-commit path (rolled back, then the
 * request recorded and the two paths above). */
static void test_fault_in_each_stage_matches_per_stage_path(void **state) {
    fixture *f = *state;
    static const struct {
        const char *stage, *table, *when;
    } faults[] = {
        {"policy", "policy_decisions", "INSERT"},
        {"tenant", "tenants", "INSERT"},
        {"namespace", "tenant_namespaces", "INSERT"},
        {"partitions", "tenant_partitions", "INSERT"},
        {"quota", "tenant_quotas", "INSERT"},
        {"receipts", "receipt_outbox", "INSERT"},
        {"isolation", "tenants", "UPDATE"},
    };
    for (size_t i = 0; i < sizeof(faults) / sizeof(faults[0]); i++) {
        tp_request fast, slow, fresh;
        tp_run_result out_fast, out_slow, out_fresh;
        char rid_fast[64], rid_slow[64], rid_fresh[64], slug_fast[32], slug_slow[32], slug_fresh[32];
        char facts_fast[1024], facts_slow[1024], facts_fresh[1024], sql[512];
        snprintf(rid_fast, sizeof(rid_fast), "req-fault-%s-1tx", faults[i].stage);
        snprintf(rid_slow, sizeof(rid_slow), "req-fault-%s-each", faults[i].stage);
        snprintf(slug_fast, sizeof(slug_fast), "fault-%zu-a", i);
        snprintf(slug_slow, sizeof(slug_slow), "fault-%zu-b", i);
        snprintf(rid_fresh, sizeof(rid_fresh), "req-fault-%s-1commit", faults[i].stage);
        snprintf(slug_fresh, sizeof(slug_fresh), "fault-%zu-c", i);
        make_req(&fast, rid_fast, slug_fast, TP_SOURCE_ADMIN_API, TP_PLAN_STARTER);
        make_req(&slow, rid_slow, slug_slow, TP_SOURCE_ADMIN_API, TP_PLAN_STARTER);
        make_req(&fresh, rid_fresh, slug_fresh, TP_SOURCE_BILLING, TP_PLAN_STARTER);
        snprintf(sql, sizeof(sql),
                 "CREATE FUNCTION fault() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                 "RAISE EXCEPTION 'injected fault' USING ERRCODE = '40001'; END $$; "
                 "CREATE TRIGGER fault BEFORE %s ON %s FOR EACH ROW EXECUTE FUNCTION fault();",
                 faults[i].when, faults[i].table);
        assert_int_equal(tp_db_exec_script(f->db, sql), 0);
        assert_int_equal(tp_stages_run(&f->env, &fast, &out_fast), 0);
        assert_int_equal(tp_stages_run(&f->env, &fresh, &out_fresh), 0);
        f->env.per_stage_tx = true;
        assert_int_equal(tp_stages_run(&f->env, &slow, &out_slow), 0);
        f->env.per_stage_tx = false;
        assert_int_equal(out_fast.status, TP_RUN_RETRY);
        assert_int_equal(out_slow.status, TP_RUN_RETRY);
        assert_string_equal(tp_stage_name(out_fast.stage), faults[i].stage);
        assert_int_equal(out_fast.stage, out_slow.stage);
        assert_int_equal(out_fast.attempts, 1);
        assert_int_equal(out_fast.attempts, out_slow.attempts);
        assert_int_equal(out_fresh.status, TP_RUN_RETRY);
        assert_int_equal(out_fresh.stage, out_slow.stage);
        assert_int_equal(out_fresh.attempts, out_slow.attempts);
        request_facts(f, rid_fast, facts_fast, sizeof(facts_fast));
        request_facts(f, rid_slow, facts_slow, sizeof(facts_slow));
        request_facts(f, rid_fresh, facts_fresh, sizeof(facts_fresh));
        assert_string_equal(facts_fast, facts_slow);
        assert_string_equal(facts_fresh, facts_slow);
        assert_non_null(strstr(facts_fast, "RETRYING:1:DB"));
        /* The fault clears: both finish, with the same conditions. */
        snprintf(sql, sizeof(sql), "DROP TRIGGER IF EXISTS fault ON %s; DROP FUNCTION fault();",
                 faults[i].table);
        assert_int_equal(tp_db_exec_script(f->db, sql), 0);
        run_ok(f, &fast);
        run_ok(f, &fresh);
        f->env.per_stage_tx = true;
        run_ok(f, &slow);
        f->env.per_stage_tx = false;
        request_facts(f, rid_fast, facts_fast, sizeof(facts_fast));
        snprintf(sql, sizeof(sql), " %s:SUCCEEDED:2:- ", faults[i].stage);
        assert_non_null(strstr(facts_fast, sql));
        assert_true(strncmp(facts_fast, "SUCCEEDED/- ", 12) == 0);
        request_facts(f, rid_slow, facts_slow, sizeof(facts_slow));
        request_facts(f, rid_fresh, facts_fresh, sizeof(facts_fresh));
        assert_string_equal(facts_fast, facts_slow);
        assert_string_equal(facts_fresh, facts_slow);
    }
}

/* Attempts alone do not end a request while the time budget lasts: an outage of a dependency
 * shorter than retry.max_elapsed_ms never exhausts it, however fast the attempts come. */
static void test_retry_budget_is_also_time(void **state) {
    fixture *f = *state;
    tp_request req;
    tp_run_result out;
    char buf[128];
    tp_policy_client *dead = tp_policy_client_new("http://127.0.0.1:1", 500);
    assert_non_null(dead);
    f->env.policy = dead;
    f->env.max_attempts = 2;
    f->env.max_elapsed_ms = 1500;
    make_req(&req, "req-budget", "budget-co", TP_SOURCE_ADMIN_API, TP_PLAN_STARTER);
    for (int i = 1; i <= 4; i++) { /* twice the attempt budget, well inside the time budget */
        assert_int_equal(tp_stages_run(&f->env, &req, &out), 0);
        assert_int_equal(out.status, TP_RUN_RETRY);
        assert_int_equal(out.attempts, i);
    }
    qtext(f->db, "SELECT status FROM provisioning_stages WHERE request_id = $1 AND stage = 'policy'",
          req.request_id, buf, sizeof(buf));
    assert_string_equal(buf, "RETRYING");
    usleep(1600 * 1000);
    assert_int_equal(tp_stages_run(&f->env, &req, &out), 0);
    assert_int_equal(out.status, TP_RUN_FAILED);
    assert_string_equal(out.failure_reason, "RETRIES_EXHAUSTED");
    assert_int_equal(out.attempts, 5);
    f->env.policy = f->pc;
    f->env.max_attempts = 3;
    f->env.max_elapsed_ms = 0;
    tp_policy_client_free(dead);
}

/* xact_commit of the scratch database as this connection (f->db, which the runner uses too)
 * sees it: its backend's counts reach pg_stat_database when it goes idle after a forced flush,
 * so between two marks the difference is what committed in between plus 2 (the first mark's read
 * and the second mark's flush, each a transaction of its own). Read-only transactions count, and
 * so does the first use of each statement on a connection (its prepare is a transaction of its
 * own): warm_up first. */
static int64_t commits_mark(fixture *f) {
    assert_int_equal(qint(f->db, "SELECT count(*) FROM (SELECT pg_stat_force_next_flush()) x", NULL), 1);
    return qint(f->db, "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
                NULL);
}

static int64_t commits_since(fixture *f, int64_t mark) { return commits_mark(f) - mark - 2; }

/* Prepares every statement the two paths of a billing request use on f->db (and the marks'). */
static void warm_up(fixture *f) {
    tp_request a, b;
    make_req(&a, "req-warm-a", "warm-a", TP_SOURCE_BILLING, TP_PLAN_PRO);
    run_ok(f, &a);
    make_req(&b, "req-warm-b", "warm-b", TP_SOURCE_BILLING, TP_PLAN_PRO);
    assert_int_equal(tp_stages_accept(f->db, &b, NULL, NULL, 0, 0), 0);
    run_ok(f, &b);
    commits_mark(f);
}

/* Rows of one request that still carry the transaction that inserted them, and were never
 * updated since (xmax 0): the request row and its stage rows written once, by one transaction. */
static void assert_written_once(fixture *f, const char *rid) {
    assert_int_equal(qint(f->db, "SELECT count(DISTINCT x) FROM (SELECT xmin::text AS x FROM "
                                 "provisioning_stages WHERE request_id = $1 UNION ALL SELECT "
                                 "xmin::text FROM provisioning_requests WHERE request_id = $1) w",
                          rid), 1);
    assert_int_equal(qint(f->db, "SELECT count(*) FROM provisioning_stages WHERE request_id = $1 "
                                 "AND xmax::text = '0' AND status = 'SUCCEEDED' AND output IS NOT "
                                 "NULL AND started_at IS NOT NULL AND finished_at >= started_at",
                          rid), 7);
}

/* A request straight from billing (no row yet) costs ONE commit: OPA is asked first, then one
 * transaction records the request and writes every row of the seven stages, the stage rows
 * inserted once in their final state. It leaves the rows the two-commit path leaves. A redelivery
 * after that is a no-op; the same id for another tenant is still refused. */
static void test_billing_request_is_one_commit(void **state) {
    fixture *f = *state;
    tp_request req, old, other;
    tp_run_result out;
    char facts[1024], facts_old[1024], again[1024], buf[64];
    int64_t mark;

    warm_up(f);
    mark = commits_mark(f);
    assert_int_equal(commits_since(f, mark), 0); /* the marks' own transactions are accounted for */

    make_req(&req, "req-1commit", "onecommit-co", TP_SOURCE_BILLING, TP_PLAN_PRO);
    mark = commits_mark(f);
    unsigned long long trips = tp_db_round_trips();
    run_ok(f, &req);
    trips = tp_db_round_trips() - trips;
    assert_int_equal(commits_since(f, mark), 1);
    /* Round trips: the claim, the receipts stage's view of the tenant, the isolation guard's
     * lock and read, and the markers with the COMMIT. The tenant is new in this transaction, so
     * its rows' inserts, its receipts and its status go queued (no RETURNING, no read-back, no
     * chain lock): 12 round trips before. */
    fprintf(stderr, "one-commit provisioning: %llu round trips\n", trips);
    assert_true(trips <= 5);
    assert_provisioned(f, &req, "us-east-1");
    assert_int_equal(writer_transactions(f, req.request_id), 1);
    assert_written_once(f, req.request_id);
    qtext(f->db, "SELECT source || '/' || action || '/' || (finished_at IS NOT NULL) FROM "
                 "provisioning_requests WHERE request_id = $1", req.request_id, buf, sizeof(buf));
    assert_string_equal(buf, "BILLING/PROVISION/true");

    /* The same rows as the request recorded first and run on the two-commit path (here: recorded
     * ACCEPTED as tp-ingress does, then run; the runner finds the row and goes that way). */
    make_req(&old, "req-2commit", "twocommit-co", TP_SOURCE_BILLING, TP_PLAN_PRO);
    assert_int_equal(tp_stages_accept(f->db, &old, NULL, NULL, 0, 0), 0);
    mark = commits_mark(f);
    run_ok(f, &old);
    assert_int_equal(commits_since(f, mark), 2);
    assert_provisioned(f, &old, "us-east-1");
    request_facts(f, req.request_id, facts, sizeof(facts));
    request_facts(f, old.request_id, facts_old, sizeof(facts_old));
    assert_string_equal(facts, facts_old);
    assert_non_null(strstr(facts, "SUCCEEDED/- policy:SUCCEEDED:1:- tenant:SUCCEEDED:1:-"));
    {
        char *js = tp_stages_status_json(f->db, req.request_id);
        json_t *o = js ? json_loads(js, 0, NULL) : NULL;
        free(js);
        assert_non_null(o);
        assert_string_equal(json_string_value(json_object_get(o, "state")), "SUCCEEDED");
        assert_true(json_is_string(json_object_get(o, "finishedAt")));
        assert_int_equal(json_array_size(json_object_get(o, "conditions")), 7);
        assert_true(json_is_true(json_object_get(json_object_get(json_object_get(o, "policy"), "opa"),
                                                 "allow")));
        json_decref(o);
    }

    /* A redelivery (a crash between the commit and the offset store): nothing changes. */
    int64_t decisions = qint(f->db, "SELECT count(*) FROM policy_decisions", NULL);
    assert_int_equal(tp_stages_run(&f->env, &req, &out), 0);
    assert_int_equal(out.status, TP_RUN_SUCCEEDED);
    assert_true(strncmp(out.tenant_id, "tenant-", 7) == 0);
    request_facts(f, req.request_id, again, sizeof(again));
    assert_string_equal(facts, again);
    assert_written_once(f, req.request_id);
    assert_int_equal(qint(f->db, "SELECT count(*) FROM policy_decisions", NULL), decisions);

    /* The same id for another tenant: refused, the first request untouched. */
    make_req(&other, "req-1commit", "someone-else", TP_SOURCE_BILLING, TP_PLAN_FREE);
    assert_int_equal(tp_stages_run(&f->env, &other, &out), TP_ECONFLICT);
    assert_int_equal(out.err, TP_ECONFLICT);
    request_facts(f, req.request_id, again, sizeof(again));
    assert_string_equal(facts, again);
    assert_int_equal(qint(f->db, "SELECT count(*) FROM tenants WHERE slug = $1", "someone-else"), 0);
}

/* The one-commit path's outcomes other than success, each the same as the two-commit path's
 * (an admin request run without tp_stages_accept takes that path): a deny, a slug taken, and
 * OPA down (the fallback records the request RUNNING with the policy retry, as today) then back. */
static void test_billing_request_fallbacks_match(void **state) {
    fixture *f = *state;
    tp_request fresh, old;
    tp_run_result out_fresh, out_old;
    char facts_fresh[1024], facts_old[1024];
    int64_t mark;

    warm_up(f);
    /* Denied (region outside the residency): one commit, DENIED, the later stages PENDING. */
    make_req(&fresh, "req-deny-1c", "deny-1c", TP_SOURCE_BILLING, TP_PLAN_PRO);
    make_req(&old, "req-deny-2c", "deny-2c", TP_SOURCE_ADMIN_API, TP_PLAN_PRO);
    snprintf(fresh.tenant.region, sizeof(fresh.tenant.region), "eu-west-1");
    snprintf(old.tenant.region, sizeof(old.tenant.region), "eu-west-1");
    mark = commits_mark(f);
    assert_int_equal(tp_stages_run(&f->env, &fresh, &out_fresh), 0);
    assert_int_equal(commits_since(f, mark), 1);
    assert_int_equal(tp_stages_run(&f->env, &old, &out_old), 0);
    assert_int_equal(out_fresh.status, TP_RUN_DENIED);
    assert_int_equal(out_fresh.stage, TP_STAGE_POLICY);
    assert_int_equal(out_fresh.attempts, 1);
    assert_string_equal(out_fresh.failure_reason, "POLICY_DENIED");
    assert_string_equal(out_fresh.message, out_old.message);
    request_facts(f, fresh.request_id, facts_fresh, sizeof(facts_fresh));
    request_facts(f, old.request_id, facts_old, sizeof(facts_old));
    assert_string_equal(facts_fresh, facts_old);
    assert_non_null(strstr(facts_fresh, "DENIED/POLICY_DENIED policy:FAILED:1:POLICY_DENIED "
                                        "tenant:PENDING:0:-"));
    assert_int_equal(qint(f->db, "SELECT count(*) FROM provisioning_stages WHERE request_id = $1 AND "
                                 "status = 'PENDING' AND started_at IS NULL AND finished_at IS NULL",
                          fresh.request_id), 6);

    /* A slug held by another tenant: FAILED/SLUG_TAKEN at the tenant stage. */
    make_req(&fresh, "req-taken-1c", "deny-taken", TP_SOURCE_ADMIN_API, TP_PLAN_PRO);
    run_ok(f, &fresh);
    make_req(&fresh, "req-taken-2", "deny-taken", TP_SOURCE_BILLING, TP_PLAN_FREE);
    make_req(&old, "req-taken-3", "deny-taken", TP_SOURCE_ADMIN_API, TP_PLAN_FREE);
    assert_int_equal(tp_stages_run(&f->env, &fresh, &out_fresh), 0);
    assert_int_equal(tp_stages_run(&f->env, &old, &out_old), 0);
    assert_int_equal(out_fresh.status, TP_RUN_FAILED);
    assert_string_equal(out_fresh.failure_reason, "SLUG_TAKEN");
    request_facts(f, fresh.request_id, facts_fresh, sizeof(facts_fresh));
    request_facts(f, old.request_id, facts_old, sizeof(facts_old));
    assert_string_equal(facts_fresh, facts_old);
    assert_non_null(strstr(facts_fresh, "FAILED/SLUG_TAKEN policy:SUCCEEDED:1:- tenant:FAILED:1:SLUG_TAKEN"));

    /* OPA down: no transaction is opened for the fresh request; the fallback records it RUNNING
     * with the policy's retry, exactly as before; OPA back: it finishes on the two-commit path. */
    tp_policy_client *dead = tp_policy_client_new("http://127.0.0.1:1", 500);
    assert_non_null(dead);
    f->env.policy = dead;
    make_req(&fresh, "req-opa-1c", "opa-1c", TP_SOURCE_BILLING, TP_PLAN_STARTER);
    make_req(&old, "req-opa-2c", "opa-2c", TP_SOURCE_ADMIN_API, TP_PLAN_STARTER);
    assert_int_equal(tp_stages_run(&f->env, &fresh, &out_fresh), 0);
    assert_int_equal(tp_stages_run(&f->env, &old, &out_old), 0);
    f->env.policy = f->pc;
    tp_policy_client_free(dead);
    assert_int_equal(out_fresh.status, TP_RUN_RETRY);
    assert_int_equal(out_fresh.stage, TP_STAGE_POLICY);
    assert_int_equal(out_fresh.attempts, 1);
    assert_int_equal(out_fresh.err, out_old.err);
    request_facts(f, fresh.request_id, facts_fresh, sizeof(facts_fresh));
    request_facts(f, old.request_id, facts_old, sizeof(facts_old));
    assert_string_equal(facts_fresh, facts_old);
    assert_true(strncmp(facts_fresh, "RUNNING/- policy:RETRYING:1:OPA_UNAVAILABLE tenant:PENDING:0:-",
                        61) == 0);
    run_ok(f, &fresh);
    run_ok(f, &old);
    request_facts(f, fresh.request_id, facts_fresh, sizeof(facts_fresh));
    request_facts(f, old.request_id, facts_old, sizeof(facts_old));
    assert_string_equal(facts_fresh, facts_old);
    assert_true(strncmp(facts_fresh, "SUCCEEDED/- policy:SUCCEEDED:2:- tenant:SUCCEEDED:1:-", 52) == 0);
}

/* Runners of one billing request at once, none finding a row (a redelivery after a rebalance
 * while the first run is still going): one claims it, the others wait on its insert and then
 * find it done. One provisioning, every runner reports it. */
static void test_billing_request_concurrent_runners(void **state) {
    fixture *f = *state;
    enum { N = 4 };
    tp_request req;
    pthread_t th[N];
    runner_arg args[N];
    make_req(&req, "req-race-1c", "race-1c", TP_SOURCE_BILLING, TP_PLAN_ENTERPRISE);
    for (int i = 0; i < N; i++) {
        args[i] = (runner_arg){f->t.dsn, &req, 0, {0}};
        assert_int_equal(pthread_create(&th[i], NULL, runner_thread, &args[i]), 0);
    }
    for (int i = 0; i < N; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < N; i++) {
        assert_int_equal(args[i].rc, 0);
        assert_int_equal(args[i].out.status, TP_RUN_SUCCEEDED);
    }
    assert_provisioned(f, &req, "us-east-1");
    assert_written_once(f, req.request_id);
    assert_int_equal(qint(f->db, "SELECT count(*) FROM tenants", NULL), 1);
    assert_int_equal(qint(f->db, "SELECT count(*) FROM receipt_outbox", NULL), 3);
    assert_int_equal(qint(f->db, "SELECT count(*) FROM policy_decisions", NULL), 1);
}

int main(void) {
    e2e_stack_share(); /* a fault test elsewhere must not restart OPA under us */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_happy_path_each_plan, setup, teardown),
        cmocka_unit_test_setup_teardown(test_same_request_three_times, setup, teardown),
        cmocka_unit_test_setup_teardown(test_slug_taken, setup, teardown),
        cmocka_unit_test_setup_teardown(test_policy_deny, setup, teardown),
        cmocka_unit_test_setup_teardown(test_self_serve_owner_and_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_self_serve_limit_rechecked_at_insert, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retries_exhausted_then_replay, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retry_budget_is_also_time, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kill_switch_quarantines, setup, teardown),
        cmocka_unit_test_setup_teardown(test_isolation_detects_tampering, setup, teardown),
        cmocka_unit_test_setup_teardown(test_status_json, setup, teardown),
        cmocka_unit_test_setup_teardown(test_status_json_one_snapshot, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_runners, setup, teardown),
        cmocka_unit_test_setup_teardown(test_billing_request_is_one_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_billing_request_fallbacks_match, setup, teardown),
        cmocka_unit_test_setup_teardown(test_billing_request_concurrent_runners, setup, teardown),
        cmocka_unit_test_setup_teardown(test_happy_path_is_one_transaction, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fault_in_each_stage_matches_per_stage_path, setup, teardown),
        cmocka_unit_test_setup_teardown(test_receipts_committed_unnumbered_then_sequenced, setup, teardown),
    };
    if (getenv("TP_TEST_FILTER"))
        cmocka_set_test_filter(getenv("TP_TEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
