/* test_codec_records.c: DeadLetter and ProvenanceReceipt encode/decode: round trips, ownership of
 * decoded buffers (ASan checks the releases), hostile input, and that the records' fingerprints are
 * not interchangeable with the request's. */
#include "codec_fixture.h"

#include <stdio.h>

static int setup(void **state) {
    *state = fx_codec(NULL);
    return *state ? 0 : -1;
}

static int teardown(void **state) {
    tp_codec_free(*state);
    return 0;
}

static void sample_dead_letter(tp_dead_letter *dl) {
    static unsigned char original[] = {0xde, 0xad, 0x00, 0xbe, 0xef};
    static unsigned char key[] = "acme-corp";
    memset(dl, 0, sizeof(*dl));
    dl->original = original;
    dl->original_len = sizeof(original);
    strcpy(dl->reason_code, "TP_EDECODE_FINGERPRINT");
    strcpy(dl->reason_message, "fingerprint 0102030405060708 is not ProvisioningRequest.avsc");
    strcpy(dl->origin_topic, "tenant.provisioning.requests.v1");
    dl->origin_partition = 5;
    dl->origin_offset = INT64_C(123456789012);
    strcpy(dl->failed_stage, "policy");
    strcpy(dl->request_id, "req-1");
    dl->timestamp_ms = INT64_C(1718000000999);
    dl->has_original_key = true;
    dl->original_key = key;
    dl->original_key_len = 9;
}

static void test_dead_letter_roundtrip(void **state) {
    tp_codec *c = *state;
    tp_dead_letter dl, back;
    unsigned char *buf = NULL;
    size_t len = 0;
    char err[256] = "";

    sample_dead_letter(&dl);
    assert_int_equal(tp_codec_encode_dead_letter(c, &dl, &buf, &len), 0);
    assert_int_equal(buf[0], 0xc3);
    for (int i = 0; i < 8; i++)
        assert_int_equal(buf[2 + i], (FX_FP_DEAD_LETTER >> (8 * i)) & 0xff);
    assert_int_equal(tp_codec_decode_dead_letter(c, buf, len, &back, err, sizeof(err)), 0);
    assert_int_equal(back.original_len, dl.original_len);
    assert_memory_equal(back.original, dl.original, dl.original_len);
    assert_string_equal(back.reason_code, dl.reason_code);
    assert_string_equal(back.reason_message, dl.reason_message);
    assert_string_equal(back.origin_topic, dl.origin_topic);
    assert_int_equal(back.origin_partition, 5);
    assert_true(back.origin_offset == dl.origin_offset);
    assert_string_equal(back.failed_stage, "policy");
    assert_string_equal(back.request_id, "req-1");
    assert_true(back.timestamp_ms == dl.timestamp_ms);
    assert_true(back.has_original_key);
    assert_int_equal(back.original_key_len, 9);
    assert_memory_equal(back.original_key, "acme-corp", 9);
    assert_true(back.original != dl.original); /* owned copy */
    tp_dead_letter_release(&back);
    assert_null(back.original);
    tp_dead_letter_release(&back); /* twice is harmless */
    free(buf);

    /* the nulls and an empty original */
    dl.original = NULL;
    dl.original_len = 0;
    dl.failed_stage[0] = '\0';
    dl.request_id[0] = '\0';
    dl.has_original_key = false;
    assert_int_equal(tp_codec_encode_dead_letter(c, &dl, &buf, &len), 0);
    assert_int_equal(tp_codec_decode_dead_letter(c, buf, len, &back, err, sizeof(err)), 0);
    assert_int_equal(back.original_len, 0);
    assert_non_null(back.original);
    assert_string_equal(back.failed_stage, "");
    assert_string_equal(back.request_id, "");
    assert_false(back.has_original_key);
    assert_null(back.original_key);
    tp_dead_letter_release(&back);
    free(buf);
}

