/* test_worker_e2e: tp-worker end to end on the real stack: records on a private requests topic,
 * outcomes asserted in PostgreSQL and on the receipts and dead-letter topics. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "support/e2e.h"
#include "tp/codec.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TRACEPARENT "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

static int setup(void **state) {
    e2e *e = calloc(1, sizeof(*e));
    const char *name = *state ? *state : "worker";
    if (!e || e2e_setup(e, name, NULL) != 0 || e2e_worker_start(e, 0) != 0) {
        free(e);
        return -1;
    }
    *state = e;
    return 0;
}

/* A fixture whose worker gets extra config lines; each test starts it when it is ready. */
static int setup_config(void **state, const char *name, const char *extra_config) {
    e2e *e = calloc(1, sizeof(*e));
    if (!e || e2e_setup(e, name, extra_config) != 0) {
        free(e);
        return -1;
    }
    *state = e;
    return 0;
}

/* A worker that may hold only two requests in flight: partitions pause and resume all along. */
static int setup_small_inflight(void **state) {
    return setup_config(state, "inflight", "worker.inflight_max = 2\n");
}

static int teardown(void **state) {
    e2e *e = *state;
    int status = e2e_worker_stop(e, 0, SIGTERM, 20000, NULL);
    if (status != 0)
        fprintf(stderr, "worker exit status %d (log %s)\n", status, e->log_path[0]);
    e2e_teardown(e);
    free(e);
    return status == 0 ? 0 : -1;
}

/* Every assertion of a provisioned tenant (DESIGN §6). */
static void assert_provisioned(e2e *e, const tp_request *req, const char *region, const char *isolation,
                               int64_t rpm, int64_t rpd, int64_t storage, int64_t seats) {
    const char *rid = req->request_id;
    char tenant[128];
    assert_int_equal(e2e_wait_int(e, 1, 60, "SELECT count(*) FROM provisioning_requests WHERE request_id = '%s' AND state = 'SUCCEEDED'", rid), 1);
    assert_int_equal(e2e_int(e, "SELECT count(*) FROM provisioning_stages WHERE request_id = '%s' AND status = 'SUCCEEDED'", rid), 7);
    assert_int_equal(e2e_text(e, tenant, sizeof(tenant), "SELECT id FROM tenants WHERE slug = '%s'", req->tenant.slug), 0);
    assert_int_equal(e2e_int(e, "SELECT count(*) FROM tenants WHERE id = '%s' AND status = 'active'", tenant), 1);
    assert_int_equal(e2e_int(e, "SELECT count(*) FROM tenant_namespaces WHERE tenant_id = '%s' AND id = 'ns_%s' AND slug = '%s-prod'", tenant, tenant, req->tenant.slug), 1);
    assert_int_equal(e2e_int(e, "SELECT count(*) FROM tenant_partitions WHERE tenant_id = '%s' AND region = '%s' AND isolation = '%s' AND id IN ('part_%s_primary', 'part_%s_analytics', 'part_%s_audit')", tenant, region, isolation, tenant, tenant, tenant), 3);
    assert_int_equal(e2e_int(e, "SELECT count(*) FROM tenant_quotas WHERE tenant_id = '%s' AND tier = '%s' AND requests_per_minute = %lld AND requests_per_day = %lld AND storage_bytes = %lld AND seat_cap = %lld", tenant, tp_plan_name(req->plan), (long long)rpm, (long long)rpd, (long long)storage, (long long)seats), 1);
    assert_int_equal(e2e_int(e, "SELECT count(*) FROM receipt_outbox WHERE tenant_id = '%s'", tenant), 3);
}

