/* verify.c: offline receipt verification fed in topic order: Ed25519 signature against the key
 * set, DSSE payload type, chain hash, statement/outer field agreement, per-tenant chain continuity
 * and de-duplication of re-published receipt ids. Pure: no Kafka, no clock, no globals. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <sodium.h>

#include "receipts/receipts_int.h"
#include "tp/error.h"
#include "tp/log.h"
#include "tp/receipts.h"

/* ---- a small open-addressing map: string -> (hash hex, sequence) ----------------------------- */

typedef struct slot {
    char *key;
    int64_t seq;
    char hash[TP_HASH_HEX_LEN + 1];
} slot;

typedef struct strmap {
    slot *slots;
    size_t cap, n; /* cap is a power of two */
} strmap;

static uint64_t fnv1a(const char *s) {
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

static slot *map_find(const strmap *m, const char *key) {
    size_t i;
    if (m->cap == 0)
        return NULL;
    for (i = fnv1a(key) & (m->cap - 1); m->slots[i].key; i = (i + 1) & (m->cap - 1))
        if (strcmp(m->slots[i].key, key) == 0)
            return &m->slots[i];
    return NULL;
}

static int map_grow(strmap *m) {
    size_t ncap = m->cap ? m->cap * 2 : 64;
    slot *ns = calloc(ncap, sizeof(*ns));
    if (!ns)
        return TP_ENOMEM;
    for (size_t j = 0; j < m->cap; j++) {
        size_t i;
        if (!m->slots[j].key)
            continue;
        for (i = fnv1a(m->slots[j].key) & (ncap - 1); ns[i].key; i = (i + 1) & (ncap - 1))
            ;
        ns[i] = m->slots[j];
    }
    free(m->slots);
    m->slots = ns;
    m->cap = ncap;
    return 0;
}

/* Returns the slot of key, inserting it (with an empty value) when absent; NULL on out of memory. */
static slot *map_upsert(strmap *m, const char *key) {
    slot *s = map_find(m, key);
    size_t i;
    if (s)
        return s;
    if ((m->n + 1) * 4 > m->cap * 3 && map_grow(m) != 0)
        return NULL;
    for (i = fnv1a(key) & (m->cap - 1); m->slots[i].key; i = (i + 1) & (m->cap - 1))
        ;
    m->slots[i].key = strdup(key);
    if (!m->slots[i].key)
        return NULL;
    m->slots[i].seq = 0;
    m->slots[i].hash[0] = '\0';
    m->n++;
    return &m->slots[i];
}

static void map_release(strmap *m) {
    for (size_t i = 0; i < m->cap; i++)
        free(m->slots[i].key);
    free(m->slots);
    memset(m, 0, sizeof(*m));
}

/* ---- the verifier ---------------------------------------------------------------------------- */

struct tp_verifier {
    const tp_keyset *ks;
    strmap tenants; /* tenant id -> last sequence and hash */
    strmap seen;    /* receipt id -> hash */
    tp_verify_summary sum;
    tp_verify_error_fn on_error;
    void *on_error_arg;
};

int tp_verifier_new(const tp_keyset *ks, tp_verifier **out) {
    tp_verifier *v;
    if (!ks || !out)
        return TP_EINVAL;
    if (tp_receipts__init() != 0)
        return TP_ECRYPTO;
    v = calloc(1, sizeof(*v));
    if (!v)
        return TP_ENOMEM;
    v->ks = ks;
    *out = v;
    return 0;
}

void tp_verifier_free(tp_verifier *v) {
    if (!v)
        return;
    map_release(&v->tenants);
    map_release(&v->seen);
    free(v);
}

void tp_verifier_set_error_cb(tp_verifier *v, tp_verify_error_fn fn, void *arg) {
    v->on_error = fn;
    v->on_error_arg = arg;
}

void tp_verifier_summary(const tp_verifier *v, tp_verify_summary *out) {
    *out = v->sum;
    out->tenants = v->tenants.n;
}

static int is_hash_hex(const char *s) {
    if (!s || strlen(s) != TP_HASH_HEX_LEN)
        return 0;
    for (; *s; s++)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
            return 0;
    return 1;
}

/* Records one break; returns TP_EVERIFY. */
static int fail(tp_verifier *v, const tp_receipt_view *r, const char *fmt, ...) TP_PRINTF(3, 4);
static int fail(tp_verifier *v, const tp_receipt_view *r, const char *fmt, ...) {
    char what[384], text[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    snprintf(text, sizeof(text), "receipt %.100s (tenant %.100s, sequence %" PRId64 "): %.250s",
             r->receipt_id ? r->receipt_id : "(no id)", r->tenant_id ? r->tenant_id : "(none)",
             r->sequence, what);
    if (v->sum.errors == 0)
        snprintf(v->sum.first_error, sizeof(v->sum.first_error), "%s", text);
    v->sum.errors++;
    if (v->on_error)
        v->on_error(v->on_error_arg, r->receipt_id ? r->receipt_id : "", text);
    return TP_EVERIFY;
}

/* Checks the signatures: at least one by a key of the key set must verify; *signer gets that
 * key's id. */
static int check_signatures(tp_verifier *v, const tp_receipt_view *r, const unsigned char *pae,
                            size_t pae_len, const char **signer) {
    const char *unknown = NULL, *bad = NULL;
    if (r->n_sigs == 0 || !r->sigs)
        return fail(v, r, "envelope carries no signature");
    for (size_t i = 0; i < r->n_sigs; i++) {
        const tp_receipt_sig *sg = &r->sigs[i];
        const unsigned char *pk = tp_keyset_lookup(v->ks, sg->keyid);
        if (!pk) {
            if (!unknown)
                unknown = sg->keyid ? sg->keyid : "(none)";
            continue;
        }
        if (sg->sig && sg->sig_len == crypto_sign_BYTES &&
            crypto_sign_verify_detached(sg->sig, pae, pae_len, pk) == 0) {
            *signer = sg->keyid;
            return 0;
        }
        if (!bad)
            bad = sg->keyid;
    }
    if (bad)
        return fail(v, r, "signature by key %.64s does not verify", bad);
    return fail(v, r, "signed by unknown key id %.64s (not in the key set)", unknown);
}

static int str_field_eq(const json_t *obj, const char *key, const char *want) {
    const char *got = json_string_value(json_object_get(obj, key));
    return got && want && strcmp(got, want) == 0;
}

/* The signing key must have been valid when the statement says it was signed. */
static int check_window(tp_verifier *v, const tp_receipt_view *r, const json_t *pred, const char *signer) {
    const char *ts = json_string_value(json_object_get(pred, "timestamp"));
    int64_t at = 0, from = INT64_MIN, until = INT64_MAX;
    char f[32] = "-", u[32] = "-";
    if (!ts || tp_receipt_parse_time(ts, &at) != 0)
        return fail(v, r, "statement timestamp is missing or not RFC 3339");
    if (tp_keyset_window(v->ks, signer, &from, &until) != 0 || (at >= from && at <= until))
        return 0;
    if (from != INT64_MIN)
        tp_receipt_format_time(from, f, sizeof(f));
    if (until != INT64_MAX)
        tp_receipt_format_time(until, u, sizeof(u));
    return fail(v, r, "signed by key %.64s at %s, outside its validity window [%s, %s]", signer, ts, f, u);
}

/* Checks that the signed statement asserts what the record's outer fields claim. */
static int check_statement(tp_verifier *v, const tp_receipt_view *r, const char *signer) {
    json_error_t jerr;
    json_t *st, *pred, *subj, *seq;
    char digest[TP_HASH_HEX_LEN + 1], name[512];
    int rc = 0, found_tenant = 0;
    size_t i;
    json_t *it;

    st = json_loadb((const char *)r->payload, r->payload_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!st)
        return fail(v, r, "payload is not JSON (%s)", jerr.text);
    pred = json_object_get(st, "predicate");
    if (!json_is_object(st) || !str_field_eq(st, "_type", TP_RECEIPT_STATEMENT_TYPE) ||
        !str_field_eq(st, "predicateType", TP_RECEIPT_PREDICATE_TYPE) || !json_is_object(pred)) {
        rc = fail(v, r, "payload is not an in-toto Statement v1 with predicate type %s",
                  TP_RECEIPT_PREDICATE_TYPE);
        goto out;
    }
    if ((rc = check_window(v, r, pred, signer)) != 0)
        goto out;
    if (!str_field_eq(pred, "receiptId", r->receipt_id)) {
        rc = fail(v, r, "predicate receiptId differs from the record's");
        goto out;
    }
    if (!str_field_eq(pred, "actionType", r->action_type)) {
        rc = fail(v, r, "predicate actionType differs from the record's (%.40s)",
                  r->action_type ? r->action_type : "(none)");
        goto out;
    }
    if (!str_field_eq(pred, "tenantId", r->tenant_id)) {
        rc = fail(v, r, "predicate tenantId differs from the record's");
        goto out;
    }
    if (!str_field_eq(pred, "requestId", r->request_id)) {
        rc = fail(v, r, "predicate requestId differs from the record's");
        goto out;
    }
    seq = json_object_get(pred, "sequence");
    if (!json_is_integer(seq) || json_integer_value(seq) != r->sequence) {
        rc = fail(v, r, "predicate sequence differs from the record's");
        goto out;
    }
    if (!str_field_eq(pred, "previousHash", r->prev_hash_hex)) {
        rc = fail(v, r, "predicate previousHash differs from the record's");
        goto out;
    }
    if (r->timestamp_ms) {
        char ts[32];
        if (tp_receipt_format_time(r->timestamp_ms, ts, sizeof(ts)) != 0 ||
            !str_field_eq(pred, "timestamp", ts)) {
            rc = fail(v, r, "predicate timestamp differs from the record's");
            goto out;
        }
    }
    /* The tenant subject must name this tenant with its digest. */
    snprintf(name, sizeof(name), "tenant/%s", r->tenant_id);
    tp_sha256_hex(r->tenant_id, strlen(r->tenant_id), digest);
    subj = json_object_get(st, "subject");
    json_array_foreach(subj, i, it) {
        if (str_field_eq(it, "name", name) &&
            str_field_eq(json_object_get(it, "digest"), "sha256", digest))
            found_tenant = 1;
    }
    if (!found_tenant)
        rc = fail(v, r, "statement subject does not name tenant/%.100s with its sha256", r->tenant_id);
out:
    json_decref(st);
    return rc;
}

/* Checks everything a record proves about itself (no chain state). */
static int check_record(tp_verifier *v, const tp_receipt_view *r) {
    unsigned char *pae = NULL;
    size_t pae_len = 0;
    char hash[TP_HASH_HEX_LEN + 1];
    const char *signer = NULL;
    int rc;
    if (!r->receipt_id || !*r->receipt_id || !r->tenant_id || !*r->tenant_id || !r->action_type ||
        !r->request_id)
        return fail(v, r, "record lacks a receipt id, tenant id, request id or action type");
    if (!is_hash_hex(r->hash_hex) || !is_hash_hex(r->prev_hash_hex))
        return fail(v, r, "hash or previous hash is not 64 lowercase hex digits");
    if (!r->payload_type || strcmp(r->payload_type, TP_RECEIPT_PAYLOAD_TYPE) != 0)
        return fail(v, r, "payload type \"%.64s\" is not %s", r->payload_type ? r->payload_type : "",
                    TP_RECEIPT_PAYLOAD_TYPE);
    if (!r->payload && r->payload_len)
        return fail(v, r, "payload missing");
    rc = tp_dsse_pae(r->payload_type, r->payload, r->payload_len, &pae, &pae_len);
    if (rc != 0)
        return rc;
    rc = check_signatures(v, r, pae, pae_len, &signer);
    if (rc == 0) {
        tp_sha256_hex(pae, pae_len, hash);
        if (strcmp(hash, r->hash_hex) != 0)
            rc = fail(v, r, "hash %.16s... is not the SHA-256 of the signed envelope (%.16s...)",
                      r->hash_hex, hash);
    }
    free(pae);
    if (rc == 0)
        rc = check_statement(v, r, signer);
    return rc;
}

int tp_verifier_feed(tp_verifier *v, const tp_receipt_view *r) {
    slot *seen, *t;
    int rc;
    if (!v || !r)
        return TP_EINVAL;
    v->sum.receipts++;
    rc = check_record(v, r);
    if (rc == TP_ENOMEM)
        return rc;
    if (rc == 0) {
        seen = map_find(&v->seen, r->receipt_id);
        if (seen) {
            if (strcmp(seen->hash, r->hash_hex) == 0) {
                v->sum.duplicates++; /* a re-publish (e.g. after a crash): not a break */
                return 0;
            }
            return fail(v, r, "receipt id already seen with another hash (%.16s...)", seen->hash);
        }
        seen = map_upsert(&v->seen, r->receipt_id);
        if (!seen)
            return TP_ENOMEM;
        memcpy(seen->hash, r->hash_hex, sizeof(seen->hash));
    }
    if (!r->tenant_id || !*r->tenant_id)
        return rc;

    /* Chain continuity. After a break the chain resynchronises on this record's claims, so that one
     * removed or altered receipt is reported once rather than for every later receipt. */
    t = map_upsert(&v->tenants, r->tenant_id);
    if (!t)
        return TP_ENOMEM;
    if (rc == 0) {
        int64_t want_seq = t->seq + 1;
        const char *want_prev = t->seq == 0 ? TP_RECEIPT_ZERO_HASH : t->hash;
        if (r->sequence != want_seq)
            rc = fail(v, r, "sequence break: expected %" PRId64 " after %" PRId64
                            " (a receipt is missing, reordered or replayed)",
                      want_seq, t->seq);
        else if (strcmp(r->prev_hash_hex, want_prev) != 0)
            rc = fail(v, r, "chain break: previous hash %.16s... is not the hash of sequence %" PRId64
                            " (%.16s...)",
                      r->prev_hash_hex, t->seq, want_prev);
    }
    t->seq = r->sequence;
    if (is_hash_hex(r->hash_hex))
        memcpy(t->hash, r->hash_hex, sizeof(t->hash));
    else
        t->hash[0] = '\0';
    return rc;
}
