/* test_codec_fingerprint.c: CRC-64-AVRO and the Parsing Canonical Form against the Avro
 * specification's published vectors (share/test/data/schema-tests.txt of apache/avro) and against
 * canonical forms of our own schemas computed independently with fastavro. */
#include "codec_fixture.h"

#include <stdio.h>

typedef struct vector {
    const char *input;
    const char *canonical;
    int has_fp;
    int64_t fp; /* as the spec's Java implementation prints it: a signed long */
} vector;

/* Every case of apache/avro share/test/data/schema-tests.txt (000..033). */
static const vector vectors[] = {
    {"\"null\"", "\"null\"", 1, INT64_C(7195948357588979594)},
    {"{\"type\":\"null\"}", "\"null\"", 0, 0},
    {"\"boolean\"", "\"boolean\"", 1, INT64_C(-6970731678124411036)},
    {"{\"type\":\"boolean\"}", "\"boolean\"", 0, 0},
    {"\"int\"", "\"int\"", 1, INT64_C(8247732601305521295)},
    {"{\"type\":\"int\"}", "\"int\"", 0, 0},
    {"\"long\"", "\"long\"", 1, INT64_C(-3434872931120570953)},
    {"{\"type\":\"long\"}", "\"long\"", 0, 0},
    {"\"float\"", "\"float\"", 1, INT64_C(5583340709985441680)},
    {"{\"type\":\"float\"}", "\"float\"", 0, 0},
    {"\"double\"", "\"double\"", 1, INT64_C(-8181574048448539266)},
    {"{\"type\":\"double\"}", "\"double\"", 0, 0},
    {"\"bytes\"", "\"bytes\"", 1, INT64_C(5746618253357095269)},
    {"{\"type\":\"bytes\"}", "\"bytes\"", 0, 0},
    {"\"string\"", "\"string\"", 1, INT64_C(-8142146995180207161)},
    {"{\"type\":\"string\"}", "\"string\"", 0, 0},
    {"[  ]", "[]", 1, INT64_C(-1241056759729112623)},
    {"[ \"int\"  ]", "[\"int\"]", 1, INT64_C(-5232228896498058493)},
    {"[ \"int\" , {\"type\":\"boolean\"} ]", "[\"int\",\"boolean\"]", 1,
     INT64_C(5392556393470105090)},
    {"{\"fields\":[], \"type\":\"record\", \"name\":\"foo\"}",
     "{\"name\":\"foo\",\"type\":\"record\",\"fields\":[]}", 1, INT64_C(-4824392279771201922)},
    {"{\"fields\":[], \"type\":\"record\", \"name\":\"foo\", \"namespace\":\"x.y\"}",
     "{\"name\":\"x.y.foo\",\"type\":\"record\",\"fields\":[]}", 1, INT64_C(5916914534497305771)},
    {"{\"fields\":[], \"type\":\"record\", \"name\":\"a.b.foo\", \"namespace\":\"x.y\"}",
     "{\"name\":\"a.b.foo\",\"type\":\"record\",\"fields\":[]}", 1, INT64_C(-4616218487480524110)},
    {"{\"fields\":[], \"type\":\"record\", \"name\":\"foo\", \"doc\":\"Useful info\"}",
     "{\"name\":\"foo\",\"type\":\"record\",\"fields\":[]}", 1, INT64_C(-4824392279771201922)},
    {"{\"fields\":[], \"type\":\"record\", \"name\":\"foo\", \"aliases\":[\"foo\",\"bar\"]}",
     "{\"name\":\"foo\",\"type\":\"record\",\"fields\":[]}", 1, INT64_C(-4824392279771201922)},
    {"{\"fields\":[], \"type\":\"record\", \"name\":\"foo\", \"doc\":\"foo\", "
     "\"aliases\":[\"foo\",\"bar\"]}",
     "{\"name\":\"foo\",\"type\":\"record\",\"fields\":[]}", 1, INT64_C(-4824392279771201922)},
    {"{\"fields\":[{\"type\":{\"type\":\"boolean\"}, \"name\":\"f1\"}], \"type\":\"record\", "
     "\"name\":\"foo\"}",
     "{\"name\":\"foo\",\"type\":\"record\",\"fields\":[{\"name\":\"f1\",\"type\":\"boolean\"}]}", 1,
     INT64_C(7843277075252814651)},
    {"{ \"fields\":[{\"type\":\"boolean\", \"aliases\":[], \"name\":\"f1\", \"default\":\"true\"},\n"
     "            {\"order\":\"descending\",\"name\":\"f2\",\"doc\":\"Hello\",\"type\":\"int\"}],\n"
     "  \"type\":\"record\", \"name\":\"foo\"\n}",
     "{\"name\":\"foo\",\"type\":\"record\",\"fields\":[{\"name\":\"f1\",\"type\":\"boolean\"},"
     "{\"name\":\"f2\",\"type\":\"int\"}]}",
     1, INT64_C(-4860222112080293046)},
    {"{\"type\":\"enum\", \"name\":\"foo\", \"symbols\":[\"A1\"]}",
     "{\"name\":\"foo\",\"type\":\"enum\",\"symbols\":[\"A1\"]}", 1, INT64_C(-6342190197741309591)},
    {"{\"namespace\":\"x.y.z\", \"type\":\"enum\", \"name\":\"foo\", \"doc\":\"foo bar\", "
     "\"symbols\":[\"A1\", \"A2\"]}",
     "{\"name\":\"x.y.z.foo\",\"type\":\"enum\",\"symbols\":[\"A1\",\"A2\"]}", 1,
     INT64_C(-4448647247586288245)},
    {"{\"name\":\"foo\",\"type\":\"fixed\",\"size\":15}",
     "{\"name\":\"foo\",\"type\":\"fixed\",\"size\":15}", 1, INT64_C(1756455273707447556)},
    {"{\"namespace\":\"x.y.z\", \"type\":\"fixed\", \"name\":\"foo\", \"doc\":\"foo bar\", "
     "\"size\":32}",
     "{\"name\":\"x.y.z.foo\",\"type\":\"fixed\",\"size\":32}", 1, INT64_C(-3064184465700546786)},
    {"{ \"items\":{\"type\":\"null\"}, \"type\":\"array\"}", "{\"type\":\"array\",\"items\":\"null\"}",
     1, INT64_C(-589620603366471059)},
    {"{ \"values\":\"string\", \"type\":\"map\"}", "{\"type\":\"map\",\"values\":\"string\"}", 1,
     INT64_C(-8732877298790414990)},
    {"  {\"name\":\"PigValue\",\"type\":\"record\",\n"
     "   \"fields\":[{\"name\":\"value\", \"type\":[\"null\", \"int\", \"long\", \"PigValue\"]}]}",
     "{\"name\":\"PigValue\",\"type\":\"record\",\"fields\":[{\"name\":\"value\",\"type\":[\"null\","
     "\"int\",\"long\",\"PigValue\"]}]}",
     1, INT64_C(-1759257747318642341)},
};

