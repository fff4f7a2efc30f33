/* test_codec_request.c: ProvisioningRequest encode/decode: round trips, interop with an
 * independent writer (fastavro and the fixture's hand writer), Confluent framing, and every
 * refusal of hostile bytes (framing, fingerprint, schema id, sizes, varints, indexes, UTF-8). */
#include "codec_fixture.h"

#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

/* Written by fastavro 1.13.1 schemaless_writer behind a single-object header: requestId evt-42,
 * no idempotency key, BILLING, actor billing-svc/system [billing, ops], tenant "Acme Ünïcode"/acme,
 * EU, eu-west-1, PRO, staging, 25 seats, no storage estimate, corr-1, 1700000000123. */
static const unsigned char fastavro_request[] = {
    0xc3, 0x01, 0x15, 0x02, 0x65, 0xae, 0x43, 0x74, 0xbf, 0x3b, 0x0c, 0x65, 0x76, 0x74, 0x2d, 0x34,
    0x32, 0x00, 0x04, 0x16, 0x62, 0x69, 0x6c, 0x6c, 0x69, 0x6e, 0x67, 0x2d, 0x73, 0x76, 0x63, 0x0c,
    0x73, 0x79, 0x73, 0x74, 0x65, 0x6d, 0x04, 0x0e, 0x62, 0x69, 0x6c, 0x6c, 0x69, 0x6e, 0x67, 0x06,
    0x6f, 0x70, 0x73, 0x00, 0x1c, 0x41, 0x63, 0x6d, 0x65, 0x20, 0xc3, 0x9c, 0x6e, 0xc3, 0xaf, 0x63,
    0x6f, 0x64, 0x65, 0x08, 0x61, 0x63, 0x6d, 0x65, 0x02, 0x02, 0x12, 0x65, 0x75, 0x2d, 0x77, 0x65,
    0x73, 0x74, 0x2d, 0x31, 0x04, 0x02, 0x02, 0x32, 0x00, 0x02, 0x0c, 0x63, 0x6f, 0x72, 0x72, 0x2d,
    0x31, 0xf6, 0xa1, 0xab, 0xfe, 0xf9, 0x62};

static int setup(void **state) {
    *state = fx_codec("7, 40");
    return *state ? 0 : -1;
}

static int teardown(void **state) {
    tp_codec_free(*state);
    return 0;
}

static int decode(tp_codec *c, const unsigned char *buf, size_t len, tp_request *out) {
    char err[256] = "";
    int rc = tp_codec_decode_request(c, buf, len, out, err, sizeof(err));
    if (rc)
        assert_true(err[0] != '\0'); /* every refusal says why */
    return rc;
}

static void assert_requests_equal(const tp_request *a, const tp_request *b) {
    assert_string_equal(a->request_id, b->request_id);
    assert_string_equal(a->idempotency_key, b->idempotency_key);
    assert_int_equal(a->source, b->source);
    assert_string_equal(a->actor.id, b->actor.id);
    assert_string_equal(a->actor.type, b->actor.type);
    assert_int_equal(a->actor.n_roles, b->actor.n_roles);
    for (int i = 0; i < a->actor.n_roles; i++)
        assert_string_equal(a->actor.roles[i], b->actor.roles[i]);
    assert_string_equal(a->tenant.name, b->tenant.name);
    assert_string_equal(a->tenant.slug, b->tenant.slug);
    assert_int_equal(a->tenant.residency, b->tenant.residency);
    assert_string_equal(a->tenant.region, b->tenant.region);
    assert_int_equal(a->plan, b->plan);
    assert_int_equal(a->environment, b->environment);
    assert_int_equal(a->has_requested_seats, b->has_requested_seats);
    assert_int_equal(a->requested_seats, b->requested_seats);
    assert_int_equal(a->has_storage_estimate, b->has_storage_estimate);
    assert_true(a->storage_estimate_bytes == b->storage_estimate_bytes);
    assert_string_equal(a->correlation_id, b->correlation_id);
    assert_true(a->submitted_at_ms == b->submitted_at_ms);
}

