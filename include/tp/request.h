/* request.h: the ProvisioningRequest as C sees it, shared by codec, ingress, policy and stages.
 * Fixed-size fields: a decoder or validator rejects anything longer instead of allocating. */
#ifndef TP_REQUEST_H
#define TP_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum tp_source { TP_SOURCE_ADMIN_API = 0, TP_SOURCE_SELF_SERVE_API, TP_SOURCE_BILLING } tp_source;
typedef enum tp_plan { TP_PLAN_FREE = 0, TP_PLAN_STARTER, TP_PLAN_PRO, TP_PLAN_ENTERPRISE } tp_plan;
typedef enum tp_environment { TP_ENV_PROD = 0, TP_ENV_STAGING, TP_ENV_DEV } tp_environment;
typedef enum tp_residency { TP_RESIDENCY_US = 0, TP_RESIDENCY_EU } tp_residency;
/* What a request does. PROVISION comes from a ProvisioningRequest record; the others from a
 * TenantActionRequest record (schemas/avro/TenantActionRequest.avsc) on the same topic. */
typedef enum tp_action {
    TP_ACTION_PROVISION = 0,
    TP_ACTION_CHANGE_PLAN,
    TP_ACTION_SUSPEND,
    TP_ACTION_RESUME,
    TP_ACTION_DEPROVISION
} tp_action;

#define TP_REQUEST_ID_MAX 128      /* bytes, without NUL: UUIDs or billing event ids */
#define TP_IDEMPOTENCY_KEY_MAX 255
#define TP_ACTOR_ID_MAX 255
#define TP_ACTOR_TYPE_MAX 31
#define TP_ROLE_MAX 63
#define TP_ROLES_MAX 16
#define TP_NAME_MAX 400            /* 100 characters of up to 4 UTF-8 bytes */
#define TP_SLUG_MAX 50
#define TP_REGION_MAX 63
#define TP_CORRELATION_ID_MAX 128
#define TP_TRACEPARENT_LEN 55     /* W3C trace context, version 00 */
#define TP_REASON_MAX 500          /* SUSPEND's reason (any action may carry one) */
#define TP_RETENTION_DAYS_DEFAULT 30
#define TP_RETENTION_DAYS_MAX 3650

typedef struct tp_actor {
    char id[TP_ACTOR_ID_MAX + 1];
    char type[TP_ACTOR_TYPE_MAX + 1]; /* "user", "service", "system" */
    int n_roles;
    char roles[TP_ROLES_MAX][TP_ROLE_MAX + 1];
} tp_actor;

typedef struct tp_tenant_spec {
    char name[TP_NAME_MAX + 1];
    char slug[TP_SLUG_MAX + 1];
    tp_residency residency;
    char region[TP_REGION_MAX + 1]; /* "" when absent */
} tp_tenant_spec;

/* One request as every component sees it. For an action other than PROVISION only
 * tenant.slug of the tenant spec is set (name "", residency/environment/region unused), and plan
 * is meaningful only when has_plan (CHANGE_PLAN requires it). A PROVISION request always carries
 * its plan and ignores has_plan. */
typedef struct tp_request {
    tp_action action;
    char request_id[TP_REQUEST_ID_MAX + 1];
    char idempotency_key[TP_IDEMPOTENCY_KEY_MAX + 1]; /* "" when absent */
    tp_source source;
    tp_actor actor;
    tp_tenant_spec tenant;
    bool has_plan;
    tp_plan plan;
    tp_environment environment;
    bool has_requested_seats;
    int32_t requested_seats;
    bool has_storage_estimate;
    int64_t storage_estimate_bytes;
    char correlation_id[TP_CORRELATION_ID_MAX + 1]; /* "" when absent */
    int64_t submitted_at_ms;
    char reason[TP_REASON_MAX + 1]; /* actions: "" when absent; SUSPEND requires one */
    bool has_retention_days;        /* DEPROVISION: absent means TP_RETENTION_DAYS_DEFAULT */
    int32_t retention_days;
    /* W3C traceparent; travels as the Kafka header "traceparent", not in the Avro record. "" when absent. */
    char traceparent[TP_TRACEPARENT_LEN + 1];
} tp_request;

/* Names as they appear in Avro enums, JSON and SQL ("ADMIN_API", "ENTERPRISE", "prod", "US"). */
const char *tp_source_name(tp_source s);
const char *tp_plan_name(tp_plan p);
const char *tp_environment_name(tp_environment e);
const char *tp_residency_name(tp_residency r);
/* "PROVISION", "CHANGE_PLAN", "SUSPEND", "RESUME", "DEPROVISION". */
const char *tp_action_name(tp_action a);
/* Parsers return 0 or TP_EINVAL. */
int tp_source_parse(const char *s, tp_source *out);
int tp_plan_parse(const char *s, tp_plan *out);
int tp_environment_parse(const char *s, tp_environment *out);
int tp_residency_parse(const char *s, tp_residency *out);
int tp_action_parse(const char *s, tp_action *out);

/* The region used when none is given: us-east-1 (US), eu-central-1 (EU). */
const char *tp_default_region(tp_residency r);

/* True when region is one of the comma-separated names of list_csv (spaces around names ignored);
 * an empty or NULL list holds nothing. */
bool tp_region_in_list(const char *list_csv, const char *region);

/* Checks the rules of DESIGN §4 that do not need the policy (OPA judges plan caps and actors):
 * request id and actor id present, name 2..100 characters, slug 3..50 of [a-z0-9-],
 * requestedSeats 1..10000, storageEstimateBytes >= 0, and the region (given, or the residency's
 * default) starting with us-/eu- as the residency says and in region_allowlist_csv. Returns 0, or
 * TP_EVALIDATION with the field path ("/tenant/slug") and a message written to field/msg. For
 * records that skipped tp-ingress.
 * Actions (TenantActionRequest) are checked by their own rules instead: request id, actor id,
 * slug ("/tenantSlug"), CHANGE_PLAN needs "/plan", seats and storage as above, SUSPEND needs a
 * "/reason", "/retentionDays" 0..3650, and a plan only on CHANGE_PLAN. */
int tp_request_validate(const tp_request *req, const char *region_allowlist_csv, char *field,
                        size_t field_cap, char *msg, size_t msg_cap);

/* True when s[0..len) is a version-00 W3C traceparent ("00-<32 hex>-<16 hex>-<2 hex>", lowercase,
 * trace and parent ids not all zero). Invalid values are ignored by callers, as the spec says. */
bool tp_traceparent_valid(const char *s, size_t len);

/* Copies src into a fixed field of capacity cap (including NUL); returns 0 or TP_EDECODE_TOO_LARGE. */
int tp_copy_field(char *dst, size_t cap, const char *src, size_t len);

#endif
