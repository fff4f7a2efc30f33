/* test_worker_ops: tp-worker's operations endpoint on the real stack. A live scrape after N
 * provisionings and a poison record passes the reference Prometheus parser (prometheus_client,
 * in the cache's venv) and carries the expected values; the Grafana dashboard uses only metric
 * names that scrape has; /readyz turns 503 naming PostgreSQL while the worker's database
 * connection is frozen (a proxy, never the shared server) and 200 again after; /healthz stays
 * 200; malformed requests get clean 404/405/4xx answers and the worker lives on. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "support/e2e.h"
#include "support/ingress.h"
#include "support/pgproxy.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define N 12

typedef struct ops_state {
    e2e e;
    int port;
    int shared_fd; /* a shared lock on the stack's fault lock: nobody stops OPA or Kafka meanwhile */
} ops_state;

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int setup(void **state) {
    ops_state *s = calloc(1, sizeof(*s));
    char extra[128];
    if (!s)
        return -1;
    /* Fault tests (which take the lock exclusively) wait until we let go, and we wait for them:
     * the counts asserted below assume OPA and Kafka stay up. */
    s->shared_fd = open("/tmp/tp-stack-faults.lock", O_RDWR | O_CREAT, 0666);
    if (s->shared_fd >= 0 && flock(s->shared_fd, LOCK_SH) != 0) {
        close(s->shared_fd);
        s->shared_fd = -1;
    }
    s->port = e2e_free_port();
    snprintf(extra, sizeof(extra), "worker.http_listen = 127.0.0.1:%d\n", s->port);
    if (s->port <= 0 || e2e_setup(&s->e, "ops", extra) != 0) {
        if (s->shared_fd >= 0)
            close(s->shared_fd);
        free(s);
        return -1;
    }
    *state = s;
    return 0;
}

static int teardown(void **state) {
    ops_state *s = *state;
    e2e_teardown(&s->e);
    if (s->shared_fd >= 0)
        close(s->shared_fd);
    free(s);
    return 0;
}

/* ---- HTTP ---------------------------------------------------------------------------------- */

/* One request; header (may be NULL) is one extra "Name: value" line. */
static void http(int port, const char *method, const char *path, const char *header, long timeout_ms,
                 http_resp *r) {
    const char *const headers[] = {header, NULL};
    http_call(r, port, &(http_req){.method = method, .path = path, .headers = header ? headers : NULL,
                                   .timeout_ms = timeout_ms});
}

/* Sends raw bytes on a new connection and reads the first line of the answer into line ("" when
 * the server closed without one). */
static void raw_request(int port, const char *bytes, size_t len, char *line, size_t cap) {
    struct sockaddr_in a;
    struct timeval tv = {5, 0};
    char buf[512];
    ssize_t got = 0;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((uint16_t)port);
    line[0] = '\0';
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0 && send(fd, bytes, len, MSG_NOSIGNAL) == (ssize_t)len)
        got = recv(fd, buf, sizeof(buf) - 1, 0);
    close(fd);
    if (got > 0) {
        buf[got] = '\0';
        buf[strcspn(buf, "\r\n")] = '\0';
        snprintf(line, cap, "%s", buf);
    }
}

/* Polls GET path until it answers want (or timeout_s passes); returns the last status. */
static long wait_status(int port, const char *path, long want, int timeout_s, http_resp *r) {
    int64_t until = now_ms() + timeout_s * 1000;
    for (;;) {
        http(port, "GET", path, NULL, 5000, r);
        if (r->status == want || now_ms() > until)
            return r->status;
        usleep(200 * 1000);
    }
}

/* ---- the reference parser ---------------------------------------------------------------------- */

/* The venv scripts/bootstrap made (TP_VENV of paths.env when exported, else its default place). */
static void venv_python(char *out, size_t cap) {
    const char *v = getenv("TP_VENV"), *c = getenv("TP_CACHE_DIR"), *x = getenv("XDG_CACHE_HOME"),
               *h = getenv("HOME");
    if (v && *v)
        snprintf(out, cap, "%s/bin/python", v);
    else if (c && *c)
        snprintf(out, cap, "%s/venv/bin/python", c);
    else if (x && *x)
        snprintf(out, cap, "%s/tenant-provisioner/venv/bin/python", x);
    else
        snprintf(out, cap, "%s/.cache/tenant-provisioner/venv/bin/python", h ? h : "/root");
}