static void roundtrip(tp_codec *c, const tp_request *req) {
    unsigned char *buf = NULL;
    size_t len = 0;
    tp_request back;
    hreq q;
    hbuf *h = malloc(sizeof(*h));
    assert_non_null(h);
    assert_int_equal(tp_codec_encode_request(c, req, &buf, &len), 0);
    assert_true(len > TP_CODEC_SINGLE_OBJECT_HEADER);
    assert_int_equal(buf[0], 0xc3);
    assert_int_equal(buf[1], 0x01);
    for (int i = 0; i < 8; i++)
        assert_int_equal(buf[2 + i], (FX_FP_REQUEST >> (8 * i)) & 0xff);
    /* byte for byte what an independent writer produces */
    fx_hreq(&q, req);
    h_request(h, &q);
    assert_int_equal(h->n, len);
    assert_memory_equal(h->b, buf, len);
    assert_int_equal(decode(c, buf, len, &back), 0);
    assert_requests_equal(req, &back);
    free(buf);
    free(h);
}

static void test_roundtrip_full(void **state) {
    tp_request req;
    fx_request(&req);
    roundtrip(*state, &req);
}

static void test_roundtrip_minimal(void **state) {
    tp_request req;
    fx_request(&req);
    req.idempotency_key[0] = '\0';
    req.tenant.region[0] = '\0';
    req.correlation_id[0] = '\0';
    req.has_requested_seats = false;
    req.requested_seats = 0;
    req.has_storage_estimate = false;
    req.storage_estimate_bytes = 0;
    req.actor.n_roles = 0;
    req.submitted_at_ms = 0;
    roundtrip(*state, &req);
}

static void test_roundtrip_at_every_cap(void **state) {
    tp_request req;
    fx_request(&req);
    memset(req.request_id, 'r', TP_REQUEST_ID_MAX);
    memset(req.idempotency_key, 'i', TP_IDEMPOTENCY_KEY_MAX);
    memset(req.actor.id, 'a', TP_ACTOR_ID_MAX);
    memset(req.actor.type, 't', TP_ACTOR_TYPE_MAX);
    req.actor.n_roles = TP_ROLES_MAX;
    for (int i = 0; i < TP_ROLES_MAX; i++)
        memset(req.actor.roles[i], 'a' + i, TP_ROLE_MAX);
    /* 100 four-byte characters: exactly TP_NAME_MAX bytes */
    for (int i = 0; i < TP_NAME_MAX; i += 4)
        memcpy(req.tenant.name + i, "\xf0\x9f\x98\x80", 4);
    memset(req.tenant.slug, 's', TP_SLUG_MAX);
    memset(req.tenant.region, 'g', TP_REGION_MAX);
    memset(req.correlation_id, 'c', TP_CORRELATION_ID_MAX);
    req.source = TP_SOURCE_ADMIN_API;
    req.plan = TP_PLAN_ENTERPRISE;
    req.environment = TP_ENV_DEV;
    req.tenant.residency = TP_RESIDENCY_EU;
    req.requested_seats = INT32_MIN;
    req.storage_estimate_bytes = INT64_MAX;
    req.submitted_at_ms = INT64_MIN;
    roundtrip(*state, &req);
}

static void test_decode_fastavro(void **state) {
    tp_request r;
    assert_int_equal(decode(*state, fastavro_request, sizeof(fastavro_request), &r), 0);
    assert_string_equal(r.request_id, "evt-42");
    assert_string_equal(r.idempotency_key, "");
    assert_int_equal(r.source, TP_SOURCE_BILLING);
    assert_string_equal(r.actor.id, "billing-svc");
    assert_string_equal(r.actor.type, "system");
    assert_int_equal(r.actor.n_roles, 2);
    assert_string_equal(r.actor.roles[1], "ops");
    assert_string_equal(r.tenant.name, "Acme \xc3\x9cn\xc3\xaf" "code");
    assert_string_equal(r.tenant.slug, "acme");
    assert_int_equal(r.tenant.residency, TP_RESIDENCY_EU);
    assert_string_equal(r.tenant.region, "eu-west-1");
    assert_int_equal(r.plan, TP_PLAN_PRO);
    assert_int_equal(r.environment, TP_ENV_STAGING);
    assert_true(r.has_requested_seats);
    assert_int_equal(r.requested_seats, 25);
    assert_false(r.has_storage_estimate);
    assert_string_equal(r.correlation_id, "corr-1");
    assert_true(r.submitted_at_ms == INT64_C(1700000000123));
}

