/* view.c: reads a tenant and everything it owns (namespace, partitions, quota) back from
 * PostgreSQL as JSON: used by the receipts stage (what a receipt asserts) and the status view. */
#include "stages_int.h"
#include "tp/error.h"

#include <stdlib.h>
#include <string.h>

static json_t *int_or_null(const tp_res *res, int row, int col) {
    int64_t v;
    if (tp_res_get_int64(res, row, col, &v) != 0)
        return json_null();
    return json_integer((json_int_t)v);
}

static json_t *str_or_null(const tp_res *res, int row, int col) {
    if (tp_res_isnull(res, row, col))
        return json_null();
    return json_string(tp_res_get(res, row, col));
}

int tp_stages_tenant_view(tp_db *db, const char *tenant_id, json_t **out) {
    tp_res *res = NULL;
    json_t *view = NULL, *parts;
    const char *params[1] = {tenant_id};
    int rc;

    *out = NULL;
    rc = tp_db_query(db,
                     "SELECT id, name, slug, residency, region, plan, environment, status, owner_id, "
                     "requested_seats, storage_estimate_bytes FROM tenants WHERE id = $1",
                     1, params, &res);
    if (rc != 0)
        return rc;
    if (tp_res_nrows(res) != 1) {
        tp_res_free(res);
        return TP_ENOT_FOUND;
    }
    view = json_object();
    json_object_set_new(view, "tenant",
                        json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:o, s:o, s:o}",
                                  "id", tp_res_get(res, 0, 0), "name", tp_res_get(res, 0, 1),
                                  "slug", tp_res_get(res, 0, 2), "residency", tp_res_get(res, 0, 3),
                                  "region", tp_res_get(res, 0, 4), "plan", tp_res_get(res, 0, 5),
                                  "environment", tp_res_get(res, 0, 6), "status",
                                  tp_res_get(res, 0, 7), "ownerId", str_or_null(res, 0, 8),
                                  "requestedSeats", int_or_null(res, 0, 9),
                                  "storageEstimateBytes", int_or_null(res, 0, 10)));
    tp_res_free(res);

    rc = tp_db_query(db, "SELECT id, slug, environment FROM tenant_namespaces WHERE tenant_id = $1 "
                         "ORDER BY id LIMIT 1",
                     1, params, &res);
    if (rc != 0)
        goto out_err;
    json_object_set_new(view, "namespace",
                        tp_res_nrows(res) == 1
                            ? json_pack("{s:s, s:s, s:s}", "id", tp_res_get(res, 0, 0), "slug",
                                        tp_res_get(res, 0, 1), "environment", tp_res_get(res, 0, 2))
                            : json_null());
    tp_res_free(res);

    rc = tp_db_query(db,
                     "SELECT id, name, type, region, isolation FROM tenant_partitions WHERE "
                     "tenant_id = $1 ORDER BY array_position(ARRAY['primary','analytics','audit'], "
                     "name), id",
                     1, params, &res);
    if (rc != 0)
        goto out_err;
    parts = json_array();
    for (int r = 0; r < tp_res_nrows(res); r++)
        json_array_append_new(parts, json_pack("{s:s, s:s, s:s, s:s, s:s}", "id",
                                               tp_res_get(res, r, 0), "name", tp_res_get(res, r, 1),
                                               "type", tp_res_get(res, r, 2), "region",
                                               tp_res_get(res, r, 3), "isolation",
                                               tp_res_get(res, r, 4)));
    json_object_set_new(view, "partitions", parts);
    tp_res_free(res);

    rc = tp_db_query(db,
                     "SELECT tier, requests_per_minute, requests_per_day, ingest_events_per_minute, "
                     "max_tokens_per_request, storage_bytes, seat_cap, burst_multiplier::float8 "
                     "FROM tenant_quotas WHERE tenant_id = $1",
                     1, params, &res);
    if (rc != 0)
        goto out_err;
    if (tp_res_nrows(res) == 1)
        json_object_set_new(view, "quota",
                            json_pack("{s:s, s:o, s:o, s:o, s:o, s:o, s:o, s:f}", "tier",
                                      tp_res_get(res, 0, 0), "requestsPerMinute",
                                      int_or_null(res, 0, 1), "requestsPerDay",
                                      int_or_null(res, 0, 2), "ingestEventsPerMinute",
                                      int_or_null(res, 0, 3), "maxTokensPerRequest",
                                      int_or_null(res, 0, 4), "storageBytes", int_or_null(res, 0, 5),
                                      "seatCap", int_or_null(res, 0, 6), "burstMultiplier",
                                      strtod(tp_res_get(res, 0, 7), NULL)));
    else
        json_object_set_new(view, "quota", json_null());
    tp_res_free(res);
    *out = view;
    return 0;
out_err:
    json_decref(view);
    return rc;
}
