/* tenant_view.c: the tenant view for tp-ingress (GET /api/admin/tenants[/{slug}], the owner's
 * GET /api/tenants/{slug}) and tpctl tenant get|list: one tenant, or a page of tenants in slug
 * order with keyset pagination, each built by PostgreSQL as one JSON object in one statement. */
#include "stages_int.h"
#include "tp/error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TS(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"

/* The tenant t as one JSON object (column 0), its owner (column 1) and slug (column 2). */
static const char TENANT_SELECT[] =
    "SELECT json_build_object("
    "'id', t.id, 'slug', t.slug, 'name', t.name, 'state', t.status, 'plan', t.plan, "
    "'residency', t.residency, 'region', t.region, 'environment', t.environment, "
    "'ownerId', t.owner_id, 'requestedSeats', t.requested_seats, "
    "'storageEstimateBytes', t.storage_estimate_bytes, "
    "'quota', (SELECT json_build_object('tier', q.tier, 'requestsPerMinute', q.requests_per_minute, "
    "'requestsPerDay', q.requests_per_day, 'ingestEventsPerMinute', q.ingest_events_per_minute, "
    "'maxTokensPerRequest', q.max_tokens_per_request, 'storageBytes', q.storage_bytes, "
    "'seatCap', q.seat_cap, 'burstMultiplier', q.burst_multiplier::float8) "
    "FROM tenant_quotas q WHERE q.tenant_id = t.id), "
    "'namespace', (SELECT json_build_object('id', n.id, 'slug', n.slug, 'environment', n.environment) "
    "FROM tenant_namespaces n WHERE n.tenant_id = t.id ORDER BY n.id LIMIT 1), "
    "'partitions', coalesce((SELECT json_agg(json_build_object('id', p.id, 'name', p.name, "
    "'type', p.type, 'region', p.region, 'isolation', p.isolation, 'purgeAfter', " TS("p.purge_after")
    ") ORDER BY array_position(ARRAY['primary','analytics','audit'], p.name), p.id) "
    "FROM tenant_partitions p WHERE p.tenant_id = t.id), '[]'::json), "
    "'suspendedReason', t.suspended_reason, "
    "'deprovisionedAt', " TS("t.deprovisioned_at") ", 'purgeAfter', " TS("t.purge_after") ", "
    "'lastReceipt', (SELECT json_build_object('sequence', r.sequence, 'hash', r.hash, "
    "'id', r.receipt_id, 'actionType', r.action_type) FROM receipt_outbox r "
    "WHERE r.tenant_id = t.id ORDER BY r.sequence DESC LIMIT 1), "
    "'createdAt', " TS("t.created_at") ", 'updatedAt', " TS("t.updated_at") ")::text, "
    "t.owner_id, t.slug FROM tenants t ";

static const char *const tenant_states[] = {"provisioning", "active", "suspended", "deprovisioned",
                                            "quarantined"};

bool tp_tenant_state_valid(const char *state) {
    for (size_t i = 0; state && i < sizeof(tenant_states) / sizeof(tenant_states[0]); i++)
        if (strcmp(state, tenant_states[i]) == 0)
            return true;
    return false;
}

/* The cursor is "t1." + the hex of the last slug of the page: opaque to clients, no secret. */
#define CURSOR_PREFIX "t1."

