/* ingress.c: the tp-ingress fixture and the tests' HTTP client (libcurl); see ingress.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "support/ingress.h"
#include "tp/ingress.h"

#include <curl/curl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define READY_WAIT_MS 30000
#define STOP_WAIT_MS 20000
#define MAX_CLEAN_LOGS 64

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- the HTTP client ------------------------------------------------------------------------- */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

/* curl_global_init is not safe to race with other threads' first curl_easy_init. */
static void curl_start(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

static size_t on_body(char *p, size_t sz, size_t n, void *arg) {
    http_resp *r = arg;
    char *nb = realloc(r->body, r->len + sz * n + 1);
    if (!nb)
        return 0; /* libcurl fails the transfer: status 0 */
    memcpy(nb + r->len, p, sz * n);
    r->len += sz * n;
    nb[r->len] = '\0';
    r->body = nb;
    return sz * n;
}

/* Copies the value of a "Name: value\r\n" line (trimmed, case kept) into out when name matches. */
static void pick_header(const char *line, size_t len, const char *name, char *out, size_t cap) {
    size_t nlen = strlen(name);
    if (len <= nlen || line[nlen] != ':' || strncasecmp(line, name, nlen) != 0)
        return;
    const char *v = line + nlen + 1, *end = line + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t'))
        end--;
    snprintf(out, cap, "%.*s", (int)(end - v), v);
}

static size_t on_header(char *p, size_t sz, size_t n, void *arg) {
    http_resp *r = arg;
    size_t len = sz * n, have = strlen(r->headers), take = len;
    if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) { /* a new answer (after a 1xx): start over */
        have = 0;
        r->location[0] = r->retry_after[0] = r->content_type[0] = r->allow[0] = '\0';
    }
    if (take > sizeof(r->headers) - 1 - have)
        take = sizeof(r->headers) - 1 - have;
    for (size_t i = 0; i < take; i++) /* header names compare case-insensitively */
        r->headers[have + i] = (char)(p[i] >= 'A' && p[i] <= 'Z' ? p[i] + 32 : p[i]);
    r->headers[have + take] = '\0';
    pick_header(p, len, "location", r->location, sizeof(r->location));
    pick_header(p, len, "retry-after", r->retry_after, sizeof(r->retry_after));
    pick_header(p, len, "content-type", r->content_type, sizeof(r->content_type));
    pick_header(p, len, "allow", r->allow, sizeof(r->allow));
    return len;
}

void http_resp_free(http_resp *r) {
    free(r->body);
    memset(r, 0, sizeof(*r));
}

long http_call_url(http_resp *r, const char *base_url, const http_req *q) {
    char url[2048], line[4096];
    struct curl_slist *h = NULL;
    const char *method = q->method ? q->method : q->body ? "POST" : "GET";
    CURL *c;
    int64_t start = now_ms();
    pthread_once(&curl_once, curl_start);
    http_resp_free(r);
    c = curl_easy_init();
    if (c) {
        snprintf(url, sizeof(url), "%s%s", base_url, q->path);
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
        if (strcmp(method, "HEAD") == 0)
            curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, q->timeout_ms > 0 ? q->timeout_ms : 60000L);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
        curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
        if (q->token) {
            snprintf(line, sizeof(line), "Authorization: Bearer %s", q->token);
            h = curl_slist_append(h, line);
        }
        if (q->idempotency_key) {
            snprintf(line, sizeof(line), "Idempotency-Key: %s", q->idempotency_key);
            h = curl_slist_append(h, line);
        }
        if (q->prefer) {
            snprintf(line, sizeof(line), "Prefer: %s", q->prefer);
            h = curl_slist_append(h, line);
        }
        if (q->body) {
            snprintf(line, sizeof(line), "Content-Type: %s",
                     q->content_type ? q->content_type : "application/json");
            h = curl_slist_append(h, line);
            /* By default no 100-continue round, even for large bodies. */
            h = curl_slist_append(h, q->expect_continue ? "Expect: 100-continue" : "Expect:");
            curl_easy_setopt(c, CURLOPT_POSTFIELDS, q->body);
            curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE,
                             (curl_off_t)(q->body_len ? q->body_len : strlen(q->body)));
        }
        for (int i = 0; q->headers && q->headers[i]; i++)
            h = curl_slist_append(h, q->headers[i]);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
        if (curl_easy_perform(c) == CURLE_OK)
            curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
        curl_slist_free_all(h);
        curl_easy_cleanup(c);
    }
    r->elapsed_ms = now_ms() - start;
    if (!r->body)
        r->body = calloc(1, 1);
    return r->status;
}

