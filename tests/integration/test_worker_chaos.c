/* test_worker_chaos: the chaos run of issue 9, opt-in (TP_CHAOS=1; otherwise it exits 77, which
 * ctest counts as skipped, so scripts/test never runs it). Two tp-workers with the default retry
 * budget and deadlines, 2,000 billing requests produced in 16 waves on a scratch database and
 * topics, and between the waves: 10 kill -9 of a worker (restarted at once), 2 worker freezes of
 * 15 s (SIGSTOP/SIGCONT), one PostgreSQL restart, a Kafka outage and an OPA outage of 15 s each.
 * The stack's fault lock is held exclusively for the whole run. The outcome is printed on lines
 * starting `chaos-result` and asserted: 0 requests lost (produced, not final), 0 duplicated (a slug
 * with two tenants, a request with more than its rows), 0 receipt copies re-published on the
 * receipts topic (one receipt id twice), 0 needing a manual replay (FAILED, dead letters, DLQ
 * records), `tpctl receipts verify` over the topic exits 0. About 4 minutes on a free machine. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "support/e2e.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define N 2000
#define WAVES 16
#define OUTAGE_S 15
#define KEYSET ".stack/keys/receipts.keyset"
#define ID_CAP 64
/* e2e_setup's test budget (80 attempts) overridden back to the shipped defaults (later keys win):
 * the run checks that the defaults outlast these outages (issue 9 item 14). */
#define DEFAULTS                                                                                   \
    "retry.initial_ms = 200\nretry.cap_ms = 5000\nretry.max_attempts = 8\n"                        \
    "retry.max_elapsed_ms = 120000\nopa.timeout_ms = 2000\noutbox.retry_max_ms = 5000\n"          \
    "worker.shutdown_grace_ms = 20000\n"

typedef enum fault { KILL9, FREEZE, PG_RESTART, KAFKA_OUT, OPA_OUT } fault;

typedef struct chaos {
    e2e e;
    int lock_fd;
    pid_t frozen;                  /* a worker under SIGSTOP */
    const char *down;              /* a stack service stopped ("kafka", "opa", "pg") */
    int unexpected_exits;          /* workers that died without being killed (restarted) */
} chaos;

typedef struct id_list {
    char (*ids)[ID_CAP];
    int n, cap, missing;
} id_list;

static int64_t mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int setup(void **state) {
    chaos *c = calloc(1, sizeof(*c));
    if (!c)
        return -1;
    c->lock_fd = -1;
    if (e2e_setup(&c->e, "chaos", DEFAULTS) != 0) {
        free(c);
        return -1;
    }
    *state = c;
    return 0;
}

static int teardown(void **state) {
    chaos *c = *state;
    if (c->frozen > 0)
        kill(c->frozen, SIGCONT);
    if (c->down) /* an assertion failed mid-outage: the shared stack always comes back */
        e2e_stack_cmd("start", c->down);
    e2e_faults_unlock(c->lock_fd);
    e2e_teardown(&c->e);
    free(c);
    return 0;
}

/* A worker that exited on its own (it should not) is counted and started again. */
static void keep_workers(chaos *c) {
    for (int i = 0; i < 2; i++) {
        int status;
        if (c->e.workers[i] > 0 && waitpid(c->e.workers[i], &status, WNOHANG) == c->e.workers[i]) {
            fprintf(stderr, "chaos: worker %d exited on its own (status %d): restarted\n", i, status);
            c->unexpected_exits++;
            c->e.workers[i] = 0;
            assert_int_equal(e2e_worker_start(&c->e, i), 0);
        }
    }
}

/* The test's own connection does not survive the PostgreSQL restart: a new one. */
static void reconnect(chaos *c) {
    char err[256];
    tp_db_close(c->e.conn);
    c->e.conn = NULL;
    for (int i = 0; i < 60 && tp_db_connect(c->e.db.dsn, &c->e.conn, err, sizeof(err)) != 0; i++)
        sleep(1);
    assert_non_null(c->e.conn);
}

static void inject(chaos *c, fault f, int nth) {
    int w = nth % 2;
    switch (f) {
    case KILL9:
        assert_int_equal(e2e_worker_stop(&c->e, w, SIGKILL, 5000, NULL), 128 + SIGKILL);
        usleep(300 * 1000);
        assert_int_equal(e2e_worker_start(&c->e, w), 0);
        break;
    case FREEZE:
        c->frozen = c->e.workers[w];
        assert_int_equal(kill(c->frozen, SIGSTOP), 0);
        sleep(OUTAGE_S);
        kill(c->frozen, SIGCONT);
        c->frozen = 0;
        break;
    case PG_RESTART: /* fast shutdown (every session ended), then a cold start */
        c->down = "pg";
        assert_int_equal(e2e_stack_cmd("stop", "pg"), 0);
        assert_int_equal(e2e_stack_cmd("start", "pg"), 0);
        c->down = NULL;
        reconnect(c);
        break;
    case KAFKA_OUT:
    case OPA_OUT: {
        const char *svc = f == KAFKA_OUT ? "kafka" : "opa";
        c->down = svc;
        assert_int_equal(e2e_stack_cmd("stop", svc), 0);
        sleep(OUTAGE_S);
        int rc = e2e_stack_cmd("start", svc);
        if (rc == 0)
            c->down = NULL;
        assert_int_equal(rc, 0);
        break;
    }
    }
}

