/* policy.h: the OPA client (libcurl) and the pure mapping from OPA's JSON answer to a decision.
 * Contract between worker/policy (implements) and worker/stages, worker/ingress (call). */
#ifndef TP_POLICY_H
#define TP_POLICY_H

#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>
#include "tp/request.h"

#define TP_POLICY_REASONS_MAX 16
#define TP_POLICY_REASON_LEN 255

typedef struct tp_policy_decision {
    bool allow;
    int n_reasons;
    char reasons[TP_POLICY_REASONS_MAX][TP_POLICY_REASON_LEN + 1];
    char decision_id[128];     /* OPA's decision_id, "" when the server has none */
    char policy_revision[128]; /* bundle revision or the policy file's sha256, "" when unknown */
} tp_policy_decision;

/* Maps the body of POST /v1/data/tenants/provision (untrusted) to a decision. A missing or
 * non-object "result" means deny with reason "NO_RESULT"; allow needs result.allow == true and
 * no reasons (a malformed allow/reasons pair is a deny with reason "MALFORMED_RESULT"). At most
 * TP_POLICY_REASONS_MAX string reasons are kept (the last slot says "REASONS_TRUNCATED" when more
 * came), each cut to TP_POLICY_REASON_LEN bytes on a UTF-8 boundary; non-string reasons are
 * skipped. Returns 0 (decision filled) or TP_EOPA_BAD_RESPONSE (not a JSON object; out then
 * holds a deny). Any thread. */
int tp_policy_parse_response(const char *body, size_t len, tp_policy_decision *out);

/* One quota tier (DESIGN §6 table), as read from config/quota-tiers.json. */
typedef struct tp_quota_tier {
    char tier[16]; /* "FREE", "STARTER", "PRO", "ENTERPRISE" */
    int64_t requests_per_minute;
    int64_t requests_per_day;
    int64_t ingest_events_per_minute;
    int64_t max_tokens_per_request;
    int64_t storage_bytes;
    int64_t seat_cap;
    double burst_multiplier;
} tp_quota_tier;

/* The four quota tiers indexed by tp_plan (TP_PLAN_FREE .. TP_PLAN_ENTERPRISE). */
#define TP_QUOTA_TIERS_N (TP_PLAN_ENTERPRISE + 1)

/* Builds the OPA input document for a request; context: owned tenant count and the quota tiers
 * (a TP_QUOTA_TIERS_N table, may be NULL), the region allow-list, maxTenantsPerUser at its default.
 * Returns a new malloc'd JSON string or NULL. */
char *tp_policy_build_input(const tp_request *req, const char *action, int owned_tenants,
                            const tp_quota_tier *tiers, const char *region_allowlist_csv);

/* The default of input.context.maxTenantsPerUser (also the policy's own default). */
#define TP_POLICY_MAX_TENANTS_PER_USER_DEFAULT 3

/* Everything besides the request that goes into input.context; any pointer may be NULL. */
typedef struct tp_policy_context {
    int owned_tenants;                /* tenants the actor already owns */
    /* The quota tiers, parsed once (tp_quota_tiers_parse), indexed by tp_plan; NULL: "tiers"
     * omitted. input.context.tiers carries only the entries of the plans the input names
     * (input.plan and, for an action, input.tenant.plan): the policies read tiers[input.plan],
     * and the whole table would cost OPA a parse of every tier on every decision. */
    const tp_quota_tier *tiers;
    const char *region_allowlist_csv; /* "us-east-1,eu-central-1"; NULL: an empty allow-list */
    int max_tenants_per_user;         /* <= 0: TP_POLICY_MAX_TENANTS_PER_USER_DEFAULT */
    const char *admin_role;           /* NULL or "": "adminRole" omitted (the policy says "admin") */
} tp_policy_context;

/* Same as tp_policy_build_input with the whole context. The region is defaulted with
 * tp_default_region when the request has none; requestedSeats and storageEstimateBytes are left
 * out when absent. Returns a new malloc'd JSON string, or NULL when out of memory or when a
 * string of req is not valid UTF-8. Any thread. */
