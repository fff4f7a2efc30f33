/* jsonl.c: one receipt per JSON line, the text form used by `tpctl receipts tail` (output) and
 * `tpctl receipts verify --file` (input). The envelope is authoritative; "statement" is a decoded
 * copy of its payload for people and is ignored on input. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "receipts/receipts_int.h"
#include "tp/error.h"
#include "tp/log.h"
#include "tp/receipts.h"

#define MAX_LINE (8 * 1024 * 1024)
#define MAX_SIGS 16

struct tp_receipt_doc {
    json_t *root; /* owns the strings the view points into */
    unsigned char *payload;
    unsigned char *sig_bufs[MAX_SIGS];
    tp_receipt_sig sigs[MAX_SIGS];
    tp_receipt_view view;
};

int tp_receipt_to_jsonl(const tp_receipt_view *r, char **out) {
    json_t *obj = NULL, *sigs = NULL, *statement;
    char *payload_b64 = NULL;
    int rc = TP_EINVAL;
    if (!r || !out || (!r->payload && r->payload_len) || (!r->sigs && r->n_sigs))
        return TP_EINVAL;
    *out = NULL;
    payload_b64 = tp_receipts__b64_encode(r->payload ? r->payload : (const unsigned char *)"",
                                          r->payload_len);
    sigs = json_array();
    if (!payload_b64 || !sigs) {
        rc = TP_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < r->n_sigs; i++) {
        char *sig_b64 = tp_receipts__b64_encode(r->sigs[i].sig ? r->sigs[i].sig
                                                               : (const unsigned char *)"",
                                                r->sigs[i].sig ? r->sigs[i].sig_len : 0);
        json_t *one;
        if (!sig_b64) {
            rc = TP_ENOMEM;
            goto out;
        }
        one = json_pack("{s:s?, s:s}", "keyid", r->sigs[i].keyid, "sig", sig_b64);
        free(sig_b64);
        if (!one || json_array_append_new(sigs, one) != 0)
            goto out;
    }
    obj = json_pack("{s:s?, s:s?, s:s?, s:s?, s:I, s:s?, s:s?, s:I, s:{s:s?, s:s, s:O}}",
                    "receiptId", r->receipt_id, "actionType", r->action_type, "tenantId",
                    r->tenant_id, "requestId", r->request_id, "sequence", (json_int_t)r->sequence,
                    "previousHash", r->prev_hash_hex, "hash", r->hash_hex, "timestampMs",
                    (json_int_t)r->timestamp_ms, "envelope", "payloadType", r->payload_type,
                    "payload", payload_b64, "signatures", sigs);
    if (!obj)
        goto out;
    statement = r->payload_len ? json_loadb((const char *)r->payload, r->payload_len, 0, NULL) : NULL;
    if (statement && json_object_set_new(obj, "statement", statement) != 0) {
        rc = TP_ENOMEM;
        goto out;
    }
    *out = json_dumps(obj, JSON_COMPACT | JSON_SORT_KEYS);
    rc = *out ? 0 : TP_ENOMEM;
out:
    json_decref(obj);
    json_decref(sigs);
    free(payload_b64);
    return rc;
}

static int doc_err(char *errstr, size_t errstr_size, const char *fmt, ...) TP_PRINTF(3, 4);
static int doc_err(char *errstr, size_t errstr_size, const char *fmt, ...) {
    va_list ap;
    if (errstr && errstr_size) {
        va_start(ap, fmt);
        vsnprintf(errstr, errstr_size, fmt, ap);
        va_end(ap);
    }
    return TP_EINVAL;
}

/* Returns the string at key, or NULL when absent or null; *bad set when present but not a string. */
static const char *opt_str(const json_t *obj, const char *key, int *bad) {
    json_t *x = json_object_get(obj, key);
    if (!x || json_is_null(x))
        return NULL;
    if (!json_is_string(x)) {
        *bad = 1;
        return NULL;
    }
    return json_string_value(x);
}

