/* test_ingress_server.c: real HTTP requests (libcurl) against the libh2o server on a loopback
 * port, with fake hooks: routes, auth, 413/415/400/403/404/405/422/503 problems, the in-flight
 * cap, 202 + Location,
 * idempotent replay, status access rules, /metrics and /openapi.yaml. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "tp/config.h"
#include "tp/error.h"
#include "tp/ingress.h"

#define SECRET "0123456789abcdef0123456789abcdef-server-test"
#define SEED_BODY                                                                                  \
    "{\"name\":\"Acme Intel\",\"slug\":\"acme-intel\",\"residency\":\"US\",\"region\":\"us-east-1\"," \
    "\"plan\":\"ENTERPRISE\",\"environment\":\"prod\",\"requestedSeats\":250,"                      \
    "\"storageEstimateBytes\":500000000000}"

/* ---- fake hooks ---------------------------------------------------------------------------- */

#define FAKE_MAX 32
typedef struct fake {
    pthread_mutex_t mu;
    int n;
    char ids[FAKE_MAX][TP_REQUEST_ID_MAX + 1];
    char owners[FAKE_MAX][TP_ACTOR_ID_MAX + 1];
    char keys[FAKE_MAX][TP_IDEMPOTENCY_KEY_MAX + 1];
    unsigned char fps[FAKE_MAX][32];
    char states[FAKE_MAX][16];
    char slugs[FAKE_MAX][TP_SLUG_MAX + 1];
    int state_lookups[FAKE_MAX];
    tp_request last;
    int enqueued;
    int pre_checks;
    int ready_rc;
} fake;

static fake fk = {.mu = PTHREAD_MUTEX_INITIALIZER};

static int fake_idem(void *opaque, const char *sub, const char *key, const unsigned char fp[32],
                     char *id, size_t cap) {
    fake *f = opaque;
    int rc = TP_ENOT_FOUND;
    pthread_mutex_lock(&f->mu);
    for (int i = 0; i < f->n; i++) {
        if (strcmp(f->keys[i], key) == 0 && strcmp(f->owners[i], sub) == 0) {
            rc = memcmp(f->fps[i], fp, 32) == 0 ? 0 : TP_EIDEMPOTENCY_MISMATCH;
            snprintf(id, cap, "%s", f->ids[i]);
        }
    }
    pthread_mutex_unlock(&f->mu);
    return rc;
}

static int fake_pre_check(void *opaque, const tp_request *req, tp_policy_decision *out) {
    fake *f = opaque;
    pthread_mutex_lock(&f->mu);
    f->pre_checks++;
    pthread_mutex_unlock(&f->mu);
    memset(out, 0, sizeof(*out));
    snprintf(out->decision_id, sizeof(out->decision_id), "dec-1");
    if (strcmp(req->tenant.slug, "opa-down") == 0)
        return TP_EOPA_UNAVAILABLE;
    if (strcmp(req->tenant.slug, "deny-me") == 0) {
        out->n_reasons = 1;
        snprintf(out->reasons[0], sizeof(out->reasons[0]), "ENTERPRISE_NOT_SELF_SERVE");
        return 0;
    }
    out->allow = true;
    return 0;
}

static int fake_enqueue(void *opaque, const tp_request *req, const unsigned char fp[32],
                        char *replay_id, size_t replay_cap) {
    fake *f = opaque;
    (void)replay_cap;
    replay_id[0] = '\0';
    if (strcmp(req->tenant.slug, "kafka-down") == 0)
        return TP_EKAFKA;
    pthread_mutex_lock(&f->mu);
    if (f->n < FAKE_MAX) {
        snprintf(f->ids[f->n], sizeof(f->ids[0]), "%s", req->request_id);
        snprintf(f->owners[f->n], sizeof(f->owners[0]), "%s", req->actor.id);
        snprintf(f->keys[f->n], sizeof(f->keys[0]), "%s", req->idempotency_key);
        memcpy(f->fps[f->n], fp, 32);
        snprintf(f->slugs[f->n], sizeof(f->slugs[0]), "%s", req->tenant.slug);
        snprintf(f->states[f->n], sizeof(f->states[0]), "%s",
                 strcmp(req->tenant.slug, "wait-done") == 0     ? "SUCCEEDED"
                 : strcmp(req->tenant.slug, "wait-denied") == 0 ? "DENIED"
                 : strcmp(req->tenant.slug, "wait-taken") == 0  ? "FAILED"
                                                                : "ACCEPTED");
        f->n++;
    }
    f->last = *req;
    f->enqueued++;
    pthread_mutex_unlock(&f->mu);
    return 0;
}