static void test_happy_path_each_plan(void **state) {
    e2e *e = *state;
    tp_request reqs[4];
    static const struct {
        tp_plan plan;
        const char *isolation;
        int64_t rpm, rpd, storage, seats;
    } plans[4] = {
        {TP_PLAN_FREE, "shared", 20, 1000, 5000000000LL, 5},
        {TP_PLAN_STARTER, "shared", 100, 100000, 50000000000LL, 50},
        {TP_PLAN_PRO, "shared", 1000, 1000000, 250000000000LL, 150},
        {TP_PLAN_ENTERPRISE, "dedicated", 10000, 10000000, 1000000000000LL, 500},
    };
    for (int i = 0; i < 4; i++) {
        char slug[64];
        snprintf(slug, sizeof(slug), "happy-%s-%d", e->suffix, i);
        e2e_request_init(&reqs[i], slug, plans[i].plan);
        if (i == 3) { /* an EU tenant with its region given */
            reqs[i].tenant.residency = TP_RESIDENCY_EU;
            snprintf(reqs[i].tenant.region, sizeof(reqs[i].tenant.region), "eu-west-1");
        }
        assert_int_equal(e2e_submit(e, &reqs[i], 1, -1), 0);
    }
    for (int i = 0; i < 4; i++)
        assert_provisioned(e, &reqs[i], i == 3 ? "eu-west-1" : "us-east-1", plans[i].isolation, plans[i].rpm,
                           plans[i].rpd, plans[i].storage, plans[i].seats);
    /* The receipts topic holds three receipts per tenant. */
    assert_int_equal(e2e_read_topic(e, e->topic_receipts, 12, 30000, NULL, NULL), 12);
}

static void test_same_record_three_times(void **state) {
    e2e *e = *state;
    tp_request req;
    char slug[64];
    snprintf(slug, sizeof(slug), "dup-%s", e->suffix);
    e2e_request_init(&req, slug, TP_PLAN_PRO);
    assert_int_equal(e2e_submit(e, &req, 3, -1), 0);
    assert_provisioned(e, &req, "us-east-1", "shared", 1000, 1000000, 250000000000LL, 150);
    /* Wait until all three records are consumed and committed, then count everything again. */
    assert_int_equal(e2e_wait_committed(e, 3, 30), 3);
    assert_int_equal(e2e_int(e, "SELECT count(*) FROM tenants WHERE slug = '%s'", slug), 1);
    assert_int_equal(e2e_int(e, "SELECT count(*) FROM tenant_namespaces n JOIN tenants t ON t.id = n.tenant_id WHERE t.slug = '%s'", slug), 1);
    assert_int_equal(e2e_int(e, "SELECT count(*) FROM tenant_partitions p JOIN tenants t ON t.id = p.tenant_id WHERE t.slug = '%s'", slug), 3);
    assert_int_equal(e2e_int(e, "SELECT count(*) FROM tenant_quotas q JOIN tenants t ON t.id = q.tenant_id WHERE t.slug = '%s'", slug), 1);
    assert_int_equal(e2e_int(e, "SELECT count(*) FROM receipt_outbox WHERE request_id = '%s'", req.request_id), 3);
    assert_int_equal(e2e_int(e, "SELECT count(DISTINCT action_type) FROM receipt_outbox WHERE request_id = '%s'", req.request_id), 3);
    assert_int_equal(e2e_int(e, "SELECT count(*) FROM provisioning_requests"), 1);
}

static void test_slug_taken(void **state) {
    e2e *e = *state;
    tp_request first, second;
    char slug[64], tenant_before[128], tenant_after[128];
    snprintf(slug, sizeof(slug), "taken-%s", e->suffix);
    e2e_request_init(&first, slug, TP_PLAN_STARTER);
    assert_int_equal(e2e_submit(e, &first, 1, -1), 0);
    assert_int_equal(e2e_wait_int(e, 1, 60, "SELECT count(*) FROM provisioning_requests WHERE request_id = '%s' AND state = 'SUCCEEDED'", first.request_id), 1);
    assert_int_equal(e2e_text(e, tenant_before, sizeof(tenant_before), "SELECT id || status || plan || updated_at FROM tenants WHERE slug = '%s'", slug), 0);

    e2e_request_init(&second, slug, TP_PLAN_PRO);
    assert_int_equal(e2e_submit(e, &second, 1, -1), 0);
    assert_int_equal(e2e_wait_int(e, 1, 60, "SELECT count(*) FROM provisioning_requests WHERE request_id = '%s' AND state = 'FAILED' AND failure_reason = 'SLUG_TAKEN'", second.request_id), 1);
    assert_int_equal(e2e_text(e, tenant_after, sizeof(tenant_after), "SELECT id || status || plan || updated_at FROM tenants WHERE slug = '%s'", slug), 0);
    assert_string_equal(tenant_before, tenant_after);
    assert_int_equal(e2e_int(e, "SELECT count(*) FROM tenants"), 1);
    assert_int_equal(e2e_int(e, "SELECT count(*) FROM receipt_outbox WHERE request_id = '%s'", second.request_id), 0);
}