/* Parses the scrape with prometheus_client's parser; returns its samples (a new reference). */
static json_t *parse_scrape(const char *scrape_path) {
    char py[512], out[4096], json_path[300];
    json_error_t jerr;
    venv_python(py, sizeof(py));
    snprintf(json_path, sizeof(json_path), "%s.json", scrape_path);
    int rc = e2e_run(out, sizeof(out), "%s tests/support/promcheck.py samples %s > %s", py,
                     scrape_path, json_path);
    if (rc != 0)
        print_error("the Prometheus parser refused the scrape (%d): %s\n", rc, out);
    assert_int_equal(rc, 0);
    json_t *samples = json_load_file(json_path, 0, &jerr);
    unlink(json_path);
    assert_non_null(samples);
    return samples;
}

/* The value of the sample called name whose labels include every "k=v" of the NULL-terminated
 * list; -1 when there is none. */
static double sample(json_t *samples, const char *name, ...) {
    size_t i;
    json_t *s;
    json_array_foreach(samples, i, s) {
        va_list ap;
        const char *kv;
        bool match = strcmp(json_string_value(json_object_get(s, "name")), name) == 0;
        va_start(ap, name);
        while (match && (kv = va_arg(ap, const char *)) != NULL) {
            const char *eq = strchr(kv, '=');
            char key[64];
            snprintf(key, sizeof(key), "%.*s", (int)(eq - kv), kv);
            const char *v = json_string_value(json_object_get(json_object_get(s, "labels"), key));
            match = v && strcmp(v, eq + 1) == 0;
        }
        va_end(ap);
        if (match)
            return json_number_value(json_object_get(s, "value"));
    }
    return -1;
}

static int count_samples(json_t *samples, const char *name) {
    size_t i;
    json_t *s;
    int n = 0;
    json_array_foreach(samples, i, s)
        n += strcmp(json_string_value(json_object_get(s, "name")), name) == 0;
    return n;
}

/* Scrapes /metrics into a file and parses it; returns the samples (a new reference). */
static json_t *scrape(ops_state *s, http_resp *r) {
    char path[256];
    snprintf(path, sizeof(path), "/tmp/tp-ops-%s-%d.prom", s->e.suffix, (int)getpid());
    http(s->port, "GET", "/metrics", NULL, 10000, r);
    assert_int_equal(r->status, 200);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fwrite(r->body, 1, r->len, f);
    fclose(f);
    json_t *samples = parse_scrape(path);
    unlink(path);
    return samples;
}

static double sum_samples(json_t *samples, const char *name) {
    size_t i;
    json_t *s;
    double sum = 0;
    json_array_foreach(samples, i, s)
        if (strcmp(json_string_value(json_object_get(s, "name")), name) == 0)
            sum += json_number_value(json_object_get(s, "value"));
    return sum;
}

/* ---- tests ------------------------------------------------------------------------------------- */

