/* test_request: enum names round-trip; tp_request_validate applies DESIGN §4's field rules to
 * records that did not come through tp-ingress and names the field. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "tp/error.h"
#include "tp/request.h"

#include <stdio.h>
#include <string.h>

#define ALLOW "us-east-1, us-west-2,eu-central-1"

static void valid_request(tp_request *r) {
    memset(r, 0, sizeof(*r));
    snprintf(r->request_id, sizeof(r->request_id), "evt-1");
    snprintf(r->actor.id, sizeof(r->actor.id), "billing");
    snprintf(r->tenant.name, sizeof(r->tenant.name), "Acme Intel");
    snprintf(r->tenant.slug, sizeof(r->tenant.slug), "acme-intel");
}

static void expect_invalid(const tp_request *r, const char *want_field) {
    char field[64] = "", msg[128] = "";
    assert_int_equal(tp_request_validate(r, ALLOW, field, sizeof(field), msg, sizeof(msg)), TP_EVALIDATION);
    assert_string_equal(field, want_field);
    assert_true(msg[0] != '\0');
}

static void test_validate(void **state) {
    (void)state;
    tp_request r;
    char field[64], msg[128];
    valid_request(&r);
    assert_int_equal(tp_request_validate(&r, ALLOW, field, sizeof(field), msg, sizeof(msg)), 0);

    valid_request(&r); r.request_id[0] = '\0'; expect_invalid(&r, "/requestId");
    valid_request(&r); r.actor.id[0] = '\0'; expect_invalid(&r, "/actor/id");
    valid_request(&r); snprintf(r.tenant.name, sizeof(r.tenant.name), "A"); expect_invalid(&r, "/tenant/name");
    valid_request(&r); memset(r.tenant.name, 'x', 101); r.tenant.name[101] = '\0'; expect_invalid(&r, "/tenant/name");
    /* 100 two-byte characters are 100 characters, not 200 */
    valid_request(&r);
    for (int i = 0; i < 100; i++)
        memcpy(r.tenant.name + 2 * i, "\xc3\xa9", 2);
    r.tenant.name[200] = '\0';
    assert_int_equal(tp_request_validate(&r, ALLOW, field, sizeof(field), msg, sizeof(msg)), 0);
    valid_request(&r); snprintf(r.tenant.slug, sizeof(r.tenant.slug), "ab"); expect_invalid(&r, "/tenant/slug");
    valid_request(&r); snprintf(r.tenant.slug, sizeof(r.tenant.slug), "Acme"); expect_invalid(&r, "/tenant/slug");
    valid_request(&r); snprintf(r.tenant.slug, sizeof(r.tenant.slug), "a_b-c"); expect_invalid(&r, "/tenant/slug");
    valid_request(&r); r.has_requested_seats = true; r.requested_seats = 0; expect_invalid(&r, "/requestedSeats");
    valid_request(&r); r.has_requested_seats = true; r.requested_seats = 10001; expect_invalid(&r, "/requestedSeats");
    valid_request(&r); r.has_requested_seats = true; r.requested_seats = 10000;
    assert_int_equal(tp_request_validate(&r, ALLOW, field, sizeof(field), msg, sizeof(msg)), 0);
    valid_request(&r); r.has_storage_estimate = true; r.storage_estimate_bytes = -1; expect_invalid(&r, "/storageEstimateBytes");
    /* The region: the residency's default, or one of its own prefix that the allow-list holds. */
    valid_request(&r); r.tenant.residency = TP_RESIDENCY_EU;
    assert_int_equal(tp_request_validate(&r, ALLOW, field, sizeof(field), msg, sizeof(msg)), 0);
    valid_request(&r); snprintf(r.tenant.region, sizeof(r.tenant.region), "us-west-2");
    assert_int_equal(tp_request_validate(&r, ALLOW, field, sizeof(field), msg, sizeof(msg)), 0);
    valid_request(&r); snprintf(r.tenant.region, sizeof(r.tenant.region), "eu-central-1"); expect_invalid(&r, "/tenant/region");
    valid_request(&r); r.tenant.residency = TP_RESIDENCY_EU;
    snprintf(r.tenant.region, sizeof(r.tenant.region), "us-east-1"); expect_invalid(&r, "/tenant/region");
    valid_request(&r); snprintf(r.tenant.region, sizeof(r.tenant.region), "us-east-2"); expect_invalid(&r, "/tenant/region");
    valid_request(&r); snprintf(r.tenant.region, sizeof(r.tenant.region), "us-east-1x"); expect_invalid(&r, "/tenant/region");
    valid_request(&r);
    assert_int_equal(tp_request_validate(&r, "", field, sizeof(field), msg, sizeof(msg)), TP_EVALIDATION);
    assert_string_equal(field, "/tenant/region");
}

static void test_region_in_list(void **state) {
    (void)state;
    assert_true(tp_region_in_list("us-east-1,eu-west-1", "eu-west-1"));
    assert_true(tp_region_in_list(" us-east-1 , eu-west-1 ", "us-east-1"));
    assert_false(tp_region_in_list("us-east-1", "us-east"));
    assert_false(tp_region_in_list("us-east-1", ""));
    assert_false(tp_region_in_list("", "us-east-1"));
    assert_false(tp_region_in_list(NULL, "us-east-1"));
}

static void test_enum_names(void **state) {
    (void)state;
    tp_plan p;
    tp_environment e;
    assert_int_equal(tp_plan_parse(tp_plan_name(TP_PLAN_ENTERPRISE), &p), 0);
    assert_int_equal(p, TP_PLAN_ENTERPRISE);
    assert_int_equal(tp_environment_parse("staging", &e), 0);
    assert_int_equal(e, TP_ENV_STAGING);
    assert_int_equal(tp_plan_parse("enterprise", &p), TP_EINVAL);
    assert_string_equal(tp_default_region(TP_RESIDENCY_EU), "eu-central-1");
}

static void test_traceparent(void **state) {
    (void)state;
    static const char *good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    static const char *bad[] = {
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",   /* short */
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  /* version */
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  /* zero trace id */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  /* zero parent id */
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  /* upper case */
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  /* separator */
    };
    assert_true(tp_traceparent_valid(good, strlen(good)));
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_false(tp_traceparent_valid(bad[i], strlen(bad[i])));
    assert_false(tp_traceparent_valid(NULL, 0));
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_validate), cmocka_unit_test(test_enum_names),
                                       cmocka_unit_test(test_traceparent), cmocka_unit_test(test_region_in_list)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
