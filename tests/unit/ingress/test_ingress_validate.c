/* test_ingress_validate.c: every DESIGN §4 validation rule of tp_ingress_parse_body, each
 * asserting the field path and code of its errors[] entry, plus the problem JSON shape. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <string.h>

#include "tp/error.h"
#include "tp/ingress.h"

#define ALLOW "us-east-1,us-west-2,eu-central-1,eu-west-1"
#define SEED_BODY                                                                                  \
    "{\"name\":\"Acme Intel\",\"slug\":\"acme-intel\",\"residency\":\"US\",\"region\":\"us-east-1\"," \
    "\"plan\":\"ENTERPRISE\",\"environment\":\"prod\",\"requestedSeats\":250,"                      \
    "\"storageEstimateBytes\":500000000000}"

static int parse(const char *body, tp_source src, tp_request *req, tp_problem **p) {
    return tp_ingress_parse_body(body, strlen(body), src, ALLOW, req, p);
}

/* Asserts that body fails with exactly the given field/code among its errors. */
static void expect_error(const char *body, const char *field, const char *code) {
    tp_request req;
    tp_problem *p = NULL;
    assert_int_equal(parse(body, TP_SOURCE_ADMIN_API, &req, &p), TP_EVALIDATION);
    assert_non_null(p);
    assert_int_equal(tp_problem_status(p), 400);
    if (!tp_problem_has_error(p, field, code)) {
        char *js = tp_problem_to_json(p, NULL);
        print_error("expected %s/%s in %s\n", field, code, js);
        free(js);
        tp_problem_free(p);
        fail();
    }
    tp_problem_free(p);
}

static void test_seed_body_accepted(void **state) {
    (void)state;
    tp_request req;
    tp_problem *p = (tp_problem *)1;
    assert_int_equal(parse(SEED_BODY, TP_SOURCE_ADMIN_API, &req, &p), 0);
    assert_null(p);
    assert_string_equal(req.tenant.name, "Acme Intel");
    assert_string_equal(req.tenant.slug, "acme-intel");
    assert_int_equal(req.tenant.residency, TP_RESIDENCY_US);
    assert_string_equal(req.tenant.region, "us-east-1");
    assert_int_equal(req.plan, TP_PLAN_ENTERPRISE);
    assert_int_equal(req.environment, TP_ENV_PROD);
    assert_true(req.has_requested_seats);
    assert_int_equal(req.requested_seats, 250);
    assert_true(req.has_storage_estimate);
    assert_true(req.storage_estimate_bytes == 500000000000LL);
    assert_int_equal(req.source, TP_SOURCE_ADMIN_API);
}

static void test_defaults_admin(void **state) {
    (void)state;
    tp_request req;
    tp_problem *p = NULL;
    assert_int_equal(parse("{\"name\":\"Zed\",\"slug\":\"zed\",\"residency\":\"EU\"}",
                           TP_SOURCE_ADMIN_API, &req, &p), 0);
    assert_string_equal(req.tenant.region, "eu-central-1");
    assert_int_equal(req.plan, TP_PLAN_ENTERPRISE);
    assert_int_equal(req.environment, TP_ENV_PROD);
    assert_false(req.has_requested_seats);
    assert_false(req.has_storage_estimate);
    assert_int_equal(parse("{\"name\":\"Zed\",\"slug\":\"zed\",\"residency\":\"US\"}",
                           TP_SOURCE_ADMIN_API, &req, &p), 0);
    assert_string_equal(req.tenant.region, "us-east-1");
}

static void test_defaults_self_serve_plan_starter(void **state) {
    (void)state;
    tp_request req;
    tp_problem *p = NULL;
    assert_int_equal(parse("{\"name\":\"Zed\",\"slug\":\"zed\",\"residency\":\"US\"}",
                           TP_SOURCE_SELF_SERVE_API, &req, &p), 0);
    assert_int_equal(req.plan, TP_PLAN_STARTER);
    assert_int_equal(req.source, TP_SOURCE_SELF_SERVE_API);
}

static void test_name_required(void **s) { (void)s; expect_error("{\"slug\":\"abc\",\"residency\":\"US\"}", "/name", "required"); }
static void test_name_type(void **s) { (void)s; expect_error("{\"name\":5,\"slug\":\"abc\",\"residency\":\"US\"}", "/name", "type"); }
static void test_name_too_short(void **s) { (void)s; expect_error("{\"name\":\"A\",\"slug\":\"abc\",\"residency\":\"US\"}", "/name", "too_short"); }