/* The worker's real use: a poison record of any size up to the request limit is kept whole. */
static void test_dead_letter_keeps_large_original(void **state) {
    tp_codec *c = *state;
    tp_dead_letter dl, back;
    unsigned char *orig = malloc(TP_CODEC_REQUEST_MAX), *buf = NULL;
    size_t len = 0;
    char err[256] = "";
    assert_non_null(orig);
    for (size_t i = 0; i < TP_CODEC_REQUEST_MAX; i++)
        orig[i] = (unsigned char)(i * 31);
    sample_dead_letter(&dl);
    dl.original = orig;
    dl.original_len = TP_CODEC_REQUEST_MAX;
    assert_int_equal(tp_codec_encode_dead_letter(c, &dl, &buf, &len), 0);
    assert_int_equal(tp_codec_decode_dead_letter(c, buf, len, &back, err, sizeof(err)), 0);
    assert_int_equal(back.original_len, TP_CODEC_REQUEST_MAX);
    assert_memory_equal(back.original, orig, TP_CODEC_REQUEST_MAX);
    tp_dead_letter_release(&back);
    free(buf);
    free(orig);
}

static void test_dead_letter_refusals(void **state) {
    tp_codec *c = *state;
    tp_dead_letter dl, back;
    unsigned char *buf = NULL;
    size_t len = 0;
    char err[256] = "";
    hbuf *h = malloc(sizeof(*h));
    char *long_code = fx_repeat('C', TP_DLQ_REASON_CODE_MAX + 1);
    assert_non_null(h);

    sample_dead_letter(&dl);
    memset(dl.reason_code, 'x', sizeof(dl.reason_code)); /* no NUL */
    assert_int_equal(tp_codec_encode_dead_letter(c, &dl, &buf, &len), TP_EINVAL);
    sample_dead_letter(&dl);
    dl.original_key = NULL;
    assert_int_equal(tp_codec_encode_dead_letter(c, &dl, &buf, &len), TP_EINVAL);

    /* every truncation of a valid record is refused, nothing leaks (ASan) */
    sample_dead_letter(&dl);
    assert_int_equal(tp_codec_encode_dead_letter(c, &dl, &buf, &len), 0);
    for (size_t n = 0; n < len; n++) {
        int rc = tp_codec_decode_dead_letter(c, buf, n, &back, err, sizeof(err));
        assert_true(rc == TP_EDECODE_AVRO || rc == TP_EDECODE_FRAMING);
        assert_null(back.original);
    }
    /* a request is not a dead letter; Confluent framing is for requests only */
    buf[2] ^= 0xff;
    assert_int_equal(tp_codec_decode_dead_letter(c, buf, len, &back, err, sizeof(err)),
                     TP_EDECODE_FINGERPRINT);
    buf[0] = 0x00;
    assert_int_equal(tp_codec_decode_dead_letter(c, buf, len, &back, err, sizeof(err)),
                     TP_EDECODE_FRAMING);
    free(buf);

    /* a reason code over its cap, written by hand */
    h_single_object(h, FX_FP_DEAD_LETTER);
    h_strn(h, "\x01", 1);
    h_str(h, long_code);
    h_str(h, "m");
    h_str(h, "t");
    h_long(h, 0);
    h_long(h, 0);
    h_long(h, 0);
    h_long(h, 0);
    h_long(h, 0);
    h_long(h, 0);
    assert_int_equal(tp_codec_decode_dead_letter(c, h->b, h->n, &back, err, sizeof(err)),
                     TP_EDECODE_TOO_LARGE);
    assert_non_null(strstr(err, "reasonCode"));
    free(long_code);
    free(h);
}

static void sample_receipt(tp_receipt_record *r, tp_receipt_signature sigs[2]) {
    static unsigned char sig0[64], sig1[64];
    static const char payload[] = "{\"_type\":\"https://in-toto.io/Statement/v1\"}";
    for (int i = 0; i < 64; i++) {
        sig0[i] = (unsigned char)i;
        sig1[i] = (unsigned char)(255 - i);
    }
    sigs[0] = (tp_receipt_signature){"key-2024", sig0, sizeof(sig0)};
    sigs[1] = (tp_receipt_signature){"key-2025", sig1, sizeof(sig1)};
    memset(r, 0, sizeof(*r));
    r->receipt_id = "prov_6f1c";
    r->action_type = "TENANT_PROVISIONED";
    r->tenant_id = "ten_1";
    r->request_id = "req_1";
    r->sequence = 3;
    r->previous_hash = "0000000000000000000000000000000000000000000000000000000000000000";
    r->hash = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    r->timestamp_ms = INT64_C(1718000000000);
    r->payload_type = "application/vnd.in-toto+json";
    r->payload = (unsigned char *)payload;
    r->payload_len = sizeof(payload) - 1;
    r->n_signatures = 2;
    r->signatures = sigs;
}