char *tp_policy_build_input_ctx(const tp_request *req, const char *action, const tp_policy_context *ctx);

/* A tenant as it is now (read from PostgreSQL), the part of an action's OPA input the request does
 * not carry. Strings may be NULL (sent as null). */
typedef struct tp_policy_tenant {
    const char *id, *slug, *status, *plan, *owner_id, *residency, *region, *environment;
    bool has_seats;
    int64_t seats;
    bool has_storage;
    int64_t storage_estimate_bytes;
} tp_policy_tenant;

/* Builds the OPA input of an action (req->action != PROVISION): {action ("change_plan",
 * "suspend", "resume", "deprovision"), source, actor, tenant (the current state: id, slug, status,
 * plan, ownerId, seats, storageEstimateBytes, residency, region, environment), plan (CHANGE_PLAN),
 * requestedSeats / storageEstimateBytes (when given), reason (when given), retentionDays
 * (DEPROVISION: the given or the default), context {tiers, adminRole}}. Returns a new malloc'd
 * JSON string, or NULL (out of memory, a string not UTF-8). Any thread. */
char *tp_policy_build_action_input(const tp_request *req, const tp_policy_tenant *tenant,
                                   const tp_policy_context *ctx);

typedef struct tp_policy_client tp_policy_client;

/* One client per thread (one curl easy handle, keep-alive). base_url like http://127.0.0.1:8181.
 * timeout_ms bounds each call (connect: at most 1 s of it). Returns NULL on bad arguments or
 * out of memory. */
tp_policy_client *tp_policy_client_new(const char *base_url, long timeout_ms);
void tp_policy_client_free(tp_policy_client *pc);

/* Asks OPA. Fail-closed: unreachable/timeout → TP_EOPA_UNAVAILABLE, garbage → TP_EOPA_BAD_RESPONSE
 * (both transient: never an allow). Returns 0 with out filled (allow or deny). Asks the
 * provisioning package (tenants/provision). */
int tp_policy_decide(tp_policy_client *pc, const char *input_json, tp_policy_decision *out);
/* The same for any action: POST {base}/v1/data/{tp_policy_package(action)}. */
int tp_policy_decide_action(tp_policy_client *pc, tp_action action, const char *input_json,
                            tp_policy_decision *out);
/* The policy package of an action, as a data path: "tenants/provision", "tenants/change_plan",
 * "tenants/suspend", "tenants/resume", "tenants/deprovision" (config/policies/tenants/). */
const char *tp_policy_package(tp_action action);

/* Readiness: GET {base}/health. Returns 0 when OPA answers 200, else TP_EOPA_UNAVAILABLE. */
int tp_policy_ping(tp_policy_client *pc);


/* Checks a tiers document: an object holding exactly the four plans, each with every field of
 * tp_quota_tier (non-negative integers, burstMultiplier a number >= 1). Returns 0 or TP_ECONFIG
 * with errstr filled. */
int tp_quota_tiers_validate(const char *tiers_json, char *errstr, size_t errstr_size);

/* Reads and validates the tiers file (at most 64 KiB). Returns the file's text (malloc'd, the
 * caller frees it) or NULL, after logging why. */
char *tp_policy_load_tiers(const char *path);

/* Reads one plan's values out of a tiers document. Returns 0, TP_EINVAL (unknown plan) or
 * TP_ECONFIG (tiers_json invalid). */
int tp_quota_tiers_get(const char *tiers_json, tp_plan plan, tp_quota_tier *out);

/* Reads every plan's values out of a tiers document into out[tp_plan]. Returns 0 or TP_ECONFIG
 * (tiers_json invalid) with errstr filled. */
int tp_quota_tiers_parse(const char *tiers_json, tp_quota_tier out[TP_QUOTA_TIERS_N], char *errstr,
                         size_t errstr_size);

#endif
