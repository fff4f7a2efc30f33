/* policy_input.c: builds the OPA input document of a ProvisioningRequest (DESIGN §6 stage 1)
 * with jansson: the request as the policy sees it plus its context (owned tenants, the quota tiers
 * of the plans it names, region allow-list, tenant cap, admin role); and that of a tenant action,
 * which also carries the tenant's current state. */
#include "tp/policy.h"
#include "tp/json_text.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

/* Sets key to a new string; false when the string is not UTF-8 or memory ran out. */
static bool set_str(json_t *obj, const char *key, const char *val) {
    return json_object_set_new(obj, key, json_string(val)) == 0;
}

static json_t *build_actor(const tp_actor *actor) {
    json_t *obj = json_object(), *roles = json_array();
    int n = actor->n_roles;
    if (!obj || !roles)
        goto out_fail;
    if (n < 0)
        n = 0;
    if (n > TP_ROLES_MAX)
        n = TP_ROLES_MAX;
    for (int i = 0; i < n; i++)
        if (json_array_append_new(roles, json_string(actor->roles[i])) != 0)
            goto out_fail;
    if (!set_str(obj, "id", actor->id) || !set_str(obj, "type", actor->type))
        goto out_fail;
    if (json_object_set_new(obj, "roles", roles) != 0) {
        roles = NULL; /* json_object_set_new released it */
        goto out_fail;
    }
    return obj;
out_fail:
    json_decref(roles);
    json_decref(obj);
    return NULL;
}

static json_t *build_tenant(const tp_tenant_spec *t) {
    json_t *obj = json_object();
    const char *region = t->region[0] ? t->region : tp_default_region(t->residency);
    if (!obj)
        return NULL;
    if (!set_str(obj, "name", t->name) || !set_str(obj, "slug", t->slug) ||
        !set_str(obj, "residency", tp_residency_name(t->residency)) || !set_str(obj, "region", region)) {
        json_decref(obj);
        return NULL;
    }
    return obj;
}

/* Splits "a, b,,c" into ["a","b","c"]. */
static json_t *build_allowlist(const char *csv) {
    json_t *arr = json_array();
    const char *p = csv;
    if (!arr)
        return NULL;
    while (p && *p) {
        const char *end = strchr(p, ','), *s = p, *e;
        if (!end)
            end = p + strlen(p);
        e = end;
        while (s < e && (*s == ' ' || *s == '\t'))
            s++;
        while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        if (e > s && json_array_append_new(arr, json_stringn(s, (size_t)(e - s))) != 0) {
            json_decref(arr);
            return NULL;
        }
        p = *end ? end + 1 : end;
    }
    return arr;
}

/* One tier as the tiers file writes it. */
static json_t *build_tier(const tp_quota_tier *t) {
    return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:f}", "requestsPerMinute",
                     (json_int_t)t->requests_per_minute, "requestsPerDay", (json_int_t)t->requests_per_day,
                     "ingestEventsPerMinute", (json_int_t)t->ingest_events_per_minute,
                     "maxTokensPerRequest", (json_int_t)t->max_tokens_per_request, "storageBytes",
                     (json_int_t)t->storage_bytes, "seatCap", (json_int_t)t->seat_cap,
                     "burstMultiplier", t->burst_multiplier);
}

/* {"<PLAN>": tier} for each plan named (a plan < 0 or out of range is skipped). */
static json_t *build_tiers(const tp_quota_tier *tiers, const int *plans, int n_plans) {
    json_t *obj = json_object();
    for (int i = 0; obj && i < n_plans; i++) {
        if (plans[i] < 0 || plans[i] >= TP_QUOTA_TIERS_N)
            continue;
        if (json_object_set_new(obj, tp_plan_name((tp_plan)plans[i]), build_tier(&tiers[plans[i]])) != 0) {
            json_decref(obj);
            return NULL;
        }
    }
    return obj;
}

static json_t *build_context(const tp_policy_context *ctx, const int *plans, int n_plans) {
    json_t *obj = json_object();
    int max_tenants = ctx->max_tenants_per_user > 0 ? ctx->max_tenants_per_user
                                                    : TP_POLICY_MAX_TENANTS_PER_USER_DEFAULT;
    if (!obj)
        return NULL;
    if (json_object_set_new(obj, "ownedTenants", json_integer(ctx->owned_tenants)) != 0 ||
        json_object_set_new(obj, "maxTenantsPerUser", json_integer(max_tenants)) != 0 ||
        json_object_set_new(obj, "regionAllowlist", build_allowlist(ctx->region_allowlist_csv)) != 0)
        goto out_fail;
    if (ctx->tiers && json_object_set_new(obj, "tiers", build_tiers(ctx->tiers, plans, n_plans)) != 0)
        goto out_fail;
    if (ctx->admin_role && ctx->admin_role[0] && !set_str(obj, "adminRole", ctx->admin_role))
        goto out_fail;
    return obj;
out_fail:
    json_decref(obj);
    return NULL;
}

