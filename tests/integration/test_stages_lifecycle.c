/* test_stages_lifecycle.c: tenant actions (CHANGE_PLAN, SUSPEND, RESUME, DEPROVISION) on the real
 * stack (PostgreSQL scratch database, OPA serving config/policies, real Ed25519 sealing): the dry
 * run (tp_stages_action_preview) decides and lists changes without writing; the runner takes a
 * tenant through its life (rows and receipts after each step, one chain), refuses invalid states
 * and unknown slugs with no change, records denies, applies duplicates once, and a fault in each
 * action stage leaves the one-transaction path exactly where the per-stage path is. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "support/e2e.h"
#include "tp/tlog_db.h"

#include <jansson.h>
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
static tp_policy_context pctx; /* the context a dry run gets: the tiers */

static int setup(void **state) {
    *state = &fx;
    if (stagetest_open(&fx) != 0)
        return -1;
    memset(&pctx, 0, sizeof(pctx));
    pctx.tiers = fx.tier_table;
    return 0;
}

static int teardown(void **state) { return stagetest_close(*state); }

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
    assert_int_equal(tp_stages_action_preview(f->db, f->pc, &pctx, &req, &pv), 0);
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
    assert_int_equal(tp_stages_action_preview(f->db, f->pc, &pctx, &req, &pv), 0);
    assert_true(pv.allowed);
    changes = json_loads(pv.changes_json, 0, NULL);
    assert_change(changes, "partitions.primary.isolation", "shared", "dedicated");
    assert_change(changes, "partitions.audit.isolation", "shared", "dedicated");
    json_decref(changes);
    tp_action_preview_release(&pv);

    /* Denied: the current 40 seats exceed FREE's cap; the changes asked for are still listed. */
    make_plan_change(&req, "req-pv-3", "pv-pro", TP_SOURCE_ADMIN_API, TP_PLAN_FREE);
    assert_int_equal(tp_stages_action_preview(f->db, f->pc, &pctx, &req, &pv), 0);
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
    assert_int_equal(tp_stages_action_preview(f->db, f->pc, &pctx, &req, &pv), 0);
    assert_true(pv.allowed);
    tp_action_preview_release(&pv);
    snprintf(req.actor.id, sizeof(req.actor.id), "user-99");
    assert_int_equal(tp_stages_action_preview(f->db, f->pc, &pctx, &req, &pv), 0);
    assert_int_equal(pv.reason, TP_PREVIEW_POLICY_DENIED);
    assert_string_equal(pv.decision.reasons[0], "NOT_TENANT_OWNER");
    tp_action_preview_release(&pv);
    make_plan_change(&req, "req-pv-5", "pv-pro", TP_SOURCE_SELF_SERVE_API, TP_PLAN_ENTERPRISE);
    assert_int_equal(tp_stages_action_preview(f->db, f->pc, &pctx, &req, &pv), 0);
    assert_string_equal(pv.decision.reasons[0], "ENTERPRISE_NOT_SELF_SERVE");
    tp_action_preview_release(&pv);

    /* Self-serve may not suspend, even its own tenant. */
    make_action(&req, "req-pv-6", "pv-pro", TP_ACTION_SUSPEND, TP_SOURCE_SELF_SERVE_API);
    assert_int_equal(tp_stages_action_preview(f->db, f->pc, &pctx, &req, &pv), 0);
    assert_int_equal(pv.reason, TP_PREVIEW_POLICY_DENIED);
    assert_string_equal(pv.decision.reasons[0], "SELF_SERVE_NOT_ALLOWED");
    tp_action_preview_release(&pv);

    /* Invalid for the state: resume an active tenant; OPA is not asked, nothing would change. */
    make_action(&req, "req-pv-7", "pv-pro", TP_ACTION_RESUME, TP_SOURCE_ADMIN_API);
    assert_int_equal(tp_stages_action_preview(f->db, f->pc, &pctx, &req, &pv), 0);
    assert_false(pv.allowed);
    assert_int_equal(pv.reason, TP_PREVIEW_INVALID_STATE);
    assert_false(pv.policy_asked);
    assert_string_equal(pv.tenant_status, "active");
    assert_string_equal(pv.changes_json, "[]");
    assert_non_null(strstr(pv.message, "active"));
    tp_action_preview_release(&pv);

    /* Unknown slug. */
    make_action(&req, "req-pv-8", "nobody-here", TP_ACTION_DEPROVISION, TP_SOURCE_ADMIN_API);
    assert_int_equal(tp_stages_action_preview(f->db, f->pc, &pctx, &req, &pv), 0);
    assert_int_equal(pv.reason, TP_PREVIEW_TENANT_NOT_FOUND);
    assert_string_equal(tp_preview_reason_name(pv.reason), "TENANT_NOT_FOUND");
    assert_string_equal(pv.tenant_id, "");
    assert_string_equal(pv.changes_json, "[]");
    tp_action_preview_release(&pv);

    /* A deprovision lists the purge-after of the tenant and each partition. */
    make_action(&req, "req-pv-9", "pv-pro", TP_ACTION_DEPROVISION, TP_SOURCE_BILLING);
    assert_int_equal(tp_stages_action_preview(f->db, f->pc, &pctx, &req, &pv), 0);
    assert_true(pv.allowed);
    changes = json_loads(pv.changes_json, 0, NULL);
    assert_non_null(change_of(changes, "purgeAfter"));
    assert_non_null(change_of(changes, "partitions.analytics.purgeAfter"));
    assert_change(changes, "status", "active", "deprovisioned");
    json_decref(changes);
    tp_action_preview_release(&pv);

    /* Not an action. */
    assert_int_equal(tp_stages_action_preview(f->db, f->pc, &pctx, &prov, &pv), 0);
    assert_int_equal(pv.reason, TP_PREVIEW_NOT_AN_ACTION);
    tp_action_preview_release(&pv);

    /* OPA unreachable: no verdict, a transient error. */
    tp_policy_client *dead = tp_policy_client_new("http://127.0.0.1:1", 300);
    make_action(&req, "req-pv-10", "pv-pro", TP_ACTION_SUSPEND, TP_SOURCE_BILLING);
    assert_int_equal(tp_stages_action_preview(f->db, dead, &pctx, &req, &pv), TP_EOPA_UNAVAILABLE);
    assert_false(pv.allowed);
    assert_null(pv.changes_json);
    tp_policy_client_free(dead);

    /* Nothing of all that was written. */
    db_digest(f->db, after, sizeof(after));
    assert_string_equal(before, after);
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

static tp_run_result run(fixture *f, const tp_request *req) {
    tp_run_result out;
    assert_int_equal(tp_stages_run(&f->env, req, &out), 0);
    return out;
}

/* The tenant's outbox rows form one chain: sequence 1..n, each previous_hash the prior hash; the
 * receipts are committed unnumbered, and once the sequencer ran (the relay's, here called
 * directly) every one is numbered in the transparency log, in chain order. */
