/* test_lifecycle_e2e: one tenant's life through the requests topic and a tp-worker (issue 11):
 * billing provisions it, then TenantActionRequest records upgrade, suspend, resume, downgrade and
 * deprovision it; the rows after each step, a duplicate record applied once, an invalid action
 * ending FAILED/INVALID_STATE without a dead letter, every receipt on the receipts topic in one
 * chain, and `tpctl receipts verify` passing over them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "support/e2e.h"
#include "tp/ids.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define KEYSET ".stack/keys/receipts.keyset"
#define OUT_CAP (1 << 16)

typedef struct lstate {
    e2e e;
    char *out;
} lstate;

static int setup(void **state) {
    lstate *s = calloc(1, sizeof(*s));
    if (!s || !(s->out = malloc(OUT_CAP)) || e2e_setup(&s->e, "life", NULL) != 0) {
        if (s) {
            e2e_teardown(&s->e);
            free(s->out);
        }
        free(s);
        return -1;
    }
    /* tpctl and the worker read this test's config, not the caller's TP_* variables. */
    unsetenv("TP_PG_DSN");
    unsetenv("TP_KAFKA_BOOTSTRAP");
    unsetenv("TP_OPA_URL");
    *state = s;
    return 0;
}

static int teardown(void **state) {
    lstate *s = *state;
    if (s->e.workers[0] > 0) {
        int st = e2e_worker_stop(&s->e, 0, SIGTERM, 20000, NULL);
        if (st != 0)
            fprintf(stderr, "worker exit status %d (log %s)\n", st, s->e.log_path[0]);
    }
    e2e_teardown(&s->e);
    free(s->out);
    free(s);
    return 0;
}

/* A TenantActionRequest from billing (the system actor), a fresh request id. */
static void action_init(tp_request *req, const char *slug, tp_action action) {
    e2e_request_init(req, slug, TP_PLAN_FREE);
    req->action = action;
    req->tenant.name[0] = '\0';
    req->plan = TP_PLAN_FREE;
    if (action == TP_ACTION_SUSPEND)
        snprintf(req->reason, sizeof(req->reason), "PAYMENT_FAILED");
}

