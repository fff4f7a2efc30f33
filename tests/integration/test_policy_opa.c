/* test_policy_opa.c: the OPA client against the real OPA of the local stack ($TP_OPA_URL, loading
 * config/policies): allow and deny decisions with reasons, decision id and revision; and
 * fail-closed behaviour against a closed port, a silent server, HTTP errors and garbage. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "support/e2e.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "tp/error.h"
#include "tp/policy.h"

#define TIERS_PATH TP_SOURCE_DIR "/config/quota-tiers.json"
#define ALLOWLIST "us-east-1,us-west-2,eu-central-1,eu-west-1"

static const char *opa_url;
static tp_quota_tier tiers[TP_QUOTA_TIERS_N];

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void make_request(tp_request *req, tp_source source) {
    memset(req, 0, sizeof(*req));
    strcpy(req->request_id, "it-policy-1");
    req->source = source;
    strcpy(req->actor.id, "alice");
    strcpy(req->actor.type, "user");
    req->actor.n_roles = 1;
    strcpy(req->actor.roles[0], "admin");
    strcpy(req->tenant.name, "Acme");
    strcpy(req->tenant.slug, "acme");
    req->tenant.residency = TP_RESIDENCY_US;
    req->plan = TP_PLAN_ENTERPRISE;
    req->environment = TP_ENV_PROD;
}

static int decide(tp_policy_client *pc, const tp_request *req, int owned, tp_policy_decision *d) {
    char *input = tp_policy_build_input(req, "provision", owned, tiers, ALLOWLIST);
    int rc;
    assert_non_null(input);
    rc = tp_policy_decide(pc, input, d);
    free(input);
    return rc;
}

static void test_ping(void **state) {
    tp_policy_client *pc = tp_policy_client_new(opa_url, 2000);
    (void)state;
    assert_non_null(pc);
    assert_int_equal(tp_policy_ping(pc), 0);
    tp_policy_client_free(pc);
}

static void test_allow(void **state) {
    tp_policy_client *pc = tp_policy_client_new(opa_url, 2000);
    tp_policy_decision d;
    tp_request req;
    (void)state;
    assert_non_null(pc);
    make_request(&req, TP_SOURCE_ADMIN_API);
    assert_int_equal(decide(pc, &req, 0, &d), 0);
    assert_true(d.allow);
    assert_int_equal(d.n_reasons, 0);
    assert_true(strlen(d.decision_id) >= 32); /* a UUID: decision logging is on in the stack */
    assert_true(strncmp(d.policy_revision, "tenants.provision/", 18) == 0);

    /* Billing with a system actor, EU residency, region defaulted to eu-central-1. */
    make_request(&req, TP_SOURCE_BILLING);
    strcpy(req.actor.type, "system");
    req.tenant.residency = TP_RESIDENCY_EU;
    assert_int_equal(decide(pc, &req, 0, &d), 0);
    assert_true(d.allow);
    tp_policy_client_free(pc);
}

static void test_deny(void **state) {
    tp_policy_client *pc = tp_policy_client_new(opa_url, 2000);
    tp_policy_decision d;
    tp_request req;
    char first_id[sizeof(d.decision_id)];
    (void)state;
    assert_non_null(pc);
    make_request(&req, TP_SOURCE_SELF_SERVE_API);
    req.has_requested_seats = true;
    req.requested_seats = 600;
    assert_int_equal(decide(pc, &req, 3, &d), 0);
    assert_false(d.allow);
    assert_int_equal(d.n_reasons, 3);
    assert_string_equal(d.reasons[0], "ENTERPRISE_NOT_SELF_SERVE");
    assert_string_equal(d.reasons[1], "SEATS_OVER_PLAN_CAP");
    assert_string_equal(d.reasons[2], "TENANT_LIMIT_REACHED");
    assert_true(strlen(d.decision_id) >= 32);
    assert_true(strncmp(d.policy_revision, "tenants.provision/", 18) == 0);
    strcpy(first_id, d.decision_id);

    /* Admin without the admin role, region of the wrong residency. */
    make_request(&req, TP_SOURCE_ADMIN_API);
    strcpy(req.actor.roles[0], "viewer");
    strcpy(req.tenant.region, "eu-west-1");
    assert_int_equal(decide(pc, &req, 0, &d), 0);
    assert_false(d.allow);
    assert_int_equal(d.n_reasons, 2);
    assert_string_equal(d.reasons[0], "ADMIN_ROLE_REQUIRED");
    assert_string_equal(d.reasons[1], "REGION_RESIDENCY_MISMATCH");
    assert_string_not_equal(d.decision_id, first_id); /* one id per decision */
    tp_policy_client_free(pc);
}

