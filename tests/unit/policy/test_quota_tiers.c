/* test_quota_tiers.c: config/quota-tiers.json holds DESIGN §6's table exactly; the loader rejects
 * incomplete or mistyped documents. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tp/error.h"
#include "tp/policy.h"

#define TIERS_PATH TP_SOURCE_DIR "/config/quota-tiers.json"

static void test_file_matches_design_table(void **state) {
    static const struct {
        tp_plan plan;
        const char *name;
        int64_t rpm, rpd, ingest, tokens, storage, seats;
        double burst;
    } want[] = {
        {TP_PLAN_FREE, "FREE", 20, 1000, 100, 1000, 5000000000LL, 5, 1.0},
        {TP_PLAN_STARTER, "STARTER", 100, 100000, 500, 4000, 50000000000LL, 50, 1.1},
        {TP_PLAN_PRO, "PRO", 1000, 1000000, 5000, 16000, 250000000000LL, 150, 1.2},
        {TP_PLAN_ENTERPRISE, "ENTERPRISE", 10000, 10000000, 50000, 32000, 1000000000000LL, 500, 1.5},
    };
    char *text = tp_policy_load_tiers(TIERS_PATH), errstr[256];
    tp_quota_tier all[TP_QUOTA_TIERS_N];
    (void)state;
    assert_non_null(text);
    assert_int_equal(tp_quota_tiers_parse(text, all, errstr, sizeof(errstr)), 0);
    for (size_t i = 0; i < 4; i++) {
        tp_quota_tier t;
        assert_int_equal(tp_quota_tiers_get(text, want[i].plan, &t), 0);
        /* the whole table parsed at once holds the same values, at the plan's index */
        assert_memory_equal(&all[want[i].plan], &t, sizeof(t));
        assert_string_equal(t.tier, want[i].name);
        assert_true(t.requests_per_minute == want[i].rpm);
        assert_true(t.requests_per_day == want[i].rpd);
        assert_true(t.ingest_events_per_minute == want[i].ingest);
        assert_true(t.max_tokens_per_request == want[i].tokens);
        assert_true(t.storage_bytes == want[i].storage);
        assert_true(t.seat_cap == want[i].seats);
        assert_true(t.burst_multiplier > want[i].burst - 1e-9 && t.burst_multiplier < want[i].burst + 1e-9);
    }
    free(text);
}

static const char good_tier[] = "{\"requestsPerMinute\":1,\"requestsPerDay\":1,\"ingestEventsPerMinute\":1,"
                                "\"maxTokensPerRequest\":1,\"storageBytes\":1,\"seatCap\":1,\"burstMultiplier\":1}";

static char *doc_with(const char *free_tier) {
    char *buf = malloc(4096);
    assert_non_null(buf);
    snprintf(buf, 4096, "{\"FREE\":%s,\"STARTER\":%s,\"PRO\":%s,\"ENTERPRISE\":%s}", free_tier, good_tier,
             good_tier, good_tier);
    return buf;
}

static void test_validation(void **state) {
    static const char *bad_free[] = {
        "{\"requestsPerMinute\":1,\"requestsPerDay\":1,\"ingestEventsPerMinute\":1,\"maxTokensPerRequest\":1,"
        "\"storageBytes\":1,\"burstMultiplier\":1}", /* seatCap missing */
        "{\"requestsPerMinute\":\"1\",\"requestsPerDay\":1,\"ingestEventsPerMinute\":1,\"maxTokensPerRequest\":1,"
        "\"storageBytes\":1,\"seatCap\":1,\"burstMultiplier\":1}", /* a string */
        "{\"requestsPerMinute\":1.5,\"requestsPerDay\":1,\"ingestEventsPerMinute\":1,\"maxTokensPerRequest\":1,"
        "\"storageBytes\":1,\"seatCap\":1,\"burstMultiplier\":1}", /* not an integer */
        "{\"requestsPerMinute\":1,\"requestsPerDay\":-1,\"ingestEventsPerMinute\":1,\"maxTokensPerRequest\":1,"
        "\"storageBytes\":1,\"seatCap\":1,\"burstMultiplier\":1}", /* negative */
        "{\"requestsPerMinute\":1,\"requestsPerDay\":1,\"ingestEventsPerMinute\":1,\"maxTokensPerRequest\":1,"
        "\"storageBytes\":1,\"seatCap\":1}", /* burst missing */
        "{\"requestsPerMinute\":1,\"requestsPerDay\":1,\"ingestEventsPerMinute\":1,\"maxTokensPerRequest\":1,"
        "\"storageBytes\":1,\"seatCap\":1,\"burstMultiplier\":0.5}", /* burst below 1 */
        "[]", "null", "5",
    };
    char errstr[256], *doc;
    tp_quota_tier t, all[TP_QUOTA_TIERS_N];
    (void)state;
    doc = doc_with(good_tier);
    assert_int_equal(tp_quota_tiers_validate(doc, errstr, sizeof(errstr)), 0);
    assert_int_equal(tp_quota_tiers_get(doc, TP_PLAN_PRO, &t), 0);
    assert_int_equal(tp_quota_tiers_get(doc, (tp_plan)7, &t), TP_EINVAL);
    free(doc);
    for (size_t i = 0; i < sizeof(bad_free) / sizeof(bad_free[0]); i++) {
        doc = doc_with(bad_free[i]);
        errstr[0] = '\0';
        assert_int_equal(tp_quota_tiers_validate(doc, errstr, sizeof(errstr)), TP_ECONFIG);
        assert_non_null(strstr(errstr, "FREE"));
        assert_int_equal(tp_quota_tiers_get(doc, TP_PLAN_PRO, &t), TP_ECONFIG);
        errstr[0] = '\0';
        assert_int_equal(tp_quota_tiers_parse(doc, all, errstr, sizeof(errstr)), TP_ECONFIG);
        assert_non_null(strstr(errstr, "FREE"));
        free(doc);
    }
    assert_int_equal(tp_quota_tiers_validate("{\"FREE\":{}}", errstr, sizeof(errstr)), TP_ECONFIG);
    assert_int_equal(tp_quota_tiers_validate("not json", errstr, sizeof(errstr)), TP_ECONFIG);
    assert_int_equal(tp_quota_tiers_validate(NULL, errstr, sizeof(errstr)), TP_ECONFIG);
    /* four good plans plus a typo'd fifth */
    doc = doc_with(good_tier);
    doc[strlen(doc) - 1] = '\0';
    strcat(doc, ",\"PRO2\":{}}");
    assert_int_equal(tp_quota_tiers_validate(doc, errstr, sizeof(errstr)), TP_ECONFIG);
    assert_non_null(strstr(errstr, "PRO2"));
    free(doc);
}

static void test_load_errors(void **state) {
    char path[] = "/tmp/tp_tiers_XXXXXX";
    int fd = mkstemp(path);
    FILE *f;
    (void)state;
    assert_null(tp_policy_load_tiers("/nonexistent/quota-tiers.json"));
    assert_null(tp_policy_load_tiers(NULL));
    assert_true(fd >= 0);
    f = fdopen(fd, "w");
    assert_non_null(f);
    fputs("{\"FREE\":{}}", f);
    fclose(f);
    assert_null(tp_policy_load_tiers(path));
    unlink(path);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_file_matches_design_table),
        cmocka_unit_test(test_validation),
        cmocka_unit_test(test_load_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
