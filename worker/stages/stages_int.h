/* stages_int.h: what the stage runner hands each stage, and the stage table. Private to
 * worker/stages (and its unit tests). */
#ifndef TP_STAGES_INT_H
#define TP_STAGES_INT_H

#include <jansson.h>

#include "tp/stages.h"

typedef struct tp_stage_ctx {
    tp_stage_env *env;
    tp_db *db;
    const tp_request *req;
    char tenant_id[64];             /* known after the tenant stage */
    char region[TP_REGION_MAX + 1]; /* the effective region of the request */
    tp_policy_decision decision;    /* filled by the policy stage's prepare step */
    int owned_tenants;              /* also from the prepare step (self-serve) */
    bool prepared;                  /* the policy prepare step ran in this run ... */
    int prepare_rc;                 /* ... with this result, and on failure this message: */
    char prepare_message[512];
    /* The tenant's receipt chain as this transaction extended it (the tenant row is locked by
     * then): later receipts of the same transaction skip the lock and the head read. The runner
     * forgets it whenever a transaction ends. */
    bool chain_known;
    int64_t chain_seq;
    char chain_hash[65];
    char chain_slug[TP_SLUG_MAX + 1];
    char chain_decision_id[128];
    char chain_revision[128];
    char chain_existing[512];       /* "ACTION=receipt_id,..." of this request, at lock time */
    /* The one-transaction path (run_single_tx) sets one_tx; its tenant stage then inserts the
     * tenant with an id of ours and no ON CONFLICT, queued, and sets tenant_new: every row of
     * that tenant is then new in this transaction, so the later stages queue their inserts too
     * (no RETURNING, no read-back: their outputs are what they inserted) and the receipt chain
     * starts from nothing without a lock or a read. A conflict (a slug taken, a namespace slug
     * held) is an error at the next statement that waits, which rolls the transaction back; the
     * per-stage path then settles it as it always did. decision_in_tx: the policy stage stored
     * ctx->decision in this transaction (the chain's decision id and revision). All three are
     * cleared whenever a transaction ends. */
    bool one_tx;
    bool tenant_new;
    bool decision_in_tx;
    json_t *output;                 /* the stage's output (owned by the runner) */
    /* Tenant actions: the policy stage's evaluation (tenant found, state valid, OPA's decision:
     * the same code as the dry run), and what the state stage changed (its output: before,
     * changes, after) and what a plan change's quota stage assigned (its output: the vector as
     * stored), for the receipts stage of the same transaction; forgotten on a rollback. */
    tp_action_preview action_eval;
    json_t *action_state;
    json_t *action_quota;
    int terminal;                   /* 0, TP_RUN_FAILED or TP_RUN_DENIED: committed with the marker */
    char reason[64];                /* failure reason of a terminal outcome */
    char message[512];              /* failure message (terminal or error) */
} tp_stage_ctx;

typedef struct tp_stage_def {
    tp_stage_id id;
    const char *name;
    /* Runs before the transaction (network calls: OPA); may be NULL. Returns 0 or TP_E*. */
    int (*prepare)(tp_stage_ctx *ctx);
    /* Runs inside the runner's transaction; never begins or commits. Returns 0 (possibly with
     * ctx->terminal set: committed as a terminal outcome) or TP_E* (rolled back). */
    int (*run)(tp_stage_ctx *ctx);
} tp_stage_def;

/* The seven stages of a provisioning, in order (indexed by tp_stage_id). */
#define TP_PROVISION_STAGES 7
extern const tp_stage_def tp_stage_table[TP_PROVISION_STAGES];

int tp_stage_policy_prepare(tp_stage_ctx *ctx);
int tp_stage_policy_run(tp_stage_ctx *ctx);
int tp_stage_tenant_run(tp_stage_ctx *ctx);
int tp_stage_namespace_run(tp_stage_ctx *ctx);
int tp_stage_partitions_run(tp_stage_ctx *ctx);
int tp_stage_quota_run(tp_stage_ctx *ctx);
int tp_stage_receipts_run(tp_stage_ctx *ctx);
int tp_stage_isolation_run(tp_stage_ctx *ctx);

