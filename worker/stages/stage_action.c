/* stage_action.c: the stages of a tenant action (CHANGE_PLAN, SUSPEND, RESUME, DEPROVISION):
 * policy (the dry run's evaluation: tenant found, state valid, the action's OPA package; the
 * decision stored like provisioning's), state (the change itself, under the tenant row lock, the
 * state checked again; records the tenant before and after it), quota (a plan change's new
 * vector), receipts (in the tenant's chain, with the before and after the state and quota stages
 * recorded, so a later action never shows up in this one's receipt). An unknown slug or a state the action is not valid in ends FAILED with
 * TENANT_NOT_FOUND / INVALID_STATE before any row of the tenant changes. */
#include "stages_int.h"
#include "tp/error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int tp_stage_action_policy_prepare(tp_stage_ctx *ctx) {
    tp_policy_context pctx = {.tiers = ctx->env->tiers, .admin_role = ctx->env->admin_role};
    int rc;
    if (!ctx->env->policy) {
        snprintf(ctx->message, sizeof(ctx->message), "no policy client configured");
        return TP_ECONFIG;
    }
    tp_action_preview_release(&ctx->action_eval);
    rc = tp_action_evaluate(ctx->db, ctx->env->policy, &pctx, ctx->req,
                            tp_stage_now_ms(), &ctx->action_eval);
    if (rc != 0) {
        snprintf(ctx->message, sizeof(ctx->message), "%s: %s",
                 rc == TP_EOPA_UNAVAILABLE || rc == TP_EOPA_BAD_RESPONSE
                     ? "policy decision unavailable"
                 : rc == TP_ECONFIG ? "quota tiers have no valid entry for the new plan"
                                    : "action evaluation failed",
                 tp_strerror(rc));
        return rc;
    }
    ctx->decision = ctx->action_eval.decision;
    ctx->owned_tenants = 0;
    return 0;
}

int tp_stage_action_policy_run(tp_stage_ctx *ctx) {
    const tp_action_preview *ev = &ctx->action_eval;
    json_t *changes;
    int rc;
    if (ev->tenant_id[0]) {
        /* The request names its tenant (the status view shows it). */
        const char *params[2] = {ctx->req->request_id, ev->tenant_id};
        rc = tp_db_exec(ctx->db, "UPDATE provisioning_requests SET tenant_id = $2, updated_at = "
                                 "clock_timestamp() WHERE request_id = $1",
                        2, params, NULL);
        if (rc != 0)
            return tp_stage_db_error(ctx, rc, "link tenant");
        snprintf(ctx->tenant_id, sizeof(ctx->tenant_id), "%s", ev->tenant_id);
    }
    if (!ev->policy_asked) {
        /* Not for this tenant or this state: OPA was not asked, nothing is recorded but why. */
        tp_stage_set_terminal(ctx, TP_RUN_FAILED, tp_preview_reason_name(ev->reason), "%s",
                              ev->message);
        ctx->output = json_pack("{s:s, s:s?, s:s?}", "verdict", tp_preview_reason_name(ev->reason),
                                "tenantId", ev->tenant_id[0] ? ev->tenant_id : NULL,
                                "tenantStatus", ev->tenant_status[0] ? ev->tenant_status : NULL);
        return ctx->output ? 0 : TP_ENOMEM;
    }
    if ((rc = tp_stage_policy_run(ctx)) != 0) /* the decision row, DENIED on a deny */
        return rc;
    if (ctx->output) {
        json_object_del(ctx->output, "ownedTenants");
        json_object_set_new(ctx->output, "verdict", json_string(tp_preview_reason_name(ev->reason)));
        json_object_set_new(ctx->output, "tenantId", json_string(ev->tenant_id));
        json_object_set_new(ctx->output, "tenantStatus", json_string(ev->tenant_status));
        changes = ev->changes_json ? json_loads(ev->changes_json, 0, NULL) : NULL;
        json_object_set_new(ctx->output, "changes", changes ? changes : json_array());
        /* What the decision rests on: the state stage checks the tenant still has it. */
        if (ev->basis[0])
            json_object_set_new(ctx->output, "basis", json_loads(ev->basis, 0, NULL));
    }
    return 0;
}

