/* test_ingress_shutdown.c: a hook still running on the pool when the drain budget is spent
 * (issue 9 item 5): tp_ingress_server_free waits for it (the POST still gets its answer) instead of
 * freeing the server under it, and when even that wait runs out it frees nothing and says so; a
 * later call then frees everything. Run under ASan: before the fix the pool thread's completion
 * touched the freed loop. And a hook that hangs (a frozen PostgreSQL) is answered 503 at the
 * answer deadline while it still runs (issue 9). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ingress/ingress_int.h"
#include "tp/config.h"
#include "tp/error.h"
#include "tp/ingress.h"

#define SECRET "0123456789abcdef0123456789abcdef-shutdown-test"
#define BODY "{\"name\":\"Slow Co\",\"slug\":\"slow-co\",\"residency\":\"US\"}"

typedef struct slow_hook {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool started, release, finished;
    int hold_ms; /* > 0: return after this long; 0: until released */
} slow_hook;

static slow_hook hk = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* An enqueue that blocks past the drain budget, like a delivery wait on a frozen broker. */
static int slow_enqueue(void *opaque, const tp_request *req, const unsigned char fp[32],
                        char *replay_id, size_t replay_cap) {
    slow_hook *h = opaque;
    (void)req;
    (void)fp;
    (void)replay_cap;
    replay_id[0] = '\0';
    pthread_mutex_lock(&h->mu);
    h->started = true;
    pthread_cond_broadcast(&h->cv);
    int64_t until = now_ms() + h->hold_ms;
    while (!h->release && (h->hold_ms == 0 || now_ms() < until)) {
        pthread_mutex_unlock(&h->mu);
        usleep(10000);
        pthread_mutex_lock(&h->mu);
    }
    h->finished = true;
    pthread_mutex_unlock(&h->mu);
    return 0;
}

static char key_path[300], dir[64];

/* deadlines: the statement, OPA and produce timeouts ("300,100,100"; NULL: the defaults). */
static tp_ingress_server *server_new_with(const char *deadlines) {
    char err[256];
    tp_ingress_server *srv = NULL;
    tp_config *cfg = tp_config_new();
    assert_non_null(cfg);
    assert_int_equal(tp_config_set(cfg, "jwt.key_file", key_path, err, sizeof(err)), 0);
    assert_int_equal(tp_config_set(cfg, "ingress.listen_port", "0", err, sizeof(err)), 0);
    if (deadlines) {
        char st[16], opa[16], produce[16];
        assert_int_equal(sscanf(deadlines, "%15[^,],%15[^,],%15s", st, opa, produce), 3);
        assert_int_equal(tp_config_set(cfg, "pg.statement_timeout_ms", st, err, sizeof(err)), 0);
        assert_int_equal(tp_config_set(cfg, "opa.timeout_ms", opa, err, sizeof(err)), 0);
        assert_int_equal(tp_config_set(cfg, "ingress.produce_timeout_ms", produce, err, sizeof(err)), 0);
    }
    tp_ingress_hooks hooks = {.opaque = &hk, .enqueue = slow_enqueue};
    assert_int_equal(tp_ingress_server_new(cfg, &hooks, &srv, err, sizeof(err)), 0);
    tp_config_free(cfg);
    return srv;
}

static tp_ingress_server *server_new(void) { return server_new_with(NULL); }

/* Stops the server once the hook runs. */
static void *stopper_main(void *p) {
    pthread_mutex_lock(&hk.mu);
    while (!hk.started)
        pthread_cond_wait(&hk.cv, &hk.mu);
    pthread_mutex_unlock(&hk.mu);
    tp_ingress_server_stop(p);
    return NULL;
}

typedef struct client {
    int port;
    long status;
    int64_t elapsed_ms;
    atomic_bool done;
} client;

static size_t discard(char *p, size_t sz, size_t n, void *ud) {
    (void)p;
    (void)ud;
    return sz * n;
}

static void *client_main(void *p) {
    client *c = p;
    char url[128], auth[1024], claims[256];
    snprintf(claims, sizeof(claims),
             "{\"sub\":\"root\",\"roles\":[\"admin\"],\"iss\":\"tp-dev\",\"aud\":\"tenant-provisioner\",\"exp\":%lld}",
             (long long)time(NULL) + 600);
    char *tok = tp_auth_sign("HS256", (const unsigned char *)SECRET, strlen(SECRET), claims);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/api/admin/tenants", c->port);
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", tok);
    free(tok);
    struct curl_slist *h = curl_slist_append(NULL, auth);
    h = curl_slist_append(h, "Content-Type: application/json");
    CURL *e = curl_easy_init();
    int64_t t0 = now_ms();
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 20000L);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, BODY);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard);
    if (curl_easy_perform(e) == CURLE_OK)
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &c->status);
    c->elapsed_ms = now_ms() - t0;
    curl_easy_cleanup(e);
    curl_slist_free_all(h);
    atomic_store(&c->done, true);
    return NULL;
}

/* Starts a server, sends one POST whose enqueue hook blocks, stops the server and runs it on
 * this thread (as tp-ingress does: h2o keeps per-thread buffers) until tp_ingress_server_run
 * returns, the drain budget spent with the hook still running. */
