/* records.c: DeadLetter, ProvenanceReceipt and TreeCheckpoint encode/decode, and the load-time
 * self test that proves the schema files on disk match the C structs. */
#include "codec/codec_int.h"
#include "tp/error.h"

#include <stdlib.h>
#include <string.h>

static const tp_codec_cap dead_letter_caps[] = {
    {"reasonCode", TP_DLQ_REASON_CODE_MAX},   {"reasonMessage", TP_DLQ_REASON_MESSAGE_MAX},
    {"originTopic", TP_DLQ_TOPIC_MAX},        {"failedStage", TP_DLQ_STAGE_MAX},
    {"requestId", TP_REQUEST_ID_MAX},
};

static const tp_codec_cap receipt_caps[] = {
    {"receiptId", 255},
    {"actionType", 64},
    {"tenantId", 255},
    {"requestId", TP_REQUEST_ID_MAX},
    {"previousHash", 128},
    {"hash", 128},
    {"envelope.payloadType", 255},
    {"envelope.signatures", TP_RECEIPT_SIGNATURES_MAX},
    {"envelope.signatures[].keyid", 255},
    {"envelope.signatures[].sig", 1024},
};

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))
#define RECEIPT_STRING_MAX 4096

/* ---- DeadLetter ------------------------------------------------------------------------------------ */

static int fill_dead_letter(avro_value_t *v, const tp_dead_letter *dl) {
    int rc;
    if ((rc = tp_codec__set_bytes(v, "original", dl->original, dl->original_len)) ||
        (rc = tp_codec__set_string(v, "reasonCode", dl->reason_code, TP_DLQ_REASON_CODE_MAX)) ||
        (rc = tp_codec__set_string(v, "reasonMessage", dl->reason_message,
                                   TP_DLQ_REASON_MESSAGE_MAX)) ||
        (rc = tp_codec__set_string(v, "originTopic", dl->origin_topic, TP_DLQ_TOPIC_MAX)) ||
        (rc = tp_codec__set_int(v, "originPartition", dl->origin_partition)) ||
        (rc = tp_codec__set_long(v, "originOffset", dl->origin_offset)) ||
        (rc = tp_codec__set_opt_string(v, "failedStage", dl->failed_stage, TP_DLQ_STAGE_MAX)) ||
        (rc = tp_codec__set_opt_string(v, "requestId", dl->request_id, TP_REQUEST_ID_MAX)) ||
        (rc = tp_codec__set_long(v, "timestamp", dl->timestamp_ms)))
        return rc;
    if (dl->has_original_key && !dl->original_key && dl->original_key_len)
        return TP_EINVAL;
    return tp_codec__set_opt_bytes(v, "originalKey", dl->has_original_key, dl->original_key,
                                   dl->original_key_len);
}

int tp_codec_encode_dead_letter(tp_codec *codec, const tp_dead_letter *dl, unsigned char **out,
                                size_t *out_len) {
    avro_value_t v;
    int rc;
    if (!codec || !dl || !out || !out_len)
        return TP_EINVAL;
    if (avro_generic_value_new(codec->slots[TP_CODEC_SCHEMA_DEAD_LETTER].iface, &v))
        return TP_ENOMEM;
    rc = fill_dead_letter(&v, dl);
    if (rc == 0)
        rc = tp_codec__write_value(codec, TP_CODEC_SCHEMA_DEAD_LETTER, &v, out, out_len);
    avro_value_decref(&v);
    return rc;
}

/* Copies len bytes into a new buffer (one spare NUL byte so that an empty one is not NULL). */
static int dup_bytes(const void *p, size_t len, unsigned char **dst) {
    *dst = malloc(len + 1);
    if (!*dst)
        return TP_ENOMEM;
    if (len)
        memcpy(*dst, p, len);
    (*dst)[len] = 0;
    return 0;
}