/* The state change of each action, as the changes list says (the same list the dry run shows). */
static int apply_change(tp_stage_ctx *ctx, const char *tenant_id, int64_t now_ms,
                        const tp_quota_tier *tier) {
    const tp_request *req = ctx->req;
    char seats[16], storage[32], at[32], purge[32];
    int rc = 0;
    (void)tier;
    switch (req->action) {
    case TP_ACTION_CHANGE_PLAN: {
        snprintf(seats, sizeof(seats), "%d", (int)req->requested_seats);
        snprintf(storage, sizeof(storage), "%lld", (long long)req->storage_estimate_bytes);
        const char *p[5] = {tenant_id, tp_plan_name(req->plan),
                            req->has_requested_seats ? seats : NULL,
                            req->has_storage_estimate ? storage : NULL,
                            req->plan == TP_PLAN_ENTERPRISE ? "dedicated" : "shared"};
        /* ENTERPRISE has dedicated partitions, the other plans shared ones: a plan change moves
         * the tenant's three partitions across (same ids, same region), and the guard checks it. */
        rc = tp_db_exec(ctx->db,
                        "WITH p AS (UPDATE tenant_partitions SET isolation = $5 WHERE tenant_id = $1 "
                        "AND isolation <> $5 RETURNING 1) "
                        "UPDATE tenants SET plan = $2, requested_seats = coalesce($3::int, "
                        "requested_seats), storage_estimate_bytes = coalesce($4::bigint, "
                        "storage_estimate_bytes), updated_at = clock_timestamp() WHERE id = $1",
                        5, p, NULL);
        break;
    }
    case TP_ACTION_SUSPEND: {
        const char *p[2] = {tenant_id, req->reason};
        rc = tp_db_exec(ctx->db, "UPDATE tenants SET status = 'suspended', suspended_reason = $2, "
                                 "updated_at = clock_timestamp() WHERE id = $1",
                        2, p, NULL);
        break;
    }
    case TP_ACTION_RESUME: {
        const char *p[1] = {tenant_id};
        rc = tp_db_exec(ctx->db, "UPDATE tenants SET status = 'active', suspended_reason = NULL, "
                                 "updated_at = clock_timestamp() WHERE id = $1",
                        1, p, NULL);
        break;
    }
    case TP_ACTION_DEPROVISION: {
        /* The exact instants of the changes list (milliseconds since the epoch). */
        snprintf(at, sizeof(at), "%lld", (long long)now_ms);
        snprintf(purge, sizeof(purge), "%lld",
                 (long long)(now_ms + (int64_t)tp_action_retention_days(req) * 86400000));
        const char *p[3] = {tenant_id, at, purge};
        rc = tp_db_exec(ctx->db,
                        "WITH p AS (UPDATE tenant_partitions SET purge_after = timestamptz 'epoch' + "
                        "$3::bigint * interval '1 millisecond' WHERE tenant_id = $1 RETURNING 1) "
                        "UPDATE tenants SET status = 'deprovisioned', deprovisioned_at = "
                        "timestamptz 'epoch' + $2::bigint * interval '1 millisecond', purge_after = "
                        "timestamptz 'epoch' + $3::bigint * interval '1 millisecond', updated_at = "
                        "clock_timestamp() WHERE id = $1",
                        3, p, NULL);
        break;
    }
    default:
        snprintf(ctx->message, sizeof(ctx->message), "not a tenant action");
        return TP_EINVAL;
    }
    return rc != 0 ? tp_stage_db_error(ctx, rc, "change tenant") : 0;
}

/* The basis of the request's allowed decision: from this run's evaluation, else from the policy
 * stage's committed output (an earlier run). *out NULL when there is none (a policy stage recorded
 * before decisions carried their basis): nothing to compare. */