static void test_crc64_empty_and_known(void **state) {
    (void)state;
    assert_true(tp_avro_crc64("", 0) == TP_AVRO_CRC64_EMPTY);
    assert_true(tp_avro_crc64(NULL, 0) == UINT64_C(0xc15d213aa4d7a795));
    /* the spec's vector for the canonical form "null" */
    assert_true(tp_avro_crc64("\"null\"", 6) == UINT64_C(0x63dd24e7cc258f8a));
}

static void test_spec_vectors(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
        const vector *v = &vectors[i];
        char err[256] = "";
        char *pcf = NULL;
        size_t len = 0;
        uint64_t fp = 0;
        int rc = tp_codec_canonical_form(v->input, strlen(v->input), &pcf, &len, err, sizeof(err));
        if (rc)
            fail_msg("vector %03zu: %s (%s)", i, tp_err_name(rc), err);
        if (strcmp(pcf, v->canonical) != 0)
            fail_msg("vector %03zu: canonical %s, want %s", i, pcf, v->canonical);
        assert_int_equal(len, strlen(v->canonical));
        free(pcf);
        assert_int_equal(tp_codec_fingerprint(v->input, strlen(v->input), &fp, err, sizeof(err)), 0);
        assert_true(fp == tp_avro_crc64(v->canonical, strlen(v->canonical)));
        if (v->has_fp && (int64_t)fp != v->fp)
            fail_msg("vector %03zu: fingerprint %lld, want %lld", i, (long long)(int64_t)fp,
                     (long long)v->fp);
    }
}