static int extract_dead_letter(avro_value_t *v, tp_dead_letter *out) {
    avro_value_t f, b;
    const void *p;
    size_t len;
    bool present;
    int rc;

    if (tp_codec__field(v, "original", &f) || avro_value_get_bytes(&f, &p, &len))
        return TP_EDECODE_AVRO;
    if ((rc = dup_bytes(p, len, &out->original)))
        return rc;
    out->original_len = len;
    if ((rc = tp_codec__get_fixed_string(v, "reasonCode", out->reason_code,
                                         sizeof(out->reason_code))) ||
        (rc = tp_codec__get_fixed_string(v, "reasonMessage", out->reason_message,
                                         sizeof(out->reason_message))) ||
        (rc = tp_codec__get_fixed_string(v, "originTopic", out->origin_topic,
                                         sizeof(out->origin_topic))) ||
        (rc = tp_codec__get_int(v, "originPartition", &out->origin_partition)) ||
        (rc = tp_codec__get_long(v, "originOffset", &out->origin_offset)) ||
        (rc = tp_codec__get_opt_fixed_string(v, "failedStage", out->failed_stage,
                                             sizeof(out->failed_stage))) ||
        (rc = tp_codec__get_opt_fixed_string(v, "requestId", out->request_id,
                                             sizeof(out->request_id))) ||
        (rc = tp_codec__get_long(v, "timestamp", &out->timestamp_ms)) ||
        (rc = tp_codec__get_opt(v, "originalKey", &present, &b)))
        return rc;
    if (present) {
        if (avro_value_get_bytes(&b, &p, &len))
            return TP_EDECODE_AVRO;
        if ((rc = dup_bytes(p, len, &out->original_key)))
            return rc;
        out->original_key_len = len;
        out->has_original_key = true;
    }
    return 0;
}

int tp_codec_decode_dead_letter(tp_codec *codec, const unsigned char *buf, size_t len,
                                tp_dead_letter *out, char *errstr, size_t errstr_size) {
    avro_value_t v;
    int rc;

    if (errstr && errstr_size)
        errstr[0] = '\0';
    if (!codec || !out)
        return TP_EINVAL;
    memset(out, 0, sizeof(*out));
    rc = tp_codec__open(codec, TP_CODEC_SCHEMA_DEAD_LETTER, TP_CODEC_DEAD_LETTER_MAX,
                        dead_letter_caps, N_OF(dead_letter_caps), buf, len, &v, errstr,
                        errstr_size);
    if (rc)
        return rc;
    rc = extract_dead_letter(&v, out);
    avro_value_decref(&v);
    if (rc) {
        tp_dead_letter_release(out);
        tp_codec__fail(rc, errstr, errstr_size, "DeadLetter: %s", tp_strerror(rc));
    }
    return rc;
}

void tp_dead_letter_release(tp_dead_letter *dl) {
    if (!dl)
        return;
    free(dl->original);
    free(dl->original_key);
    memset(dl, 0, sizeof(*dl));
}

/* ---- ProvenanceReceipt ----------------------------------------------------------------------------- */

static int fill_receipt(avro_value_t *v, const tp_receipt_record *r) {
    avro_value_t env, sigs;
    int rc;
    if (r->n_signatures > TP_RECEIPT_SIGNATURES_MAX || (r->n_signatures && !r->signatures))
        return TP_EINVAL;
    if ((rc = tp_codec__set_string(v, "receiptId", r->receipt_id, RECEIPT_STRING_MAX)) ||
        (rc = tp_codec__set_string(v, "actionType", r->action_type, RECEIPT_STRING_MAX)) ||
        (rc = tp_codec__set_string(v, "tenantId", r->tenant_id, RECEIPT_STRING_MAX)) ||
        (rc = tp_codec__set_string(v, "requestId", r->request_id, RECEIPT_STRING_MAX)) ||
        (rc = tp_codec__set_long(v, "sequence", r->sequence)) ||
        (rc = tp_codec__set_string(v, "previousHash", r->previous_hash, RECEIPT_STRING_MAX)) ||
        (rc = tp_codec__set_string(v, "hash", r->hash, RECEIPT_STRING_MAX)) ||
        (rc = tp_codec__set_long(v, "timestamp", r->timestamp_ms)))
        return rc;
    if (tp_codec__field(v, "envelope", &env) || tp_codec__field(&env, "signatures", &sigs))
        return TP_EDECODE_AVRO;
    if ((rc = tp_codec__set_string(&env, "payloadType", r->payload_type, RECEIPT_STRING_MAX)) ||
        (rc = tp_codec__set_bytes(&env, "payload", r->payload, r->payload_len)))
        return rc;
    for (size_t i = 0; i < r->n_signatures; i++) {
        avro_value_t item;
        const tp_receipt_signature *s = &r->signatures[i];
        if (avro_value_append(&sigs, &item, NULL))
            return TP_EDECODE_AVRO;
        if ((rc = tp_codec__set_string(&item, "keyid", s->keyid, RECEIPT_STRING_MAX)) ||
            (rc = tp_codec__set_bytes(&item, "sig", s->sig, s->sig_len)))
            return rc;
    }
    return 0;
}

