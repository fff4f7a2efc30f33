/* stage_isolation.c: stage 7, the isolation guard: re-reads what the earlier stages persisted and
 * checks it (ownership, regions against residency, one quota row matching the plan, dedicated
 * partitions for ENTERPRISE and shared ones otherwise, kill switch). Pass: tenant active +
 * TENANT_ISOLATION_VERIFIED receipt. Fail: tenant quarantined, request FAILED/ISOLATION_VIOLATION;
 * both outcomes commit with the stage marker. Tenant actions (CHANGE_PLAN, RESUME) run the same
 * guard after their change; a pass keeps the status the action left (a suspended tenant changing
 * plans stays suspended) and the provisioning kill switch does not apply to them. */
#include "stages_int.h"
#include "tp/error.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool tp_isolation_evaluate(const tp_isolation_facts *f, tp_isolation_check c[TP_ISOLATION_CHECKS]) {
    const char *want_prefix = f->residency && strcmp(f->residency, "EU") == 0 ? "eu-" : "us-";
    bool residency_known = f->residency && (strcmp(f->residency, "US") == 0 ||
                                            strcmp(f->residency, "EU") == 0);
    c[0].name = "namespace_owned_by_tenant";
    c[0].passed = f->n_namespaces == 1 && f->namespace_ok;
    c[1].name = "partitions_owned_by_tenant";
    c[1].passed = f->n_partitions == 3 && f->partitions_owned && f->partitions_isolation_ok;
    c[2].name = "regions_match_residency";
    c[2].passed = residency_known && f->tenant_region &&
                  strncmp(f->tenant_region, want_prefix, 3) == 0 && f->partitions_region_ok &&
                  f->region_allowed;
    c[3].name = "quota_matches_plan";
    c[3].passed = f->n_quotas == 1 && f->quota_matches_plan;
    c[4].name = "kill_switch_off";
    c[4].passed = !f->kill_switch;
    for (int i = 0; i < TP_ISOLATION_CHECKS; i++)
        if (!c[i].passed)
            return false;
    return true;
}

static bool cell_eq_int(const tp_res *res, int row, int col, int64_t want) {
    int64_t v;
    return tp_res_get_int64(res, row, col, &v) == 0 && v == want;
}

/* What the tenant owns, by its id ($1) and by the ids its rows must have ($2..$4: the three
 * partitions; the namespace's is 'ns_' || $1), so a row under the right id but another tenant is
 * seen too. Each "owned by, or named like" is a UNION of index lookups, never an OR nor an IN: a
 * prepared statement's generic plan is kept for the connection's life, and for
 * "tenant_id = $1 OR id IN (...)" PostgreSQL picks a sequential scan while the tables are small
 * (never analyzed, it assumes 10 pages), also for "id IN ($2, $3, $4)" alone, and keeps it as
 * they grow: 4-5 ms a request at 3,000
 * tenants in scripts/bench. test_stage_plans checks the generic plan uses the indexes. */
#define NS_COLS "SELECT 'n', id, tenant_id, slug, NULL, NULL, NULL, NULL, NULL FROM tenant_namespaces "
#define PART_COLS                                                                                  \
    "SELECT 'p', id, tenant_id, name, region, isolation, NULL, NULL, NULL FROM tenant_partitions "
const char tp_isolation_read_sql[] =
    NS_COLS "WHERE tenant_id = $1 UNION " NS_COLS "WHERE id = 'ns_' || $1 "
    "UNION ALL (" PART_COLS "WHERE tenant_id = $1 UNION " PART_COLS "WHERE id = $2 UNION " PART_COLS
    "WHERE id = $3 UNION " PART_COLS "WHERE id = $4) "
    "UNION ALL SELECT 'q', tier, requests_per_minute::text, requests_per_day::text, "
    "ingest_events_per_minute::text, max_tokens_per_request::text, "
    "storage_bytes::text, seat_cap::text, burst_multiplier::float8::text "
    "FROM tenant_quotas WHERE tenant_id = $1";
#undef NS_COLS
#undef PART_COLS

/* Gathers the facts in two round trips (the tenant under its row lock with the kill switch, then
 * every namespace, partition and quota row that names it); strings copied into the caller's
 * buffers. */
