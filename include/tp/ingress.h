/* ingress.h: the HTTP front door (tp-ingress): RFC 9457 problems, request body validation, JWT
 * authentication, and the server with its hooks (pre-check, enqueue, idempotency, status) that
 * the binary wires to OPA, Kafka and PostgreSQL. No vendor types leak through this header. */
#ifndef TP_INGRESS_H
#define TP_INGRESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tp/config.h"
#include "tp/policy.h"
#include "tp/request.h"

/* ---- problems (RFC 9457, application/problem+json) ------------------------------------------ */

/* Stable problem types; the "type" member is TP_PROBLEM_TYPE_PREFIX + the kind's slug. */
#define TP_PROBLEM_TYPE_PREFIX "urn:tenant-provisioner:problem:"
typedef enum tp_problem_kind {
    TP_PROBLEM_VALIDATION = 0,     /* 400 validation-error */
    TP_PROBLEM_MALFORMED_JSON,     /* 400 malformed-json */
    TP_PROBLEM_UNAUTHORIZED,       /* 401 unauthorized */
    TP_PROBLEM_FORBIDDEN,          /* 403 forbidden (missing role) */
    TP_PROBLEM_POLICY_DENIED,      /* 403 policy-denied */
    TP_PROBLEM_NOT_FOUND,          /* 404 not-found */
    TP_PROBLEM_METHOD_NOT_ALLOWED, /* 405 method-not-allowed */
    TP_PROBLEM_SLUG_TAKEN,         /* 409 slug-taken */
    TP_PROBLEM_TOO_LARGE,          /* 413 payload-too-large */
    TP_PROBLEM_UNSUPPORTED_MEDIA,  /* 415 unsupported-media-type */
    TP_PROBLEM_IDEMPOTENCY,        /* 422 idempotency-key-reused */
    TP_PROBLEM_UNAVAILABLE,        /* 503 service-unavailable */
    TP_PROBLEM_INTERNAL,           /* 500 internal-error */
    TP_PROBLEM_PROVISIONING_FAILED, /* 500 provisioning-failed (a terminal FAILED request) */
    TP_PROBLEM_INVALID_STATE,      /* 409 invalid-state (the tenant's state forbids the action) */
    TP_PROBLEM_KIND_COUNT_
} tp_problem_kind;

typedef struct tp_problem tp_problem;

/* Returns a new problem of a kind (status, type and title come from the kind) with a detail
 * (may be NULL); NULL on out of memory. Caller frees with tp_problem_free. */
tp_problem *tp_problem_new(tp_problem_kind kind, const char *detail);
void tp_problem_free(tp_problem *p);
/* Replaces the detail text; returns 0 or TP_ENOMEM. */
int tp_problem_set_detail(tp_problem *p, const char *detail);
/* Appends {field, code, message} to errors[]; field is a JSON pointer ("/slug", "" = whole body).
 * At most TP_PROBLEM_ERRORS_MAX entries are kept (later ones only bump a counter).
 * Returns 0 or TP_ENOMEM. */
#define TP_PROBLEM_ERRORS_MAX 64
int tp_problem_add_error(tp_problem *p, const char *field, const char *code, const char *message);
/* Adds a string member to the problem object (e.g. "retryAfter", "requestId"); 0 or TP_ENOMEM. */
int tp_problem_set_string(tp_problem *p, const char *key, const char *value);
/* Appends a policy reason to the "reasons" array; 0 or TP_ENOMEM. */
int tp_problem_add_reason(tp_problem *p, const char *reason);

int tp_problem_status(const tp_problem *p);
tp_problem_kind tp_problem_get_kind(const tp_problem *p);
size_t tp_problem_error_count(const tp_problem *p);
/* Returns field / code of errors[i] (NULL when out of range); valid while p lives. */
const char *tp_problem_error_field(const tp_problem *p, size_t i);
const char *tp_problem_error_code(const tp_problem *p, size_t i);
/* True when some errors[] entry has this field and (code == NULL or this code). */
bool tp_problem_has_error(const tp_problem *p, const char *field, const char *code);
/* Serialises the problem; returns a new malloc'd NUL-terminated JSON string or NULL. */
char *tp_problem_to_json(const tp_problem *p, size_t *len_out);

