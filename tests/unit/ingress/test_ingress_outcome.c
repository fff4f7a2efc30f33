/* test_ingress_outcome.c: `Prefer: wait=N` parsing (RFC 7240) and the mapping of a status view to
 * the answer of a POST (201 with the seed's body, 403, 409, 500, not terminal, garbage). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tp/error.h"
#include "tp/ingress.h"

static int wait_of(const char *s) { return tp_ingress_parse_prefer_wait(s, strlen(s)); }

static void test_prefer_wait(void **state) {
    (void)state;
    assert_int_equal(wait_of("wait=10"), 10);
    assert_int_equal(wait_of("WAIT=3"), 3);
    assert_int_equal(wait_of("wait = 7"), 7);
    assert_int_equal(wait_of("wait=\"5\""), 5);
    assert_int_equal(wait_of("respond-async, wait=4"), 4);
    assert_int_equal(wait_of("return=minimal; foo=\"a,b\", wait=2"), 2);
    assert_int_equal(wait_of("wait=2; x=y"), 2);
    assert_int_equal(wait_of("wait=0"), 0);
    assert_int_equal(wait_of("wait=31"), TP_INGRESS_WAIT_MAX_S);
    assert_int_equal(wait_of("wait=99999999999999999999"), TP_INGRESS_WAIT_MAX_S);
    assert_int_equal(wait_of(""), -1);
    assert_int_equal(wait_of("respond-async"), -1);
    assert_int_equal(wait_of("wait"), -1);
    assert_int_equal(wait_of("wait="), -1);
    assert_int_equal(wait_of("wait=-1"), -1);
    assert_int_equal(wait_of("wait=1x"), -1);
    assert_int_equal(wait_of("wait=\"3"), -1);
    assert_int_equal(wait_of("waiting=3"), -1);
    assert_int_equal(wait_of("x=\"wait=3\""), -1);
    assert_int_equal(tp_ingress_parse_prefer_wait(NULL, 0), -1);
    /* Not NUL-terminated: only len bytes count. */
    assert_int_equal(tp_ingress_parse_prefer_wait("wait=12345", 6), 1);
}

#define SUCCEEDED_VIEW                                                                             \
    "{\"requestId\":\"r-1\",\"state\":\"SUCCEEDED\",\"failureReason\":null,\"conditions\":[],"      \
    "\"policy\":{\"opa\":{\"allow\":true,\"decisionId\":\"d-9\",\"policyRevision\":\"x\","         \
    "\"reasons\":[]}},"                                                                            \
    "\"tenant\":{\"id\":\"tenant-1\",\"name\":\"Acme Intel\",\"slug\":\"acme-intel\","             \
    "\"residency\":\"US\",\"ownerId\":null},"                                                      \
    "\"namespace\":{\"id\":\"ns_tenant-1\",\"slug\":\"acme-intel-prod\",\"environment\":\"prod\"}," \
    "\"partitions\":[{\"id\":\"part_tenant-1_primary\",\"name\":\"primary\",\"type\":\"primary\","  \
    "\"region\":\"us-east-1\",\"isolation\":\"dedicated\"},"                                       \
    "{\"id\":\"part_tenant-1_analytics\",\"name\":\"analytics\",\"type\":\"analytics\"},"          \
    "{\"id\":\"part_tenant-1_audit\",\"name\":\"audit\",\"type\":\"audit\"}],"                     \
    "\"quota\":{\"tier\":\"ENTERPRISE\",\"requestsPerMinute\":10000,\"requestsPerDay\":10000000,"  \
    "\"ingestEventsPerMinute\":50000,\"maxTokensPerRequest\":32000,\"storageBytes\":1000000000000," \
    "\"seatCap\":500,\"burstMultiplier\":1.5},"                                                    \
    "\"receipts\":{\"provisioning\":{\"id\":\"prov_a\",\"actionType\":\"TENANT_PROVISIONED\","     \
    "\"sequence\":1,\"published\":true},\"quotaAssignment\":{\"id\":\"prov_b\",\"actionType\":"    \
    "\"TENANT_QUOTA_ASSIGNED\",\"sequence\":2,\"published\":false}}}"

static json_t *outcome(const char *view, int want_status, bool want_problem) {
    int status = -1;
    char *body = NULL;
    bool problem = !want_problem;
    assert_int_equal(tp_ingress_outcome(view, &status, &body, &problem), 0);
    assert_int_equal(status, want_status);
    if (want_status == 0) {
        assert_null(body);
        return NULL;
    }
    assert_int_equal(problem, want_problem);
    assert_non_null(body);
    json_t *o = json_loads(body, 0, NULL);
    free(body);
    assert_non_null(o);
    return o;
}