static void assert_chain(tp_db *db, const char *tenant_id, int want) {
    tp_res *res = NULL;
    const char *p[1] = {tenant_id};
    int64_t numbered = -1;
    bool more = true;
    assert_int_equal(tp_tlog_db_sequence(db, 500, 8, &numbered, &more), 0);
    assert_false(more);
    assert_int_equal(tp_db_query(db, "SELECT sequence, previous_hash, hash, leaf_index IS NOT NULL "
                                     "AND leaf_index > coalesce(lag(leaf_index) OVER (ORDER BY sequence), -1) "
                                     "FROM receipt_outbox WHERE tenant_id = $1 ORDER BY sequence",
                                 1, p, &res),
                     0);
    assert_int_equal(tp_res_nrows(res), want);
    for (int r = 0; r < tp_res_nrows(res); r++) {
        int64_t seq = 0;
        assert_int_equal(tp_res_get_int64(res, r, 0, &seq), 0);
        assert_int_equal(seq, r + 1);
        if (r == 0)
            assert_string_equal(tp_res_get(res, r, 1), TP_RECEIPT_ZERO_HASH);
        else
            assert_string_equal(tp_res_get(res, r, 1), tp_res_get(res, r - 1, 2));
        assert_string_equal(tp_res_get(res, r, 3), "t");
    }
    tp_res_free(res);
}

/* A digest of one tenant's own rows (tenant, quota, partitions, namespace, receipts). */
static void tenant_digest(tp_db *db, const char *slug, char *buf, size_t cap) {
    qtext(db,
          "SELECT md5(string_agg(x, '|' ORDER BY x)) FROM (SELECT t::text x FROM tenants t WHERE "
          "t.slug = $1 UNION ALL SELECT q::text FROM tenant_quotas q JOIN tenants t ON t.id = "
          "q.tenant_id WHERE t.slug = $1 UNION ALL SELECT p::text FROM tenant_partitions p JOIN "
          "tenants t ON t.id = p.tenant_id WHERE t.slug = $1 UNION ALL SELECT n::text FROM "
          "tenant_namespaces n JOIN tenants t ON t.id = n.tenant_id WHERE t.slug = $1 UNION ALL "
          "SELECT o.receipt_id FROM receipt_outbox o JOIN tenants t ON t.id = o.tenant_id WHERE "
          "t.slug = $1) u",
          slug, buf, cap);
}

/* The tenant's quota row holds exactly plan's vector. */
static void assert_quota(fixture *f, const char *tid, tp_plan plan) {
    tp_quota_tier q;
    char buf[32];
    assert_int_equal(tp_quota_tiers_get(f->tiers, plan, &q), 0);
    assert_int_equal(qint(f->db, "SELECT count(*) FROM tenant_quotas WHERE tenant_id = $1", tid), 1);
    qtext(f->db, "SELECT tier FROM tenant_quotas WHERE tenant_id = $1", tid, buf, sizeof(buf));
    assert_string_equal(buf, tp_plan_name(plan));
    assert_int_equal(qint(f->db, "SELECT requests_per_minute FROM tenant_quotas WHERE tenant_id = $1", tid), q.requests_per_minute);
    assert_int_equal(qint(f->db, "SELECT requests_per_day FROM tenant_quotas WHERE tenant_id = $1", tid), q.requests_per_day);
    assert_int_equal(qint(f->db, "SELECT ingest_events_per_minute FROM tenant_quotas WHERE tenant_id = $1", tid), q.ingest_events_per_minute);
    assert_int_equal(qint(f->db, "SELECT max_tokens_per_request FROM tenant_quotas WHERE tenant_id = $1", tid), q.max_tokens_per_request);
    assert_int_equal(qint(f->db, "SELECT storage_bytes FROM tenant_quotas WHERE tenant_id = $1", tid), q.storage_bytes);
    assert_int_equal(qint(f->db, "SELECT seat_cap FROM tenant_quotas WHERE tenant_id = $1", tid), q.seat_cap);
    assert_int_equal(qint(f->db, "SELECT round(burst_multiplier * 1000) FROM tenant_quotas WHERE tenant_id = $1", tid),
                     (int64_t)(q.burst_multiplier * 1000 + 0.5));
}

static void assert_status(fixture *f, const char *tid, const char *want) {
    char buf[32];
    qtext(f->db, "SELECT status FROM tenants WHERE id = $1", tid, buf, sizeof(buf));
    assert_string_equal(buf, want);
}

/* An action request ended SUCCEEDED with every stage of its list done once, in one transaction,
 * with its action recorded and its decision stored. */
static void assert_action_done(fixture *f, const tp_request *req, int stages) {
    char buf[64];
    qtext(f->db, "SELECT state || '/' || action FROM provisioning_requests WHERE request_id = $1",
          req->request_id, buf, sizeof(buf));
    char want[64];
    snprintf(want, sizeof(want), "SUCCEEDED/%s", tp_action_name(req->action));
    assert_string_equal(buf, want);
    assert_int_equal(qint(f->db, "SELECT count(*) FROM provisioning_stages WHERE request_id = $1 AND "
                                 "status = 'SUCCEEDED' AND attempts = 1", req->request_id), stages);
    assert_int_equal(qint(f->db, "SELECT count(*) FROM provisioning_stages WHERE request_id = $1",
                          req->request_id), stages);
    assert_int_equal(qint(f->db, "SELECT count(*) FROM policy_decisions WHERE request_id = $1 AND "
                                 "allow AND decision_id <> ''", req->request_id), 1);
    /* One durable commit: every marker and the decision share one xmin. */
    assert_int_equal(qint(f->db, "SELECT count(DISTINCT x) FROM (SELECT xmin::text x FROM "
                                 "provisioning_stages WHERE request_id = $1 UNION ALL SELECT "
                                 "xmin::text FROM policy_decisions WHERE request_id = $1 UNION ALL "
                                 "SELECT xmin::text FROM receipt_outbox WHERE request_id = $1) w",
                          req->request_id), 1);
}

/* A field of the in-toto statement of the request's receipt of type, as text. */
static void receipt_field(fixture *f, const char *rid, const char *type, const char *path, char *buf,
                          size_t cap) {
    char sql[512];
    snprintf(sql, sizeof(sql),
             "SELECT coalesce(convert_from(payload, 'UTF8')::jsonb #>> '%s', '<none>') FROM "
             "receipt_outbox WHERE request_id = $1 AND action_type = '%s'",
             path, type);
    qtext(f->db, sql, rid, buf, cap);
}