/* ---- request body validation (DESIGN §4) ----------------------------------------------------- */

/* Parses and validates an HTTP JSON body (untrusted, len bytes, need not be NUL-terminated) into
 * out (zeroed first; only source, tenant, plan, environment, seats and storage are filled; the
 * caller sets request id, actor and the rest). Defaults: region from residency, plan ENTERPRISE
 * (admin) or STARTER (self-serve), environment prod. region_allowlist_csv: the allowed regions
 * ("us-east-1,eu-central-1"); NULL or "" allows none.
 * Returns 0; TP_EVALIDATION with *problem_out set (400, every field error collected);
 * TP_ENOMEM. On success *problem_out is NULL. Thread-safe; any thread. */
int tp_ingress_parse_body(const char *body, size_t len, tp_source source,
                          const char *region_allowlist_csv, tp_request *out,
                          tp_problem **problem_out);

/* Parses the JSON body of a tenant action (untrusted; NULL or empty: {}) into out's action fields
 * (the caller has set out->action and the rest): CHANGE_PLAN takes plan (required),
 * requestedSeats 1..10000, storageEstimateBytes >= 0 and reason; the others only reason (required
 * by SUSPEND, 1..500 bytes). Unknown members are errors. Returns 0, TP_EVALIDATION with
 * *problem_out (400, every field error collected) or TP_ENOMEM. Any thread. */
int tp_ingress_parse_action_body(const char *body, size_t len, tp_action action, tp_request *out,
                                 tp_problem **problem_out);

/* Counts UTF-8 code points of a valid UTF-8 string of len bytes. */
size_t tp_ingress_utf8_len(const char *s, size_t len);

/* ---- JWT authentication (libjwt behind this API) -------------------------------------------- */

/* The authenticated caller. */
typedef struct tp_caller {
    char sub[TP_ACTOR_ID_MAX + 1];
    int n_roles; /* at most TP_ROLES_MAX kept; is_admin looks at all of them */
    char roles[TP_ROLES_MAX][TP_ROLE_MAX + 1];
    bool is_admin; /* holds jwt.admin_role */
} tp_caller;

typedef struct tp_auth tp_auth;

/* Builds a verifier from jwt.alg (HS256|RS256|ES256), jwt.key_file (HS256 secret of at least 32
 * bytes, trailing newline ignored; or a PEM public key), jwt.issuer, jwt.audience (empty: not
 * checked), jwt.roles_claim (dotted path, e.g. "realm_access.roles"), jwt.admin_role,
 * jwt.leeway_s. The key is read once and kept. Returns 0 (*out set; free with tp_auth_free) or
 * TP_ECONFIG / TP_EIO / TP_ENOMEM with errstr filled. */
int tp_auth_new(const tp_config *cfg, tp_auth **out, char *errstr, size_t errstr_size);
void tp_auth_free(tp_auth *auth);

/* Checks an Authorization header value (NULL or "" = missing) of len bytes: "Bearer <jwt>" whose
 * header alg equals the configured one (never "none"), whose signature verifies with the
 * configured key, with exp present and now < exp + leeway, nbf (if present) <= now + leeway,
 * iss and aud matching when configured, and a string sub. now_s: the current Unix time (0 =
 * time(NULL)). Returns 0 with *out filled, or TP_EAUTH with *problem_out a 401 problem whose
 * "code" member names the failed check (missing_token, malformed_token, alg_mismatch,
 * bad_signature, missing_exp, expired, not_yet_valid, bad_issuer, bad_audience, missing_sub,
 * bad_roles), or TP_ENOMEM. Thread-safe. */
int tp_auth_check(tp_auth *auth, const char *authorization, size_t len, int64_t now_s,
                  tp_caller *out, tp_problem **problem_out);