static const char *fault_name(fault f) {
    static const char *const names[] = {"kill -9", "freeze 15 s", "PostgreSQL restart", "Kafka outage 15 s",
                                        "OPA outage 15 s"};
    return names[f];
}

static void on_receipt(void *arg, const void *value, size_t len) {
    id_list *l = arg;
    if (!value || len == 0 || len >= ID_CAP) {
        l->missing++;
        return;
    }
    if (l->n == l->cap)
        return; /* counted by the caller as more records than room */
    memcpy(l->ids[l->n], value, len);
    l->ids[l->n][len] = '\0';
    l->n++;
}

static int cmp_id(const void *a, const void *b) { return strcmp(a, b); }

/* Records whose receipt id an earlier record already carried. */
static int count_copies(id_list *l) {
    int copies = 0;
    qsort(l->ids, (size_t)l->n, sizeof(l->ids[0]), cmp_id);
    for (int i = 1; i < l->n; i++)
        if (strcmp(l->ids[i], l->ids[i - 1]) == 0)
            copies++;
    return copies;
}

static int64_t q(chaos *c, const char *sql) { return e2e_int(&c->e, "%s", sql); }

static void test_chaos_run(void **state) {
    chaos *c = *state;
    e2e *e = &c->e;
    static tp_request reqs[N];
    static const fault plan[WAVES - 1] = {KILL9, KILL9,     FREEZE, KILL9, PG_RESTART, KILL9, KILL9,  KAFKA_OUT,
                                          KILL9, FREEZE,    KILL9,  OPA_OUT, KILL9,    KILL9, KILL9};
    static char out[1 << 16];
    char tpctl[1024], slug[64];
    id_list ids = {0};
    int64_t t0, t_last_fault, t_final = -1;
    int per_wave = N / WAVES;

    c->lock_fd = e2e_faults_lock(); /* the whole run: it stops shared services */
    assert_true(c->lock_fd >= 0);
    for (int i = 0; i < N; i++) {
        snprintf(slug, sizeof(slug), "ch-%s-%d", e->suffix, i);
        e2e_request_init(&reqs[i], slug, (tp_plan)(i % 4));
    }
    t0 = mono_ms();
    assert_int_equal(e2e_worker_start(e, 0), 0);
    assert_int_equal(e2e_worker_start(e, 1), 0);
    for (int wave = 0; wave < WAVES; wave++) {
        assert_int_equal(e2e_submit_batch(e, reqs + wave * per_wave, per_wave), 0);
        if (wave == WAVES - 1)
            break;
        sleep(2); /* the wave in flight when the fault hits */
        keep_workers(c);
        fprintf(stderr, "chaos: %5.1f s: wave %d produced, %s\n", (double)(mono_ms() - t0) / 1000.0, wave + 1,
                fault_name(plan[wave]));
        inject(c, plan[wave], wave);
        keep_workers(c);
    }
    t_last_fault = mono_ms();
    /* Every request final, every receipt published, every offset committed. */
    for (int64_t deadline = mono_ms() + 300000; mono_ms() < deadline; sleep(1)) {
        keep_workers(c);
        if (q(c, "SELECT count(*) FROM provisioning_requests WHERE state IN ('SUCCEEDED', 'FAILED', 'DENIED')") >= N &&
            q(c, "SELECT count(*) FROM receipt_outbox WHERE published_at IS NULL") == 0) {
            t_final = mono_ms();
            break;
        }
    }
    int64_t committed = e2e_wait_committed(e, N, 60);
    for (int i = 0; i < 2; i++)
        assert_int_equal(e2e_worker_stop(e, i, SIGTERM, 30000, NULL), 0);

    int64_t final_rows = q(c, "SELECT count(DISTINCT request_id) FROM provisioning_requests "
                              "WHERE state IN ('SUCCEEDED', 'FAILED', 'DENIED')");
    int64_t lost = N - final_rows;
    int64_t dup_slugs = q(c, "SELECT count(*) FROM (SELECT slug FROM tenants GROUP BY slug HAVING count(*) > 1) d");
    int64_t dup_rows =
        q(c, "SELECT (SELECT count(*) FROM provisioning_requests) - (SELECT count(DISTINCT request_id) FROM provisioning_requests)") +
        q(c, "SELECT (SELECT count(*) FROM tenants) - (SELECT count(DISTINCT slug) FROM tenants)") +
        q(c, "SELECT count(*) FROM (SELECT tenant_id FROM tenant_namespaces GROUP BY tenant_id HAVING count(*) > 1) d") +
        q(c, "SELECT count(*) FROM (SELECT tenant_id FROM tenant_quotas GROUP BY tenant_id HAVING count(*) > 1) d") +
        q(c, "SELECT count(*) FROM (SELECT tenant_id FROM tenant_partitions GROUP BY tenant_id HAVING count(*) > 3) d") +
        q(c, "SELECT count(*) FROM (SELECT request_id FROM receipt_outbox GROUP BY request_id HAVING count(*) > 3) d");
    int64_t tenants = q(c, "SELECT count(*) FROM tenants");
    int64_t succeeded = q(c, "SELECT count(*) FROM provisioning_requests WHERE state = 'SUCCEEDED'");
    int64_t failed = q(c, "SELECT count(*) FROM provisioning_requests WHERE state = 'FAILED'");
    int64_t denied = q(c, "SELECT count(*) FROM provisioning_requests WHERE state = 'DENIED'");
    int64_t dead = q(c, "SELECT count(*) FROM dead_letters");
    int64_t outbox = q(c, "SELECT count(*) FROM receipt_outbox");
    int64_t published = q(c, "SELECT count(*) FROM receipt_outbox WHERE published_at IS NOT NULL");
    int dlq_records = e2e_read_topic(e, e->topic_dlq, -1, 3000, NULL, NULL);

    ids.cap = 2 * 3 * N;
    ids.ids = calloc((size_t)ids.cap, sizeof(ids.ids[0]));
    assert_non_null(ids.ids);
    int records = e2e_read_topic_header(e, e->topic_receipts, "receipt-id", (int)outbox, 5000, 120000, on_receipt, &ids);
    int same_id = count_copies(&ids);
    int distinct = ids.n - same_id;
    int copies = same_id + (records - ids.n - ids.missing); /* records past the room: copies too */
    free(ids.ids);

    assert_int_equal(e2e_bin_path("tpctl", tpctl, sizeof(tpctl)), 0);
    int verify = e2e_run(out, sizeof(out), "%s receipts --config %s verify --topic %s --keyset " KEYSET " --quiet",
                         tpctl, e->config_path, e->topic_receipts);
    const char *dups = strstr(out, "duplicates:");
    int64_t manual = failed + dead + dlq_records;
    int64_t duplicated = dup_slugs + dup_rows;

    fprintf(stderr,
            "chaos-result faults: 10 kill -9 of a worker (restarted), 2 worker freezes of %d s, 1 PostgreSQL "
            "restart, Kafka outage %d s, OPA outage %d s; 2 workers, default retry budget; workers that exited "
            "on their own %d\n",
            OUTAGE_S, OUTAGE_S, OUTAGE_S, c->unexpected_exits);
    fprintf(stderr,
            "chaos-result requests %d: SUCCEEDED %lld, DENIED %lld, FAILED %lld; tenants %lld; offsets committed %lld; "
            "all final and published %.1f s after the last fault (run %.1f s)\n",
            N, (long long)succeeded, (long long)denied, (long long)failed, (long long)tenants, (long long)committed,
            t_final < 0 ? -1.0 : (double)(t_final - t_last_fault) / 1000.0, (double)(mono_ms() - t0) / 1000.0);
    fprintf(stderr,
            "chaos-result receipts: outbox %lld, published %lld, topic records %d, distinct receipt ids %d, "
            "records without a receipt-id %d; tpctl receipts verify exit %d (%.*s)\n",
            (long long)outbox, (long long)published, records, distinct, ids.missing, verify,
            dups ? (int)strcspn(dups, "\n") : 4, dups ? dups : "none");
    fprintf(stderr,
            "chaos-result lost %lld, duplicated %lld (slugs with two tenants %lld, duplicate rows %lld), "
            "re-published receipt copies %d, needing a manual replay %lld (FAILED %lld, dead letters %lld, "
            "DLQ records %d), receipts verify exit %d: %s\n",
            (long long)lost, (long long)duplicated, (long long)dup_slugs, (long long)dup_rows, copies,
            (long long)manual, (long long)failed, (long long)dead, dlq_records, verify,
            lost == 0 && duplicated == 0 && copies == 0 && manual == 0 && verify == 0 ? "PASS" : "FAIL");
    if (verify != 0)
        fprintf(stderr, "%.4000s\n", out);

    e2e_faults_unlock(c->lock_fd);
    c->lock_fd = -1;
    assert_int_equal(lost, 0);
    assert_int_equal(duplicated, 0);
    assert_int_equal(copies, 0);
    assert_int_equal(manual, 0);
    assert_int_equal(verify, 0);
    assert_int_equal(succeeded, N);
    assert_int_equal(outbox, 3 * N);
    assert_int_equal(published, 3 * N);
    assert_int_equal(distinct, 3 * N);
    assert_int_equal(committed, N);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_chaos_run, setup, teardown),
    };
    const char *on = getenv("TP_CHAOS");
    if (!on || strcmp(on, "1") != 0) {
        fprintf(stderr, "test_worker_chaos: opt-in, skipped (TP_CHAOS=1 runs it)\n");
        return 77;
    }
    return cmocka_run_group_tests(tests, NULL, NULL);
}