static const char *path_str(json_t *o, const char *a, const char *b, const char *c) {
    json_t *v = json_object_get(o, a);
    if (b)
        v = json_object_get(v, b);
    if (c)
        v = json_object_get(v, c);
    return json_string_value(v);
}

static void test_succeeded_is_the_seed_body(void **state) {
    (void)state;
    json_t *o = outcome(SUCCEEDED_VIEW, 201, false);
    assert_true(json_is_true(json_object_get(o, "success")));
    assert_string_equal(path_str(o, "data", "tenant", "id"), "tenant-1");
    assert_string_equal(path_str(o, "data", "tenant", "name"), "Acme Intel");
    assert_string_equal(path_str(o, "data", "tenant", "slug"), "acme-intel");
    assert_int_equal(json_object_size(json_object_get(json_object_get(o, "data"), "tenant")), 3);
    assert_string_equal(path_str(o, "data", "namespace", "id"), "ns_tenant-1");
    assert_string_equal(path_str(o, "data", "namespace", "slug"), "acme-intel-prod");
    assert_string_equal(path_str(o, "data", "namespace", "environment"), "prod");
    json_t *parts = json_object_get(json_object_get(o, "data"), "partitions");
    assert_int_equal(json_array_size(parts), 3);
    assert_string_equal(json_string_value(json_object_get(json_array_get(parts, 0), "id")), "part_tenant-1_primary");
    assert_string_equal(json_string_value(json_object_get(json_array_get(parts, 2), "type")), "audit");
    assert_int_equal(json_object_size(json_array_get(parts, 0)), 3); /* id, name, type only */
    json_t *quota = json_object_get(json_object_get(o, "data"), "quota");
    assert_string_equal(json_string_value(json_object_get(quota, "tier")), "ENTERPRISE");
    assert_int_equal(json_integer_value(json_object_get(quota, "requestsPerDay")), 10000000);
    assert_int_equal(json_integer_value(json_object_get(quota, "seatCap")), 500);
    assert_true(json_real_value(json_object_get(quota, "burstMultiplier")) == 1.5);
    assert_string_equal(path_str(o, "receipts", "provisioning", "id"), "prov_a");
    assert_string_equal(path_str(o, "receipts", "provisioning", "actionType"), "TENANT_PROVISIONED");
    assert_string_equal(path_str(o, "receipts", "quotaAssignment", "actionType"), "TENANT_QUOTA_ASSIGNED");
    assert_null(json_object_get(json_object_get(json_object_get(o, "receipts"), "quotaAssignment"), "sequence"));
    assert_true(json_is_true(json_object_get(json_object_get(json_object_get(o, "policy"), "opa"), "allow")));
    assert_string_equal(path_str(o, "policy", "opa", "decisionId"), "d-9");
    assert_int_equal(json_object_size(o), 4); /* success, data, receipts, policy */
    json_decref(o);
}

static void test_terminal_failures(void **state) {
    (void)state;
    json_t *o = outcome("{\"requestId\":\"r-2\",\"state\":\"DENIED\",\"failureReason\":\"POLICY_DENIED\","
                        "\"policy\":{\"opa\":{\"allow\":false,\"decisionId\":\"d-1\",\"reasons\":"
                        "[\"ENTERPRISE_NOT_SELF_SERVE\",7,\"SEATS_OVER_CAP\"]}}}",
                        403, true);
    assert_string_equal(json_string_value(json_object_get(o, "type")), TP_PROBLEM_TYPE_PREFIX "policy-denied");
    json_t *reasons = json_object_get(o, "reasons");
    assert_int_equal(json_array_size(reasons), 2);
    assert_string_equal(json_string_value(json_array_get(reasons, 0)), "ENTERPRISE_NOT_SELF_SERVE");
    assert_string_equal(json_string_value(json_object_get(o, "decisionId")), "d-1");
    assert_string_equal(json_string_value(json_object_get(o, "requestId")), "r-2");
    json_decref(o);

    o = outcome("{\"requestId\":\"r-3\",\"state\":\"FAILED\",\"failureReason\":\"SLUG_TAKEN\","
                "\"failureMessage\":\"slug acme is held by request r-0\"}",
                409, true);
    assert_string_equal(json_string_value(json_object_get(o, "type")), TP_PROBLEM_TYPE_PREFIX "slug-taken");
    assert_string_equal(json_string_value(json_object_get(o, "failureReason")), "SLUG_TAKEN");
    json_decref(o);

    o = outcome("{\"requestId\":\"r-4\",\"state\":\"FAILED\",\"failureReason\":\"ISOLATION_VIOLATION\","
                "\"failureMessage\":null}",
                500, true);
    assert_string_equal(json_string_value(json_object_get(o, "type")), TP_PROBLEM_TYPE_PREFIX "provisioning-failed");
    assert_string_equal(json_string_value(json_object_get(o, "failureReason")), "ISOLATION_VIOLATION");
    assert_non_null(strstr(json_string_value(json_object_get(o, "detail")), "ISOLATION_VIOLATION"));
    json_decref(o);
}