static int decision_basis(tp_stage_ctx *ctx, json_t **out) {
    tp_res *res = NULL;
    const char *params[1] = {ctx->req->request_id};
    json_t *o;
    int rc;
    *out = NULL;
    if (ctx->action_eval.policy_asked && ctx->action_eval.basis[0]) {
        *out = json_loads(ctx->action_eval.basis, 0, NULL);
        return *out ? 0 : TP_ENOMEM;
    }
    rc = tp_db_query(ctx->db,
                     "SELECT (output -> 'basis')::text FROM provisioning_stages WHERE request_id = "
                     "$1 AND stage = 'policy' AND status = 'SUCCEEDED'",
                     1, params, &res);
    if (rc != 0)
        return tp_stage_db_error(ctx, rc, "read decision basis");
    o = tp_res_nrows(res) == 1 && !tp_res_isnull(res, 0, 0) ? json_loads(tp_res_get(res, 0, 0), 0, NULL)
                                                             : NULL;
    tp_res_free(res);
    if (json_is_object(o))
        *out = o;
    else
        json_decref(o);
    return 0;
}

/* "plan PRO -> ENTERPRISE, seats 40 -> 60": what differs between two bases. */
static void basis_diff(json_t *was, json_t *now, char *buf, size_t cap) {
    const char *key;
    json_t *v;
    size_t used = 0;
    buf[0] = '\0';
    json_object_foreach(now, key, v) {
        json_t *w = json_object_get(was, key);
        if (w && json_equal(w, v))
            continue;
        char *a = w ? json_dumps(w, JSON_ENCODE_ANY) : NULL, *b = json_dumps(v, JSON_ENCODE_ANY);
        int n = snprintf(buf + used, cap - used, "%s%s %.60s -> %.60s", used ? ", " : "", key,
                         a ? a : "null", b ? b : "null");
        free(a);
        free(b);
        if (n < 0 || (size_t)n >= cap - used)
            break;
        used += (size_t)n;
    }
}

int tp_stage_action_state_run(tp_stage_ctx *ctx) {
    const tp_request *req = ctx->req;
    json_t *before = NULL, *changes = NULL, *after = NULL;
    tp_quota_tier tier;
    const char *status, *tenant_id;
    char at[40];
    int64_t now_ms = tp_stage_now_ms();
    int rc;

    /* Under the tenant row lock: the state the change applies to is the state it was checked in
     * (a concurrent action on the same slug waits here, then finds the new state). */
    rc = tp_action_read_tenant(ctx->db, req->tenant.slug, true, &before);
    if (rc == TP_ENOT_FOUND) {
        tp_stage_set_terminal(ctx, TP_RUN_FAILED, "TENANT_NOT_FOUND", "no tenant has the slug '%s'",
                              req->tenant.slug);
        return 0;
    }
    if (rc != 0)
        return tp_stage_db_error(ctx, rc, "read tenant");
    status = json_string_value(json_object_get(before, "status"));
    tenant_id = json_string_value(json_object_get(before, "id"));
    if (!tp_action_valid_in(req->action, status)) {
        tp_stage_set_terminal(ctx, TP_RUN_FAILED, "INVALID_STATE",
                              "%s is not valid for a tenant in state %s", tp_action_name(req->action),
                              status ? status : "?");
        ctx->output = json_pack("{s:s?, s:s?}", "tenantId", tenant_id, "tenantStatus", status);
        json_decref(before);
        return ctx->output ? 0 : TP_ENOMEM;
    }
    {
        /* The decision was taken on the tenant as the policy stage read it (no lock: OPA is not
         * asked inside a transaction). Another action may have changed what the policy looked
         * at since (a plan change, seats): the decision is stale and is not applied. */
        json_t *was = NULL, *now = NULL;
        if ((rc = decision_basis(ctx, &was)) != 0) {
            json_decref(before);
            return rc;
        }
        now = was ? tp_action_basis(before) : NULL;
        if (was && !now) {
            json_decref(was);
            json_decref(before);
            return TP_ENOMEM;
        }
        if (was && !json_equal(was, now)) {
            char diff[300];
            basis_diff(was, now, diff, sizeof(diff));
            tp_stage_set_terminal(ctx, TP_RUN_FAILED, "TENANT_CHANGED",
                                  "the tenant changed after the policy decision (%s); send the "
                                  "action again to have it decided on the tenant as it is now",
                                  diff);
            ctx->output = json_pack("{s:s?, s:s?, s:O, s:O}", "tenantId", tenant_id,
                                    "tenantStatus", status, "decidedOn", was, "now", now);
        }
        json_decref(was);
        json_decref(now);
        if (ctx->terminal) {
            json_decref(before);
            return ctx->output ? 0 : TP_ENOMEM;
        }
    }
    if (req->action == TP_ACTION_CHANGE_PLAN && (rc = tp_stage_quota_tier(ctx, req->plan, &tier)) != 0) {
        json_decref(before);
        snprintf(ctx->message, sizeof(ctx->message), "quota tiers have no valid entry for %s",
                 tp_plan_name(req->plan));
        return rc;
    }
    snprintf(ctx->tenant_id, sizeof(ctx->tenant_id), "%s", tenant_id ? tenant_id : "");
    changes = tp_action_changes(req, before, req->action == TP_ACTION_CHANGE_PLAN ? &tier : NULL, now_ms);
    if (!changes) {
        json_decref(before);
        return TP_ENOMEM;
    }
    if ((rc = apply_change(ctx, ctx->tenant_id, now_ms, &tier)) != 0) {
        json_decref(before);
        json_decref(changes);
        return rc;
    }
    /* The tenant as this change left it, read under the same lock: the receipts stage describes
     * this action with it, even when it runs later and another action has committed since. */
    if ((rc = tp_action_read_tenant(ctx->db, req->tenant.slug, true, &after)) != 0) {
        json_decref(before);
        json_decref(changes);
        return tp_stage_db_error(ctx, rc == TP_ENOT_FOUND ? TP_EDB_PERMANENT : rc, "read tenant");
    }
    tp_action_iso_time(now_ms, at, sizeof(at));
    ctx->output = json_pack("{s:s, s:s, s:s, s:o, s:o, s:o}", "tenantId", ctx->tenant_id, "action",
                            tp_action_name(req->action), "effectiveAt", at, "before", before,
                            "changes", changes, "after", after);
    if (!ctx->output)
        return TP_ENOMEM;
    json_decref(ctx->action_state);
    ctx->action_state = json_incref(ctx->output);
    return 0;
}