static int fake_status(void *opaque, const char *id, char **json_out, char *owner, size_t cap) {
    fake *f = opaque;
    int rc = TP_ENOT_FOUND;
    pthread_mutex_lock(&f->mu);
    for (int i = 0; i < f->n; i++) {
        if (strcmp(f->ids[i], id) == 0) {
            snprintf(owner, cap, "%s", f->owners[i]);
            json_t *o = json_pack(
                "{s:s, s:s, s:s?, s:{s:{s:b, s:s, s:[s]}}, s:{s:s, s:s, s:s}, s:{s:s, s:s, s:s},"
                " s:[{s:s, s:s, s:s}], s:{s:s, s:i}, s:{s:{s:s, s:s}, s:{s:s, s:s}}}",
                "requestId", id, "state", f->states[i], "failureReason",
                strcmp(f->states[i], "FAILED") == 0 ? "SLUG_TAKEN" : NULL, "policy", "opa", "allow",
                strcmp(f->states[i], "DENIED") != 0, "decisionId", "dec-7", "reasons",
                "SEATS_OVER_PLAN_CAP", "tenant", "id", "tenant-x", "name", "Wait", "slug",
                f->slugs[i], "namespace", "id", "ns_tenant-x", "slug", "wait-prod", "environment",
                "prod", "partitions", "id", "part_tenant-x_primary", "name", "primary", "type",
                "primary", "quota", "tier", "STARTER", "requestsPerDay", 100000, "receipts",
                "provisioning", "id", "prov_1", "actionType", "TENANT_PROVISIONED",
                "quotaAssignment", "id", "prov_2", "actionType", "TENANT_QUOTA_ASSIGNED");
            *json_out = json_dumps(o, JSON_COMPACT);
            json_decref(o);
            rc = 0;
        }
    }
    pthread_mutex_unlock(&f->mu);
    return rc;
}

/* wait-later becomes SUCCEEDED on its third look. */
static int fake_state(void *opaque, const char *id, char *state, size_t cap) {
    fake *f = opaque;
    int rc = TP_ENOT_FOUND;
    pthread_mutex_lock(&f->mu);
    for (int i = 0; i < f->n; i++) {
        if (strcmp(f->ids[i], id) == 0) {
            if (++f->state_lookups[i] >= 3 && strcmp(f->slugs[i], "wait-later") == 0)
                snprintf(f->states[i], sizeof(f->states[0]), "SUCCEEDED");
            snprintf(state, cap, "%s", f->states[i]);
            rc = 0;
        }
    }
    pthread_mutex_unlock(&f->mu);
    return rc;
}

/* The overload test parks readiness probes here until it lets them go. */
static pthread_mutex_t block_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t block_cv = PTHREAD_COND_INITIALIZER;
static bool block_ready;
static int blocked;

static int fake_ready(void *opaque, char *detail, size_t cap) {
    fake *f = opaque;
    pthread_mutex_lock(&block_mu);
    if (block_ready) {
        blocked++;
        pthread_cond_broadcast(&block_cv);
        while (block_ready)
            pthread_cond_wait(&block_cv, &block_mu);
    }
    pthread_mutex_unlock(&block_mu);
    if (f->ready_rc)
        snprintf(detail, cap, "kafka: broker down");
    return f->ready_rc;
}

/* ---- server thread and HTTP client ---------------------------------------------------------- */

static tp_ingress_server *srv;
static pthread_t srv_thread;
static char dir[64], key_path[128];
static char *tok_admin, *tok_alice, *tok_bob;

static pthread_mutex_t park_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t park_cv = PTHREAD_COND_INITIALIZER;
static bool server_done;

/* Runs and frees the server on its own thread, then parks: h2o keeps per-thread recycle caches
 * in TLS that only stay reachable (for LeakSanitizer) while the thread lives. */
static void *run_server(void *arg) {
    (void)arg;
    tp_ingress_server_run(srv, false);
    tp_ingress_server_free(srv);
    pthread_mutex_lock(&park_mu);
    server_done = true;
    pthread_cond_broadcast(&park_cv);
    for (;;)
        pthread_cond_wait(&park_cv, &park_mu);
    return NULL;
}

static char *mint(const char *sub, const char *roles) {
    char claims[512];
    snprintf(claims, sizeof(claims),
             "{\"sub\":\"%s\",\"roles\":%s,\"iss\":\"tp-dev\",\"aud\":\"tenant-provisioner\","
             "\"exp\":%lld}",
             sub, roles, (long long)time(NULL) + 600);
    return tp_auth_sign("HS256", (const unsigned char *)SECRET, strlen(SECRET), claims);
}

