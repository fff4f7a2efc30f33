/* test_stages_actions.c: the pure rules of tenant actions (worker/stages/actions.c): which action
 * is valid from which state, the list of changes each action makes (plan, seats, quota vector,
 * partition isolation, status, purge-after), the reason names, and the action input of OPA. */
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

static void test_valid_states(void **state) {
    static const char *states[] = {"provisioning", "active", "suspended", "deprovisioned",
                                   "quarantined"};
    /* rows: CHANGE_PLAN, SUSPEND, RESUME, DEPROVISION; columns: states[] */
    static const bool want[4][5] = {
        {false, true, true, false, false},
        {false, true, false, false, false},
        {false, false, true, false, false},
        {false, true, true, false, true},
    };
    (void)state;
    for (int a = 0; a < 4; a++)
        for (int s = 0; s < 5; s++)
            assert_int_equal(tp_action_valid_in((tp_action)(a + 1), states[s]), want[a][s]);
    for (int s = 0; s < 5; s++)
        assert_false(tp_action_valid_in(TP_ACTION_PROVISION, states[s]));
    assert_false(tp_action_valid_in(TP_ACTION_SUSPEND, NULL));
    assert_false(tp_action_valid_in(TP_ACTION_SUSPEND, "ACTIVE"));
    assert_false(tp_action_valid_in((tp_action)9, "active"));
}

static void test_reason_names(void **state) {
    (void)state;
    assert_string_equal(tp_preview_reason_name(TP_PREVIEW_ALLOWED), "ALLOWED");
    assert_string_equal(tp_preview_reason_name(TP_PREVIEW_TENANT_NOT_FOUND), "TENANT_NOT_FOUND");
    assert_string_equal(tp_preview_reason_name(TP_PREVIEW_INVALID_STATE), "INVALID_STATE");
    assert_string_equal(tp_preview_reason_name(TP_PREVIEW_POLICY_DENIED), "POLICY_DENIED");
    assert_string_equal(tp_preview_reason_name(TP_PREVIEW_NOT_AN_ACTION), "NOT_AN_ACTION");
}

static const char *pro_tenant =
    "{\"id\":\"tenant-1\",\"slug\":\"acme\",\"status\":\"active\",\"plan\":\"PRO\","
    "\"ownerId\":null,\"seats\":40,\"storageEstimateBytes\":1000,\"suspendedReason\":null,"
    "\"deprovisionedAt\":null,\"purgeAfter\":null,"
    "\"quota\":{\"tier\":\"PRO\",\"requestsPerMinute\":1000,\"requestsPerDay\":1000000,"
    "\"ingestEventsPerMinute\":5000,\"maxTokensPerRequest\":16000,\"storageBytes\":250000000000,"
    "\"seatCap\":150,\"burstMultiplier\":1.2},"
    "\"partitions\":[{\"id\":\"p1\",\"name\":\"primary\",\"isolation\":\"shared\",\"purgeAfter\":null},"
    "{\"id\":\"p2\",\"name\":\"analytics\",\"isolation\":\"shared\",\"purgeAfter\":null},"
    "{\"id\":\"p3\",\"name\":\"audit\",\"isolation\":\"shared\",\"purgeAfter\":null}]}";

static char *tiers_text(void) {
    char *text = NULL;
    size_t len = 0;
    assert_int_equal(tp_read_file("config/quota-tiers.json", 65536, &text, &len), 0);
    return text;
}

/* The change of field in arr, or NULL. */
static json_t *change(json_t *arr, const char *field) {
    size_t i;
    json_t *c;
    json_array_foreach(arr, i, c) if (strcmp(json_string_value(json_object_get(c, "field")), field) == 0) return c;
    return NULL;
}

static void assert_change_str(json_t *arr, const char *field, const char *from, const char *to) {
    json_t *c = change(arr, field);
    if (!c)
        fail_msg("no change of %s", field);
    if (from)
        assert_string_equal(json_string_value(json_object_get(c, "from")), from);
    else
        assert_true(json_is_null(json_object_get(c, "from")));
    if (to)
        assert_string_equal(json_string_value(json_object_get(c, "to")), to);
    else
        assert_true(json_is_null(json_object_get(c, "to")));
}

static void assert_change_int(json_t *arr, const char *field, json_int_t from, json_int_t to) {
    json_t *c = change(arr, field);
    if (!c)
        fail_msg("no change of %s", field);
    assert_int_equal(json_integer_value(json_object_get(c, "from")), from);
    assert_int_equal(json_integer_value(json_object_get(c, "to")), to);
}