static void test_scrape_after_provisionings(void **state) {
    ops_state *s = *state;
    e2e *e = &s->e;
    tp_request reqs[N];
    http_resp r = {0};
    char scrape_path[256], py[512], out[8192];
    static const char *const stages[] = {"policy", "tenant", "namespace", "partitions", "quota",
                                         "receipts", "isolation"};

    assert_int_equal(e2e_worker_start(e, 0), 0);
    /* Alive at once, ready once the group assigned the partitions. */
    assert_int_equal(wait_status(s->port, "/healthz", 200, 30, &r), 200);
    assert_non_null(strstr(r.body, "\"status\":\"ok\""));
    assert_int_equal(wait_status(s->port, "/readyz", 200, 60, &r), 200);
    assert_non_null(strstr(r.body, "\"partitions\":\"6 assigned\""));
    assert_non_null(strstr(r.content_type, "application/json"));

    for (int i = 0; i < N; i++) {
        char slug[64];
        snprintf(slug, sizeof(slug), "ops-%s-%d", e->suffix, i);
        e2e_request_init(&reqs[i], slug, (tp_plan)(i % 4));
    }
    assert_int_equal(e2e_submit_batch(e, reqs, N), 0);
    assert_int_equal(e2e_produce_raw(e, "not avro at all", 15, "poison", 0), 0);
    assert_int_equal(e2e_wait_int(e, N, 120, "SELECT count(*) FROM provisioning_requests WHERE state = 'SUCCEEDED'"), N);
    assert_int_equal(e2e_wait_int(e, 1, 60, "SELECT count(*) FROM dead_letters"), 1);
    assert_int_equal(e2e_wait_int(e, 3 * N, 60, "SELECT count(*) FROM receipt_outbox WHERE published_at IS NOT NULL"), 3 * N);
    assert_int_equal(e2e_wait_committed(e, N + 1, 30), N + 1);

    /* The DLQ counter moves after its delivery report: give it a moment to settle. */
    json_t *samples = NULL;
    for (int tries = 0; tries < 50; tries++) {
        json_decref(samples);
        samples = scrape(s, &r);
        if (sample(samples, "tp_worker_dead_letters_total", "reason=DECODE_FRAMING", NULL) == 1 &&
            sample(samples, "tp_worker_receipts_published_total", NULL) == 3 * N &&
            sample(samples, "tp_worker_requests_in_flight", NULL) == 0)
            break;
        usleep(200 * 1000);
    }
    /* The same text again, for the dashboard check below. */
    snprintf(scrape_path, sizeof(scrape_path), "/tmp/tp-ops-%s.prom", e->suffix);
    FILE *f = fopen(scrape_path, "w");
    assert_non_null(f);
    fwrite(r.body, 1, r.len, f);
    fclose(f);
    assert_non_null(strstr(r.content_type, "text/plain; version=0.0.4"));

    assert_true(sample(samples, "tp_worker_provisionings_total", "state=SUCCEEDED", "source=BILLING", NULL) == N);
    assert_true(sample(samples, "tp_worker_provisionings_total", "state=FAILED", "source=BILLING", NULL) == 0);
    assert_true(sample(samples, "tp_worker_provisionings_total", "state=DENIED", "source=BILLING", NULL) == 0);
    assert_true(sample(samples, "tp_worker_provisionings_total", "state=SUCCEEDED", "source=ADMIN_API", NULL) == 0);
    assert_true(sample(samples, "tp_worker_records_consumed_total", NULL) == N + 1);
    assert_true(sample(samples, "tp_worker_receipts_published_total", NULL) == 3 * N);
    assert_true(sample(samples, "tp_worker_dead_letters_total", "reason=DECODE_FRAMING", NULL) == 1);
    assert_int_equal(count_samples(samples, "tp_worker_dead_letters_total"), 1);
    for (size_t i = 0; i < sizeof(stages) / sizeof(stages[0]); i++) {
        char label[64];
        snprintf(label, sizeof(label), "stage=%s", stages[i]);
        double count = sample(samples, "tp_worker_stage_duration_seconds_count", label, NULL);
        double inf = sample(samples, "tp_worker_stage_duration_seconds_bucket", label, "le=+Inf", NULL);
        if (count < N)
            print_error("stage %s ran %g times, expected at least %d\n", stages[i], count, N);
        assert_true(count >= N);
        assert_true(inf == count);
        assert_true(sample(samples, "tp_worker_stage_duration_seconds_sum", label, NULL) > 0);
    }
    /* One OPA decision per request, plus one per failed call (retried); retries as recorded in
     * PostgreSQL (each one is an attempt past the first; none on a quiet stack). */
    double opa_errors = sum_samples(samples, "tp_worker_opa_errors_total");
    assert_true(sample(samples, "tp_worker_opa_decision_duration_seconds_count", NULL) == N + opa_errors);
    assert_true(sum_samples(samples, "tp_worker_retries_total") ==
                (double)e2e_int(e, "SELECT coalesce(sum(attempts - 1), 0) FROM provisioning_stages WHERE attempts > 1"));
    assert_true(sample(samples, "tp_worker_requests_in_flight", NULL) == 0);
    assert_true(sample(samples, "tp_worker_assigned_partitions", NULL) == 6);
    assert_true(sample(samples, "tp_worker_paused_partitions", NULL) == 0);
    assert_true(sample(samples, "tp_worker_pg_pool_waits_total", NULL) >= 0);
    /* Every record consumed: no lag on any of the six partitions that were fetched. */
    assert_true(count_samples(samples, "tp_worker_consumer_lag") >= 1);
    for (int p = 0; p < 6; p++) {
        char label[32];
        snprintf(label, sizeof(label), "partition=%d", p);
        double lag = sample(samples, "tp_worker_consumer_lag", label, NULL);
        assert_true(lag == -1 || lag == 0);
    }
    assert_true(sample(samples, "tp_worker_outbox_backlog", NULL) == 0);
    assert_true(sample(samples, "tp_worker_outbox_oldest_age_seconds", NULL) == 0);
    json_decref(samples);

    /* The dashboard asks only for what a live worker and a live tp-ingress serve. */
    char ingress_scrape[300];
    ingress_proc ingress;
    assert_int_equal(ingress_start(e, &ingress, "ops", NULL), 0);
    http(ingress.port, "GET", "/metrics", NULL, 10000, &r);
    ingress_stop(&ingress);
    assert_int_equal(r.status, 200);
    snprintf(ingress_scrape, sizeof(ingress_scrape), "/tmp/tp-ops-%s.ingress.prom", e->suffix);
    f = fopen(ingress_scrape, "w");
    assert_non_null(f);
    fwrite(r.body, 1, r.len, f);
    fclose(f);
    venv_python(py, sizeof(py));
    int rc = e2e_run(out, sizeof(out), "%s tests/support/promcheck.py dashboard "
                     "deploy/grafana/tenant-provisioner.json %s %s", py, scrape_path, ingress_scrape);
    if (rc != 0)
        print_error("dashboard check: %s\n", out);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "tp_worker_stage_duration_seconds_bucket"));
    assert_non_null(strstr(out, "tp_ingress_request_duration_seconds_bucket"));
    /* And a name that no scrape has is caught. */
    rc = e2e_run(out, sizeof(out), "sed 's/tp_worker_consumer_lag/tp_worker_consumer_lagg/' "
                 "deploy/grafana/tenant-provisioner.json > %s.dash && %s tests/support/promcheck.py "
                 "dashboard %s.dash %s %s", scrape_path, py, scrape_path, scrape_path, ingress_scrape);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(out, "not in the scrape: tp_worker_consumer_lagg"));
    e2e_run(out, sizeof(out), "rm -f %s.dash", scrape_path);
    unlink(scrape_path);
    unlink(ingress_scrape);

    http_resp_free(&r);
    assert_int_equal(e2e_worker_stop(e, 0, SIGTERM, 20000, NULL), 0);
}

