/* stage_isolation.c: stage 7, the isolation guard: re-reads what the earlier stages persisted and
 * checks it (ownership, regions against residency, one quota row matching the plan, kill switch).
 * Pass: tenant active + TENANT_ISOLATION_VERIFIED receipt. Fail: tenant quarantined, request
 * FAILED/ISOLATION_VIOLATION; both outcomes commit with the stage marker. */
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

static bool in_csv(const char *csv, const char *item) {
    size_t n = strlen(item);
    const char *p = csv;
    if (!csv || !*csv)
        return true;
    while (*p) {
        while (*p == ' ' || *p == ',')
            p++;
        const char *e = p;
        while (*e && *e != ',')
            e++;
        const char *t = e;
        while (t > p && t[-1] == ' ')
            t--;
        if ((size_t)(t - p) == n && strncmp(p, item, n) == 0)
            return true;
        p = e;
    }
    return false;
}

static bool cell_eq_int(const tp_res *res, int row, int col, int64_t want) {
    int64_t v;
    return tp_res_get_int64(res, row, col, &v) == 0 && v == want;
}

/* Gathers the facts; strings copied into the caller's buffers. */
static int gather(tp_stage_ctx *ctx, tp_isolation_facts *f, char *residency, char *region,
                  char *plan, size_t cap) {
    tp_res *res = NULL;
    const char *tid = ctx->tenant_id;
    const char *p1[1] = {tid};
    char slug[TP_SLUG_MAX + 1], env[16], ns_id[80], part_prefix[80];
    int rc;

    rc = tp_db_query(ctx->db, "SELECT residency, region, plan, slug, environment FROM tenants "
                              "WHERE id = $1 FOR UPDATE",
                     1, p1, &res);
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
    tp_res_free(res);
    f->tenant_id = tid;
    f->residency = residency;
    f->tenant_region = region;
    f->plan = plan;
    f->region_allowed = in_csv(ctx->env->region_allowlist, region);

    snprintf(ns_id, sizeof(ns_id), "ns_%s", tid);
    rc = tp_db_query(ctx->db, "SELECT id, tenant_id, slug FROM tenant_namespaces WHERE "
                              "tenant_id = $1 OR id = 'ns_' || $1",
                     1, p1, &res);
    if (rc != 0)
        return tp_stage_db_error(ctx, rc, "read namespaces");
    f->n_namespaces = tp_res_nrows(res);
    if (f->n_namespaces == 1) {
        char want_slug[TP_SLUG_MAX + 20];
        snprintf(want_slug, sizeof(want_slug), "%s-%s", slug, env);
        f->namespace_ok = strcmp(tp_res_get(res, 0, 0), ns_id) == 0 &&
                          strcmp(tp_res_get(res, 0, 1), tid) == 0 &&
                          strcmp(tp_res_get(res, 0, 2), want_slug) == 0;
    }
    tp_res_free(res);

    snprintf(part_prefix, sizeof(part_prefix), "part_%s_", tid);
    const char *p2[2] = {tid, part_prefix};
    rc = tp_db_query(ctx->db, "SELECT id, tenant_id, name, region, isolation FROM tenant_partitions "
                              "WHERE tenant_id = $1 OR left(id, length($2)) = $2",
                     2, p2, &res);
    if (rc != 0)
        return tp_stage_db_error(ctx, rc, "read partitions");
    f->n_partitions = tp_res_nrows(res);
    f->partitions_owned = f->partitions_isolation_ok = f->partitions_region_ok = true;
    {
        const char *want_iso = strcmp(plan, "ENTERPRISE") == 0 ? "dedicated" : "shared";
        bool seen[3] = {false, false, false};
        for (int r = 0; r < f->n_partitions; r++) {
            bool named = false;
            char want_id[128];
            for (int k = 0; k < 3; k++) {
                if (strcmp(tp_res_get(res, r, 2), tp_partition_names[k]) == 0 && !seen[k]) {
                    seen[k] = named = true;
                    snprintf(want_id, sizeof(want_id), "%s%s", part_prefix, tp_partition_names[k]);
                    if (strcmp(tp_res_get(res, r, 0), want_id) != 0)
                        named = false;
                }
            }
            if (!named || strcmp(tp_res_get(res, r, 1), tid) != 0)
                f->partitions_owned = false;
            if (strcmp(tp_res_get(res, r, 3), region) != 0)
                f->partitions_region_ok = false;
            if (strcmp(tp_res_get(res, r, 4), want_iso) != 0)
                f->partitions_isolation_ok = false;
        }
    }
    tp_res_free(res);

    rc = tp_db_query(ctx->db,
                     "SELECT tier, requests_per_minute, requests_per_day, ingest_events_per_minute, "
                     "max_tokens_per_request, storage_bytes, seat_cap, burst_multiplier::float8 "
                     "FROM tenant_quotas WHERE tenant_id = $1",
                     1, p1, &res);
    if (rc != 0)
        return tp_stage_db_error(ctx, rc, "read quota");
    f->n_quotas = tp_res_nrows(res);
    if (f->n_quotas == 1) {
        tp_plan p;
        tp_quota_tier q;
        f->quota_matches_plan =
            strcmp(tp_res_get(res, 0, 0), plan) == 0 && tp_plan_parse(plan, &p) == 0 &&
            tp_quota_tiers_get(ctx->env->tiers_json, p, &q) == 0 &&
            cell_eq_int(res, 0, 1, q.requests_per_minute) &&
            cell_eq_int(res, 0, 2, q.requests_per_day) &&
            cell_eq_int(res, 0, 3, q.ingest_events_per_minute) &&
            cell_eq_int(res, 0, 4, q.max_tokens_per_request) &&
            cell_eq_int(res, 0, 5, q.storage_bytes) && cell_eq_int(res, 0, 6, q.seat_cap) &&
            fabs(strtod(tp_res_get(res, 0, 7), NULL) - q.burst_multiplier) < 0.0005;
    }
    tp_res_free(res);

    char flag[8];
    bool found = false;
    rc = tp_db_query_text(ctx->db, "SELECT enabled FROM tp_flags WHERE name = "
                                   "'provisioning.kill_switch'",
                          0, NULL, flag, sizeof(flag), &found);
    if (rc != 0)
        return tp_stage_db_error(ctx, rc, "read kill switch");
    f->kill_switch = ctx->env->kill_switch || (found && strcmp(flag, "t") == 0);
    return 0;
}