static int setup(void **state) {
    (void)state;
    char err[256];
    snprintf(dir, sizeof(dir), "/tmp/tp_srv_XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    snprintf(key_path, sizeof(key_path), "%s/jwt.secret", dir);
    FILE *f = fopen(key_path, "w");
    fputs(SECRET "\n", f);
    fclose(f);
    tp_config *cfg = tp_config_new();
    if (tp_config_set(cfg, "jwt.key_file", key_path, err, sizeof(err)) != 0 ||
        tp_config_set(cfg, "ingress.listen_port", "0", err, sizeof(err)) != 0 ||
        tp_config_set(cfg, "ingress.body_limit", "1024", err, sizeof(err)) != 0 ||
        tp_config_set(cfg, "ingress.inflight_max", "4", err, sizeof(err)) != 0)
        return -1;
    tp_ingress_hooks hooks = {.opaque = &fk,
                              .idempotency_lookup = fake_idem,
                              .pre_check = fake_pre_check,
                              .enqueue = fake_enqueue,
                              .status_lookup = fake_status,
                              .state_lookup = fake_state,
                              .ready = fake_ready};
    int rc = tp_ingress_server_new(cfg, &hooks, &srv, err, sizeof(err));
    tp_config_free(cfg);
    if (rc != 0) {
        fprintf(stderr, "server: %s\n", err);
        return -1;
    }
    tok_admin = mint("root", "[\"admin\"]");
    tok_alice = mint("alice", "[\"user\"]");
    tok_bob = mint("bob", "[\"user\"]");
    curl_global_init(CURL_GLOBAL_DEFAULT);
    return pthread_create(&srv_thread, NULL, run_server, NULL);
}

static int idle_fd = -1; /* a keep-alive connection left open across the server's stop */

static int teardown(void **state) {
    (void)state;
    tp_ingress_server_stop(srv);
    pthread_mutex_lock(&park_mu);
    while (!server_done)
        pthread_cond_wait(&park_cv, &park_mu);
    pthread_mutex_unlock(&park_mu);
    pthread_detach(srv_thread);
    if (idle_fd >= 0)
        close(idle_fd);
    free(tok_admin);
    free(tok_alice);
    free(tok_bob);
    curl_global_cleanup();
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

typedef struct resp {
    long status;
    char body[65536];
    size_t body_len;
    char headers[8192];
    size_t headers_len;
} resp;

static size_t on_body(char *p, size_t sz, size_t n, void *ud) {
    resp *r = ud;
    size_t len = sz * n, room = sizeof(r->body) - 1 - r->body_len;
    size_t c = len < room ? len : room;
    memcpy(r->body + r->body_len, p, c);
    r->body_len += c;
    r->body[r->body_len] = '\0';
    return len;
}

static size_t on_header(char *p, size_t sz, size_t n, void *ud) {
    resp *r = ud;
    size_t len = sz * n, room = sizeof(r->headers) - 1 - r->headers_len;
    size_t c = len < room ? len : room;
    memcpy(r->headers + r->headers_len, p, c);
    r->headers_len += c;
    r->headers[r->headers_len] = '\0';
    return len;
}

/* One request; token/ctype/body/extra may be NULL. Returns the status. */
static long http(resp *r, const char *method, const char *path, const char *token,
                 const char *ctype, const char *body, size_t body_len, const char *extra) {
    char url[256], h1[4096], h2[256];
    memset(r, 0, sizeof(*r));
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", tp_ingress_server_port(srv), path);
    CURL *c = curl_easy_init();
    struct curl_slist *hs = NULL;
    if (token) {
        snprintf(h1, sizeof(h1), "Authorization: Bearer %s", token);
        hs = curl_slist_append(hs, h1);
    }
    snprintf(h2, sizeof(h2), "Content-Type: %s", ctype ? ctype : "");
    hs = curl_slist_append(hs, ctype ? h2 : "Content-Type:");
    if (!extra || strncasecmp(extra, "Expect:", 7) != 0)
        hs = curl_slist_append(hs, "Expect:");
    if (extra)
        hs = curl_slist_append(hs, extra);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hs);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)body_len);
    }
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
    CURLcode cc = curl_easy_perform(c);
    if (cc == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    curl_slist_free_all(hs);
    curl_easy_cleanup(c);
    return r->status;
}

static long post(resp *r, const char *path, const char *token, const char *body, const char *extra) {
    return http(r, "POST", path, token, "application/json", body, strlen(body), extra);
}

