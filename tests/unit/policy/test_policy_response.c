/* test_policy_response.c: OPA answer → decision, for well-formed answers and for untrusted garbage
 * (missing result, wrong types, huge and non-string reasons, truncation on UTF-8 boundaries). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tp/error.h"
#include "tp/policy.h"

static int parse(const char *body, tp_policy_decision *d) {
    /* Poison the output first: the parser must overwrite every field it reports. */
    memset(d, 0x5a, sizeof(*d));
    return tp_policy_parse_response(body, strlen(body), d);
}

static void test_allow(void **state) {
    tp_policy_decision d;
    (void)state;
    assert_int_equal(parse("{\"decision_id\":\"4ca636c1-55e4-417a-b1d8-4aceb67960d1\","
                           "\"result\":{\"allow\":true,\"reasons\":[],\"revision\":\"tenants.provision/1\"}}",
                           &d),
                     0);
    assert_true(d.allow);
    assert_int_equal(d.n_reasons, 0);
    assert_string_equal(d.decision_id, "4ca636c1-55e4-417a-b1d8-4aceb67960d1");
    assert_string_equal(d.policy_revision, "tenants.provision/1");
}

static void test_allow_without_reasons_key(void **state) {
    tp_policy_decision d;
    (void)state;
    assert_int_equal(parse("{\"result\":{\"allow\":true}}", &d), 0);
    assert_true(d.allow);
    assert_string_equal(d.decision_id, "");
    assert_string_equal(d.policy_revision, "");
}

static void test_deny_with_reasons(void **state) {
    tp_policy_decision d;
    (void)state;
    assert_int_equal(parse("{\"decision_id\":\"abc\",\"result\":{\"allow\":false,"
                           "\"reasons\":[\"ENTERPRISE_NOT_SELF_SERVE\",\"SEATS_OVER_PLAN_CAP\"],"
                           "\"revision\":\"r1\"}}",
                           &d),
                     0);
    assert_false(d.allow);
    assert_int_equal(d.n_reasons, 2);
    assert_string_equal(d.reasons[0], "ENTERPRISE_NOT_SELF_SERVE");
    assert_string_equal(d.reasons[1], "SEATS_OVER_PLAN_CAP");
    assert_string_equal(d.decision_id, "abc");
    assert_string_equal(d.policy_revision, "r1");
}

static void test_missing_result_is_deny(void **state) {
    static const char *bodies[] = {"{}", "{\"decision_id\":\"x\"}", "{\"result\":null}",
                                   "{\"result\":true}", "{\"result\":[true]}", "{\"result\":\"allow\"}",
                                   "{\"Result\":{\"allow\":true}}"};
    tp_policy_decision d;
    (void)state;
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        assert_int_equal(parse(bodies[i], &d), 0);
        assert_false(d.allow);
        assert_int_equal(d.n_reasons, 1);
        assert_string_equal(d.reasons[0], "NO_RESULT");
    }
    assert_int_equal(parse("{\"decision_id\":\"x\"}", &d), 0);
    assert_string_equal(d.decision_id, "x");
}

static void test_wrong_types_are_deny(void **state) {
    static const char *bodies[] = {
        "{\"result\":{}}",
        "{\"result\":{\"allow\":\"true\"}}",
        "{\"result\":{\"allow\":1}}",
        "{\"result\":{\"allow\":null}}",
        "{\"result\":{\"allow\":[true]}}",
        "{\"result\":{\"allow\":true,\"reasons\":\"none\"}}",
        "{\"result\":{\"allow\":true,\"reasons\":{}}}",
        "{\"result\":{\"allow\":false,\"reasons\":7}}",
    };
    tp_policy_decision d;
    (void)state;
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        assert_int_equal(parse(bodies[i], &d), 0);
        assert_false(d.allow);
        assert_int_equal(d.n_reasons, 1);
        assert_string_equal(d.reasons[0], "MALFORMED_RESULT");
    }
}