int tp_stage_isolation_run(tp_stage_ctx *ctx) {
    tp_isolation_facts f;
    tp_isolation_check checks[TP_ISOLATION_CHECKS];
    char residency[TP_REGION_MAX + 1], region[TP_REGION_MAX + 1], plan[TP_REGION_MAX + 1];
    char failed[256] = "", receipt_id[64];
    json_t *arr = NULL, *data = NULL;
    char *data_text = NULL;
    bool pass;
    int rc;

    if (!ctx->tenant_id[0]) {
        snprintf(ctx->message, sizeof(ctx->message), "no tenant recorded for the request");
        return TP_EDB_PERMANENT;
    }
    memset(&f, 0, sizeof(f));
    if ((rc = gather(ctx, &f, residency, region, plan, sizeof(region))) != 0)
        return rc;
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
    const char *p1[2] = {ctx->tenant_id, pass ? "active" : "quarantined"};
    rc = tp_db_exec(ctx->db, "UPDATE tenants SET status = $2, updated_at = clock_timestamp() "
                             "WHERE id = $1",
                    2, p1, NULL);
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
    data_text = data ? json_dumps(data, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(data);
    if (!data_text) {
        json_decref(arr);
        return TP_ENOMEM;
    }
    rc = tp_stage_emit_receipt(ctx, "TENANT_ISOLATION_VERIFIED", data_text, receipt_id,
                               sizeof(receipt_id));
    free(data_text);
    if (rc != 0) {
        json_decref(arr);
        return rc;
    }
    ctx->output = json_pack("{s:o, s:s, s:s}", "checks", arr, "tenantStatus", "active",
                            "receiptId", receipt_id);
    return ctx->output ? 0 : TP_ENOMEM;
}
