/* test_worker_faults: tp-worker under failure on the real stack: OPA down and back, OPA down past
 * the retry budget then `tpctl dlq replay`, kill -9 in the middle of a 1,000-request batch, and
 * SIGTERM under load. Outcomes asserted in PostgreSQL; OPA outages hold the stack's fault lock. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "support/e2e.h"
#include "support/pgproxy.h"

#include <signal.h>
#include <sys/wait.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct fault_state {
    e2e e;
    int lock_fd;
    bool opa_stopped;
} fault_state;

static int setup_with(void **state, const char *name, const char *extra) {
    fault_state *f = calloc(1, sizeof(*f));
    if (!f)
        return -1;
    f->lock_fd = -1;
    if (e2e_setup(&f->e, name, extra) != 0) {
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static int setup_default(void **state) { return setup_with(state, *state ? *state : "faults", NULL); }
static int setup_short_budget(void **state) {
    return setup_with(state, "budget", "retry.max_attempts = 3\nretry.initial_ms = 50\nretry.cap_ms = 100\n"
                                   "retry.max_elapsed_ms = 0\n");
}

static void opa_stop(fault_state *f) {
    f->lock_fd = e2e_faults_lock();
    assert_int_equal(e2e_stack_cmd("stop", "opa"), 0);
    f->opa_stopped = true;
}

static void opa_start(fault_state *f) {
    if (!f->opa_stopped)
        return;
    f->opa_stopped = false;
    assert_int_equal(e2e_stack_cmd("start", "opa"), 0);
    e2e_faults_unlock(f->lock_fd);
    f->lock_fd = -1;
}

static int teardown(void **state) {
    fault_state *f = *state;
    if (f->opa_stopped) { /* an assertion failed mid-outage: always bring OPA back */
        e2e_stack_cmd("start", "opa");
        e2e_faults_unlock(f->lock_fd);
    }
    e2e_teardown(&f->e);
    free(f);
    return 0;
}

static void make_batch(e2e *e, tp_request *reqs, int n, const char *prefix) {
    for (int i = 0; i < n; i++) {
        char slug[64];
        snprintf(slug, sizeof(slug), "%s-%s-%d", prefix, e->suffix, i);
        e2e_request_init(&reqs[i], slug, (tp_plan)(i % 4));
    }
}

/* Exactly one of everything per request: the effectively-once check. */
static void assert_no_duplicates(e2e *e, int n) {
    assert_int_equal(e2e_int(e, "SELECT count(*) FROM provisioning_requests"), n);
    assert_int_equal(e2e_int(e, "SELECT count(*) FROM tenants"), n);
    assert_int_equal(e2e_int(e, "SELECT count(*) FROM tenant_namespaces"), n);
    assert_int_equal(e2e_int(e, "SELECT count(*) FROM tenant_partitions"), 3 * n);
    assert_int_equal(e2e_int(e, "SELECT count(*) FROM tenant_quotas"), n);
    assert_int_equal(e2e_int(e, "SELECT count(*) FROM receipt_outbox"), 3 * n);
    assert_int_equal(e2e_int(e, "SELECT count(*) FROM (SELECT tenant_id FROM receipt_outbox GROUP BY tenant_id "
                                "HAVING array_agg(sequence ORDER BY sequence) <> ARRAY[1,2,3]::bigint[]) x"), 0);
}

