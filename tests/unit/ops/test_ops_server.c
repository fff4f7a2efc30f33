/* test_ops_server: worker/ops with hooks of the test's own: /healthz answers from the live hook
 * (503 when it says stuck) and is not held up by a slow /readyz (the check thread), /readyz and
 * /metrics carry the hooks' bodies, routes and methods are checked, and stopping with a check in
 * progress frees everything (ASan). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "tp/error.h"
#include "tp/ops.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct fake {
    atomic_int live_rc;
    atomic_int ready_delay_ms;
    atomic_int ready_calls;
} fake;

static int live(void *opaque, char *detail, size_t cap) {
    fake *f = opaque;
    int rc = atomic_load(&f->live_rc);
    if (rc)
        snprintf(detail, cap, "the loop did not answer");
    return rc;
}

static int ready(void *opaque, tp_metrics_buf *b) {
    fake *f = opaque;
    atomic_fetch_add(&f->ready_calls, 1);
    usleep((useconds_t)atomic_load(&f->ready_delay_ms) * 1000);
    tp_metrics_printf(b, "{\"status\":\"not ready\",\"failed\":[\"postgresql\"]}");
    return TP_EUNAVAILABLE;
}

static void render(void *opaque, tp_metrics_buf *b) {
    (void)opaque;
    tp_metrics_family(b, "tp_test_extra", "gauge", "A series of the hooks.");
    tp_metrics_printf(b, "tp_test_extra 42\n");
}

typedef struct res {
    long status;
    char body[65536];
    size_t len;
    double seconds;
} res;

static size_t on_body(char *p, size_t size, size_t n, void *arg) {
    res *r = arg;
    size_t take = size * n;
    if (take > sizeof(r->body) - 1 - r->len)
        take = sizeof(r->body) - 1 - r->len;
    memcpy(r->body + r->len, p, take);
    r->len += take;
    r->body[r->len] = '\0';
    return size * n;
}

static void get(int port, const char *method, const char *path, res *r) {
    char url[128];
    struct timespec a, b;
    CURL *c = curl_easy_init();
    memset(r, 0, sizeof(*r));
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    clock_gettime(CLOCK_MONOTONIC, &a);
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    clock_gettime(CLOCK_MONOTONIC, &b);
    r->seconds = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
    curl_easy_cleanup(c);
}

static tp_ops_server *start(fake *f) {
    tp_ops_hooks hooks = {f, live, ready, render};
    tp_ops_server *srv = NULL;
    char err[256];
    assert_int_equal(tp_ops_server_start("127.0.0.1:0", &hooks, &srv, err, sizeof(err)), 0);
    assert_true(tp_ops_server_port(srv) > 0);
    return srv;
}

static void test_routes_and_hooks(void **state) {
    (void)state;
    fake f = {0};
    res r;
    tp_ops_server *srv = start(&f);
    int port = tp_ops_server_port(srv);
    get(port, "GET", "/healthz", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"status\":\"ok\"}");
    atomic_store(&f.live_rc, TP_ETIMEOUT);
    get(port, "GET", "/healthz", &r);
    assert_int_equal(r.status, 503);
    assert_non_null(strstr(r.body, "\"status\":\"stuck\""));
    get(port, "GET", "/readyz", &r);
    assert_int_equal(r.status, 503);
    assert_non_null(strstr(r.body, "\"failed\":[\"postgresql\"]"));
    get(port, "GET", "/metrics", &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "# TYPE tp_worker_provisionings_total counter\n"));
    assert_non_null(strstr(r.body, "\ntp_test_extra 42\n"));
    get(port, "GET", "/", &r);
    assert_int_equal(r.status, 404);
    get(port, "PUT", "/readyz", &r);
    assert_int_equal(r.status, 405);
    tp_ops_server_stop(srv);
}

typedef struct bg {
    int port;
    res r;
} bg;

static void *slow_readyz(void *arg) {
    bg *b = arg;
    get(b->port, "GET", "/readyz", &b->r);
    return NULL;
}

/* A readiness check that takes 1.5 s does not hold up /healthz. */
static void test_healthz_not_behind_readyz(void **state) {
    (void)state;
    fake f = {0};
    res r;
    bg b;
    pthread_t t;
    atomic_store(&f.ready_delay_ms, 1500);
    tp_ops_server *srv = start(&f);
    b.port = tp_ops_server_port(srv);
    assert_int_equal(pthread_create(&t, NULL, slow_readyz, &b), 0);
    while (atomic_load(&f.ready_calls) == 0)
        usleep(1000);
    get(b.port, "GET", "/healthz", &r);
    assert_int_equal(r.status, 200);
    assert_true(r.seconds < 0.5);
    pthread_join(t, NULL);
    assert_int_equal(b.r.status, 503);
    assert_true(b.r.seconds >= 1.4);
    tp_ops_server_stop(srv);
}

/* Stopping while a check runs and another waits: both get an answer, nothing leaks. */
static void test_stop_with_checks_pending(void **state) {
    (void)state;
    fake f = {0};
    bg b1, b2;
    pthread_t t1, t2;
    atomic_store(&f.ready_delay_ms, 800);
    tp_ops_server *srv = start(&f);
    b1.port = b2.port = tp_ops_server_port(srv);
    assert_int_equal(pthread_create(&t1, NULL, slow_readyz, &b1), 0);
    while (atomic_load(&f.ready_calls) == 0)
        usleep(1000);
    assert_int_equal(pthread_create(&t2, NULL, slow_readyz, &b2), 0);
    usleep(200 * 1000);
    tp_ops_server_stop(srv);
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    assert_int_equal(b1.r.status, 503); /* the check that ran */
    assert_true(b2.r.status == 503 || b2.r.status == 0);
    assert_int_equal(atomic_load(&f.ready_calls), 1);
}

static void test_bad_addresses(void **state) {
    (void)state;
    tp_ops_hooks hooks = {0};
    tp_ops_server *srv = NULL, *again = NULL;
    char err[256], addr[64];
    assert_int_equal(tp_ops_server_start("localhost:9464", &hooks, &srv, err, sizeof(err)), TP_ECONFIG);
    assert_int_equal(tp_ops_server_start("127.0.0.1", &hooks, &srv, err, sizeof(err)), TP_ECONFIG);
    assert_int_equal(tp_ops_server_start("127.0.0.1:70000", &hooks, &srv, err, sizeof(err)), TP_ECONFIG);
    assert_int_equal(tp_ops_server_start("[::1:9464", &hooks, &srv, err, sizeof(err)), TP_ECONFIG);
    assert_null(srv);
    assert_int_equal(tp_ops_server_start("127.0.0.1:0", &hooks, &srv, err, sizeof(err)), 0);
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", tp_ops_server_port(srv));
    assert_int_equal(tp_ops_server_start(addr, &hooks, &again, err, sizeof(err)), TP_EIO);
    assert_non_null(strstr(err, "address already in use"));
    tp_ops_server_stop(srv);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_routes_and_hooks),
        cmocka_unit_test(test_healthz_not_behind_readyz),
        cmocka_unit_test(test_stop_with_checks_pending),
        cmocka_unit_test(test_bad_addresses),
    };
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