static void test_changes_plan(void **state) {
    char *tiers = tiers_text();
    json_t *before = json_loads(pro_tenant, 0, NULL), *arr;
    tp_quota_tier starter, enterprise;
    tp_request req;
    (void)state;
    assert_non_null(before);
    assert_int_equal(tp_quota_tiers_get(tiers, TP_PLAN_STARTER, &starter), 0);
    assert_int_equal(tp_quota_tiers_get(tiers, TP_PLAN_ENTERPRISE, &enterprise), 0);
    memset(&req, 0, sizeof(req));
    req.action = TP_ACTION_CHANGE_PLAN;
    req.has_plan = true;
    req.plan = TP_PLAN_STARTER;
    req.has_requested_seats = true;
    req.requested_seats = 45;

    /* Downgrade: plan, seats and every field of the quota vector that differs; partitions stay
     * shared (no change listed for them). */
    arr = tp_action_changes(&req, before, &starter, 0);
    assert_non_null(arr);
    assert_change_str(arr, "plan", "PRO", "STARTER");
    assert_change_int(arr, "requestedSeats", 40, 45);
    assert_change_str(arr, "quota.tier", "PRO", "STARTER");
    assert_change_int(arr, "quota.seatCap", 150, starter.seat_cap);
    assert_change_int(arr, "quota.requestsPerMinute", 1000, starter.requests_per_minute);
    assert_non_null(change(arr, "quota.burstMultiplier"));
    assert_null(change(arr, "storageEstimateBytes")); /* not asked */
    assert_null(change(arr, "partitions.primary.isolation"));
    assert_int_equal(json_array_size(arr), 10); /* plan, seats, tier and the 7 vector fields */
    json_decref(arr);

    /* Upgrade to ENTERPRISE: partitions become dedicated. */
    req.plan = TP_PLAN_ENTERPRISE;
    req.has_requested_seats = false;
    arr = tp_action_changes(&req, before, &enterprise, 0);
    assert_change_str(arr, "plan", "PRO", "ENTERPRISE");
    assert_change_str(arr, "partitions.primary.isolation", "shared", "dedicated");
    assert_change_str(arr, "partitions.analytics.isolation", "shared", "dedicated");
    assert_change_str(arr, "partitions.audit.isolation", "shared", "dedicated");
    assert_null(change(arr, "requestedSeats"));
    json_decref(arr);

    /* The same plan and seats again: nothing changes. */
    tp_quota_tier pro;
    assert_int_equal(tp_quota_tiers_get(tiers, TP_PLAN_PRO, &pro), 0);
    req.plan = TP_PLAN_PRO;
    req.has_requested_seats = true;
    req.requested_seats = 40;
    arr = tp_action_changes(&req, before, &pro, 0);
    assert_int_equal(json_array_size(arr), 0);
    json_decref(arr);
    json_decref(before);
    free(tiers);
}

static void test_changes_status(void **state) {
    json_t *before = json_loads(pro_tenant, 0, NULL), *arr;
    tp_request req;
    (void)state;
    memset(&req, 0, sizeof(req));
    req.action = TP_ACTION_SUSPEND;
    snprintf(req.reason, sizeof(req.reason), "PAYMENT_FAILED");
    arr = tp_action_changes(&req, before, NULL, 0);
    assert_int_equal(json_array_size(arr), 2);
    assert_change_str(arr, "status", "active", "suspended");
    assert_change_str(arr, "suspendedReason", NULL, "PAYMENT_FAILED");
    json_decref(arr);

    json_object_set_new(before, "status", json_string("suspended"));
    json_object_set_new(before, "suspendedReason", json_string("PAYMENT_FAILED"));
    req.action = TP_ACTION_RESUME;
    req.reason[0] = '\0';
    arr = tp_action_changes(&req, before, NULL, 0);
    assert_int_equal(json_array_size(arr), 2);
    assert_change_str(arr, "status", "suspended", "active");
    assert_change_str(arr, "suspendedReason", "PAYMENT_FAILED", NULL);
    json_decref(arr);

    /* Deprovision: the time it takes effect and the purge-after, default 30 days, on the tenant
     * and each partition. 1700000000000 ms = 2023-11-14T22:13:20Z. */
    req.action = TP_ACTION_DEPROVISION;
    arr = tp_action_changes(&req, before, NULL, 1700000000123);
    assert_change_str(arr, "status", "suspended", "deprovisioned");
    assert_change_str(arr, "deprovisionedAt", NULL, "2023-11-14T22:13:20.123Z");
    assert_change_str(arr, "purgeAfter", NULL, "2023-12-14T22:13:20.123Z");
    assert_change_str(arr, "partitions.primary.purgeAfter", NULL, "2023-12-14T22:13:20.123Z");
    assert_change_str(arr, "partitions.audit.purgeAfter", NULL, "2023-12-14T22:13:20.123Z");
    assert_int_equal(json_array_size(arr), 6);
    json_decref(arr);
    req.has_retention_days = true;
    req.retention_days = 0;
    arr = tp_action_changes(&req, before, NULL, 1700000000123);
    assert_change_str(arr, "purgeAfter", NULL, "2023-11-14T22:13:20.123Z");
    json_decref(arr);
    json_decref(before);
}

