/* policy_client.c: the OPA client. One libcurl easy handle per client (one client per thread),
 * reused for keep-alive; explicit connect and total timeouts; fail-closed on every error. Each
 * action has its policy package (tenants/provision, tenants/change_plan, ...), one URL each. */
#include "tp/policy.h"
#include "tp/error.h"
#include "tp/log.h"
#include "tp/metrics.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RESPONSE_MAX (1024 * 1024) /* a decision is a few hundred bytes: more is garbage */
#define CONNECT_TIMEOUT_MAX_MS 1000L

struct tp_policy_client {
    CURL *curl;
    struct curl_slist *headers;
    char *url_decide[TP_ACTION_DEPROVISION + 1]; /* by tp_action */
    char *url_health;
    long timeout_ms;
    char *body; /* response buffer, reused */
    size_t body_len, body_cap;
    bool body_overflow;
    char errbuf[CURL_ERROR_SIZE];
};

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc = CURLE_FAILED_INIT;

/* curl_global_init is not thread-safe in every libcurl build: run it exactly once. */
static void global_init(void) { global_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

static size_t on_write(char *data, size_t size, size_t nmemb, void *opaque) {
    tp_policy_client *pc = opaque;
    size_t n = size * nmemb;
    if (n > RESPONSE_MAX - pc->body_len) {
        pc->body_overflow = true;
        return 0; /* makes curl fail with CURLE_WRITE_ERROR */
    }
    if (pc->body_len + n + 1 > pc->body_cap) {
        size_t cap = pc->body_cap ? pc->body_cap : 4096;
        char *nb;
        while (cap < pc->body_len + n + 1)
            cap *= 2;
        nb = realloc(pc->body, cap);
        if (!nb)
            return 0;
        pc->body = nb;
        pc->body_cap = cap;
    }
    memcpy(pc->body + pc->body_len, data, n);
    pc->body_len += n;
    pc->body[pc->body_len] = '\0';
    return n;
}

static char *join_url(const char *base, const char *path) {
    size_t blen = strlen(base), plen = strlen(path);
    char *url;
    while (blen > 0 && base[blen - 1] == '/')
        blen--;
    url = malloc(blen + plen + 1);
    if (!url)
        return NULL;
    memcpy(url, base, blen);
    memcpy(url + blen, path, plen + 1);
    return url;
}

static bool setup_handle(tp_policy_client *pc) {
    CURL *c = pc->curl;
    long connect_ms = pc->timeout_ms < CONNECT_TIMEOUT_MAX_MS ? pc->timeout_ms : CONNECT_TIMEOUT_MAX_MS;
    return curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L) == CURLE_OK &&
           curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, connect_ms) == CURLE_OK &&
           curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, pc->timeout_ms) == CURLE_OK &&
#if LIBCURL_VERSION_NUM >= 0x075500
           curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https") == CURLE_OK &&
#endif
           curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L) == CURLE_OK &&
           curl_easy_setopt(c, CURLOPT_NOPROXY, "127.0.0.1,localhost,::1") == CURLE_OK &&
           curl_easy_setopt(c, CURLOPT_HTTPHEADER, pc->headers) == CURLE_OK &&
           curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_write) == CURLE_OK &&
           curl_easy_setopt(c, CURLOPT_WRITEDATA, pc) == CURLE_OK &&
           curl_easy_setopt(c, CURLOPT_ERRORBUFFER, pc->errbuf) == CURLE_OK;
}

tp_policy_client *tp_policy_client_new(const char *base_url, long timeout_ms) {
    tp_policy_client *pc;
    struct curl_slist *h;
    if (!base_url || !base_url[0] || timeout_ms <= 0)
        return NULL;
    pthread_once(&global_once, global_init);
    if (global_rc != CURLE_OK)
        return NULL;
    pc = calloc(1, sizeof(*pc));
    if (!pc)
        return NULL;
    pc->timeout_ms = timeout_ms;
    for (int a = 0; a <= TP_ACTION_DEPROVISION; a++) {
        char path[64];
        snprintf(path, sizeof(path), "/v1/data/%s", tp_policy_package((tp_action)a));
        if (!(pc->url_decide[a] = join_url(base_url, path)))
            goto out_free;
    }
    pc->url_health = join_url(base_url, "/health");
    pc->curl = curl_easy_init();
    if (!pc->url_health || !pc->curl)
        goto out_free;
    h = curl_slist_append(NULL, "Content-Type: application/json");
    if (!h)
        goto out_free;
    pc->headers = h;
    h = curl_slist_append(pc->headers, "Accept: application/json");
    if (!h)
        goto out_free;
    pc->headers = h;
    h = curl_slist_append(pc->headers, "Expect:"); /* no 100-continue round trip */
    if (!h)
        goto out_free;
    pc->headers = h;
    if (!setup_handle(pc))
        goto out_free;
    return pc;
out_free:
    tp_policy_client_free(pc);
    return NULL;
}

