/* test_policy_input.c: the OPA input document built from a request (DESIGN §6 stage 1), parsed
 * back with jansson and checked field by field. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "tp/policy.h"

static const tp_quota_tier tiers[TP_QUOTA_TIERS_N] = {
    [TP_PLAN_FREE] = {"FREE", 20, 1000, 100, 1000, 5000000000LL, 5, 1.0},
    [TP_PLAN_STARTER] = {"STARTER", 100, 100000, 500, 4000, 50000000000LL, 50, 1.1},
    [TP_PLAN_PRO] = {"PRO", 1000, 1000000, 5000, 16000, 250000000000LL, 150, 1.2},
    [TP_PLAN_ENTERPRISE] = {"ENTERPRISE", 10000, 10000000, 50000, 32000, 1000000000000LL, 500, 1.5},
};

static void make_request(tp_request *req) {
    memset(req, 0, sizeof(*req));
    strcpy(req->request_id, "req-1");
    req->source = TP_SOURCE_SELF_SERVE_API;
    strcpy(req->actor.id, "user-42");
    strcpy(req->actor.type, "user");
    req->actor.n_roles = 2;
    strcpy(req->actor.roles[0], "member");
    strcpy(req->actor.roles[1], "admin");
    strcpy(req->tenant.name, "Acme \"Quoted\" Ünïcode");
    strcpy(req->tenant.slug, "acme");
    req->tenant.residency = TP_RESIDENCY_EU;
    strcpy(req->tenant.region, "eu-west-1");
    req->plan = TP_PLAN_PRO;
    req->environment = TP_ENV_STAGING;
    req->has_requested_seats = true;
    req->requested_seats = 12;
    req->has_storage_estimate = true;
    req->storage_estimate_bytes = 250000000000LL;
}

static json_t *load(char *text) {
    json_error_t err;
    json_t *doc;
    assert_non_null(text);
    doc = json_loads(text, JSON_REJECT_DUPLICATES, &err);
    free(text);
    assert_non_null(doc);
    assert_true(json_is_object(doc));
    return doc;
}

static const char *str_at(json_t *obj, const char *key) {
    json_t *v = json_object_get(obj, key);
    assert_true(json_is_string(v));
    return json_string_value(v);
}

static void test_full_document(void **state) {
    tp_request req;
    tp_policy_context ctx = {.owned_tenants = 2, .tiers = tiers,
                             .region_allowlist_csv = " us-east-1, eu-west-1 ,,eu-central-1,",
                             .max_tenants_per_user = 5, .admin_role = "platform-admin"};
    json_t *doc, *actor, *tenant, *context, *roles, *allow, *tier_obj;
    (void)state;
    make_request(&req);
    doc = load(tp_policy_build_input_ctx(&req, "provision", &ctx));
    assert_int_equal(json_object_size(doc), 9);
    assert_string_equal(str_at(doc, "action"), "provision");
    assert_string_equal(str_at(doc, "source"), "SELF_SERVE_API");
    assert_string_equal(str_at(doc, "plan"), "PRO");
    assert_string_equal(str_at(doc, "environment"), "staging");
    assert_int_equal(json_integer_value(json_object_get(doc, "requestedSeats")), 12);
    assert_true(json_integer_value(json_object_get(doc, "storageEstimateBytes")) == 250000000000LL);

    actor = json_object_get(doc, "actor");
    assert_int_equal(json_object_size(actor), 3);
    assert_string_equal(str_at(actor, "id"), "user-42");
    assert_string_equal(str_at(actor, "type"), "user");
    roles = json_object_get(actor, "roles");
    assert_int_equal(json_array_size(roles), 2);
    assert_string_equal(json_string_value(json_array_get(roles, 1)), "admin");

    tenant = json_object_get(doc, "tenant");
    assert_int_equal(json_object_size(tenant), 4);
    assert_string_equal(str_at(tenant, "name"), "Acme \"Quoted\" Ünïcode");
    assert_string_equal(str_at(tenant, "slug"), "acme");
    assert_string_equal(str_at(tenant, "residency"), "EU");
    assert_string_equal(str_at(tenant, "region"), "eu-west-1");

    context = json_object_get(doc, "context");
    assert_int_equal(json_object_size(context), 5);
    assert_int_equal(json_integer_value(json_object_get(context, "ownedTenants")), 2);
    assert_int_equal(json_integer_value(json_object_get(context, "maxTenantsPerUser")), 5);
    assert_string_equal(str_at(context, "adminRole"), "platform-admin");
    /* Only the requested plan's tier, every field of it, as the tiers file writes it. */
    tier_obj = json_object_get(context, "tiers");
    assert_int_equal(json_object_size(tier_obj), 1);
    tier_obj = json_object_get(tier_obj, "PRO");
    assert_int_equal(json_object_size(tier_obj), 7);
    assert_int_equal(json_integer_value(json_object_get(tier_obj, "seatCap")), 150);
    assert_true(json_integer_value(json_object_get(tier_obj, "storageBytes")) == 250000000000LL);
    assert_int_equal(json_integer_value(json_object_get(tier_obj, "requestsPerMinute")), 1000);
    assert_int_equal(json_integer_value(json_object_get(tier_obj, "requestsPerDay")), 1000000);
    assert_int_equal(json_integer_value(json_object_get(tier_obj, "ingestEventsPerMinute")), 5000);
    assert_int_equal(json_integer_value(json_object_get(tier_obj, "maxTokensPerRequest")), 16000);
    assert_true(json_real_value(json_object_get(tier_obj, "burstMultiplier")) == 1.2);
    allow = json_object_get(context, "regionAllowlist");
    assert_int_equal(json_array_size(allow), 3);
    assert_string_equal(json_string_value(json_array_get(allow, 0)), "us-east-1");
    assert_string_equal(json_string_value(json_array_get(allow, 1)), "eu-west-1");
    assert_string_equal(json_string_value(json_array_get(allow, 2)), "eu-central-1");
    json_decref(doc);
}