static void test_action_input(void **state) {
    tp_request req;
    tp_policy_tenant t = {.id = "tenant-1", .slug = "acme", .status = "active", .plan = "PRO",
                          .owner_id = NULL, .has_seats = true, .seats = 40};
    static const tp_quota_tier tiers[TP_QUOTA_TIERS_N] = {
        [TP_PLAN_FREE] = {.tier = "FREE", .seat_cap = 5, .burst_multiplier = 1.0},
        [TP_PLAN_PRO] = {.tier = "PRO", .seat_cap = 150, .burst_multiplier = 1.2},
    };
    tp_policy_context ctx = {.tiers = tiers, .admin_role = "ops"};
    json_t *doc;
    char *text;
    (void)state;
    memset(&req, 0, sizeof(req));
    req.action = TP_ACTION_DEPROVISION;
    req.source = TP_SOURCE_BILLING;
    snprintf(req.actor.id, sizeof(req.actor.id), "billing");
    snprintf(req.actor.type, sizeof(req.actor.type), "system");
    snprintf(req.tenant.slug, sizeof(req.tenant.slug), "acme");
    text = tp_policy_build_action_input(&req, &t, &ctx);
    assert_non_null(text);
    doc = json_loads(text, 0, NULL);
    free(text);
    assert_string_equal(json_string_value(json_object_get(doc, "action")), "deprovision");
    assert_string_equal(json_string_value(json_object_get(doc, "source")), "BILLING");
    assert_int_equal(json_integer_value(json_object_get(doc, "retentionDays")), 30);
    assert_null(json_object_get(doc, "plan"));
    json_t *tenant = json_object_get(doc, "tenant");
    assert_string_equal(json_string_value(json_object_get(tenant, "status")), "active");
    assert_true(json_is_null(json_object_get(tenant, "ownerId")));
    assert_int_equal(json_integer_value(json_object_get(tenant, "seats")), 40);
    assert_true(json_is_null(json_object_get(tenant, "storageEstimateBytes")));
    assert_string_equal(json_string_value(json_object_get(json_object_get(doc, "context"), "adminRole")), "ops");
    /* the tiers of the plans the input names: here the tenant's current one */
    assert_int_equal(json_object_size(json_object_get(json_object_get(doc, "context"), "tiers")), 1);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(json_object_get(
                         json_object_get(doc, "context"), "tiers"), "PRO"), "seatCap")), 150);
    json_decref(doc);

    req.action = TP_ACTION_CHANGE_PLAN;
    req.has_plan = true;
    req.plan = TP_PLAN_FREE;
    text = tp_policy_build_action_input(&req, &t, &ctx);
    doc = json_loads(text, 0, NULL);
    free(text);
    assert_string_equal(json_string_value(json_object_get(doc, "plan")), "FREE");
    /* a plan change: the new plan's tier and the current one's */
    assert_int_equal(json_object_size(json_object_get(json_object_get(doc, "context"), "tiers")), 2);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(json_object_get(
                         json_object_get(doc, "context"), "tiers"), "FREE"), "seatCap")), 5);
    assert_null(json_object_get(doc, "retentionDays"));
    assert_null(json_object_get(doc, "requestedSeats"));
    json_decref(doc);
    /* Not an action, no tenant: nothing built. */
    req.action = TP_ACTION_PROVISION;
    assert_null(tp_policy_build_action_input(&req, &t, &ctx));
    req.action = TP_ACTION_SUSPEND;
    assert_null(tp_policy_build_action_input(&req, NULL, &ctx));
    assert_string_equal(tp_policy_package(TP_ACTION_SUSPEND), "tenants/suspend");
    assert_string_equal(tp_policy_package(TP_ACTION_PROVISION), "tenants/provision");
}