static void test_opa_down_then_back(void **state) {
    fault_state *f = *state;
    e2e *e = &f->e;
    tp_request reqs[20];
    make_batch(e, reqs, 20, "opa");
    assert_int_equal(e2e_worker_start(e, 0), 0);
    opa_stop(f);
    assert_int_equal(e2e_submit_batch(e, reqs, 20), 0);
    sleep(10);
    /* While OPA was down nothing went past the policy stage. */
    assert_int_equal(e2e_int(e, "SELECT count(*) FROM tenants"), 0);
    assert_int_equal(e2e_int(e, "SELECT count(*) FROM provisioning_stages WHERE stage <> 'policy' AND status <> 'PENDING'"), 0);
    assert_true(e2e_int(e, "SELECT count(*) FROM provisioning_stages WHERE stage = 'policy' AND status = 'RETRYING'") > 0);
    opa_start(f);
    assert_int_equal(e2e_wait_int(e, 20, 90, "SELECT count(*) FROM provisioning_requests WHERE state = 'SUCCEEDED'"), 20);
    /* Each proceeded on an allow decision that OPA gave after it came back, after retries. */
    assert_int_equal(e2e_int(e, "SELECT count(DISTINCT request_id) FROM policy_decisions WHERE allow AND decision_id <> ''"), 20);
    assert_int_equal(e2e_int(e, "SELECT count(*) FROM provisioning_stages WHERE stage = 'policy' AND attempts > 1"), 20);
    assert_int_equal(e2e_wait_committed(e, 20, 30), 20);
    assert_no_duplicates(e, 20);
    assert_int_equal(e2e_worker_stop(e, 0, SIGTERM, 20000, NULL), 0);
}

static void test_retries_exhausted_then_replay(void **state) {
    fault_state *f = *state;
    e2e *e = &f->e;
    tp_request req;
    char slug[64], cmd[1024], dl_id[32];
    snprintf(slug, sizeof(slug), "budget-%s", e->suffix);
    e2e_request_init(&req, slug, TP_PLAN_PRO);
    assert_int_equal(e2e_worker_start(e, 0), 0);
    opa_stop(f);
    assert_int_equal(e2e_submit(e, &req, 1, -1), 0);
    assert_int_equal(e2e_wait_int(e, 1, 60, "SELECT count(*) FROM provisioning_requests WHERE request_id = '%s' AND state = 'FAILED' AND failure_reason = 'RETRIES_EXHAUSTED'", req.request_id), 1);
    assert_int_equal(e2e_wait_int(e, 1, 30, "SELECT count(*) FROM dead_letters WHERE request_id = '%s' AND reason = 'RETRIES_EXHAUSTED' AND origin_topic = '%s'", req.request_id, e->topic_requests), 1);
    assert_int_equal(e2e_read_topic(e, e->topic_dlq, 1, 30000, NULL, NULL), 1);
    assert_int_equal(e2e_int(e, "SELECT count(*) FROM tenants"), 0);
    opa_start(f);
    assert_int_equal(e2e_text(e, dl_id, sizeof(dl_id), "SELECT id FROM dead_letters WHERE request_id = '%s'", req.request_id), 0);
    snprintf(cmd, sizeof(cmd), "\"$TP_BUILD_DIR\"/tpctl dlq --config %s replay %s", e->config_path, dl_id);
    if (!getenv("TP_BUILD_DIR"))
        snprintf(cmd, sizeof(cmd), "build/test/tpctl dlq --config %s replay %s", e->config_path, dl_id);
    assert_int_equal(e2e_sh(cmd), 0);
    assert_int_equal(e2e_wait_int(e, 1, 60, "SELECT count(*) FROM provisioning_requests WHERE request_id = '%s' AND state = 'SUCCEEDED'", req.request_id), 1);
    /* Policy was evaluated again: a second, allowing decision. */
    assert_int_equal(e2e_int(e, "SELECT count(*) FROM policy_decisions WHERE request_id = '%s' AND allow", req.request_id), 1);
    assert_int_equal(e2e_int(e, "SELECT count(*) FROM dead_letters WHERE replayed_at IS NOT NULL"), 1);
    assert_no_duplicates(e, 1);
    assert_int_equal(e2e_worker_stop(e, 0, SIGTERM, 20000, NULL), 0);
}