/* Records waiting behind a paused partition show as lag (or as requests in flight, for those
 * already handed to the engine): 5 records on partition 2, a worker with worker.inflight_max = 1
 * whose first stage run waits on a table lock the test holds. */
static void test_lag_and_pause_while_blocked(void **state) {
    ops_state *s = *state;
    e2e *e = &s->e;
    http_resp r = {0};
    tp_request req;
    tp_db *locker = NULL;
    char err[256];
    json_t *samples = NULL;
    double lag = -1, inflight = -1, paused = -1;

    for (int i = 0; i < 5; i++) {
        char slug[64];
        snprintf(slug, sizeof(slug), "lag-%s-%d", e->suffix, i);
        e2e_request_init(&req, slug, TP_PLAN_FREE);
        assert_int_equal(e2e_submit(e, &req, 1, 2), 0);
    }
    assert_int_equal(tp_db_connect(e->db.dsn, &locker, err, sizeof(err)), 0);
    assert_int_equal(tp_db_begin(locker), 0);
    assert_int_equal(tp_db_exec(locker, "LOCK TABLE provisioning_requests IN ACCESS EXCLUSIVE MODE",
                                0, NULL, NULL), 0);
    FILE *cfg = fopen(e->config_path, "a");
    assert_non_null(cfg);
    fprintf(cfg, "worker.inflight_max = 1\n");
    fclose(cfg);
    assert_int_equal(e2e_worker_start(e, 0), 0);
    assert_int_equal(wait_status(s->port, "/healthz", 200, 30, &r), 200);
    int64_t until = now_ms() + 40000;
    while (now_ms() < until) {
        json_decref(samples);
        samples = scrape(s, &r);
        lag = sample(samples, "tp_worker_consumer_lag", "partition=2", NULL);
        inflight = sample(samples, "tp_worker_requests_in_flight", NULL);
        paused = sample(samples, "tp_worker_paused_partitions", NULL);
        if (paused == 6 && inflight >= 1 && lag >= 0)
            break;
        usleep(200 * 1000);
    }
    json_decref(samples);
    tp_db_rollback(locker);
    tp_db_close(locker);
    if (paused != 6 || lag + inflight != 5)
        print_error("paused %g, lag %g, in flight %g\n", paused, lag, inflight);
    assert_true(paused == 6);
    assert_true(inflight >= 1);
    assert_true(lag + inflight == 5);

    /* Lock released: everything is provisioned, nothing lags, nothing is paused. */
    assert_int_equal(e2e_wait_int(e, 5, 120, "SELECT count(*) FROM provisioning_requests WHERE state = 'SUCCEEDED'"), 5);
    assert_int_equal(e2e_wait_committed(e, 5, 30), 5);
    until = now_ms() + 20000;
    while (now_ms() < until) {
        samples = scrape(s, &r);
        lag = sample(samples, "tp_worker_consumer_lag", "partition=2", NULL);
        inflight = sample(samples, "tp_worker_requests_in_flight", NULL);
        paused = sample(samples, "tp_worker_paused_partitions", NULL);
        json_decref(samples);
        if (lag == 0 && inflight == 0 && paused == 0)
            break;
        usleep(200 * 1000);
    }
    assert_true(lag == 0);
    assert_true(inflight == 0);
    assert_true(paused == 0);
    http_resp_free(&r);
    assert_int_equal(e2e_worker_stop(e, 0, SIGTERM, 20000, NULL), 0);
}