static void test_action_payload_round_trip(void **state) {
    tp_request a, b;
    char *js;
    (void)state;
    memset(&a, 0, sizeof(a));
    a.action = TP_ACTION_DEPROVISION;
    snprintf(a.request_id, sizeof(a.request_id), "evt-1");
    a.source = TP_SOURCE_BILLING;
    snprintf(a.actor.id, sizeof(a.actor.id), "billing");
    snprintf(a.actor.type, sizeof(a.actor.type), "system");
    snprintf(a.tenant.slug, sizeof(a.tenant.slug), "acme");
    snprintf(a.reason, sizeof(a.reason), "CANCELLED");
    snprintf(a.idempotency_key, sizeof(a.idempotency_key), "k1");
    a.has_retention_days = true;
    a.retention_days = 0;
    a.submitted_at_ms = 1700000000000;
    js = tp_stages_request_json(&a);
    assert_non_null(js);
    assert_non_null(strstr(js, "\"tenantSlug\":\"acme\""));
    assert_null(strstr(js, "\"tenant\":"));
    assert_int_equal(tp_stages_request_from_json(js, &b), 0);
    free(js);
    assert_int_equal(b.action, TP_ACTION_DEPROVISION);
    assert_string_equal(b.tenant.slug, "acme");
    assert_string_equal(b.reason, "CANCELLED");
    assert_string_equal(b.idempotency_key, "k1");
    assert_true(b.has_retention_days);
    assert_int_equal(b.retention_days, 0);
    assert_false(b.has_plan);
    assert_int_equal(b.submitted_at_ms, 1700000000000);

    a.action = TP_ACTION_CHANGE_PLAN;
    a.has_retention_days = false;
    a.has_plan = true;
    a.plan = TP_PLAN_ENTERPRISE;
    a.has_requested_seats = true;
    a.requested_seats = 7;
    js = tp_stages_request_json(&a);
    assert_int_equal(tp_stages_request_from_json(js, &b), 0);
    free(js);
    assert_int_equal(b.action, TP_ACTION_CHANGE_PLAN);
    assert_true(b.has_plan);
    assert_int_equal(b.plan, TP_PLAN_ENTERPRISE);
    assert_int_equal(b.requested_seats, 7);
    assert_false(b.has_retention_days);

    /* Unknown or PROVISION action, bad plan, a missing slug: refused. */
    assert_int_equal(tp_stages_request_from_json("{\"requestId\":\"x\",\"action\":\"EXPLODE\","
                                                 "\"source\":\"BILLING\",\"actor\":{\"id\":\"a\","
                                                 "\"type\":\"system\"},\"tenantSlug\":\"acme\"}", &b),
                     TP_EINVAL);
    assert_int_equal(tp_stages_request_from_json("{\"requestId\":\"x\",\"action\":\"PROVISION\","
                                                 "\"source\":\"BILLING\",\"actor\":{\"id\":\"a\","
                                                 "\"type\":\"system\"},\"tenantSlug\":\"acme\"}", &b),
                     TP_EINVAL);
    assert_int_equal(tp_stages_request_from_json("{\"requestId\":\"x\",\"action\":\"SUSPEND\","
                                                 "\"source\":\"BILLING\",\"actor\":{\"id\":\"a\","
                                                 "\"type\":\"system\"},\"tenantSlug\":\"acme\","
                                                 "\"plan\":\"GOLD\"}", &b),
                     TP_EINVAL);
    assert_int_equal(tp_stages_request_from_json("{\"requestId\":\"x\",\"action\":\"SUSPEND\","
                                                 "\"source\":\"BILLING\",\"actor\":{\"id\":\"a\","
                                                 "\"type\":\"system\"}}", &b),
                     TP_EINVAL);
    assert_int_equal(tp_stages_request_from_json("{\"requestId\":\"x\",\"action\":7}", &b), TP_EINVAL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_states),
        cmocka_unit_test(test_reason_names),
        cmocka_unit_test(test_changes_plan),
        cmocka_unit_test(test_changes_status),
        cmocka_unit_test(test_action_input),
        cmocka_unit_test(test_action_payload_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