static void expect_pcf(const char *in, const char *want) {
    char err[256] = "";
    char *pcf = NULL;
    int rc = tp_codec_canonical_form(in, strlen(in), &pcf, NULL, err, sizeof(err));
    if (rc)
        fail_msg("%s: %s (%s)", in, tp_err_name(rc), err);
    if (strcmp(pcf, want) != 0)
        fail_msg("canonical of %s\n  got  %s\n  want %s", in, pcf, want);
    free(pcf);
}

static void test_namespaces_and_references(void **state) {
    (void)state;
    /* nested definitions inherit the enclosing namespace; references are written as fullnames */
    expect_pcf("{\"type\":\"record\",\"name\":\"R\",\"namespace\":\"a.b\",\"fields\":["
               "{\"name\":\"e\",\"type\":{\"type\":\"enum\",\"name\":\"E\",\"symbols\":[\"X\"]}},"
               "{\"name\":\"e2\",\"type\":\"E\"},"
               "{\"name\":\"e3\",\"type\":{\"type\":\"E\"}},"
               "{\"name\":\"f\",\"type\":{\"type\":\"fixed\",\"name\":\"c.F\",\"size\":\"016\"}},"
               "{\"name\":\"g\",\"type\":{\"type\":\"record\",\"name\":\"G\",\"namespace\":\"\","
               "\"fields\":[{\"name\":\"r\",\"type\":[\"null\",\"a.b.R\"]}]}}]}",
               "{\"name\":\"a.b.R\",\"type\":\"record\",\"fields\":["
               "{\"name\":\"e\",\"type\":{\"name\":\"a.b.E\",\"type\":\"enum\",\"symbols\":[\"X\"]}},"
               "{\"name\":\"e2\",\"type\":\"a.b.E\"},"
               "{\"name\":\"e3\",\"type\":\"a.b.E\"},"
               "{\"name\":\"f\",\"type\":{\"name\":\"c.F\",\"type\":\"fixed\",\"size\":16}},"
               "{\"name\":\"g\",\"type\":{\"name\":\"G\",\"type\":\"record\",\"fields\":["
               "{\"name\":\"r\",\"type\":[\"null\",\"a.b.R\"]}]}}]}");
    /* a dotted name sets the namespace of what it encloses; logicalType and defaults are stripped */
    expect_pcf("{\"type\":\"record\",\"name\":\"x.y.Outer\",\"namespace\":\"ignored\",\"fields\":["
               "{\"name\":\"in\",\"type\":{\"type\":\"record\",\"name\":\"Inner\",\"fields\":[]}},"
               "{\"name\":\"ts\",\"type\":{\"type\":\"long\",\"logicalType\":\"timestamp-millis\"},"
               "\"default\":0},"
               "{\"name\":\"m\",\"type\":{\"type\":\"map\",\"values\":{\"type\":\"array\","
               "\"items\":\"Inner\"}}}]}",
               "{\"name\":\"x.y.Outer\",\"type\":\"record\",\"fields\":["
               "{\"name\":\"in\",\"type\":{\"name\":\"x.y.Inner\",\"type\":\"record\",\"fields\":[]}},"
               "{\"name\":\"ts\",\"type\":\"long\"},"
               "{\"name\":\"m\",\"type\":{\"type\":\"map\",\"values\":{\"type\":\"array\","
               "\"items\":\"x.y.Inner\"}}}]}");
    /* [STRINGS]: escapes become UTF-8 */
    expect_pcf("{\"type\":\"enum\",\"name\":\"E\",\"symbols\":[\"\\u00e9\"]}",
               "{\"name\":\"E\",\"type\":\"enum\",\"symbols\":[\"\xc3\xa9\"]}");
}