static void test_readyz_names_frozen_postgres(void **state) {
    ops_state *s = *state;
    e2e *e = &s->e;
    http_resp r = {0}, h = {0};
    char dsn[1024];
    pgproxy *px = pgproxy_start(e->db.dsn, dsn, sizeof(dsn));
    assert_non_null(px);
    FILE *cfg = fopen(e->config_path, "a"); /* later keys win */
    assert_non_null(cfg);
    fprintf(cfg, "pg.dsn = %s\n", dsn);
    fclose(cfg);
    assert_int_equal(e2e_worker_start(e, 0), 0);
    assert_int_equal(wait_status(s->port, "/readyz", 200, 60, &r), 200);

    pgproxy_freeze(px, true);
    int64_t t0 = now_ms();
    /* Within the bound (worker.probe_timeout_ms = 1000: a ping on the open connection, or a new
     * connection's 2 s libpq minimum), the answer is 503 naming PostgreSQL. */
    http(s->port, "GET", "/readyz", NULL, 10000, &r);
    int64_t took = now_ms() - t0;
    if (r.status != 503)
        print_error("/readyz while frozen: %ld %s\n", r.status, r.body);
    assert_int_equal(r.status, 503);
    assert_true(took < 4000);
    assert_non_null(strstr(r.body, "\"failed\":[\"postgresql\"]"));
    assert_non_null(strstr(r.body, "\"postgresql\":\"TP_E"));
    /* Again, now that the connection is gone: a new one cannot open either, still bounded. */
    t0 = now_ms();
    http(s->port, "GET", "/readyz", NULL, 10000, &r);
    took = now_ms() - t0;
    assert_int_equal(r.status, 503);
    assert_true(took < 4000);
    assert_non_null(strstr(r.body, "postgresql"));
    /* Liveness does not depend on the database. */
    http(s->port, "GET", "/healthz", NULL, 3000, &h);
    assert_int_equal(h.status, 200);
    /* A scrape still answers (the outbox gauges are left out while the database is away). */
    http(s->port, "GET", "/metrics", NULL, 10000, &h);
    assert_int_equal(h.status, 200);
    assert_non_null(strstr(h.body, "tp_worker_provisionings_total"));

    pgproxy_freeze(px, false);
    assert_int_equal(wait_status(s->port, "/readyz", 200, 20, &r), 200);
    assert_non_null(strstr(r.body, "\"postgresql\":\"ok\""));
    http_resp_free(&r);
    http_resp_free(&h);
    int exit_status = e2e_worker_stop(e, 0, SIGTERM, 20000, NULL);
    pgproxy_stop(px);
    assert_int_equal(exit_status, 0);
}

