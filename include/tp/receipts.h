/* receipts.h: provenance receipts: in-toto Statement v1 payload, DSSE envelope signed with
 * Ed25519 (libsodium), per-tenant hash chain. Contract between worker/receipts (implements) and
 * worker/stages (seals receipts into the outbox) and tpctl (verifies). */
#ifndef TP_RECEIPTS_H
#define TP_RECEIPTS_H

#include <stddef.h>
#include <stdint.h>

#define TP_RECEIPT_PAYLOAD_TYPE "application/vnd.in-toto+json"
#define TP_HASH_HEX_LEN 64
#define TP_KEYID_MAX 64

typedef struct tp_signer tp_signer;

/* Loads an Ed25519 private key file written by tp_receipt_keygen. Returns 0 or TP_EIO/TP_ECRYPTO. */
int tp_signer_load(const char *path, tp_signer **out);
void tp_signer_free(tp_signer *s);
const char *tp_signer_keyid(const tp_signer *s);

/* What one receipt asserts. Strings are borrowed; action_data_json is a JSON object text. */
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
    const char *action_data_json;
} tp_receipt_fields;

/* A sealed receipt: owned buffers, release with tp_sealed_receipt_release. */
typedef struct tp_sealed_receipt {
    char *payload;                       /* the in-toto Statement JSON (the DSSE payload bytes) */
    size_t payload_len;
    char keyid[TP_KEYID_MAX + 1];
    unsigned char sig[64];
    char hash_hex[TP_HASH_HEX_LEN + 1];  /* SHA-256 of the PAE bytes */
    char *envelope_json;                 /* {"payloadType","payload"(base64),"signatures":[{keyid,sig}]} */
} tp_sealed_receipt;

/* Builds the statement, signs PAE(payloadType, payload), hashes it. Returns 0 or TP_E*. */
int tp_receipt_seal(const tp_signer *s, const tp_receipt_fields *f, tp_sealed_receipt *out);
void tp_sealed_receipt_release(tp_sealed_receipt *r);

#endif