/* Asserts a problem+json answer with this type slug. */
static void assert_problem(const resp *r, const char *slug) {
    char want[128];
    assert_non_null(strstr(r->headers, "application/problem+json"));
    snprintf(want, sizeof(want), "\"type\":\"%s%s\"", TP_PROBLEM_TYPE_PREFIX, slug);
    if (!strstr(r->body, want))
        print_error("want %s in %s\n", want, r->body);
    assert_non_null(strstr(r->body, want));
}

/* ---- tests ---------------------------------------------------------------------------------- */

static void test_healthz_and_unknown(void **state) {
    (void)state;
    resp r;
    assert_int_equal(http(&r, "GET", "/healthz", NULL, NULL, NULL, 0, NULL), 200);
    assert_string_equal(r.body, "{\"status\":\"ok\"}");
    assert_int_equal(http(&r, "GET", "/nope", NULL, NULL, NULL, 0, NULL), 404);
    assert_problem(&r, "not-found");
    assert_int_equal(http(&r, "PUT", "/api/admin/tenants", tok_admin, NULL, NULL, 0, NULL), 405);
    assert_problem(&r, "method-not-allowed");
    assert_non_null(strstr(r.headers, "allow: GET, POST"));
    assert_int_equal(http(&r, "POST", "/api/provisioning/requests/x", tok_admin, NULL, NULL, 0, NULL), 405);
    assert_non_null(strstr(r.headers, "allow: GET"));
}

static void test_auth_required(void **state) {
    (void)state;
    resp r;
    assert_int_equal(post(&r, "/api/admin/tenants", NULL, SEED_BODY, NULL), 401);
    assert_problem(&r, "unauthorized");
    assert_non_null(strstr(r.headers, "www-authenticate: Bearer"));
    assert_int_equal(post(&r, "/api/tenants/provision", "garbage.token.x", SEED_BODY, NULL), 401);
    assert_int_equal(http(&r, "GET", "/api/provisioning/requests/x", NULL, NULL, NULL, 0, NULL), 401);
}

static void test_admin_role_required(void **state) {
    (void)state;
    resp r;
    assert_int_equal(post(&r, "/api/admin/tenants", tok_alice, SEED_BODY, NULL), 403);
    assert_problem(&r, "forbidden");
}

static void test_content_type_and_size(void **state) {
    (void)state;
    resp r;
    assert_int_equal(http(&r, "POST", "/api/admin/tenants", tok_admin, "text/plain", SEED_BODY,
                          strlen(SEED_BODY), NULL), 415);
    assert_problem(&r, "unsupported-media-type");
    assert_int_equal(http(&r, "POST", "/api/admin/tenants", tok_admin, NULL, SEED_BODY,
                          strlen(SEED_BODY), NULL), 415);
    assert_int_equal(http(&r, "POST", "/api/admin/tenants", tok_admin,
                          "Application/JSON; charset=utf-8", SEED_BODY, strlen(SEED_BODY), NULL), 202);
    /* Over the 1024-byte limit: a problem+json 413 ... */
    char *big = malloc(2 << 20);
    memset(big, ' ', 2 << 20);
    assert_int_equal(http(&r, "POST", "/api/admin/tenants", tok_admin, "application/json", big,
                          2000, NULL), 413);
    assert_problem(&r, "payload-too-large");
    /* ... and 2 MB is refused by h2o from its Content-Length, before 100-continue: the same
     * problem+json, not h2o's text/plain (issue 9 item 10) ... */
    assert_int_equal(http(&r, "POST", "/api/admin/tenants", tok_admin, "application/json", big,
                          2 << 20, "Expect: 100-continue"), 413);
    assert_problem(&r, "payload-too-large");
    assert_null(strstr(r.headers, "text/plain"));
    /* ... as are 300 KiB, with or without a token: refused by h2o before any handler runs. */
    memcpy(big, "{\"name\":\"", 9);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(http(&r, "POST", "/api/admin/tenants", i ? NULL : tok_admin,
                              "application/json", big, 300 * 1024, "Expect: 100-continue"), 413);
        assert_problem(&r, "payload-too-large");
        assert_non_null(strstr(r.body, "the body limit is 1024 bytes"));
    }
    /* The connection refused above does not hurt the next request. */
    assert_int_equal(http(&r, "GET", "/healthz", NULL, NULL, NULL, 0, NULL), 200);
    free(big);
}

static void test_validation_problem(void **state) {
    (void)state;
    resp r;
    assert_int_equal(post(&r, "/api/admin/tenants", tok_admin,
                          "{\"name\":\"A\",\"slug\":\"acme\",\"residency\":\"US\",\"x\":1}", NULL), 400);
    assert_problem(&r, "validation-error");
    assert_non_null(strstr(r.body, "\"field\":\"/name\""));
    assert_non_null(strstr(r.body, "\"field\":\"/x\""));
    assert_int_equal(post(&r, "/api/admin/tenants", tok_admin, "{\"name\":", NULL), 400);
    assert_problem(&r, "malformed-json");
}