int tp_codec_encode_receipt(tp_codec *codec, const tp_receipt_record *r, unsigned char **out,
                            size_t *out_len) {
    avro_value_t v;
    int rc;
    if (!codec || !r || !out || !out_len)
        return TP_EINVAL;
    if (avro_generic_value_new(codec->slots[TP_CODEC_SCHEMA_RECEIPT].iface, &v))
        return TP_ENOMEM;
    rc = fill_receipt(&v, r);
    if (rc == 0)
        rc = tp_codec__write_value(codec, TP_CODEC_SCHEMA_RECEIPT, &v, out, out_len);
    avro_value_decref(&v);
    return rc;
}

static int dup_string(avro_value_t *rec, const char *name, char **dst) {
    const char *s;
    size_t len;
    int rc = tp_codec__get_string(rec, name, &s, &len);
    return rc ? rc : dup_bytes(s, len, (unsigned char **)dst);
}

static int extract_receipt(avro_value_t *v, tp_receipt_record *out) {
    avro_value_t env, sigs, f;
    const void *p;
    size_t len, n = 0;
    int rc;

    if ((rc = dup_string(v, "receiptId", &out->receipt_id)) ||
        (rc = dup_string(v, "actionType", &out->action_type)) ||
        (rc = dup_string(v, "tenantId", &out->tenant_id)) ||
        (rc = dup_string(v, "requestId", &out->request_id)) ||
        (rc = tp_codec__get_long(v, "sequence", &out->sequence)) ||
        (rc = dup_string(v, "previousHash", &out->previous_hash)) ||
        (rc = dup_string(v, "hash", &out->hash)) ||
        (rc = tp_codec__get_long(v, "timestamp", &out->timestamp_ms)))
        return rc;
    if (tp_codec__field(v, "envelope", &env) || tp_codec__field(&env, "signatures", &sigs) ||
        avro_value_get_size(&sigs, &n))
        return TP_EDECODE_AVRO;
    if ((rc = dup_string(&env, "payloadType", &out->payload_type)))
        return rc;
    if (tp_codec__field(&env, "payload", &f) || avro_value_get_bytes(&f, &p, &len))
        return TP_EDECODE_AVRO;
    if ((rc = dup_bytes(p, len, &out->payload)))
        return rc;
    out->payload_len = len;
    if (n > TP_RECEIPT_SIGNATURES_MAX)
        return TP_EDECODE_TOO_LARGE;
    if (n) {
        out->signatures = calloc(n, sizeof(*out->signatures));
        if (!out->signatures)
            return TP_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        avro_value_t item, sig;
        tp_receipt_signature *s = &out->signatures[i];
        out->n_signatures = i + 1; /* so that release frees what was copied */
        if (avro_value_get_by_index(&sigs, i, &item, NULL))
            return TP_EDECODE_AVRO;
        if ((rc = dup_string(&item, "keyid", &s->keyid)))
            return rc;
        if (tp_codec__field(&item, "sig", &sig) || avro_value_get_bytes(&sig, &p, &len))
            return TP_EDECODE_AVRO;
        if ((rc = dup_bytes(p, len, &s->sig)))
            return rc;
        s->sig_len = len;
    }
    return 0;
}

