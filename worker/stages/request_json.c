/* request_json.c: a ProvisioningRequest as JSON (DESIGN §5 field names) or a TenantActionRequest
 * (its Avro field names: tenantSlug, action, plan, reason, retentionDays, ...) for the payload
 * column of provisioning_requests, and back (a replay re-submits the stored payload). */
#include "stages_int.h"
#include "tp/error.h"
#include "tp/json_text.h"

#include <string.h>

/* A TenantActionRequest's fields (absent optional ones left out). */
static json_t *action_json(const tp_request *req, json_t *roles) {
    json_t *o = json_pack("{s:s, s:s, s:s, s:{s:s, s:s, s:o}, s:s, s:I}", "requestId",
                          req->request_id, "action", tp_action_name(req->action), "source",
                          tp_source_name(req->source), "actor", "id", req->actor.id, "type",
                          req->actor.type, "roles", roles, "tenantSlug", req->tenant.slug,
                          "submittedAt", (json_int_t)req->submitted_at_ms);
    if (!o)
        return NULL;
    if (req->has_plan)
        json_object_set_new(o, "plan", json_string(tp_plan_name(req->plan)));
    if (req->reason[0])
        json_object_set_new(o, "reason", json_string(req->reason));
    if (req->has_retention_days)
        json_object_set_new(o, "retentionDays", json_integer(req->retention_days));
    return o;
}

char *tp_stages_request_json(const tp_request *req) {
    json_t *o = NULL, *roles = json_array();
    char *text = NULL;
    if (!roles)
        return NULL;
    for (int i = 0; i < req->actor.n_roles && i < TP_ROLES_MAX; i++)
        json_array_append_new(roles, json_string(req->actor.roles[i]));
    if (req->action != TP_ACTION_PROVISION) {
        if (!(o = action_json(req, roles)))
            return NULL;
        goto common;
    }
    o = json_pack("{s:s, s:s, s:{s:s, s:s, s:o}, s:{s:s, s:s, s:s}, s:s, s:s, s:I}",
                  "requestId", req->request_id, "source", tp_source_name(req->source), "actor",
                  "id", req->actor.id, "type", req->actor.type, "roles", roles, "tenant", "name",
                  req->tenant.name, "slug", req->tenant.slug, "residency",
                  tp_residency_name(req->tenant.residency), "plan", tp_plan_name(req->plan),
                  "environment", tp_environment_name(req->environment), "submittedAt",
                  (json_int_t)req->submitted_at_ms);
    if (!o)
        return NULL;
    json_t *tenant = json_object_get(o, "tenant");
    if (req->tenant.region[0])
        json_object_set_new(tenant, "region", json_string(req->tenant.region));
common:
    if (req->idempotency_key[0])
        json_object_set_new(o, "idempotencyKey", json_string(req->idempotency_key));
    if (req->has_requested_seats)
        json_object_set_new(o, "requestedSeats", json_integer(req->requested_seats));
    if (req->has_storage_estimate)
        json_object_set_new(o, "storageEstimateBytes", json_integer(req->storage_estimate_bytes));
    if (req->correlation_id[0])
        json_object_set_new(o, "correlationId", json_string(req->correlation_id));
    text = tp_json_text(o, 0, NULL);
    json_decref(o);
    return text;
}

static int copy_str(char *dst, size_t cap, json_t *v, bool required) {
    if (!v || json_is_null(v)) {
        dst[0] = '\0';
        return required ? TP_EINVAL : 0;
    }
    if (!json_is_string(v))
        return TP_EINVAL;
    return tp_copy_field(dst, cap, json_string_value(v), json_string_length(v));
}

/* The actor's id, type and roles. */
static int actor_from_json(json_t *actor, tp_request *out) {
    json_t *roles = json_object_get(actor, "roles");
    int rc;
    if ((rc = copy_str(out->actor.id, sizeof(out->actor.id), json_object_get(actor, "id"), true)) ||
        (rc = copy_str(out->actor.type, sizeof(out->actor.type), json_object_get(actor, "type"), true)))
        return rc;
    if (roles && !json_is_array(roles))
        return TP_EINVAL;
    if (json_array_size(roles) > TP_ROLES_MAX)
        return TP_EDECODE_TOO_LARGE;
    for (size_t i = 0; i < json_array_size(roles); i++) {
        if ((rc = copy_str(out->actor.roles[i], sizeof(out->actor.roles[i]),
                           json_array_get(roles, i), true)))
            return rc;
        out->actor.n_roles++;
    }
    return 0;
}