static void test_accepted_with_location(void **state) {
    (void)state;
    resp r;
    int before = fk.enqueued;
    assert_int_equal(post(&r, "/api/admin/tenants", tok_admin, SEED_BODY,
                          "X-Correlation-Id: corr-123"), 202);
    json_t *o = json_loads(r.body, 0, NULL);
    assert_non_null(o);
    assert_true(json_is_true(json_object_get(o, "success")));
    assert_string_equal(json_string_value(json_object_get(o, "status")), "ACCEPTED");
    const char *id = json_string_value(json_object_get(o, "requestId"));
    assert_non_null(id);
    char loc[256];
    snprintf(loc, sizeof(loc), "location: /api/provisioning/requests/%s", id);
    assert_non_null(strstr(r.headers, loc));
    assert_true(json_is_true(json_object_get(json_object_get(json_object_get(o, "policy"), "opa"), "allow")));
    json_decref(o);
    pthread_mutex_lock(&fk.mu);
    assert_int_equal(fk.enqueued, before + 1);
    assert_string_equal(fk.last.actor.id, "root");
    assert_int_equal(fk.last.source, TP_SOURCE_ADMIN_API);
    assert_string_equal(fk.last.correlation_id, "corr-123");
    assert_true(fk.last.submitted_at_ms > 0);
    pthread_mutex_unlock(&fk.mu);
    /* Self-serve: the caller is the actor, the default plan is STARTER. */
    assert_int_equal(post(&r, "/api/tenants/provision", tok_alice,
                          "{\"name\":\"Alice Co\",\"slug\":\"alice-co\",\"residency\":\"EU\"}", NULL), 202);
    pthread_mutex_lock(&fk.mu);
    assert_string_equal(fk.last.actor.id, "alice");
    assert_int_equal(fk.last.source, TP_SOURCE_SELF_SERVE_API);
    assert_int_equal(fk.last.plan, TP_PLAN_STARTER);
    assert_string_equal(fk.last.tenant.region, "eu-central-1");
    pthread_mutex_unlock(&fk.mu);
}

static void test_policy_deny_and_dependency_failures(void **state) {
    (void)state;
    resp r;
    int before = fk.enqueued;
    assert_int_equal(post(&r, "/api/tenants/provision", tok_alice,
                          "{\"name\":\"Deny\",\"slug\":\"deny-me\",\"residency\":\"US\"}", NULL), 403);
    assert_problem(&r, "policy-denied");
    assert_non_null(strstr(r.body, "ENTERPRISE_NOT_SELF_SERVE"));
    assert_int_equal(post(&r, "/api/tenants/provision", tok_alice,
                          "{\"name\":\"Opa\",\"slug\":\"opa-down\",\"residency\":\"US\"}", NULL), 503);
    assert_problem(&r, "service-unavailable");
    assert_non_null(strstr(r.headers, "retry-after: "));
    assert_int_equal(post(&r, "/api/tenants/provision", tok_alice,
                          "{\"name\":\"Kafka\",\"slug\":\"kafka-down\",\"residency\":\"US\"}", NULL), 503);
    assert_non_null(strstr(r.headers, "retry-after: "));
    assert_int_equal(fk.enqueued, before);
    assert_int_equal(http(&r, "GET", "/metrics", NULL, NULL, NULL, 0, NULL), 200);
    assert_non_null(strstr(r.body, "tp_ingress_produce_errors_total 1\n"));
}

static void test_idempotency_key(void **state) {
    (void)state;
    resp r;
    const char *body = "{\"name\":\"Idem\",\"slug\":\"idem-one\",\"residency\":\"US\"}";
    /* Same meaning, other spelling: the fingerprint is over validated fields. */
    const char *same = "{ \"residency\":\"US\", \"slug\":\"idem-one\", \"name\":\"Idem\" }";
    assert_int_equal(post(&r, "/api/tenants/provision", tok_alice, body, "Idempotency-Key: k-1"), 202);
    json_t *o = json_loads(r.body, 0, NULL);
    char id[128];
    snprintf(id, sizeof(id), "%s", json_string_value(json_object_get(o, "requestId")));
    json_decref(o);
    int enq = fk.enqueued;
    assert_int_equal(post(&r, "/api/tenants/provision", tok_alice, same, "Idempotency-Key: k-1"), 202);
    assert_non_null(strstr(r.body, id));
    assert_int_equal(fk.enqueued, enq); /* not enqueued twice */
    assert_int_equal(post(&r, "/api/tenants/provision", tok_alice,
                          "{\"name\":\"Idem\",\"slug\":\"idem-two\",\"residency\":\"US\"}",
                          "Idempotency-Key: k-1"), 422);
    assert_problem(&r, "idempotency-key-reused");
    /* The key is scoped to the caller: bob's k-1 is a new request. */
    assert_int_equal(post(&r, "/api/tenants/provision", tok_bob, body, "Idempotency-Key: k-1"), 202);
    assert_null(strstr(r.body, id));
}