/* Signs a JSON object of claims with alg ("HS256", "RS256", "ES256") and key (HS secret or PEM
 * private key). For tpctl and tests. Returns a new malloc'd compact JWT or NULL. */
char *tp_auth_sign(const char *alg, const unsigned char *key, size_t key_len,
                   const char *claims_json);

/* Reads a key file: HS secrets lose trailing whitespace. Returns 0 (*out malloc'd, caller frees)
 * or TP_EIO / TP_EDECODE_TOO_LARGE. */
int tp_auth_read_key(const char *path, bool strip, unsigned char **out, size_t *out_len);

/* Mints a development HS256 token: sub, roles (comma separated, may be NULL), iat, nbf, exp =
 * now + ttl_s, iss and aud from cfg (when set). key_file NULL means cfg's jwt.key_file.
 * Returns 0 and a new malloc'd token in *out, or TP_EIO / TP_EINVAL / TP_ENOMEM (errstr filled). */
int tp_auth_mint_dev(const tp_config *cfg, const char *key_file, const char *sub,
                     const char *roles_csv, int64_t ttl_s, char **out, char *errstr,
                     size_t errstr_size);

/* ---- the server and its hooks --------------------------------------------------------------- */

/* What tp-ingress asks its dependencies. Every hook is BLOCKING and runs on a libuv pool thread
 * (uv_queue_work), never on the loop thread: call libpq, librdkafka (wait for the delivery
 * report) or libcurl directly. Hooks may run concurrently on several pool threads (the pool has
 * UV_THREADPOOL_SIZE threads; tp-ingress sets 16 unless the environment says otherwise), so
 * whatever opaque points at must be thread-safe. A NULL hook is skipped as described. */
/* A question to the transparency log over all receipts (GET /api/receipts/...). */
typedef enum tp_tlog_ask {
    TP_TLOG_ASK_CHECKPOINT = 0, /* the latest signed checkpoint */
    TP_TLOG_ASK_INCLUSION,      /* receipt_id's inclusion proof at tree_size (0: the latest
                                 * checkpoint's size) */
    TP_TLOG_ASK_CONSISTENCY,    /* the consistency proof from size `from` to size `to` */
} tp_tlog_ask;

typedef struct tp_tlog_query {
    tp_tlog_ask ask;
    char receipt_id[128];
    int64_t tree_size;
    int64_t from, to;
} tp_tlog_query;

/* A question about tenants: GET /api/admin/tenants (a page), /api/admin/tenants/{slug} and the
 * owner's /api/tenants/{slug} (one tenant). The server checks the filters before asking. */
#define TP_INGRESS_CURSOR_MAX 128
typedef struct tp_tenant_ask {
    bool list;                       /* true: a page of tenants; false: the tenant `slug` */
    char slug[TP_SLUG_MAX + 1];
    char owner[TP_ACTOR_ID_MAX + 1]; /* "": anyone's; else only this owner's tenants */
    char state[16];                  /* "": any */
    char plan[16];                   /* "": any */
    int limit;                       /* 0: the default page size */
    char cursor[TP_INGRESS_CURSOR_MAX + 1]; /* "": the first page */
} tp_tenant_ask;

/* The dry run of a tenant action (what tp_stages_action_preview answers). */
typedef struct tp_ingress_preview {
    int verdict;                 /* 0 allowed, TP_ENOT_FOUND (no such tenant, or not the
                                  * self-serve caller's), TP_ECONFLICT (invalid state),
                                  * TP_EPOLICY_DENIED */
    char reason[32];             /* ALLOWED, TENANT_NOT_FOUND, INVALID_STATE, POLICY_DENIED */
    char message[512];           /* why not, "" when allowed */
    bool policy_asked;           /* decision is filled */
    tp_policy_decision decision;
    char tenant_status[16];      /* the tenant's state as read ("" when not found) */
    char *changes_json;          /* malloc'd JSON array of {field, from, to}; the server frees it */
} tp_ingress_preview;