static void test_bad_requests(void **state) {
    ops_state *s = *state;
    e2e *e = &s->e;
    http_resp r = {0};
    const size_t huge_len = 600 * 1024; /* past h2o's 8 KiB + 100 x 4 KiB request limit */
    char *huge = malloc(huge_len);
    int status = 0;
    assert_non_null(huge);
    assert_int_equal(e2e_worker_start(e, 0), 0);
    assert_int_equal(wait_status(s->port, "/healthz", 200, 30, &r), 200);

    http(s->port, "GET", "/nope", NULL, 3000, &r);
    assert_int_equal(r.status, 404);
    http(s->port, "GET", "/metrics/extra", NULL, 3000, &r);
    assert_int_equal(r.status, 404);
    http(s->port, "POST", "/metrics", NULL, 3000, &r);
    assert_int_equal(r.status, 405);
    assert_non_null(strstr(r.allow, "GET"));
    http(s->port, "DELETE", "/readyz", NULL, 3000, &r);
    assert_int_equal(r.status, 405);
    http(s->port, "HEAD", "/healthz", NULL, 3000, &r);
    assert_int_equal(r.status, 405);
    /* A 600 KB header: h2o answers 400 (or closes while we still send), the worker lives on. */
    memcpy(huge, "X-Huge: ", 8);
    memset(huge + 8, 'a', huge_len - 9);
    huge[huge_len - 1] = '\0';
    http(s->port, "GET", "/metrics", huge, 5000, &r);
    if (r.status != 0 && r.status != 400)
        print_error("600 KB header: %ld\n", r.status);
    assert_true(r.status == 0 || r.status == 400);
    /* More than h2o's 100 headers: 400. */
    {
        char req[8192], status_line[128];
        int n = snprintf(req, sizeof(req), "GET /metrics HTTP/1.1\r\nHost: x\r\n");
        for (int i = 0; i < 150; i++)
            n += snprintf(req + n, sizeof(req) - (size_t)n, "X-%d: a\r\n", i);
        n += snprintf(req + n, sizeof(req) - (size_t)n, "\r\n");
        raw_request(s->port, req, (size_t)n, status_line, sizeof(status_line));
        assert_string_equal(status_line, "HTTP/1.1 400 Bad Request");
        /* Not HTTP at all: 400 too. */
        raw_request(s->port, "\x16\x03\x01 hello\r\n\r\n", 12, status_line, sizeof(status_line));
        assert_true(status_line[0] == '\0' || strstr(status_line, " 400 ") != NULL);
    }
    /* A body on a GET past the 4 KiB limit: 413, not read into memory. */
    free(huge);
    assert_int_equal(e2e_run((char[512]){0}, 512,
                             "head -c 100000 /dev/zero | curl -s -o /dev/null -w '%%{http_code}' "
                             "-X GET --data-binary @- http://127.0.0.1:%d/metrics | grep -qE '^(413|400)$'",
                             s->port), 0);
    /* Query strings and trailing junk do not confuse the routes. */
    http(s->port, "GET", "/healthz?verbose=1", NULL, 3000, &r);
    assert_int_equal(r.status, 200);

    assert_int_equal(waitpid(e->workers[0], &status, WNOHANG), 0); /* still running */
    http(s->port, "GET", "/healthz", NULL, 3000, &r);
    assert_int_equal(r.status, 200);
    http_resp_free(&r);
    assert_int_equal(e2e_worker_stop(e, 0, SIGTERM, 20000, NULL), 0);
}

/* A busy address is a start-up error (exit 1), not a worker without probes. */
static void test_busy_address_fails_start(void **state) {
    ops_state *s = *state;
    e2e *e = &s->e;
    struct sockaddr_in a;
    int fd = socket(AF_INET, SOCK_STREAM, 0), status = 0;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((uint16_t)s->port);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(fd, 1), 0);
    assert_int_equal(e2e_worker_start(e, 0), 0);
    int64_t until = now_ms() + 20000;
    pid_t got = 0;
    while (now_ms() < until && (got = waitpid(e->workers[0], &status, WNOHANG)) == 0)
        usleep(50 * 1000);
    close(fd);
    assert_int_equal(got, e->workers[0]);
    e->workers[0] = 0;
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_scrape_after_provisionings, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lag_and_pause_while_blocked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_readyz_names_frozen_postgres, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_requests, setup, teardown),
        cmocka_unit_test_setup_teardown(test_busy_address_fails_start, setup, teardown),
    };
    if (getenv("TP_TEST_FILTER"))
        cmocka_set_test_filter(getenv("TP_TEST_FILTER"));
    return ingress_logs_finish(cmocka_run_group_tests(tests, NULL, NULL));
}