static void test_lifecycle(void **state) {
    fixture *f = *state;
    tp_request prov, req;
    tp_run_result out;
    char tid[64], buf[256];

    make_provision(&prov, "req-lc-prov", "lc-co", TP_SOURCE_ADMIN_API, TP_PLAN_PRO);
    run_ok(f, &prov);
    qtext(f->db, "SELECT id FROM tenants WHERE slug = 'lc-co' AND $1 <> ''", "x", tid, sizeof(tid));
    assert_chain(f->db, tid, 3);

    /* Upgrade PRO → ENTERPRISE (admin): plan, the ENTERPRISE vector, dedicated partitions,
     * PLAN_CHANGED + QUOTA_ASSIGNED + ISOLATION_VERIFIED in the chain. */
    make_plan_change(&req, "req-lc-up", "lc-co", TP_SOURCE_ADMIN_API, TP_PLAN_ENTERPRISE);
    run_ok(f, &req);
    assert_action_done(f, &req, 5);
    qtext(f->db, "SELECT plan || '/' || status || '/' || requested_seats FROM tenants WHERE id = $1",
          tid, buf, sizeof(buf));
    assert_string_equal(buf, "ENTERPRISE/active/40");
    assert_quota(f, tid, TP_PLAN_ENTERPRISE);
    assert_int_equal(qint(f->db, "SELECT count(*) FROM tenant_partitions WHERE tenant_id = $1 AND "
                                 "isolation = 'dedicated'", tid), 3);
    qtext(f->db, "SELECT tenant_id FROM provisioning_requests WHERE request_id = $1", req.request_id,
          buf, sizeof(buf));
    assert_string_equal(buf, tid);
    receipt_field(f, req.request_id, "TENANT_PLAN_CHANGED", "{predicate,data,before,plan}", buf, sizeof(buf));
    assert_string_equal(buf, "PRO");
    receipt_field(f, req.request_id, "TENANT_PLAN_CHANGED", "{predicate,data,after,plan}", buf, sizeof(buf));
    assert_string_equal(buf, "ENTERPRISE");
    receipt_field(f, req.request_id, "TENANT_PLAN_CHANGED", "{predicate,policy,revision}", buf, sizeof(buf));
    assert_string_equal(buf, "tenants.change_plan/2026-12.1");
    receipt_field(f, req.request_id, "TENANT_QUOTA_ASSIGNED", "{predicate,data,previous,tier}", buf, sizeof(buf));
    assert_string_equal(buf, "PRO");
    receipt_field(f, req.request_id, "TENANT_QUOTA_ASSIGNED", "{predicate,data,quota,seatCap}", buf, sizeof(buf));
    assert_string_equal(buf, "500");
    assert_int_equal(qint(f->db, "SELECT count(*) FROM receipt_outbox WHERE request_id = $1 AND "
                                 "action_type = 'TENANT_ISOLATION_VERIFIED'", req.request_id), 1);
    assert_chain(f->db, tid, 6);

    /* Suspend (billing, payment failed). */
    make_action(&req, "req-lc-susp", "lc-co", TP_ACTION_SUSPEND, TP_SOURCE_BILLING);
    run_ok(f, &req);
    assert_action_done(f, &req, 3);
    qtext(f->db, "SELECT status || '/' || suspended_reason FROM tenants WHERE id = $1", tid, buf, sizeof(buf));
    assert_string_equal(buf, "suspended/PAYMENT_FAILED");
    receipt_field(f, req.request_id, "TENANT_SUSPENDED", "{predicate,data,before,status}", buf, sizeof(buf));
    assert_string_equal(buf, "active");
    receipt_field(f, req.request_id, "TENANT_SUSPENDED", "{predicate,data,reason}", buf, sizeof(buf));
    assert_string_equal(buf, "PAYMENT_FAILED");
    assert_chain(f->db, tid, 7);

    /* A plan change of a suspended tenant is valid and keeps it suspended: down to STARTER with
     * 45 seats; the partitions go back to shared. */
    make_plan_change(&req, "req-lc-down1", "lc-co", TP_SOURCE_BILLING, TP_PLAN_STARTER);
    req.has_requested_seats = true;
    req.requested_seats = 45;
    run_ok(f, &req);
    assert_action_done(f, &req, 5);
    qtext(f->db, "SELECT plan || '/' || status || '/' || requested_seats FROM tenants WHERE id = $1",
          tid, buf, sizeof(buf));
    assert_string_equal(buf, "STARTER/suspended/45");
    assert_quota(f, tid, TP_PLAN_STARTER);
    assert_int_equal(qint(f->db, "SELECT count(*) FROM tenant_partitions WHERE tenant_id = $1 AND "
                                 "isolation = 'shared'", tid), 3);
    assert_chain(f->db, tid, 10);

    /* Resume (admin): active again, the guard re-run. */
    make_action(&req, "req-lc-resume", "lc-co", TP_ACTION_RESUME, TP_SOURCE_ADMIN_API);
    run_ok(f, &req);
    assert_action_done(f, &req, 4);
    assert_status(f, tid, "active");
    assert_int_equal(qint(f->db, "SELECT count(*) FROM tenants WHERE id = $1 AND suspended_reason "
                                 "IS NULL", tid), 1);
    receipt_field(f, req.request_id, "TENANT_RESUMED", "{predicate,data,before,suspendedReason}", buf, sizeof(buf));
    assert_string_equal(buf, "PAYMENT_FAILED");
    assert_chain(f->db, tid, 12);

    /* Downgrade to FREE with 5 seats (the current 45 would not fit). */
    make_plan_change(&req, "req-lc-down2", "lc-co", TP_SOURCE_ADMIN_API, TP_PLAN_FREE);
    req.has_requested_seats = true;
    req.requested_seats = 5;
    run_ok(f, &req);
    assert_quota(f, tid, TP_PLAN_FREE);
    assert_chain(f->db, tid, 15);

    /* Deprovision with 7 days of retention: a soft delete, every row kept. */
    make_action(&req, "req-lc-deprov", "lc-co", TP_ACTION_DEPROVISION, TP_SOURCE_BILLING);
    req.has_retention_days = true;
    req.retention_days = 7;
    run_ok(f, &req);
    assert_action_done(f, &req, 3);
    assert_status(f, tid, "deprovisioned");
    assert_int_equal(qint(f->db, "SELECT count(*) FROM tenants WHERE id = $1 AND deprovisioned_at "
                                 "IS NOT NULL AND purge_after = deprovisioned_at + interval '7 days' "
                                 "AND deprovisioned_at > now() - interval '1 minute'", tid), 1);
    assert_int_equal(qint(f->db, "SELECT count(*) FROM tenant_partitions p JOIN tenants t ON "
                                 "t.id = p.tenant_id WHERE t.id = $1 AND p.purge_after = t.purge_after",
                          tid), 3);
    assert_int_equal(qint(f->db, "SELECT count(*) FROM tenant_namespaces WHERE tenant_id = $1", tid), 1);
    assert_int_equal(qint(f->db, "SELECT count(*) FROM tenant_quotas WHERE tenant_id = $1", tid), 1);
    receipt_field(f, req.request_id, "TENANT_DEPROVISIONED", "{predicate,data,retentionDays}", buf, sizeof(buf));
    assert_string_equal(buf, "7");
    /* The state stage's output lists the changes the dry run showed. */
    receipt_field(f, req.request_id, "TENANT_DEPROVISIONED", "{predicate,data,after,purgeAfter}", buf, sizeof(buf));
    char purge[64];
    qtext(f->db, "SELECT to_char(purge_after AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') "
                 "FROM tenants WHERE id = $1", tid, purge, sizeof(purge));
    assert_string_equal(buf, purge);
    assert_chain(f->db, tid, 16);

    /* The slug stays taken; nothing acts on an offboarded tenant. */
    make_provision(&req, "req-lc-again", "lc-co", TP_SOURCE_ADMIN_API, TP_PLAN_PRO);
    out = run(f, &req);
    assert_int_equal(out.status, TP_RUN_FAILED);
    assert_string_equal(out.failure_reason, "SLUG_TAKEN");
    make_plan_change(&req, "req-lc-late", "lc-co", TP_SOURCE_ADMIN_API, TP_PLAN_PRO);
    out = run(f, &req);
    assert_int_equal(out.status, TP_RUN_FAILED);
    assert_string_equal(out.failure_reason, "INVALID_STATE");
    assert_chain(f->db, tid, 16);

    /* The status view shows the action, its receipts and the tenant as it is now. */
    char *js = tp_stages_status_json(f->db, "req-lc-deprov");
    assert_non_null(js);
    json_t *st = json_loads(js, 0, NULL);
    free(js);
    assert_string_equal(json_string_value(json_object_get(st, "action")), "DEPROVISION");
    assert_string_equal(json_string_value(json_object_get(st, "state")), "SUCCEEDED");
    assert_int_equal(json_array_size(json_object_get(st, "conditions")), 3);
    assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(st, "conditions"), 1), "stage")), "state");
    json_t *tenant = json_object_get(st, "tenant");
    assert_string_equal(json_string_value(json_object_get(tenant, "status")), "deprovisioned");
    assert_string_equal(json_string_value(json_object_get(tenant, "purgeAfter")), purge);
    assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(st, "partitions"), 0), "purgeAfter")), purge);
    assert_non_null(json_object_get(json_object_get(st, "receipts"), "deprovisioned"));
    json_decref(st);
}