static void test_allow_with_reasons_is_deny(void **state) {
    tp_policy_decision d;
    (void)state;
    assert_int_equal(parse("{\"result\":{\"allow\":true,\"reasons\":[\"REGION_NOT_ALLOWED\"]}}", &d), 0);
    assert_false(d.allow);
    assert_int_equal(d.n_reasons, 2);
    assert_string_equal(d.reasons[0], "REGION_NOT_ALLOWED");
    assert_string_equal(d.reasons[1], "MALFORMED_RESULT");
    /* Non-string reasons still contradict an allow. */
    assert_int_equal(parse("{\"result\":{\"allow\":true,\"reasons\":[1]}}", &d), 0);
    assert_false(d.allow);
    assert_int_equal(d.n_reasons, 1);
    assert_string_equal(d.reasons[0], "MALFORMED_RESULT");
}

static void test_non_string_reasons_skipped(void **state) {
    tp_policy_decision d;
    (void)state;
    assert_int_equal(parse("{\"result\":{\"allow\":false,\"reasons\":[1,null,\"A\",{\"x\":1},[\"B\"],"
                           "true,\"C\",2.5]}}",
                           &d),
                     0);
    assert_false(d.allow);
    assert_int_equal(d.n_reasons, 2);
    assert_string_equal(d.reasons[0], "A");
    assert_string_equal(d.reasons[1], "C");
}

/* Builds {"result":{"allow":false,"reasons":["R0","R1",...]}} with n reasons. */
static char *reasons_body(int n) {
    size_t cap = 64 + (size_t)n * 16;
    char *body = malloc(cap);
    size_t off;
    assert_non_null(body);
    off = (size_t)snprintf(body, cap, "{\"result\":{\"allow\":false,\"reasons\":[");
    for (int i = 0; i < n; i++)
        off += (size_t)snprintf(body + off, cap - off, "%s\"R%d\"", i ? "," : "", i);
    snprintf(body + off, cap - off, "]}}");
    return body;
}

static void test_huge_reasons_array(void **state) {
    tp_policy_decision d;
    char *body;
    (void)state;
    body = reasons_body(100000);
    assert_int_equal(parse(body, &d), 0);
    free(body);
    assert_false(d.allow);
    assert_int_equal(d.n_reasons, TP_POLICY_REASONS_MAX);
    assert_string_equal(d.reasons[0], "R0");
    assert_string_equal(d.reasons[TP_POLICY_REASONS_MAX - 2], "R14");
    assert_string_equal(d.reasons[TP_POLICY_REASONS_MAX - 1], "REASONS_TRUNCATED");
}

static void test_exactly_max_reasons_kept_whole(void **state) {
    tp_policy_decision d;
    char *body;
    (void)state;
    body = reasons_body(TP_POLICY_REASONS_MAX);
    assert_int_equal(parse(body, &d), 0);
    free(body);
    assert_int_equal(d.n_reasons, TP_POLICY_REASONS_MAX);
    assert_string_equal(d.reasons[TP_POLICY_REASONS_MAX - 1], "R15");
    body = reasons_body(TP_POLICY_REASONS_MAX + 1);
    assert_int_equal(parse(body, &d), 0);
    free(body);
    assert_int_equal(d.n_reasons, TP_POLICY_REASONS_MAX);
    assert_string_equal(d.reasons[TP_POLICY_REASONS_MAX - 1], "REASONS_TRUNCATED");
}

static void test_long_reason_cut_on_utf8_boundary(void **state) {
    /* 300 bytes of 'é' (2 bytes each): byte 255, the first one past the field, is the second
     * byte of a character, so the cut must back off to 254 bytes (127 whole characters). */
    char body[1024], reason[400];
    tp_policy_decision d;
    size_t len;
    (void)state;
    for (len = 0; len < 300; len += 2) {
        reason[len] = (char)0xC3;
        reason[len + 1] = (char)0xA9;
    }
    reason[len] = '\0';
    snprintf(body, sizeof(body), "{\"result\":{\"allow\":false,\"reasons\":[\"%s\"]}}", reason);
    assert_int_equal(parse(body, &d), 0);
    assert_int_equal(d.n_reasons, 1);
    assert_int_equal(strlen(d.reasons[0]), 254);
    assert_memory_equal(d.reasons[0], reason, 254);
    /* An ASCII reason is cut at exactly TP_POLICY_REASON_LEN bytes. */
    memset(reason, 'Q', 300);
    reason[300] = '\0';
    snprintf(body, sizeof(body), "{\"result\":{\"allow\":false,\"reasons\":[\"%s\"]}}", reason);
    assert_int_equal(parse(body, &d), 0);
    assert_int_equal(strlen(d.reasons[0]), TP_POLICY_REASON_LEN);
}