static void test_invalid_schemas(void **state) {
    static const char *bad[] = {
        "",
        "{",
        "42",
        "\"Undefined\"",
        "{\"type\":\"record\",\"name\":\"R\"}",
        "{\"type\":\"record\",\"fields\":[]}",
        "{\"type\":\"enum\",\"name\":\"E\"}",
        "{\"type\":\"fixed\",\"name\":\"F\",\"size\":-1}",
        "{\"type\":\"array\"}",
        "{\"type\":{\"type\":\"int\"}}",
        "[\"int\",{\"type\":\"record\",\"name\":\"R\",\"fields\":[]},"
        "{\"type\":\"record\",\"name\":\"R\",\"fields\":[]}]",
        "{\"type\":\"record\",\"name\":\"int\",\"fields\":[]}",
        "{\"type\":\"record\",\"name\":\"R\",\"fields\":[{\"name\":\"a\"}]}",
    };
    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char err[256] = "";
        char *pcf = (char *)"untouched";
        int rc = tp_codec_canonical_form(bad[i], strlen(bad[i]), &pcf, NULL, err, sizeof(err));
        if (rc != TP_EINVAL)
            fail_msg("bad schema %zu (%s) gave %s", i, bad[i], tp_err_name(rc));
        assert_null(pcf);
        assert_true(err[0] != '\0');
    }
}

static void test_deep_nesting_is_refused(void **state) {
    char buf[4096];
    size_t n = 0;
    char *pcf = NULL;
    (void)state;
    for (int i = 0; i < 200; i++)
        n += (size_t)snprintf(buf + n, sizeof(buf) - n, "[");
    n += (size_t)snprintf(buf + n, sizeof(buf) - n, "\"int\"");
    for (int i = 0; i < 200; i++)
        n += (size_t)snprintf(buf + n, sizeof(buf) - n, "]");
    assert_int_equal(tp_codec_canonical_form(buf, n, &pcf, NULL, NULL, 0), TP_EINVAL);
    assert_null(pcf);
}

/* Our schemas' canonical forms as fastavro 1.13.1 computes them. */
static const char *const want_request_pcf =
    "{\"name\":\"io.tenantprovisioner.v1.ProvisioningRequest\",\"type\":\"record\",\"fields\":["
    "{\"name\":\"requestId\",\"type\":\"string\"},{\"name\":\"idempotencyKey\",\"type\":[\"null\","
    "\"string\"]},{\"name\":\"source\",\"type\":{\"name\":\"io.tenantprovisioner.v1.RequestSource\","
    "\"type\":\"enum\",\"symbols\":[\"ADMIN_API\",\"SELF_SERVE_API\",\"BILLING\"]}},{\"name\":"
    "\"actor\",\"type\":{\"name\":\"io.tenantprovisioner.v1.Actor\",\"type\":\"record\",\"fields\":"
    "[{\"name\":\"id\",\"type\":\"string\"},{\"name\":\"type\",\"type\":\"string\"},{\"name\":"
    "\"roles\",\"type\":{\"type\":\"array\",\"items\":\"string\"}}]}},{\"name\":\"tenant\",\"type\":"
    "{\"name\":\"io.tenantprovisioner.v1.TenantSpec\",\"type\":\"record\",\"fields\":[{\"name\":"
    "\"name\",\"type\":\"string\"},{\"name\":\"slug\",\"type\":\"string\"},{\"name\":\"residency\","
    "\"type\":{\"name\":\"io.tenantprovisioner.v1.Residency\",\"type\":\"enum\",\"symbols\":[\"US\","
    "\"EU\"]}},{\"name\":\"region\",\"type\":[\"null\",\"string\"]}]}},{\"name\":\"plan\",\"type\":"
    "{\"name\":\"io.tenantprovisioner.v1.Plan\",\"type\":\"enum\",\"symbols\":[\"FREE\",\"STARTER\","
    "\"PRO\",\"ENTERPRISE\"]}},{\"name\":\"environment\",\"type\":{\"name\":"
    "\"io.tenantprovisioner.v1.Environment\",\"type\":\"enum\",\"symbols\":[\"prod\",\"staging\","
    "\"dev\"]}},{\"name\":\"requestedSeats\",\"type\":[\"null\",\"int\"]},{\"name\":"
    "\"storageEstimateBytes\",\"type\":[\"null\",\"long\"]},{\"name\":\"correlationId\",\"type\":"
    "[\"null\",\"string\"]},{\"name\":\"submittedAt\",\"type\":\"long\"}]}";