/* Resume an active tenant, suspend a suspended one, act on an unknown slug: FAILED with the
 * enumerated reason, OPA not asked, not one row of the tenant changed. */
static void test_invalid_state_and_unknown_slug(void **state) {
    fixture *f = *state;
    tp_request prov, req;
    tp_run_result out;
    char before[64], after[64], buf[128];

    make_provision(&prov, "req-inv-prov", "inv-co", TP_SOURCE_ADMIN_API, TP_PLAN_PRO);
    run_ok(f, &prov);
    tenant_digest(f->db, "inv-co", before, sizeof(before));

    for (int per_stage = 0; per_stage <= 1; per_stage++) {
        char rid[64];
        f->env.per_stage_tx = per_stage;
        snprintf(rid, sizeof(rid), "req-inv-resume-%d", per_stage);
        make_action(&req, rid, "inv-co", TP_ACTION_RESUME, TP_SOURCE_ADMIN_API);
        out = run(f, &req);
        assert_int_equal(out.status, TP_RUN_FAILED);
        assert_string_equal(out.failure_reason, "INVALID_STATE");
        assert_int_equal(out.stage, TP_STAGE_POLICY);
        qtext(f->db, "SELECT state || '/' || failure_reason || '/' || action FROM provisioning_requests "
                     "WHERE request_id = $1", rid, buf, sizeof(buf));
        assert_string_equal(buf, "FAILED/INVALID_STATE/RESUME");
        qtext(f->db, "SELECT string_agg(stage || ':' || status || ':' || coalesce(reason, '-'), ' ' "
                     "ORDER BY ordinal) FROM provisioning_stages WHERE request_id = $1", rid, buf, sizeof(buf));
        assert_string_equal(buf, "policy:FAILED:INVALID_STATE state:PENDING:- receipts:PENDING:- "
                                 "isolation:PENDING:-");
        assert_int_equal(qint(f->db, "SELECT count(*) FROM policy_decisions WHERE request_id = $1", rid), 0);
        assert_int_equal(qint(f->db, "SELECT count(*) FROM receipt_outbox WHERE request_id = $1", rid), 0);

        snprintf(rid, sizeof(rid), "req-inv-ghost-%d", per_stage);
        make_action(&req, rid, "ghost-co", TP_ACTION_SUSPEND, TP_SOURCE_BILLING);
        out = run(f, &req);
        assert_int_equal(out.status, TP_RUN_FAILED);
        assert_string_equal(out.failure_reason, "TENANT_NOT_FOUND");
        assert_int_equal(qint(f->db, "SELECT count(*) FROM provisioning_requests WHERE request_id = $1 "
                                     "AND tenant_id IS NULL AND state = 'FAILED'", rid), 1);
    }
    f->env.per_stage_tx = false;
    tenant_digest(f->db, "inv-co", after, sizeof(after));
    assert_string_equal(before, after);

    /* Suspend twice (two billing events): the second finds the tenant suspended. */
    make_action(&req, "req-inv-s1", "inv-co", TP_ACTION_SUSPEND, TP_SOURCE_BILLING);
    run_ok(f, &req);
    tenant_digest(f->db, "inv-co", before, sizeof(before));
    make_action(&req, "req-inv-s2", "inv-co", TP_ACTION_SUSPEND, TP_SOURCE_BILLING);
    out = run(f, &req);
    assert_int_equal(out.status, TP_RUN_FAILED);
    assert_string_equal(out.failure_reason, "INVALID_STATE");
    tenant_digest(f->db, "inv-co", after, sizeof(after));
    assert_string_equal(before, after);
}

/* The state stage checks the state again under the tenant lock: a tenant that changed between the
 * policy decision and the change (another worker's action committed meanwhile) is not changed. */
static void test_state_changed_after_policy(void **state) {
    fixture *f = *state;
    tp_request prov, req, other;
    tp_run_result out;
    char before[64], after[64], buf[128];

    make_provision(&prov, "req-race-prov", "race-co", TP_SOURCE_ADMIN_API, TP_PLAN_PRO);
    run_ok(f, &prov);
    /* The suspend's policy stage commits alone (a fault in its state stage stops it there) ... */
    assert_int_equal(tp_db_exec_script(f->db,
                                       "CREATE FUNCTION fault() RETURNS trigger LANGUAGE plpgsql AS $$ "
                                       "BEGIN RAISE EXCEPTION 'injected fault' USING ERRCODE = '40001'; "
                                       "END $$; CREATE TRIGGER fault BEFORE UPDATE ON tenants FOR EACH "
                                       "ROW EXECUTE FUNCTION fault();"),
                     0);
    make_action(&req, "req-race-susp", "race-co", TP_ACTION_SUSPEND, TP_SOURCE_BILLING);
    out = run(f, &req);
    assert_int_equal(out.status, TP_RUN_RETRY);
    assert_int_equal(out.stage, TP_STAGE_STATE);
    assert_int_equal(tp_db_exec_script(f->db, "DROP TRIGGER fault ON tenants; DROP FUNCTION fault();"), 0);
    /* ... then someone else deprovisions the tenant ... */
    make_action(&other, "req-race-deprov", "race-co", TP_ACTION_DEPROVISION, TP_SOURCE_BILLING);
    run_ok(f, &other);
    tenant_digest(f->db, "race-co", before, sizeof(before));
    /* ... and the suspend's retry finds a deprovisioned tenant. */
    out = run(f, &req);
    assert_int_equal(out.status, TP_RUN_FAILED);
    assert_string_equal(out.failure_reason, "INVALID_STATE");
    assert_int_equal(out.stage, TP_STAGE_STATE);
    qtext(f->db, "SELECT failure_message FROM provisioning_requests WHERE request_id = $1",
          req.request_id, buf, sizeof(buf));
    assert_non_null(strstr(buf, "deprovisioned"));
    tenant_digest(f->db, "race-co", after, sizeof(after));
    assert_string_equal(before, after);
}