static int gather(tp_stage_ctx *ctx, tp_isolation_facts *f, char *residency, char *region,
                  char *plan, char *status, size_t cap) {
    tp_res *res = NULL;
    const char *tid = ctx->tenant_id;
    char slug[TP_SLUG_MAX + 1], env[16], ns_id[80], part_prefix[80], want_slug[TP_SLUG_MAX + 20];
    const char *want_iso;
    bool seen[3] = {false, false, false};
    int rc;

    rc = tp_db_query(ctx->db, "SELECT residency, region, plan, slug, environment, "
                              "coalesce((SELECT enabled FROM tp_flags WHERE name = "
                              "'provisioning.kill_switch'), false), status FROM tenants "
                              "WHERE id = $1 FOR UPDATE",
                     1, &tid, &res);
    if (rc != 0)
        return tp_stage_db_error(ctx, rc, "lock tenant");
    if (tp_res_nrows(res) != 1) {
        tp_res_free(res);
        snprintf(ctx->message, sizeof(ctx->message), "tenant %s not found", tid);
        return TP_EDB_PERMANENT;
    }
    snprintf(residency, cap, "%s", tp_res_get(res, 0, 0));
    snprintf(region, cap, "%s", tp_res_get(res, 0, 1));
    snprintf(plan, cap, "%s", tp_res_get(res, 0, 2));
    snprintf(slug, sizeof(slug), "%s", tp_res_get(res, 0, 3));
    snprintf(env, sizeof(env), "%s", tp_res_get(res, 0, 4));
    f->kill_switch = ctx->env->kill_switch || strcmp(tp_res_get(res, 0, 5), "t") == 0;
    snprintf(status, cap, "%s", tp_res_get(res, 0, 6));
    tp_res_free(res);
    f->tenant_id = tid;
    f->residency = residency;
    f->tenant_region = region;
    f->plan = plan;
    /* No list configured: the policy alone judges regions. */
    f->region_allowed = !ctx->env->region_allowlist || !ctx->env->region_allowlist[0] ||
                        tp_region_in_list(ctx->env->region_allowlist, region);

    snprintf(ns_id, sizeof(ns_id), "ns_%s", tid);
    snprintf(want_slug, sizeof(want_slug), "%s-%s", slug, env);
    snprintf(part_prefix, sizeof(part_prefix), "part_%s_", tid);
    /* The three ids the tenant's partitions must have, matched exactly so the primary key finds
     * them (a prefix match scanned the whole table: 5 ms a request at 3,000 partitions). */
    char part_ids[3][128];
    for (int k = 0; k < 3; k++)
        snprintf(part_ids[k], sizeof(part_ids[k]), "%s%s", part_prefix, tp_partition_names[k]);
    const char *p2[4] = {tid, part_ids[0], part_ids[1], part_ids[2]};
    rc = tp_db_query(ctx->db, tp_isolation_read_sql, 4, p2, &res);
    if (rc != 0)
        return tp_stage_db_error(ctx, rc, "read what the tenant owns");
    want_iso = strcmp(plan, "ENTERPRISE") == 0 ? "dedicated" : "shared";
    f->partitions_owned = f->partitions_isolation_ok = f->partitions_region_ok = true;
    for (int r = 0; r < tp_res_nrows(res); r++) {
        const char *kind = tp_res_get(res, r, 0);
        if (kind[0] == 'n') {
            f->namespace_ok = ++f->n_namespaces == 1 && strcmp(tp_res_get(res, r, 1), ns_id) == 0 &&
                              strcmp(tp_res_get(res, r, 2), tid) == 0 &&
                              strcmp(tp_res_get(res, r, 3), want_slug) == 0;
        } else if (kind[0] == 'p') {
            bool named = false;
            f->n_partitions++;
            for (int k = 0; k < 3; k++) {
                if (strcmp(tp_res_get(res, r, 3), tp_partition_names[k]) == 0 && !seen[k]) {
                    seen[k] = true;
                    named = strcmp(tp_res_get(res, r, 1), part_ids[k]) == 0;
                }
            }
            if (!named || tp_res_isnull(res, r, 2) || strcmp(tp_res_get(res, r, 2), tid) != 0)
                f->partitions_owned = false;
            if (strcmp(tp_res_get(res, r, 4), region) != 0)
                f->partitions_region_ok = false;
            if (strcmp(tp_res_get(res, r, 5), want_iso) != 0)
                f->partitions_isolation_ok = false;
        } else {
            tp_plan p;
            tp_quota_tier q;
            f->quota_matches_plan =
                ++f->n_quotas == 1 && strcmp(tp_res_get(res, r, 1), plan) == 0 &&
                tp_plan_parse(plan, &p) == 0 && tp_stage_quota_tier(ctx, p, &q) == 0 &&
                cell_eq_int(res, r, 2, q.requests_per_minute) &&
                cell_eq_int(res, r, 3, q.requests_per_day) &&
                cell_eq_int(res, r, 4, q.ingest_events_per_minute) &&
                cell_eq_int(res, r, 5, q.max_tokens_per_request) &&
                cell_eq_int(res, r, 6, q.storage_bytes) && cell_eq_int(res, r, 7, q.seat_cap) &&
                fabs(strtod(tp_res_get(res, r, 8), NULL) - q.burst_multiplier) < 0.0005;
        }
    }
    tp_res_free(res);
    return 0;
}