static const char *const want_dead_letter_pcf =
    "{\"name\":\"io.tenantprovisioner.v1.DeadLetter\",\"type\":\"record\",\"fields\":[{\"name\":"
    "\"original\",\"type\":\"bytes\"},{\"name\":\"reasonCode\",\"type\":\"string\"},{\"name\":"
    "\"reasonMessage\",\"type\":\"string\"},{\"name\":\"originTopic\",\"type\":\"string\"},{\"name\":"
    "\"originPartition\",\"type\":\"int\"},{\"name\":\"originOffset\",\"type\":\"long\"},{\"name\":"
    "\"failedStage\",\"type\":[\"null\",\"string\"]},{\"name\":\"requestId\",\"type\":[\"null\","
    "\"string\"]},{\"name\":\"timestamp\",\"type\":\"long\"},{\"name\":\"originalKey\",\"type\":"
    "[\"null\",\"bytes\"]}]}";

static const char *const want_receipt_pcf =
    "{\"name\":\"io.tenantprovisioner.v1.ProvenanceReceipt\",\"type\":\"record\",\"fields\":[{"
    "\"name\":\"receiptId\",\"type\":\"string\"},{\"name\":\"actionType\",\"type\":\"string\"},{"
    "\"name\":\"tenantId\",\"type\":\"string\"},{\"name\":\"requestId\",\"type\":\"string\"},{"
    "\"name\":\"sequence\",\"type\":\"long\"},{\"name\":\"previousHash\",\"type\":\"string\"},{"
    "\"name\":\"hash\",\"type\":\"string\"},{\"name\":\"timestamp\",\"type\":\"long\"},{\"name\":"
    "\"envelope\",\"type\":{\"name\":\"io.tenantprovisioner.v1.DsseEnvelope\",\"type\":\"record\","
    "\"fields\":[{\"name\":\"payloadType\",\"type\":\"string\"},{\"name\":\"payload\",\"type\":"
    "\"bytes\"},{\"name\":\"signatures\",\"type\":{\"type\":\"array\",\"items\":{\"name\":"
    "\"io.tenantprovisioner.v1.DsseSignature\",\"type\":\"record\",\"fields\":[{\"name\":\"keyid\","
    "\"type\":\"string\"},{\"name\":\"sig\",\"type\":\"bytes\"}]}}}]}}]}";

static void test_our_schemas(void **state) {
    tp_codec *c = fx_codec(NULL);
    (void)state;
    assert_string_equal(tp_codec_schema_canonical(c, TP_CODEC_SCHEMA_REQUEST), want_request_pcf);
    assert_string_equal(tp_codec_schema_canonical(c, TP_CODEC_SCHEMA_DEAD_LETTER),
                        want_dead_letter_pcf);
    assert_string_equal(tp_codec_schema_canonical(c, TP_CODEC_SCHEMA_RECEIPT), want_receipt_pcf);
    assert_true(tp_codec_schema_fingerprint(c, TP_CODEC_SCHEMA_REQUEST) == FX_FP_REQUEST);
    assert_true(tp_codec_schema_fingerprint(c, TP_CODEC_SCHEMA_DEAD_LETTER) == FX_FP_DEAD_LETTER);
    assert_true(tp_codec_schema_fingerprint(c, TP_CODEC_SCHEMA_RECEIPT) == FX_FP_RECEIPT);
    assert_true(tp_codec_schema_fingerprint(c, TP_CODEC_SCHEMA_CHECKPOINT) == FX_FP_CHECKPOINT);
    assert_true(tp_codec_schema_fingerprint(c, (tp_codec_schema)7) == 0);
    assert_string_equal(tp_codec_schema_canonical(c, (tp_codec_schema)7), "");
    tp_codec_free(c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc64_empty_and_known),
        cmocka_unit_test(test_spec_vectors),
        cmocka_unit_test(test_namespaces_and_references),
        cmocka_unit_test(test_invalid_schemas),
        cmocka_unit_test(test_deep_nesting_is_refused),
        cmocka_unit_test(test_our_schemas),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