typedef struct tp_ingress_hooks {
    void *opaque;
    /* Idempotency-Key replay: the caller (sub) already sent this key. Returns 0 with request_id
     * filled when the stored fingerprint equals fp (same body: the server answers 202 with that
     * id and does not enqueue again); TP_ENOT_FOUND for a new key; TP_EIDEMPOTENCY_MISMATCH
     * (422) for another body; anything else is answered 503. NULL: keys are never replayed.
     * The key itself travels in req->idempotency_key to enqueue, which should store it. A hook
     * may also answer TP_ENOT_FOUND for a known key whose request may not be in Kafka yet: the
     * POST then goes on to enqueue, which finds the key and answers with its replay_id. */
    int (*idempotency_lookup)(void *opaque, const char *caller_sub, const char *key,
                              const unsigned char fp[32], char *request_id, size_t request_id_cap);
    /* OPA pre-check. Returns 0 with out filled (allow or deny: 403 with out->reasons), or a
     * negative code: 503 with Retry-After (fail closed). NULL: no pre-check (tests only). */
    int (*pre_check)(void *opaque, const tp_request *req, tp_policy_decision *out);
    /* Makes req durable (Kafka delivery report PERSISTED, bounded by ingress.produce_timeout_ms)
     * and records req->idempotency_key with fp when set. Returns 0 with replay_id "" (enqueued),
     * 0 with replay_id set (another request with the same key and body holds the key: the
     * server answers as a replay of that id, which is durable in Kafka), TP_EIDEMPOTENCY_MISMATCH
     * (422, a concurrent request with another body won the key), TP_ECONFLICT (409) or another
     * code (503). NULL: every POST is answered 503. */
    int (*enqueue)(void *opaque, const tp_request *req, const unsigned char fp[32],
                   char *replay_id, size_t replay_cap);
    /* The status resource of a request: *json_out a new malloc'd JSON object text (the server
     * frees it) and the submitter's sub in owner. Returns 0, TP_ENOT_FOUND (404) or another code
     * (503). The server answers 404 unless owner equals the caller or the caller is an admin.
     * NULL: 404 for every id. */
    int (*status_lookup)(void *opaque, const char *request_id, char **json_out, char *owner,
                         size_t owner_cap);
    /* Readiness (Kafka, PostgreSQL, OPA reachable): 0, or a code with detail filled (503).
     * NULL: always ready. */
    int (*ready)(void *opaque, char *detail, size_t detail_cap);
    /* The state of a request ("ACCEPTED", "RUNNING", "SUCCEEDED", "FAILED", "DENIED") for the
     * polling of `Prefer: wait=N` and of replays: a cheap read. Returns 0, TP_ENOT_FOUND (not
     * recorded yet: keep waiting) or another code. NULL: status_lookup is used instead. */
    int (*state_lookup)(void *opaque, const char *request_id, char *state, size_t state_cap);
    /* The transparency log: *json_out a new malloc'd JSON object text (checkpoint: origin,
     * treeSize, rootHash, note; inclusion: receiptId, leafIndex, treeSize, leafHash, rootHash,
     * proof; consistency: from, to, fromRoot, toRoot, proof; hashes in standard base64).
     * Returns 0, TP_ENOT_FOUND (404) or TP_EINVAL (400) with detail filled, or another code
     * (503). NULL: 404 for every question. */
    int (*tlog)(void *opaque, const tp_tlog_query *q, char **json_out, char *detail,
                size_t detail_cap);
    /* The tenant view (tp_stages_tenant_json / tp_stages_tenant_list_json): *json_out a new
     * malloc'd JSON object text. Returns 0, TP_ENOT_FOUND (404: unknown, or not the owner's),
     * TP_EINVAL (400) or another code (503). NULL: 404 for every question. */
    int (*tenants)(void *opaque, const tp_tenant_ask *q, char **json_out);
    /* The pre-check of a tenant action (req->action != PROVISION), also what ?dryRun=true
     * answers: reads the tenant, checks the action against its state, asks the action's policy,
     * writes nothing. A self-serve request only sees the caller's own tenants unless sees_all
     * (the caller has the admin role: it sees every tenant, as on GET /api/tenants/{slug}; the
     * policy then refuses someone else's tenant with NOT_TENANT_OWNER). Returns 0 with out
     * filled (any verdict), or a negative code (503, fail closed). NULL: every action is 503. */
    int (*action_preview)(void *opaque, const tp_request *req, bool sees_all,
                          tp_ingress_preview *out);
} tp_ingress_hooks;