int tp_codec_decode_receipt(tp_codec *codec, const unsigned char *buf, size_t len,
                            tp_receipt_record *out, char *errstr, size_t errstr_size) {
    avro_value_t v;
    int rc;

    if (errstr && errstr_size)
        errstr[0] = '\0';
    if (!codec || !out)
        return TP_EINVAL;
    memset(out, 0, sizeof(*out));
    rc = tp_codec__open(codec, TP_CODEC_SCHEMA_RECEIPT, TP_CODEC_RECEIPT_MAX, receipt_caps,
                        N_OF(receipt_caps), buf, len, &v, errstr, errstr_size);
    if (rc)
        return rc;
    rc = extract_receipt(&v, out);
    avro_value_decref(&v);
    if (rc) {
        tp_receipt_record_release(out);
        tp_codec__fail(rc, errstr, errstr_size, "ProvenanceReceipt: %s", tp_strerror(rc));
    }
    return rc;
}

void tp_receipt_record_release(tp_receipt_record *r) {
    if (!r)
        return;
    free(r->receipt_id);
    free(r->action_type);
    free(r->tenant_id);
    free(r->request_id);
    free(r->previous_hash);
    free(r->hash);
    free(r->payload_type);
    free(r->payload);
    for (size_t i = 0; r->signatures && i < r->n_signatures; i++) {
        free(r->signatures[i].keyid);
        free(r->signatures[i].sig);
    }
    free(r->signatures);
    memset(r, 0, sizeof(*r));
}

/* ---- load-time self test ------------------------------------------------------------------------ */

static int self_test_request(tp_codec *codec, char *errstr, size_t errstr_size) {
    tp_request req, back;
    unsigned char *buf = NULL;
    size_t len = 0;
    int rc;

    memset(&req, 0, sizeof(req));
    strcpy(req.request_id, "self-test");
    strcpy(req.actor.id, "a");
    strcpy(req.actor.type, "system");
    req.actor.n_roles = 1;
    strcpy(req.actor.roles[0], "admin");
    strcpy(req.tenant.name, "Self Test");
    strcpy(req.tenant.slug, "self-test");
    req.tenant.residency = TP_RESIDENCY_EU;
    strcpy(req.tenant.region, "eu-central-1");
    req.source = TP_SOURCE_BILLING;
    req.plan = TP_PLAN_ENTERPRISE;
    req.environment = TP_ENV_DEV;
    req.has_requested_seats = true;
    req.requested_seats = 7;
    req.has_storage_estimate = true;
    req.storage_estimate_bytes = INT64_C(1) << 40;
    req.submitted_at_ms = 1700000000000;
    rc = tp_codec_encode_request(codec, &req, &buf, &len);
    if (rc == 0)
        rc = tp_codec_decode_request(codec, buf, len, &back, errstr, errstr_size);
    free(buf);
    if (rc == 0 && memcmp(&req, &back, sizeof(req)) != 0)
        rc = TP_ECONFIG;
    if (rc)
        return tp_codec__fail(TP_ECONFIG, errstr, errstr_size,
                              "ProvisioningRequest.avsc does not match tp_request (%s)",
                              tp_err_name(rc));
    return 0;
}