static void test_keepalive_throughput(void **state) {
    tp_policy_client *pc = tp_policy_client_new(opa_url, 2000);
    tp_policy_decision d;
    tp_request req;
    char *input;
    int64_t t0;
    int n = 300;
    (void)state;
    assert_non_null(pc);
    make_request(&req, TP_SOURCE_ADMIN_API);
    input = tp_policy_build_input(&req, "provision", 0, tiers, ALLOWLIST);
    assert_non_null(input);
    t0 = now_ms();
    for (int i = 0; i < n; i++) {
        assert_int_equal(tp_policy_decide(pc, input, &d), 0);
        assert_true(d.allow);
    }
    fprintf(stderr, "# %d sequential decisions on one handle in %lld ms\n", n, (long long)(now_ms() - t0));
    free(input);
    tp_policy_client_free(pc);
}

/* Returns a loopback port that nothing listens on (bound, then closed). */
static int closed_port(void) {
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

/* A listening socket on a loopback port; *port is filled. */
static int listen_any(int *port) {
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(fd, 8), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    *port = ntohs(sa.sin_port);
    return fd;
}

static void test_closed_port_is_unavailable(void **state) {
    char url[64];
    tp_policy_client *pc;
    tp_policy_decision d;
    tp_request req;
    int64_t t0, took;
    (void)state;
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", closed_port());
    pc = tp_policy_client_new(url, 1000);
    assert_non_null(pc);
    make_request(&req, TP_SOURCE_ADMIN_API);
    d.allow = true;
    t0 = now_ms();
    assert_int_equal(decide(pc, &req, 0, &d), TP_EOPA_UNAVAILABLE);
    took = now_ms() - t0;
    assert_false(d.allow);
    assert_true(took < 1000);
    assert_int_equal(tp_policy_ping(pc), TP_EOPA_UNAVAILABLE);
    assert_true(tp_err_is_transient(TP_EOPA_UNAVAILABLE));
    tp_policy_client_free(pc);
}

static void test_silent_server_times_out(void **state) {
    char url[64];
    tp_policy_client *pc;
    tp_policy_decision d;
    tp_request req;
    int port, lfd = listen_any(&port); /* connects complete in the backlog; nobody ever answers */
    int64_t t0, took;
    (void)state;
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", port);
    pc = tp_policy_client_new(url, 500);
    assert_non_null(pc);
    make_request(&req, TP_SOURCE_ADMIN_API);
    d.allow = true;
    t0 = now_ms();
    assert_int_equal(decide(pc, &req, 0, &d), TP_EOPA_UNAVAILABLE);
    took = now_ms() - t0;
    assert_false(d.allow);
    assert_true(took >= 450 && took < 1500);
    tp_policy_client_free(pc);
    close(lfd);
}

static void test_http_error_is_unavailable(void **state) {
    char url[512];
    tp_policy_client *pc;
    tp_policy_decision d;
    tp_request req;
    (void)state;
    snprintf(url, sizeof(url), "%s/no-such-prefix", opa_url); /* OPA answers 404 */
    pc = tp_policy_client_new(url, 2000);
    assert_non_null(pc);
    make_request(&req, TP_SOURCE_ADMIN_API);
    assert_int_equal(decide(pc, &req, 0, &d), TP_EOPA_UNAVAILABLE);
    assert_false(d.allow);
    tp_policy_client_free(pc);
    /* Not an input document: OPA answers 400. */
    pc = tp_policy_client_new(opa_url, 2000);
    assert_non_null(pc);
    assert_int_equal(tp_policy_decide(pc, "{not json", &d), TP_EOPA_UNAVAILABLE);
    assert_false(d.allow);
    /* ...and the same handle still works afterwards. */
    assert_int_equal(decide(pc, &req, 0, &d), 0);
    assert_true(d.allow);
    tp_policy_client_free(pc);
}

/* A one-shot HTTP server that answers every connection with a canned 200 response. */
typedef struct canned {
    int lfd;
    const char *body;
    size_t body_len;
    int conns;
} canned;

/* Reads one request (headers, then Content-Length bytes of body) so that closing never resets. */
static void read_request(int fd) {
    char buf[65536];
    size_t have = 0;
    char *end = NULL, *cl;
    size_t body_len = 0;
    while (!end && have < sizeof(buf) - 1) {
        ssize_t n = read(fd, buf + have, sizeof(buf) - 1 - have);
        if (n <= 0)
            return;
        have += (size_t)n;
        buf[have] = '\0';
        end = strstr(buf, "\r\n\r\n");
    }
    if (!end)
        return;
    cl = strcasestr(buf, "Content-Length:");
    if (cl && cl < end)
        body_len = strtoul(cl + 15, NULL, 10);
    have -= (size_t)(end + 4 - buf);
    while (have < body_len) {
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n <= 0)
            return;
        have += (size_t)n;
    }
}

