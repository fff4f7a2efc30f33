/* ingress_child.c: a tp-ingress child and a blocking HTTP client for tests (see ingress_child.h). */
#include "support/ingress_child.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

typedef struct sink {
    char *buf;
    size_t cap, len;
    int lower; /* header names compare case-insensitively */
} sink;

static size_t on_data(char *p, size_t sz, size_t n, void *arg) {
    sink *s = arg;
    size_t take = sz * n;
    if (take > s->cap - 1 - s->len)
        take = s->cap - 1 - s->len;
    for (size_t i = 0; i < take; i++)
        s->buf[s->len + i] = (char)(s->lower && p[i] >= 'A' && p[i] <= 'Z' ? p[i] + 32 : p[i]);
    s->len += take;
    s->buf[s->len] = '\0';
    return sz * n;
}

long ingress_http(http_answer *a, int port, const char *method, const char *path, const char *token,
                  const char *body, long timeout_ms) {
    char url[512], auth[4096];
    struct curl_slist *h = NULL;
    sink hs = {a->headers, sizeof(a->headers), 0, 1}, bs = {a->body, sizeof(a->body), 0, 0};
    CURL *c = curl_easy_init();
    int64_t start = now_ms();
    a->status = 0;
    a->headers[0] = a->body[0] = '\0';
    if (!c)
        return 0;
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &bs);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &hs);
    if (token) {
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
        h = curl_slist_append(h, auth);
    }
    h = curl_slist_append(h, "Content-Type: application/json");
    h = curl_slist_append(h, "Expect:");
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
    }
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &a->status);
    a->elapsed_ms = now_ms() - start;
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    return a->status;
}

int ingress_child_start(e2e *e, ingress_child *ic, const char *name, const char *extra) {
    char exe[1024], buf[8192];
    http_answer a;
    FILE *in, *out;
    size_t n;
    ic->pid = 0;
    ic->port = e2e_free_port();
    snprintf(ic->config_path, sizeof(ic->config_path), "/tmp/tp-e2e-%s-%s.ingress.conf", name, e->suffix);
    snprintf(ic->log_path, sizeof(ic->log_path), "/tmp/tp-e2e-%s-%s.ingress.log", name, e->suffix);
    in = fopen(e->config_path, "r");
    out = fopen(ic->config_path, "w");
    if (!in || !out || ic->port <= 0 || e2e_bin_path("tp-ingress", exe, sizeof(exe)) != 0) {
        if (in)
            fclose(in);
        if (out)
            fclose(out);
        return -1;
    }
    while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
        fwrite(buf, 1, n, out);
    fprintf(out, "\ningress.listen_port = %d\n%s\n", ic->port, extra ? extra : "");
    fclose(in);
    fclose(out);
    ic->pid = fork();
    if (ic->pid < 0)
        return -1;
    if (ic->pid == 0) {
        FILE *log;
        e2e_child_env_clear();
        log = freopen(ic->log_path, "a", stderr);
        (void)log;
        dup2(STDERR_FILENO, STDOUT_FILENO);
        execl(exe, "tp-ingress", "--config", ic->config_path, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 300; i++) {
        if (ingress_http(&a, ic->port, "GET", "/healthz", NULL, NULL, 2000) == 200)
            return 0;
        if (waitpid(ic->pid, NULL, WNOHANG) == ic->pid) {
            fprintf(stderr, "tp-ingress exited early (log %s)\n", ic->log_path);
            ic->pid = 0;
            return -1;
        }
        usleep(50000);
    }
    return -1;
}

int ingress_child_stop(ingress_child *ic) {
    int status = 0;
    if (ic->pid <= 0)
        return -1;
    kill(ic->pid, SIGTERM);
    for (int i = 0; i < 300; i++) {
        if (waitpid(ic->pid, &status, WNOHANG) == ic->pid) {
            ic->pid = 0;
            unlink(ic->config_path);
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        }
        usleep(50000);
    }
    kill(ic->pid, SIGKILL);
    waitpid(ic->pid, &status, 0);
    ic->pid = 0;
    unlink(ic->config_path);
    return -1;
}