static void test_status_access(void **state) {
    (void)state;
    resp r;
    assert_int_equal(post(&r, "/api/tenants/provision", tok_alice,
                          "{\"name\":\"Mine\",\"slug\":\"alice-own\",\"residency\":\"US\"}", NULL), 202);
    json_t *o = json_loads(r.body, 0, NULL);
    char path[256];
    snprintf(path, sizeof(path), "/api/provisioning/requests/%s",
             json_string_value(json_object_get(o, "requestId")));
    json_decref(o);
    assert_int_equal(http(&r, "GET", path, tok_alice, NULL, NULL, 0, NULL), 200);
    assert_non_null(strstr(r.body, "\"state\":\"ACCEPTED\""));
    assert_int_equal(http(&r, "GET", path, tok_admin, NULL, NULL, 0, NULL), 200);
    assert_int_equal(http(&r, "GET", path, tok_bob, NULL, NULL, 0, NULL), 404);
    assert_problem(&r, "not-found");
    assert_int_equal(http(&r, "GET", "/api/provisioning/requests/unknown-id", tok_admin, NULL, NULL, 0, NULL), 404);
}

static int64_t mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void test_prefer_wait(void **state) {
    (void)state;
    resp r;
    /* Already terminal: 201 with the seed's body, Location and Preference-Applied. */
    assert_int_equal(post(&r, "/api/tenants/provision", tok_alice,
                          "{\"name\":\"Wait\",\"slug\":\"wait-done\",\"residency\":\"US\"}",
                          "Prefer: wait=5"), 201);
    assert_non_null(strstr(r.headers, "preference-applied: wait=5"));
    assert_non_null(strstr(r.headers, "location: /api/provisioning/requests/"));
    assert_non_null(strstr(r.headers, "content-type: application/json"));
    json_t *o = json_loads(r.body, 0, NULL);
    assert_non_null(o);
    assert_true(json_is_true(json_object_get(o, "success")));
    assert_string_equal(json_string_value(json_object_get(json_object_get(json_object_get(o, "data"), "tenant"), "slug")), "wait-done");
    assert_string_equal(json_string_value(json_object_get(json_object_get(json_object_get(o, "receipts"), "quotaAssignment"), "actionType")), "TENANT_QUOTA_ASSIGNED");
    json_decref(o);
    /* Terminal after a few looks. */
    int64_t t0 = mono_ms();
    assert_int_equal(post(&r, "/api/tenants/provision", tok_alice,
                          "{\"name\":\"Wait\",\"slug\":\"wait-later\",\"residency\":\"US\"}",
                          "Prefer: respond-async, wait=5"), 201);
    assert_true(mono_ms() - t0 < 4000);
    /* DENIED and FAILED/SLUG_TAKEN map to their problems. */
    assert_int_equal(post(&r, "/api/tenants/provision", tok_alice,
                          "{\"name\":\"Wait\",\"slug\":\"wait-denied\",\"residency\":\"US\"}",
                          "Prefer: wait=5"), 403);
    assert_problem(&r, "policy-denied");
    assert_non_null(strstr(r.body, "SEATS_OVER_PLAN_CAP"));
    assert_int_equal(post(&r, "/api/tenants/provision", tok_alice,
                          "{\"name\":\"Wait\",\"slug\":\"wait-taken\",\"residency\":\"US\"}",
                          "Prefer: wait=5"), 409);
    assert_problem(&r, "slug-taken");
    /* Never terminal: 202 once the wait is over (about 1 s). */
    t0 = mono_ms();
    assert_int_equal(post(&r, "/api/tenants/provision", tok_alice,
                          "{\"name\":\"Wait\",\"slug\":\"wait-never\",\"residency\":\"US\"}",
                          "Prefer: wait=1"), 202);
    int64_t took = mono_ms() - t0;
    assert_true(took >= 900 && took < 3000);
    assert_non_null(strstr(r.headers, "preference-applied: wait=1"));
    /* wait=0 answers at once. */
    t0 = mono_ms();
    assert_int_equal(post(&r, "/api/tenants/provision", tok_alice,
                          "{\"name\":\"Wait\",\"slug\":\"wait-zero\",\"residency\":\"US\"}",
                          "Prefer: wait=0"), 202);
    assert_true(mono_ms() - t0 < 900);
    /* A replay gives the current answer: the first POST (no Prefer) answers 202, its replay
     * the 201 of the now terminal request. */
    assert_int_equal(post(&r, "/api/tenants/provision", tok_alice,
                          "{\"name\":\"Wait\",\"slug\":\"wait-done\",\"residency\":\"US\"}",
                          "Idempotency-Key: wait-k"), 202);
    char loc[256];
    const char *l = strstr(r.headers, "location: ");
    assert_non_null(l);
    snprintf(loc, sizeof(loc), "%.*s", (int)strcspn(l, "\r\n"), l);
    assert_int_equal(post(&r, "/api/tenants/provision", tok_alice,
                          "{\"name\":\"Wait\",\"slug\":\"wait-done\",\"residency\":\"US\"}",
                          "Idempotency-Key: wait-k"), 201);
    assert_non_null(strstr(r.headers, loc));
    assert_null(strstr(r.headers, "preference-applied"));
}