static void test_kill9_mid_batch(void **state) {
    fault_state *f = *state;
    e2e *e = &f->e;
    enum { N = 1000 };
    tp_request *reqs = calloc(N, sizeof(*reqs));
    int64_t done;
    assert_non_null(reqs);
    make_batch(e, reqs, N, "k9");
    assert_int_equal(e2e_submit_batch(e, reqs, N), 0);
    assert_int_equal(e2e_worker_start(e, 0), 0);
    /* Kill it somewhere in the middle. */
    for (int i = 0; i < 600; i++) {
        done = e2e_int(e, "SELECT count(*) FROM provisioning_requests WHERE state = 'SUCCEEDED'");
        if (done >= 250)
            break;
        usleep(100000);
    }
    assert_int_equal(e2e_worker_stop(e, 0, SIGKILL, 5000, NULL), 128 + SIGKILL);
    done = e2e_int(e, "SELECT count(*) FROM provisioning_requests WHERE state = 'SUCCEEDED'");
    fprintf(stderr, "killed with %lld of %d SUCCEEDED\n", (long long)done, N);
    assert_true(done > 0 && done < N);
    assert_int_equal(e2e_worker_start(e, 1), 0);
    assert_int_equal(e2e_wait_int(e, N, 600, "SELECT count(*) FROM provisioning_requests WHERE state = 'SUCCEEDED'"), N);
    assert_int_equal(e2e_int(e, "SELECT count(*) FROM provisioning_stages WHERE status = 'SUCCEEDED'"), 7 * N);
    assert_int_equal(e2e_wait_committed(e, N, 60), N);
    assert_no_duplicates(e, N);
    assert_int_equal(e2e_worker_stop(e, 1, SIGTERM, 20000, NULL), 0);
    free(reqs);
}

static void test_sigterm_under_load(void **state) {
    fault_state *f = *state;
    e2e *e = &f->e;
    enum { N = 300 };
    tp_request reqs[N];
    int64_t done, elapsed = 0;
    make_batch(e, reqs, N, "term");
    assert_int_equal(e2e_submit_batch(e, reqs, N), 0);
    assert_int_equal(e2e_worker_start(e, 0), 0);
    for (int i = 0; i < 600; i++) {
        done = e2e_int(e, "SELECT count(*) FROM provisioning_requests WHERE state = 'SUCCEEDED'");
        if (done >= 50)
            break;
        usleep(100000);
    }
    /* The grace is 15 s (e2e config): exit 0 within it. */
    assert_int_equal(e2e_worker_stop(e, 0, SIGTERM, 17000, &elapsed), 0);
    fprintf(stderr, "SIGTERM drain took %lld ms\n", (long long)elapsed);
    assert_true(elapsed < 15000);
    done = e2e_int(e, "SELECT count(*) FROM provisioning_requests WHERE state = 'SUCCEEDED'");
    fprintf(stderr, "stopped with %lld of %d SUCCEEDED\n", (long long)done, N);
    assert_int_equal(e2e_worker_start(e, 1), 0);
    assert_int_equal(e2e_wait_int(e, N, 300, "SELECT count(*) FROM provisioning_requests WHERE state = 'SUCCEEDED'"), N);
    assert_int_equal(e2e_wait_committed(e, N, 60), N);
    assert_no_duplicates(e, N);
    assert_int_equal(e2e_worker_stop(e, 1, SIGTERM, 20000, NULL), 0);
}

/* A worker started while PostgreSQL does not answer waits for it (it used to exit 1 at once),
 * then provisions as usual. The database sits behind a proxy the test freezes, so the shared
 * server is never touched. */