/* The guard; action: run after a tenant action (no kill switch, the status kept on a pass). */
static int isolation_guard(tp_stage_ctx *ctx, bool action) {
    tp_isolation_facts f;
    tp_isolation_check checks[TP_ISOLATION_CHECKS];
    char residency[TP_REGION_MAX + 1], region[TP_REGION_MAX + 1], plan[TP_REGION_MAX + 1];
    char status[TP_REGION_MAX + 1];
    char failed[256] = "", receipt_id[64];
    json_t *arr = NULL, *data = NULL;
    bool pass;
    int rc;

    if (!ctx->tenant_id[0]) {
        snprintf(ctx->message, sizeof(ctx->message), "no tenant recorded for the request");
        return TP_EDB_PERMANENT;
    }
    memset(&f, 0, sizeof(f));
    if ((rc = gather(ctx, &f, residency, region, plan, status, sizeof(region))) != 0)
        return rc;
    if (action)
        f.kill_switch = false; /* provisioning's switch: it stops new tenants, not existing ones */
    pass = tp_isolation_evaluate(&f, checks);
    arr = json_array();
    for (int i = 0; arr && i < TP_ISOLATION_CHECKS; i++) {
        json_array_append_new(arr, json_pack("{s:s, s:b}", "check", checks[i].name, "passed",
                                             checks[i].passed));
        if (!checks[i].passed) {
            size_t u = strlen(failed);
            snprintf(failed + u, sizeof(failed) - u, "%s%s", u ? ", " : "", checks[i].name);
        }
    }
    if (!arr)
        return TP_ENOMEM;
    const char *p1[2] = {ctx->tenant_id, pass ? (action ? status : "active") : "quarantined"};
    /* A tenant new in this transaction: queued, nothing reads the answer (stages_int.h). */
    static const char status_sql[] = "UPDATE tenants SET status = $2, updated_at = clock_timestamp() "
                                     "WHERE id = $1";
    rc = pass && action      ? 0
         : ctx->tenant_new ? tp_db_exec_queued(ctx->db, status_sql, 2, p1, NULL, NULL)
                           : tp_db_exec(ctx->db, status_sql, 2, p1, NULL);
    if (rc != 0) {
        json_decref(arr);
        return tp_stage_db_error(ctx, rc, "tenant status");
    }
    if (!pass) {
        tp_stage_set_terminal(ctx, TP_RUN_FAILED, "ISOLATION_VIOLATION", "isolation checks failed: %s",
                              failed);
        ctx->output = json_pack("{s:o, s:s}", "checks", arr, "tenantStatus", "quarantined");
        return ctx->output ? 0 : TP_ENOMEM;
    }
    data = json_pack("{s:s, s:s, s:s, s:O}", "tenantId", ctx->tenant_id, "residency", residency,
                     "region", region, "checks", arr);
    if (!data) {
        json_decref(arr);
        return TP_ENOMEM;
    }
    rc = tp_stage_emit_receipt(ctx, "TENANT_ISOLATION_VERIFIED", data, receipt_id,
                               sizeof(receipt_id));
    json_decref(data);
    if (rc != 0) {
        json_decref(arr);
        return rc;
    }
    ctx->output = json_pack("{s:o, s:s, s:s}", "checks", arr, "tenantStatus", p1[1],
                            "receiptId", receipt_id);
    return ctx->output ? 0 : TP_ENOMEM;
}

int tp_stage_isolation_run(tp_stage_ctx *ctx) { return isolation_guard(ctx, false); }

int tp_stage_action_isolation_run(tp_stage_ctx *ctx) { return isolation_guard(ctx, true); }
