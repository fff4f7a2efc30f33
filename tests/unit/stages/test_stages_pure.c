/* test_stages_pure.c: the parts of worker/stages that need no database: the stage table, error
 * reasons, the isolation guard's evaluation, quota vectors and the request JSON round trip. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stages/stages_int.h"
#include "tp/config.h"
#include "tp/error.h"

static void test_stage_table(void **state) {
    static const char *order[] = {"policy", "tenant", "namespace", "partitions", "quota",
                                  "receipts", "isolation"};
    tp_stage_id id;
    (void)state;
    for (int i = 0; i < TP_PROVISION_STAGES; i++) {
        assert_string_equal(tp_stage_name((tp_stage_id)i), order[i]);
        assert_int_equal(tp_stage_table[i].id, i);
        assert_non_null(tp_stage_table[i].run);
        assert_int_equal(tp_stage_parse(order[i], &id), 0);
        assert_int_equal(id, i);
    }
    assert_non_null(tp_stage_table[TP_STAGE_POLICY].prepare); /* OPA outside the transaction */
    assert_null(tp_stage_table[TP_STAGE_TENANT].prepare);
    assert_string_equal(tp_stage_name(TP_STAGE_STATE), "state"); /* tenant actions only */
    assert_int_equal(tp_stage_parse("state", &id), 0);
    assert_int_equal(id, TP_STAGE_STATE);
    assert_string_equal(tp_stage_name(TP_STAGE_COUNT_), "?");
    assert_int_equal(tp_stage_parse("nope", &id), TP_EINVAL);
    assert_int_equal(tp_stage_parse(NULL, &id), TP_EINVAL);
}

static void test_reasons(void **state) {
    (void)state;
    assert_string_equal(tp_stage_reason_of(TP_ESLUG_TAKEN), "SLUG_TAKEN");
    assert_string_equal(tp_stage_reason_of(TP_EOPA_UNAVAILABLE), "OPA_UNAVAILABLE");
    assert_string_equal(tp_stage_reason_of(TP_EDB_PERMANENT), "DB_PERMANENT");
}

static tp_isolation_facts good_facts(void) {
    tp_isolation_facts f;
    memset(&f, 0, sizeof(f));
    f.tenant_id = "tenant-1";
    f.residency = "US";
    f.tenant_region = "us-east-1";
    f.plan = "PRO";
    f.n_namespaces = 1;
    f.namespace_ok = true;
    f.n_partitions = 3;
    f.partitions_owned = f.partitions_isolation_ok = f.partitions_region_ok = true;
    f.n_quotas = 1;
    f.quota_matches_plan = true;
    f.region_allowed = true;
    return f;
}

static bool check(const tp_isolation_check *c, const char *name) {
    for (int i = 0; i < TP_ISOLATION_CHECKS; i++)
        if (strcmp(c[i].name, name) == 0)
            return c[i].passed;
    fail_msg("no check %s", name);
    return false;
}

static void test_isolation_evaluate(void **state) {
    tp_isolation_check c[TP_ISOLATION_CHECKS];
    tp_isolation_facts f = good_facts();
    (void)state;
    assert_true(tp_isolation_evaluate(&f, c));
    for (int i = 0; i < TP_ISOLATION_CHECKS; i++)
        assert_true(c[i].passed);

    f = good_facts(); f.n_namespaces = 2;
    assert_false(tp_isolation_evaluate(&f, c));
    assert_false(check(c, "namespace_owned_by_tenant"));
    assert_true(check(c, "partitions_owned_by_tenant"));

    f = good_facts(); f.n_partitions = 4;
    assert_false(tp_isolation_evaluate(&f, c));
    assert_false(check(c, "partitions_owned_by_tenant"));

    f = good_facts(); f.partitions_isolation_ok = false;
    assert_false(tp_isolation_evaluate(&f, c));

    f = good_facts(); f.residency = "EU"; /* us-east-1 under EU residency */
    assert_false(tp_isolation_evaluate(&f, c));
    assert_false(check(c, "regions_match_residency"));
    f.tenant_region = "eu-central-1";
    assert_true(tp_isolation_evaluate(&f, c));

    f = good_facts(); f.residency = "XX";
    assert_false(tp_isolation_evaluate(&f, c));

    f = good_facts(); f.partitions_region_ok = false;
    assert_false(tp_isolation_evaluate(&f, c));
    f = good_facts(); f.region_allowed = false;
    assert_false(tp_isolation_evaluate(&f, c));

    f = good_facts(); f.n_quotas = 0;
    assert_false(tp_isolation_evaluate(&f, c));
    assert_false(check(c, "quota_matches_plan"));
    f = good_facts(); f.quota_matches_plan = false;
    assert_false(tp_isolation_evaluate(&f, c));

    f = good_facts(); f.kill_switch = true;
    assert_false(tp_isolation_evaluate(&f, c));
    assert_false(check(c, "kill_switch_off"));
    assert_true(check(c, "quota_matches_plan"));
}