static void test_defaults_and_absent_fields(void **state) {
    tp_request req;
    json_t *doc, *context;
    (void)state;
    make_request(&req);
    req.source = TP_SOURCE_BILLING;
    req.tenant.residency = TP_RESIDENCY_US;
    req.tenant.region[0] = '\0';
    req.has_requested_seats = false;
    req.has_storage_estimate = false;
    req.actor.n_roles = 0;
    doc = load(tp_policy_build_input(&req, "provision", 0, NULL, NULL));
    assert_string_equal(str_at(doc, "source"), "BILLING");
    assert_string_equal(str_at(json_object_get(doc, "tenant"), "region"), "us-east-1");
    assert_null(json_object_get(doc, "requestedSeats"));
    assert_null(json_object_get(doc, "storageEstimateBytes"));
    assert_int_equal(json_array_size(json_object_get(json_object_get(doc, "actor"), "roles")), 0);
    context = json_object_get(doc, "context");
    assert_int_equal(json_integer_value(json_object_get(context, "ownedTenants")), 0);
    assert_int_equal(json_integer_value(json_object_get(context, "maxTenantsPerUser")),
                     TP_POLICY_MAX_TENANTS_PER_USER_DEFAULT);
    assert_null(json_object_get(context, "tiers"));
    assert_null(json_object_get(context, "adminRole"));
    assert_true(json_is_array(json_object_get(context, "regionAllowlist")));
    assert_int_equal(json_array_size(json_object_get(context, "regionAllowlist")), 0);
    json_decref(doc);

    req.tenant.residency = TP_RESIDENCY_EU;
    doc = load(tp_policy_build_input(&req, NULL, 1, tiers, "eu-central-1"));
    assert_string_equal(str_at(doc, "action"), "provision");
    assert_string_equal(str_at(json_object_get(doc, "tenant"), "region"), "eu-central-1");
    assert_int_equal(json_object_size(json_object_get(json_object_get(doc, "context"), "tiers")), 1);
    assert_non_null(json_object_get(json_object_get(json_object_get(doc, "context"), "tiers"), "PRO"));
    json_decref(doc);
}

static void test_role_count_is_clamped(void **state) {
    tp_request req;
    json_t *doc;
    (void)state;
    make_request(&req);
    req.actor.n_roles = 1000; /* a corrupt count never reads past the array */
    for (int i = 0; i < TP_ROLES_MAX; i++)
        strcpy(req.actor.roles[i], "r");
    doc = load(tp_policy_build_input(&req, "provision", 0, NULL, NULL));
    assert_int_equal(json_array_size(json_object_get(json_object_get(doc, "actor"), "roles")), TP_ROLES_MAX);
    json_decref(doc);
    req.actor.n_roles = -3;
    doc = load(tp_policy_build_input(&req, "provision", 0, NULL, NULL));
    assert_int_equal(json_array_size(json_object_get(json_object_get(doc, "actor"), "roles")), 0);
    json_decref(doc);
}

static void test_bad_inputs_give_null(void **state) {
    tp_request req;
    (void)state;
    make_request(&req);
    assert_null(tp_policy_build_input(NULL, "provision", 0, NULL, NULL));
    strcpy(req.tenant.name, "bad \xff utf-8");
    assert_null(tp_policy_build_input(&req, "provision", 0, NULL, NULL));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_document),
        cmocka_unit_test(test_defaults_and_absent_fields),
        cmocka_unit_test(test_role_count_is_clamped),
        cmocka_unit_test(test_bad_inputs_give_null),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
