/* stage_partitions.c: stage 4: part_<tenantId>_{primary,analytics,audit} in the tenant's region,
 * dedicated for ENTERPRISE and shared otherwise. */
#include "stages_int.h"
#include "tp/error.h"

#include <stdio.h>
#include <string.h>

const char *const tp_partition_names[3] = {"primary", "analytics", "audit"};

/* The insert both paths send; the per-stage path adds ON CONFLICT and RETURNING. */
#define INSERT_PARTITIONS_SQL                                                                      \
    "INSERT INTO tenant_partitions (id, tenant_id, name, type, region, isolation) "               \
    "SELECT 'part_' || t.id || '_' || p.name, t.id, p.name, p.name, t.region, "                   \
    "CASE WHEN t.plan = 'ENTERPRISE' THEN 'dedicated' ELSE 'shared' END "                         \
    "FROM tenants t, unnest(ARRAY['primary','analytics','audit']) AS p(name) "                    \
    "WHERE t.id = $1"

int tp_stage_partitions_run(tp_stage_ctx *ctx) {
    tp_res *res = NULL;
    int rc;

    if (!ctx->tenant_id[0]) {
        snprintf(ctx->message, sizeof(ctx->message), "no tenant recorded for the request");
        return TP_EDB_PERMANENT;
    }
    const char *params[1] = {ctx->tenant_id};
    if (ctx->tenant_new) {
        /* The tenant is new in this transaction, inserted with ctx->region and the request's
         * plan: its partitions are new too, and are these (stages_int.h). */
        const char *isolation = ctx->req->plan == TP_PLAN_ENTERPRISE ? "dedicated" : "shared";
        json_t *arr = json_array();
        rc = tp_db_exec_queued(ctx->db, INSERT_PARTITIONS_SQL, 1, params, NULL, NULL);
        if (rc != 0) {
            json_decref(arr);
            return tp_stage_db_error(ctx, rc, "insert partitions");
        }
        for (int k = 0; arr && k < 3; k++) {
            char id[128];
            snprintf(id, sizeof(id), "part_%s_%s", ctx->tenant_id, tp_partition_names[k]);
            if (json_array_append_new(arr, json_pack("{s:s, s:s, s:s, s:s, s:s}", "id", id, "name",
                                                     tp_partition_names[k], "type",
                                                     tp_partition_names[k], "region", ctx->region,
                                                     "isolation", isolation)) != 0) {
                json_decref(arr);
                arr = NULL;
            }
        }
        if (!arr)
            return TP_ENOMEM;
        ctx->output = json_pack("{s:o}", "partitions", arr);
        return ctx->output ? 0 : TP_ENOMEM;
    }
    /* RETURNING gives the new rows; only a re-run needs the read-back. */
    rc = tp_db_query(ctx->db,
                     INSERT_PARTITIONS_SQL " ON CONFLICT DO NOTHING "
                                           "RETURNING id, name, type, region, isolation",
                     1, params, &res);
    if (rc != 0)
        return tp_stage_db_error(ctx, rc, "insert partitions");
    if (tp_res_nrows(res) != 3) {
        tp_res_free(res);
        res = NULL;
        rc = tp_db_query(ctx->db,
                         "SELECT id, name, type, region, isolation FROM tenant_partitions "
                         "WHERE tenant_id = $1",
                         1, params, &res);
        if (rc != 0)
            return tp_stage_db_error(ctx, rc, "read partitions");
    }
    if (tp_res_nrows(res) != 3) {
        snprintf(ctx->message, sizeof(ctx->message), "expected 3 partitions, found %d",
                 tp_res_nrows(res));
        tp_res_free(res);
        return TP_EDB_PERMANENT;
    }
    /* In the order of tp_partition_names, whatever order the rows came in. */
    json_t *arr = json_array();
    for (int k = 0; arr && k < 3; k++)
        for (int r = 0; r < 3; r++)
            if (strcmp(tp_res_get(res, r, 1), tp_partition_names[k]) == 0)
                json_array_append_new(arr, json_pack("{s:s, s:s, s:s, s:s, s:s}", "id",
                                                     tp_res_get(res, r, 0), "name",
                                                     tp_res_get(res, r, 1), "type",
                                                     tp_res_get(res, r, 2), "region",
                                                     tp_res_get(res, r, 3), "isolation",
                                                     tp_res_get(res, r, 4)));
    tp_res_free(res);
    if (!arr)
        return TP_ENOMEM;
    ctx->output = json_pack("{s:o}", "partitions", arr);
    return ctx->output ? 0 : TP_ENOMEM;
}
