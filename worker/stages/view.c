/* view.c: reads a tenant and everything it owns (namespace, partitions, quota) back from
 * PostgreSQL as JSON: used by the receipts stage (what a receipt asserts) and the status view.
 * The lifecycle's fields (suspendedReason, deprovisionedAt, purgeAfter) appear only once set, so a
 * provisioning receipt asserts what it always did. */
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

/* One round trip: the tenant, its first namespace and its quota joined, its partitions as a JSON
 * array of [id, name, type, region, isolation, purgeAfter] in their fixed order. */
int tp_stages_tenant_view(tp_db *db, const char *tenant_id, json_t **out) {
    tp_res *res = NULL;
    json_t *view = NULL, *parts, *rows;
    const char *params[1] = {tenant_id};
    int rc;

    *out = NULL;
    rc = tp_db_query(db,
                     "SELECT t.id, t.name, t.slug, t.residency, t.region, t.plan, t.environment, "
                     "t.status, t.owner_id, t.requested_seats, t.storage_estimate_bytes, "
                     "n.id, n.slug, n.environment, q.tier, q.requests_per_minute, q.requests_per_day, "
                     "q.ingest_events_per_minute, q.max_tokens_per_request, q.storage_bytes, "
                     "q.seat_cap, q.burst_multiplier::float8, "
                     "coalesce((SELECT json_agg(json_build_array(p.id, p.name, p.type, p.region, "
                     "p.isolation, to_char(p.purge_after AT TIME ZONE 'UTC', "
                     "'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')) ORDER BY array_position("
                     "ARRAY['primary','analytics','audit'], p.name), p.id) FROM tenant_partitions p "
                     "WHERE p.tenant_id = t.id), '[]')::text, t.suspended_reason, "
                     "to_char(t.deprovisioned_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), "
                     "to_char(t.purge_after AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') "
                     "FROM tenants t "
                     "LEFT JOIN LATERAL (SELECT id, slug, environment FROM tenant_namespaces "
                     "WHERE tenant_id = t.id ORDER BY id LIMIT 1) n ON true "
                     "LEFT JOIN tenant_quotas q ON q.tenant_id = t.id WHERE t.id = $1",
                     1, params, &res);
    if (rc != 0)
        return rc;
    if (tp_res_nrows(res) != 1) {
        tp_res_free(res);
        return TP_ENOT_FOUND;
    }
    view = json_object();
    rows = json_loads(tp_res_get(res, 0, 22), 0, NULL);
    if (!view || !json_is_array(rows)) {
        json_decref(rows);
        json_decref(view);
        tp_res_free(res);
        return TP_ENOMEM; /* PostgreSQL built the array: only memory can fail here */
    }
    json_object_set_new(view, "tenant",
                        json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:o, s:o, s:o}",
                                  "id", tp_res_get(res, 0, 0), "name", tp_res_get(res, 0, 1),
                                  "slug", tp_res_get(res, 0, 2), "residency", tp_res_get(res, 0, 3),
                                  "region", tp_res_get(res, 0, 4), "plan", tp_res_get(res, 0, 5),
                                  "environment", tp_res_get(res, 0, 6), "status",
                                  tp_res_get(res, 0, 7), "ownerId", str_or_null(res, 0, 8),
                                  "requestedSeats", int_or_null(res, 0, 9),
                                  "storageEstimateBytes", int_or_null(res, 0, 10)));
    {
        /* Set by the lifecycle (suspension, offboarding); absent until then. */
        static const struct { int col; const char *key; } life[] = {
            {23, "suspendedReason"}, {24, "deprovisionedAt"}, {25, "purgeAfter"}};
        json_t *tenant = json_object_get(view, "tenant");
        for (size_t k = 0; tenant && k < sizeof(life) / sizeof(life[0]); k++)
            if (!tp_res_isnull(res, 0, life[k].col))
                json_object_set_new(tenant, life[k].key, json_string(tp_res_get(res, 0, life[k].col)));
    }
    json_object_set_new(view, "namespace",
                        !tp_res_isnull(res, 0, 11)
                            ? json_pack("{s:s, s:s, s:s}", "id", tp_res_get(res, 0, 11), "slug",
                                        tp_res_get(res, 0, 12), "environment", tp_res_get(res, 0, 13))
                            : json_null());
    parts = json_array();
    for (size_t r = 0; parts && r < json_array_size(rows); r++) {
        json_t *row = json_array_get(rows, r), *part;
        part = json_pack("{s:O, s:O, s:O, s:O, s:O}", "id", json_array_get(row, 0), "name",
                         json_array_get(row, 1), "type", json_array_get(row, 2), "region",
                         json_array_get(row, 3), "isolation", json_array_get(row, 4));
        if (part && json_is_string(json_array_get(row, 5))) /* an offboarded tenant's partition */
            json_object_set(part, "purgeAfter", json_array_get(row, 5));
        json_array_append_new(parts, part);
    }
    json_decref(rows);
    json_object_set_new(view, "partitions", parts);
    if (!tp_res_isnull(res, 0, 14))
        json_object_set_new(view, "quota",
                            json_pack("{s:s, s:o, s:o, s:o, s:o, s:o, s:o, s:f}", "tier",
                                      tp_res_get(res, 0, 14), "requestsPerMinute",
                                      int_or_null(res, 0, 15), "requestsPerDay",
                                      int_or_null(res, 0, 16), "ingestEventsPerMinute",
                                      int_or_null(res, 0, 17), "maxTokensPerRequest",
                                      int_or_null(res, 0, 18), "storageBytes", int_or_null(res, 0, 19),
                                      "seatCap", int_or_null(res, 0, 20), "burstMultiplier",
                                      strtod(tp_res_get(res, 0, 21), NULL)));
    else
        json_object_set_new(view, "quota", json_null());
    tp_res_free(res);
    *out = view;
    return 0;
}