/* Bytes today's producers wrote before the tenant lifecycle existed (tests/fixtures/avro, written by
 * a45bd5e's encoder) still provision, field for field. */
static void test_old_format_fixtures_provision(void **state) {
    e2e *e = *state;
    static const char *const files[2] = {"ProvisioningRequest-a45bd5e-full.bin",
                                         "ProvisioningRequest-a45bd5e-minimal.bin"};
    static const char *const slugs[2] = {"fixture-full", "fixture-minimal"};
    for (int i = 0; i < 2; i++) {
        unsigned char buf[1024];
        char path[512];
        size_t n;
        FILE *f;
        snprintf(path, sizeof(path), "%s/tests/fixtures/avro/%s", TP_SOURCE_DIR, files[i]);
        f = fopen(path, "rb");
        assert_non_null(f);
        n = fread(buf, 1, sizeof(buf), f);
        fclose(f);
        assert_int_equal(e2e_produce_raw(e, buf, n, slugs[i], -1), 0);
    }
    assert_int_equal(e2e_wait_int(e, 2, 60, "SELECT count(*) FROM provisioning_requests WHERE request_id IN ('billing-evt-20261201-0001', 'billing-evt-20261201-0002') AND state = 'SUCCEEDED' AND action = 'PROVISION'"), 2);
    assert_int_equal(e2e_int(e, "SELECT count(*) FROM tenants WHERE slug = 'fixture-full' AND name = 'Fixture Full Corp' AND residency = 'EU' AND region = 'eu-central-1' AND plan = 'PRO' AND environment = 'prod' AND requested_seats = 25 AND storage_estimate_bytes = 5000000000 AND status = 'active'"), 1);
    assert_int_equal(e2e_int(e, "SELECT count(*) FROM tenants WHERE slug = 'fixture-minimal' AND region = 'us-east-1' AND plan = 'FREE' AND environment = 'dev' AND requested_seats IS NULL AND status = 'active'"), 1);
    assert_int_equal(e2e_int(e, "SELECT count(*) FROM provisioning_requests WHERE request_id = 'billing-evt-20261201-0001' AND idempotency_key = 'idem-fixture-full' AND payload->>'correlationId' = 'corr-fixture-full'"), 1);
    assert_int_equal(e2e_int(e, "SELECT count(*) FROM receipt_outbox o JOIN tenants t ON t.id = o.tenant_id WHERE t.slug IN ('fixture-full', 'fixture-minimal')"), 6);
    assert_int_equal(e2e_int(e, "SELECT count(*) FROM dead_letters"), 0);
}

static void test_policy_deny(void **state) {
    e2e *e = *state;
    tp_request req;
    char slug[64], reasons[512];
    snprintf(slug, sizeof(slug), "deny-%s", e->suffix);
    e2e_request_init(&req, slug, TP_PLAN_ENTERPRISE);
    req.source = TP_SOURCE_SELF_SERVE_API;
    snprintf(req.actor.id, sizeof(req.actor.id), "user-42");
    snprintf(req.actor.type, sizeof(req.actor.type), "user");
    assert_int_equal(e2e_submit(e, &req, 1, -1), 0);
    assert_int_equal(e2e_wait_int(e, 1, 60, "SELECT count(*) FROM provisioning_requests WHERE request_id = '%s' AND state = 'DENIED'", req.request_id), 1);
    assert_int_equal(e2e_text(e, reasons, sizeof(reasons), "SELECT reasons::text FROM policy_decisions WHERE request_id = '%s'", req.request_id), 0);
    assert_non_null(strstr(reasons, "ENTERPRISE_NOT_SELF_SERVE"));
    assert_int_equal(e2e_int(e, "SELECT count(*) FROM tenants"), 0);
    assert_int_equal(e2e_int(e, "SELECT count(*) FROM tenant_namespaces"), 0);
    assert_int_equal(e2e_int(e, "SELECT count(*) FROM tenant_partitions"), 0);
    assert_int_equal(e2e_int(e, "SELECT count(*) FROM tenant_quotas"), 0);
    assert_int_equal(e2e_int(e, "SELECT count(*) FROM receipt_outbox"), 0);
}