static void test_name_too_long_counts_code_points(void **state) {
    (void)state;
    char body[1024];
    char name[512] = "";
    /* 100 two-byte characters (200 bytes) are fine; 101 are too long. */
    for (int i = 0; i < 100; i++)
        strcat(name, "\xc3\xa9");
    tp_request req;
    tp_problem *p = NULL;
    snprintf(body, sizeof(body), "{\"name\":\"%s\",\"slug\":\"abc\",\"residency\":\"US\"}", name);
    assert_int_equal(parse(body, TP_SOURCE_ADMIN_API, &req, &p), 0);
    assert_int_equal(strlen(req.tenant.name), 200);
    strcat(name, "x");
    snprintf(body, sizeof(body), "{\"name\":\"%s\",\"slug\":\"abc\",\"residency\":\"US\"}", name);
    expect_error(body, "/name", "too_long");
    /* Two code points of four bytes each meet the minimum. */
    assert_int_equal(parse("{\"name\":\"\xf0\x9f\x98\x80\xf0\x9f\x98\x80\",\"slug\":\"abc\",\"residency\":\"US\"}",
                           TP_SOURCE_ADMIN_API, &req, &p), 0);
}

static void test_slug_required(void **s) { (void)s; expect_error("{\"name\":\"Ab\",\"residency\":\"US\"}", "/slug", "required"); }
static void test_slug_too_short(void **s) { (void)s; expect_error("{\"name\":\"Ab\",\"slug\":\"ab\",\"residency\":\"US\"}", "/slug", "too_short"); }

static void test_slug_too_long(void **state) {
    (void)state;
    char body[256], slug[64];
    memset(slug, 'a', 51);
    slug[51] = '\0';
    snprintf(body, sizeof(body), "{\"name\":\"Ab\",\"slug\":\"%s\",\"residency\":\"US\"}", slug);
    expect_error(body, "/slug", "too_long");
    slug[50] = '\0';
    snprintf(body, sizeof(body), "{\"name\":\"Ab\",\"slug\":\"%s\",\"residency\":\"US\"}", slug);
    tp_request req;
    tp_problem *p = NULL;
    assert_int_equal(parse(body, TP_SOURCE_ADMIN_API, &req, &p), 0);
}

static void test_slug_pattern(void **state) {
    (void)state;
    expect_error("{\"name\":\"Ab\",\"slug\":\"Acme\",\"residency\":\"US\"}", "/slug", "pattern");
    expect_error("{\"name\":\"Ab\",\"slug\":\"acme_intel\",\"residency\":\"US\"}", "/slug", "pattern");
    expect_error("{\"name\":\"Ab\",\"slug\":\"acme intel\",\"residency\":\"US\"}", "/slug", "pattern");
    expect_error("{\"name\":\"Ab\",\"slug\":\"acm\xc3\xa9\",\"residency\":\"US\"}", "/slug", "pattern");
}

static void test_residency_required(void **s) { (void)s; expect_error("{\"name\":\"Ab\",\"slug\":\"abc\"}", "/residency", "required"); }
static void test_residency_enum(void **s) { (void)s; expect_error("{\"name\":\"Ab\",\"slug\":\"abc\",\"residency\":\"us\"}", "/residency", "enum"); }
static void test_region_type(void **s) { (void)s; expect_error("{\"name\":\"Ab\",\"slug\":\"abc\",\"residency\":\"US\",\"region\":1}", "/region", "type"); }
static void test_region_residency_mismatch(void **s) { (void)s; expect_error("{\"name\":\"Ab\",\"slug\":\"abc\",\"residency\":\"US\",\"region\":\"eu-west-1\"}", "/region", "residency_mismatch"); }
static void test_region_not_allowed(void **s) { (void)s; expect_error("{\"name\":\"Ab\",\"slug\":\"abc\",\"residency\":\"US\",\"region\":\"us-east-2\"}", "/region", "not_allowed"); }

static void test_region_default_checked_against_allowlist(void **state) {
    (void)state;
    tp_request req;
    tp_problem *p = NULL;
    const char *body = "{\"name\":\"Ab\",\"slug\":\"abc\",\"residency\":\"EU\"}";
    assert_int_equal(tp_ingress_parse_body(body, strlen(body), TP_SOURCE_ADMIN_API, "us-east-1",
                                           &req, &p), TP_EVALIDATION);
    assert_true(tp_problem_has_error(p, "/region", "not_allowed"));
    tp_problem_free(p);
}

static void test_plan_enum(void **s) { (void)s; expect_error("{\"name\":\"Ab\",\"slug\":\"abc\",\"residency\":\"US\",\"plan\":\"GOLD\"}", "/plan", "enum"); }
static void test_environment_enum(void **s) { (void)s; expect_error("{\"name\":\"Ab\",\"slug\":\"abc\",\"residency\":\"US\",\"environment\":\"production\"}", "/environment", "enum"); }