long http_call(http_resp *r, int port, const http_req *q) {
    char base[64];
    snprintf(base, sizeof(base), "http://127.0.0.1:%d", port);
    return http_call_url(r, base, q);
}

long http_get(http_resp *r, int port, const char *path, const char *token) {
    return http_call(r, port, &(http_req){.method = "GET", .path = path, .token = token});
}

long http_post(http_resp *r, int port, const char *path, const char *token, const char *body) {
    return http_call(r, port, &(http_req){.method = "POST", .path = path, .token = token, .body = body});
}

int http_request_id(const http_resp *r, char *out, size_t cap) {
    static const char prefix[] = "/api/provisioning/requests/";
    size_t n;
    if (strncmp(r->location, prefix, sizeof(prefix) - 1) != 0)
        return -1;
    n = strlen(r->location + sizeof(prefix) - 1);
    if (n == 0 || n >= cap)
        return -1;
    memcpy(out, r->location + sizeof(prefix) - 1, n + 1);
    return 0;
}

json_t *http_assert_json(const http_resp *r) {
    json_t *o = json_loadb(r->body ? r->body : "", r->len, 0, NULL);
    if (!o)
        fprintf(stderr, "not JSON (%ld): %s\n", r->status, r->body ? r->body : "");
    assert_non_null(o);
    return o;
}

void http_assert_problem(const http_resp *r, const char *type) {
    char want[160];
    assert_non_null(strstr(r->headers, "content-type: application/problem+json"));
    snprintf(want, sizeof(want), "\"type\":\"%s%s\"", TP_PROBLEM_TYPE_PREFIX, type);
    if (!strstr(r->body, want))
        fprintf(stderr, "want %s in %s\n", want, r->body);
    assert_non_null(strstr(r->body, want));
}

void http_assert_request_id(const http_resp *r, char *out, size_t cap) {
    if (http_request_id(r, out, cap) != 0)
        fprintf(stderr, "no request id in Location \"%s\" (%ld)\n", r->location, r->status);
    assert_int_equal(http_request_id(r, out, cap), 0);
}

/* ---- the tp-ingress fixture ------------------------------------------------------------------ */

/* Logs of children that ended as the test meant them to; ingress_logs_finish(0) removes them. */
static char clean_logs[MAX_CLEAN_LOGS][300];
static int n_clean_logs;

static void log_ended_cleanly(const ingress_proc *ip) {
    if (n_clean_logs < MAX_CLEAN_LOGS)
        snprintf(clean_logs[n_clean_logs++], sizeof(clean_logs[0]), "%s", ip->log_path);
}

int ingress_logs_finish(int failed) {
    for (int i = 0; failed == 0 && i < n_clean_logs; i++)
        unlink(clean_logs[i]);
    n_clean_logs = 0;
    return failed;
}

/* e's config as it is now, then the port and extra (later keys win). 0 or -1. */
static int write_config(const e2e *e, const ingress_proc *ip, const char *extra) {
    char buf[8192];
    size_t n;
    int rc = 0;
    FILE *in = fopen(e->config_path, "r"), *out = fopen(ip->config_path, "w");
    if (!in || !out) {
        fprintf(stderr, "tp-ingress fixture: cannot copy %s to %s\n", e->config_path, ip->config_path);
        rc = -1;
        goto out_close;
    }
    while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
        if (fwrite(buf, 1, n, out) != n)
            rc = -1;
    if (fprintf(out, "\ningress.listen_port = %d\n%s\n", ip->port, extra ? extra : "") < 0)
        rc = -1;
out_close:
    if (in)
        fclose(in);
    if (out && fclose(out) != 0)
        rc = -1;
    return rc;
}