/* A stored TenantActionRequest payload (see action_json). */
static int action_from_json(json_t *o, json_t *action, json_t *actor, tp_request *out) {
    json_t *v;
    int rc;
    if (!json_is_object(actor) || tp_action_parse(json_string_value(action), &out->action) ||
        out->action == TP_ACTION_PROVISION ||
        tp_source_parse(json_string_value(json_object_get(o, "source")), &out->source))
        return TP_EINVAL;
    if ((rc = copy_str(out->request_id, sizeof(out->request_id), json_object_get(o, "requestId"), true)) ||
        (rc = copy_str(out->idempotency_key, sizeof(out->idempotency_key),
                       json_object_get(o, "idempotencyKey"), false)) ||
        (rc = copy_str(out->tenant.slug, sizeof(out->tenant.slug), json_object_get(o, "tenantSlug"), true)) ||
        (rc = copy_str(out->correlation_id, sizeof(out->correlation_id),
                       json_object_get(o, "correlationId"), false)) ||
        (rc = copy_str(out->reason, sizeof(out->reason), json_object_get(o, "reason"), false)) ||
        (rc = actor_from_json(actor, out)))
        return rc;
    if ((v = json_object_get(o, "plan")) && !json_is_null(v)) {
        if (tp_plan_parse(json_string_value(v), &out->plan))
            return TP_EINVAL;
        out->has_plan = true;
    }
    if ((v = json_object_get(o, "requestedSeats")) && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > INT32_MAX)
            return TP_EINVAL;
        out->has_requested_seats = true;
        out->requested_seats = (int32_t)json_integer_value(v);
    }
    if ((v = json_object_get(o, "storageEstimateBytes")) && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < 0)
            return TP_EINVAL;
        out->has_storage_estimate = true;
        out->storage_estimate_bytes = json_integer_value(v);
    }
    if ((v = json_object_get(o, "retentionDays")) && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > INT32_MAX)
            return TP_EINVAL;
        out->has_retention_days = true;
        out->retention_days = (int32_t)json_integer_value(v);
    }
    if ((v = json_object_get(o, "submittedAt")) && json_is_integer(v))
        out->submitted_at_ms = json_integer_value(v);
    return 0;
}

int tp_stages_request_from_json(const char *json, tp_request *out) {
    json_error_t jerr;
    json_t *o, *actor, *tenant, *roles, *v;
    int rc = TP_EINVAL;

    memset(out, 0, sizeof(*out));
    if (!json)
        return TP_EINVAL;
    o = json_loads(json, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(o))
        goto out;
    actor = json_object_get(o, "actor");
    tenant = json_object_get(o, "tenant");
    if ((v = json_object_get(o, "action"))) {
        rc = action_from_json(o, v, actor, out);
        goto out;
    }
    if (!json_is_object(actor) || !json_is_object(tenant))
        goto out;
    if ((rc = copy_str(out->request_id, sizeof(out->request_id), json_object_get(o, "requestId"), true)) ||
        (rc = copy_str(out->idempotency_key, sizeof(out->idempotency_key),
                       json_object_get(o, "idempotencyKey"), false)) ||
        (rc = copy_str(out->actor.id, sizeof(out->actor.id), json_object_get(actor, "id"), true)) ||
        (rc = copy_str(out->actor.type, sizeof(out->actor.type), json_object_get(actor, "type"), true)) ||
        (rc = copy_str(out->tenant.name, sizeof(out->tenant.name), json_object_get(tenant, "name"), true)) ||
        (rc = copy_str(out->tenant.slug, sizeof(out->tenant.slug), json_object_get(tenant, "slug"), true)) ||
        (rc = copy_str(out->tenant.region, sizeof(out->tenant.region),
                       json_object_get(tenant, "region"), false)) ||
        (rc = copy_str(out->correlation_id, sizeof(out->correlation_id),
                       json_object_get(o, "correlationId"), false)))
        goto out;
    rc = TP_EINVAL;
    if (tp_source_parse(json_string_value(json_object_get(o, "source")), &out->source) ||
        tp_plan_parse(json_string_value(json_object_get(o, "plan")), &out->plan) ||
        tp_environment_parse(json_string_value(json_object_get(o, "environment")),
                             &out->environment) ||
        tp_residency_parse(json_string_value(json_object_get(tenant, "residency")),
                           &out->tenant.residency))
        goto out;
    roles = json_object_get(actor, "roles");
    if (roles && !json_is_array(roles))
        goto out;
    if (json_array_size(roles) > TP_ROLES_MAX) {
        rc = TP_EDECODE_TOO_LARGE;
        goto out;
    }
    for (size_t i = 0; i < json_array_size(roles); i++) {
        if ((rc = copy_str(out->actor.roles[i], sizeof(out->actor.roles[i]),
                           json_array_get(roles, i), true)))
            goto out;
        out->actor.n_roles++;
    }
    rc = TP_EINVAL;
    if ((v = json_object_get(o, "requestedSeats")) && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > INT32_MAX)
            goto out;
        out->has_requested_seats = true;
        out->requested_seats = (int32_t)json_integer_value(v);
    }
    if ((v = json_object_get(o, "storageEstimateBytes")) && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < 0)
            goto out;
        out->has_storage_estimate = true;
        out->storage_estimate_bytes = json_integer_value(v);
    }
    if ((v = json_object_get(o, "submittedAt")) && json_is_integer(v))
        out->submitted_at_ms = json_integer_value(v);
    rc = 0;
out:
    json_decref(o);
    return rc;
}