static int self_test_action(tp_codec *codec, char *errstr, size_t errstr_size) {
    tp_request req, back;
    unsigned char *buf = NULL;
    size_t len = 0;
    int rc;

    memset(&req, 0, sizeof(req));
    req.action = TP_ACTION_CHANGE_PLAN;
    strcpy(req.request_id, "self-test-action");
    strcpy(req.actor.id, "a");
    strcpy(req.actor.type, "service");
    req.actor.n_roles = 1;
    strcpy(req.actor.roles[0], "billing");
    strcpy(req.tenant.slug, "self-test");
    req.source = TP_SOURCE_BILLING;
    req.has_plan = true;
    req.plan = TP_PLAN_ENTERPRISE;
    req.has_requested_seats = true;
    req.requested_seats = 9;
    strcpy(req.reason, "upgrade");
    req.has_retention_days = true;
    req.retention_days = 3;
    req.submitted_at_ms = 1700000000001;
    rc = tp_codec_encode_request(codec, &req, &buf, &len);
    if (rc == 0)
        rc = tp_codec_decode_request(codec, buf, len, &back, errstr, errstr_size);
    free(buf);
    if (rc == 0 && memcmp(&req, &back, sizeof(req)) != 0)
        rc = TP_ECONFIG;
    if (rc)
        return tp_codec__fail(TP_ECONFIG, errstr, errstr_size,
                              "TenantActionRequest.avsc does not match tp_request (%s)",
                              tp_err_name(rc));
    return 0;
}

static int self_test_dead_letter(tp_codec *codec, char *errstr, size_t errstr_size) {
    tp_dead_letter dl, back;
    unsigned char *buf = NULL;
    size_t len = 0;
    int rc;

    memset(&dl, 0, sizeof(dl));
    memset(&back, 0, sizeof(back));
    dl.original = (unsigned char *)"x";
    dl.original_len = 1;
    strcpy(dl.reason_code, "TP_EDECODE_FRAMING");
    strcpy(dl.origin_topic, "t");
    dl.origin_partition = 3;
    dl.origin_offset = 42;
    strcpy(dl.failed_stage, "policy");
    dl.has_original_key = true;
    dl.original_key = (unsigned char *)"k";
    dl.original_key_len = 1;
    rc = tp_codec_encode_dead_letter(codec, &dl, &buf, &len);
    if (rc == 0)
        rc = tp_codec_decode_dead_letter(codec, buf, len, &back, errstr, errstr_size);
    free(buf);
    if (rc == 0 && (back.origin_offset != 42 || strcmp(back.failed_stage, "policy") != 0 ||
                    !back.has_original_key || back.original_len != 1))
        rc = TP_ECONFIG;
    tp_dead_letter_release(&back);
    if (rc)
        return tp_codec__fail(TP_ECONFIG, errstr, errstr_size,
                              "DeadLetter.avsc does not match tp_dead_letter (%s)", tp_err_name(rc));
    return 0;
}

static int self_test_receipt(tp_codec *codec, char *errstr, size_t errstr_size) {
    tp_receipt_signature sig = {"k", (unsigned char *)"s", 1};
    tp_receipt_record r = {"r", "TENANT_PROVISIONED", "t", "q", 2, "p", "h", 1, "pt",
                           (unsigned char *)"{}", 2, 1, &sig};
    tp_receipt_record back = {0};
    unsigned char *buf = NULL;
    size_t len = 0;
    int rc = tp_codec_encode_receipt(codec, &r, &buf, &len);
    if (rc == 0)
        rc = tp_codec_decode_receipt(codec, buf, len, &back, errstr, errstr_size);
    free(buf);
    if (rc == 0 && (back.sequence != 2 || back.n_signatures != 1 || back.payload_len != 2))
        rc = TP_ECONFIG;
    tp_receipt_record_release(&back);
    if (rc)
        return tp_codec__fail(TP_ECONFIG, errstr, errstr_size,
                              "ProvenanceReceipt.avsc does not match tp_receipt_record (%s)",
                              tp_err_name(rc));
    return 0;
}

/* ---- TreeCheckpoint ------------------------------------------------------------------------------- */

static const tp_codec_cap checkpoint_caps[] = {
    {"origin", 1024},
    {"rootHash", 64},
    {"note", 16384},
};

