/* stage_quota.c: stage 5: the plan's full quota vector from the tiers config, one row per tenant. */
#include "stages_int.h"
#include "tp/error.h"

#include <stdio.h>

/* The insert both paths send; the per-stage path adds ON CONFLICT and RETURNING. */
#define INSERT_QUOTA_SQL                                                                           \
    "INSERT INTO tenant_quotas (tenant_id, tier, requests_per_minute, "                           \
    "requests_per_day, ingest_events_per_minute, max_tokens_per_request, "                        \
    "storage_bytes, seat_cap, burst_multiplier) VALUES ($1, $2, $3::bigint, "                     \
    "$4::bigint, $5::bigint, $6::bigint, $7::bigint, $8::bigint, $9::numeric)"

int tp_stage_quota_run(tp_stage_ctx *ctx) {
    tp_quota_tier q; /* read by the policy component, like the OPA input */
    tp_res *res = NULL;
    char v[7][32];
    int rc;

    if (!ctx->tenant_id[0]) {
        snprintf(ctx->message, sizeof(ctx->message), "no tenant recorded for the request");
        return TP_EDB_PERMANENT;
    }
    if ((rc = tp_stage_quota_tier(ctx, ctx->req->plan, &q)) != 0) {
        snprintf(ctx->message, sizeof(ctx->message), "quota tiers have no valid entry for %s",
                 tp_plan_name(ctx->req->plan));
        return rc;
    }
    snprintf(v[0], sizeof(v[0]), "%lld", (long long)q.requests_per_minute);
    snprintf(v[1], sizeof(v[1]), "%lld", (long long)q.requests_per_day);
    snprintf(v[2], sizeof(v[2]), "%lld", (long long)q.ingest_events_per_minute);
    snprintf(v[3], sizeof(v[3]), "%lld", (long long)q.max_tokens_per_request);
    snprintf(v[4], sizeof(v[4]), "%lld", (long long)q.storage_bytes);
    snprintf(v[5], sizeof(v[5]), "%lld", (long long)q.seat_cap);
    snprintf(v[6], sizeof(v[6]), "%.3f", q.burst_multiplier);
    const char *params[9] = {ctx->tenant_id, tp_plan_name(ctx->req->plan), v[0], v[1], v[2],
                             v[3], v[4], v[5], v[6]};
    if (ctx->tenant_new) /* a new tenant's quota row is new too, and its tier is the plan's */
        rc = tp_db_exec_queued(ctx->db, INSERT_QUOTA_SQL, 9, params, NULL, NULL);
    else
        rc = tp_db_query(ctx->db,
                         INSERT_QUOTA_SQL " ON CONFLICT (tenant_id) DO NOTHING RETURNING tier", 9,
                         params, &res);
    if (rc != 0)
        return tp_stage_db_error(ctx, rc, "insert quota");
    if (!ctx->tenant_new && tp_res_nrows(res) != 1) { /* a re-run: the row is already there */
        tp_res_free(res);
        res = NULL;
        rc = tp_db_query(ctx->db, "SELECT tier FROM tenant_quotas WHERE tenant_id = $1", 1, params,
                         &res);
        if (rc != 0)
            return tp_stage_db_error(ctx, rc, "read quota");
    }
    ctx->output = json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:f}", "tier",
                            ctx->tenant_new            ? params[1]
                            : tp_res_nrows(res) == 1 ? tp_res_get(res, 0, 0) : "",
                            "requestsPerMinute", (json_int_t)q.requests_per_minute,
                            "requestsPerDay", (json_int_t)q.requests_per_day,
                            "ingestEventsPerMinute", (json_int_t)q.ingest_events_per_minute,
                            "maxTokensPerRequest", (json_int_t)q.max_tokens_per_request,
                            "storageBytes", (json_int_t)q.storage_bytes,
                            "seatCap", (json_int_t)q.seat_cap,
                            "burstMultiplier", q.burst_multiplier);
    tp_res_free(res);
    return ctx->output ? 0 : TP_ENOMEM;
}