static void test_quota_for_plan(void **state) {
    char *tiers = NULL;
    size_t len = 0;
    tp_quota_tier q;
    (void)state;
    assert_int_equal(tp_read_file("config/quota-tiers.json", 65536, &tiers, &len), 0);
    assert_int_equal(tp_quota_tiers_get(tiers, TP_PLAN_ENTERPRISE, &q), 0);
    assert_int_equal(q.requests_per_minute, 10000);
    assert_int_equal(q.requests_per_day, 10000000);
    assert_int_equal(q.ingest_events_per_minute, 50000);
    assert_int_equal(q.max_tokens_per_request, 32000);
    assert_int_equal(q.storage_bytes, 1000000000000LL);
    assert_int_equal(q.seat_cap, 500);
    assert_true(q.burst_multiplier > 1.49 && q.burst_multiplier < 1.51);
    assert_int_equal(tp_quota_tiers_get(tiers, TP_PLAN_FREE, &q), 0);
    assert_int_equal(q.storage_bytes, 5000000000LL);
    assert_int_equal(q.seat_cap, 5);
    free(tiers);
    assert_int_equal(tp_quota_tiers_get(NULL, TP_PLAN_FREE, &q), TP_ECONFIG);
    assert_int_equal(tp_quota_tiers_get("{", TP_PLAN_FREE, &q), TP_ECONFIG);
    assert_int_equal(tp_quota_tiers_get("{\"FREE\":{}}", TP_PLAN_FREE, &q), TP_ECONFIG);
}

static void test_request_json_round_trip(void **state) {
    tp_request a, b;
    (void)state;
    memset(&a, 0, sizeof(a));
    snprintf(a.request_id, sizeof(a.request_id), "evt-123");
    snprintf(a.idempotency_key, sizeof(a.idempotency_key), "idem-1");
    a.source = TP_SOURCE_SELF_SERVE_API;
    snprintf(a.actor.id, sizeof(a.actor.id), "user-1");
    snprintf(a.actor.type, sizeof(a.actor.type), "user");
    a.actor.n_roles = 2;
    snprintf(a.actor.roles[0], sizeof(a.actor.roles[0]), "member");
    snprintf(a.actor.roles[1], sizeof(a.actor.roles[1]), "billing\"quote");
    snprintf(a.tenant.name, sizeof(a.tenant.name), "Acme \xc3\xa9 Intel");
    snprintf(a.tenant.slug, sizeof(a.tenant.slug), "acme-intel");
    a.tenant.residency = TP_RESIDENCY_EU;
    snprintf(a.tenant.region, sizeof(a.tenant.region), "eu-west-1");
    a.plan = TP_PLAN_PRO;
    a.environment = TP_ENV_DEV;
    a.has_requested_seats = true;
    a.requested_seats = 25;
    a.has_storage_estimate = true;
    a.storage_estimate_bytes = 123456789012LL;
    snprintf(a.correlation_id, sizeof(a.correlation_id), "corr-9");
    a.submitted_at_ms = 1700000000123LL;

    char *js = tp_stages_request_json(&a);
    assert_non_null(js);
    assert_int_equal(tp_stages_request_from_json(js, &b), 0);
    free(js);
    assert_memory_equal(&a, &b, sizeof(a));

    /* Optional fields absent stay absent. */
    a.has_requested_seats = a.has_storage_estimate = false;
    a.requested_seats = 0;
    a.storage_estimate_bytes = 0;
    memset(a.idempotency_key, 0, sizeof(a.idempotency_key));
    memset(a.correlation_id, 0, sizeof(a.correlation_id));
    memset(a.tenant.region, 0, sizeof(a.tenant.region));
    a.actor.n_roles = 0;
    memset(a.actor.roles, 0, sizeof(a.actor.roles));
    js = tp_stages_request_json(&a);
    assert_non_null(js);
    assert_null(strstr(js, "requestedSeats"));
    assert_int_equal(tp_stages_request_from_json(js, &b), 0);
    free(js);
    assert_memory_equal(&a, &b, sizeof(a));
}

