/* error.h: every error code of tenant-provisioner, declared once.
 * The X-macro yields the enum, the name, the message and whether the code is transient; that one
 * flag decides whether a stage retries. Vendor errors are translated into these in their wrapper. */
#ifndef TP_ERROR_H
#define TP_ERROR_H

#include <stdbool.h>

/*     name                  transient  message */
#define TP_ERRNO_MAP(XX)                                                                   \
    XX(NOMEM,                false, "out of memory")                                      \
    XX(INVAL,                false, "invalid argument")                                   \
    XX(IO,                   true,  "input/output error")                                 \
    XX(CONFIG,               false, "invalid configuration")                              \
    XX(TIMEOUT,              true,  "operation timed out")                                \
    XX(UNAVAILABLE,          true,  "dependency unavailable")                             \
    XX(DB,                   true,  "database error (transient)")                         \
    XX(DB_PERMANENT,         false, "database error (permanent)")                         \
    XX(DB_SCHEMA_NEWER,      false, "database schema is newer than this binary")          \
    XX(KAFKA,                true,  "kafka error (transient)")                            \
    XX(KAFKA_FATAL,          false, "kafka error (fatal)")                                \
    XX(OPA_UNAVAILABLE,      true,  "policy engine unreachable")                          \
    XX(OPA_BAD_RESPONSE,     true,  "policy engine answered garbage")                     \
    XX(POLICY_DENIED,        false, "denied by policy")                                   \
    XX(SLUG_TAKEN,           false, "slug is owned by another tenant")                    \
    XX(ISOLATION_VIOLATION,  false, "isolation guard failed")                             \
    XX(DECODE_FRAMING,       false, "record framing not recognised")                      \
    XX(DECODE_FINGERPRINT,   false, "unknown schema fingerprint")                         \
    XX(DECODE_SCHEMA_ID,     false, "unknown schema id")                                  \
    XX(DECODE_TOO_LARGE,     false, "record or field too large")                          \
    XX(DECODE_AVRO,          false, "avro decoding failed")                               \
    XX(VALIDATION,           false, "request failed validation")                          \
    XX(AUTH,                 false, "authentication failed")                              \
    XX(NOT_FOUND,            false, "not found")                                          \
    XX(CONFLICT,             false, "conflict")                                           \
    XX(IDEMPOTENCY_MISMATCH, false, "idempotency key reused with another body")           \
    XX(CRYPTO,               false, "signature or hash failure")                          \
    XX(VERIFY,               false, "verification failed")                                \
    XX(RETRIES_EXHAUSTED,    false, "retries exhausted")                                  \
    XX(SHUTDOWN,             true,  "shutting down")

typedef enum tp_err {
    TP_OK = 0,
#define TP_ERR_ENUM(name, transient, msg) TP_E##name,
    TP_ERR_FIRST_ = -1000,
    TP_ERRNO_MAP(TP_ERR_ENUM)
#undef TP_ERR_ENUM
    TP_ERR_LAST_
} tp_err_t;

/* Returns the symbolic name ("TP_ETIMEOUT") of an error code; static storage. */
const char *tp_err_name(int err);
/* Returns the human message of an error code; static storage. */
const char *tp_strerror(int err);
/* Returns true when retrying the failed operation may succeed. */
bool tp_err_is_transient(int err);

#endif