static void reap_killed(ingress_proc *ip) {
    kill(ip->pid, SIGKILL);
    waitpid(ip->pid, NULL, 0);
    ip->pid = 0;
}

int ingress_start_until(e2e *e, ingress_proc *ip, const char *name, const char *extra,
                        const char *ready_path) {
    char exe[1024];
    http_resp r = {0};
    int64_t deadline;
    memset(ip, 0, sizeof(*ip));
    ip->port = e2e_free_port();
    snprintf(ip->config_path, sizeof(ip->config_path), "/tmp/tp-e2e-%s-%s.ingress.conf", name, e->suffix);
    snprintf(ip->log_path, sizeof(ip->log_path), "/tmp/tp-e2e-%s-%s.ingress.log", name, e->suffix);
    if (ip->port <= 0 || e2e_bin_path("tp-ingress", exe, sizeof(exe)) != 0 ||
        write_config(e, ip, extra) != 0)
        return -1;
    ip->pid = fork();
    if (ip->pid < 0) {
        ip->pid = 0;
        return -1;
    }
    if (ip->pid == 0) {
        e2e_child_env_clear();
        if (!freopen(ip->log_path, "a", stderr))
            _exit(126);
        dup2(STDERR_FILENO, STDOUT_FILENO);
        execl(exe, "tp-ingress", "--config", ip->config_path, (char *)NULL);
        _exit(127);
    }
    deadline = now_ms() + READY_WAIT_MS;
    for (;;) {
        int status;
        if (http_call(&r, ip->port, &(http_req){.path = ready_path, .timeout_ms = 5000}) == 200) {
            http_resp_free(&r);
            return 0;
        }
        if (waitpid(ip->pid, &status, WNOHANG) == ip->pid) {
            fprintf(stderr, "tp-ingress exited early with status %d (log %s)\n",
                    WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), ip->log_path);
            ip->pid = 0;
            break;
        }
        if (now_ms() > deadline) {
            fprintf(stderr, "tp-ingress: %s not 200 within %d ms (last %ld %s; log %s)\n", ready_path,
                    READY_WAIT_MS, r.status, r.body, ip->log_path);
            reap_killed(ip);
            break;
        }
        usleep(50000);
    }
    http_resp_free(&r);
    return -1;
}

int ingress_start(e2e *e, ingress_proc *ip, const char *name, const char *extra) {
    return ingress_start_until(e, ip, name, extra, "/readyz");
}

int ingress_stop(ingress_proc *ip) {
    int status = 0, rc = -1;
    int64_t deadline = now_ms() + STOP_WAIT_MS;
    if (ip->pid <= 0)
        return -1;
    kill(ip->pid, SIGTERM);
    for (;;) {
        if (waitpid(ip->pid, &status, WNOHANG) == ip->pid) {
            rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
            ip->pid = 0;
            break;
        }
        if (now_ms() > deadline) {
            fprintf(stderr, "tp-ingress did not stop within %d ms of SIGTERM: killed\n", STOP_WAIT_MS);
            reap_killed(ip);
            break;
        }
        usleep(50000);
    }
    unlink(ip->config_path);
    if (rc == 0)
        log_ended_cleanly(ip);
    else
        fprintf(stderr, "tp-ingress exit status %d (log %s)\n", rc, ip->log_path);
    return rc;
}

void ingress_kill(ingress_proc *ip) {
    if (ip->pid <= 0)
        return;
    reap_killed(ip);
    unlink(ip->config_path);
    log_ended_cleanly(ip);
}