static void test_readyz(void **state) {
    (void)state;
    resp r;
    assert_int_equal(http(&r, "GET", "/readyz", NULL, NULL, NULL, 0, NULL), 200);
    fk.ready_rc = TP_EKAFKA;
    assert_int_equal(http(&r, "GET", "/readyz", NULL, NULL, NULL, 0, NULL), 503);
    assert_non_null(strstr(r.body, "broker down"));
    fk.ready_rc = 0;
}

static void *get_readyz(void *arg) {
    resp *r = arg;
    http(r, "GET", "/readyz", NULL, NULL, NULL, 0, NULL);
    return NULL;
}

/* Issue 9 item 4: past ingress.inflight_max requests are refused at once with 503 + Retry-After
 * instead of queueing on libuv's unbounded work queue; /healthz still answers. */
static void test_inflight_cap(void **state) {
    (void)state;
    static resp held[4];
    pthread_t th[4];
    resp r;
    pthread_mutex_lock(&block_mu);
    block_ready = true;
    blocked = 0;
    pthread_mutex_unlock(&block_mu);
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&th[i], NULL, get_readyz, &held[i]), 0);
    pthread_mutex_lock(&block_mu);
    while (blocked < 4)
        pthread_cond_wait(&block_cv, &block_mu);
    pthread_mutex_unlock(&block_mu);
    assert_int_equal(post(&r, "/api/admin/tenants", tok_admin, SEED_BODY, NULL), 503);
    assert_problem(&r, "service-unavailable");
    assert_non_null(strstr(r.headers, "retry-after: 2"));
    assert_int_equal(http(&r, "GET", "/readyz", NULL, NULL, NULL, 0, NULL), 503);
    assert_int_equal(http(&r, "GET", "/healthz", NULL, NULL, NULL, 0, NULL), 200);
    pthread_mutex_lock(&block_mu);
    block_ready = false;
    pthread_cond_broadcast(&block_cv);
    pthread_mutex_unlock(&block_mu);
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(held[i].status, 200);
    }
    assert_int_equal(post(&r, "/api/admin/tenants", tok_admin, SEED_BODY, NULL), 202);
}

static void test_metrics(void **state) {
    (void)state;
    resp r;
    assert_int_equal(http(&r, "GET", "/metrics", NULL, NULL, NULL, 0, NULL), 200);
    assert_non_null(strstr(r.headers, "text/plain; version=0.0.4"));
    assert_non_null(strstr(r.body, "tp_ingress_requests_total{route=\"admin_tenants\",status=\"202\"}"));
    assert_non_null(strstr(r.body, "tp_ingress_requests_total{route=\"admin_tenants\",status=\"401\"} 1\n"));
    assert_non_null(strstr(r.body, "tp_ingress_request_duration_seconds_bucket{route=\"admin_tenants\",le=\"+Inf\"}"));
    assert_non_null(strstr(r.body, "tp_ingress_requests_in_flight 0\n"));
}

/* GET /openapi.yaml serves the checked-in schemas/openapi.yaml byte for byte (embedded at build
 * time), as application/yaml without a token; other methods get 405 with Allow: GET. */
