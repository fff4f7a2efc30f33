/* actions.c: the rules of a tenant action shared by the dry run (tp_stages_action_preview, for
 * tp-ingress) and the worker's stages: which action is valid from which state, the tenant as it is
 * now (one JSON snapshot read by slug), the list of changes an action makes, and the evaluation
 * (tenant found, state valid, OPA's decision) that the action policy stage records. */
#include "stages_int.h"
#include "tp/error.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

bool tp_action_valid_in(tp_action action, const char *status) {
    if (!status)
        return false;
    switch (action) {
    case TP_ACTION_CHANGE_PLAN:
        return strcmp(status, "active") == 0 || strcmp(status, "suspended") == 0;
    case TP_ACTION_SUSPEND:
        return strcmp(status, "active") == 0;
    case TP_ACTION_RESUME:
        return strcmp(status, "suspended") == 0;
    case TP_ACTION_DEPROVISION:
        return strcmp(status, "active") == 0 || strcmp(status, "suspended") == 0 ||
               strcmp(status, "quarantined") == 0;
    default:
        return false;
    }
}

const char *tp_preview_reason_name(tp_preview_reason r) {
    switch (r) {
    case TP_PREVIEW_ALLOWED: return "ALLOWED";
    case TP_PREVIEW_TENANT_NOT_FOUND: return "TENANT_NOT_FOUND";
    case TP_PREVIEW_INVALID_STATE: return "INVALID_STATE";
    case TP_PREVIEW_POLICY_DENIED: return "POLICY_DENIED";
    case TP_PREVIEW_NOT_AN_ACTION: return "NOT_AN_ACTION";
    }
    return "?";
}

void tp_action_preview_release(tp_action_preview *out) {
    if (!out)
        return;
    free(out->changes_json);
    out->changes_json = NULL;
}

#define ISO_MS "'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'"

int tp_action_read_tenant(tp_db *db, const char *slug, bool lock, json_t **out) {
    tp_res *res = NULL;
    json_error_t jerr;
    const char *params[1] = {slug};
    int rc;
    *out = NULL;
    /* One row, built by PostgreSQL: the tenant, its quota vector and its partitions in their
     * fixed order. FOR UPDATE OF t locks the tenant row only (the state stage's lock). */
    rc = tp_db_query(db,
                     lock ? TP_ACTION_TENANT_SQL " FOR UPDATE OF t" : TP_ACTION_TENANT_SQL, 1,
                     params, &res);
    if (rc != 0)
        return rc;
    if (tp_res_nrows(res) != 1) {
        tp_res_free(res);
        return TP_ENOT_FOUND;
    }
    *out = json_loads(tp_res_get(res, 0, 0), 0, &jerr);
    tp_res_free(res);
    return json_is_object(*out) ? 0 : TP_ENOMEM; /* PostgreSQL built it: only memory can fail */
}