static void test_receipt_roundtrip(void **state) {
    tp_codec *c = *state;
    tp_receipt_record r, back;
    tp_receipt_signature sigs[2];
    unsigned char *buf = NULL;
    size_t len = 0;
    char err[256] = "";

    sample_receipt(&r, sigs);
    assert_int_equal(tp_codec_encode_receipt(c, &r, &buf, &len), 0);
    for (int i = 0; i < 8; i++)
        assert_int_equal(buf[2 + i], (FX_FP_RECEIPT >> (8 * i)) & 0xff);
    assert_int_equal(tp_codec_decode_receipt(c, buf, len, &back, err, sizeof(err)), 0);
    assert_string_equal(back.receipt_id, r.receipt_id);
    assert_string_equal(back.action_type, r.action_type);
    assert_string_equal(back.tenant_id, r.tenant_id);
    assert_string_equal(back.request_id, r.request_id);
    assert_true(back.sequence == 3);
    assert_string_equal(back.previous_hash, r.previous_hash);
    assert_string_equal(back.hash, r.hash);
    assert_true(back.timestamp_ms == r.timestamp_ms);
    assert_string_equal(back.payload_type, r.payload_type);
    assert_int_equal(back.payload_len, r.payload_len);
    assert_memory_equal(back.payload, r.payload, r.payload_len);
    assert_int_equal(back.n_signatures, 2);
    assert_string_equal(back.signatures[1].keyid, "key-2025");
    assert_int_equal(back.signatures[1].sig_len, 64);
    assert_memory_equal(back.signatures[1].sig, sigs[1].sig, 64);
    tp_receipt_record_release(&back);
    assert_null(back.signatures);
    free(buf);

    r.n_signatures = 0;
    r.signatures = NULL;
    assert_int_equal(tp_codec_encode_receipt(c, &r, &buf, &len), 0);
    assert_int_equal(tp_codec_decode_receipt(c, buf, len, &back, err, sizeof(err)), 0);
    assert_int_equal(back.n_signatures, 0);
    assert_null(back.signatures);
    tp_receipt_record_release(&back);
    free(buf);
}

static void test_receipt_refusals(void **state) {
    tp_codec *c = *state;
    tp_receipt_record r, back;
    tp_receipt_signature sigs[2];
    tp_receipt_signature many[TP_RECEIPT_SIGNATURES_MAX + 1];
    unsigned char *buf = NULL;
    size_t len = 0;
    char err[256] = "";
    hbuf *h = malloc(sizeof(*h));
    assert_non_null(h);

    sample_receipt(&r, sigs);
    r.hash = NULL;
    assert_int_equal(tp_codec_encode_receipt(c, &r, &buf, &len), TP_EINVAL);
    sample_receipt(&r, sigs);
    r.n_signatures = TP_RECEIPT_SIGNATURES_MAX + 1;
    r.signatures = many;
    assert_int_equal(tp_codec_encode_receipt(c, &r, &buf, &len), TP_EINVAL);

    sample_receipt(&r, sigs);
    assert_int_equal(tp_codec_encode_receipt(c, &r, &buf, &len), 0);
    for (size_t n = 0; n < len; n++) {
        int rc = tp_codec_decode_receipt(c, buf, n, &back, err, sizeof(err));
        assert_true(rc == TP_EDECODE_AVRO || rc == TP_EDECODE_FRAMING);
        assert_null(back.receipt_id);
    }
    free(buf);

    /* 17 signatures written by hand */
    h_single_object(h, FX_FP_RECEIPT);
    h_str(h, "r");
    h_str(h, "a");
    h_str(h, "t");
    h_str(h, "q");
    h_long(h, 1);
    h_str(h, "p");
    h_str(h, "h");
    h_long(h, 1);
    h_str(h, "pt");
    h_str(h, "{}");
    h_long(h, TP_RECEIPT_SIGNATURES_MAX + 1);
    for (int i = 0; i <= TP_RECEIPT_SIGNATURES_MAX; i++) {
        h_str(h, "k");
        h_str(h, "s");
    }
    h_long(h, 0);
    assert_int_equal(tp_codec_decode_receipt(c, h->b, h->n, &back, err, sizeof(err)),
                     TP_EDECODE_TOO_LARGE);
    free(h);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dead_letter_roundtrip),
        cmocka_unit_test(test_dead_letter_keeps_large_original),
        cmocka_unit_test(test_dead_letter_refusals),
        cmocka_unit_test(test_receipt_roundtrip),
        cmocka_unit_test(test_receipt_refusals),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
