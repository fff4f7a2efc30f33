/* test_codec_action.c: the requests topic's two record types. TenantActionRequest encode/decode
 * (round trips of every action, bytes written by fastavro, refusals), and ProvisioningRequest bytes
 * written by the code before the lifecycle (tests/fixtures/avro, from a45bd5e) still decoding as
 * provisionings, byte for byte the same when encoded again. */
#include "codec_fixture.h"

#include <stdio.h>

#define FIXTURES TP_SOURCE_DIR "/tests/fixtures/avro/"

static int setup(void **state) {
    *state = fx_codec("");
    return *state ? 0 : -1;
}

static int teardown(void **state) {
    tp_codec_free(*state);
    return 0;
}

/* Reads a fixture file into buf; returns its length. */
static size_t read_fixture(const char *name, unsigned char *buf, size_t cap) {
    char path[512];
    FILE *f;
    size_t n;
    snprintf(path, sizeof(path), "%s%s", FIXTURES, name);
    f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot open %s", path);
    n = fread(buf, 1, cap, f);
    fclose(f);
    assert_true(n > 10 && n < cap);
    return n;
}

static int decode(tp_codec *c, const unsigned char *buf, size_t len, tp_request *out) {
    char err[256] = "";
    int rc = tp_codec_decode_request(c, buf, len, out, err, sizeof(err));
    if (rc)
        assert_true(err[0] != '\0');
    return rc;
}

static void fx_action(tp_request *r, tp_action action) {
    memset(r, 0, sizeof(*r));
    r->action = action;
    strcpy(r->request_id, "evt-action-1");
    strcpy(r->idempotency_key, "idem-a");
    r->source = TP_SOURCE_ADMIN_API;
    strcpy(r->actor.id, "admin-7");
    strcpy(r->actor.type, "user");
    r->actor.n_roles = 1;
    strcpy(r->actor.roles[0], "platform-admin");
    strcpy(r->tenant.slug, "acme-corp");
    strcpy(r->correlation_id, "corr-a");
    r->submitted_at_ms = INT64_C(1796169600000);
}

static void roundtrip(tp_codec *c, const tp_request *req) {
    unsigned char *buf = NULL;
    size_t len = 0;
    uint64_t fp = 0;
    tp_request back;
    assert_int_equal(tp_codec_encode_request(c, req, &buf, &len), 0);
    for (int i = 7; i >= 0; i--)
        fp = (fp << 8) | buf[2 + i];
    assert_true(fp == FX_FP_ACTION);
    assert_int_equal(decode(c, buf, len, &back), 0);
    assert_memory_equal(&back, req, sizeof(back));
    free(buf);
}

static void test_action_roundtrips(void **state) {
    tp_request r;
    fx_action(&r, TP_ACTION_CHANGE_PLAN);
    r.has_plan = true;
    r.plan = TP_PLAN_STARTER;
    r.has_requested_seats = true;
    r.requested_seats = 3;
    r.has_storage_estimate = true;
    r.storage_estimate_bytes = INT64_C(1) << 33;
    roundtrip(*state, &r);
    fx_action(&r, TP_ACTION_SUSPEND);
    strcpy(r.reason, "PAYMENT_FAILED: card declined ünïcode");
    roundtrip(*state, &r);
    fx_action(&r, TP_ACTION_RESUME);
    roundtrip(*state, &r);
    fx_action(&r, TP_ACTION_DEPROVISION);
    r.has_retention_days = true;
    r.retention_days = 0;
    roundtrip(*state, &r);
    fx_action(&r, TP_ACTION_SUSPEND); /* every cap at its limit */
    memset(r.reason, 'x', TP_REASON_MAX);
    memset(r.tenant.slug, 's', TP_SLUG_MAX);
    memset(r.request_id, 'r', TP_REQUEST_ID_MAX);
    roundtrip(*state, &r);
}

/* Bytes fastavro wrote (tests/fixtures/avro/TenantActionRequest-fastavro-*.bin). */
static void test_decode_fastavro_actions(void **state) {
    unsigned char buf[1024];
    tp_request r;
    size_t n = read_fixture("TenantActionRequest-fastavro-change-plan.bin", buf, sizeof(buf));
    assert_int_equal(decode(*state, buf, n, &r), 0);
    assert_int_equal(r.action, TP_ACTION_CHANGE_PLAN);
    assert_string_equal(r.request_id, "billing-evt-20261202-0101");
    assert_string_equal(r.tenant.slug, "fixture-full");
    assert_string_equal(r.tenant.name, "");
    assert_true(r.has_plan);
    assert_int_equal(r.plan, TP_PLAN_ENTERPRISE);
    assert_true(r.has_requested_seats);
    assert_int_equal(r.requested_seats, 120);
    assert_false(r.has_storage_estimate);
    assert_string_equal(r.reason, "upgrade");
    assert_false(r.has_retention_days);
    assert_int_equal(r.source, TP_SOURCE_BILLING);
    assert_string_equal(r.actor.roles[0], "billing");
    assert_int_equal(r.submitted_at_ms, INT64_C(1796169600000));

    n = read_fixture("TenantActionRequest-fastavro-deprovision.bin", buf, sizeof(buf));
    assert_int_equal(decode(*state, buf, n, &r), 0);
    assert_int_equal(r.action, TP_ACTION_DEPROVISION);
    assert_false(r.has_plan);
    assert_true(r.has_retention_days);
    assert_int_equal(r.retention_days, 7);
    assert_string_equal(r.idempotency_key, "idem-off");
    assert_string_equal(r.reason, "");
    assert_int_equal(r.source, TP_SOURCE_ADMIN_API);
}