static void test_worker_waits_for_postgres(void **state) {
    fault_state *f = *state;
    e2e *e = &f->e;
    char dsn[1024];
    tp_request req;
    int status = 0;
    pgproxy *px = pgproxy_start(e->db.dsn, dsn, sizeof(dsn));
    assert_non_null(px);
    pgproxy_freeze(px, true);
    FILE *cfg = fopen(e->config_path, "a"); /* later keys win */
    assert_non_null(cfg);
    fprintf(cfg, "pg.dsn = %s\npg.connect_timeout_s = 1\n", dsn);
    fclose(cfg);
    assert_int_equal(e2e_worker_start(e, 0), 0);
    sleep(4);
    assert_int_equal(waitpid(e->workers[0], &status, WNOHANG), 0); /* still running */
    pgproxy_freeze(px, false);
    e2e_request_init(&req, "waited-for-pg", TP_PLAN_PRO);
    assert_int_equal(e2e_submit(e, &req, 1, -1), 0);
    int64_t ok = e2e_wait_int(e, 1, 90, "SELECT count(*) FROM provisioning_requests WHERE request_id = '%s' "
                                        "AND state = 'SUCCEEDED'", req.request_id);
    int exit_status = e2e_worker_stop(e, 0, SIGTERM, 20000, NULL);
    pgproxy_stop(px);
    assert_int_equal(ok, 1);
    assert_int_equal(exit_status, 0);
}

/* A worker whose receipts relay cannot start exits 1 with an error naming it, instead of
 * provisioning with receipts that nothing publishes (it used to log a warning and run on). */
static void test_worker_exits_without_relay(void **state) {
    fault_state *f = *state;
    e2e *e = &f->e;
    static char log[65536];
    int status = 0, exited = 0;
    FILE *cfg = fopen(e->config_path, "a"); /* later keys win */
    assert_non_null(cfg);
    fprintf(cfg, "topic.receipts =\n");
    fclose(cfg);
    assert_int_equal(e2e_worker_start(e, 0), 0);
    for (int i = 0; i < 150 && !exited; i++) {
        exited = waitpid(e->workers[0], &status, WNOHANG) == e->workers[0];
        if (!exited)
            usleep(100 * 1000);
    }
    if (!exited) /* still running after 15 s: the bug; stop it before failing */
        e2e_worker_stop(e, 0, SIGTERM, 20000, NULL);
    else
        e->workers[0] = 0;
    assert_true(exited);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 1);
    FILE *lf = fopen(e->log_path[0], "r");
    assert_non_null(lf);
    size_t n = fread(log, 1, sizeof(log) - 1, lf);
    fclose(lf);
    log[n] = '\0';
    assert_non_null(strstr(log, "receipts relay: cannot start"));
    assert_non_null(strstr(log, "topic.receipts is empty"));
}