int tp_stage_action_quota_run(tp_stage_ctx *ctx) {
    tp_quota_tier q;
    tp_plan plan;
    char v[7][32], now_plan[16], stored[1024];
    bool found = false;
    int rc;
    if (!ctx->tenant_id[0]) {
        snprintf(ctx->message, sizeof(ctx->message), "no tenant recorded for the request");
        return TP_EDB_PERMANENT;
    }
    /* The vector of the plan the tenant has now, under its lock: the request's plan, unless a
     * later plan change (another worker, after this request's state stage committed) already
     * set another one, whose vector must then stay. */
    {
        const char *tp[1] = {ctx->tenant_id};
        rc = tp_db_query_text(ctx->db, "SELECT plan FROM tenants WHERE id = $1 FOR UPDATE", 1, tp,
                              now_plan, sizeof(now_plan), &found);
        if (rc != 0)
            return tp_stage_db_error(ctx, rc, "read plan");
        if (!found || tp_plan_parse(now_plan, &plan) != 0) {
            snprintf(ctx->message, sizeof(ctx->message), "tenant %s has no known plan", ctx->tenant_id);
            return TP_EDB_PERMANENT;
        }
    }
    if ((rc = tp_stage_quota_tier(ctx, plan, &q)) != 0) {
        snprintf(ctx->message, sizeof(ctx->message), "quota tiers have no valid entry for %s",
                 tp_plan_name(plan));
        return rc;
    }
    snprintf(v[0], sizeof(v[0]), "%lld", (long long)q.requests_per_minute);
    snprintf(v[1], sizeof(v[1]), "%lld", (long long)q.requests_per_day);
    snprintf(v[2], sizeof(v[2]), "%lld", (long long)q.ingest_events_per_minute);
    snprintf(v[3], sizeof(v[3]), "%lld", (long long)q.max_tokens_per_request);
    snprintf(v[4], sizeof(v[4]), "%lld", (long long)q.storage_bytes);
    snprintf(v[5], sizeof(v[5]), "%lld", (long long)q.seat_cap);
    snprintf(v[6], sizeof(v[6]), "%.3f", q.burst_multiplier);
    const char *params[9] = {ctx->tenant_id, tp_plan_name(plan), v[0], v[1], v[2],
                             v[3], v[4], v[5], v[6]};
    /* The whole vector of the new plan replaces the old one (one row per tenant); the output is
     * the vector as stored, in the tenant view's form (the receipts stage's "after" quota). */
    rc = tp_db_query_text(ctx->db,
                    "INSERT INTO tenant_quotas (tenant_id, tier, requests_per_minute, "
                    "requests_per_day, ingest_events_per_minute, max_tokens_per_request, "
                    "storage_bytes, seat_cap, burst_multiplier) VALUES ($1, $2, $3::bigint, "
                    "$4::bigint, $5::bigint, $6::bigint, $7::bigint, $8::bigint, $9::numeric) "
                    "ON CONFLICT (tenant_id) DO UPDATE SET tier = EXCLUDED.tier, requests_per_minute "
                    "= EXCLUDED.requests_per_minute, requests_per_day = EXCLUDED.requests_per_day, "
                    "ingest_events_per_minute = EXCLUDED.ingest_events_per_minute, "
                    "max_tokens_per_request = EXCLUDED.max_tokens_per_request, storage_bytes = "
                    "EXCLUDED.storage_bytes, seat_cap = EXCLUDED.seat_cap, burst_multiplier = "
                    "EXCLUDED.burst_multiplier, updated_at = clock_timestamp() RETURNING "
                    "json_build_object('tier', tier, 'requestsPerMinute', requests_per_minute, "
                    "'requestsPerDay', requests_per_day, 'ingestEventsPerMinute', "
                    "ingest_events_per_minute, 'maxTokensPerRequest', max_tokens_per_request, "
                    "'storageBytes', storage_bytes, 'seatCap', seat_cap, 'burstMultiplier', "
                    "burst_multiplier::float8)::text",
                    9, params, stored, sizeof(stored), &found);
    if (rc != 0)
        return tp_stage_db_error(ctx, rc, "swap quota");
    ctx->output = found ? json_loads(stored, 0, NULL) : NULL;
    if (!json_is_object(ctx->output)) {
        json_decref(ctx->output);
        ctx->output = NULL;
        snprintf(ctx->message, sizeof(ctx->message), "the quota swap returned no vector");
        return TP_EDB_PERMANENT;
    }
    json_decref(ctx->action_quota);
    ctx->action_quota = json_incref(ctx->output);
    return 0;
}