static void test_openapi_document(void **state) {
    (void)state;
    static resp r;
    static char want[65536];
    FILE *f = fopen("schemas/openapi.yaml", "rb");
    assert_non_null(f);
    size_t n = fread(want, 1, sizeof(want) - 1, f);
    fclose(f);
    assert_true(n > 1000 && n < sizeof(want) - 1);
    want[n] = '\0';
    assert_int_equal(http(&r, "GET", "/openapi.yaml", NULL, NULL, NULL, 0, NULL), 200);
    assert_non_null(strstr(r.headers, "content-type: application/yaml\r\n"));
    assert_int_equal(r.body_len, n);
    assert_memory_equal(r.body, want, n);
    assert_int_equal(http(&r, "POST", "/openapi.yaml", NULL, "application/json", "{}", 2, NULL), 405);
    assert_problem(&r, "method-not-allowed");
    assert_non_null(strstr(r.headers, "allow: GET\r\n"));
}

/* ingress.listen_host must be a dotted IPv4 address: anything else fails at start-up. */
static void test_listen_host_config(void **state) {
    (void)state;
    char err[256] = "";
    tp_ingress_server *other = NULL;
    tp_config *cfg = tp_config_new();
    assert_int_equal(tp_config_set(cfg, "jwt.key_file", key_path, err, sizeof(err)), 0);
    assert_int_equal(tp_config_set(cfg, "ingress.listen_port", "0", err, sizeof(err)), 0);
    assert_int_equal(tp_config_set(cfg, "ingress.listen_host", "localhost", err, sizeof(err)), 0);
    assert_int_equal(tp_ingress_server_new(cfg, NULL, &other, err, sizeof(err)), TP_ECONFIG);
    assert_null(other);
    assert_non_null(strstr(err, "ingress.listen_host"));
    tp_config_free(cfg);
}

/* Regression: stopping with an idle keep-alive connection open aborted in h2o_context_dispose
 * (exit 134 of tp-ingress on SIGTERM). The connection stays open until after the stop. */
static void test_idle_keepalive_at_stop(void **state) {
    (void)state;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)tp_ingress_server_port(srv))};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    idle_fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(idle_fd >= 0);
    assert_int_equal(connect(idle_fd, (struct sockaddr *)&a, sizeof(a)), 0);
    static const char req[] = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_int_equal(write(idle_fd, req, sizeof(req) - 1), (ssize_t)(sizeof(req) - 1));
    char buf[512];
    ssize_t n = read(idle_fd, buf, sizeof(buf) - 1);
    assert_true(n > 12);
    buf[n] = '\0';
    assert_non_null(strstr(buf, "200"));
}

/* An Idempotency-Key's fingerprint is over the request's meaning: DELETE without retentionDays
 * and with the default (30) are one request; another retention is another. */
static void test_action_fingerprint_defaults(void **state) {
    (void)state;
    tp_request a, b;
    unsigned char fa[32], fb[32];
    memset(&a, 0, sizeof(a));
    a.action = TP_ACTION_DEPROVISION;
    a.source = TP_SOURCE_ADMIN_API;
    snprintf(a.tenant.slug, sizeof(a.tenant.slug), "acme");
    b = a;
    b.has_retention_days = true;
    b.retention_days = TP_RETENTION_DAYS_DEFAULT;
    assert_int_equal(tp_ingress_fingerprint(&a, fa), 0);
    assert_int_equal(tp_ingress_fingerprint(&b, fb), 0);
    assert_memory_equal(fa, fb, sizeof(fa));
    b.retention_days = 7;
    assert_int_equal(tp_ingress_fingerprint(&b, fb), 0);
    assert_memory_not_equal(fa, fb, sizeof(fa));
    b.retention_days = 0;
    assert_int_equal(tp_ingress_fingerprint(&b, fb), 0);
    assert_memory_not_equal(fa, fb, sizeof(fa));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_healthz_and_unknown),
        cmocka_unit_test(test_auth_required),
        cmocka_unit_test(test_admin_role_required),
        cmocka_unit_test(test_content_type_and_size),
        cmocka_unit_test(test_validation_problem),
        cmocka_unit_test(test_accepted_with_location),
        cmocka_unit_test(test_policy_deny_and_dependency_failures),
        cmocka_unit_test(test_idempotency_key),
        cmocka_unit_test(test_action_fingerprint_defaults),
        cmocka_unit_test(test_status_access),
        cmocka_unit_test(test_prefer_wait),
        cmocka_unit_test(test_readyz),
        cmocka_unit_test(test_inflight_cap),
        cmocka_unit_test(test_metrics),
        cmocka_unit_test(test_openapi_document),
        cmocka_unit_test(test_listen_host_config),
        cmocka_unit_test(test_idle_keepalive_at_stop),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