static void test_confluent_framing(void **state) {
    tp_codec *c = *state, *none;
    unsigned char msg[sizeof(fastavro_request) - 10 + 5];
    tp_request r;
    memcpy(msg + 5, fastavro_request + 10, sizeof(fastavro_request) - 10);
    msg[0] = 0x00;
    msg[1] = 0x00;
    msg[2] = 0x00;
    msg[3] = 0x00;
    msg[4] = 40; /* configured */
    assert_int_equal(decode(c, msg, sizeof(msg), &r), 0);
    assert_string_equal(r.request_id, "evt-42");
    msg[4] = 7;
    assert_int_equal(decode(c, msg, sizeof(msg), &r), 0);
    msg[4] = 8; /* not configured */
    assert_int_equal(decode(c, msg, sizeof(msg), &r), TP_EDECODE_SCHEMA_ID);
    msg[1] = 0x01;
    msg[4] = 7; /* 0x01000007 */
    assert_int_equal(decode(c, msg, sizeof(msg), &r), TP_EDECODE_SCHEMA_ID);
    assert_int_equal(decode(c, msg, 4, &r), TP_EDECODE_FRAMING);
    /* a codec configured without ids refuses every Confluent record */
    none = fx_codec("");
    msg[1] = 0x00;
    assert_int_equal(decode(none, msg, sizeof(msg), &r), TP_EDECODE_SCHEMA_ID);
    tp_codec_free(none);
}

static void test_framing_errors(void **state) {
    tp_codec *c = *state;
    tp_request r;
    unsigned char buf[sizeof(fastavro_request)];
    static const unsigned char json[] = "{\"requestId\":\"x\"}";
    assert_int_equal(decode(c, NULL, 0, &r), TP_EDECODE_FRAMING);
    assert_int_equal(decode(c, (const unsigned char *)"", 0, &r), TP_EDECODE_FRAMING);
    assert_int_equal(decode(c, (const unsigned char *)"\xc3", 1, &r), TP_EDECODE_FRAMING);
    assert_int_equal(decode(c, json, sizeof(json) - 1, &r), TP_EDECODE_FRAMING);
    for (size_t n = 2; n < TP_CODEC_SINGLE_OBJECT_HEADER; n++)
        assert_int_equal(decode(c, fastavro_request, n, &r), TP_EDECODE_FRAMING);
    memcpy(buf, fastavro_request, sizeof(buf));
    buf[1] = 0x02; /* wrong magic */
    assert_int_equal(decode(c, buf, sizeof(buf), &r), TP_EDECODE_FRAMING);
    buf[0] = 0xc2;
    buf[1] = 0x01;
    assert_int_equal(decode(c, buf, sizeof(buf), &r), TP_EDECODE_FRAMING);
}

static void test_unknown_fingerprint(void **state) {
    tp_codec *c = *state;
    tp_request r;
    unsigned char buf[sizeof(fastavro_request)];
    for (int i = 2; i < 10; i++) {
        memcpy(buf, fastavro_request, sizeof(buf));
        buf[i] ^= 0x01;
        assert_int_equal(decode(c, buf, sizeof(buf), &r), TP_EDECODE_FINGERPRINT);
    }
    /* a DeadLetter or a receipt is not a request, whatever its body */
    memcpy(buf, fastavro_request, sizeof(buf));
    for (int i = 0; i < 8; i++)
        buf[2 + i] = (unsigned char)(FX_FP_DEAD_LETTER >> (8 * i));
    assert_int_equal(decode(c, buf, sizeof(buf), &r), TP_EDECODE_FINGERPRINT);
    /* only the header is needed to know */
    assert_int_equal(decode(c, buf, 10, &r), TP_EDECODE_FINGERPRINT);
}

