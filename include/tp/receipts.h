/* receipts.h: provenance receipts: in-toto Statement v1 payload, DSSE envelope signed with
 * Ed25519 (libsodium), per-tenant hash chain. Contract between worker/receipts (implements) and
 * worker/stages (seals receipts into the outbox) and tpctl (verifies). */
#ifndef TP_RECEIPTS_H
#define TP_RECEIPTS_H

#include <stddef.h>
#include <stdint.h>

struct json_t; /* jansson's; only its callers need the header */

#define TP_RECEIPT_PAYLOAD_TYPE "application/vnd.in-toto+json"
#define TP_HASH_HEX_LEN 64
#define TP_KEYID_MAX 64
#define TP_RECEIPT_STATEMENT_TYPE "https://in-toto.io/Statement/v1"
#define TP_RECEIPT_PREDICATE_TYPE "https://tenant-provisioner.dev/provenance/v1"
#define TP_RECEIPT_ZERO_HASH "0000000000000000000000000000000000000000000000000000000000000000"

typedef struct tp_signer tp_signer;

/* Loads an Ed25519 private key file written by tp_receipt_keygen. Returns 0 or TP_EIO/TP_ECRYPTO. */
int tp_signer_load(const char *path, tp_signer **out);
void tp_signer_free(tp_signer *s);
const char *tp_signer_keyid(const tp_signer *s);
/* Signs msg with the signer's Ed25519 key (checkpoints of the transparency log use it too).
 * Returns 0 or TP_ECRYPTO. */
int tp_signer_sign(const tp_signer *s, const void *msg, size_t len, unsigned char sig[64]);
void tp_signer_public_key(const tp_signer *s, unsigned char pk[32]);

/* What one receipt asserts. Strings and action_data are borrowed. */
typedef struct tp_receipt_fields {
    const char *receipt_id;      /* "prov_<uuid>" */
    const char *action_type;     /* TENANT_PROVISIONED, TENANT_QUOTA_ASSIGNED, TENANT_ISOLATION_VERIFIED */
    const char *tenant_id;
    const char *tenant_slug;
    const char *request_id;
    const char *correlation_id;
    const char *actor_id;
    const char *actor_type;
    int64_t timestamp_ms;
    int64_t sequence;            /* per tenant, 1, 2, 3, ... */
    const char *prev_hash_hex;   /* 64 zeros for sequence 1 */
    const char *decision_id;
    const char *policy_revision;
    const struct json_t *action_data; /* the action's facts: a JSON object; NULL: {} (unchanged) */
} tp_receipt_fields;

/* A sealed receipt: owned buffers, release with tp_sealed_receipt_release. */
typedef struct tp_sealed_receipt {
    char *payload;                       /* the in-toto Statement JSON (the DSSE payload bytes) */
    size_t payload_len;
    char keyid[TP_KEYID_MAX + 1];
    unsigned char sig[64];
    char hash_hex[TP_HASH_HEX_LEN + 1];  /* SHA-256 of the PAE bytes */
    /* The DSSE envelope without its payload, as receipt_outbox.envelope stores it (the payload
     * column holds the bytes once): {"payloadType","signatures":[{keyid,sig}]}. */
    char *envelope_json;
} tp_sealed_receipt;

/* Builds the statement, signs PAE(payloadType, payload), hashes it. Returns 0 or TP_E*. */
int tp_receipt_seal(const tp_signer *s, const tp_receipt_fields *f, tp_sealed_receipt *out);
void tp_sealed_receipt_release(tp_sealed_receipt *r);

/* ---- keys ------------------------------------------------------------------------------------
 * Key id: "ed25519:" + the first 16 hex digits of SHA-256(public key).
 * Private key file (mode 0600): one line "<keyid> <base64(32-byte seed)>".
 * Public key file: one line "<keyid> <base64(32-byte public key)>".
 * Key set file: public key lines, one per key ('#' comments and blank lines allowed), so keys that
 * were rotated out still verify the receipts they signed. A line may end with a validity window,
 * "valid-from=<RFC 3339>" and/or "valid-until=<RFC 3339>" (written by `tpctl keygen` on
 * rotation): a receipt whose signed timestamp lies outside its key's window does not verify. */

/* Writes a new Ed25519 key pair: the private file atomically (temp + rename) with mode 0600,
 * replacing an existing one; then the public file. Returns 0, TP_EIO or TP_ECRYPTO. */
int tp_receipt_keygen(const char *priv_path, const char *pub_path);

/* Writes the signer's public key line "<keyid> <base64(pubkey)>" (no newline) into buf.
 * Returns 0 or TP_EINVAL when cap is too small. */
int tp_signer_public_line(const tp_signer *s, char *buf, size_t cap);

typedef struct tp_keyset tp_keyset;

/* Loads a key set file. Every line must parse and its key id must match its key; a bad line is an
 * error naming the line (errstr may be NULL). Returns 0, TP_EIO, TP_ECRYPTO or TP_ENOMEM. */