/* ProvisioningRequest bytes produced by today's producers before the lifecycle existed. */
static void test_old_provisioning_bytes(void **state) {
    static const char *const files[] = {"ProvisioningRequest-a45bd5e-full.bin",
                                        "ProvisioningRequest-a45bd5e-minimal.bin"};
    for (size_t i = 0; i < 2; i++) {
        unsigned char buf[1024], *again = NULL;
        size_t n = read_fixture(files[i], buf, sizeof(buf)), again_len = 0;
        tp_request r;
        char field[64], msg[256];
        assert_int_equal(decode(*state, buf, n, &r), 0);
        assert_int_equal(r.action, TP_ACTION_PROVISION);
        assert_int_equal(r.source, TP_SOURCE_BILLING);
        assert_int_equal(tp_request_validate(&r, "us-east-1,eu-central-1", field, sizeof(field), msg,
                                             sizeof(msg)),
                         0);
        /* the encoder still writes exactly these bytes */
        assert_int_equal(tp_codec_encode_request(*state, &r, &again, &again_len), 0);
        assert_int_equal(again_len, n);
        assert_memory_equal(again, buf, n);
        free(again);
        if (i == 0) {
            assert_string_equal(r.tenant.slug, "fixture-full");
            assert_int_equal(r.plan, TP_PLAN_PRO);
            assert_int_equal(r.requested_seats, 25);
        } else {
            assert_string_equal(r.tenant.slug, "fixture-minimal");
            assert_false(r.has_requested_seats);
        }
    }
}

static void test_action_refusals(void **state) {
    tp_codec *c = *state;
    unsigned char buf[1024], *out = NULL;
    size_t n = read_fixture("TenantActionRequest-fastavro-change-plan.bin", buf, sizeof(buf)), len;
    tp_request r;
    char err[256] = "";
    /* every truncation of an action is refused */
    for (size_t cut = 0; cut < n; cut++)
        assert_int_not_equal(decode(c, buf, cut, &r), 0);
    /* an unknown fingerprint names both request schemas */
    buf[5] ^= 0x40;
    assert_int_equal(tp_codec_decode_request(c, buf, n, &r, err, sizeof(err)), TP_EDECODE_FINGERPRINT);
    assert_non_null(strstr(err, "TenantActionRequest"));
    assert_non_null(strstr(err, "ProvisioningRequest"));
    buf[5] ^= 0x40;
    /* the action enum's index out of range: the byte after tenantSlug (index 3 is the last) */
    {
        size_t at = 0;
        for (size_t i = 10; i + 12 <= n; i++)
            if (memcmp(buf + i, "fixture-full", 12) == 0)
                at = i + 12;
        assert_true(at > 0);
        assert_int_equal(buf[at], 0x00); /* CHANGE_PLAN */
        buf[at] = 0x08;                  /* index 4 */
        assert_int_equal(decode(c, buf, n, &r), TP_EDECODE_AVRO);
        buf[at] = 0x00;
    }
    /* the encoder refuses what it cannot represent */
    fx_action(&r, TP_ACTION_CHANGE_PLAN);
    r.has_plan = true;
    r.plan = (tp_plan)9;
    assert_int_equal(tp_codec_encode_request(c, &r, &out, &len), TP_EINVAL);
    fx_action(&r, (tp_action)7);
    assert_int_equal(tp_codec_encode_request(c, &r, &out, &len), TP_EINVAL);
    assert_null(out);
}

/* The action rules of tp_request_validate. */
static void test_action_validation(void **state) {
    (void)state;
    tp_request r;
    char field[64], msg[256];
#define EXPECT_FIELD(want)                                                                         \
    do {                                                                                           \
        assert_int_equal(tp_request_validate(&r, "", field, sizeof(field), msg, sizeof(msg)),      \
                         TP_EVALIDATION);                                                          \
        assert_string_equal(field, want);                                                          \
    } while (0)
#define EXPECT_OK()                                                                                \
    assert_int_equal(tp_request_validate(&r, "", field, sizeof(field), msg, sizeof(msg)), 0)
    fx_action(&r, TP_ACTION_CHANGE_PLAN);
    EXPECT_FIELD("/plan");
    r.has_plan = true;
    EXPECT_OK(); /* no region allow-list needed: an action has no region */
    r.has_requested_seats = true;
    r.requested_seats = 0;
    EXPECT_FIELD("/requestedSeats");
    fx_action(&r, TP_ACTION_SUSPEND);
    EXPECT_FIELD("/reason");
    strcpy(r.reason, "PAYMENT_FAILED");
    EXPECT_OK();
    r.has_plan = true;
    EXPECT_FIELD("/plan");
    fx_action(&r, TP_ACTION_RESUME);
    EXPECT_OK();
    r.has_retention_days = true;
    EXPECT_FIELD("/retentionDays");
    fx_action(&r, TP_ACTION_DEPROVISION);
    r.has_retention_days = true;
    r.retention_days = 3651;
    EXPECT_FIELD("/retentionDays");
    r.retention_days = 3650;
    EXPECT_OK();
    strcpy(r.tenant.slug, "Bad_Slug");
    EXPECT_FIELD("/tenantSlug");
    fx_action(&r, TP_ACTION_RESUME);
    r.actor.id[0] = '\0';
    EXPECT_FIELD("/actor/id");
    fx_action(&r, (tp_action)9);
    EXPECT_FIELD("/action");
#undef EXPECT_FIELD
#undef EXPECT_OK
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_action_roundtrips),
        cmocka_unit_test(test_decode_fastavro_actions),
        cmocka_unit_test(test_old_provisioning_bytes),
        cmocka_unit_test(test_action_refusals),
        cmocka_unit_test(test_action_validation),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