/* Denies end DENIED/POLICY_DENIED with the decision stored and the tenant untouched. */
static void test_denies(void **state) {
    fixture *f = *state;
    tp_request prov, req;
    tp_run_result out;
    char before[64], after[64], buf[256];

    make_provision(&prov, "req-deny-prov", "deny-co", TP_SOURCE_SELF_SERVE_API, TP_PLAN_PRO);
    run_ok(f, &prov);
    tenant_digest(f->db, "deny-co", before, sizeof(before));
    static const struct {
        const char *rid;
        tp_action action;
        tp_source source;
        tp_plan plan;
        const char *actor, *reason;
    } cases[] = {
        {"req-deny-seats", TP_ACTION_CHANGE_PLAN, TP_SOURCE_BILLING, TP_PLAN_FREE, NULL, "[\"SEATS_OVER_PLAN_CAP\"]"},
        {"req-deny-ent", TP_ACTION_CHANGE_PLAN, TP_SOURCE_SELF_SERVE_API, TP_PLAN_ENTERPRISE, NULL, "[\"ENTERPRISE_NOT_SELF_SERVE\"]"},
        {"req-deny-other", TP_ACTION_CHANGE_PLAN, TP_SOURCE_SELF_SERVE_API, TP_PLAN_STARTER, "user-99", "[\"NOT_TENANT_OWNER\"]"},
        {"req-deny-offboard-other", TP_ACTION_DEPROVISION, TP_SOURCE_SELF_SERVE_API, TP_PLAN_FREE, "user-99", "[\"NOT_TENANT_OWNER\"]"},
        {"req-deny-susp", TP_ACTION_SUSPEND, TP_SOURCE_SELF_SERVE_API, TP_PLAN_FREE, NULL, "[\"SELF_SERVE_NOT_ALLOWED\"]"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (cases[i].action == TP_ACTION_CHANGE_PLAN)
            make_plan_change(&req, cases[i].rid, "deny-co", cases[i].source, cases[i].plan);
        else
            make_action(&req, cases[i].rid, "deny-co", cases[i].action, cases[i].source);
        if (cases[i].actor)
            snprintf(req.actor.id, sizeof(req.actor.id), "%s", cases[i].actor);
        out = run(f, &req);
        assert_int_equal(out.status, TP_RUN_DENIED);
        assert_string_equal(out.failure_reason, "POLICY_DENIED");
        qtext(f->db, "SELECT d.reasons::text || '/' || d.allow || '/' || r.state FROM policy_decisions d "
                     "JOIN provisioning_requests r USING (request_id) WHERE d.request_id = $1",
              cases[i].rid, buf, sizeof(buf));
        char want[256];
        snprintf(want, sizeof(want), "%s/false/DENIED", cases[i].reason);
        assert_string_equal(buf, want);
        assert_int_equal(qint(f->db, "SELECT count(*) FROM receipt_outbox WHERE request_id = $1",
                              cases[i].rid), 0);
    }
    tenant_digest(f->db, "deny-co", after, sizeof(after));
    assert_string_equal(before, after);
    /* The owner may downgrade within self-serve limits and offboard its own tenant. */
    make_plan_change(&req, "req-deny-ok", "deny-co", TP_SOURCE_SELF_SERVE_API, TP_PLAN_STARTER);
    run_ok(f, &req);
    make_action(&req, "req-deny-bye", "deny-co", TP_ACTION_DEPROVISION, TP_SOURCE_SELF_SERVE_API);
    run_ok(f, &req);
    /* Offboarded tenants no longer count against the owner's tenant limit. */
    assert_int_equal(qint(f->db, "SELECT count(*) FROM tenants WHERE owner_id = $1 AND status = "
                                 "'deprovisioned'", "user-42"), 1);
}

/* The same action request again (redelivery, replay): applied once. */
static void test_duplicates_apply_once(void **state) {
    fixture *f = *state;
    tp_request prov, req;
    tp_run_result out;
    char tid[64], before[64], after[64];

    make_provision(&prov, "req-dup-prov", "dup-co", TP_SOURCE_ADMIN_API, TP_PLAN_STARTER);
    run_ok(f, &prov);
    qtext(f->db, "SELECT tenant_id FROM provisioning_requests WHERE request_id = $1", prov.request_id,
          tid, sizeof(tid));
    make_plan_change(&req, "req-dup-plan", "dup-co", TP_SOURCE_BILLING, TP_PLAN_PRO);
    assert_int_equal(tp_stages_accept(f->db, &req, NULL, "tenant.provisioning.requests.v1", 0, 9), 0);
    assert_int_equal(tp_stages_accept(f->db, &req, NULL, "tenant.provisioning.requests.v1", 0, 9), 0);
    run_ok(f, &req);
    tenant_digest(f->db, "dup-co", before, sizeof(before));
    for (int i = 0; i < 3; i++) {
        out = run(f, &req);
        assert_int_equal(out.status, TP_RUN_SUCCEEDED);
        f->env.per_stage_tx = !f->env.per_stage_tx;
    }
    f->env.per_stage_tx = false;
    assert_int_equal(tp_stages_accept(f->db, &req, NULL, NULL, 0, 0), 0);
    out = run(f, &req);
    assert_int_equal(out.status, TP_RUN_SUCCEEDED);
    tenant_digest(f->db, "dup-co", after, sizeof(after));
    assert_string_equal(before, after);
    assert_action_done(f, &req, 5);
    assert_int_equal(qint(f->db, "SELECT count(*) FROM receipt_outbox WHERE request_id = $1",
                          req.request_id), 3);
    assert_int_equal(qint(f->db, "SELECT count(*) FROM provisioning_requests WHERE request_id = $1 "
                                 "AND origin_offset = 9 AND action = 'CHANGE_PLAN'", req.request_id), 1);
    assert_chain(f->db, tid, 6);
    /* The stored payload is the action's and reads back as the same request (tpctl dlq replay). */
    char payload[1024];
    tp_request back;
    qtext(f->db, "SELECT payload::text FROM provisioning_requests WHERE request_id = $1",
          req.request_id, payload, sizeof(payload));
    assert_int_equal(tp_stages_request_from_json(payload, &back), 0);
    assert_int_equal(back.action, TP_ACTION_CHANGE_PLAN);
    assert_true(back.has_plan);
    assert_int_equal(back.plan, TP_PLAN_PRO);
    assert_string_equal(back.tenant.slug, "dup-co");
    assert_string_equal(back.request_id, req.request_id);
}

/* Everything a run left for one action request, as comparable text. */
static void request_facts(fixture *f, const char *rid, char *buf, size_t cap) {
    qtext(f->db,
          "SELECT r.state || '/' || coalesce(r.failure_reason, '-') || ' ' || "
          "(SELECT string_agg(s.stage || ':' || s.status || ':' || s.attempts || ':' || "
          "coalesce(s.reason, '-'), ' ' ORDER BY s.ordinal) FROM provisioning_stages s "
          "WHERE s.request_id = r.request_id) || ' decisions=' || (SELECT count(*) FROM "
          "policy_decisions d WHERE d.request_id = r.request_id) || ' receipts=' || "
          "(SELECT count(*) FROM receipt_outbox o WHERE o.request_id = r.request_id) || ' tenant=' || "
          "coalesce((SELECT t.status || '/' || t.plan || '/' || coalesce(t.suspended_reason, '-') || "
          "'/' || (t.purge_after IS NOT NULL) FROM tenants t WHERE t.slug = r.tenant_slug), '-') || "
          "' quota=' || coalesce((SELECT q.tier FROM tenant_quotas q JOIN tenants t ON t.id = "
          "q.tenant_id WHERE t.slug = r.tenant_slug), '-') || ' parts=' || (SELECT string_agg("
          "p.isolation || '/' || (p.purge_after IS NOT NULL), ',' ORDER BY p.name) FROM "
          "tenant_partitions p JOIN tenants t ON t.id = p.tenant_id WHERE t.slug = r.tenant_slug) "
          "FROM provisioning_requests r WHERE r.request_id = $1",
          rid, buf, cap);
}

/* A transient fault in each stage of each action (a trigger raising 40001): the one-transaction
 * path rolls back and the per-stage path records the retry, leaving exactly what the per-stage
 * path alone leaves; after the fault clears both finish the same way. */
static void test_fault_in_each_action_stage(void **state) {
    fixture *f = *state;
    static const struct {
        tp_action action;
        const char *stage, *trigger;
    } faults[] = {
        {TP_ACTION_CHANGE_PLAN, "policy", "BEFORE INSERT ON policy_decisions"},
        {TP_ACTION_CHANGE_PLAN, "state", "BEFORE UPDATE ON tenants"},
        {TP_ACTION_CHANGE_PLAN, "quota", "BEFORE INSERT ON tenant_quotas"},
        {TP_ACTION_CHANGE_PLAN, "receipts", "BEFORE INSERT ON receipt_outbox"},
        {TP_ACTION_CHANGE_PLAN, "isolation", "BEFORE INSERT ON receipt_outbox FOR EACH ROW WHEN "
                                             "(NEW.action_type = 'TENANT_ISOLATION_VERIFIED')"},
        {TP_ACTION_SUSPEND, "policy", "BEFORE INSERT ON policy_decisions"},
        {TP_ACTION_SUSPEND, "state", "BEFORE UPDATE ON tenants"},
        {TP_ACTION_SUSPEND, "receipts", "BEFORE INSERT ON receipt_outbox"},
        {TP_ACTION_RESUME, "policy", "BEFORE INSERT ON policy_decisions"},
        {TP_ACTION_RESUME, "state", "BEFORE UPDATE ON tenants"},
        {TP_ACTION_RESUME, "receipts", "BEFORE INSERT ON receipt_outbox"},
        {TP_ACTION_RESUME, "isolation", "BEFORE INSERT ON receipt_outbox FOR EACH ROW WHEN "
                                        "(NEW.action_type = 'TENANT_ISOLATION_VERIFIED')"},
        {TP_ACTION_DEPROVISION, "policy", "BEFORE INSERT ON policy_decisions"},
        {TP_ACTION_DEPROVISION, "state", "BEFORE UPDATE ON tenant_partitions"},
        {TP_ACTION_DEPROVISION, "receipts", "BEFORE INSERT ON receipt_outbox"},
    };
    for (size_t i = 0; i < sizeof(faults) / sizeof(faults[0]); i++) {
        tp_request reqs[2];
        tp_run_result outs[2];
        char facts[2][1024], sql[600], want[64];
        for (int k = 0; k < 2; k++) {
            tp_request prov;
            char rid[64], slug[32];
            snprintf(slug, sizeof(slug), "fault-%zu-%c", i, "ab"[k]);
            snprintf(rid, sizeof(rid), "req-fault-prov-%zu-%d", i, k);
            make_provision(&prov, rid, slug, TP_SOURCE_ADMIN_API, TP_PLAN_PRO);
            run_ok(f, &prov);
            if (faults[i].action == TP_ACTION_RESUME) {
                snprintf(rid, sizeof(rid), "req-fault-susp-%zu-%d", i, k);
                make_action(&reqs[k], rid, slug, TP_ACTION_SUSPEND, TP_SOURCE_BILLING);
                run_ok(f, &reqs[k]);
            }
            snprintf(rid, sizeof(rid), "req-fault-%s-%s-%d", tp_action_name(faults[i].action),
                     faults[i].stage, k);
            if (faults[i].action == TP_ACTION_CHANGE_PLAN)
                make_plan_change(&reqs[k], rid, slug, TP_SOURCE_ADMIN_API, TP_PLAN_ENTERPRISE);
            else
                make_action(&reqs[k], rid, slug, faults[i].action, TP_SOURCE_BILLING);
        }
        snprintf(sql, sizeof(sql),
                 "CREATE FUNCTION fault() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                 "RAISE EXCEPTION 'injected fault' USING ERRCODE = '40001'; END $$; "
                 "CREATE TRIGGER fault %s%s EXECUTE FUNCTION fault();", faults[i].trigger,
                 strstr(faults[i].trigger, "FOR EACH ROW") ? "" : " FOR EACH ROW");
        assert_int_equal(tp_db_exec_script(f->db, sql), 0);
        outs[0] = run(f, &reqs[0]);
        f->env.per_stage_tx = true;
        outs[1] = run(f, &reqs[1]);
        f->env.per_stage_tx = false;
        for (int k = 0; k < 2; k++) {
            if (outs[k].status != TP_RUN_RETRY)
                fprintf(stderr, "%s: status %d stage %s %s\n", reqs[k].request_id, outs[k].status,
                        tp_stage_name(outs[k].stage), outs[k].message);
            assert_int_equal(outs[k].status, TP_RUN_RETRY);
            assert_string_equal(tp_stage_name(outs[k].stage), faults[i].stage);
            assert_int_equal(outs[k].attempts, 1);
            request_facts(f, reqs[k].request_id, facts[k], sizeof(facts[k]));
        }
        /* Same conditions, same rows (the slugs differ, the facts do not name them). */
        assert_string_equal(facts[0], facts[1]);
        assert_non_null(strstr(facts[0], "RETRYING:1:DB"));
        {
            char table[64];
            assert_int_equal(sscanf(strstr(faults[i].trigger, " ON ") + 4, "%63s", table), 1);
            snprintf(sql, sizeof(sql), "DROP TRIGGER fault ON %s; DROP FUNCTION fault();", table);
        }
        assert_int_equal(tp_db_exec_script(f->db, sql), 0);
        run_ok(f, &reqs[0]);
        f->env.per_stage_tx = true;
        run_ok(f, &reqs[1]);
        f->env.per_stage_tx = false;
        request_facts(f, reqs[0].request_id, facts[0], sizeof(facts[0]));
        request_facts(f, reqs[1].request_id, facts[1], sizeof(facts[1]));
        assert_string_equal(facts[0], facts[1]);
        assert_true(strncmp(facts[0], "SUCCEEDED/- ", 12) == 0);
        snprintf(want, sizeof(want), " %s:SUCCEEDED:2:- ", faults[i].stage);
        assert_non_null(strstr(facts[0], want));
    }
}

/* A request id is one request: a record that reuses the id of another request (another action,
 * or another tenant) is refused with TP_ECONFLICT (the worker dead-letters it) and leaves the
 * first request exactly as it was: it does not run the first one's remaining stages nor mark it
 * FAILED, and it is not answered with the first one's outcome. */
static void test_request_id_reused(void **state) {
    fixture *f = *state;
    tp_request prov, req;
    tp_run_result out;
    char buf[256], facts[1024], again[1024];

    /* A provisioning stopped at its partitions stage (a transient fault) ... */
    make_provision(&prov, "req-reuse", "reuse-co", TP_SOURCE_ADMIN_API, TP_PLAN_PRO);
    assert_int_equal(tp_db_exec_script(f->db,
                                       "CREATE FUNCTION fault() RETURNS trigger LANGUAGE plpgsql AS $$ "
                                       "BEGIN RAISE EXCEPTION 'injected fault' USING ERRCODE = '40001'; "
                                       "END $$; CREATE TRIGGER fault BEFORE INSERT ON tenant_partitions "
                                       "FOR EACH ROW EXECUTE FUNCTION fault();"),
                     0);
    out = run(f, &prov);
    assert_int_equal(out.status, TP_RUN_RETRY);
    request_facts(f, "req-reuse", facts, sizeof(facts));
    /* ... and an action that reuses its id, for the same tenant or another one. */
    for (int per_stage = 0; per_stage <= 1; per_stage++) {
        f->env.per_stage_tx = per_stage;
        make_action(&req, "req-reuse", "reuse-co", TP_ACTION_SUSPEND, TP_SOURCE_BILLING);
        assert_int_equal(tp_stages_run(&f->env, &req, &out), TP_ECONFLICT);
        assert_non_null(strstr(out.message, "PROVISION"));
        make_plan_change(&req, "req-reuse", "other-co", TP_SOURCE_BILLING, TP_PLAN_FREE);
        assert_int_equal(tp_stages_run(&f->env, &req, &out), TP_ECONFLICT);
        request_facts(f, "req-reuse", again, sizeof(again));
        assert_string_equal(facts, again);
    }
    f->env.per_stage_tx = false;
    assert_int_equal(qint(f->db, "SELECT count(*) FROM policy_decisions WHERE request_id = $1",
                          "req-reuse"), 1);
    assert_int_equal(tp_db_exec_script(f->db, "DROP TRIGGER fault ON tenant_partitions; "
                                              "DROP FUNCTION fault();"),
                     0);
    /* The provisioning then finishes as if nothing had come in between. */
    run_ok(f, &prov);
    qtext(f->db, "SELECT state || '/' || action || '/' || tenant_slug FROM provisioning_requests "
                 "WHERE request_id = $1", "req-reuse", buf, sizeof(buf));
    assert_string_equal(buf, "SUCCEEDED/PROVISION/reuse-co");
    /* Once it is terminal, a reuse is still a conflict, not the provisioning's SUCCEEDED. */
    make_action(&req, "req-reuse", "reuse-co", TP_ACTION_SUSPEND, TP_SOURCE_BILLING);
    assert_int_equal(tp_stages_run(&f->env, &req, &out), TP_ECONFLICT);
    make_provision(&req, "req-reuse", "reuse-other", TP_SOURCE_ADMIN_API, TP_PLAN_PRO);
    assert_int_equal(tp_stages_run(&f->env, &req, &out), TP_ECONFLICT);
    qtext(f->db, "SELECT status FROM tenants WHERE slug = $1", "reuse-co", buf, sizeof(buf));
    assert_string_equal(buf, "active");
    assert_int_equal(qint(f->db, "SELECT count(*) FROM tenants WHERE slug = $1", "reuse-other"), 0);
}

/* The decision is about the tenant as the policy stage read it: when another action changed what
 * the policy looked at (here the plan: a self-serve owner may not offboard an ENTERPRISE tenant)
 * before the state stage runs, the state stage does not apply the stale decision. The request
 * ends FAILED/TENANT_CHANGED and the tenant is not changed. */
static void test_decision_stale_after_plan_change(void **state) {
    fixture *f = *state;
    tp_request prov, req, other;
    tp_run_result out;
    char before[64], after[64], buf[256];

    for (int per_stage = 0; per_stage <= 1; per_stage++) {
        char slug[32], rid[64];
        snprintf(slug, sizeof(slug), "stale-co-%d", per_stage);
        snprintf(rid, sizeof(rid), "req-stale-prov-%d", per_stage);
        make_provision(&prov, rid, slug, TP_SOURCE_SELF_SERVE_API, TP_PLAN_PRO);
        run_ok(f, &prov);
        /* The owner offboards its PRO tenant: allowed; the state stage meets a fault ... */
        assert_int_equal(tp_db_exec_script(f->db,
                                           "CREATE FUNCTION fault() RETURNS trigger LANGUAGE plpgsql AS "
                                           "$$ BEGIN RAISE EXCEPTION 'injected fault' USING ERRCODE = "
                                           "'40001'; END $$; CREATE TRIGGER fault BEFORE UPDATE ON "
                                           "tenants FOR EACH ROW EXECUTE FUNCTION fault();"),
                         0);
        snprintf(rid, sizeof(rid), "req-stale-bye-%d", per_stage);
        make_action(&req, rid, slug, TP_ACTION_DEPROVISION, TP_SOURCE_SELF_SERVE_API);
        f->env.per_stage_tx = per_stage;
        out = run(f, &req);
        f->env.per_stage_tx = false;
        assert_int_equal(out.status, TP_RUN_RETRY);
        assert_int_equal(out.stage, TP_STAGE_STATE);
        assert_int_equal(qint(f->db, "SELECT count(*) FROM policy_decisions WHERE request_id = $1 "
                                     "AND allow", rid), 1);
        assert_int_equal(tp_db_exec_script(f->db, "DROP TRIGGER fault ON tenants; DROP FUNCTION fault();"), 0);
        /* ... meanwhile an admin upgrades the tenant to ENTERPRISE ... */
        snprintf(buf, sizeof(buf), "req-stale-up-%d", per_stage);
        make_plan_change(&other, buf, slug, TP_SOURCE_ADMIN_API, TP_PLAN_ENTERPRISE);
        run_ok(f, &other);
        tenant_digest(f->db, slug, before, sizeof(before));
        /* ... so the owner's retry must not deprovision an ENTERPRISE tenant. */
        f->env.per_stage_tx = per_stage;
        out = run(f, &req);
        f->env.per_stage_tx = false;
        if (out.status != TP_RUN_FAILED)
            fprintf(stderr, "%s: status %d reason %s\n", rid, out.status, out.failure_reason);
        assert_int_equal(out.status, TP_RUN_FAILED);
        assert_string_equal(out.failure_reason, "TENANT_CHANGED");
        assert_int_equal(out.stage, TP_STAGE_STATE);
        qtext(f->db, "SELECT failure_message FROM provisioning_requests WHERE request_id = $1", rid,
              buf, sizeof(buf));
        assert_non_null(strstr(buf, "ENTERPRISE"));
        tenant_digest(f->db, slug, after, sizeof(after));
        assert_string_equal(before, after);
        qtext(f->db, "SELECT status || '/' || plan FROM tenants WHERE slug = $1", slug, buf, sizeof(buf));
        assert_string_equal(buf, "active/ENTERPRISE");
        assert_int_equal(qint(f->db, "SELECT count(*) FROM receipt_outbox WHERE request_id = $1", rid), 0);
    }
}

/* Two plan changes of one tenant from two workers (another key): A's quota stage meets a fault
 * after its state stage committed, B (to ENTERPRISE) runs through meanwhile. A's retry must leave
 * the quota vector of the plan the tenant has (B's), not A's: the vector and the plan agree, the
 * isolation guard passes and the tenant is not quarantined. */
static void test_plan_changes_interleaved(void **state) {
    fixture *f = *state;
    tp_request prov, a, b;
    tp_run_result out;
    char buf[256];

    for (int per_stage = 0; per_stage <= 1; per_stage++) {
        char slug[32], rid[64];
        snprintf(slug, sizeof(slug), "twice-co-%d", per_stage);
        snprintf(rid, sizeof(rid), "req-twice-prov-%d", per_stage);
        make_provision(&prov, rid, slug, TP_SOURCE_ADMIN_API, TP_PLAN_STARTER);
        prov.requested_seats = 5;
        run_ok(f, &prov);
        assert_int_equal(tp_db_exec_script(f->db,
                                           "CREATE FUNCTION fault() RETURNS trigger LANGUAGE plpgsql AS "
                                           "$$ BEGIN RAISE EXCEPTION 'injected fault' USING ERRCODE = "
                                           "'40001'; END $$; CREATE TRIGGER fault BEFORE INSERT ON "
                                           "tenant_quotas FOR EACH ROW EXECUTE FUNCTION fault();"),
                         0);
        snprintf(rid, sizeof(rid), "req-twice-a-%d", per_stage);
        make_plan_change(&a, rid, slug, TP_SOURCE_BILLING, TP_PLAN_PRO);
        f->env.per_stage_tx = true; /* the state stage commits alone */
        out = run(f, &a);
        assert_int_equal(out.status, TP_RUN_RETRY);
        assert_int_equal(out.stage, TP_STAGE_QUOTA);
        assert_int_equal(tp_db_exec_script(f->db, "DROP TRIGGER fault ON tenant_quotas; DROP FUNCTION fault();"), 0);
        f->env.per_stage_tx = false;
        snprintf(rid, sizeof(rid), "req-twice-b-%d", per_stage);
        make_plan_change(&b, rid, slug, TP_SOURCE_ADMIN_API, TP_PLAN_ENTERPRISE);
        run_ok(f, &b);
        f->env.per_stage_tx = per_stage;
        out = run(f, &a);
        f->env.per_stage_tx = false;
        if (out.status != TP_RUN_SUCCEEDED)
            fprintf(stderr, "%s: status %d stage %s reason %s %s\n", a.request_id, out.status,
                    tp_stage_name(out.stage), out.failure_reason, out.message);
        assert_int_equal(out.status, TP_RUN_SUCCEEDED);
        qtext(f->db, "SELECT t.status || '/' || t.plan || '/' || q.tier FROM tenants t JOIN "
                     "tenant_quotas q ON q.tenant_id = t.id WHERE t.slug = $1", slug, buf, sizeof(buf));
        assert_string_equal(buf, "active/ENTERPRISE/ENTERPRISE");
    }
}

/* A plan change's receipts stage meets a fault after its state and quota stages committed; a
 * suspension (another worker) runs through meanwhile. The plan change's receipt, sealed later,
 * still describes its own change: "after" is the tenant as the plan change left it (active, PRO,
 * PRO's vector), not the suspended tenant of the next action. */
static void test_receipt_after_is_own_change(void **state) {
    fixture *f = *state;
    tp_request prov, a, b;
    tp_run_result out;
    char buf[256], tid[64];

    for (int per_stage = 0; per_stage <= 1; per_stage++) {
        char slug[32], rid[64];
        snprintf(slug, sizeof(slug), "own-after-%d", per_stage);
        snprintf(rid, sizeof(rid), "req-own-prov-%d", per_stage);
        make_provision(&prov, rid, slug, TP_SOURCE_ADMIN_API, TP_PLAN_STARTER);
        prov.requested_seats = 5;
        run_ok(f, &prov);
        qtext(f->db, "SELECT id FROM tenants WHERE slug = $1", slug, tid, sizeof(tid));
        assert_int_equal(tp_db_exec_script(f->db,
                                           "CREATE FUNCTION fault() RETURNS trigger LANGUAGE plpgsql AS "
                                           "$$ BEGIN RAISE EXCEPTION 'injected fault' USING ERRCODE = "
                                           "'40001'; END $$; CREATE TRIGGER fault BEFORE INSERT ON "
                                           "receipt_outbox FOR EACH ROW EXECUTE FUNCTION fault();"),
                         0);
        snprintf(rid, sizeof(rid), "req-own-a-%d", per_stage);
        make_plan_change(&a, rid, slug, TP_SOURCE_BILLING, TP_PLAN_PRO);
        f->env.per_stage_tx = true; /* state and quota commit alone */
        out = run(f, &a);
        assert_int_equal(out.status, TP_RUN_RETRY);
        assert_int_equal(out.stage, TP_STAGE_RECEIPTS);
        assert_int_equal(tp_db_exec_script(f->db, "DROP TRIGGER fault ON receipt_outbox; DROP FUNCTION fault();"), 0);
        f->env.per_stage_tx = false;
        snprintf(rid, sizeof(rid), "req-own-b-%d", per_stage);
        make_action(&b, rid, slug, TP_ACTION_SUSPEND, TP_SOURCE_BILLING);
        run_ok(f, &b);
        f->env.per_stage_tx = per_stage;
        out = run(f, &a);
        f->env.per_stage_tx = false;
        assert_int_equal(out.status, TP_RUN_SUCCEEDED);
        receipt_field(f, a.request_id, "TENANT_PLAN_CHANGED", "{predicate,data,after,status}", buf, sizeof(buf));
        assert_string_equal(buf, "active");
        receipt_field(f, a.request_id, "TENANT_PLAN_CHANGED", "{predicate,data,after,plan}", buf, sizeof(buf));
        assert_string_equal(buf, "PRO");
        receipt_field(f, a.request_id, "TENANT_PLAN_CHANGED", "{predicate,data,after,quota,tier}", buf, sizeof(buf));
        assert_string_equal(buf, "PRO");
        receipt_field(f, a.request_id, "TENANT_QUOTA_ASSIGNED", "{predicate,data,tier}", buf, sizeof(buf));
        assert_string_equal(buf, "PRO");
        receipt_field(f, b.request_id, "TENANT_SUSPENDED", "{predicate,data,after,status}", buf, sizeof(buf));
        assert_string_equal(buf, "suspended");
        assert_status(f, tid, "suspended");
        assert_chain(f->db, tid, 7); /* provisioning 3, the suspension 1, the plan change 3 */
    }
}

int main(void) {
    e2e_stack_share(); /* a fault test elsewhere must not restart OPA under us */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_preview, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lifecycle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_state_and_unknown_slug, setup, teardown),
        cmocka_unit_test_setup_teardown(test_state_changed_after_policy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_denies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_duplicates_apply_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fault_in_each_action_stage, setup, teardown),
        cmocka_unit_test_setup_teardown(test_request_id_reused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_decision_stale_after_plan_change, setup, teardown),
        cmocka_unit_test_setup_teardown(test_plan_changes_interleaved, setup, teardown),
        cmocka_unit_test_setup_teardown(test_receipt_after_is_own_change, setup, teardown),
    };
    if (getenv("TP_TEST_FILTER"))
        cmocka_set_test_filter(getenv("TP_TEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