int tp_receipt_doc_parse(const char *line, size_t len, tp_receipt_doc **out, char *errstr,
                         size_t errstr_size) {
    tp_receipt_doc *d;
    json_error_t jerr;
    json_t *env, *sigs, *x;
    const char *s;
    size_t n = 0, i;
    int bad = 0, rc;
    if (!line || !out)
        return TP_EINVAL;
    *out = NULL;
    if (len > MAX_LINE)
        return doc_err(errstr, errstr_size, "line longer than %d bytes", MAX_LINE);
    d = calloc(1, sizeof(*d));
    if (!d)
        return TP_ENOMEM;
    d->root = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!d->root || !json_is_object(d->root)) {
        rc = doc_err(errstr, errstr_size, "not a JSON object (%s)", d->root ? "" : jerr.text);
        goto out_fail;
    }
    d->view.receipt_id = opt_str(d->root, "receiptId", &bad);
    d->view.action_type = opt_str(d->root, "actionType", &bad);
    d->view.tenant_id = opt_str(d->root, "tenantId", &bad);
    d->view.request_id = opt_str(d->root, "requestId", &bad);
    d->view.prev_hash_hex = opt_str(d->root, "previousHash", &bad);
    d->view.hash_hex = opt_str(d->root, "hash", &bad);
    if (bad || !d->view.receipt_id || !d->view.action_type || !d->view.tenant_id ||
        !d->view.request_id || !d->view.prev_hash_hex || !d->view.hash_hex) {
        rc = doc_err(errstr, errstr_size, "receiptId, actionType, tenantId, requestId, previousHash"
                                          " and hash must be strings");
        goto out_fail;
    }
    x = json_object_get(d->root, "sequence");
    if (!json_is_integer(x)) {
        rc = doc_err(errstr, errstr_size, "\"sequence\" missing or not an integer");
        goto out_fail;
    }
    d->view.sequence = json_integer_value(x);
    x = json_object_get(d->root, "timestampMs");
    if (!json_is_integer(x)) {
        rc = doc_err(errstr, errstr_size, "\"timestampMs\" missing or not an integer");
        goto out_fail;
    }
    d->view.timestamp_ms = json_integer_value(x);
    env = json_object_get(d->root, "envelope");
    if (!json_is_object(env)) {
        rc = doc_err(errstr, errstr_size, "\"envelope\" missing or not an object");
        goto out_fail;
    }
    d->view.payload_type = opt_str(env, "payloadType", &bad);
    s = opt_str(env, "payload", &bad);
    if (bad || !s) {
        rc = doc_err(errstr, errstr_size, "envelope payload/payloadType missing or not strings");
        goto out_fail;
    }
    rc = tp_receipts__b64_decode(s, json_string_length(json_object_get(env, "payload")), &d->payload,
                                 &d->view.payload_len);
    if (rc != 0) {
        if (rc == TP_EINVAL)
            doc_err(errstr, errstr_size, "envelope payload is not standard base64");
        goto out_fail;
    }
    d->view.payload = d->payload;
    sigs = json_object_get(env, "signatures");
    if (!json_is_array(sigs) || json_array_size(sigs) > MAX_SIGS) {
        rc = doc_err(errstr, errstr_size, "envelope signatures missing or more than %d", MAX_SIGS);
        goto out_fail;
    }
    json_array_foreach(sigs, i, x) {
        const char *keyid = opt_str(x, "keyid", &bad), *sig = opt_str(x, "sig", &bad);
        if (!json_is_object(x) || bad || !sig) {
            rc = doc_err(errstr, errstr_size, "signature %zu is not {keyid, sig}", i);
            goto out_fail;
        }
        rc = tp_receipts__b64_decode(sig, json_string_length(json_object_get(x, "sig")),
                                     &d->sig_bufs[n], &d->sigs[n].sig_len);
        if (rc != 0) {
            if (rc == TP_EINVAL)
                doc_err(errstr, errstr_size, "signature %zu is not standard base64", i);
            goto out_fail;
        }
        d->sigs[n].sig = d->sig_bufs[n];
        d->sigs[n].keyid = keyid;
        n++;
    }
    d->view.sigs = d->sigs;
    d->view.n_sigs = n;
    *out = d;
    return 0;
out_fail:
    tp_receipt_doc_free(d);
    return rc;
}

const tp_receipt_view *tp_receipt_doc_view(const tp_receipt_doc *d) {
    return d ? &d->view : NULL;
}

void tp_receipt_doc_free(tp_receipt_doc *d) {
    if (!d)
        return;
    for (size_t i = 0; i < MAX_SIGS; i++)
        free(d->sig_bufs[i]);
    free(d->payload);
    json_decref(d->root);
    free(d);
}