static void test_overlong_ids_dropped(void **state) {
    char body[1024], id[300];
    tp_policy_decision d;
    (void)state;
    memset(id, 'a', sizeof(id) - 1);
    id[sizeof(id) - 1] = '\0';
    snprintf(body, sizeof(body), "{\"decision_id\":\"%s\",\"result\":{\"allow\":true,\"revision\":\"%s\"}}", id, id);
    assert_int_equal(parse(body, &d), 0);
    assert_true(d.allow);
    assert_string_equal(d.decision_id, "");
    assert_string_equal(d.policy_revision, "");
    assert_int_equal(parse("{\"decision_id\":42,\"result\":{\"allow\":true,\"revision\":[]}}", &d), 0);
    assert_string_equal(d.decision_id, "");
    assert_string_equal(d.policy_revision, "");
}

static void test_garbage_is_bad_response(void **state) {
    static const char *bodies[] = {
        "", "null", "true", "42", "\"result\"", "[]", "[{\"result\":{\"allow\":true}}]",
        "{\"result\":{\"allow\":true}", "{\"result\":{\"allow\":true}} trailing",
        "<html>502 Bad Gateway</html>", "{\"result\":{\"allow\":tru}}",
        /* duplicate keys could hide an allow behind a deny */
        "{\"result\":{\"allow\":false},\"result\":{\"allow\":true}}",
        "{\"result\":{\"allow\":false,\"allow\":true}}",
        "{\"result\":{\"allow\":false,\"reasons\":[\"\\u0000\"]}}",
        "{\"result\":{\"allow\":false,\"reasons\":[\"\xff\xfe\"]}}",
    };
    tp_policy_decision d;
    (void)state;
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        assert_int_equal(parse(bodies[i], &d), TP_EOPA_BAD_RESPONSE);
        assert_false(d.allow);
    }
    assert_int_equal(tp_policy_parse_response(NULL, 0, &d), TP_EOPA_BAD_RESPONSE);
    assert_false(d.allow);
}

static void test_length_is_respected(void **state) {
    /* The body is not NUL-terminated where len says it ends: the tail must be ignored. */
    static const char body[] = "{\"result\":{\"allow\":true}}GARBAGE";
    tp_policy_decision d;
    (void)state;
    assert_int_equal(tp_policy_parse_response(body, strlen(body) - 7, &d), 0);
    assert_true(d.allow);
    assert_int_equal(tp_policy_parse_response(body, 10, &d), TP_EOPA_BAD_RESPONSE);
    assert_false(d.allow);
}

static void test_deep_nesting(void **state) {
    size_t depth = 100000, i;
    char *body = malloc(depth * 2 + 64);
    tp_policy_decision d;
    (void)state;
    assert_non_null(body);
    strcpy(body, "{\"result\":{\"allow\":false,\"reasons\":");
    i = strlen(body);
    memset(body + i, '[', depth);
    memset(body + i + depth, ']', depth);
    strcpy(body + i + 2 * depth, "}}");
    assert_int_equal(parse(body, &d), TP_EOPA_BAD_RESPONSE);
    assert_false(d.allow);
    free(body);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_allow),
        cmocka_unit_test(test_allow_without_reasons_key),
        cmocka_unit_test(test_deny_with_reasons),
        cmocka_unit_test(test_missing_result_is_deny),
        cmocka_unit_test(test_wrong_types_are_deny),
        cmocka_unit_test(test_allow_with_reasons_is_deny),
        cmocka_unit_test(test_non_string_reasons_skipped),
        cmocka_unit_test(test_huge_reasons_array),
        cmocka_unit_test(test_exactly_max_reasons_kept_whole),
        cmocka_unit_test(test_long_reason_cut_on_utf8_boundary),
        cmocka_unit_test(test_overlong_ids_dropped),
        cmocka_unit_test(test_garbage_is_bad_response),
        cmocka_unit_test(test_length_is_respected),
        cmocka_unit_test(test_deep_nesting),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