char *tp_policy_build_input_ctx(const tp_request *req, const char *action, const tp_policy_context *ctx) {
    static const tp_policy_context no_ctx = {0};
    json_t *doc;
    char *text = NULL;
    if (!req)
        return NULL;
    if (!ctx)
        ctx = &no_ctx;
    doc = json_object();
    if (!doc)
        return NULL;
    if (!set_str(doc, "action", action ? action : "provision") ||
        !set_str(doc, "source", tp_source_name(req->source)) ||
        json_object_set_new(doc, "actor", build_actor(&req->actor)) != 0 ||
        json_object_set_new(doc, "tenant", build_tenant(&req->tenant)) != 0 ||
        !set_str(doc, "plan", tp_plan_name(req->plan)) ||
        !set_str(doc, "environment", tp_environment_name(req->environment)))
        goto out;
    if (req->has_requested_seats &&
        json_object_set_new(doc, "requestedSeats", json_integer(req->requested_seats)) != 0)
        goto out;
    if (req->has_storage_estimate &&
        json_object_set_new(doc, "storageEstimateBytes", json_integer(req->storage_estimate_bytes)) != 0)
        goto out;
    {
        int plan = (int)req->plan;
        if (json_object_set_new(doc, "context", build_context(ctx, &plan, 1)) != 0)
            goto out;
    }
    text = tp_json_text(doc, 0, NULL);
out:
    json_decref(doc);
    return text;
}

char *tp_policy_build_input(const tp_request *req, const char *action, int owned_tenants,
                            const tp_quota_tier *tiers, const char *region_allowlist_csv) {
    tp_policy_context ctx = {
        .owned_tenants = owned_tenants,
        .tiers = tiers,
        .region_allowlist_csv = region_allowlist_csv,
        .max_tenants_per_user = TP_POLICY_MAX_TENANTS_PER_USER_DEFAULT,
    };
    return tp_policy_build_input_ctx(req, action, &ctx);
}

/* A string or JSON null. */
static json_t *str_or_null(const char *s) { return s ? json_string(s) : json_null(); }

static json_t *build_tenant_state(const tp_policy_tenant *t) {
    json_t *obj = json_object();
    if (!obj)
        return NULL;
    /* json_string of a non-UTF-8 string is NULL, which json_object_set_new refuses: caught. */
    if (json_object_set_new(obj, "id", str_or_null(t->id)) != 0 ||
        json_object_set_new(obj, "slug", str_or_null(t->slug)) != 0 ||
        json_object_set_new(obj, "status", str_or_null(t->status)) != 0 ||
        json_object_set_new(obj, "plan", str_or_null(t->plan)) != 0 ||
        json_object_set_new(obj, "ownerId", str_or_null(t->owner_id)) != 0 ||
        json_object_set_new(obj, "residency", str_or_null(t->residency)) != 0 ||
        json_object_set_new(obj, "region", str_or_null(t->region)) != 0 ||
        json_object_set_new(obj, "environment", str_or_null(t->environment)) != 0 ||
        json_object_set_new(obj, "seats", t->has_seats ? json_integer(t->seats) : json_null()) != 0 ||
        json_object_set_new(obj, "storageEstimateBytes",
                            t->has_storage ? json_integer(t->storage_estimate_bytes) : json_null()) != 0) {
        json_decref(obj);
        return NULL;
    }
    return obj;
}

char *tp_policy_build_action_input(const tp_request *req, const tp_policy_tenant *tenant,
                                   const tp_policy_context *ctx) {
    static const tp_policy_context no_ctx = {0};
    static const char *const names[] = {"provision", "change_plan", "suspend", "resume",
                                        "deprovision"};
    json_t *doc;
    char *text = NULL;
    if (!req || !tenant || req->action == TP_ACTION_PROVISION || (unsigned)req->action > TP_ACTION_DEPROVISION)
        return NULL;
    if (!ctx)
        ctx = &no_ctx;
    if (!(doc = json_object()))
        return NULL;
    if (!set_str(doc, "action", names[req->action]) ||
        !set_str(doc, "source", tp_source_name(req->source)) ||
        json_object_set_new(doc, "actor", build_actor(&req->actor)) != 0 ||
        json_object_set_new(doc, "tenant", build_tenant_state(tenant)) != 0)
        goto out;
    if (req->action == TP_ACTION_CHANGE_PLAN && req->has_plan &&
        !set_str(doc, "plan", tp_plan_name(req->plan)))
        goto out;
    if (req->has_requested_seats &&
        json_object_set_new(doc, "requestedSeats", json_integer(req->requested_seats)) != 0)
        goto out;
    if (req->has_storage_estimate &&
        json_object_set_new(doc, "storageEstimateBytes", json_integer(req->storage_estimate_bytes)) != 0)
        goto out;
    if (req->reason[0] && !set_str(doc, "reason", req->reason))
        goto out;
    if (req->action == TP_ACTION_DEPROVISION &&
        json_object_set_new(doc, "retentionDays",
                            json_integer(req->has_retention_days ? req->retention_days
                                                                 : TP_RETENTION_DAYS_DEFAULT)) != 0)
        goto out;
    {
        /* The new plan (CHANGE_PLAN) and the tenant's current one. */
        tp_plan current;
        int plans[2] = {req->action == TP_ACTION_CHANGE_PLAN && req->has_plan ? (int)req->plan : -1,
                        tenant->plan && tp_plan_parse(tenant->plan, &current) == 0 ? (int)current : -1};
        if (plans[0] == plans[1])
            plans[1] = -1;
        if (json_object_set_new(doc, "context", build_context(ctx, plans, 2)) != 0)
            goto out;
    }
    text = tp_json_text(doc, 0, NULL);
out:
    json_decref(doc);
    return text;
}