/* Produces req and waits until its request row is terminal; returns "STATE/REASON". */
static void submit_and_wait(lstate *s, const tp_request *req, int repeat, const char *want) {
    char got[128] = "";
    assert_int_equal(e2e_submit(&s->e, req, repeat, -1), 0);
    for (int i = 0; i < 600; i++) {
        if (e2e_text(&s->e, got, sizeof(got),
                     "SELECT state || '/' || coalesce(failure_reason, '-') FROM provisioning_requests "
                     "WHERE request_id = '%s' AND state IN ('SUCCEEDED', 'FAILED', 'DENIED')",
                     req->request_id) == 0 && got[0])
            break;
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    if (strcmp(got, want) != 0)
        fprintf(stderr, "request %s (%s): %s, wanted %s (log %s)\n", req->request_id,
                tp_action_name(req->action), got, want, s->e.log_path[0]);
    assert_string_equal(got, want);
}

static void tenant_row(lstate *s, const char *slug, char *out, size_t cap) {
    assert_int_equal(e2e_text(&s->e, out, cap,
                              "SELECT t.status || '/' || t.plan || '/' || coalesce(t.requested_seats::text, "
                              "'-') || '/' || coalesce(t.suspended_reason, '-') || '/' || q.tier || '/' || "
                              "q.seat_cap || '/' || (SELECT string_agg(DISTINCT p.isolation, ',') FROM "
                              "tenant_partitions p WHERE p.tenant_id = t.id) || '/' || (t.purge_after IS "
                              "NOT NULL) FROM tenants t JOIN tenant_quotas q ON q.tenant_id = t.id WHERE "
                              "t.slug = '%s'",
                              slug),
                     0);
}

static void test_tenant_life_through_topic(void **state) {
    lstate *s = *state;
    tp_request req, dup;
    char slug[64], row[256], tpctl[1024];

    snprintf(slug, sizeof(slug), "life-%s", s->e.suffix);
    assert_int_equal(e2e_worker_start(&s->e, 0), 0);

    /* Provision (PRO, 20 seats). */
    e2e_request_init(&req, slug, TP_PLAN_PRO);
    req.has_requested_seats = true;
    req.requested_seats = 20;
    submit_and_wait(s, &req, 1, "SUCCEEDED/-");
    tenant_row(s, slug, row, sizeof(row));
    assert_string_equal(row, "active/PRO/20/-/PRO/150/shared/false");

    /* Upgrade to ENTERPRISE: the vector and dedicated partitions. */
    action_init(&req, slug, TP_ACTION_CHANGE_PLAN);
    req.has_plan = true;
    req.plan = TP_PLAN_ENTERPRISE;
    submit_and_wait(s, &req, 1, "SUCCEEDED/-");
    tenant_row(s, slug, row, sizeof(row));
    assert_string_equal(row, "active/ENTERPRISE/20/-/ENTERPRISE/500/dedicated/false");

    /* Resume an active tenant: FAILED with its reason, no change, no dead letter. */
    action_init(&req, slug, TP_ACTION_RESUME);
    submit_and_wait(s, &req, 1, "FAILED/INVALID_STATE");
    tenant_row(s, slug, row, sizeof(row));
    assert_string_equal(row, "active/ENTERPRISE/20/-/ENTERPRISE/500/dedicated/false");

    /* Suspend, the record delivered three times: applied once. */
    action_init(&dup, slug, TP_ACTION_SUSPEND);
    submit_and_wait(s, &dup, 3, "SUCCEEDED/-");
    tenant_row(s, slug, row, sizeof(row));
    assert_string_equal(row, "suspended/ENTERPRISE/20/PAYMENT_FAILED/ENTERPRISE/500/dedicated/false");

    /* Resume. */
    action_init(&req, slug, TP_ACTION_RESUME);
    submit_and_wait(s, &req, 1, "SUCCEEDED/-");
    tenant_row(s, slug, row, sizeof(row));
    assert_string_equal(row, "active/ENTERPRISE/20/-/ENTERPRISE/500/dedicated/false");

    /* A downgrade whose seats exceed the new cap is denied; with fewer seats it goes through. */
    action_init(&req, slug, TP_ACTION_CHANGE_PLAN);
    req.has_plan = true;
    req.plan = TP_PLAN_FREE;
    submit_and_wait(s, &req, 1, "DENIED/POLICY_DENIED");
    action_init(&req, slug, TP_ACTION_CHANGE_PLAN);
    req.has_plan = true;
    req.plan = TP_PLAN_STARTER;
    req.has_requested_seats = true;
    req.requested_seats = 10;
    submit_and_wait(s, &req, 1, "SUCCEEDED/-");
    tenant_row(s, slug, row, sizeof(row));
    assert_string_equal(row, "active/STARTER/10/-/STARTER/50/shared/false");

    /* Deprovision: soft delete, rows kept, purge-after set; the slug stays taken. */
    action_init(&req, slug, TP_ACTION_DEPROVISION);
    submit_and_wait(s, &req, 1, "SUCCEEDED/-");
    tenant_row(s, slug, row, sizeof(row));
    assert_string_equal(row, "deprovisioned/STARTER/10/-/STARTER/50/shared/true");
    assert_int_equal(e2e_int(&s->e, "SELECT count(*) FROM tenant_partitions p JOIN tenants t ON "
                                    "t.id = p.tenant_id WHERE t.slug = '%s' AND p.purge_after = "
                                    "t.deprovisioned_at + interval '30 days'", slug), 3);
    e2e_request_init(&req, slug, TP_PLAN_FREE);
    submit_and_wait(s, &req, 1, "FAILED/SLUG_TAKEN");

    /* Receipts: provision 3, upgrade 3, suspend 1 (once), resume 2, downgrade 3, deprovision 1,
     * all in one chain and all on the topic. */
    assert_int_equal(e2e_int(&s->e, "SELECT count(*) FROM receipt_outbox WHERE request_id = '%s'",
                             dup.request_id), 1);
    assert_int_equal(e2e_int(&s->e, "SELECT count(*) FROM receipt_outbox o JOIN tenants t ON t.id = "
                                    "o.tenant_id WHERE t.slug = '%s'", slug), 13);
    assert_int_equal(e2e_int(&s->e, "SELECT max(sequence) FROM receipt_outbox o JOIN tenants t ON "
                                    "t.id = o.tenant_id WHERE t.slug = '%s'", slug), 13);
    assert_int_equal(e2e_int(&s->e, "SELECT count(*) FROM receipt_outbox o WHERE action_type IN "
                                    "('TENANT_PLAN_CHANGED', 'TENANT_SUSPENDED', 'TENANT_RESUMED', "
                                    "'TENANT_DEPROVISIONED')"), 5);
    assert_int_equal(e2e_wait_int(&s->e, 13, 60, "SELECT count(*) FROM receipt_outbox WHERE "
                                                  "published_at IS NOT NULL"), 13);
    assert_int_equal(e2e_read_topic(&s->e, s->e.topic_receipts, 13, 30000, NULL, NULL), 13);
    assert_int_equal(e2e_int(&s->e, "SELECT count(*) FROM dead_letters"), 0);

    assert_int_equal(e2e_bin_path("tpctl", tpctl, sizeof(tpctl)), 0);
    int rc = e2e_run(s->out, OUT_CAP, "%s receipts --config %s verify --topic %s --keyset " KEYSET,
                     tpctl, s->e.config_path, s->e.topic_receipts);
    if (rc != 0)
        fprintf(stderr, "%s", s->out);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(s->out, "tenants: 1\nreceipts: 13\n"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_tenant_life_through_topic, setup, teardown),
    };
    if (getenv("TP_TEST_FILTER"))
        cmocka_set_test_filter(getenv("TP_TEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
