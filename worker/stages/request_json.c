/* request_json.c: a ProvisioningRequest as JSON (DESIGN §5 field names) for the payload column of
 * provisioning_requests, and back (a replay re-submits the stored payload). */
#include "stages_int.h"
#include "tp/error.h"

#include <string.h>

char *tp_stages_request_json(const tp_request *req) {
    json_t *o = NULL, *roles = json_array();
    char *text = NULL;
    if (!roles)
        return NULL;
    for (int i = 0; i < req->actor.n_roles && i < TP_ROLES_MAX; i++)
        json_array_append_new(roles, json_string(req->actor.roles[i]));
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
    if (req->idempotency_key[0])
        json_object_set_new(o, "idempotencyKey", json_string(req->idempotency_key));
    if (req->has_requested_seats)
        json_object_set_new(o, "requestedSeats", json_integer(req->requested_seats));
    if (req->has_storage_estimate)
        json_object_set_new(o, "storageEstimateBytes", json_integer(req->storage_estimate_bytes));
    if (req->correlation_id[0])
        json_object_set_new(o, "correlationId", json_string(req->correlation_id));
    text = json_dumps(o, JSON_COMPACT);
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
