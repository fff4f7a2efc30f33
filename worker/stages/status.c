/* status.c: the JSON view of one request (its action, state, failure reason, one condition per
 * stage, the tenant and what it owns, receipt ids, the policy decision) for the status API and
 * tpctl. A tenant action shows the tenant as it is now and its action's receipts. */
#include "stages_int.h"
#include "tp/error.h"
#include "tp/json_text.h"

#include <stdlib.h>
#include <string.h>

static json_t *str_or_null(const tp_res *res, int row, int col) {
    if (tp_res_isnull(res, row, col))
        return json_null();
    return json_string(tp_res_get(res, row, col));
}

static json_t *json_or_null(const tp_res *res, int row, int col) {
    json_error_t jerr;
    json_t *v;
    if (tp_res_isnull(res, row, col))
        return json_null();
    v = json_loads(tp_res_get(res, row, col), JSON_DECODE_ANY, &jerr);
    return v ? v : json_null();
}

static char *status_json(tp_db *db, const char *request_id) {
    tp_res *res = NULL;
    json_t *o = NULL, *conds, *receipts;
    char *text = NULL, tenant_id[64] = "";
    const char *params[1] = {request_id};

    if (tp_db_query(db,
                    "SELECT request_id, state, failure_reason, failure_message, source, actor_id, "
                    "actor_type, tenant_slug, tenant_id, idempotency_key, "
                    "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), "
                    "to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), "
                    "to_char(finished_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), "
                    "action FROM provisioning_requests WHERE request_id = $1",
                    1, params, &res) != 0)
        return NULL;
    if (tp_res_nrows(res) != 1)
        goto out;
    o = json_pack("{s:s, s:s, s:o, s:o, s:s, s:{s:s, s:s}, s:s, s:o, s:o, s:o, s:o}", "requestId",
                  tp_res_get(res, 0, 0), "state", tp_res_get(res, 0, 1), "failureReason",
                  str_or_null(res, 0, 2), "failureMessage", str_or_null(res, 0, 3), "source",
                  tp_res_get(res, 0, 4), "actor", "id", tp_res_get(res, 0, 5), "type",
                  tp_res_get(res, 0, 6), "slug", tp_res_get(res, 0, 7), "idempotencyKey",
                  str_or_null(res, 0, 9), "createdAt", str_or_null(res, 0, 10), "updatedAt",
                  str_or_null(res, 0, 11), "finishedAt", str_or_null(res, 0, 12));
    if (!o)
        goto out;
    json_object_set_new(o, "action", json_string(tp_res_get(res, 0, 13)));
    if (!tp_res_isnull(res, 0, 8))
        snprintf(tenant_id, sizeof(tenant_id), "%s", tp_res_get(res, 0, 8));
    tp_res_free(res);
    res = NULL;

    if (tp_db_query(db,
                    "SELECT stage, status, attempts, reason, message, "
                    "to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), "
                    "to_char(finished_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), "
                    "to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), "
                    "output::text FROM provisioning_stages WHERE request_id = $1 ORDER BY ordinal",
                    1, params, &res) != 0)
        goto out_fail;
    conds = json_array();
    for (int r = 0; r < tp_res_nrows(res); r++) {
        int64_t attempts = 0;
        tp_res_get_int64(res, r, 2, &attempts);
        json_array_append_new(conds, json_pack("{s:s, s:s, s:I, s:o, s:o, s:o, s:o, s:o, s:o}",
                                               "stage", tp_res_get(res, r, 0), "status",
                                               tp_res_get(res, r, 1), "attempts",
                                               (json_int_t)attempts, "reason",
                                               str_or_null(res, r, 3), "message",
                                               str_or_null(res, r, 4), "startedAt",
                                               str_or_null(res, r, 5), "finishedAt",
                                               str_or_null(res, r, 6), "updatedAt",
                                               str_or_null(res, r, 7), "output",
                                               json_or_null(res, r, 8)));
    }
    json_object_set_new(o, "conditions", conds);
    tp_res_free(res);
    res = NULL;

    if (tp_db_query(db,
                    "SELECT allow, decision_id, policy_revision, reasons::text FROM policy_decisions "
                    "WHERE request_id = $1 ORDER BY id DESC LIMIT 1",
                    1, params, &res) != 0)
        goto out_fail;
    if (tp_res_nrows(res) == 1)
        json_object_set_new(o, "policy",
                            json_pack("{s:{s:b, s:s, s:s, s:o}}", "opa", "allow",
                                      strcmp(tp_res_get(res, 0, 0), "t") == 0, "decisionId",
                                      tp_res_get(res, 0, 1), "policyRevision",
                                      tp_res_get(res, 0, 2), "reasons", json_or_null(res, 0, 3)));
    else
        json_object_set_new(o, "policy", json_null());
    tp_res_free(res);
    res = NULL;

    if (tenant_id[0]) {
        json_t *view = NULL;
        if (tp_stages_tenant_view(db, tenant_id, &view) != 0)
            goto out_fail;
        json_object_update(o, view);
        json_decref(view);
    } else {
        json_object_set_new(o, "tenant", json_null());
        json_object_set_new(o, "namespace", json_null());
        json_object_set_new(o, "partitions", json_array());
        json_object_set_new(o, "quota", json_null());
    }

    if (tp_db_query(db,
                    "SELECT receipt_id, action_type, sequence, published_at IS NOT NULL FROM "
                    "receipt_outbox WHERE request_id = $1 ORDER BY sequence",
                    1, params, &res) != 0)
        goto out_fail;
    receipts = json_object();
    for (int r = 0; r < tp_res_nrows(res); r++) {
        const char *type = tp_res_get(res, r, 1);
        const char *key = strcmp(type, "TENANT_PROVISIONED") == 0      ? "provisioning"
                          : strcmp(type, "TENANT_QUOTA_ASSIGNED") == 0 ? "quotaAssignment"
                          : strcmp(type, "TENANT_ISOLATION_VERIFIED") == 0 ? "isolationVerified"
                          : strcmp(type, "TENANT_PLAN_CHANGED") == 0   ? "planChanged"
                          : strcmp(type, "TENANT_SUSPENDED") == 0      ? "suspended"
                          : strcmp(type, "TENANT_RESUMED") == 0        ? "resumed"
                          : strcmp(type, "TENANT_DEPROVISIONED") == 0  ? "deprovisioned"
                                                                       : type;
        int64_t seq = 0;
        tp_res_get_int64(res, r, 2, &seq);
        json_object_set_new(receipts, key,
                            json_pack("{s:s, s:s, s:I, s:b}", "id", tp_res_get(res, r, 0),
                                      "actionType", type, "sequence", (json_int_t)seq, "published",
                                      strcmp(tp_res_get(res, r, 3), "t") == 0));
    }
    json_object_set_new(o, "receipts", receipts);
    tp_res_free(res);
    res = NULL;
    text = tp_json_text(o, 0, NULL);
out_fail:
out:
    tp_res_free(res);
    json_decref(o);
    return text;
}

/* The view reads about nine tables: one REPEATABLE READ snapshot for all of them, or a request
 * finishing between two of the reads would show, say, a RUNNING request with published receipts.
 * Inside the caller's transaction, the caller's snapshot rules. */
char *tp_stages_status_json(tp_db *db, const char *request_id) {
    bool own_tx = !tp_db_in_tx(db);
    char *text;
    if (own_tx && (tp_db_begin(db) != 0 ||
                   tp_db_exec(db, "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY", 0,
                              NULL, NULL) != 0)) {
        tp_db_rollback(db);
        return NULL;
    }
    text = status_json(db, request_id);
    if (own_tx)
        tp_db_rollback(db); /* read only: nothing to commit */
    return text;
}