typedef struct dlq_seen {
    e2e *e;
    int garbage, fingerprint, validation_with_id;
    int64_t garbage_offset;
} dlq_seen;

static void on_dlq(void *arg, const void *key, size_t key_len, const void *value, size_t len,
                   int32_t partition, int64_t offset) {
    dlq_seen *s = arg;
    tp_dead_letter dl;
    char err[256];
    (void)key, (void)key_len, (void)partition, (void)offset;
    if (tp_codec_decode_dead_letter(s->e->codec, value, len, &dl, err, sizeof(err)) != 0)
        return;
    if (strcmp(dl.reason_code, "DECODE_FRAMING") == 0 && dl.origin_partition == 0) {
        s->garbage++;
        s->garbage_offset = dl.origin_offset;
    }
    if (strcmp(dl.reason_code, "DECODE_FINGERPRINT") == 0 && dl.origin_partition == 0)
        s->fingerprint++;
    if (strcmp(dl.reason_code, "VALIDATION") == 0 && dl.request_id[0])
        s->validation_with_id++; /* the record decoded: its request id is known */
    assert_string_equal(dl.origin_topic, s->e->topic_requests);
    tp_dead_letter_release(&dl);
}

static void test_poison_records_to_dlq(void **state) {
    e2e *e = *state;
    static const unsigned char garbage[] = "this is not avro at all \xff\xfe\x00\x01";
    unsigned char unknown_fp[32] = {0xC3, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, 0x02, 'x'};
    tp_request behind[3];
    dlq_seen seen = {e, 0, 0, 0, -1};

    /* Both poison records first on partition 0, then valid requests behind them on it. */
    assert_int_equal(e2e_produce_raw(e, garbage, sizeof(garbage), "poison", 0), 0);
    assert_int_equal(e2e_produce_raw(e, unknown_fp, sizeof(unknown_fp), "poison", 0), 0);
    /* Well-formed Avro, but a slug tp-ingress would have refused (billing skips tp-ingress). */
    {
        tp_request bad;
        e2e_request_init(&bad, "Not A Slug!", TP_PLAN_FREE);
        assert_int_equal(e2e_submit_with_header(e, &bad, 0, "traceparent", TRACEPARENT), 0);
    }
    /* Regions tp-ingress would refuse: not the residency's, and not in policy.region_allowlist.
     * They are VALIDATION dead letters naming the field, not requests DENIED by policy. */
    tp_request wrong_region, not_allowed;
    {
        char slug[64];
        snprintf(slug, sizeof(slug), "eu-in-us-%s", e->suffix);
        e2e_request_init(&wrong_region, slug, TP_PLAN_FREE);
        snprintf(wrong_region.tenant.region, sizeof(wrong_region.tenant.region), "eu-west-1");
        assert_int_equal(e2e_submit(e, &wrong_region, 1, 0), 0);
        snprintf(slug, sizeof(slug), "not-allowed-%s", e->suffix);
        e2e_request_init(&not_allowed, slug, TP_PLAN_FREE);
        snprintf(not_allowed.tenant.region, sizeof(not_allowed.tenant.region), "us-east-2");
        assert_int_equal(e2e_submit(e, &not_allowed, 1, 0), 0);
    }
    for (int i = 0; i < 3; i++) {
        char slug[64];
        snprintf(slug, sizeof(slug), "behind-%s-%d", e->suffix, i);
        e2e_request_init(&behind[i], slug, TP_PLAN_FREE);
        assert_int_equal(e2e_submit(e, &behind[i], 1, 0), 0);
    }
    for (int i = 0; i < 3; i++)
        assert_int_equal(e2e_wait_int(e, 1, 60, "SELECT count(*) FROM provisioning_requests WHERE request_id = '%s' AND state = 'SUCCEEDED'", behind[i].request_id), 1);
    assert_int_equal(e2e_wait_int(e, 2, 30, "SELECT count(*) FROM dead_letters WHERE origin_partition = 0 AND reason IN ('DECODE_FRAMING', 'DECODE_FINGERPRINT')"), 2);
    assert_int_equal(e2e_wait_int(e, 1, 30, "SELECT count(*) FROM dead_letters WHERE origin_partition = 0 AND reason = 'VALIDATION' AND message LIKE '/tenant/slug %%'"), 1);
    assert_int_equal(e2e_int(e, "SELECT count(*) FROM tenants WHERE slug = 'Not A Slug!'"), 0);
    assert_int_equal(e2e_wait_int(e, 2, 30, "SELECT count(*) FROM dead_letters WHERE reason = 'VALIDATION' "
                                            "AND message LIKE '/tenant/region %%' AND request_id IN ('%s', '%s')",
                                  wrong_region.request_id, not_allowed.request_id), 2);
    assert_int_equal(e2e_int(e, "SELECT count(*) FROM provisioning_requests"), 3);
    assert_true(e2e_read_topic(e, e->topic_dlq, 5, 30000, on_dlq, &seen) >= 5);
    assert_int_equal(seen.validation_with_id, 3);
    /* The W3C trace context travels on: the dead letter carries the request's traceparent. */
    {
        char trace[64] = "";
        assert_int_equal(e2e_topic_find_header(e, e->topic_dlq, "traceparent", trace, sizeof(trace), 20000), 0);
        assert_string_equal(trace, TRACEPARENT);
    }
    assert_int_equal(seen.garbage, 1);
    assert_int_equal(seen.fingerprint, 1);
    assert_int_equal(seen.garbage_offset, 0);
}