void tp_action_iso_time(int64_t ms, char *buf, size_t cap) {
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    snprintf(buf, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
}

int32_t tp_action_retention_days(const tp_request *req) {
    return req->has_retention_days ? req->retention_days : TP_RETENTION_DAYS_DEFAULT;
}

static const char *str_of(json_t *o, const char *key) {
    return json_string_value(json_object_get(o, key));
}

static const char *or_empty(const char *s) { return s ? s : ""; }

static const char *name_of(json_t *partition) {
    const char *n = json_string_value(json_object_get(partition, "name"));
    return n ? n : "?";
}

/* Appends {"field","from","to"} when from and to differ; takes to's reference. */
static void add_change(json_t *arr, const char *field, json_t *from, json_t *to) {
    json_t *f = from ? from : json_null();
    if (!to)
        to = json_null();
    if (!json_equal(f, to))
        json_array_append_new(arr, json_pack("{s:s, s:O, s:O}", "field", field, "from", f, "to", to));
    json_decref(to);
    if (!from)
        json_decref(f);
}

/* Numbers compare as numbers (an integer stored as 1.0 and a real 1.0 are the same value). */
static void add_number_change(json_t *arr, const char *field, json_t *from, double to_value,
                              bool integer) {
    if (json_is_number(from) && fabs(json_number_value(from) - to_value) < 0.0005)
        return;
    add_change(arr, field, from, integer ? json_integer((json_int_t)to_value) : json_real(to_value));
}

json_t *tp_action_changes(const tp_request *req, json_t *before, const tp_quota_tier *new_tier,
                          int64_t now_ms) {
    json_t *arr = json_array(), *parts = json_object_get(before, "partitions"), *p;
    size_t i;
    if (!arr)
        return NULL;
    switch (req->action) {
    case TP_ACTION_CHANGE_PLAN: {
        json_t *quota = json_object_get(before, "quota");
        const char *want_iso = req->plan == TP_PLAN_ENTERPRISE ? "dedicated" : "shared";
        add_change(arr, "plan", json_object_get(before, "plan"), json_string(tp_plan_name(req->plan)));
        if (req->has_requested_seats)
            add_number_change(arr, "requestedSeats", json_object_get(before, "seats"),
                              (double)req->requested_seats, true);
        if (req->has_storage_estimate)
            add_number_change(arr, "storageEstimateBytes",
                              json_object_get(before, "storageEstimateBytes"),
                              (double)req->storage_estimate_bytes, true);
        if (new_tier) {
            const struct {
                const char *field, *key;
                double value;
                bool integer;
            } q[] = {
                {"quota.requestsPerMinute", "requestsPerMinute", (double)new_tier->requests_per_minute, true},
                {"quota.requestsPerDay", "requestsPerDay", (double)new_tier->requests_per_day, true},
                {"quota.ingestEventsPerMinute", "ingestEventsPerMinute", (double)new_tier->ingest_events_per_minute, true},
                {"quota.maxTokensPerRequest", "maxTokensPerRequest", (double)new_tier->max_tokens_per_request, true},
                {"quota.storageBytes", "storageBytes", (double)new_tier->storage_bytes, true},
                {"quota.seatCap", "seatCap", (double)new_tier->seat_cap, true},
                {"quota.burstMultiplier", "burstMultiplier", new_tier->burst_multiplier, false},
            };
            add_change(arr, "quota.tier", json_object_get(quota, "tier"),
                       json_string(tp_plan_name(req->plan)));
            for (size_t k = 0; k < sizeof(q) / sizeof(q[0]); k++)
                add_number_change(arr, q[k].field, json_object_get(quota, q[k].key), q[k].value,
                                  q[k].integer);
        }
        json_array_foreach(parts, i, p) {
            char field[64];
            snprintf(field, sizeof(field), "partitions.%s.isolation",
                     name_of(p));
            add_change(arr, field, json_object_get(p, "isolation"), json_string(want_iso));
        }
        break;
    }
    case TP_ACTION_SUSPEND:
        add_change(arr, "status", json_object_get(before, "status"), json_string("suspended"));
        add_change(arr, "suspendedReason", json_object_get(before, "suspendedReason"),
                   json_string(req->reason));
        break;
    case TP_ACTION_RESUME:
        add_change(arr, "status", json_object_get(before, "status"), json_string("active"));
        add_change(arr, "suspendedReason", json_object_get(before, "suspendedReason"), NULL);
        break;
    case TP_ACTION_DEPROVISION: {
        char at[40], purge[40];
        tp_action_iso_time(now_ms, at, sizeof(at));
        tp_action_iso_time(now_ms + (int64_t)tp_action_retention_days(req) * 86400000, purge,
                           sizeof(purge));
        add_change(arr, "status", json_object_get(before, "status"), json_string("deprovisioned"));
        add_change(arr, "deprovisionedAt", json_object_get(before, "deprovisionedAt"), json_string(at));
        add_change(arr, "purgeAfter", json_object_get(before, "purgeAfter"), json_string(purge));
        json_array_foreach(parts, i, p) {
            char field[64];
            snprintf(field, sizeof(field), "partitions.%s.purgeAfter",
                     name_of(p));
            add_change(arr, field, json_object_get(p, "purgeAfter"), json_string(purge));
        }
        break;
    }
    default:
        break;
    }
    return arr;
}

/* The tier of plan from the parsed table. */
static int tier_of(const tp_quota_tier *tiers, tp_plan plan, tp_quota_tier *out) {
    if (!tiers || (unsigned)plan >= TP_QUOTA_TIERS_N)
        return TP_ECONFIG;
    *out = tiers[plan];
    return 0;
}

/* Joins the decision's reasons with "; " into buf. */
static void join_reasons(const tp_policy_decision *d, char *buf, size_t cap) {
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < d->n_reasons && i < TP_POLICY_REASONS_MAX; i++) {
        int w = snprintf(buf + used, cap - used, "%s%s", i ? "; " : "", d->reasons[i]);
        if (w < 0 || (size_t)w >= cap - used)
            break;
        used += (size_t)w;
    }
}

json_t *tp_action_basis(json_t *tenant) {
    json_t *o = json_object();
    static const char *const keys[] = {"plan", "ownerId", "seats", "storageEstimateBytes"};
    for (size_t i = 0; o && i < sizeof(keys) / sizeof(keys[0]); i++) {
        json_t *v = json_object_get(tenant, keys[i]);
        if (json_object_set_new(o, keys[i], v ? json_incref(v) : json_null()) != 0) {
            json_decref(o);
            return NULL;
        }
    }
    return o;
}

