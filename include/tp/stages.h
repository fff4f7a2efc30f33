/* stages.h: the seven provisioning stages (policy → tenant → namespace → partitions → quota →
 * receipts → isolation), the stages of a tenant action (CHANGE_PLAN: policy → state → quota →
 * receipts → isolation; SUSPEND, DEPROVISION: policy → state → receipts; RESUME: policy → state →
 * receipts → isolation) and their runner. Each stage commits its effects and its stage marker in
 * one PostgreSQL transaction; re-running a completed stage is a no-op. The runner is synchronous,
 * never sleeps and keeps no global state: call it from any thread with that thread's tp_db; the
 * caller (tp-worker) schedules retries with backoff. */
#ifndef TP_STAGES_H
#define TP_STAGES_H

#include <stdbool.h>
#include <stdint.h>

#include "tp/policy.h"
#include "tp/receipts.h"
#include "tp/request.h"
#include "tp/store.h"

typedef enum tp_stage_id {
    TP_STAGE_POLICY = 0,
    TP_STAGE_TENANT,
    TP_STAGE_NAMESPACE,
    TP_STAGE_PARTITIONS,
    TP_STAGE_QUOTA,
    TP_STAGE_RECEIPTS,
    TP_STAGE_ISOLATION,
    TP_STAGE_STATE, /* tenant actions only: the tenant's state change */
    TP_STAGE_COUNT_
} tp_stage_id;

/* "policy", "tenant", "namespace", "partitions", "quota", "receipts", "isolation", "state"; "?"
 * otherwise. */
const char *tp_stage_name(tp_stage_id id);
/* Returns 0 with *out set, or TP_EINVAL. */
int tp_stage_parse(const char *name, tp_stage_id *out);

/* What a stage run needs. Everything is borrowed; one env per thread (db and policy client are
 * per-thread objects). */
typedef struct tp_stage_env {
    tp_db *db;
    tp_policy_client *policy;
    const tp_signer *signer;
    const char *tiers_json;        /* config/quota-tiers.json text */
    const tp_quota_tier *tiers;    /* the same, parsed once: indexed by tp_plan; may be NULL */
    const char *origin_topic;      /* where the request was read (recorded with a new request); */
    int origin_partition;          /* NULL topic: not from Kafka */
    int64_t origin_offset;
    bool per_stage_tx;             /* tests, diagnosis: skip the one-transaction happy path */
    const char *region_allowlist;  /* "us-east-1,eu-central-1,..." */
    int max_attempts;              /* per stage; <= 0 means 8 */
    int64_t max_elapsed_ms;        /* and at least this long since the stage's first attempt
                                      before the request fails; <= 0: attempts alone decide */
    int max_tenants_per_user;      /* informational: the policy enforces the cap */
    bool kill_switch;              /* when true the isolation guard fails (as does the
                                      provisioning.kill_switch row of tp_flags); provisioning
                                      only: tenant actions ignore it */
    const char *admin_role;        /* input.context.adminRole (jwt.admin_role); NULL: "admin" */
} tp_stage_env;

typedef enum tp_run_status {
    TP_RUN_SUCCEEDED = 0, /* every stage done, request SUCCEEDED */
    TP_RUN_RETRY,         /* transient failure recorded; run again after a backoff */
    TP_RUN_FAILED,        /* terminal: request FAILED (reason in failure_reason) */
    TP_RUN_DENIED         /* terminal: request DENIED by policy */
} tp_run_status;

typedef struct tp_run_result {
    tp_run_status status;
    tp_stage_id stage;        /* the stage that failed or must be retried */
    int attempts;             /* attempts of that stage so far */
    int err;                  /* the TP_E* code behind a RETRY/FAILED, 0 otherwise */
    char failure_reason[64];  /* SLUG_TAKEN, POLICY_DENIED, ISOLATION_VIOLATION, RETRIES_EXHAUSTED, ... */
    char message[512];
    char tenant_id[64];       /* once known */
} tp_run_result;

/* Records a request (ON CONFLICT DO NOTHING) in state ACCEPTED with one PENDING condition per
 * stage. payload_json may be NULL: the request is then serialised with tp_stages_request_json.
 * origin_topic may be NULL (partition/offset are then ignored). Returns 0 (also for a duplicate),
 * TP_EDB or TP_EDB_PERMANENT. */
int tp_stages_accept(tp_db *db, const tp_request *req, const char *payload_json_or_null,
                     const char *origin_topic, int partition, int64_t offset);