static void test_inflight_limit_and_key_order(void **state) {
    e2e *e = *state;
    enum { N = 40, SAME = 5 };
    tp_request reqs[N + SAME];
    char slug[64], winner[160];
    for (int i = 0; i < N; i++) {
        snprintf(slug, sizeof(slug), "pause-%s-%d", e->suffix, i);
        e2e_request_init(&reqs[i], slug, TP_PLAN_FREE);
    }
    /* SAME requests for one slug, in this order: the first must win, every later one SLUG_TAKEN. */
    snprintf(slug, sizeof(slug), "order-%s", e->suffix);
    for (int i = 0; i < SAME; i++)
        e2e_request_init(&reqs[N + i], slug, TP_PLAN_STARTER);
    assert_int_equal(e2e_submit_batch(e, reqs, N + SAME), 0);
    assert_int_equal(e2e_worker_start(e, 0), 0);
    assert_int_equal(e2e_wait_int(e, N + 1, 120, "SELECT count(*) FROM provisioning_requests WHERE state = 'SUCCEEDED'"), N + 1);
    assert_int_equal(e2e_wait_int(e, SAME - 1, 60, "SELECT count(*) FROM provisioning_requests WHERE state = 'FAILED' AND failure_reason = 'SLUG_TAKEN'"), SAME - 1);
    assert_int_equal(e2e_text(e, winner, sizeof(winner), "SELECT created_by_request FROM tenants WHERE slug = '%s'", slug), 0);
    assert_string_equal(winner, reqs[N].request_id);
    assert_int_equal(e2e_wait_committed(e, N + SAME, 30), N + SAME);
}

/* One pool thread and a backlog: the relay's rounds share the pool with the stage runs, yet
 * receipts go out while the backlog drains. When every run was handed to libuv's pool at once,
 * a relay round queued behind all of them and no receipt was published before the last request
 * had finished. A first request warms the relay up (its producer's first delivery on the fresh
 * topic took ~1 s here, about as long as the whole backlog takes to drain). */
static int setup_one_thread(void **state) {
    return setup_config(state, "backlog", "worker.db_pool_size = 1\n");
}