static void test_every_truncation_refused(void **state) {
    tp_request r;
    for (size_t n = TP_CODEC_SINGLE_OBJECT_HEADER; n < sizeof(fastavro_request); n++) {
        int rc = decode(*state, fastavro_request, n, &r);
        if (rc != TP_EDECODE_AVRO)
            fail_msg("prefix of %zu bytes gave %s", n, tp_err_name(rc));
    }
}

static void test_trailing_bytes_refused(void **state) {
    unsigned char buf[sizeof(fastavro_request) + 1];
    tp_request r;
    memcpy(buf, fastavro_request, sizeof(fastavro_request));
    buf[sizeof(fastavro_request)] = 0x00;
    assert_int_equal(decode(*state, buf, sizeof(buf), &r), TP_EDECODE_AVRO);
}

static void test_whole_record_too_large(void **state) {
    size_t len = TP_CODEC_REQUEST_MAX + 1;
    unsigned char *buf = calloc(1, len);
    tp_request r;
    assert_non_null(buf);
    memcpy(buf, fastavro_request, sizeof(fastavro_request));
    assert_int_equal(decode(*state, buf, len, &r), TP_EDECODE_TOO_LARGE);
    free(buf);
}

/* Hostile bodies after a valid header. */
static void expect_body(tp_codec *c, const unsigned char *body, size_t n, int want, const char *what) {
    hbuf *h = malloc(sizeof(*h));
    tp_request r;
    int rc;
    assert_non_null(h);
    h_single_object(h, FX_FP_REQUEST);
    h_raw(h, body, n);
    rc = decode(c, h->b, h->n, &r);
    free(h);
    if (rc != want)
        fail_msg("%s: got %s, want %s", what, tp_err_name(rc), tp_err_name(want));
}