static tp_ingress_server *stop_with_hook_running(pthread_t *client_th, client *c, int hold_ms,
                                                 uint64_t pool_wait_ms) {
    pthread_t stop_th;
    hk.started = hk.release = hk.finished = false;
    hk.hold_ms = hold_ms;
    tp_ingress_server *srv = server_new();
    tp_ingress_server_set_drain_ms(srv, 200, pool_wait_ms);
    c->port = tp_ingress_server_port(srv);
    c->status = 0;
    assert_int_equal(pthread_create(&stop_th, NULL, stopper_main, srv), 0);
    assert_int_equal(pthread_create(client_th, NULL, client_main, c), 0);
    tp_ingress_server_run(srv, false); /* returns after the 200 ms drain budget */
    pthread_join(stop_th, NULL);
    pthread_mutex_lock(&hk.mu);
    bool finished = hk.finished;
    pthread_mutex_unlock(&hk.mu);
    assert_false(finished);
    return srv;
}

/* The hook outlives the drain budget but not the pool wait: free waits for it, its POST is
 * answered, then everything is freed. */
static void test_free_waits_for_running_hook(void **state) {
    (void)state;
    pthread_t th;
    client c;
    tp_ingress_server *srv = stop_with_hook_running(&th, &c, 1000, 10000);
    int64_t t0 = now_ms();
    int rc = tp_ingress_server_free(srv);
    int64_t took = now_ms() - t0;
    pthread_mutex_lock(&hk.mu);
    bool finished = hk.finished;
    pthread_mutex_unlock(&hk.mu);
    fprintf(stderr, "free after the drain budget returned %d in %lld ms, hook finished: %d\n", rc,
            (long long)took, finished);
    assert_true(finished); /* before the fix: freed at once, the hook still running */
    assert_int_equal(rc, 0);
    pthread_join(th, NULL);
    assert_int_equal(c.status, 202);
}

/* The hook outlives the pool wait too: free leaves everything allocated and says so; once the
 * hook is back a second call frees it all (LeakSanitizer checks that nothing stays). */
static void test_free_abandons_then_frees(void **state) {
    (void)state;
    pthread_t th;
    client c;
    tp_ingress_server *srv = stop_with_hook_running(&th, &c, 0, 300);
    assert_int_not_equal(tp_ingress_server_free(srv), 0);
    pthread_mutex_lock(&hk.mu);
    hk.release = true;
    pthread_mutex_unlock(&hk.mu);
    int rc;
    for (int i = 0; i < 20 && (rc = tp_ingress_server_free(srv)) != 0; i++)
        ;
    assert_int_equal(rc, 0);
    assert_true(hk.finished);
    pthread_join(th, NULL);
    assert_int_equal(c.status, 202);
}

/* Once the client has its answer: releases the hook, then stops the server. */
static void *release_after_answer_main(void *p) {
    void **args = p;
    client *c = args[0];
    while (!atomic_load(&c->done))
        usleep(10000);
    pthread_mutex_lock(&hk.mu);
    hk.release = true;
    pthread_mutex_unlock(&hk.mu);
    usleep(200000); /* the hook's completion reaches the loop */
    tp_ingress_server_stop(args[1]);
    return NULL;
}

/* The enqueue hook hangs (a session on a frozen PostgreSQL: statement_timeout never fires): the
 * POST is answered 503 at the answer deadline (300 + 100 + 100 ms) while the hook still runs;
 * the hook's late completion then finds nobody to answer and everything is freed. Before: the
 * POST waited as long as the hook (the client's 20 s here). */
static void test_answer_deadline_while_hook_hangs(void **state) {
    (void)state;
    pthread_t client_th, rel_th;
    client c = {0};
    hk.started = hk.release = hk.finished = false;
    hk.hold_ms = 0;
    tp_ingress_server *srv = server_new_with("300,100,100");
    c.port = tp_ingress_server_port(srv);
    void *args[2] = {&c, srv};
    assert_int_equal(pthread_create(&client_th, NULL, client_main, &c), 0);
    assert_int_equal(pthread_create(&rel_th, NULL, release_after_answer_main, args), 0);
    tp_ingress_server_run(srv, false);
    pthread_join(client_th, NULL);
    pthread_join(rel_th, NULL);
    fprintf(stderr, "hung enqueue hook: POST -> %ld in %lld ms\n", c.status, (long long)c.elapsed_ms);
    assert_int_equal(c.status, 503);
    assert_true(c.elapsed_ms >= 450 && c.elapsed_ms < 3000);
    assert_int_equal(tp_ingress_server_free(srv), 0);
    assert_true(hk.finished);
}

static int setup(void **state) {
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/tp_shut_XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    snprintf(key_path, sizeof(key_path), "%s/jwt.secret", dir);
    FILE *f = fopen(key_path, "w");
    if (!f)
        return -1;
    fputs(SECRET "\n", f);
    fclose(f);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    curl_global_cleanup();
    unlink(key_path);
    rmdir(dir);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_free_waits_for_running_hook),
        cmocka_unit_test(test_free_abandons_then_frees),
        cmocka_unit_test(test_answer_deadline_while_hook_hangs),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