static void test_receipts_flow_during_backlog(void **state) {
    e2e *e = *state;
    enum { N = 150 };
    tp_request reqs[N];
    char slug[64];
    tp_request warm;
    snprintf(slug, sizeof(slug), "backlog-%s-warm", e->suffix);
    e2e_request_init(&warm, slug, TP_PLAN_FREE);
    assert_int_equal(e2e_worker_start(e, 0), 0);
    assert_int_equal(e2e_submit(e, &warm, 1, -1), 0);
    assert_int_equal(e2e_wait_int(e, 3, 60, "SELECT count(*) FROM receipt_outbox WHERE published_at IS NOT NULL"), 3);
    for (int i = 0; i < N; i++) {
        snprintf(slug, sizeof(slug), "backlog-%s-%d", e->suffix, i);
        e2e_request_init(&reqs[i], slug, TP_PLAN_FREE);
    }
    assert_int_equal(e2e_submit_batch(e, reqs, N), 0);
    assert_int_equal(e2e_wait_int(e, N + 1, 180, "SELECT count(*) FROM provisioning_requests WHERE state = 'SUCCEEDED'"), N + 1);
    assert_int_equal(e2e_wait_int(e, 3 * (N + 1), 60, "SELECT count(*) FROM receipt_outbox WHERE published_at IS NOT NULL"), 3 * (N + 1));
    int64_t early = e2e_int(e, "SELECT count(*) FROM receipt_outbox WHERE request_id <> '%s' AND "
                               "published_at < (SELECT max(finished_at) FROM provisioning_requests)",
                            warm.request_id);
    fprintf(stderr, "receipts published before the last request finished: %lld of %d\n", (long long)early, 3 * N);
    assert_true(early >= 3 * N / 2);
}

/* The database refuses a request's bookkeeping outright (a permanent error, here a check
 * violation raised by a trigger): the record is dead-lettered with that reason and the partition
 * goes on. It was retried forever before, pinning the partition's committed offset. */
static void test_permanent_bookkeeping_error_dead_lettered(void **state) {
    e2e *e = *state;
    tp_request refused, after;
    char slug[64], sql[512];
    snprintf(slug, sizeof(slug), "refused-%s", e->suffix);
    snprintf(sql, sizeof(sql),
             "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
             "RAISE EXCEPTION 'refused by the test' USING ERRCODE = '23514'; END $$; "
             "CREATE TRIGGER refuse BEFORE INSERT ON provisioning_requests FOR EACH ROW "
             "WHEN (NEW.tenant_slug = '%s') EXECUTE FUNCTION refuse();",
             slug);
    assert_int_equal(tp_db_exec_script(e->conn, sql), 0);
    e2e_request_init(&refused, slug, TP_PLAN_FREE);
    snprintf(slug, sizeof(slug), "after-refused-%s", e->suffix);
    e2e_request_init(&after, slug, TP_PLAN_FREE);
    assert_int_equal(e2e_submit(e, &refused, 1, 0), 0);
    assert_int_equal(e2e_submit(e, &after, 1, 0), 0);
    assert_int_equal(e2e_wait_int(e, 1, 60, "SELECT count(*) FROM provisioning_requests WHERE "
                                             "request_id = '%s' AND state = 'SUCCEEDED'",
                                  after.request_id), 1);
    assert_int_equal(e2e_wait_int(e, 1, 60, "SELECT count(*) FROM dead_letters WHERE request_id = '%s' "
                                             "AND reason = 'DB_PERMANENT' AND message LIKE '%%refused by the test%%'",
                                  refused.request_id), 1);
    assert_int_equal(e2e_wait_committed(e, 2, 30), 2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_prestate_setup_teardown(test_happy_path_each_plan, setup, teardown, "happy"),
        cmocka_unit_test_prestate_setup_teardown(test_same_record_three_times, setup, teardown, "dup"),
        cmocka_unit_test_prestate_setup_teardown(test_slug_taken, setup, teardown, "slug"),
        cmocka_unit_test_prestate_setup_teardown(test_policy_deny, setup, teardown, "deny"),
        cmocka_unit_test_prestate_setup_teardown(test_old_format_fixtures_provision, setup, teardown,
                                                 "fixtures"),
        cmocka_unit_test_prestate_setup_teardown(test_poison_records_to_dlq, setup, teardown, "poison"),
        cmocka_unit_test_prestate_setup_teardown(test_permanent_bookkeeping_error_dead_lettered, setup,
                                                 teardown, "refused"),
        cmocka_unit_test_setup_teardown(test_inflight_limit_and_key_order, setup_small_inflight, teardown),
        cmocka_unit_test_setup_teardown(test_receipts_flow_during_backlog, setup_one_thread, teardown),
    };
    if (getenv("TP_TEST_FILTER"))
        cmocka_set_test_filter(getenv("TP_TEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
