/* stage_tenant.c: stage 2: inserts the tenant (status provisioning, owner = actor for self-serve).
 * The same request again reuses its tenant; a slug held by another request's tenant is
 * FAILED/SLUG_TAKEN. Concurrent inserts of one slug are settled by the unique index; a self-serve
 * user's tenant count is checked again under a per-owner lock (FAILED/TENANT_LIMIT_REACHED). On
 * the one-transaction path the insert is queued with an id of ours (stages_int.h, tenant_new). */
#include "stages_int.h"
#include "tp/error.h"
#include "tp/ids.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The insert found a row already: this request's own (a re-run: link it again) or another
 * request's slug (SLUG_TAKEN). A new statement sees rows committed while the insert waited on a
 * conflicting one. */
static int find_tenant(tp_stage_ctx *ctx) {
    const tp_request *req = ctx->req;
    tp_res *res = NULL;
    const char *qp[2] = {req->request_id, req->tenant.slug};
    int rc = tp_db_query(ctx->db,
                         "SELECT id, created_by_request = $1 FROM tenants WHERE created_by_request = $1 "
                         "OR slug = $2 ORDER BY (created_by_request = $1) DESC LIMIT 1",
                         2, qp, &res);
    if (rc != 0)
        return tp_stage_db_error(ctx, rc, "read tenant");
    if (tp_res_nrows(res) == 0) {
        tp_res_free(res);
        snprintf(ctx->message, sizeof(ctx->message), "tenant insert neither created nor found a row");
        return TP_EDB; /* e.g. an id collision: try again */
    }
    if (strcmp(tp_res_get(res, 0, 1), "t") != 0) {
        tp_res_free(res);
        tp_stage_set_terminal(ctx, TP_RUN_FAILED, "SLUG_TAKEN",
                              "slug '%s' is owned by another tenant", req->tenant.slug);
        ctx->output = json_pack("{s:s}", "slug", req->tenant.slug);
        return 0;
    }
    snprintf(ctx->tenant_id, sizeof(ctx->tenant_id), "%s", tp_res_get(res, 0, 0));
    tp_res_free(res);
    const char *up[2] = {req->request_id, ctx->tenant_id};
    rc = tp_db_exec(ctx->db,
                    "UPDATE provisioning_requests SET tenant_id = $2, updated_at = clock_timestamp() "
                    "WHERE request_id = $1",
                    2, up, NULL);
    return rc != 0 ? tp_stage_db_error(ctx, rc, "link tenant") : 0;
}

int tp_stages_owned_tenants(tp_db *db, const tp_request *req, int *owned) {
    const char *params[2] = {req->actor.id, req->request_id};
    char buf[32];
    bool found = false;
    int rc = tp_db_query_text(db,
                              "SELECT count(*) FROM tenants WHERE owner_id = $1 AND "
                              "created_by_request <> $2 AND status <> 'deprovisioned'",
                              2, params, buf, sizeof(buf), &found);
    if (rc == 0)
        *owned = found ? atoi(buf) : 0;
    return rc;
}

/* The policy counted the user's tenants outside any transaction, and the user's requests for
 * different slugs run in parallel (and a retry runs on a decision taken earlier), so two of them
 * could both pass the cap. Counted again here under a per-owner transaction lock held until
 * COMMIT, with the insert: the count statement starts after the lock is granted, so it sees every
 * tenant of this user committed before. Sets a terminal FAILED/TENANT_LIMIT_REACHED past the cap. */
static int check_owner_limit(tp_stage_ctx *ctx) {
    const tp_request *req = ctx->req;
    const char *lp[1] = {req->actor.id};
    int max = ctx->env->max_tenants_per_user > 0 ? ctx->env->max_tenants_per_user
                                                 : TP_POLICY_MAX_TENANTS_PER_USER_DEFAULT;
    int owned = 0;
    int rc = tp_db_exec_queued(ctx->db, "SELECT pg_advisory_xact_lock(hashtext('tp-owner:' || $1))",
                               1, lp, NULL, NULL);
    if (rc == 0)
        rc = tp_stages_owned_tenants(ctx->db, req, &owned);
    if (rc != 0)
        return tp_stage_db_error(ctx, rc, "owned tenants");
    if (owned >= max) {
        tp_stage_set_terminal(ctx, TP_RUN_FAILED, "TENANT_LIMIT_REACHED",
                              "user %s already owns %d tenants (policy.max_tenants_per_user = %d)",
                              req->actor.id, owned, max);
        ctx->output = json_pack("{s:i, s:i}", "ownedTenants", owned, "maxTenantsPerUser", max);
    }
    return 0;
}