/* The output of this request's stage (state, quota): from this transaction (cached), else from
 * its committed marker (a later run); *out NULL when the stage left none. */
static int load_stage_output(tp_stage_ctx *ctx, const char *stage, json_t *cached, json_t **out) {
    tp_res *res = NULL;
    const char *params[2] = {ctx->req->request_id, stage};
    int rc;
    *out = NULL;
    if (cached) {
        *out = json_incref(cached);
        return 0;
    }
    rc = tp_db_query(ctx->db,
                     "SELECT output::text FROM provisioning_stages WHERE request_id = $1 AND "
                     "stage = $2 AND status = 'SUCCEEDED'",
                     2, params, &res);
    if (rc != 0)
        return tp_stage_db_error(ctx, rc, "read stage output");
    *out = tp_res_nrows(res) == 1 && !tp_res_isnull(res, 0, 0)
               ? json_loads(tp_res_get(res, 0, 0), 0, NULL)
               : NULL;
    tp_res_free(res);
    if (!json_is_object(*out)) {
        json_decref(*out);
        *out = NULL;
    }
    return 0;
}

/* What the tenant was after this request's own change: the state stage's "after" (read under its
 * lock when it committed) with, for a plan change, the vector its quota stage stored. Another
 * action committed since (after a fault, another worker) is not shown as this one's. A state
 * marker from before "after" was recorded: the tenant now, read under its row lock. */