int tp_action_evaluate(tp_db *db, tp_policy_client *pc, const tp_policy_context *pctx,
                       const tp_request *req, int64_t now_ms, tp_action_preview *out) {
    static const tp_policy_context no_ctx = {0};
    json_t *before = NULL, *changes = NULL;
    tp_quota_tier tier;
    char *input = NULL;
    int rc;

    if (!out)
        return TP_EINVAL;
    memset(out, 0, sizeof(*out));
    if (!db || !pc || !req)
        return TP_EINVAL;
    if (!pctx)
        pctx = &no_ctx;
    if (req->action == TP_ACTION_PROVISION || (unsigned)req->action > TP_ACTION_DEPROVISION) {
        out->reason = TP_PREVIEW_NOT_AN_ACTION;
        snprintf(out->message, sizeof(out->message), "%s is not a tenant action",
                 tp_action_name(req->action));
        goto out_changes;
    }
    rc = tp_action_read_tenant(db, req->tenant.slug, false, &before);
    if (rc == TP_ENOT_FOUND) {
        out->reason = TP_PREVIEW_TENANT_NOT_FOUND;
        snprintf(out->message, sizeof(out->message), "no tenant has the slug '%s'", req->tenant.slug);
        goto out_changes;
    }
    if (rc != 0)
        return rc;
    snprintf(out->tenant_id, sizeof(out->tenant_id), "%s", or_empty(str_of(before, "id")));
    snprintf(out->tenant_status, sizeof(out->tenant_status), "%s", or_empty(str_of(before, "status")));
    if (!tp_action_valid_in(req->action, out->tenant_status)) {
        out->reason = TP_PREVIEW_INVALID_STATE;
        snprintf(out->message, sizeof(out->message), "%s is not valid for a tenant in state %s",
                 tp_action_name(req->action), out->tenant_status);
        goto out_changes;
    }
    if (req->action == TP_ACTION_CHANGE_PLAN &&
        (rc = tier_of(pctx->tiers, req->plan, &tier)) != 0) {
        json_decref(before);
        return TP_ECONFIG;
    }
    changes = tp_action_changes(req, before, req->action == TP_ACTION_CHANGE_PLAN ? &tier : NULL,
                                now_ms);
    {
        json_t *seats = json_object_get(before, "seats"), *storage = json_object_get(before, "storageEstimateBytes");
        tp_policy_tenant t = {
            .id = str_of(before, "id"),
            .slug = str_of(before, "slug"),
            .status = str_of(before, "status"),
            .plan = str_of(before, "plan"),
            .owner_id = str_of(before, "ownerId"),
            .residency = str_of(before, "residency"),
            .region = str_of(before, "region"),
            .environment = str_of(before, "environment"),
            .has_seats = json_is_integer(seats),
            .seats = json_integer_value(seats),
            .has_storage = json_is_integer(storage),
            .storage_estimate_bytes = json_integer_value(storage),
        };
        input = tp_policy_build_action_input(req, &t, pctx);
    }
    {
        json_t *basis = tp_action_basis(before);
        char *text = basis ? json_dumps(basis, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
        json_decref(basis);
        if (!text || strlen(text) >= sizeof(out->basis)) {
            free(text);
            free(input);
            json_decref(changes);
            json_decref(before);
            memset(out, 0, sizeof(*out));
            return TP_ENOMEM;
        }
        memcpy(out->basis, text, strlen(text) + 1);
        free(text);
    }
    json_decref(before);
    before = NULL;
    if (!input || !changes) {
        free(input);
        json_decref(changes);
        return TP_ENOMEM;
    }
    rc = tp_policy_decide_action(pc, req->action, input, &out->decision);
    free(input);
    if (rc != 0) {
        json_decref(changes);
        memset(out, 0, sizeof(*out));
        return rc;
    }
    out->policy_asked = true;
    if (out->decision.allow) {
        out->allowed = true;
        out->reason = TP_PREVIEW_ALLOWED;
    } else {
        char joined[400];
        join_reasons(&out->decision, joined, sizeof(joined));
        out->reason = TP_PREVIEW_POLICY_DENIED;
        snprintf(out->message, sizeof(out->message), "%s", joined[0] ? joined : "denied by policy");
    }
    out->changes_json = json_dumps(changes, JSON_COMPACT);
    json_decref(changes);
    return out->changes_json ? 0 : TP_ENOMEM;

out_changes:
    json_decref(before);
    out->changes_json = strdup("[]");
    return out->changes_json ? 0 : TP_ENOMEM;
}

int tp_stages_action_preview(tp_db *db, tp_policy_client *pc, const tp_policy_context *ctx,
                             const tp_request *req, tp_action_preview *out) {
    return tp_action_evaluate(db, pc, ctx, req, tp_stage_now_ms(), out);
}