/* The tenant insert linked to its request, both paths: ID is the id's SQL, CONFLICT what follows
 * the VALUES (ON CONFLICT or nothing), TAIL what follows the UPDATE (RETURNING or nothing). */
#define INSERT_TENANT_SQL(ID, CONFLICT, TAIL)                                                      \
    "WITH t AS (INSERT INTO tenants (id, name, slug, residency, region, plan, environment, "      \
    "status, owner_id, created_by_request, requested_seats, storage_estimate_bytes) VALUES (" ID  \
    ", $1, $2, $3, $4, $5, $6, 'provisioning', $7, $8, $9::int, $10::bigint)" CONFLICT            \
    " RETURNING id) UPDATE provisioning_requests r SET tenant_id = t.id, updated_at = "           \
    "clock_timestamp() FROM t WHERE r.request_id = $8" TAIL

int tp_stage_tenant_run(tp_stage_ctx *ctx) {
    const tp_request *req = ctx->req;
    tp_res *res = NULL;
    char seats[16], storage[32];
    bool inserted;
    int rc;

    if (req->source == TP_SOURCE_SELF_SERVE_API &&
        ((rc = check_owner_limit(ctx)) != 0 || ctx->terminal))
        return rc;
    snprintf(seats, sizeof(seats), "%d", (int)req->requested_seats);
    snprintf(storage, sizeof(storage), "%lld", (long long)req->storage_estimate_bytes);
    const char *params[11] = {
        req->tenant.name,
        req->tenant.slug,
        tp_residency_name(req->tenant.residency),
        ctx->region,
        tp_plan_name(req->plan),
        tp_environment_name(req->environment),
        req->source == TP_SOURCE_SELF_SERVE_API ? req->actor.id : NULL,
        req->request_id,
        req->has_requested_seats ? seats : NULL,
        req->has_storage_estimate ? storage : NULL,
    };
    if (ctx->one_tx) {
        /* The one-transaction path: our id, no ON CONFLICT, nothing to wait for (stages_int.h,
         * tenant_new). A slug taken or this request's own row from an earlier run raises at the
         * next statement that waits, and the per-stage path below settles it. */
        char uuid[TP_UUID_LEN + 1];
        if ((rc = tp_uuid_v4(uuid)) != 0)
            return rc;
        snprintf(ctx->tenant_id, sizeof(ctx->tenant_id), "tenant-%s", uuid);
        params[10] = ctx->tenant_id;
        rc = tp_db_exec_queued(ctx->db, INSERT_TENANT_SQL("$11", "", ""), 11, params, NULL, NULL);
        if (rc != 0)
            return tp_stage_db_error(ctx, rc, "insert tenant");
        ctx->tenant_new = true;
        ctx->output = json_pack("{s:s, s:s, s:b}", "tenantId", ctx->tenant_id, "slug",
                                req->tenant.slug, "created", 1);
        return ctx->output ? 0 : TP_ENOMEM;
    }
    /* ON CONFLICT without a target: neither the request's own earlier row nor a slug held by
     * someone else raises (a raised error would poison the transaction). A new row is linked to
     * the request in the same statement; only a re-run or a conflict needs the read-back. */
    rc = tp_db_query(ctx->db,
                     INSERT_TENANT_SQL("'tenant-' || gen_random_uuid()", " ON CONFLICT DO NOTHING",
                                       " RETURNING t.id"),
                     10, params, &res);
    if (rc != 0)
        return tp_stage_db_error(ctx, rc, "insert tenant");
    inserted = tp_res_nrows(res) == 1;
    if (inserted) {
        snprintf(ctx->tenant_id, sizeof(ctx->tenant_id), "%s", tp_res_get(res, 0, 0));
        tp_res_free(res);
    } else {
        tp_res_free(res);
        res = NULL;
        if ((rc = find_tenant(ctx)) != 0 || ctx->terminal)
            return rc;
    }
    ctx->output = json_pack("{s:s, s:s, s:b}", "tenantId", ctx->tenant_id, "slug", req->tenant.slug,
                            "created", inserted == 1);
    return ctx->output ? 0 : TP_ENOMEM;
}
