/* request.c: names and parsers of the ProvisioningRequest enums, shared by every component. */
#include "tp/request.h"
#include "tp/error.h"

#include <stdio.h>
#include <string.h>

static const char *source_names[] = {"ADMIN_API", "SELF_SERVE_API", "BILLING"};
static const char *plan_names[] = {"FREE", "STARTER", "PRO", "ENTERPRISE"};
static const char *env_names[] = {"prod", "staging", "dev"};
static const char *residency_names[] = {"US", "EU"};
static const char *action_names[] = {"PROVISION", "CHANGE_PLAN", "SUSPEND", "RESUME", "DEPROVISION"};

#define NAME_OF(table, v) (((unsigned)(v) < sizeof(table) / sizeof(table[0])) ? table[v] : "?")

const char *tp_source_name(tp_source s) { return NAME_OF(source_names, s); }
const char *tp_plan_name(tp_plan p) { return NAME_OF(plan_names, p); }
const char *tp_environment_name(tp_environment e) { return NAME_OF(env_names, e); }
const char *tp_residency_name(tp_residency r) { return NAME_OF(residency_names, r); }
const char *tp_action_name(tp_action a) { return NAME_OF(action_names, a); }

static int parse_in(const char *const *table, int n, const char *s, int *out) {
    for (int i = 0; s && i < n; i++) {
        if (strcmp(table[i], s) == 0) {
            *out = i;
            return 0;
        }
    }
    return TP_EINVAL;
}

#define DEFINE_PARSE(fn, type, table)                                                              \
    int fn(const char *s, type *out) {                                                             \
        int v, rc = parse_in(table, (int)(sizeof(table) / sizeof(table[0])), s, &v);               \
        if (rc == 0)                                                                               \
            *out = (type)v;                                                                        \
        return rc;                                                                                 \
    }
DEFINE_PARSE(tp_source_parse, tp_source, source_names)
DEFINE_PARSE(tp_plan_parse, tp_plan, plan_names)
DEFINE_PARSE(tp_environment_parse, tp_environment, env_names)
DEFINE_PARSE(tp_residency_parse, tp_residency, residency_names)
DEFINE_PARSE(tp_action_parse, tp_action, action_names)

const char *tp_default_region(tp_residency r) {
    return r == TP_RESIDENCY_EU ? "eu-central-1" : "us-east-1";
}

int tp_copy_field(char *dst, size_t cap, const char *src, size_t len) {
    if (len >= cap)
        return TP_EDECODE_TOO_LARGE;
    memcpy(dst, src, len);
    dst[len] = '\0';
    return 0;
}

/* Counts UTF-8 code points (the codec already rejected invalid UTF-8). */
static size_t utf8_chars(const char *s) {
    size_t n = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xC0) != 0x80)
            n++;
    return n;
}

static int invalid(char *field, size_t field_cap, char *msg, size_t msg_cap, const char *f, const char *m) {
    snprintf(field, field_cap, "%s", f);
    snprintf(msg, msg_cap, "%s", m);
    return TP_EVALIDATION;
}

bool tp_region_in_list(const char *list_csv, const char *region) {
    size_t rlen = strlen(region);
    const char *p = list_csv;
    while (p && *p) {
        while (*p == ' ' || *p == ',')
            p++;
        const char *end = strchr(p, ',');
        size_t m = end ? (size_t)(end - p) : strlen(p);
        while (m > 0 && p[m - 1] == ' ')
            m--;
        if (m == rlen && m > 0 && memcmp(p, region, m) == 0)
            return true;
        p = end;
    }
    return false;
}