static bool slug_chars_ok(const char *s, size_t n) {
    if (n < 3 || n > TP_SLUG_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
            return false;
    return true;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Decodes a cursor into the slug it continues after (out >= TP_SLUG_MAX + 1). 0 or TP_EINVAL. */
static int cursor_decode(const char *cursor, char *out) {
    size_t plen = strlen(CURSOR_PREFIX), n = strlen(cursor);
    if (n <= plen || n > TP_TENANT_CURSOR_MAX || strncmp(cursor, CURSOR_PREFIX, plen) != 0 ||
        (n - plen) % 2 != 0 || (n - plen) / 2 > TP_SLUG_MAX)
        return TP_EINVAL;
    size_t k = 0;
    for (size_t i = plen; i < n; i += 2) {
        int hi = hexval(cursor[i]), lo = hexval(cursor[i + 1]);
        if (hi < 0 || lo < 0)
            return TP_EINVAL;
        out[k++] = (char)(hi * 16 + lo);
    }
    out[k] = '\0';
    return slug_chars_ok(out, k) ? 0 : TP_EINVAL;
}

static void cursor_encode(const char *slug, char *out, size_t cap) {
    static const char hex[] = "0123456789abcdef";
    size_t k = (size_t)snprintf(out, cap, "%s", CURSOR_PREFIX);
    for (const char *p = slug; *p && k + 2 < cap; p++) {
        out[k++] = hex[(unsigned char)*p >> 4];
        out[k++] = hex[(unsigned char)*p & 15];
    }
    out[k] = '\0';
}

int tp_tenant_query_check(const tp_tenant_query *q, char *field, size_t field_cap, char *code,
                          char *msg, size_t msg_cap) {
    char slug[TP_SLUG_MAX + 1];
    tp_plan plan;
    if (q->state && q->state[0] && !tp_tenant_state_valid(q->state)) {
        snprintf(field, field_cap, "state");
        snprintf(code, 16, "enum");
        snprintf(msg, msg_cap, "state must be one of provisioning, active, suspended, deprovisioned, "
                               "quarantined");
        return TP_EINVAL;
    }
    if (q->plan && q->plan[0] && tp_plan_parse(q->plan, &plan) != 0) {
        snprintf(field, field_cap, "plan");
        snprintf(code, 16, "enum");
        snprintf(msg, msg_cap, "plan must be one of FREE, STARTER, PRO, ENTERPRISE");
        return TP_EINVAL;
    }
    if (q->limit < 0 || q->limit > TP_TENANT_LIST_LIMIT_MAX) {
        snprintf(field, field_cap, "limit");
        snprintf(code, 16, "out_of_range");
        snprintf(msg, msg_cap, "limit must be 1..%d", TP_TENANT_LIST_LIMIT_MAX);
        return TP_EINVAL;
    }
    if (q->cursor && q->cursor[0] && cursor_decode(q->cursor, slug) != 0) {
        snprintf(field, field_cap, "cursor");
        snprintf(code, 16, "pattern");
        snprintf(msg, msg_cap, "cursor is not a nextCursor this server gave");
        return TP_EINVAL;
    }
    return 0;
}

int tp_stages_tenant_json(tp_db *db, const char *slug, const char *owner, char **json_out) {
    char sql[sizeof(TENANT_SELECT) + 64];
    const char *params[2] = {slug, owner};
    tp_res *res = NULL;
    int rc;
    *json_out = NULL;
    snprintf(sql, sizeof(sql), "%sWHERE t.slug = $1%s", TENANT_SELECT,
             owner ? " AND t.owner_id = $2" : "");
    rc = tp_db_query(db, sql, owner ? 2 : 1, params, &res);
    if (rc != 0)
        return rc;
    if (tp_res_nrows(res) != 1) {
        tp_res_free(res);
        return TP_ENOT_FOUND;
    }
    *json_out = strdup(tp_res_get(res, 0, 0));
    tp_res_free(res);
    return *json_out ? 0 : TP_ENOMEM;
}

int tp_stages_tenant_list_json(tp_db *db, const tp_tenant_query *q, char **json_out) {
    char sql[sizeof(TENANT_SELECT) + 256], field[16], code[16], msg[160];
    char after[TP_SLUG_MAX + 1], limit_text[16], next[TP_TENANT_CURSOR_MAX + 1];
    const char *params[5];
    int n = 0, limit, rc;
    size_t len;
    tp_res *res = NULL;
    json_t *items = NULL, *out = NULL;
    *json_out = NULL;
    if (tp_tenant_query_check(q, field, sizeof(field), code, msg, sizeof(msg)) != 0)
        return TP_EINVAL;
    limit = q->limit > 0 ? q->limit : TP_TENANT_LIST_LIMIT_DEFAULT;
    /* Only the filters given are in the statement, so each shape is planned (and prepared) for
     * what it filters: the (status, slug) index serves a state filter, the slug key the rest. */
    len = (size_t)snprintf(sql, sizeof(sql), "%sWHERE true", TENANT_SELECT);
    if (q->state && q->state[0]) {
        params[n++] = q->state;
        len += (size_t)snprintf(sql + len, sizeof(sql) - len, " AND t.status = $%d", n);
    }
    if (q->plan && q->plan[0]) {
        params[n++] = q->plan;
        len += (size_t)snprintf(sql + len, sizeof(sql) - len, " AND t.plan = $%d", n);
    }
    if (q->owner) {
        params[n++] = q->owner;
        len += (size_t)snprintf(sql + len, sizeof(sql) - len, " AND t.owner_id = $%d", n);
    }
    if (q->cursor && q->cursor[0]) {
        cursor_decode(q->cursor, after); /* checked above */
        params[n++] = after;
        len += (size_t)snprintf(sql + len, sizeof(sql) - len, " AND t.slug > $%d", n);
    }
    /* One row past the page tells whether there is a next one. */
    snprintf(limit_text, sizeof(limit_text), "%d", limit + 1);
    params[n++] = limit_text;
    snprintf(sql + len, sizeof(sql) - len, " ORDER BY t.slug LIMIT $%d::int", n);
    rc = tp_db_query(db, sql, n, params, &res);
    if (rc != 0)
        return rc;
    items = json_array();
    out = json_object();
    if (!items || !out) {
        rc = TP_ENOMEM;
        goto done;
    }
    int rows = tp_res_nrows(res);
    for (int r = 0; r < rows && r < limit; r++) {
        json_t *t = json_loads(tp_res_get(res, r, 0), 0, NULL);
        if (!t || json_array_append_new(items, t) != 0) {
            rc = TP_ENOMEM; /* PostgreSQL built the object: only memory can fail here */
            goto done;
        }
    }
    if (rows > limit) {
        cursor_encode(tp_res_get(res, limit - 1, 2), next, sizeof(next));
        json_object_set_new(out, "items", items);
        items = NULL;
        json_object_set_new(out, "nextCursor", json_string(next));
    } else {
        json_object_set_new(out, "items", items);
        items = NULL;
        json_object_set_new(out, "nextCursor", json_null());
    }
    *json_out = json_dumps(out, JSON_COMPACT | JSON_PRESERVE_ORDER);
    rc = *json_out ? 0 : TP_ENOMEM;
done:
    json_decref(items);
    json_decref(out);
    tp_res_free(res);
    return rc;
}