static void test_not_terminal_and_garbage(void **state) {
    (void)state;
    outcome("{\"requestId\":\"r\",\"state\":\"ACCEPTED\"}", 0, false);
    outcome("{\"requestId\":\"r\",\"state\":\"RUNNING\"}", 0, false);
    int status = 7;
    char *body = (char *)1;
    bool problem = true;
    static const char *const bad[] = {"", "null", "[]", "{\"state\":3}", "{\"state\":", "{}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(tp_ingress_outcome(bad[i], &status, &body, &problem), TP_EINVAL);
        assert_int_equal(status, 0);
        assert_null(body);
    }
    assert_int_equal(tp_ingress_outcome(NULL, &status, &body, &problem), TP_EINVAL);
    /* A SUCCEEDED view with parts missing still gives a well-formed body (nulls). */
    json_t *o = outcome("{\"state\":\"SUCCEEDED\",\"partitions\":7}", 201, false);
    assert_true(json_is_null(json_object_get(json_object_get(json_object_get(o, "data"), "tenant"), "id")));
    assert_int_equal(json_array_size(json_object_get(json_object_get(o, "data"), "partitions")), 0);
    json_decref(o);
    assert_true(tp_ingress_state_is_terminal("SUCCEEDED"));
    assert_true(tp_ingress_state_is_terminal("DENIED"));
    assert_false(tp_ingress_state_is_terminal("RUNNING"));
    assert_false(tp_ingress_state_is_terminal(NULL));
}

/* A tenant action's answer: SUCCEEDED is 200 with the view; a refusal for the tenant's state, or
 * for a tenant that changed under a decision, is a 409 invalid-state problem naming the reason. */
static json_t *action_outcome(const char *view, int want_status) {
    int status = 0;
    char *body = NULL;
    bool problem = false;
    assert_int_equal(tp_ingress_action_outcome(view, &status, &body, &problem), 0);
    assert_int_equal(status, want_status);
    json_t *o = json_loads(body, 0, NULL);
    free(body);
    assert_non_null(o);
    return o;
}

static void test_action_outcomes(void **state) {
    (void)state;
    json_t *o = action_outcome("{\"requestId\":\"r\",\"state\":\"SUCCEEDED\",\"action\":\"SUSPEND\"}", 200);
    assert_string_equal(json_string_value(json_object_get(o, "action")), "SUSPEND");
    json_decref(o);
    static const char *const conflicts[] = {"INVALID_STATE", "TENANT_CHANGED"};
    for (size_t i = 0; i < 2; i++) {
        char view[256];
        snprintf(view, sizeof(view), "{\"requestId\":\"r\",\"state\":\"FAILED\",\"failureReason\":"
                                     "\"%s\",\"failureMessage\":\"why\"}", conflicts[i]);
        o = action_outcome(view, 409);
        assert_string_equal(json_string_value(json_object_get(o, "failureReason")), conflicts[i]);
        json_decref(o);
    }
    o = action_outcome("{\"requestId\":\"r\",\"state\":\"FAILED\",\"failureReason\":\"TENANT_NOT_FOUND\"}", 404);
    json_decref(o);
    o = action_outcome("{\"requestId\":\"r\",\"state\":\"FAILED\",\"failureReason\":\"RETRIES_EXHAUSTED\"}", 500);
    json_decref(o);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prefer_wait),
        cmocka_unit_test(test_succeeded_is_the_seed_body),
        cmocka_unit_test(test_terminal_failures),
        cmocka_unit_test(test_not_terminal_and_garbage),
        cmocka_unit_test(test_action_outcomes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