static int64_t mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A revoke no longer waits for hung work without bound. Worker 0 reaches PostgreSQL through a
 * proxy the test freezes, so its pool threads hang mid-request; worker 1 (direct) then joins. The
 * revoke of worker 0 gives up its partitions after worker.revoke_timeout_ms (2 s here), the
 * rebalance completes and worker 1 provisions its share while worker 0 is still frozen (before:
 * the revoke waited for the frozen work, so the group's rebalance stalled and nothing moved).
 * After the thaw every request ends exactly once: the abandoned work never stored its offsets, so
 * its records were consumed again by their next owner. */
static void test_revoke_bounded_when_db_frozen(void **state) {
    fault_state *f = *state;
    e2e *e = &f->e;
    enum { N = 40 };
    tp_request warm, reqs[N];
    char dsn[1024], direct_cfg[200];
    static char log[1 << 16];
    int64_t t_join, t_first = -1, t_thaw, t_all = -1, during = 0;
    pgproxy *px = pgproxy_start(e->db.dsn, dsn, sizeof(dsn));
    assert_non_null(px);
    assert_true(snprintf(direct_cfg, sizeof(direct_cfg), "%s", e->config_path) < (int)sizeof(direct_cfg));
    snprintf(e->config_path, sizeof(e->config_path), "%s.w0", direct_cfg);
    {
        char cmd[1024];
        snprintf(cmd, sizeof(cmd), "cp %s %s", direct_cfg, e->config_path);
        assert_int_equal(e2e_sh(cmd), 0);
    }
    FILE *cfg = fopen(e->config_path, "a"); /* later keys win */
    assert_non_null(cfg);
    fprintf(cfg, "pg.dsn = %s\nworker.revoke_timeout_ms = 2000\n", dsn);
    fclose(cfg);
    assert_int_equal(e2e_worker_start(e, 0), 0);
    snprintf(e->config_path, sizeof(e->config_path), "%s", direct_cfg);

    e2e_request_init(&warm, "revoke-warm", TP_PLAN_PRO);
    assert_int_equal(e2e_submit(e, &warm, 1, -1), 0);
    assert_int_equal(e2e_wait_int(e, 1, 90, "SELECT count(*) FROM provisioning_requests WHERE state = 'SUCCEEDED'"), 1);

    pgproxy_freeze(px, true);
    make_batch(e, reqs, N, "rvk");
    assert_int_equal(e2e_submit_batch(e, reqs, N), 0);
    sleep(2); /* worker 0 takes them; its pool threads hang on the frozen database */
    fprintf(stderr, "frozen: %lld requests recorded before worker 1 joins\n",
            (long long)e2e_int(e, "SELECT count(*) FROM provisioning_requests"));
    t_join = mono_ms();
    assert_int_equal(e2e_worker_start(e, 1), 0);
    while (mono_ms() - t_join < 40000) {
        during = e2e_int(e, "SELECT count(*) FROM provisioning_requests WHERE state = 'SUCCEEDED'") - 1;
        if (during > 0 && t_first < 0)
            t_first = mono_ms() - t_join;
        if (during >= N / 4 && t_first >= 0)
            break;
        usleep(200 * 1000);
    }
    fprintf(stderr, "frozen: worker 1 provisioned %lld of %d, the first %lld ms after it joined\n",
            (long long)during, N, (long long)t_first);
    t_thaw = mono_ms();
    pgproxy_freeze(px, false);
    int64_t done = e2e_wait_int(e, N + 1, 120, "SELECT count(*) FROM provisioning_requests WHERE state = 'SUCCEEDED'");
    t_all = mono_ms() - t_thaw;
    fprintf(stderr, "thawed: %lld of %d SUCCEEDED %lld ms after the thaw\n", (long long)done, N + 1, (long long)t_all);
    int64_t committed = e2e_wait_committed(e, N + 1, 60);
    int s0 = e2e_worker_stop(e, 0, SIGTERM, 20000, NULL), s1 = e2e_worker_stop(e, 1, SIGTERM, 20000, NULL);
    pgproxy_stop(px);
    FILE *lf = fopen(e->log_path[0], "r");
    assert_non_null(lf);
    size_t n = fread(log, 1, sizeof(log) - 1, lf);
    fclose(lf);
    log[n] = '\0';
    assert_true(during > 0);
    assert_non_null(strstr(log, "abandoned to the next owner"));
    assert_int_equal(done, N + 1);
    assert_int_equal(committed, N + 1);
    assert_no_duplicates(e, N + 1);
    assert_int_equal(s0, 0);
    assert_int_equal(s1, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_prestate_setup_teardown(test_opa_down_then_back, setup_default, teardown, "opadown"),
        cmocka_unit_test_setup_teardown(test_retries_exhausted_then_replay, setup_short_budget, teardown),
        cmocka_unit_test_prestate_setup_teardown(test_kill9_mid_batch, setup_default, teardown, "kill9"),
        cmocka_unit_test_prestate_setup_teardown(test_sigterm_under_load, setup_default, teardown, "sigterm"),
        cmocka_unit_test_prestate_setup_teardown(test_worker_waits_for_postgres, setup_default, teardown, "pgwait"),
        cmocka_unit_test_prestate_setup_teardown(test_worker_exits_without_relay, setup_default, teardown, "norelay"),
        cmocka_unit_test_prestate_setup_teardown(test_revoke_bounded_when_db_frozen, setup_default, teardown, "revoke"),
    };
    if (getenv("TP_TEST_FILTER"))
        cmocka_set_test_filter(getenv("TP_TEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