static int action_after(tp_stage_ctx *ctx, json_t *state, json_t **out) {
    json_t *after = json_object_get(state, "after"), *quota = NULL;
    int rc;
    *out = NULL;
    if (json_is_object(after)) {
        if (!(*out = json_deep_copy(after)))
            return TP_ENOMEM;
    } else if ((rc = tp_action_read_tenant(ctx->db, ctx->req->tenant.slug, true, out)) != 0) {
        return tp_stage_db_error(ctx, rc == TP_ENOT_FOUND ? TP_EDB_PERMANENT : rc, "read tenant");
    }
    if (ctx->req->action != TP_ACTION_CHANGE_PLAN || !json_is_object(after))
        return 0;
    if ((rc = load_stage_output(ctx, "quota", ctx->action_quota, &quota)) != 0)
        goto fail;
    if (!quota) {
        snprintf(ctx->message, sizeof(ctx->message), "the quota stage left no output");
        rc = TP_EDB_PERMANENT;
        goto fail;
    }
    if ((rc = json_object_set_new(*out, "quota", quota)) != 0) {
        rc = TP_ENOMEM;
        goto fail;
    }
    return 0;
fail:
    json_decref(*out);
    *out = NULL;
    return rc;
}

/* Seals one receipt of data into the chain (NULL data: out of memory while building it). */
static int emit(tp_stage_ctx *ctx, const char *type, json_t *data, char *id, size_t cap) {
    return data ? tp_stage_emit_receipt(ctx, type, data, id, cap) : TP_ENOMEM;
}

int tp_stage_action_receipts_run(tp_stage_ctx *ctx) {
    const tp_request *req = ctx->req;
    json_t *state = NULL, *after = NULL, *data = NULL, *quota = NULL;
    char id[64], quota_id[64];
    const char *type;
    int rc;

    if ((rc = load_stage_output(ctx, "state", ctx->action_state, &state)) != 0)
        return rc;
    if (!state) {
        snprintf(ctx->message, sizeof(ctx->message), "the state stage left no output");
        return TP_EDB_PERMANENT;
    }
    if ((rc = action_after(ctx, state, &after)) != 0) {
        json_decref(state);
        return rc;
    }
    switch (req->action) {
    case TP_ACTION_CHANGE_PLAN: type = "TENANT_PLAN_CHANGED"; break;
    case TP_ACTION_SUSPEND: type = "TENANT_SUSPENDED"; break;
    case TP_ACTION_RESUME: type = "TENANT_RESUMED"; break;
    default: type = "TENANT_DEPROVISIONED"; break;
    }
    /* What the tenant was and is, and the list of changes between (the dry run's list). */
    data = json_pack("{s:s, s:s, s:O, s:O, s:O, s:O, s:O}", "action", tp_action_name(req->action),
                     "slug", req->tenant.slug, "tenantId", json_object_get(after, "id"),
                     "effectiveAt", json_object_get(state, "effectiveAt"), "before",
                     json_object_get(state, "before"), "after", after, "changes",
                     json_object_get(state, "changes"));
    if (data && req->reason[0])
        json_object_set_new(data, "reason", json_string(req->reason));
    if (data && req->action == TP_ACTION_DEPROVISION)
        json_object_set_new(data, "retentionDays", json_integer(tp_action_retention_days(req)));
    if ((rc = emit(ctx, type, data, id, sizeof(id))) != 0)
        goto out;
    if (req->action == TP_ACTION_CHANGE_PLAN) {
        /* The new vector, as provisioning's TENANT_QUOTA_ASSIGNED has it, and the one it replaced. */
        json_t *now = json_object_get(after, "quota"), *was = json_object_get(json_object_get(state, "before"), "quota");
        quota = json_pack("{s:O, s:O, s:O}", "tier", json_object_get(now, "tier"), "quota", now,
                          "previous", was ? was : json_null());
        if ((rc = emit(ctx, "TENANT_QUOTA_ASSIGNED", quota, quota_id, sizeof(quota_id))) != 0)
            goto out;
        ctx->output = json_pack("{s:s, s:s}", "planChanged", id, "quotaAssignment", quota_id);
    } else {
        ctx->output = json_pack("{s:s}", req->action == TP_ACTION_SUSPEND ? "suspended"
                                         : req->action == TP_ACTION_RESUME ? "resumed"
                                                                           : "deprovisioned",
                                id);
    }
    rc = ctx->output ? 0 : TP_ENOMEM;
out:
    json_decref(quota);
    json_decref(data);
    json_decref(after);
    json_decref(state);
    return rc;
}