static void test_seats_range_and_type(void **state) {
    (void)state;
    expect_error("{\"name\":\"Ab\",\"slug\":\"abc\",\"residency\":\"US\",\"requestedSeats\":0}", "/requestedSeats", "out_of_range");
    expect_error("{\"name\":\"Ab\",\"slug\":\"abc\",\"residency\":\"US\",\"requestedSeats\":10001}", "/requestedSeats", "out_of_range");
    expect_error("{\"name\":\"Ab\",\"slug\":\"abc\",\"residency\":\"US\",\"requestedSeats\":2.5}", "/requestedSeats", "type");
    expect_error("{\"name\":\"Ab\",\"slug\":\"abc\",\"residency\":\"US\",\"requestedSeats\":\"5\"}", "/requestedSeats", "type");
    tp_request req;
    tp_problem *p = NULL;
    assert_int_equal(parse("{\"name\":\"Ab\",\"slug\":\"abc\",\"residency\":\"US\",\"requestedSeats\":10000}",
                           TP_SOURCE_ADMIN_API, &req, &p), 0);
    assert_int_equal(req.requested_seats, 10000);
}

static void test_storage_range_and_type(void **state) {
    (void)state;
    expect_error("{\"name\":\"Ab\",\"slug\":\"abc\",\"residency\":\"US\",\"storageEstimateBytes\":-1}", "/storageEstimateBytes", "out_of_range");
    expect_error("{\"name\":\"Ab\",\"slug\":\"abc\",\"residency\":\"US\",\"storageEstimateBytes\":1e3}", "/storageEstimateBytes", "type");
    tp_request req;
    tp_problem *p = NULL;
    assert_int_equal(parse("{\"name\":\"Ab\",\"slug\":\"abc\",\"residency\":\"US\",\"storageEstimateBytes\":0}",
                           TP_SOURCE_ADMIN_API, &req, &p), 0);
    assert_true(req.has_storage_estimate);
}

static void test_unknown_field_rejected_with_escaped_pointer(void **state) {
    (void)state;
    expect_error("{\"name\":\"Ab\",\"slug\":\"abc\",\"residency\":\"US\",\"owner\":\"x\"}", "/owner", "unknown_field");
    expect_error("{\"name\":\"Ab\",\"slug\":\"abc\",\"residency\":\"US\",\"a/b~c\":1}", "/a~1b~0c", "unknown_field");
}

static void test_all_errors_collected(void **state) {
    (void)state;
    tp_request req;
    tp_problem *p = NULL;
    assert_int_equal(parse("{\"name\":\"A\",\"slug\":\"A\",\"residency\":\"XX\",\"plan\":\"GOLD\",\"x\":1}",
                           TP_SOURCE_ADMIN_API, &req, &p), TP_EVALIDATION);
    assert_int_equal(tp_problem_error_count(p), 5);
    assert_true(tp_problem_has_error(p, "/name", "too_short"));
    assert_true(tp_problem_has_error(p, "/slug", "too_short"));
    assert_true(tp_problem_has_error(p, "/residency", "enum"));
    assert_true(tp_problem_has_error(p, "/plan", "enum"));
    assert_true(tp_problem_has_error(p, "/x", "unknown_field"));
    tp_problem_free(p);
}

static void test_malformed_json(void **state) {
    (void)state;
    const char *bad[] = {"", "{", "{\"name\":}", "[1,2", "{\"name\":\"Ab\"} trailing",
                         "{\"slug\":\"abc\",\"slug\":\"abd\"}", "\xff\xfe"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        tp_request req;
        tp_problem *p = NULL;
        assert_int_equal(parse(bad[i], TP_SOURCE_ADMIN_API, &req, &p), TP_EVALIDATION);
        assert_int_equal(tp_problem_status(p), 400);
        assert_int_equal(tp_problem_get_kind(p), TP_PROBLEM_MALFORMED_JSON);
        assert_true(tp_problem_has_error(p, "", "malformed_json"));
        tp_problem_free(p);
    }
}

static void test_not_an_object(void **state) {
    (void)state;
    expect_error("[]", "", "type");
    expect_error("\"x\"", "", "type");
    expect_error("null", "", "type");
}

static void test_null_rejected_as_type(void **state) {
    (void)state;
    expect_error("{\"name\":\"Ab\",\"slug\":\"abc\",\"residency\":\"US\",\"region\":null}", "/region", "type");
}