static void test_hostile_varints(void **state) {
    tp_codec *c = *state;
    /* requestId length 2^31 - 1 with a handful of bytes behind it: must not allocate 2 GiB */
    static const unsigned char huge_len[] = {0xfe, 0xff, 0xff, 0xff, 0x0f, 'a', 'b'};
    /* length as long as a varint may be, pointing past everything */
    static const unsigned char huge_len64[] = {0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    static const unsigned char eleven[] = {0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00};
    static const unsigned char overflow10[] = {0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02};
    static const unsigned char negative[] = {0x01, 'a'};
    static const unsigned char unterminated[] = {0x80, 0x80};
    expect_body(c, huge_len, sizeof(huge_len), TP_EDECODE_AVRO, "huge string length");
    expect_body(c, huge_len64, sizeof(huge_len64), TP_EDECODE_AVRO, "huge 64-bit length");
    expect_body(c, eleven, sizeof(eleven), TP_EDECODE_AVRO, "11-byte varint");
    expect_body(c, overflow10, sizeof(overflow10), TP_EDECODE_AVRO, "10-byte varint overflowing");
    expect_body(c, negative, sizeof(negative), TP_EDECODE_AVRO, "negative length");
    expect_body(c, unterminated, sizeof(unterminated), TP_EDECODE_AVRO, "unterminated varint");
    expect_body(c, NULL, 0, TP_EDECODE_AVRO, "empty body");
}

/* Encodes q by hand and checks the decoder's answer. */
static void expect_hreq(tp_codec *c, const hreq *q, int want, const char *what) {
    hbuf *h = malloc(sizeof(*h));
    tp_request r;
    int rc;
    assert_non_null(h);
    h_request(h, q);
    rc = decode(c, h->b, h->n, &r);
    free(h);
    if (rc != want)
        fail_msg("%s: got %s, want %s", what, tp_err_name(rc), tp_err_name(want));
}

static void test_oversized_fields(void **state) {
    tp_codec *c = *state;
    tp_request base;
    hreq q;
    char *s129 = fx_repeat('r', TP_REQUEST_ID_MAX + 1), *s256 = fx_repeat('i', 256),
         *s51 = fx_repeat('s', TP_SLUG_MAX + 1), *s401 = fx_repeat('n', TP_NAME_MAX + 1),
         *s64 = fx_repeat('o', TP_ROLE_MAX + 1), *s32 = fx_repeat('t', TP_ACTOR_TYPE_MAX + 1),
         *s1k = fx_repeat('x', 1000);
    fx_request(&base);
    fx_hreq(&q, &base);
    expect_hreq(c, &q, 0, "baseline");

#define OVERSIZE(field, value)                                                                     \
    do {                                                                                           \
        fx_hreq(&q, &base);                                                                        \
        q.field = value;                                                                           \
        expect_hreq(c, &q, TP_EDECODE_TOO_LARGE, #field);                                          \
    } while (0)
    OVERSIZE(request_id, s129);
    OVERSIZE(idempotency_key, s256);
    OVERSIZE(actor_id, s256);
    OVERSIZE(actor_type, s32);
    OVERSIZE(name, s401);
    OVERSIZE(slug, s51);
    OVERSIZE(region, s64);
    OVERSIZE(correlation_id, s129);
    OVERSIZE(roles[0], s64);
    OVERSIZE(request_id, s1k);
#undef OVERSIZE
    /* 17 roles */
    fx_hreq(&q, &base);
    q.n_roles = TP_ROLES_MAX + 1;
    for (int i = 0; i < q.n_roles; i++)
        q.roles[i] = "r";
    expect_hreq(c, &q, TP_EDECODE_TOO_LARGE, "17 roles");
    q.n_roles = TP_ROLES_MAX;
    expect_hreq(c, &q, 0, "16 roles");
    free(s129);
    free(s256);
    free(s51);
    free(s401);
    free(s64);
    free(s32);
    free(s1k);
}

static void test_bad_indexes_and_strings(void **state) {
    tp_codec *c = *state;
    tp_request base;
    hreq q;
    fx_request(&base);

#define BAD(field, value, what)                                                                    \
    do {                                                                                           \
        fx_hreq(&q, &base);                                                                        \
        q.field = value;                                                                           \
        expect_hreq(c, &q, TP_EDECODE_AVRO, what);                                                 \
    } while (0)
    BAD(source, 3, "source index 3");
    BAD(source, -1, "source index -1");
    BAD(plan, 4, "plan index 4");
    BAD(environment, 3, "environment index 3");
    BAD(residency, 2, "residency index 2");
    BAD(slug, "a\xff" "b", "invalid UTF-8");
    BAD(name, "\xc0\xaf", "overlong UTF-8");
    BAD(name, "\xed\xa0\x80", "UTF-8 surrogate");
    BAD(name, "\xe2\x82", "truncated UTF-8");
#undef BAD
    /* a NUL inside a string would silently shorten the C string */
    {
        hbuf *h = malloc(sizeof(*h));
        tp_request r;
        assert_non_null(h);
        fx_hreq(&q, &base);
        h_single_object(h, FX_FP_REQUEST);
        h_strn(h, "ab\0cd", 5);
        q.request_id = NULL;
        /* the rest of the record, written after the hand-made requestId */
        {
            hbuf *rest = malloc(sizeof(*rest));
            assert_non_null(rest);
            rest->n = 0;
            q.request_id = "";
            h_request_body(rest, &q);
            h_raw(h, rest->b + 1, rest->n - 1); /* skip the empty requestId */
            free(rest);
        }
        assert_int_equal(decode(c, h->b, h->n, &r), TP_EDECODE_AVRO);
        free(h);
    }
    /* union branch out of range: idempotencyKey with branch 2 */
    {
        hbuf *h = malloc(sizeof(*h));
        tp_request r;
        assert_non_null(h);
        h_single_object(h, FX_FP_REQUEST);
        h_str(h, "id");
        h_long(h, 2);
        h_str(h, "x");
        assert_int_equal(decode(c, h->b, h->n, &r), TP_EDECODE_AVRO);
        h->n -= 2;
        h->b[h->n - 1] = 0x03; /* branch -2 */
        assert_int_equal(decode(c, h->b, h->n, &r), TP_EDECODE_AVRO);
        free(h);
    }
}

static void test_array_blocks(void **state) {
    tp_codec *c = *state;
    tp_request base, r;
    hreq q;
    hbuf *h = malloc(sizeof(*h));
    assert_non_null(h);
    fx_request(&base);
    fx_hreq(&q, &base);

    /* roles written as a negative-count block with its byte size: valid Avro */
    q.n_roles = 0;
    h_single_object(h, FX_FP_REQUEST);
    h_str(h, q.request_id);
    h_opt_str(h, q.idempotency_key);
    h_long(h, q.source);
    h_str(h, q.actor_id);
    h_str(h, q.actor_type);
    h_long(h, -2);
    h_long(h, 1 + 2 + 1 + 3);
    h_str(h, "ab");
    h_str(h, "cde");
    h_long(h, 0);
    {
        size_t mark = h->n;
        hbuf *rest = malloc(sizeof(*rest));
        assert_non_null(rest);
        rest->n = 0;
        h_request_body(rest, &q);
        /* the tail of the record after the roles array: find it by re-encoding up to roles */
        {
            hbuf *head = malloc(sizeof(*head));
            assert_non_null(head);
            head->n = 0;
            h_str(head, q.request_id);
            h_opt_str(head, q.idempotency_key);
            h_long(head, q.source);
            h_str(head, q.actor_id);
            h_str(head, q.actor_type);
            h_long(head, 0); /* empty roles */
            h_raw(h, rest->b + head->n, rest->n - head->n);
            free(head);
        }
        free(rest);
        assert_int_equal(decode(c, h->b, h->n, &r), 0);
        assert_int_equal(r.actor.n_roles, 2);
        assert_string_equal(r.actor.roles[1], "cde");
        /* a block size that lies */
        assert_int_equal(h->b[mark - 9], 0x0e); /* the block's byte size, 7 */
        h->b[mark - 9] = 0x0c;                  /* 6: a lie */
        assert_true(decode(c, h->b, h->n, &r) == TP_EDECODE_AVRO);
    }
    /* a block count of 2^40 with nothing behind it */
    h_single_object(h, FX_FP_REQUEST);
    h_str(h, q.request_id);
    h_opt_str(h, q.idempotency_key);
    h_long(h, q.source);
    h_str(h, q.actor_id);
    h_str(h, q.actor_type);
    h_long(h, INT64_C(1) << 40);
    assert_int_equal(decode(c, h->b, h->n, &r), TP_EDECODE_AVRO);
    /* INT64_MIN as a block count */
    h->n -= 10;
    h_long(h, INT64_MIN);
    assert_int_equal(decode(c, h->b, h->n, &r), TP_EDECODE_AVRO);
    free(h);
}

static void test_encode_refusals(void **state) {
    tp_codec *c = *state;
    tp_request req;
    unsigned char *buf = (unsigned char *)"untouched";
    size_t len = 0;

#define REFUSE(mutation)                                                                           \
    do {                                                                                           \
        fx_request(&req);                                                                          \
        mutation;                                                                                  \
        assert_int_equal(tp_codec_encode_request(c, &req, &buf, &len), TP_EINVAL);                 \
    } while (0)
    REFUSE(req.source = (tp_source)3);
    REFUSE(req.plan = (tp_plan)-1);
    REFUSE(req.environment = (tp_environment)9);
    REFUSE(req.tenant.residency = (tp_residency)2);
    REFUSE(req.actor.n_roles = TP_ROLES_MAX + 1);
    REFUSE(req.actor.n_roles = -1);
    REFUSE(memset(req.tenant.slug, 's', sizeof(req.tenant.slug))); /* no NUL */
    REFUSE(memcpy(req.tenant.name, "\xff\xfe", 3));
    REFUSE(memcpy(req.actor.roles[1], "\xc3", 2));
#undef REFUSE
    assert_string_equal((const char *)buf, "untouched");
    assert_int_equal(tp_codec_encode_request(c, NULL, &buf, &len), TP_EINVAL);
    assert_int_equal(tp_codec_encode_request(NULL, &req, &buf, &len), TP_EINVAL);
}

static void test_codec_new_errors(void **state) {
    char err[512];
    char dir[] = "/tmp/tp_codec_test_XXXXXX";
    char path[600];
    FILE *f;
    static const char *bad_ids[] = {"7,x", "-1", "2147483648", "1;2", "1 2"};
    (void)state;

    err[0] = '\0';
    assert_null(tp_codec_new("/nonexistent/schemas", NULL, err, sizeof(err)));
    assert_non_null(strstr(err, "ProvisioningRequest.avsc"));
    for (size_t i = 0; i < sizeof(bad_ids) / sizeof(bad_ids[0]); i++) {
        err[0] = '\0';
        assert_null(tp_codec_new(FX_SCHEMA_DIR, bad_ids[i], err, sizeof(err)));
        assert_non_null(strstr(err, "confluent"));
    }
    {
        char many[400] = "";
        for (int i = 0; i <= TP_CODEC_CONFLUENT_IDS_MAX; i++)
            snprintf(many + strlen(many), sizeof(many) - strlen(many), "%d,", i + 1);
        assert_null(tp_codec_new(FX_SCHEMA_DIR, many, err, sizeof(err)));
    }
    /* schema files that do not match the structs are refused at load, not on the first message */
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/ProvisioningRequest.avsc", dir);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("{\"type\":\"record\",\"name\":\"ProvisioningRequest\",\"fields\":["
          "{\"name\":\"requestId\",\"type\":\"string\"}]}", f);
    fclose(f);
    snprintf(path, sizeof(path), "%s/DeadLetter.avsc", dir);
    assert_int_equal(symlink(FX_SCHEMA_DIR "/DeadLetter.avsc", path), 0);
    snprintf(path, sizeof(path), "%s/TreeCheckpoint.avsc", dir);
    assert_int_equal(symlink(FX_SCHEMA_DIR "/TreeCheckpoint.avsc", path), 0);
    snprintf(path, sizeof(path), "%s/TenantActionRequest.avsc", dir);
    assert_int_equal(symlink(FX_SCHEMA_DIR "/TenantActionRequest.avsc", path), 0);
    snprintf(path, sizeof(path), "%s/ProvenanceReceipt.avsc", dir);
    assert_int_equal(symlink(FX_SCHEMA_DIR "/ProvenanceReceipt.avsc", path), 0);
    err[0] = '\0';
    assert_null(tp_codec_new(dir, NULL, err, sizeof(err)));
    assert_non_null(strstr(err, "does not match"));
    unlink(path);
    snprintf(path, sizeof(path), "%s/TenantActionRequest.avsc", dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/TreeCheckpoint.avsc", dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/DeadLetter.avsc", dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/ProvisioningRequest.avsc", dir);
    unlink(path);
    rmdir(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_full),
        cmocka_unit_test(test_roundtrip_minimal),
        cmocka_unit_test(test_roundtrip_at_every_cap),
        cmocka_unit_test(test_decode_fastavro),
        cmocka_unit_test(test_confluent_framing),
        cmocka_unit_test(test_framing_errors),
        cmocka_unit_test(test_unknown_fingerprint),
        cmocka_unit_test(test_every_truncation_refused),
        cmocka_unit_test(test_trailing_bytes_refused),
        cmocka_unit_test(test_whole_record_too_large),
        cmocka_unit_test(test_hostile_varints),
        cmocka_unit_test(test_oversized_fields),
        cmocka_unit_test(test_bad_indexes_and_strings),
        cmocka_unit_test(test_array_blocks),
        cmocka_unit_test(test_encode_refusals),
        cmocka_unit_test_setup_teardown(test_codec_new_errors, NULL, NULL),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