static int check_slug(const char *slug, const char *path, char *field, size_t field_cap, char *msg,
                      size_t msg_cap) {
    size_t slug_len = strlen(slug);
    if (slug_len < 3 || slug_len > 50)
        return invalid(field, field_cap, msg, msg_cap, path, "must be 3 to 50 characters");
    for (size_t i = 0; i < slug_len; i++) {
        char c = slug[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
            return invalid(field, field_cap, msg, msg_cap, path, "must match ^[a-z0-9-]+$");
    }
    return 0;
}

/* The rules of a TenantActionRequest (see tp_request_validate). */
static int validate_action(const tp_request *req, char *field, size_t field_cap, char *msg,
                           size_t msg_cap) {
    int rc;
    if (!req->request_id[0])
        return invalid(field, field_cap, msg, msg_cap, "/requestId", "must not be empty");
    if (!req->actor.id[0])
        return invalid(field, field_cap, msg, msg_cap, "/actor/id", "must not be empty");
    if ((rc = check_slug(req->tenant.slug, "/tenantSlug", field, field_cap, msg, msg_cap)))
        return rc;
    if (req->action == TP_ACTION_CHANGE_PLAN && !req->has_plan)
        return invalid(field, field_cap, msg, msg_cap, "/plan", "is required for CHANGE_PLAN");
    if (req->action != TP_ACTION_CHANGE_PLAN &&
        (req->has_plan || req->has_requested_seats || req->has_storage_estimate))
        return invalid(field, field_cap, msg, msg_cap,
                       req->has_plan ? "/plan" : req->has_requested_seats ? "/requestedSeats"
                                                                          : "/storageEstimateBytes",
                       "is only allowed with CHANGE_PLAN");
    if (req->has_requested_seats && (req->requested_seats < 1 || req->requested_seats > 10000))
        return invalid(field, field_cap, msg, msg_cap, "/requestedSeats", "must be 1 to 10000");
    if (req->has_storage_estimate && req->storage_estimate_bytes < 0)
        return invalid(field, field_cap, msg, msg_cap, "/storageEstimateBytes", "must be >= 0");
    if (req->action == TP_ACTION_SUSPEND && !req->reason[0])
        return invalid(field, field_cap, msg, msg_cap, "/reason", "is required for SUSPEND");
    if (req->has_retention_days && req->action != TP_ACTION_DEPROVISION)
        return invalid(field, field_cap, msg, msg_cap, "/retentionDays",
                       "is only allowed with DEPROVISION");
    if (req->has_retention_days &&
        (req->retention_days < 0 || req->retention_days > TP_RETENTION_DAYS_MAX))
        return invalid(field, field_cap, msg, msg_cap, "/retentionDays", "must be 0 to 3650");
    return 0;
}

int tp_request_validate(const tp_request *req, const char *region_allowlist_csv, char *field,
                        size_t field_cap, char *msg, size_t msg_cap) {
    if (req->action != TP_ACTION_PROVISION) {
        if ((unsigned)req->action > TP_ACTION_DEPROVISION)
            return invalid(field, field_cap, msg, msg_cap, "/action", "is not a known action");
        return validate_action(req, field, field_cap, msg, msg_cap);
    }
    const char *region = req->tenant.region[0] ? req->tenant.region
                                               : tp_default_region(req->tenant.residency);
    const char *prefix = req->tenant.residency == TP_RESIDENCY_EU ? "eu-" : "us-";
    size_t name_chars = utf8_chars(req->tenant.name);
    int rc;
    if (!req->request_id[0])
        return invalid(field, field_cap, msg, msg_cap, "/requestId", "must not be empty");
    if (!req->actor.id[0])
        return invalid(field, field_cap, msg, msg_cap, "/actor/id", "must not be empty");
    if (name_chars < 2 || name_chars > 100)
        return invalid(field, field_cap, msg, msg_cap, "/tenant/name", "must be 2 to 100 characters");
    if ((rc = check_slug(req->tenant.slug, "/tenant/slug", field, field_cap, msg, msg_cap)))
        return rc;
    if (req->has_requested_seats && (req->requested_seats < 1 || req->requested_seats > 10000))
        return invalid(field, field_cap, msg, msg_cap, "/requestedSeats", "must be 1 to 10000");
    if (req->has_storage_estimate && req->storage_estimate_bytes < 0)
        return invalid(field, field_cap, msg, msg_cap, "/storageEstimateBytes", "must be >= 0");
    if (strncmp(region, prefix, 3) != 0)
        return invalid(field, field_cap, msg, msg_cap, "/tenant/region",
                       req->tenant.residency == TP_RESIDENCY_EU ? "must start with \"eu-\" for residency EU"
                                                                 : "must start with \"us-\" for residency US");
    if (!tp_region_in_list(region_allowlist_csv, region))
        return invalid(field, field_cap, msg, msg_cap, "/tenant/region",
                       "is not in the allowed list (policy.region_allowlist)");
    return 0;
}

static bool hex_run(const char *s, size_t n, bool *all_zero) {
    *all_zero = true;
    for (size_t i = 0; i < n; i++) {
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
        if (s[i] != '0')
            *all_zero = false;
    }
    return true;
}

bool tp_traceparent_valid(const char *s, size_t len) {
    bool zero_ver, zero_trace, zero_parent, zero_flags;
    if (!s || len != TP_TRACEPARENT_LEN || s[2] != '-' || s[35] != '-' || s[52] != '-')
        return false;
    return hex_run(s, 2, &zero_ver) && zero_ver && hex_run(s + 3, 32, &zero_trace) && !zero_trace &&
           hex_run(s + 36, 16, &zero_parent) && !zero_parent && hex_run(s + 53, 2, &zero_flags);
}