int tp_keyset_load(const char *path, tp_keyset **out, char *errstr, size_t errstr_size);
/* Parses key set text (same format as the file; untrusted). */
int tp_keyset_parse(const char *buf, size_t len, tp_keyset **out, char *errstr, size_t errstr_size);
void tp_keyset_free(tp_keyset *ks);
size_t tp_keyset_count(const tp_keyset *ks);
/* The i-th key (i < tp_keyset_count): its id and 32-byte public key, borrowed. */
void tp_keyset_get(const tp_keyset *ks, size_t i, const char **keyid, const unsigned char **pk);
/* The validity window of keyid in milliseconds since the epoch (INT64_MIN / INT64_MAX when open).
 * Returns 0 or TP_ENOT_FOUND. */
int tp_keyset_window(const tp_keyset *ks, const char *keyid, int64_t *from_ms, int64_t *until_ms);
/* Returns the 32-byte public key of keyid (borrowed, lives as long as ks), or NULL. */
const unsigned char *tp_keyset_lookup(const tp_keyset *ks, const char *keyid);
/* Derives the key id of a 32-byte public key into out (at least TP_KEYID_MAX + 1 bytes). */
void tp_receipt_keyid(const unsigned char pk[32], char *out);

/* ---- DSSE ------------------------------------------------------------------------------------ */

/* PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body (lengths in ASCII decimal
 * bytes). Returns 0 or TP_ENOMEM; *out is a new buffer the caller frees (not NUL-terminated,
 * though one NUL is appended after out_len bytes for convenience). */
int tp_dsse_pae(const char *type, const unsigned char *body, size_t body_len, unsigned char **out,
                size_t *out_len);

/* SHA-256 of buf as 64 lowercase hex digits + NUL. */
void tp_sha256_hex(const void *buf, size_t len, char out[TP_HASH_HEX_LEN + 1]);

/* Formats milliseconds since the epoch as RFC 3339 UTC with millis ("2024-01-02T03:04:05.678Z").
 * out needs 25 bytes. Returns 0 or TP_EINVAL. */
int tp_receipt_format_time(int64_t ms, char *out, size_t cap);
/* Parses what tp_receipt_format_time writes (or the same without ".mmm"). 0 or TP_EINVAL. */
int tp_receipt_parse_time(const char *s, int64_t *ms);

/* ---- verification (pure; fed in topic order) ------------------------------------------------- */

typedef struct tp_receipt_sig {
    const char *keyid;
    const unsigned char *sig;
    size_t sig_len;
} tp_receipt_sig;

/* One published receipt as a consumer sees it: the record's outer fields and its DSSE envelope.
 * Everything is borrowed. All strings are required except that timestamp_ms may be 0. */
typedef struct tp_receipt_view {
    const char *receipt_id;
    const char *action_type;
    const char *tenant_id;
    const char *request_id;
    int64_t sequence;
    const char *prev_hash_hex;
    const char *hash_hex;
    int64_t timestamp_ms;        /* 0: not checked against the predicate */
    const char *payload_type;
    const unsigned char *payload;
    size_t payload_len;
    const tp_receipt_sig *sigs;
    size_t n_sigs;
} tp_receipt_view;

typedef struct tp_verify_summary {
    size_t tenants;      /* distinct tenant ids seen */
    size_t receipts;     /* records fed, duplicates included */
    size_t duplicates;   /* records whose receipt id was already seen with the same hash */
    size_t errors;       /* records with at least one break */
    char first_error[512];  /* "" when errors == 0; names the receipt id and what broke */
} tp_verify_summary;

typedef struct tp_verifier tp_verifier;

/* Called for every broken record (text names the receipt id); arg is the caller's. */
typedef void (*tp_verify_error_fn)(void *arg, const char *receipt_id, const char *text);

/* Creates a verifier; ks is borrowed and must outlive it. Returns 0 or TP_ENOMEM. */
int tp_verifier_new(const tp_keyset *ks, tp_verifier **out);
void tp_verifier_free(tp_verifier *v);
void tp_verifier_set_error_cb(tp_verifier *v, tp_verify_error_fn fn, void *arg);
/* Checks one record (untrusted) against the key set, itself and the tenant's chain so far.
 * Returns 0 (valid or duplicate), TP_EVERIFY (a break, recorded in the summary) or TP_ENOMEM. */
int tp_verifier_feed(tp_verifier *v, const tp_receipt_view *r);
void tp_verifier_summary(const tp_verifier *v, tp_verify_summary *out);

/* ---- JSON lines (tpctl receipts tail / verify --file) ----------------------------------------
 * One object per line: {"receiptId","actionType","tenantId","requestId","sequence","previousHash",
 * "hash","timestampMs","envelope":{"payloadType","payload"(base64),"signatures":[{"keyid","sig"}]},
 * "statement": <the decoded payload, informative only>}. */

/* Returns a new NUL-terminated line (no trailing newline) in *out; the caller frees it.
 * Returns 0, TP_EINVAL or TP_ENOMEM. */
int tp_receipt_to_jsonl(const tp_receipt_view *r, char **out);

/* A parsed JSON line owning its buffers. */
typedef struct tp_receipt_doc tp_receipt_doc;
/* Parses one line (untrusted). Returns 0, TP_EINVAL (errstr filled, may be NULL) or TP_ENOMEM. */
int tp_receipt_doc_parse(const char *line, size_t len, tp_receipt_doc **out, char *errstr,
                         size_t errstr_size);
const tp_receipt_view *tp_receipt_doc_view(const tp_receipt_doc *d);
void tp_receipt_doc_free(tp_receipt_doc *d);

#endif