int tp_codec_encode_checkpoint(tp_codec *codec, const tp_checkpoint_record *c, unsigned char **out,
                               size_t *out_len) {
    avro_value_t v;
    int rc;
    if (!codec || !c || !out || !out_len || !c->root_hash)
        return TP_EINVAL;
    if (avro_generic_value_new(codec->slots[TP_CODEC_SCHEMA_CHECKPOINT].iface, &v))
        return TP_ENOMEM;
    if ((rc = tp_codec__set_string(&v, "origin", c->origin, 1024)) == 0 &&
        (rc = tp_codec__set_long(&v, "treeSize", c->tree_size)) == 0 &&
        (rc = tp_codec__set_bytes(&v, "rootHash", c->root_hash, c->root_hash_len)) == 0 &&
        (rc = tp_codec__set_string(&v, "note", c->note, 16384)) == 0)
        rc = tp_codec__write_value(codec, TP_CODEC_SCHEMA_CHECKPOINT, &v, out, out_len);
    avro_value_decref(&v);
    return rc;
}

int tp_codec_decode_checkpoint(tp_codec *codec, const unsigned char *buf, size_t len,
                               tp_checkpoint_record *out, char *errstr, size_t errstr_size) {
    const void *p;
    size_t n;
    avro_value_t v, f;
    int rc;

    if (errstr && errstr_size)
        errstr[0] = '\0';
    if (!codec || !out)
        return TP_EINVAL;
    memset(out, 0, sizeof(*out));
    rc = tp_codec__open(codec, TP_CODEC_SCHEMA_CHECKPOINT, TP_CODEC_CHECKPOINT_MAX,
                        checkpoint_caps, N_OF(checkpoint_caps), buf, len, &v, errstr,
                        errstr_size);
    if (rc)
        return rc;
    if ((rc = dup_string(&v, "origin", &out->origin)) == 0 &&
        (rc = tp_codec__get_long(&v, "treeSize", &out->tree_size)) == 0 &&
        (rc = dup_string(&v, "note", &out->note)) == 0) {
        if (tp_codec__field(&v, "rootHash", &f) || avro_value_get_bytes(&f, &p, &n))
            rc = TP_EDECODE_AVRO;
        else if ((rc = dup_bytes(p, n, &out->root_hash)) == 0)
            out->root_hash_len = n;
    }
    avro_value_decref(&v);
    if (rc) {
        tp_checkpoint_record_release(out);
        tp_codec__fail(rc, errstr, errstr_size, "TreeCheckpoint: %s", tp_strerror(rc));
    }
    return rc;
}

void tp_checkpoint_record_release(tp_checkpoint_record *c) {
    if (!c)
        return;
    free(c->origin);
    free(c->root_hash);
    free(c->note);
    memset(c, 0, sizeof(*c));
}

static int self_test_checkpoint(tp_codec *codec, char *errstr, size_t errstr_size) {
    unsigned char root[32] = {1};
    tp_checkpoint_record c = {"o", 7, root, sizeof(root), "note"}, back = {0};
    unsigned char *buf = NULL;
    size_t len = 0;
    int rc = tp_codec_encode_checkpoint(codec, &c, &buf, &len);
    if (rc == 0)
        rc = tp_codec_decode_checkpoint(codec, buf, len, &back, errstr, errstr_size);
    free(buf);
    if (rc == 0 && (back.tree_size != 7 || back.root_hash_len != 32 || strcmp(back.note, "note") != 0))
        rc = TP_ECONFIG;
    tp_checkpoint_record_release(&back);
    if (rc)
        return tp_codec__fail(TP_ECONFIG, errstr, errstr_size,
                              "TreeCheckpoint.avsc does not match tp_checkpoint_record (%s)",
                              tp_err_name(rc));
    return 0;
}

int tp_codec__self_test(tp_codec *codec, char *errstr, size_t errstr_size) {
    int rc = self_test_request(codec, errstr, errstr_size);
    if (rc == 0)
        rc = self_test_action(codec, errstr, errstr_size);
    if (rc == 0)
        rc = self_test_dead_letter(codec, errstr, errstr_size);
    if (rc == 0)
        rc = self_test_receipt(codec, errstr, errstr_size);
    if (rc == 0)
        rc = self_test_checkpoint(codec, errstr, errstr_size);
    return rc;
}