/* The stages of a tenant action (stage_action.c; the guard in stage_isolation.c). */
int tp_stage_action_policy_prepare(tp_stage_ctx *ctx);
int tp_stage_action_policy_run(tp_stage_ctx *ctx);
int tp_stage_action_state_run(tp_stage_ctx *ctx);
int tp_stage_action_quota_run(tp_stage_ctx *ctx);
int tp_stage_action_receipts_run(tp_stage_ctx *ctx);
int tp_stage_action_isolation_run(tp_stage_ctx *ctx);

/* The stage list of a request's action: tp_stage_table (provisioning) or an action's list, in
 * order; *n receives its length. */
const tp_stage_def *tp_stage_list(tp_action action, int *n);

/* Sets a terminal outcome on ctx (message printf-style). */
void tp_stage_set_terminal(tp_stage_ctx *ctx, int status, const char *reason, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* vsnprintf into dst (truncating silently: messages are informative). */
void tp_stage_fmt(char *dst, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Records a database error's text into ctx->message and returns rc. */
int tp_stage_db_error(tp_stage_ctx *ctx, int rc, const char *what);

/* Seals one receipt of data (the action's facts, a JSON object, borrowed) and inserts it into
 * receipt_outbox; must run inside the stage transaction. Locks the tenant row, continues the tenant's chain. A receipt already in the outbox for
 * (request, action) is reused. receipt_id (>= 64 bytes) receives its id. Returns 0 or TP_E*. */
int tp_stage_emit_receipt(tp_stage_ctx *ctx, const char *action_type, const json_t *data,
                          char *receipt_id, size_t receipt_id_size);

/* The quota tier of plan: from env->tiers when the caller parsed them once, else read out of
 * env->tiers_json. Returns 0 or the error of tp_quota_tiers_get. */
int tp_stage_quota_tier(const tp_stage_ctx *ctx, tp_plan plan, tp_quota_tier *out);

/* "FOO" for TP_EFOO: the enumerated reason of an error code. */
const char *tp_stage_reason_of(int err);

/* Milliseconds since the epoch (CLOCK_REALTIME). */
int64_t tp_stage_now_ms(void);

/* The names of the partitions every tenant gets, in order. */
extern const char *const tp_partition_names[3];

/* A pure check of what the isolation guard reads back; unit-testable. */
typedef struct tp_isolation_facts {
    const char *tenant_id;
    const char *residency;          /* "US"/"EU" */
    const char *tenant_region;
    const char *plan;
    int n_namespaces;               /* namespaces with tenant_id or id = ns_<tenant> */
    bool namespace_ok;              /* the one row has the expected id, owner and slug */
    int n_partitions;
    bool partitions_owned;          /* all rows owned by the tenant, names primary/analytics/audit */
    bool partitions_isolation_ok;   /* dedicated for ENTERPRISE, shared otherwise */
    bool partitions_region_ok;      /* every partition in the tenant's region */
    int n_quotas;
    bool quota_matches_plan;        /* tier = plan and the vector equals the tiers config */
    bool region_allowed;            /* region in the allow-list (true when no list) */
    bool kill_switch;
} tp_isolation_facts;

#define TP_ISOLATION_CHECKS 5
typedef struct tp_isolation_check {
    const char *name;
    bool passed;
} tp_isolation_check;

/* Evaluates the facts into TP_ISOLATION_CHECKS named checks; returns true when all pass. */
bool tp_isolation_evaluate(const tp_isolation_facts *f, tp_isolation_check checks[TP_ISOLATION_CHECKS]);

/* How many tenants req's user (actor id) owns, not counting one created by req itself nor the
 * offboarded ones (their slugs stay taken until purge, but they are gone): the policy input's
 * count and the cap check under the owner lock (stage_tenant.c). Returns 0 or TP_EDB*. */
int tp_stages_owned_tenants(tp_db *db, const tp_request *req, int *owned);

/* Reads what a tenant owns back from the database: {tenant, namespace, partitions, quota}
 * (namespace/quota null when absent). Returns 0 with *out a new reference, or TP_E*
 * (TP_ENOT_FOUND for an unknown tenant). */
int tp_stages_tenant_view(tp_db *db, const char *tenant_id, json_t **out);

/* --- tenant actions (actions.c, stage_action.c) ------------------------------------------- */

/* The tenant of a slug as one JSON object: id, slug, name, status, plan, ownerId, residency,
 * region, environment, seats, storageEstimateBytes, suspendedReason, deprovisionedAt, purgeAfter,
 * quota {tier, requestsPerMinute, ...} (null when absent), partitions [{id, name, isolation,
 * region, purgeAfter}] in their fixed order. Timestamps are ISO 8601 UTC with milliseconds. */
#define TP_ACTION_TENANT_SQL                                                                        \
    "SELECT json_build_object('id', t.id, 'slug', t.slug, 'name', t.name, 'status', t.status, "    \
    "'plan', t.plan, 'ownerId', t.owner_id, 'residency', t.residency, 'region', t.region, "       \
    "'environment', t.environment, 'seats', t.requested_seats, 'storageEstimateBytes', "           \
    "t.storage_estimate_bytes, 'suspendedReason', t.suspended_reason, 'deprovisionedAt', "          \
    "to_char(t.deprovisioned_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), "         \
    "'purgeAfter', to_char(t.purge_after AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), " \
    "'quota', (SELECT json_build_object('tier', q.tier, 'requestsPerMinute', "                      \
    "q.requests_per_minute, 'requestsPerDay', q.requests_per_day, 'ingestEventsPerMinute', "        \
    "q.ingest_events_per_minute, 'maxTokensPerRequest', q.max_tokens_per_request, "                \
    "'storageBytes', q.storage_bytes, 'seatCap', q.seat_cap, 'burstMultiplier', "                  \
    "q.burst_multiplier::float8) FROM tenant_quotas q WHERE q.tenant_id = t.id), "                 \
    "'partitions', coalesce((SELECT json_agg(json_build_object('id', p.id, 'name', p.name, "       \
    "'isolation', p.isolation, 'region', p.region, 'purgeAfter', to_char(p.purge_after AT TIME "   \
    "ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')) ORDER BY array_position(ARRAY['primary',"  \
    "'analytics','audit'], p.name), p.id) FROM tenant_partitions p WHERE p.tenant_id = t.id), "     \
    "'[]'::json))::text FROM tenants t WHERE t.slug = $1"

/* Reads the tenant of slug (see TP_ACTION_TENANT_SQL); lock: FOR UPDATE of the tenant row (inside
 * a transaction). Returns 0 with *out a new reference, TP_ENOT_FOUND, or TP_E*. */
int tp_action_read_tenant(tp_db *db, const char *slug, bool lock, json_t **out);

/* The changes req makes to the tenant snapshot before (a JSON array of {field, from, to}; see
 * tp_action_preview.changes_json); new_tier: the new plan's tier (CHANGE_PLAN); now_ms: the time
 * a DEPROVISION takes effect (deprovisionedAt; purgeAfter is that plus the retention days).
 * Pure. Returns a new reference or NULL (out of memory). */
json_t *tp_action_changes(const tp_request *req, json_t *before, const tp_quota_tier *new_tier,
                          int64_t now_ms);

/* The facts of a tenant snapshot (TP_ACTION_TENANT_SQL) an action's decision rests on besides
 * the request: {plan, ownerId, seats, storageEstimateBytes} (see tp_action_preview.basis). A new
 * reference or NULL (out of memory). */
json_t *tp_action_basis(json_t *tenant);

/* The retention of a DEPROVISION: the request's, else TP_RETENTION_DAYS_DEFAULT. */
int32_t tp_action_retention_days(const tp_request *req);

/* "2026-12-02T04:12:18.000Z" for ms since the epoch. */
void tp_action_iso_time(int64_t ms, char *buf, size_t cap);

/* tp_stages_action_preview with a given clock: the worker's action policy stage and the dry run
 * share it. A plan change reads its new tier from pctx->tiers (TP_ECONFIG when NULL). */
int tp_action_evaluate(tp_db *db, tp_policy_client *pc, const tp_policy_context *pctx,
                       const tp_request *req, int64_t now_ms, tp_action_preview *out);

/* The isolation guard's read of what a tenant owns (stage_isolation.c); exposed for the plan
 * test. */
extern const char tp_isolation_read_sql[];

#endif