static void *serve_canned(void *arg) {
    canned *c = arg;
    for (int i = 0; i < c->conns; i++) {
        char head[256];
        int fd = accept(c->lfd, NULL, NULL);
        size_t off = 0;
        if (fd < 0)
            break;
        read_request(fd);
        snprintf(head, sizeof(head),
                 "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                 c->body_len);
        (void)!send(fd, head, strlen(head), MSG_NOSIGNAL);
        while (off < c->body_len) {
            ssize_t w = send(fd, c->body + off, c->body_len - off, MSG_NOSIGNAL);
            if (w <= 0)
                break; /* the client hung up on an oversize answer */
            off += (size_t)w;
        }
        close(fd);
    }
    return NULL;
}

static int decide_against(const char *body, size_t len, tp_policy_decision *d) {
    canned c = {.body = body, .body_len = len, .conns = 1};
    pthread_t th;
    tp_policy_client *pc;
    tp_request req;
    char url[64];
    int port, rc;
    c.lfd = listen_any(&port);
    assert_int_equal(pthread_create(&th, NULL, serve_canned, &c), 0);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", port);
    pc = tp_policy_client_new(url, 2000);
    assert_non_null(pc);
    make_request(&req, TP_SOURCE_ADMIN_API);
    d->allow = true;
    rc = decide(pc, &req, 0, d);
    tp_policy_client_free(pc);
    shutdown(c.lfd, SHUT_RDWR);
    pthread_join(th, NULL);
    close(c.lfd);
    return rc;
}

static void test_garbage_and_oversize_answers(void **state) {
    static const char garbage[] = "<html>hello</html>";
    static const char empty_doc[] = "{}"; /* policy not loaded: OPA answers {} */
    static const char good[] = "{\"result\":{\"allow\":true,\"reasons\":[]}}";
    tp_policy_decision d;
    size_t big_len = 2 * 1024 * 1024;
    char *big;
    (void)state;
    assert_int_equal(decide_against(garbage, strlen(garbage), &d), TP_EOPA_BAD_RESPONSE);
    assert_false(d.allow);
    assert_int_equal(decide_against(empty_doc, strlen(empty_doc), &d), 0);
    assert_false(d.allow);
    assert_string_equal(d.reasons[0], "NO_RESULT");
    assert_int_equal(decide_against(good, strlen(good), &d), 0); /* the fake server is sound */
    assert_true(d.allow);
    /* A 2 MiB answer that starts like an allow: cut off, never believed. */
    big = malloc(big_len);
    assert_non_null(big);
    memset(big, ' ', big_len);
    memcpy(big, good, strlen(good));
    assert_int_equal(decide_against(big, big_len, &d), TP_EOPA_BAD_RESPONSE);
    assert_false(d.allow);
    free(big);
}

static void test_bad_arguments(void **state) {
    tp_policy_decision d;
    (void)state;
    assert_null(tp_policy_client_new(NULL, 1000));
    assert_null(tp_policy_client_new("", 1000));
    assert_null(tp_policy_client_new(opa_url, 0));
    assert_int_equal(tp_policy_decide(NULL, "{}", &d), TP_EINVAL);
    assert_false(d.allow);
    assert_int_equal(tp_policy_ping(NULL), TP_EINVAL);
}

int main(void) {
    e2e_stack_share(); /* a fault test elsewhere must not restart OPA under us */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ping),
        cmocka_unit_test(test_allow),
        cmocka_unit_test(test_deny),
        cmocka_unit_test(test_keepalive_throughput),
        cmocka_unit_test(test_closed_port_is_unavailable),
        cmocka_unit_test(test_silent_server_times_out),
        cmocka_unit_test(test_http_error_is_unavailable),
        cmocka_unit_test(test_garbage_and_oversize_answers),
        cmocka_unit_test(test_bad_arguments),
    };
    int failed;
    opa_url = getenv("TP_OPA_URL");
    if (!opa_url || !opa_url[0]) {
        fprintf(stderr, "test_policy_opa: TP_OPA_URL is not set: run `scripts/stack up` and "
                        "`. .stack/env` first\n");
        return 1;
    }
    {
        char *text = tp_policy_load_tiers(TIERS_PATH), errstr[256];
        if (!text || tp_quota_tiers_parse(text, tiers, errstr, sizeof(errstr)) != 0) {
            fprintf(stderr, "test_policy_opa: cannot load %s\n", TIERS_PATH);
            free(text);
            return 1;
        }
        free(text);
    }
    failed = cmocka_run_group_tests(tests, NULL, NULL);
    return failed;
}