static void test_error_cap(void **state) {
    (void)state;
    char body[8192] = "{";
    for (int i = 0; i < 200; i++) {
        char f[32];
        snprintf(f, sizeof(f), "%s\"f%d\":1", i ? "," : "", i);
        strcat(body, f);
    }
    strcat(body, "}");
    tp_request req;
    tp_problem *p = NULL;
    assert_int_equal(parse(body, TP_SOURCE_ADMIN_API, &req, &p), TP_EVALIDATION);
    assert_int_equal(tp_problem_error_count(p), TP_PROBLEM_ERRORS_MAX);
    tp_problem_free(p);
}

static void test_problem_json_shape(void **state) {
    (void)state;
    tp_request req;
    tp_problem *p = NULL;
    assert_int_equal(parse("{\"name\":\"Ab\",\"slug\":\"ABC\",\"residency\":\"US\"}",
                           TP_SOURCE_ADMIN_API, &req, &p), TP_EVALIDATION);
    size_t len = 0;
    char *js = tp_problem_to_json(p, &len);
    assert_non_null(js);
    assert_int_equal(strlen(js), len);
    json_error_t err;
    json_t *o = json_loads(js, 0, &err);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "type")),
                        TP_PROBLEM_TYPE_PREFIX "validation-error");
    assert_non_null(json_string_value(json_object_get(o, "title")));
    assert_int_equal(json_integer_value(json_object_get(o, "status")), 400);
    assert_non_null(json_string_value(json_object_get(o, "detail")));
    json_t *errs = json_object_get(o, "errors");
    assert_true(json_is_array(errs));
    assert_int_equal(json_array_size(errs), 1);
    json_t *e = json_array_get(errs, 0);
    assert_string_equal(json_string_value(json_object_get(e, "field")), "/slug");
    assert_string_equal(json_string_value(json_object_get(e, "code")), "pattern");
    assert_non_null(json_string_value(json_object_get(e, "message")));
    json_decref(o);
    free(js);
    tp_problem_free(p);
}

static void test_problem_kinds_have_stable_types(void **state) {
    (void)state;
    static const struct { tp_problem_kind k; int status; const char *slug; } want[] = {
        {TP_PROBLEM_UNAUTHORIZED, 401, "unauthorized"},
        {TP_PROBLEM_TOO_LARGE, 413, "payload-too-large"},
        {TP_PROBLEM_UNSUPPORTED_MEDIA, 415, "unsupported-media-type"},
        {TP_PROBLEM_POLICY_DENIED, 403, "policy-denied"},
        {TP_PROBLEM_UNAVAILABLE, 503, "service-unavailable"},
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        tp_problem *p = tp_problem_new(want[i].k, "d");
        assert_int_equal(tp_problem_status(p), want[i].status);
        char *js = tp_problem_to_json(p, NULL);
        json_t *o = json_loads(js, 0, NULL);
        char type[128];
        snprintf(type, sizeof(type), "%s%s", TP_PROBLEM_TYPE_PREFIX, want[i].slug);
        assert_string_equal(json_string_value(json_object_get(o, "type")), type);
        assert_string_equal(json_string_value(json_object_get(o, "detail")), "d");
        json_decref(o);
        free(js);
        tp_problem_free(p);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seed_body_accepted),
        cmocka_unit_test(test_defaults_admin),
        cmocka_unit_test(test_defaults_self_serve_plan_starter),
        cmocka_unit_test(test_name_required),
        cmocka_unit_test(test_name_type),
        cmocka_unit_test(test_name_too_short),
        cmocka_unit_test(test_name_too_long_counts_code_points),
        cmocka_unit_test(test_slug_required),
        cmocka_unit_test(test_slug_too_short),
        cmocka_unit_test(test_slug_too_long),
        cmocka_unit_test(test_slug_pattern),
        cmocka_unit_test(test_residency_required),
        cmocka_unit_test(test_residency_enum),
        cmocka_unit_test(test_region_type),
        cmocka_unit_test(test_region_residency_mismatch),
        cmocka_unit_test(test_region_not_allowed),
        cmocka_unit_test(test_region_default_checked_against_allowlist),
        cmocka_unit_test(test_plan_enum),
        cmocka_unit_test(test_environment_enum),
        cmocka_unit_test(test_seats_range_and_type),
        cmocka_unit_test(test_storage_range_and_type),
        cmocka_unit_test(test_unknown_field_rejected_with_escaped_pointer),
        cmocka_unit_test(test_all_errors_collected),
        cmocka_unit_test(test_malformed_json),
        cmocka_unit_test(test_not_an_object),
        cmocka_unit_test(test_null_rejected_as_type),
        cmocka_unit_test(test_error_cap),
        cmocka_unit_test(test_problem_json_shape),
        cmocka_unit_test(test_problem_kinds_have_stable_types),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