void tp_policy_client_free(tp_policy_client *pc) {
    if (!pc)
        return;
    if (pc->curl)
        curl_easy_cleanup(pc->curl);
    curl_slist_free_all(pc->headers);
    for (int a = 0; a <= TP_ACTION_DEPROVISION; a++)
        free(pc->url_decide[a]);
    free(pc->url_health);
    free(pc->body);
    free(pc);
}

/* Runs the prepared transfer; returns 0 with the HTTP status in *status, or TP_EOPA_UNAVAILABLE. */
static int perform(tp_policy_client *pc, const char *what, long *status) {
    CURLcode rc;
    pc->body_len = 0;
    pc->body_overflow = false;
    pc->errbuf[0] = '\0';
    if (pc->body)
        pc->body[0] = '\0';
    rc = curl_easy_perform(pc->curl);
    if (rc != CURLE_OK) {
        if (pc->body_overflow) {
            tp_log_warn("policy", "OPA %s: answer larger than %d bytes", what, RESPONSE_MAX);
            return TP_EOPA_BAD_RESPONSE;
        }
        tp_log_warn("policy", "OPA %s failed: %s (%s)", what, curl_easy_strerror(rc), pc->errbuf);
        return TP_EOPA_UNAVAILABLE;
    }
    if (curl_easy_getinfo(pc->curl, CURLINFO_RESPONSE_CODE, status) != CURLE_OK)
        return TP_EOPA_UNAVAILABLE;
    return 0;
}

/* An all-zero decision is a deny without reasons: what callers see on every error. */
static void clear_decision(tp_policy_decision *out) {
    memset(out, 0, sizeof(*out));
}

const char *tp_policy_package(tp_action action) {
    switch (action) {
    case TP_ACTION_CHANGE_PLAN: return "tenants/change_plan";
    case TP_ACTION_SUSPEND: return "tenants/suspend";
    case TP_ACTION_RESUME: return "tenants/resume";
    case TP_ACTION_DEPROVISION: return "tenants/deprovision";
    default: return "tenants/provision";
    }
}

int tp_policy_decide(tp_policy_client *pc, const char *input_json, tp_policy_decision *out) {
    return tp_policy_decide_action(pc, TP_ACTION_PROVISION, input_json, out);
}

int tp_policy_decide_action(tp_policy_client *pc, tp_action action, const char *input_json,
                            tp_policy_decision *out) {
    static const char prefix[] = "{\"input\":", suffix[] = "}";
    size_t in_len;
    char *payload;
    long status = 0;
    int rc;
    uint64_t t0 = tp_metrics_now_ns();
    if (!out)
        return TP_EINVAL;
    clear_decision(out);
    if (!pc || !input_json || (unsigned)action > TP_ACTION_DEPROVISION)
        return TP_EINVAL;
    in_len = strlen(input_json);
    payload = malloc(sizeof(prefix) - 1 + in_len + sizeof(suffix));
    if (!payload)
        return TP_ENOMEM;
    memcpy(payload, prefix, sizeof(prefix) - 1);
    memcpy(payload + sizeof(prefix) - 1, input_json, in_len);
    memcpy(payload + sizeof(prefix) - 1 + in_len, suffix, sizeof(suffix));
    if (curl_easy_setopt(pc->curl, CURLOPT_URL, pc->url_decide[action]) != CURLE_OK ||
        curl_easy_setopt(pc->curl, CURLOPT_POST, 1L) != CURLE_OK ||
        curl_easy_setopt(pc->curl, CURLOPT_POSTFIELDS, payload) != CURLE_OK ||
        curl_easy_setopt(pc->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(payload)) != CURLE_OK) {
        rc = TP_EOPA_UNAVAILABLE;
        goto out;
    }
    rc = perform(pc, "decision", &status);
    if (rc != 0)
        goto out;
    if (status != 200) {
        tp_log_warn("policy", "OPA decision: HTTP %ld", status);
        rc = TP_EOPA_UNAVAILABLE;
        goto out;
    }
    rc = tp_policy_parse_response(pc->body ? pc->body : "", pc->body_len, out);
    if (rc != 0)
        tp_log_warn("policy", "OPA decision: unparseable answer (%zu bytes)", pc->body_len);
out:
    /* The payload is freed below: never leave curl pointing at it. */
    curl_easy_setopt(pc->curl, CURLOPT_POSTFIELDS, NULL);
    free(payload);
    if (rc != 0)
        clear_decision(out);
    tp_metrics_opa_decision(tp_metrics_now_ns() - t0, rc);
    return rc;
}

int tp_policy_ping(tp_policy_client *pc) {
    long status = 0;
    int rc;
    if (!pc)
        return TP_EINVAL;
    if (curl_easy_setopt(pc->curl, CURLOPT_URL, pc->url_health) != CURLE_OK ||
        curl_easy_setopt(pc->curl, CURLOPT_HTTPGET, 1L) != CURLE_OK)
        return TP_EOPA_UNAVAILABLE;
    rc = perform(pc, "health", &status);
    if (rc != 0)
        return TP_EOPA_UNAVAILABLE;
    return status == 200 ? 0 : TP_EOPA_UNAVAILABLE;
}
