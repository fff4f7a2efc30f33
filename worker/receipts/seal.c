/* seal.c: builds a receipt's in-toto Statement v1 (deterministic JSON), signs its DSSE PAE with
 * Ed25519 and computes the chain hash (SHA-256 of the PAE bytes). */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "receipts/receipts_int.h"
#include "tp/error.h"
#include "tp/json_text.h"
#include "tp/receipts.h"

static int is_hash_hex(const char *s) {
    if (!s || strlen(s) != TP_HASH_HEX_LEN)
        return 0;
    for (; *s; s++)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
            return 0;
    return 1;
}

static json_t *subject(const char *kind, const char *id) {
    char name[512], digest[TP_HASH_HEX_LEN + 1];
    int n = snprintf(name, sizeof(name), "%s/%s", kind, id);
    if (n < 0 || (size_t)n >= sizeof(name))
        return NULL;
    tp_sha256_hex(id, strlen(id), digest);
    return json_pack("{s:s, s:{s:s}}", "name", name, "digest", "sha256", digest);
}

/* Builds the statement; returns a new reference or NULL (bad input or out of memory). */
static json_t *build_statement(const tp_receipt_fields *f) {
    char ts[32];
    json_t *data, *subjects, *predicate;
    if (tp_receipt_format_time(f->timestamp_ms, ts, sizeof(ts)) != 0)
        return NULL;
    if (f->action_data) {
        /* Shared, not copied: the statement only holds a reference while it is dumped. */
        if (!json_is_object(f->action_data))
            return NULL;
        data = json_incref((json_t *)f->action_data);
    } else {
        data = json_object();
        if (!data)
            return NULL;
    }
    subjects = json_pack("[o?, o?]", subject("tenant", f->tenant_id), subject("request", f->request_id));
    if (!subjects || json_array_size(subjects) != 2 || json_is_null(json_array_get(subjects, 0)) ||
        json_is_null(json_array_get(subjects, 1))) {
        json_decref(subjects);
        json_decref(data);
        return NULL;
    }
    /* "o" steals data even when json_pack fails. */
    predicate = json_pack("{s:s, s:s, s:s, s:s?, s:s, s:s?, s:{s:s?, s:s?}, s:s, s:I, s:s,"
                          " s:{s:s?, s:s?}, s:o}",
                          "actionType", f->action_type, "receiptId", f->receipt_id, "tenantId",
                          f->tenant_id, "tenantSlug", f->tenant_slug, "requestId", f->request_id,
                          "correlationId", f->correlation_id, "actor", "id", f->actor_id, "type",
                          f->actor_type, "timestamp", ts, "sequence", (json_int_t)f->sequence,
                          "previousHash", f->prev_hash_hex, "policy", "decisionId", f->decision_id,
                          "revision", f->policy_revision, "data", data);
    if (!predicate) {
        json_decref(subjects);
        return NULL;
    }
    return json_pack("{s:s, s:o, s:s, s:o}", "_type", TP_RECEIPT_STATEMENT_TYPE, "subject", subjects,
                     "predicateType", TP_RECEIPT_PREDICATE_TYPE, "predicate", predicate);
}

int tp_receipt_seal(const tp_signer *s, const tp_receipt_fields *f, tp_sealed_receipt *out) {
    json_t *statement = NULL, *env = NULL;
    unsigned char *pae = NULL;
    size_t pae_len = 0;
    char *sig_b64 = NULL;
    int rc;
    if (!s || !f || !out)
        return TP_EINVAL;
    memset(out, 0, sizeof(*out));
    if (!f->receipt_id || !f->action_type || !f->tenant_id || !f->request_id || f->sequence < 1 ||
        !is_hash_hex(f->prev_hash_hex) ||
        (f->sequence == 1 && strcmp(f->prev_hash_hex, TP_RECEIPT_ZERO_HASH) != 0))
        return TP_EINVAL;
    if (tp_receipts__init() != 0)
        return TP_ECRYPTO;

    statement = build_statement(f);
    if (!statement) {
        rc = TP_EINVAL;
        goto out_fail;
    }
    /* The very bytes json_dumps(JSON_COMPACT | JSON_SORT_KEYS) writes: stored receipts verify. */
    out->payload = tp_json_text(statement, TP_JSON_SORT_KEYS, &out->payload_len);
    if (!out->payload) {
        rc = TP_ENOMEM;
        goto out_fail;
    }

    rc = tp_dsse_pae(TP_RECEIPT_PAYLOAD_TYPE, (const unsigned char *)out->payload, out->payload_len,
                     &pae, &pae_len);
    if (rc != 0)
        goto out_fail;
    rc = tp_receipts__sign(s, pae, pae_len, out->sig);
    if (rc != 0)
        goto out_fail;
    tp_sha256_hex(pae, pae_len, out->hash_hex);
    snprintf(out->keyid, sizeof(out->keyid), "%s", tp_signer_keyid(s));

    /* The stored envelope leaves its payload out: the payload travels beside it, once. */
    sig_b64 = tp_receipts__b64_encode(out->sig, sizeof(out->sig));
    if (!sig_b64) {
        rc = TP_ENOMEM;
        goto out_fail;
    }
    env = json_pack("{s:s, s:[{s:s, s:s}]}", "payloadType", TP_RECEIPT_PAYLOAD_TYPE, "signatures",
                    "keyid", out->keyid, "sig", sig_b64);
    if (!env) {
        rc = TP_ENOMEM;
        goto out_fail;
    }
    out->envelope_json = tp_json_text(env, TP_JSON_SORT_KEYS, NULL);
    if (!out->envelope_json) {
        rc = TP_ENOMEM;
        goto out_fail;
    }
    rc = 0;
    goto out_free;
out_fail:
    tp_sealed_receipt_release(out);
out_free:
    json_decref(env);
    json_decref(statement);
    free(pae);
    free(sig_b64);
    return rc;
}

void tp_sealed_receipt_release(tp_sealed_receipt *r) {
    if (!r)
        return;
    free(r->payload);
    free(r->envelope_json);
    memset(r, 0, sizeof(*r));
}