/* Runs every stage that has not SUCCEEDED, in order. Happy path: the policy decision is asked
 * outside any transaction, then every remaining stage runs in ONE transaction with all its rows
 * and markers (one durable commit). Any error there rolls back and the stages run again each in
 * its own transaction, which records retries and failures (so conditions, attempts and
 * idempotency are the same on both paths). Records the request if tp_stages_accept was not
 * called, with env's origin: a BILLING request in the happy path's one transaction (asked OPA
 * first; one commit in all, no row before it), else (or when that rolls back) straight into
 * RUNNING in a statement of its own. A terminal request is a no-op that reports its
 * terminal status. Returns 0 when *out describes the outcome (including FAILED/DENIED/RETRY);
 * a negative TP_E* only when even the outcome could not be recorded: transient (retry later) or
 * permanent (the database refuses this request's bookkeeping: retrying cannot help), or
 * TP_ECONFLICT when the request id is already recorded for another action or tenant (nothing of
 * that request is touched; out->message says which). */
int tp_stages_run(tp_stage_env *env, const tp_request *req, tp_run_result *out);

/* Puts a FAILED request back to ACCEPTED: its failed/retrying stages and the policy stage return
 * to PENDING with zero attempts (policy is evaluated again). Returns 0, TP_ENOT_FOUND,
 * TP_ECONFLICT (not FAILED) or TP_EDB*. */
int tp_stages_prepare_replay(tp_db *db, const char *request_id);

/* A JSON view of one request for the status API and tpctl: requestId, state, failureReason,
 * failureMessage, actor, conditions[] (stage, status, attempts, reason, message, startedAt,
 * finishedAt), tenant, namespace, partitions, quota, receipts{provisioning, quotaAssignment,
 * isolationVerified}, policy. All read from one snapshot (a REPEATABLE READ READ ONLY transaction
 * of its own, or the caller's open one). Returns a new malloc'd string, NULL when unknown or on
 * error. */
char *tp_stages_status_json(tp_db *db, const char *request_id);

/* --- tenant actions ------------------------------------------------------------------------
 *
 * Lifecycle: provisioning → active ↔ suspended → deprovisioned, and quarantined (the isolation
 * guard failed). Which action is valid from which state (anything else ends FAILED/INVALID_STATE,
 * no row of the tenant changed):
 *   CHANGE_PLAN  from active or suspended (the status is kept)
 *   SUSPEND      from active
 *   RESUME       from suspended
 *   DEPROVISION  from active, suspended or quarantined
 * provisioning (not finished) and deprovisioned (soft-deleted) accept no action. */

/* True when action may run on a tenant whose status is status. */
bool tp_action_valid_in(tp_action action, const char *status);

/* Why an action would not run (or TP_PREVIEW_ALLOWED). The names are the failure reasons a real
 * run records: "ALLOWED", "TENANT_NOT_FOUND", "INVALID_STATE", "POLICY_DENIED", "NOT_AN_ACTION". */
typedef enum tp_preview_reason {
    TP_PREVIEW_ALLOWED = 0,
    TP_PREVIEW_TENANT_NOT_FOUND, /* no tenant has the slug */
    TP_PREVIEW_INVALID_STATE,    /* the tenant's status does not allow the action */
    TP_PREVIEW_POLICY_DENIED,    /* OPA said no: decision.reasons */
    TP_PREVIEW_NOT_AN_ACTION     /* req->action is PROVISION (or unknown) */
} tp_preview_reason;

const char *tp_preview_reason_name(tp_preview_reason r);

typedef struct tp_action_preview {
    bool allowed;                 /* reason == TP_PREVIEW_ALLOWED */
    tp_preview_reason reason;
    char message[512];            /* human words for a refusal, "" when allowed */
    bool policy_asked;            /* decision is filled (found, valid state: OPA was asked) */
    tp_policy_decision decision;  /* allow, reasons, decision id, policy revision */
    char tenant_id[64];           /* "" when not found */
    char tenant_status[16];       /* the tenant's status as read, "" when not found */
    /* The changes the action would make, a JSON array of {"field","from","to"} (malloc'd; "[]"
     * when the tenant was not found or the state is invalid), e.g. [{"field":"plan","from":"PRO",
     * "to":"STARTER"},{"field":"quota.seatCap","from":150,"to":50},{"field":
     * "partitions.primary.isolation","from":"dedicated","to":"shared"}, ...]. Filled on a policy
     * deny too (what was asked). */
    char *changes_json;
    /* What the decision was taken on besides the request: the tenant's plan, owner, seats and
     * storage as read, a compact JSON object ("" when OPA was not asked). The state stage applies
     * the decision only to a tenant that still has these (else FAILED/TENANT_CHANGED). */
    char basis[2048];
} tp_action_preview;

