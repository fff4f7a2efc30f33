/* ingress.h: the HTTP front door (tp-ingress): RFC 9457 problems, request body validation, JWT
 * authentication, and the server with its hooks (pre-check, enqueue, idempotency, status) that
 * the binary wires to OPA, Kafka and PostgreSQL. No vendor types leak through this header. */
#ifndef TP_INGRESS_H
#define TP_INGRESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tp/config.h"
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

#endif