typedef struct tp_ingress_server tp_ingress_server;

/* Builds a server from cfg (ingress.listen_port, 0 = any free port; ingress.body_limit;
 * policy.region_allowlist; jwt.*) and binds 127.0.0.1:<port>. hooks is copied. Returns 0 with
 * *out set, or TP_ECONFIG / TP_EIO / TP_ENOMEM with errstr filled. Call from the thread that will
 * call tp_ingress_server_run. */
int tp_ingress_server_new(const tp_config *cfg, const tp_ingress_hooks *hooks,
                          tp_ingress_server **out, char *errstr, size_t errstr_size);
/* The bound TCP port. */
int tp_ingress_server_port(const tp_ingress_server *srv);
/* Serves until tp_ingress_server_stop or SIGTERM/SIGINT (when handle_signals); then stops
 * accepting, waits for in-flight requests (at most 10 s) and returns 0. */
int tp_ingress_server_run(tp_ingress_server *srv, bool handle_signals);
/* Asks a running server to stop; any thread, async-signal-unsafe. */
void tp_ingress_server_stop(tp_ingress_server *srv);
/* Frees a server that is not running. Jobs still waiting for a pool thread are cancelled (503);
 * hooks still running are waited for (serving their answers), at most 15 s. Returns 0 (freed),
 * or TP_ETIMEOUT / TP_EIO when a hook still runs or the loop cannot close: then NOTHING was
 * freed, and the hooks' opaque must not be freed either (call again later, or exit). */
int tp_ingress_server_free(tp_ingress_server *srv);

/* SHA-256 over the canonical form of the validated fields of req (source, tenant, plan,
 * environment, seats, storage): two bodies that mean the same thing share a fingerprint. */
int tp_ingress_fingerprint(const tp_request *req, unsigned char fp[32]);

/* ---- outcomes of a submitted request (Prefer: wait, replays) --------------------------------- */

/* Largest N honoured in `Prefer: wait=N` (larger values are cut to it). */
#define TP_INGRESS_WAIT_MAX_S 30

/* Parses a Prefer header value (RFC 7240: comma separated preferences, parameters after ';',
 * token names case-insensitive, values optionally quoted) of len bytes (untrusted, need not be
 * NUL-terminated). Returns N of the first "wait=N" (0..TP_INGRESS_WAIT_MAX_S, capped), or -1
 * when there is no valid wait preference. Any thread. */
int tp_ingress_parse_prefer_wait(const char *value, size_t len);

/* True for the terminal states SUCCEEDED, FAILED and DENIED. */
bool tp_ingress_state_is_terminal(const char *state);

/* Maps the status view of a request (the JSON text of tp_stages_status_json, untrusted) to the
 * answer of its POST. Not terminal (ACCEPTED, RUNNING): returns 0 with *http_status 0 and
 * *body_out NULL. SUCCEEDED: 201 with the seed's response body (success, data.tenant{id,name,
 * slug}, data.namespace{id,slug,environment}, data.partitions[{id,name,type}], data.quota{tier
 * and the full quota vector}, receipts.provisioning|quotaAssignment{id,actionType},
 * policy.opa{allow,decisionId}). DENIED: a 403 policy-denied problem with the policy's reasons.
 * FAILED: a 409 slug-taken problem for SLUG_TAKEN, else a 500 provisioning-failed problem naming
 * the failure reason. *body_out is a new malloc'd JSON text (the caller frees it); *problem_out
 * tells whether it is application/problem+json. Returns 0, TP_EINVAL (not a status view) or
 * TP_ENOMEM. Any thread. */