/* The dry run of an action (tp-ingress's ?dryRun=true and pre-check): reads the tenant by slug,
 * checks the action is valid for its state, asks OPA (the action's package, with ctx's tiers and
 * admin role) and fills out, writing nothing. The worker's policy stage runs the same code, so a
 * dry run and a real run decide alike (given the same tenant state and policies). Returns 0 when
 * out describes the verdict (allowed or not; release it with tp_action_preview_release), or a
 * TP_E* error when no verdict could be reached: TP_EDB / TP_EOPA_UNAVAILABLE /
 * TP_EOPA_BAD_RESPONSE (transient: try again), TP_ECONFIG (no tier for the new plan), TP_ENOMEM,
 * TP_EINVAL (NULL arguments). Any thread, with that thread's db and policy client. */
int tp_stages_action_preview(tp_db *db, tp_policy_client *pc, const tp_policy_context *ctx,
                             const tp_request *req, tp_action_preview *out);
/* Frees out->changes_json (safe on a zeroed or already released preview). */
void tp_action_preview_release(tp_action_preview *out);


/* ---- the tenant view (GET /api/admin/tenants[/{slug}], GET /api/tenants/{slug}, tpctl tenant) --
 * One tenant as JSON: id, slug, name, state, plan, residency, region, environment, ownerId,
 * requestedSeats, storageEstimateBytes, quota (tier and the vector, or null), namespace (or null),
 * partitions[] (id, name, type, region, isolation, purgeAfter), suspendedReason, deprovisionedAt,
 * purgeAfter, lastReceipt (sequence, hash, id, actionType; null before the first receipt),
 * createdAt, updatedAt. Read by one statement (one snapshot). */

#define TP_TENANT_LIST_LIMIT_DEFAULT 50
#define TP_TENANT_LIST_LIMIT_MAX 200
#define TP_TENANT_CURSOR_MAX 128 /* bytes of an opaque cursor, without NUL */

/* The filters of a tenant list. Empty strings (or NULL) filter nothing. */
typedef struct tp_tenant_query {
    const char *state;  /* provisioning, active, suspended, deprovisioned, quarantined */
    const char *plan;   /* FREE, STARTER, PRO, ENTERPRISE */
    const char *owner;  /* only this owner's tenants (self-serve) */
    int limit;          /* 0: TP_TENANT_LIST_LIMIT_DEFAULT; else 1..TP_TENANT_LIST_LIMIT_MAX */
    const char *cursor; /* a nextCursor of an earlier page: the page after it */
} tp_tenant_query;

/* True for the tenant states of the schema (0006): provisioning, active, suspended,
 * deprovisioned, quarantined. */
bool tp_tenant_state_valid(const char *state);

/* Checks a query without a database: the state and plan are known names, the limit is in range,
 * the cursor decodes. Returns 0, or TP_EINVAL with the parameter's name ("state", "plan",
 * "limit", "cursor") in field, a code of the problem vocabulary ("enum", "out_of_range",
 * "pattern") in code (>= 16 bytes) and a message. Pure; any thread. */
int tp_tenant_query_check(const tp_tenant_query *q, char *field, size_t field_cap, char *code,
                          char *msg, size_t msg_cap);

/* The tenant whose slug is slug, as JSON (a new malloc'd string in *json_out). owner: NULL for
 * anyone's, else only when the tenant's owner is owner (someone else's tenant looks missing).
 * Returns 0, TP_ENOT_FOUND, TP_EDB / TP_EDB_PERMANENT or TP_ENOMEM. */
int tp_stages_tenant_json(tp_db *db, const char *slug, const char *owner, char **json_out);

/* A page of tenants in slug order: {"items": [tenant, ...], "nextCursor": string or null}
 * (nextCursor is set when more tenants match). Returns 0 with *json_out (malloc'd), TP_EINVAL
 * (the query fails tp_tenant_query_check), TP_EDB / TP_EDB_PERMANENT or TP_ENOMEM. */
int tp_stages_tenant_list_json(tp_db *db, const tp_tenant_query *q, char **json_out);

/* The request as JSON (DESIGN §5 field names, no secrets); a new malloc'd string or NULL. An
 * action's payload uses TenantActionRequest's names (tenantSlug, action, plan, reason, ...). */
char *tp_stages_request_json(const tp_request *req);
/* Parses what tp_stages_request_json wrote (e.g. the stored payload, for a replay).
 * Returns 0 or TP_EINVAL / TP_EDECODE_TOO_LARGE. */
int tp_stages_request_from_json(const char *json, tp_request *out);

#endif
