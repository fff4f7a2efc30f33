/* stage_namespace.c: stage 3: the tenant's namespace ns_<tenantId> with slug <slug>-<environment>. */
#include "stages_int.h"
#include "tp/error.h"

#include <stdio.h>
#include <string.h>

/* The insert both paths send; the per-stage path adds ON CONFLICT and RETURNING. */
#define INSERT_NAMESPACE_SQL                                                                       \
    "INSERT INTO tenant_namespaces (id, tenant_id, slug, environment) "                           \
    "VALUES ('ns_' || $1, $1, $2 || '-' || $3, $3)"

int tp_stage_namespace_run(tp_stage_ctx *ctx) {
    const tp_request *req = ctx->req;
    tp_res *res = NULL;
    int rc;

    if (!ctx->tenant_id[0]) {
        snprintf(ctx->message, sizeof(ctx->message), "no tenant recorded for the request");
        return TP_EDB_PERMANENT;
    }
    const char *params[3] = {ctx->tenant_id, req->tenant.slug, tp_environment_name(req->environment)};
    if (ctx->tenant_new) {
        /* The tenant is new in this transaction: so is its namespace (stages_int.h). */
        char id[96], slug[TP_SLUG_MAX + 32];
        rc = tp_db_exec_queued(ctx->db, INSERT_NAMESPACE_SQL, 3, params, NULL, NULL);
        if (rc != 0)
            return tp_stage_db_error(ctx, rc, "insert namespace");
        snprintf(id, sizeof(id), "ns_%s", ctx->tenant_id);
        snprintf(slug, sizeof(slug), "%s-%s", params[1], params[2]);
        ctx->output = json_pack("{s:s, s:s, s:s}", "id", id, "slug", slug, "environment", params[2]);
        return ctx->output ? 0 : TP_ENOMEM;
    }
    /* RETURNING gives the new row; only a re-run or a conflict needs the read-back. */
    rc = tp_db_query(ctx->db,
                     INSERT_NAMESPACE_SQL " ON CONFLICT DO NOTHING RETURNING id, slug, environment",
                     3, params, &res);
    if (rc != 0)
        return tp_stage_db_error(ctx, rc, "insert namespace");
    if (tp_res_nrows(res) != 1) {
        tp_res_free(res);
        res = NULL;
        rc = tp_db_query(ctx->db,
                         "SELECT id, slug, environment FROM tenant_namespaces WHERE id = 'ns_' || $1 "
                         "AND tenant_id = $1",
                         1, params, &res);
        if (rc != 0)
            return tp_stage_db_error(ctx, rc, "read namespace");
    }
    if (tp_res_nrows(res) != 1) {
        tp_res_free(res);
        tp_stage_set_terminal(ctx, TP_RUN_FAILED, "SLUG_TAKEN",
                              "namespace slug '%s-%s' is owned by another tenant", req->tenant.slug,
                              tp_environment_name(req->environment));
        return 0;
    }
    ctx->output = json_pack("{s:s, s:s, s:s}", "id", tp_res_get(res, 0, 0), "slug",
                            tp_res_get(res, 0, 1), "environment", tp_res_get(res, 0, 2));
    tp_res_free(res);
    return ctx->output ? 0 : TP_ENOMEM;
}