static void test_request_json_rejects(void **state) {
    tp_request r;
    char big[400];
    (void)state;
    assert_int_equal(tp_stages_request_from_json(NULL, &r), TP_EINVAL);
    assert_int_equal(tp_stages_request_from_json("", &r), TP_EINVAL);
    assert_int_equal(tp_stages_request_from_json("[]", &r), TP_EINVAL);
    assert_int_equal(tp_stages_request_from_json("{\"requestId\":\"x\"}", &r), TP_EINVAL);
    const char *base = "{\"requestId\":\"r\",\"source\":\"ADMIN_API\",\"actor\":{\"id\":\"a\","
                       "\"type\":\"user\"},\"tenant\":{\"name\":\"n\",\"slug\":\"s\","
                       "\"residency\":\"US\"},\"plan\":\"PRO\",\"environment\":\"prod\"}";
    assert_int_equal(tp_stages_request_from_json(base, &r), 0);
    assert_string_equal(r.tenant.slug, "s");
    assert_int_equal(tp_stages_request_from_json(
                         "{\"requestId\":\"r\",\"source\":\"ADMIN_API\",\"actor\":{\"id\":\"a\","
                         "\"type\":\"user\"},\"tenant\":{\"name\":\"n\",\"slug\":\"s\","
                         "\"residency\":\"MARS\"},\"plan\":\"PRO\",\"environment\":\"prod\"}", &r),
                     TP_EINVAL);
    assert_int_equal(tp_stages_request_from_json(
                         "{\"requestId\":\"r\",\"source\":\"ADMIN_API\",\"actor\":{\"id\":\"a\","
                         "\"type\":\"user\"},\"tenant\":{\"name\":\"n\",\"slug\":\"s\","
                         "\"residency\":\"US\"},\"plan\":\"PRO\",\"environment\":\"prod\","
                         "\"requestedSeats\":\"many\"}", &r),
                     TP_EINVAL);
    /* A slug longer than the fixed field is refused, not truncated. */
    memset(big, 'a', 100);
    big[100] = '\0';
    char doc[1024];
    snprintf(doc, sizeof(doc),
             "{\"requestId\":\"r\",\"source\":\"ADMIN_API\",\"actor\":{\"id\":\"a\",\"type\":\"user\"},"
             "\"tenant\":{\"name\":\"n\",\"slug\":\"%s\",\"residency\":\"US\"},\"plan\":\"PRO\","
             "\"environment\":\"prod\"}", big);
    assert_int_equal(tp_stages_request_from_json(doc, &r), TP_EDECODE_TOO_LARGE);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stage_table),
        cmocka_unit_test(test_reasons),
        cmocka_unit_test(test_isolation_evaluate),
        cmocka_unit_test(test_quota_for_plan),
        cmocka_unit_test(test_request_json_round_trip),
        cmocka_unit_test(test_request_json_rejects),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