int tp_ingress_outcome(const char *status_json, int *http_status, char **body_out,
                       bool *problem_out);
/* The same for a tenant action's request: SUCCEEDED answers 200 with the status view itself;
 * DENIED a 403 policy-denied problem with the reasons; FAILED a 409 invalid-state problem for
 * INVALID_STATE and TENANT_CHANGED, a 404 for TENANT_NOT_FOUND, else a 500 provisioning-failed problem naming the
 * reason. Returns 0, TP_EINVAL or TP_ENOMEM. Any thread. */
int tp_ingress_action_outcome(const char *status_json, int *http_status, char **body_out,
                              bool *problem_out);

/* ---- the production hooks: PostgreSQL, Kafka, OPA ------------------------------------------- */

typedef struct tp_ingress_backend tp_ingress_backend;

/* Builds the hooks of tp-ingress from cfg: an idempotent producer on topic.requests (kafka.*;
 * the key and the ACCEPTED request are committed before the delivery wait, never held open
 * across it; a failed produce forgets them, a retry re-produces a request still ACCEPTED;
 * kafka.message.timeout.ms is set to ingress.produce_timeout_ms - 1 s in cfg when the config
 * does not set it, so an undelivered record fails instead of arriving after its 503), the codec
 * (codec.schema_dir), a pool of PostgreSQL connections (pg.dsn; one per pool thread at most,
 * opened lazily), the OPA pre-check (tp_ingress_opa_new) with the caller's owned-tenant count, a
 * Kafka metadata probe for readiness. A thread serves delivery reports. Returns 0 with *out set,
 * or TP_ECONFIG / TP_ENOMEM / TP_EKAFKA_FATAL with errstr filled. Loop thread. */
int tp_ingress_backend_new(tp_config *cfg, tp_ingress_backend **out, char *errstr,
                           size_t errstr_size);
/* Fills hooks with the backend's functions (opaque = b). */
void tp_ingress_backend_hooks(tp_ingress_backend *b, tp_ingress_hooks *hooks);
/* Stops the delivery thread, flushes the producer (at most 5 s), closes every connection. Call
 * after the server stopped (no hook may be running). */
void tp_ingress_backend_free(tp_ingress_backend *b);

/* ---- the default OPA pre-check (worker/policy behind it) ------------------------------------ */

typedef struct tp_ingress_opa tp_ingress_opa;
/* Reads opa.url, opa.timeout_ms, quota.tiers_file, policy.region_allowlist,
 * policy.max_tenants_per_user, jwt.admin_role.
 * Returns 0 or TP_ECONFIG / TP_EIO / TP_ENOMEM with errstr filled. */
int tp_ingress_opa_new(const tp_config *cfg, tp_ingress_opa **out, char *errstr, size_t errstr_size);
void tp_ingress_opa_free(tp_ingress_opa *opa);
/* Asks OPA with action "provision" and the given owned-tenant count. Blocking; any thread (one
 * curl client per thread, kept for keep-alive). Returns 0 with out filled, or
 * TP_EOPA_UNAVAILABLE / TP_EOPA_BAD_RESPONSE / TP_ENOMEM. */
int tp_ingress_opa_decide(tp_ingress_opa *opa, const tp_request *req, int owned_tenants,
                          tp_policy_decision *out);
/* A pre_check hook for tp_ingress_hooks with opaque = tp_ingress_opa* (owned tenants = 0; wrap
 * it to pass the caller's real count from PostgreSQL). */
int tp_ingress_opa_pre_check(void *opaque, const tp_request *req, tp_policy_decision *out);
/* Readiness of OPA (GET /health) with this thread's client: 0 or TP_EOPA_UNAVAILABLE / TP_ENOMEM. */
int tp_ingress_opa_ping(tp_ingress_opa *opa);

#endif
