/* server.c: tp-ingress's libh2o server on a libuv loop: routing, auth, content checks and
 * validation on the loop thread; the blocking hooks (idempotency, OPA, enqueue, status, readiness)
 * on the libuv pool via uv_queue_work; answers and metrics back on the loop thread. */
#include "ingress/ingress_int.h"
#include "tp/error.h"
#include "tp/ingress.h"
#include "tp/log.h"
#include "tp/stages.h"

#include <h2o.h>
#include <jansson.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <uv.h>

#define COMPONENT "ingress"
#define DRAIN_MAX_MS 10000
/* After the drain budget: how long tp_ingress_server_free waits for hooks still running on the
 * pool (each is bounded by its own deadline: pg.*, ingress.produce_timeout_ms, opa.timeout_ms)
 * before it gives up and leaves the server allocated. */
#define POOL_WAIT_MAX_MS 15000
#define RETRY_AFTER_S "2"

typedef struct job job;

struct tp_ingress_server {
    tp_auth *auth;
    tp_ingress_hooks hooks;
    char *allowlist;
    size_t body_limit;
    int64_t inflight_max; /* requests handled at once; past it 503 + Retry-After (issue 9 item 4) */
    /* A submit or status look-up not answered by its hooks within this is answered 503 by the
     * loop: a hung PostgreSQL never lets statement_timeout fire (the sum of the deadlines
     * pg.statement_timeout_ms, opa.timeout_ms, ingress.produce_timeout_ms). */
    uint64_t answer_max_ms;
    char *too_large_json; /* the 413 problem, built once: h2o's own 413s are rewritten into it */
    size_t too_large_len;
    int port;
    char host[16]; /* ingress.listen_host, dotted IPv4 */
    uv_loop_t loop;
    uv_tcp_t listener;
    uv_async_t stop_async;
    uv_signal_t sig_term, sig_int;
    uv_timer_t drain_timer;
    bool loop_ready, listening, signals, stopping;
    uint64_t drain_started_ms;
    uint64_t drain_max_ms, pool_wait_max_ms;
    h2o_globalconf_t h2o_cfg;
    h2o_context_t h2o_ctx;
    h2o_accept_ctx_t accept_ctx;
    bool h2o_ctx_ready, h2o_cfg_ready;
    /* Jobs handed to the pool whose after-work callback has not run yet (loop thread): the
     * server and the hooks' opaque must outlive every one of them. */
    job *pool_jobs;
    int64_t n_pool_jobs;
    tp_ingress_metrics metrics;
};

typedef struct handler {
    h2o_handler_t super;
    tp_ingress_server *srv;
} handler;

/* ---- h2o's own 413 (loop thread) -------------------------------------------------------------
 * h2o refuses a body past max_request_entity_size itself (from its Content-Length, before reading
 * it, or while reading a chunked one), with a text/plain answer, before any handler runs. This
 * filter, on the fallback path those early errors use and on our path, turns such an answer into
 * our problem+json 413 with its stable type. */
typedef struct too_large_filter {
    h2o_filter_t super;
    tp_ingress_server *srv;
} too_large_filter;

typedef struct too_large_ostream {
    h2o_ostream_t super;
    h2o_iovec_t body;
    bool sent;
} too_large_ostream;

static void too_large_do_send(h2o_ostream_t *self, h2o_req_t *req, h2o_iovec_t *bufs, size_t bufcnt,
                              h2o_send_state_t state) {
    too_large_ostream *o = (too_large_ostream *)self;
    (void)bufs;
    (void)bufcnt;
    if (o->sent) {
        h2o_ostream_send_next(&o->super, req, NULL, 0, state);
        return;
    }
    o->sent = true;
    h2o_ostream_send_next(&o->super, req, &o->body, 1, state);
}

static void too_large_setup(h2o_filter_t *self, h2o_req_t *req, h2o_ostream_t **slot) {
    tp_ingress_server *srv = ((too_large_filter *)self)->srv;
    ssize_t ct = h2o_find_header(&req->res.headers, H2O_TOKEN_CONTENT_TYPE, -1);
    bool ours = ct != -1 && h2o_memis(req->res.headers.entries[ct].value.base,
                                      req->res.headers.entries[ct].value.len,
                                      H2O_STRLIT("application/problem+json"));
    if (req->res.status == 413 && !ours && srv->too_large_json) {
        if (ct != -1)
            req->res.headers.entries[ct].value = h2o_iovec_init(H2O_STRLIT("application/problem+json"));
        else
            h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                           H2O_STRLIT("application/problem+json"));
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL,
                       H2O_STRLIT("no-store"));
        req->res.content_length = srv->too_large_len;
        too_large_ostream *o = (too_large_ostream *)h2o_add_ostream(req, sizeof(*o), slot);
        o->super.do_send = too_large_do_send;
        o->body = h2o_iovec_init(srv->too_large_json, srv->too_large_len);
        o->sent = false;
        slot = &o->super.next;
    }
    h2o_setup_next_ostream(req, slot);
}

static void too_large_register(tp_ingress_server *srv, h2o_pathconf_t *pathconf) {
    too_large_filter *f = (too_large_filter *)h2o_create_filter(pathconf, sizeof(*f));
    f->super.on_setup_ostream = too_large_setup;
    f->srv = srv;
}

typedef enum job_kind { JOB_SUBMIT, JOB_STATUS, JOB_READY, JOB_OUTCOME, JOB_TLOG, JOB_TENANT } job_kind;

/* Polling of `Prefer: wait=N`: first look after POLL_FIRST_MS, then every POLL_MAX_MS at most. */
#define POLL_FIRST_MS 50
#define POLL_MAX_MS 250

/* Lives in the request's pool; its dispose callback tells the job the request is gone. */
typedef struct req_guard {
    job *job;
} req_guard;

struct job {
    uv_work_t work;
    job *pool_prev, *pool_next; /* on srv->pool_jobs while its work is queued or running */
    tp_ingress_server *srv;
    h2o_req_t *req; /* NULL once h2o disposed the request (client went away) */
    req_guard *guard;
    tp_ingress_route route;
    uint64_t start_ns;
    job_kind kind;
    tp_caller caller;
    tp_request request;
    unsigned char fp[32];
    char status_id[TP_REQUEST_ID_MAX + 1];
    tp_tlog_query tlog;
    tp_tenant_ask tenant;
    bool dry_run; /* a tenant action's ?dryRun=true: preview only, nothing enqueued */
    /* results, written by the pool thread */
    int rc;
    int failed_hook; /* 0 none, 1 idempotency, 2 pre-check, 3 enqueue, 4 status, 5 ready, 6 tlog,
                      * 7 tenants */
    bool replayed;
    tp_policy_decision decision;
    bool have_decision;
    tp_ingress_preview preview; /* a tenant action's pre-check (its changes_json is owned) */
    bool have_preview;
    char *status_json;
    char owner[TP_ACTOR_ID_MAX + 1];
    char detail[256];
    /* Prefer: wait=N (-1: not asked) and the outcome polling (JOB_OUTCOME) */
    int wait_s;
    uint64_t deadline_ms;
    uv_timer_t timer;
    bool timer_ready;
    uint64_t poll_ms;
    char state[16];
    int out_status; /* 0 until the request is terminal */
    char *out_body;
    bool out_problem;
    bool answered; /* answered 503 by the answer deadline while its hooks still ran */
};

/* ---- responses (loop thread) ---------------------------------------------------------------- */

static void finish(tp_ingress_server *srv, tp_ingress_route route, uint64_t start_ns, int status) {
    double secs = (double)(uv_hrtime() - start_ns) / 1e9;
    tp_ingress_metrics_observe(&srv->metrics, route, status, secs);
    if (status == 401)
        srv->metrics.auth_failures++;
    srv->metrics.in_flight--;
}

static const char *reason_phrase(int status) {
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Content";
    case 503: return "Service Unavailable";
    default: return "Internal Server Error";
    }
}

static void send_body(h2o_req_t *req, int status, const char *content_type, const char *body,
                      size_t len) {
    req->res.status = status;
    req->res.reason = reason_phrase(status);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, content_type,
                   strlen(content_type));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL,
                   H2O_STRLIT("no-store"));
    req->res.content_length = len; /* without it a POST answer closes the connection */
    h2o_send_inline(req, body, len);
}

/* The methods a route's path serves (the Allow header of its 405). */
static const char *route_allow(tp_ingress_route route) {
    switch (route) {
    case TP_ROUTE_ADMIN_TENANTS:
    case TP_ROUTE_ADMIN_TENANT_LIST:
        return "GET, POST";
    case TP_ROUTE_SELF_SERVE:
        return "POST";
    case TP_ROUTE_ADMIN_TENANT:
        return "GET, DELETE";
    case TP_ROUTE_ADMIN_TENANT_ACTION:
    case TP_ROUTE_TENANT_ACTION:
        return "POST";
    default:
        return "GET";
    }
}

static void send_problem(tp_ingress_server *srv, h2o_req_t *req, tp_ingress_route route,
                         uint64_t start_ns, tp_problem *p) {
    size_t len = 0;
    char *js = p ? tp_problem_to_json(p, &len) : NULL;
    int status = p ? tp_problem_status(p) : 500;
    if (status == 401)
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_WWW_AUTHENTICATE, NULL,
                       H2O_STRLIT("Bearer realm=\"tenant-provisioner\", error=\"invalid_token\""));
    if (status == 503)
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL,
                       H2O_STRLIT(RETRY_AFTER_S));
    if (status == 405) {
        const char *allow = route_allow(route);
        h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("allow"), 0, NULL, allow,
                              strlen(allow));
    }
    if (js) {
        send_body(req, status, "application/problem+json", js, len);
    } else {
        static const char fallback[] = "{\"type\":\"" TP_PROBLEM_TYPE_PREFIX "internal-error\","
                                       "\"title\":\"Internal error\",\"status\":500}";
        status = 500;
        send_body(req, status, "application/problem+json", fallback, sizeof(fallback) - 1);
    }
    free(js);
    tp_problem_free(p);
    finish(srv, route, start_ns, status);
}

static void send_simple_problem(tp_ingress_server *srv, h2o_req_t *req, tp_ingress_route route,
                                uint64_t start_ns, tp_problem_kind kind, const char *detail) {
    send_problem(srv, req, route, start_ns, tp_problem_new(kind, detail));
}

static void send_json(tp_ingress_server *srv, h2o_req_t *req, tp_ingress_route route,
                      uint64_t start_ns, int status, json_t *obj) {
    char *js = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(obj);
    if (!js) {
        send_simple_problem(srv, req, route, start_ns, TP_PROBLEM_INTERNAL, "out of memory");
        return;
    }
    send_body(req, status, "application/json", js, strlen(js));
    free(js);
    finish(srv, route, start_ns, status);
}

/* ---- helpers -------------------------------------------------------------------------------- */

static h2o_iovec_t header_value(h2o_req_t *req, const h2o_token_t *token) {
    ssize_t i = h2o_find_header(&req->headers, token, -1);
    return i < 0 ? h2o_iovec_init(NULL, 0) : req->headers.entries[i].value;
}

static h2o_iovec_t header_value_str(h2o_req_t *req, const char *name, size_t len) {
    ssize_t i = h2o_find_header_by_str(&req->headers, name, len, -1);
    return i < 0 ? h2o_iovec_init(NULL, 0) : req->headers.entries[i].value;
}

/* application/json, optionally with parameters ("; charset=utf-8"), any case. */
static bool is_json_content_type(h2o_iovec_t ct) {
    static const char want[] = "application/json";
    size_t n = sizeof(want) - 1;
    if (ct.len < n || strncasecmp(ct.base, want, n) != 0)
        return false;
    for (size_t i = n; i < ct.len; i++) {
        if (ct.base[i] == ';')
            return true;
        if (ct.base[i] != ' ' && ct.base[i] != '\t')
            return false;
    }
    return true;
}

/* Printable ASCII without spaces, 1..cap-1 bytes. */
static bool copy_token(char *dst, size_t cap, h2o_iovec_t v) {
    if (v.len == 0 || v.len >= cap)
        return false;
    for (size_t i = 0; i < v.len; i++)
        if ((unsigned char)v.base[i] <= 0x20 || (unsigned char)v.base[i] >= 0x7f)
            return false;
    memcpy(dst, v.base, v.len);
    dst[v.len] = '\0';
    return true;
}

static void new_request_id(char out[37]) {
    unsigned char b[16];
    randombytes_buf(b, sizeof(b));
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40); /* version 4 */
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
             b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
             b[15]);
}

/* What the ingress adds to every request it enqueues: a new id, the authenticated caller as the
 * actor, the trace context and correlation id from the headers (the id when absent), the time. */
static void stamp_request(h2o_req_t *req, const tp_caller *caller, tp_request *r) {
    new_request_id(r->request_id);
    snprintf(r->actor.id, sizeof(r->actor.id), "%s", caller->sub);
    snprintf(r->actor.type, sizeof(r->actor.type), "user");
    r->actor.n_roles = caller->n_roles;
    memcpy(r->actor.roles, caller->roles, sizeof(r->actor.roles));
    h2o_iovec_t trace = header_value_str(req, H2O_STRLIT("traceparent"));
    if (trace.base && tp_traceparent_valid(trace.base, trace.len))
        tp_copy_field(r->traceparent, sizeof(r->traceparent), trace.base, trace.len);
    h2o_iovec_t corr = header_value_str(req, H2O_STRLIT("x-correlation-id"));
    if (!copy_token(r->correlation_id, sizeof(r->correlation_id), corr))
        snprintf(r->correlation_id, sizeof(r->correlation_id), "%s", r->request_id);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    r->submitted_at_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* An action's fingerprint: its action, tenant and the fields it carries, defaults normalised: a
 * DELETE without retentionDays is the DELETE with the default retention, so both spellings have
 * one fingerprint (the default is left out, as it always was for the request without it). The
 * other optional fields have no default to normalise: a plan change without seats or storage
 * keeps the tenant's, which is another request than one naming a value. */
static json_t *action_fingerprint_doc(const tp_request *req) {
    json_t *o = json_pack("{s:s, s:s, s:s}", "action", tp_action_name(req->action), "source",
                          tp_source_name(req->source), "slug", req->tenant.slug);
    if (!o)
        return NULL;
    if (req->has_plan)
        json_object_set_new(o, "plan", json_string(tp_plan_name(req->plan)));
    if (req->has_requested_seats)
        json_object_set_new(o, "requestedSeats", json_integer(req->requested_seats));
    if (req->has_storage_estimate)
        json_object_set_new(o, "storageEstimateBytes", json_integer(req->storage_estimate_bytes));
    if (req->reason[0])
        json_object_set_new(o, "reason", json_string(req->reason));
    if (req->has_retention_days && req->retention_days != TP_RETENTION_DAYS_DEFAULT)
        json_object_set_new(o, "retentionDays", json_integer(req->retention_days));
    return o;
}

int tp_ingress_fingerprint(const tp_request *req, unsigned char fp[32]) {
    if (req->action != TP_ACTION_PROVISION) {
        json_t *a = action_fingerprint_doc(req);
        char *txt = a ? json_dumps(a, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
        json_decref(a);
        if (!txt)
            return TP_ENOMEM;
        crypto_hash_sha256(fp, (const unsigned char *)txt, strlen(txt));
        free(txt);
        return 0;
    }
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "source",
                          tp_source_name(req->source), "name", req->tenant.name, "slug",
                          req->tenant.slug, "residency", tp_residency_name(req->tenant.residency),
                          "region", req->tenant.region, "plan", tp_plan_name(req->plan),
                          "environment", tp_environment_name(req->environment));
    if (!o)
        return TP_ENOMEM;
    if (req->has_requested_seats)
        json_object_set_new(o, "requestedSeats", json_integer(req->requested_seats));
    if (req->has_storage_estimate)
        json_object_set_new(o, "storageEstimateBytes", json_integer(req->storage_estimate_bytes));
    char *s = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(o);
    if (!s)
        return TP_ENOMEM;
    crypto_hash_sha256(fp, (const unsigned char *)s, strlen(s));
    free(s);
    return 0;
}

/* ---- jobs on the pool ----------------------------------------------------------------------- */

static void guard_dispose(void *p) {
    req_guard *g = p;
    if (g->job)
        g->job->req = NULL;
}

static job *job_new(tp_ingress_server *srv, h2o_req_t *req, tp_ingress_route route,
                    uint64_t start_ns, job_kind kind) {
    job *j = calloc(1, sizeof(*j));
    if (!j)
        return NULL;
    j->srv = srv;
    j->req = req;
    j->route = route;
    j->start_ns = start_ns;
    j->kind = kind;
    j->work.data = j;
    j->guard = h2o_mem_alloc_shared(&req->pool, sizeof(*j->guard), guard_dispose);
    j->guard->job = j;
    return j;
}

static void run_submit(job *j) {
    const tp_ingress_hooks *h = &j->srv->hooks;
    int rc;
    if (j->request.idempotency_key[0] && h->idempotency_lookup) {
        char id[TP_REQUEST_ID_MAX + 1] = "";
        rc = h->idempotency_lookup(h->opaque, j->caller.sub, j->request.idempotency_key, j->fp, id,
                                   sizeof(id));
        if (rc == 0) {
            snprintf(j->request.request_id, sizeof(j->request.request_id), "%s", id);
            j->replayed = true;
            return;
        }
        if (rc != TP_ENOT_FOUND) {
            j->rc = rc;
            j->failed_hook = 1;
            return;
        }
    }
    if (j->request.action != TP_ACTION_PROVISION) {
        /* A tenant action: the dry run is the pre-check (state, then policy). */
        if (!h->action_preview) {
            j->rc = TP_EUNAVAILABLE;
            j->failed_hook = 2;
            snprintf(j->detail, sizeof(j->detail), "no action pre-check is configured");
            return;
        }
        rc = h->action_preview(h->opaque, &j->request, j->caller.is_admin, &j->preview);
        if (rc != 0) {
            j->rc = rc;
            j->failed_hook = 2;
            return;
        }
        j->have_preview = true;
        if (j->preview.policy_asked) {
            j->decision = j->preview.decision;
            j->have_decision = true;
        }
        if (j->preview.verdict != 0) {
            j->rc = j->preview.verdict;
            j->failed_hook = 2;
            return;
        }
        if (j->dry_run)
            return; /* validated and asked: nothing is enqueued */
    } else if (h->pre_check) {
        rc = h->pre_check(h->opaque, &j->request, &j->decision);
        if (rc != 0) {
            j->rc = rc;
            j->failed_hook = 2;
            return;
        }
        j->have_decision = true;
        if (!j->decision.allow) {
            j->rc = TP_EPOLICY_DENIED;
            j->failed_hook = 2;
            return;
        }
    }
    if (!h->enqueue) {
        j->rc = TP_EUNAVAILABLE;
        j->failed_hook = 3;
        snprintf(j->detail, sizeof(j->detail), "no request queue is configured");
        return;
    }
    char replay[TP_REQUEST_ID_MAX + 1] = "";
    rc = h->enqueue(h->opaque, &j->request, j->fp, replay, sizeof(replay));
    if (rc != 0) {
        j->rc = rc;
        j->failed_hook = 3;
    } else if (replay[0]) {
        /* A concurrent request with the same key and body won: answer as its replay. */
        snprintf(j->request.request_id, sizeof(j->request.request_id), "%s", replay);
        j->replayed = true;
        j->have_decision = false;
    }
}

/* One look at a submitted request's outcome: its state, and the answer once it is terminal. */
static void run_outcome(job *j) {
    const tp_ingress_hooks *h = &j->srv->hooks;
    const char *id = j->request.request_id;
    char *json = NULL;
    char owner[TP_ACTOR_ID_MAX + 1];
    int rc;
    if (h->state_lookup) {
        rc = h->state_lookup(h->opaque, id, j->state, sizeof(j->state));
        if (rc != 0 || !tp_ingress_state_is_terminal(j->state))
            return; /* not recorded yet, running, or the store is down: keep waiting */
    }
    if (!h->status_lookup || h->status_lookup(h->opaque, id, &json, owner, sizeof(owner)) != 0) {
        free(json);
        return;
    }
    free(j->out_body);
    j->out_body = NULL;
    if ((j->request.action == TP_ACTION_PROVISION
             ? tp_ingress_outcome(json, &j->out_status, &j->out_body, &j->out_problem)
             : tp_ingress_action_outcome(json, &j->out_status, &j->out_body, &j->out_problem)) != 0)
        j->out_status = 0;
    if (!h->state_lookup) {
        json_t *o = json_loads(json, 0, NULL);
        const char *st = json_string_value(json_object_get(o, "state"));
        snprintf(j->state, sizeof(j->state), "%s", st ? st : "");
        json_decref(o);
    }
    free(json);
}

static void work_cb(uv_work_t *w) {
    job *j = w->data;
    const tp_ingress_hooks *h = &j->srv->hooks;
    switch (j->kind) {
    case JOB_SUBMIT:
        run_submit(j);
        break;
    case JOB_STATUS:
        if (!h->status_lookup) {
            j->rc = TP_ENOT_FOUND;
            break;
        }
        j->rc = h->status_lookup(h->opaque, j->status_id, &j->status_json, j->owner, sizeof(j->owner));
        j->failed_hook = j->rc ? 4 : 0;
        break;
    case JOB_READY:
        j->rc = h->ready ? h->ready(h->opaque, j->detail, sizeof(j->detail)) : 0;
        j->failed_hook = j->rc ? 5 : 0;
        break;
    case JOB_OUTCOME:
        run_outcome(j);
        break;
    case JOB_TLOG:
        j->rc = h->tlog ? h->tlog(h->opaque, &j->tlog, &j->status_json, j->detail, sizeof(j->detail))
                        : TP_ENOT_FOUND;
        j->failed_hook = j->rc ? 6 : 0;
        break;
    case JOB_TENANT:
        j->rc = h->tenants ? h->tenants(h->opaque, &j->tenant, &j->status_json) : TP_ENOT_FOUND;
        j->failed_hook = j->rc ? 7 : 0;
        break;
    }
}

/* Location of the status resource and, when the client asked to wait, Preference-Applied. */
static void add_submit_headers(job *j) {
    h2o_req_t *req = j->req;
    char loc[64 + TP_REQUEST_ID_MAX];
    snprintf(loc, sizeof(loc), "/api/provisioning/requests/%s", j->request.request_id);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_LOCATION, NULL,
                   h2o_strdup(&req->pool, loc, SIZE_MAX).base, strlen(loc));
    if (j->wait_s >= 0) {
        char pa[32];
        snprintf(pa, sizeof(pa), "wait=%d", j->wait_s);
        h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("preference-applied"), 0,
                              NULL, h2o_strdup(&req->pool, pa, SIZE_MAX).base, strlen(pa));
    }
}

/* The terminal answer found by the outcome polling (201, 403, 409, 500). */
static void answer_outcome(job *j) {
    tp_log_ctx lc = {.request_id = j->request.request_id, .traceparent = j->request.traceparent};
    tp_log(TP_LOG_INFO, COMPONENT, &lc, "answered %d (%s)%s", j->out_status, j->state,
           j->replayed ? " (replay)" : "");
    add_submit_headers(j);
    send_body(j->req, j->out_status, j->out_problem ? "application/problem+json" : "application/json",
              j->out_body, strlen(j->out_body));
    finish(j->srv, j->route, j->start_ns, j->out_status);
}

/* A policy decision as {"opa": {allow, decisionId, reasons}}. */
static json_t *decision_json(const tp_policy_decision *d) {
    json_t *reasons = json_array();
    for (int i = 0; reasons && i < d->n_reasons && i < TP_POLICY_REASONS_MAX; i++)
        json_array_append_new(reasons, json_string(d->reasons[i]));
    return json_pack("{s:{s:b, s:s, s:o}}", "opa", "allow", d->allow, "decisionId", d->decision_id,
                     "reasons", reasons ? reasons : json_array());
}

/* ?dryRun=true of an allowed action: 200 with the decision and the changes it would make. */
static void answer_dry_run(job *j) {
    tp_log_ctx lc = {.request_id = j->request.request_id, .traceparent = j->request.traceparent};
    json_t *changes = j->preview.changes_json ? json_loads(j->preview.changes_json, 0, NULL) : NULL;
    json_t *body = json_pack("{s:b, s:b, s:s, s:s, s:s, s:o, s:o}", "dryRun", 1, "allowed", 1,
                             "action", tp_action_name(j->request.action), "slug",
                             j->request.tenant.slug, "tenantState", j->preview.tenant_status,
                             "policy", j->have_decision ? decision_json(&j->decision) : json_null(),
                             "changes", json_is_array(changes) ? changes : json_array());
    if (changes && !json_is_array(changes))
        json_decref(changes);
    tp_log(TP_LOG_INFO, COMPONENT, &lc, "dry run %s slug=%s: allowed", tp_action_name(j->request.action),
           j->request.tenant.slug);
    send_json(j->srv, j->req, j->route, j->start_ns, 200, body);
}

/* A tenant action refused by its pre-check: 404 (no such tenant), 409 (invalid state), 403
 * (policy), 500 (not an action: a bug). */
static tp_problem *action_refusal(job *j) {
    const tp_ingress_preview *pv = &j->preview;
    tp_problem *p;
    if (j->rc == TP_ENOT_FOUND)
        return tp_problem_new(TP_PROBLEM_NOT_FOUND, "no such tenant");
    if (j->rc == TP_ECONFLICT) {
        p = tp_problem_new(TP_PROBLEM_INVALID_STATE, pv->message[0] ? pv->message : NULL);
        if (p)
            tp_problem_set_string(p, "failureReason", "INVALID_STATE");
        if (p && pv->tenant_status[0])
            tp_problem_set_string(p, "tenantState", pv->tenant_status);
        return p;
    }
    if (j->rc == TP_EPOLICY_DENIED) {
        p = tp_problem_new(TP_PROBLEM_POLICY_DENIED, "the tenant action policy denied this request");
        for (int i = 0; p && i < pv->decision.n_reasons && i < TP_POLICY_REASONS_MAX; i++)
            tp_problem_add_reason(p, pv->decision.reasons[i]);
        if (p && pv->decision.decision_id[0])
            tp_problem_set_string(p, "decisionId", pv->decision.decision_id);
        return p;
    }
    return tp_problem_new(TP_PROBLEM_INTERNAL, "the pre-check did not recognise the action");
}

static void answer_submit(job *j) {
    tp_ingress_server *srv = j->srv;
    h2o_req_t *req = j->req;
    tp_log_ctx lc = {.request_id = j->request.request_id, .traceparent = j->request.traceparent};
    if (j->rc == 0 && j->dry_run) {
        answer_dry_run(j);
        return;
    }
    if (j->rc != 0 && j->have_preview && j->failed_hook == 2) {
        tp_log(TP_LOG_INFO, COMPONENT, &lc, "%s%s slug=%s refused: %s %s", j->dry_run ? "dry run " : "",
               tp_action_name(j->request.action), j->request.tenant.slug, j->preview.reason,
               j->preview.message);
        send_problem(srv, req, j->route, j->start_ns, action_refusal(j));
        return;
    }
    if (j->rc == 0) {
        const char *status = j->state[0] && !tp_ingress_state_is_terminal(j->state) ? j->state
                                                                                    : "ACCEPTED";
        add_submit_headers(j);
        json_t *body = json_pack("{s:b, s:s, s:s}", "success", 1, "requestId",
                                 j->request.request_id, "status", status);
        if (body && j->have_decision)
            json_object_set_new(body, "policy",
                                json_pack("{s:{s:b, s:s}}", "opa", "allow", j->decision.allow,
                                          "decisionId", j->decision.decision_id));
        if (body && j->replayed)
            json_object_set_new(body, "replayed", json_true());
        if (body && j->request.action != TP_ACTION_PROVISION)
            json_object_set_new(body, "action", json_string(tp_action_name(j->request.action)));
        tp_log(TP_LOG_INFO, COMPONENT, &lc, "accepted %s %s %s slug=%s",
               tp_action_name(j->request.action), tp_source_name(j->request.source),
               j->replayed ? "(replay)" : "", j->request.tenant.slug);
        send_json(srv, req, j->route, j->start_ns, 202, body);
        return;
    }
    tp_problem *p = NULL;
    if (j->rc == TP_EPOLICY_DENIED) {
        p = tp_problem_new(TP_PROBLEM_POLICY_DENIED, "the provisioning policy denied this request");
        for (int i = 0; p && i < j->decision.n_reasons && i < TP_POLICY_REASONS_MAX; i++)
            tp_problem_add_reason(p, j->decision.reasons[i]);
        if (p && j->decision.decision_id[0])
            tp_problem_set_string(p, "decisionId", j->decision.decision_id);
    } else if (j->rc == TP_EIDEMPOTENCY_MISMATCH) {
        p = tp_problem_new(TP_PROBLEM_IDEMPOTENCY, "this Idempotency-Key was used with another body");
    } else if (j->rc == TP_ECONFLICT || j->rc == TP_ESLUG_TAKEN) {
        p = tp_problem_new(TP_PROBLEM_SLUG_TAKEN, "the slug is owned by another tenant");
    } else {
        static const char *const what[] = {"", "idempotency store", "policy engine", "request queue"};
        char detail[384];
        if (j->failed_hook == 3)
            srv->metrics.produce_errors++;
        snprintf(detail, sizeof(detail), "%s unavailable (%s)%s%s",
                 what[j->failed_hook >= 1 && j->failed_hook <= 3 ? j->failed_hook : 0],
                 tp_err_name(j->rc), j->detail[0] ? ": " : "", j->detail);
        tp_log(TP_LOG_WARN, COMPONENT, &lc, "%s", detail);
        p = tp_problem_new(TP_PROBLEM_UNAVAILABLE, detail);
        if (p)
            tp_problem_set_string(p, "retryAfter", RETRY_AFTER_S);
    }
    send_problem(srv, req, j->route, j->start_ns, p);
}

static void answer_status(job *j) {
    h2o_req_t *req = j->req;
    if (j->rc == TP_ENOT_FOUND ||
        (j->rc == 0 && strcmp(j->owner, j->caller.sub) != 0 && !j->caller.is_admin)) {
        /* Someone else's request looks exactly like a missing one. */
        send_simple_problem(j->srv, req, j->route, j->start_ns, TP_PROBLEM_NOT_FOUND,
                            "no such provisioning request");
    } else if (j->rc != 0 || !j->status_json) {
        tp_problem *p = tp_problem_new(TP_PROBLEM_UNAVAILABLE, "status store unavailable");
        send_problem(j->srv, req, j->route, j->start_ns, p);
    } else {
        send_body(req, 200, "application/json", j->status_json, strlen(j->status_json));
        finish(j->srv, j->route, j->start_ns, 200);
    }
}

static void answer_tlog(job *j) {
    h2o_req_t *req = j->req;
    if (j->rc == TP_ENOT_FOUND) {
        send_simple_problem(j->srv, req, j->route, j->start_ns, TP_PROBLEM_NOT_FOUND,
                            j->detail[0] ? j->detail : "not in the log");
    } else if (j->rc == TP_EINVAL) {
        send_simple_problem(j->srv, req, j->route, j->start_ns, TP_PROBLEM_VALIDATION,
                            j->detail[0] ? j->detail : "invalid tree sizes");
    } else if (j->rc != 0 || !j->status_json) {
        tp_problem *p = tp_problem_new(TP_PROBLEM_UNAVAILABLE, "log store unavailable");
        if (p)
            tp_problem_set_string(p, "retryAfter", RETRY_AFTER_S);
        send_problem(j->srv, req, j->route, j->start_ns, p);
    } else {
        send_body(req, 200, "application/json", j->status_json, strlen(j->status_json));
        finish(j->srv, j->route, j->start_ns, 200);
    }
}

static void answer_tenant(job *j) {
    h2o_req_t *req = j->req;
    if (j->rc == TP_ENOT_FOUND) {
        /* Someone else's tenant (self-serve) looks exactly like a missing one. */
        send_simple_problem(j->srv, req, j->route, j->start_ns, TP_PROBLEM_NOT_FOUND, "no such tenant");
    } else if (j->rc == TP_EINVAL) {
        send_simple_problem(j->srv, req, j->route, j->start_ns, TP_PROBLEM_VALIDATION,
                            "invalid tenant query");
    } else if (j->rc != 0 || !j->status_json) {
        tp_problem *p = tp_problem_new(TP_PROBLEM_UNAVAILABLE, "tenant store unavailable");
        if (p)
            tp_problem_set_string(p, "retryAfter", RETRY_AFTER_S);
        send_problem(j->srv, req, j->route, j->start_ns, p);
    } else {
        send_body(req, 200, "application/json", j->status_json, strlen(j->status_json));
        finish(j->srv, j->route, j->start_ns, 200);
    }
}

static void job_free_closed(uv_handle_t *h) {
    job *j = h->data;
    free(j->preview.changes_json);
    free(j->out_body);
    free(j->status_json);
    free(j);
}

/* Frees a job (after its timer, when it has one, is closed). Loop thread. */
static void job_free(job *j) {
    if (j->timer_ready) {
        uv_close((uv_handle_t *)&j->timer, job_free_closed);
        return;
    }
    free(j->preview.changes_json);
    free(j->out_body);
    free(j->status_json);
    free(j);
}

static void after_work_cb(uv_work_t *w, int status);

/* Hands a job to the pool and tracks it until its after-work callback. Returns uv's code. */
static int pool_queue(job *j) {
    tp_ingress_server *srv = j->srv;
    int rc = uv_queue_work(&srv->loop, &j->work, work_cb, after_work_cb);
    if (rc != 0)
        return rc;
    j->pool_prev = NULL;
    j->pool_next = srv->pool_jobs;
    if (srv->pool_jobs)
        srv->pool_jobs->pool_prev = j;
    srv->pool_jobs = j;
    srv->n_pool_jobs++;
    return 0;
}

static void pool_unlink(job *j) {
    tp_ingress_server *srv = j->srv;
    if (j->pool_prev)
        j->pool_prev->pool_next = j->pool_next;
    else
        srv->pool_jobs = j->pool_next;
    if (j->pool_next)
        j->pool_next->pool_prev = j->pool_prev;
    j->pool_prev = j->pool_next = NULL;
    srv->n_pool_jobs--;
}

/* Takes back the jobs still waiting for a pool thread (their after-work callbacks then run
 * with UV_ECANCELED); the running ones cannot be stopped. */
static void pool_cancel_waiting(tp_ingress_server *srv) {
    for (job *j = srv->pool_jobs; j; j = j->pool_next)
        uv_cancel((uv_req_t *)&j->work);
}

static void outcome_tick(uv_timer_t *t) {
    job *j = t->data;
    if (!j->req) { /* the client went away while we waited */
        finish(j->srv, j->route, j->start_ns, 499);
        job_free(j);
        return;
    }
    if (pool_queue(j) != 0) {
        j->guard->job = NULL;
        answer_submit(j); /* 202: the request is durable, only the wait ends early */
        job_free(j);
    }
}

/* Decides whether a finished job keeps waiting for its request's outcome: a submit asked to wait
 * (or replayed, to give the current answer) becomes JOB_OUTCOME; an outcome job that is not
 * terminal yet looks again after a timer until its deadline. Returns true when it goes on. */
static bool continue_outcome(job *j) {
    tp_ingress_server *srv = j->srv;
    uint64_t now = uv_now(&srv->loop);
    if (j->kind == JOB_SUBMIT) {
        if (j->rc != 0 || !(j->wait_s > 0 || j->replayed) || !srv->hooks.status_lookup)
            return false;
        j->kind = JOB_OUTCOME;
        j->deadline_ms = now + (uint64_t)(j->wait_s > 0 ? j->wait_s : 0) * 1000;
        j->poll_ms = POLL_FIRST_MS;
        if (j->replayed) /* the current answer first, without delay */
            return pool_queue(j) == 0;
    } else if (j->kind != JOB_OUTCOME || j->out_status != 0 || now >= j->deadline_ms ||
               srv->stopping) {
        return false;
    }
    if (!j->timer_ready) {
        uv_timer_init(&srv->loop, &j->timer);
        j->timer.data = j;
        j->timer_ready = true;
    }
    uint64_t delay = j->poll_ms;
    if (now + delay > j->deadline_ms)
        delay = j->deadline_ms - now;
    j->poll_ms = j->poll_ms * 2 > POLL_MAX_MS ? POLL_MAX_MS : j->poll_ms * 2;
    uv_timer_start(&j->timer, outcome_tick, delay, 0);
    return true;
}

/* A job the pool never ran (cancelled at shutdown): a submit or a look-up is refused with 503;
 * a request already durable (the outcome polling) gets its 202. */
static void answer_cancelled(job *j) {
    j->guard->job = NULL;
    if (j->kind == JOB_OUTCOME) {
        j->out_status = 0;
        answer_submit(j);
        return;
    }
    tp_problem *p = tp_problem_new(TP_PROBLEM_UNAVAILABLE, "shutting down");
    if (p)
        tp_problem_set_string(p, "retryAfter", RETRY_AFTER_S);
    send_problem(j->srv, j->req, j->route, j->start_ns, p);
}

static void after_work_cb(uv_work_t *w, int status) {
    job *j = w->data;
    pool_unlink(j);
    if (j->timer_ready) /* the answer deadline (continue_outcome may start it again) */
        uv_timer_stop(&j->timer);
    if (status == UV_ECANCELED) {
        if (j->req)
            answer_cancelled(j);
        else if (!j->answered)
            finish(j->srv, j->route, j->start_ns, 499);
        job_free(j);
        return;
    }
    if (j->req && continue_outcome(j))
        return;
    if (j->req) {
        j->guard->job = NULL;
        switch (j->kind) {
        case JOB_SUBMIT:
            answer_submit(j);
            break;
        case JOB_STATUS:
            answer_status(j);
            break;
        case JOB_TLOG:
            answer_tlog(j);
            break;
        case JOB_TENANT:
            answer_tenant(j);
            break;
        case JOB_OUTCOME:
            if (j->out_status != 0 && j->out_body)
                answer_outcome(j);
            else
                answer_submit(j); /* not terminal within the wait: 202 */
            break;
        case JOB_READY:
            if (j->rc == 0) {
                send_json(j->srv, j->req, j->route, j->start_ns, 200, json_pack("{s:s}", "status", "ready"));
            } else {
                char detail[320];
                snprintf(detail, sizeof(detail), "not ready: %s", j->detail[0] ? j->detail : tp_err_name(j->rc));
                send_simple_problem(j->srv, j->req, j->route, j->start_ns, TP_PROBLEM_UNAVAILABLE, detail);
            }
            break;
        }
    } else {
        /* The client went away; the answer has nowhere to go (the enqueue, if any, stands). */
        if (j->kind == JOB_SUBMIT && j->failed_hook == 3)
            j->srv->metrics.produce_errors++;
        if (!j->answered) /* else finished when the deadline answered */
            finish(j->srv, j->route, j->start_ns, 499);
    }
    job_free(j);
}

/* The answer deadline passed with the job's hooks still running (a hung dependency): the client
 * gets 503 + Retry-After now; the job finishes on its pool thread later with nobody to answer
 * (a submit may still become durable then: a retry with its Idempotency-Key finds it). */
static void answer_deadline(uv_timer_t *t) {
    job *j = t->data;
    h2o_req_t *req = j->req;
    char detail[160];
    if (!req) /* the client went away: after_work_cb finishes it */
        return;
    j->guard->job = NULL;
    j->req = NULL;
    j->answered = true;
    snprintf(detail, sizeof(detail), "%s: no answer from its dependencies within %llu ms",
             j->kind == JOB_SUBMIT   ? "request queue unavailable"
             : j->kind == JOB_TENANT ? "tenant store unavailable"
                                     : "status store unavailable",
             (unsigned long long)j->srv->answer_max_ms);
    tp_log(TP_LOG_WARN, COMPONENT, NULL, "%s", detail);
    tp_problem *p = tp_problem_new(TP_PROBLEM_UNAVAILABLE, detail);
    if (p)
        tp_problem_set_string(p, "retryAfter", RETRY_AFTER_S);
    send_problem(j->srv, req, j->route, j->start_ns, p);
}

static int queue_job(job *j) {
    int rc = pool_queue(j);
    if (rc != 0) {
        j->guard->job = NULL;
        free(j);
        return TP_EIO;
    }
    /* /readyz's probes bound themselves */
    if (j->kind == JOB_SUBMIT || j->kind == JOB_STATUS || j->kind == JOB_TENANT) {
        uv_timer_init(&j->srv->loop, &j->timer);
        j->timer.data = j;
        j->timer_ready = true;
        uv_timer_start(&j->timer, answer_deadline, j->srv->answer_max_ms, 0);
    }
    return 0;
}

/* ---- routes (loop thread) ------------------------------------------------------------------- */

static bool authenticate(tp_ingress_server *srv, h2o_req_t *req, tp_ingress_route route,
                         uint64_t start_ns, tp_caller *caller) {
    tp_problem *p = NULL;
    h2o_iovec_t authz = header_value(req, H2O_TOKEN_AUTHORIZATION);
    int rc = tp_auth_check(srv->auth, authz.base, authz.len, 0, caller, &p);
    if (rc == 0)
        return true;
    send_problem(srv, req, route, start_ns, p); /* NULL p (no memory) becomes a 500 */
    return false;
}

static void handle_submit(tp_ingress_server *srv, h2o_req_t *req, tp_ingress_route route,
                          uint64_t start_ns) {
    tp_caller caller;
    if (!authenticate(srv, req, route, start_ns, &caller))
        return;
    if (route == TP_ROUTE_ADMIN_TENANTS && !caller.is_admin) {
        send_simple_problem(srv, req, route, start_ns, TP_PROBLEM_FORBIDDEN,
                            "the admin endpoint needs the admin role");
        return;
    }
    if (!is_json_content_type(header_value(req, H2O_TOKEN_CONTENT_TYPE))) {
        send_simple_problem(srv, req, route, start_ns, TP_PROBLEM_UNSUPPORTED_MEDIA,
                            "send the body as application/json");
        return;
    }
    if (req->entity.len > srv->body_limit) {
        char detail[96];
        snprintf(detail, sizeof(detail), "the body limit is %zu bytes", srv->body_limit);
        send_simple_problem(srv, req, route, start_ns, TP_PROBLEM_TOO_LARGE, detail);
        return;
    }
    tp_source source = route == TP_ROUTE_ADMIN_TENANTS ? TP_SOURCE_ADMIN_API : TP_SOURCE_SELF_SERVE_API;
    tp_request parsed;
    tp_problem *p = NULL;
    int rc = tp_ingress_parse_body(req->entity.base, req->entity.base ? req->entity.len : 0, source,
                                   srv->allowlist, &parsed, &p);
    if (rc != 0) {
        send_problem(srv, req, route, start_ns, p);
        return;
    }
    h2o_iovec_t key = header_value_str(req, H2O_STRLIT("idempotency-key"));
    if (key.base && !copy_token(parsed.idempotency_key, sizeof(parsed.idempotency_key), key)) {
        p = tp_problem_new(TP_PROBLEM_VALIDATION, "invalid Idempotency-Key header");
        if (p)
            tp_problem_add_error(p, "/headers/Idempotency-Key", "pattern",
                                 "1..255 visible ASCII characters");
        send_problem(srv, req, route, start_ns, p);
        return;
    }
    job *j = job_new(srv, req, route, start_ns, JOB_SUBMIT);
    if (!j) {
        send_simple_problem(srv, req, route, start_ns, TP_PROBLEM_INTERNAL, "out of memory");
        return;
    }
    j->caller = caller;
    j->request = parsed;
    h2o_iovec_t prefer = header_value_str(req, H2O_STRLIT("prefer"));
    j->wait_s = tp_ingress_parse_prefer_wait(prefer.base, prefer.len);
    tp_request *r = &j->request;
    stamp_request(req, &caller, r);
    if (tp_ingress_fingerprint(r, j->fp) != 0) {
        j->guard->job = NULL;
        free(j);
        send_simple_problem(srv, req, route, start_ns, TP_PROBLEM_INTERNAL, "out of memory");
        return;
    }
    if (queue_job(j) != 0) /* freed j */
        send_simple_problem(srv, req, route, start_ns, TP_PROBLEM_INTERNAL, "could not schedule");
}

static void handle_status(tp_ingress_server *srv, h2o_req_t *req, const char *id, size_t id_len,
                          uint64_t start_ns) {
    tp_caller caller;
    tp_ingress_route route = TP_ROUTE_STATUS;
    if (!authenticate(srv, req, route, start_ns, &caller))
        return;
    char idbuf[TP_REQUEST_ID_MAX + 1];
    bool ok = id_len > 0 && id_len < sizeof(idbuf);
    for (size_t i = 0; ok && i < id_len; i++) {
        char c = id[i];
        ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
             c == '-' || c == '_' || c == '.' || c == ':';
    }
    if (!ok) {
        send_simple_problem(srv, req, route, start_ns, TP_PROBLEM_NOT_FOUND, "no such provisioning request");
        return;
    }
    memcpy(idbuf, id, id_len);
    idbuf[id_len] = '\0';
    job *j = job_new(srv, req, route, start_ns, JOB_STATUS);
    if (!j) {
        send_simple_problem(srv, req, route, start_ns, TP_PROBLEM_INTERNAL, "out of memory");
        return;
    }
    j->caller = caller;
    snprintf(j->status_id, sizeof(j->status_id), "%s", idbuf);
    if (queue_job(j) != 0)
        send_simple_problem(srv, req, route, start_ns, TP_PROBLEM_INTERNAL, "could not schedule");
}

static bool path_is(h2o_iovec_t path, const char *s) { return h2o_memis(path.base, path.len, s, strlen(s)); }

/* The query parameter name as a decimal tree size (0 .. 2^62): 1 when present and valid, 0 when
 * absent, -1 when malformed or repeated. */
static int query_size(h2o_req_t *req, const char *name, int64_t *out) {
    size_t nlen = strlen(name), found = 0;
    if (req->query_at == SIZE_MAX)
        return 0;
    const char *q = req->path.base + req->query_at + 1, *end = req->path.base + req->path.len;
    while (q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *stop = amp ? amp : end;
        if ((size_t)(stop - q) > nlen && memcmp(q, name, nlen) == 0 && q[nlen] == '=') {
            const char *v = q + nlen + 1;
            int64_t n = 0;
            if (v == stop || stop - v > 18 || found++)
                return -1;
            for (; v < stop; v++) {
                if (*v < '0' || *v > '9')
                    return -1;
                n = n * 10 + (*v - '0');
            }
            *out = n;
        }
        q = stop + 1;
    }
    return found ? 1 : 0;
}

/* GET /api/receipts/checkpoint, /api/receipts/consistency?from=M&to=N and
 * /api/receipts/{id}/inclusion[?treeSize=N]: any authenticated caller (the answers are hashes). */
static void handle_tlog(tp_ingress_server *srv, h2o_req_t *req, h2o_iovec_t path, uint64_t start_ns) {
    static const char prefix[] = "/api/receipts/", suffix[] = "/inclusion";
    const size_t plen = sizeof(prefix) - 1, slen = sizeof(suffix) - 1;
    tp_ingress_route route = TP_ROUTE_RECEIPTS_LOG;
    tp_tlog_query q;
    tp_caller caller;
    int have;
    if (!authenticate(srv, req, route, start_ns, &caller))
        return;
    memset(&q, 0, sizeof(q));
    if (path_is(path, "/api/receipts/checkpoint")) {
        q.ask = TP_TLOG_ASK_CHECKPOINT;
    } else if (path_is(path, "/api/receipts/consistency")) {
        q.ask = TP_TLOG_ASK_CONSISTENCY;
        if (query_size(req, "from", &q.from) != 1 || query_size(req, "to", &q.to) != 1 ||
            q.from < 1 || q.to < q.from) {
            send_simple_problem(srv, req, route, start_ns, TP_PROBLEM_VALIDATION,
                                "from and to must be tree sizes with 1 <= from <= to");
            return;
        }
    } else {
        size_t id_len = path.len - plen - slen;
        bool ok = path.len > plen + slen && memcmp(path.base + path.len - slen, suffix, slen) == 0 &&
                  id_len < sizeof(q.receipt_id);
        for (size_t i = 0; ok && i < id_len; i++) {
            char c = path.base[plen + i];
            ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '-' || c == '_';
        }
        if (!ok) {
            send_simple_problem(srv, req, route, start_ns, TP_PROBLEM_NOT_FOUND, "no such resource");
            return;
        }
        q.ask = TP_TLOG_ASK_INCLUSION;
        memcpy(q.receipt_id, path.base + plen, id_len);
        have = query_size(req, "treeSize", &q.tree_size);
        if (have < 0 || (have == 1 && q.tree_size < 1)) {
            send_simple_problem(srv, req, route, start_ns, TP_PROBLEM_VALIDATION,
                                "treeSize must be a tree size of at least 1");
            return;
        }
    }
    job *j = job_new(srv, req, route, start_ns, JOB_TLOG);
    if (!j) {
        send_simple_problem(srv, req, route, start_ns, TP_PROBLEM_INTERNAL, "out of memory");
        return;
    }
    j->caller = caller;
    j->tlog = q;
    if (queue_job(j) != 0)
        send_simple_problem(srv, req, route, start_ns, TP_PROBLEM_INTERNAL, "could not schedule");
}

/* The raw value of query parameter name (no percent-decoding: every value we take is a plain
 * token): 1 when present once with 1..cap-1 bytes (copied into out), 0 when absent,
 * QUERY_TOO_LONG when longer (no valid value is: an unknown one), -1 when empty or repeated. */
#define QUERY_TOO_LONG (-2)
static int query_value(h2o_req_t *req, const char *name, char *out, size_t cap) {
    size_t nlen = strlen(name);
    int found = 0;
    if (req->query_at == SIZE_MAX)
        return 0;
    const char *q = req->path.base + req->query_at + 1, *end = req->path.base + req->path.len;
    while (q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *stop = amp ? amp : end;
        if ((size_t)(stop - q) >= nlen && memcmp(q, name, nlen) == 0 &&
            (q + nlen == stop || q[nlen] == '=')) {
            const char *v = q + nlen + (q + nlen < stop ? 1 : 0);
            size_t vlen = (size_t)(stop - v);
            if (found++ || vlen == 0)
                return -1;
            if (vlen >= cap)
                return QUERY_TOO_LONG;
            memcpy(out, v, vlen);
            out[vlen] = '\0';
        }
        q = stop + 1;
    }
    return found;
}

/* A slug in a path: [a-z0-9-]{3,50} copied into out (TP_SLUG_MAX + 1 bytes), else false. */
static bool path_slug(const char *s, size_t len, char *out) {
    if (len < 3 || len > TP_SLUG_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
            return false;
    memcpy(out, s, len);
    out[len] = '\0';
    return true;
}

static void queue_tenant_job(tp_ingress_server *srv, h2o_req_t *req, tp_ingress_route route,
                             uint64_t start_ns, const tp_caller *caller, const tp_tenant_ask *ask) {
    job *j = job_new(srv, req, route, start_ns, JOB_TENANT);
    if (!j) {
        send_simple_problem(srv, req, route, start_ns, TP_PROBLEM_INTERNAL, "out of memory");
        return;
    }
    j->caller = *caller;
    j->tenant = *ask;
    if (queue_job(j) != 0)
        send_simple_problem(srv, req, route, start_ns, TP_PROBLEM_INTERNAL, "could not schedule");
}

/* GET /api/admin/tenants?state=&plan=&limit=&cursor= (admin role): a page of tenants. */
static void handle_tenant_list(tp_ingress_server *srv, h2o_req_t *req, uint64_t start_ns) {
    tp_ingress_route route = TP_ROUTE_ADMIN_TENANT_LIST;
    static const char *const names[] = {"state", "plan", "limit", "cursor"};
    tp_caller caller;
    tp_tenant_ask ask;
    char limit[16] = "", field[32] = "", code[16] = "", msg[160] = "";
    char *vals[4];
    size_t caps[4];
    if (!authenticate(srv, req, route, start_ns, &caller))
        return;
    if (!caller.is_admin) {
        send_simple_problem(srv, req, route, start_ns, TP_PROBLEM_FORBIDDEN,
                            "the admin endpoint needs the admin role");
        return;
    }
    memset(&ask, 0, sizeof(ask));
    ask.list = true;
    vals[0] = ask.state, caps[0] = sizeof(ask.state);
    vals[1] = ask.plan, caps[1] = sizeof(ask.plan);
    vals[2] = limit, caps[2] = sizeof(limit);
    vals[3] = ask.cursor, caps[3] = sizeof(ask.cursor);
    for (int i = 0; i < 4 && !field[0]; i++) {
        int got = query_value(req, names[i], vals[i], caps[i]);
        if (got == QUERY_TOO_LONG) {
            /* Longer than any valid value: checked (and answered) below as the unknown value it
             * is, with the same message as any other ("state must be one of ..."). */
            snprintf(vals[i], caps[i], "%s", i == 2 ? "0" : "?");
        } else if (got < 0) {
            snprintf(field, sizeof(field), "%s", names[i]);
            snprintf(code, sizeof(code), i == 2 ? "out_of_range" : i == 3 ? "pattern" : "enum");
            snprintf(msg, sizeof(msg), "%s must be given once, with a value", names[i]);
        }
    }
    if (!field[0] && limit[0]) {
        char *endp = NULL;
        long n = strtol(limit, &endp, 10);
        bool digits = limit[0] >= '0' && limit[0] <= '9' && endp && *endp == '\0';
        if (!digits || n < 1 || n > TP_TENANT_LIST_LIMIT_MAX) {
            snprintf(field, sizeof(field), "limit");
            snprintf(code, sizeof(code), digits ? "out_of_range" : "type");
            snprintf(msg, sizeof(msg), "limit must be an integer 1..%d", TP_TENANT_LIST_LIMIT_MAX);
        } else {
            ask.limit = (int)n;
        }
    }
    if (!field[0]) {
        tp_tenant_query q = {.state = ask.state, .plan = ask.plan, .limit = ask.limit,
                             .cursor = ask.cursor};
        tp_tenant_query_check(&q, field, sizeof(field), code, msg, sizeof(msg));
    }
    if (field[0]) {
        char pointer[48];
        tp_problem *p = tp_problem_new(TP_PROBLEM_VALIDATION, "invalid query parameters");
        snprintf(pointer, sizeof(pointer), "/query/%s", field);
        if (p)
            tp_problem_add_error(p, pointer, code, msg);
        send_problem(srv, req, route, start_ns, p);
        return;
    }
    queue_tenant_job(srv, req, route, start_ns, &caller, &ask);
}

/* GET /api/admin/tenants/{slug} (admin role) and GET /api/tenants/{slug} (the owner; the admin
 * role sees every tenant, as with request status). */
static void handle_tenant_get(tp_ingress_server *srv, h2o_req_t *req, tp_ingress_route route,
                              const char *slug, uint64_t start_ns) {
    tp_caller caller;
    tp_tenant_ask ask;
    if (!authenticate(srv, req, route, start_ns, &caller))
        return;
    if (route == TP_ROUTE_ADMIN_TENANT && !caller.is_admin) {
        send_simple_problem(srv, req, route, start_ns, TP_PROBLEM_FORBIDDEN,
                            "the admin endpoint needs the admin role");
        return;
    }
    if (!slug[0]) {
        send_simple_problem(srv, req, route, start_ns, TP_PROBLEM_NOT_FOUND, "no such tenant");
        return;
    }
    memset(&ask, 0, sizeof(ask));
    snprintf(ask.slug, sizeof(ask.slug), "%s", slug);
    if (route == TP_ROUTE_TENANT && !caller.is_admin)
        snprintf(ask.owner, sizeof(ask.owner), "%s", caller.sub);
    queue_tenant_job(srv, req, route, start_ns, &caller, &ask);
}

/* A 400 about one query parameter. */
static void send_query_problem(tp_ingress_server *srv, h2o_req_t *req, tp_ingress_route route,
                               uint64_t start_ns, const char *name, const char *code,
                               const char *msg) {
    char pointer[48];
    tp_problem *p = tp_problem_new(TP_PROBLEM_VALIDATION, "invalid query parameters");
    snprintf(pointer, sizeof(pointer), "/query/%s", name);
    if (p)
        tp_problem_add_error(p, pointer, code, msg);
    send_problem(srv, req, route, start_ns, p);
}

/* The tenant actions: POST /api/admin/tenants/{slug}/plan|suspend|resume and
 * DELETE /api/admin/tenants/{slug} (admin role), POST /api/tenants/{slug}/plan (self-serve: the
 * caller's own tenant). Validated on the loop; the pre-check (state, policy) and the enqueue on
 * the pool, as a provisioning POST; ?dryRun=true stops after the pre-check. */
static void handle_action(tp_ingress_server *srv, h2o_req_t *req, tp_ingress_route route,
                          const char *slug, tp_action action, uint64_t start_ns) {
    bool del = action == TP_ACTION_DEPROVISION;
    tp_caller caller;
    char dry[8] = "", days[8] = "", field[64], msg[256];
    tp_problem *p = NULL;
    int have;
    if (!authenticate(srv, req, route, start_ns, &caller))
        return;
    if (route != TP_ROUTE_TENANT_ACTION && !caller.is_admin) {
        send_simple_problem(srv, req, route, start_ns, TP_PROBLEM_FORBIDDEN,
                            "the admin endpoint needs the admin role");
        return;
    }
    if (!slug[0]) {
        send_simple_problem(srv, req, route, start_ns, TP_PROBLEM_NOT_FOUND, "no such tenant");
        return;
    }
    have = query_value(req, "dryRun", dry, sizeof(dry));
    if (have < 0 || (have == 1 && strcmp(dry, "true") != 0 && strcmp(dry, "false") != 0)) {
        send_query_problem(srv, req, route, start_ns, "dryRun", "enum", "dryRun must be true or false");
        return;
    }
    job *j = job_new(srv, req, route, start_ns, JOB_SUBMIT);
    if (!j) {
        send_simple_problem(srv, req, route, start_ns, TP_PROBLEM_INTERNAL, "out of memory");
        return;
    }
    tp_request *r = &j->request;
    j->caller = caller;
    j->dry_run = have == 1 && strcmp(dry, "true") == 0;
    r->action = action;
    r->source = route == TP_ROUTE_TENANT_ACTION ? TP_SOURCE_SELF_SERVE_API : TP_SOURCE_ADMIN_API;
    snprintf(r->tenant.slug, sizeof(r->tenant.slug), "%s", slug);
    if (del) {
        /* DELETE takes no body; the retention comes in the query. */
        have = query_value(req, "retentionDays", days, sizeof(days));
        char *end = NULL;
        long n = have == 1 ? strtol(days, &end, 10) : 0;
        if (have < 0 || (have == 1 && (days[0] < '0' || days[0] > '9' || *end || n > TP_RETENTION_DAYS_MAX))) {
            j->guard->job = NULL;
            free(j);
            send_query_problem(srv, req, route, start_ns, "retentionDays", "out_of_range",
                               "retentionDays must be an integer 0..3650");
            return;
        }
        r->has_retention_days = have == 1;
        r->retention_days = (int32_t)n;
    } else {
        if (req->entity.len > 0 && !is_json_content_type(header_value(req, H2O_TOKEN_CONTENT_TYPE))) {
            j->guard->job = NULL;
            free(j);
            send_simple_problem(srv, req, route, start_ns, TP_PROBLEM_UNSUPPORTED_MEDIA,
                                "send the body as application/json");
            return;
        }
        if (req->entity.len > srv->body_limit) {
            char detail[96];
            j->guard->job = NULL;
            free(j);
            snprintf(detail, sizeof(detail), "the body limit is %zu bytes", srv->body_limit);
            send_simple_problem(srv, req, route, start_ns, TP_PROBLEM_TOO_LARGE, detail);
            return;
        }
        int rc = tp_ingress_parse_action_body(req->entity.base, req->entity.base ? req->entity.len : 0,
                                              action, r, &p);
        if (rc != 0) {
            j->guard->job = NULL;
            free(j);
            send_problem(srv, req, route, start_ns, p);
            return;
        }
    }
    h2o_iovec_t key = header_value_str(req, H2O_STRLIT("idempotency-key"));
    if (key.base && !copy_token(r->idempotency_key, sizeof(r->idempotency_key), key)) {
        j->guard->job = NULL;
        free(j);
        p = tp_problem_new(TP_PROBLEM_VALIDATION, "invalid Idempotency-Key header");
        if (p)
            tp_problem_add_error(p, "/headers/Idempotency-Key", "pattern",
                                 "1..255 visible ASCII characters");
        send_problem(srv, req, route, start_ns, p);
        return;
    }
    h2o_iovec_t prefer = header_value_str(req, H2O_STRLIT("prefer"));
    j->wait_s = j->dry_run ? -1 : tp_ingress_parse_prefer_wait(prefer.base, prefer.len);
    stamp_request(req, &caller, r);
    /* The same rules the worker applies to a record from the topic. */
    if (tp_request_validate(r, srv->allowlist, field, sizeof(field), msg, sizeof(msg)) != 0) {
        j->guard->job = NULL;
        free(j);
        p = tp_problem_new(TP_PROBLEM_VALIDATION, msg);
        if (p)
            tp_problem_add_error(p, field, "not_allowed", msg);
        send_problem(srv, req, route, start_ns, p);
        return;
    }
    if (j->dry_run)
        r->idempotency_key[0] = '\0'; /* a dry run records nothing, not even its key */
    if (tp_ingress_fingerprint(r, j->fp) != 0) {
        j->guard->job = NULL;
        free(j);
        send_simple_problem(srv, req, route, start_ns, TP_PROBLEM_INTERNAL, "out of memory");
        return;
    }
    if (queue_job(j) != 0) /* freed j */
        send_simple_problem(srv, req, route, start_ns, TP_PROBLEM_INTERNAL, "could not schedule");
}

/* The tail of a tenant path after its slug: "" (the tenant), or an action's name. */
static bool tenant_path(const char *rest, size_t len, char *slug, tp_action *action, bool *is_action) {
    const char *slash = memchr(rest, '/', len);
    size_t slen = slash ? (size_t)(slash - rest) : len;
    *is_action = false;
    if (!path_slug(rest, slen, slug))
        slug[0] = '\0';
    if (!slash)
        return true;
    const char *tail = slash + 1;
    size_t tlen = len - slen - 1;
    static const struct {
        const char *name;
        tp_action action;
    } names[] = {{"plan", TP_ACTION_CHANGE_PLAN}, {"suspend", TP_ACTION_SUSPEND}, {"resume", TP_ACTION_RESUME}};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (h2o_memis(tail, tlen, names[i].name, strlen(names[i].name))) {
            *action = names[i].action;
            *is_action = true;
            return true;
        }
    return false;
}

/* True when route's path serves method (the Allow list of route_allow). */
static bool method_allowed(tp_ingress_route route, h2o_iovec_t method) {
    const char *allow = route_allow(route);
    while (*allow) {
        size_t n = strcspn(allow, ",");
        if (h2o_memis(method.base, method.len, allow, n))
            return true;
        allow += n;
        while (*allow == ',' || *allow == ' ')
            allow++;
    }
    return false;
}

static int on_req(h2o_handler_t *self, h2o_req_t *req) {
    tp_ingress_server *srv = ((handler *)self)->srv;
    uint64_t start_ns = uv_hrtime();
    h2o_iovec_t path = req->path_normalized;
    bool get = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET"));
    static const char status_prefix[] = "/api/provisioning/requests/";
    const size_t sp_len = sizeof(status_prefix) - 1;
    tp_ingress_route route = TP_ROUTE_OTHER;

    static const char admin_prefix[] = "/api/admin/tenants/", tenant_prefix[] = "/api/tenants/";
    const size_t ap_len = sizeof(admin_prefix) - 1, tp_len = sizeof(tenant_prefix) - 1;
    char slug[TP_SLUG_MAX + 1] = "";
    tp_action action = TP_ACTION_PROVISION;
    bool is_action = false;

    srv->metrics.in_flight++;
    if (path_is(path, "/api/admin/tenants")) {
        route = get ? TP_ROUTE_ADMIN_TENANT_LIST : TP_ROUTE_ADMIN_TENANTS;
    } else if (path_is(path, "/api/tenants/provision")) {
        /* Not a tenant view: "provision" is the self-serve route's own name. */
        route = TP_ROUTE_SELF_SERVE;
    } else if (path.len > ap_len && memcmp(path.base, admin_prefix, ap_len) == 0 &&
               tenant_path(path.base + ap_len, path.len - ap_len, slug, &action, &is_action)) {
        /* A path that cannot name a tenant is answered 404 after authentication. */
        route = is_action ? TP_ROUTE_ADMIN_TENANT_ACTION : TP_ROUTE_ADMIN_TENANT;
        if (!is_action && h2o_memis(req->method.base, req->method.len, H2O_STRLIT("DELETE")))
            action = TP_ACTION_DEPROVISION;
    } else if (path.len > tp_len && memcmp(path.base, tenant_prefix, tp_len) == 0 &&
               tenant_path(path.base + tp_len, path.len - tp_len, slug, &action, &is_action) &&
               (!is_action || action == TP_ACTION_CHANGE_PLAN)) {
        route = is_action ? TP_ROUTE_TENANT_ACTION : TP_ROUTE_TENANT;
    } else if (path.len > sp_len && memcmp(path.base, status_prefix, sp_len) == 0) {
        route = TP_ROUTE_STATUS;
    } else if (path.len > 14 && memcmp(path.base, "/api/receipts/", 14) == 0) {
        route = TP_ROUTE_RECEIPTS_LOG;
    } else if (path_is(path, "/healthz")) {
        route = TP_ROUTE_HEALTHZ;
    } else if (path_is(path, "/readyz")) {
        route = TP_ROUTE_READYZ;
    } else if (path_is(path, "/metrics")) {
        route = TP_ROUTE_METRICS;
    } else if (path_is(path, "/openapi.yaml")) {
        route = TP_ROUTE_OPENAPI;
    } else {
        send_simple_problem(srv, req, route, start_ns, TP_PROBLEM_NOT_FOUND, "no such resource");
        return 0;
    }
    if (!method_allowed(route, req->method)) {
        char detail[32];
        snprintf(detail, sizeof(detail), "use %s", route_allow(route));
        send_simple_problem(srv, req, route, start_ns, TP_PROBLEM_METHOD_NOT_ALLOWED, detail);
        return 0;
    }
    if (srv->stopping && route != TP_ROUTE_HEALTHZ) {
        tp_problem *p = tp_problem_new(TP_PROBLEM_UNAVAILABLE, "shutting down");
        send_problem(srv, req, route, start_ns, p);
        return 0;
    }
    /* Overload: the routes that need the pool are refused past the cap instead of queueing on
     * libuv's unbounded work queue (in_flight counts this request too). */
    if (srv->metrics.in_flight > srv->inflight_max && route != TP_ROUTE_HEALTHZ &&
        route != TP_ROUTE_METRICS && route != TP_ROUTE_OPENAPI && route != TP_ROUTE_OTHER) {
        tp_problem *p = tp_problem_new(TP_PROBLEM_UNAVAILABLE, "too many requests in flight");
        if (p)
            tp_problem_set_string(p, "retryAfter", RETRY_AFTER_S);
        send_problem(srv, req, route, start_ns, p);
        return 0;
    }
    switch (route) {
    case TP_ROUTE_ADMIN_TENANTS:
    case TP_ROUTE_SELF_SERVE:
        handle_submit(srv, req, route, start_ns);
        break;
    case TP_ROUTE_STATUS:
        handle_status(srv, req, path.base + sp_len, path.len - sp_len, start_ns);
        break;
    case TP_ROUTE_RECEIPTS_LOG:
        handle_tlog(srv, req, path, start_ns);
        break;
    case TP_ROUTE_ADMIN_TENANT_LIST:
        handle_tenant_list(srv, req, start_ns);
        break;
    case TP_ROUTE_ADMIN_TENANT:
        if (action == TP_ACTION_DEPROVISION)
            handle_action(srv, req, route, slug, action, start_ns);
        else
            handle_tenant_get(srv, req, route, slug, start_ns);
        break;
    case TP_ROUTE_TENANT:
        handle_tenant_get(srv, req, route, slug, start_ns);
        break;
    case TP_ROUTE_ADMIN_TENANT_ACTION:
    case TP_ROUTE_TENANT_ACTION:
        handle_action(srv, req, route, slug, action, start_ns);
        break;
    case TP_ROUTE_HEALTHZ:
        send_json(srv, req, route, start_ns, 200, json_pack("{s:s}", "status", "ok"));
        break;
    case TP_ROUTE_READYZ: {
        job *j = job_new(srv, req, route, start_ns, JOB_READY);
        if (!j || queue_job(j) != 0)
            send_simple_problem(srv, req, route, start_ns, TP_PROBLEM_INTERNAL, "could not schedule");
        break;
    }
    case TP_ROUTE_METRICS: {
        /* Count this scrape before rendering so the gauge does not include it. */
        srv->metrics.in_flight--;
        size_t len = 0;
        char *text = tp_ingress_metrics_render(&srv->metrics, &len);
        srv->metrics.in_flight++;
        if (!text) {
            send_simple_problem(srv, req, route, start_ns, TP_PROBLEM_INTERNAL, "out of memory");
            break;
        }
        send_body(req, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
        free(text);
        finish(srv, route, start_ns, 200);
        break;
    }
    case TP_ROUTE_OPENAPI:
        send_body(req, 200, "application/yaml", tp_ingress_openapi_yaml, tp_ingress_openapi_yaml_len);
        finish(srv, route, start_ns, 200);
        break;
    default:
        break;
    }
    return 0;
}

/* ---- listener, lifecycle -------------------------------------------------------------------- */

static void on_accept(uv_stream_t *listener, int status) {
    tp_ingress_server *srv = listener->data;
    if (status != 0 || srv->stopping)
        return;
    uv_tcp_t *conn = h2o_mem_alloc(sizeof(*conn));
    uv_tcp_init(listener->loop, conn);
    if (uv_accept(listener, (uv_stream_t *)conn) != 0) {
        uv_close((uv_handle_t *)conn, (uv_close_cb)free);
        return;
    }
    h2o_socket_t *sock = h2o_uv_socket_create((uv_stream_t *)conn, (uv_close_cb)free);
    h2o_accept(&srv->accept_ctx, sock);
}

static void begin_stop(tp_ingress_server *srv);

static void on_stop_async(uv_async_t *a) { begin_stop(a->data); }

static void on_signal(uv_signal_t *s, int signum) {
    tp_log_info(COMPONENT, "signal %d: draining", signum);
    begin_stop(s->data);
}

static void drain_tick(uv_timer_t *t) {
    tp_ingress_server *srv = t->data;
    uint64_t waited = uv_now(&srv->loop) - srv->drain_started_ms;
    if (srv->metrics.in_flight > 0 && waited < srv->drain_max_ms)
        return;
    if (srv->metrics.in_flight > 0)
        tp_log_warn(COMPONENT, "drain budget spent with %lld requests in flight (%lld on the pool)",
                    (long long)srv->metrics.in_flight, (long long)srv->n_pool_jobs);
    pool_cancel_waiting(srv);
    uv_timer_stop(t);
    uv_stop(&srv->loop);
}

/* Closes idle keep-alive connections now (their idle timeouts fire at once): h2o 2.2.5 closes
 * HTTP/1 keep-alive connections only when they time out, and a context cannot be disposed while
 * a connection is linked to its timeouts. */
static void close_idle_connections(tp_ingress_server *srv) {
    h2o_timeout_t *timeouts[] = {&srv->h2o_ctx.http1.req_timeout, &srv->h2o_ctx.http2.idle_timeout};
    for (size_t i = 0; i < sizeof(timeouts) / sizeof(timeouts[0]); i++) {
        timeouts[i]->timeout = 0;
        h2o_timeout_run(&srv->loop, timeouts[i], h2o_now(&srv->loop));
    }
}

static void begin_stop(tp_ingress_server *srv) {
    if (srv->stopping)
        return;
    srv->stopping = true;
    /* Answers from now on close their connection (HTTP/1) or announce GOAWAY (HTTP/2). */
    h2o_context_request_shutdown(&srv->h2o_ctx);
    if (srv->listening) {
        uv_close((uv_handle_t *)&srv->listener, NULL);
        srv->listening = false;
    }
    srv->drain_started_ms = uv_now(&srv->loop);
    uv_timer_start(&srv->drain_timer, drain_tick, 0, 20);
}

int tp_ingress_server_new(const tp_config *cfg, const tp_ingress_hooks *hooks,
                          tp_ingress_server **out, char *errstr, size_t errstr_size) {
    int rc, uvrc;
    *out = NULL;
    if (sodium_init() < 0) {
        snprintf(errstr, errstr_size, "libsodium failed to initialise");
        return TP_ECONFIG;
    }
    tp_ingress_server *srv = calloc(1, sizeof(*srv));
    if (!srv) {
        snprintf(errstr, errstr_size, "out of memory");
        return TP_ENOMEM;
    }
    if (hooks)
        srv->hooks = *hooks;
    int64_t limit = tp_config_get_int(cfg, "ingress.body_limit");
    int64_t port = tp_config_get_int(cfg, "ingress.listen_port");
    if (limit < 256 || limit > (64 << 20) || port < 0 || port > 65535) {
        snprintf(errstr, errstr_size, "ingress.body_limit must be 256..64MiB and ingress.listen_port 0..65535");
        rc = TP_ECONFIG;
        goto out_free;
    }
    srv->body_limit = (size_t)limit;
    srv->drain_max_ms = DRAIN_MAX_MS;
    srv->pool_wait_max_ms = POOL_WAIT_MAX_MS;
    srv->inflight_max = tp_config_get_int(cfg, "ingress.inflight_max");
    {
        int64_t st = tp_config_get_int(cfg, "pg.statement_timeout_ms");
        srv->answer_max_ms = (uint64_t)((st > 0 ? st : 15000) + tp_config_get_int(cfg, "opa.timeout_ms") +
                                        tp_config_get_int(cfg, "ingress.produce_timeout_ms"));
    }
    if (srv->inflight_max < 1 || srv->inflight_max > 1000000) {
        snprintf(errstr, errstr_size, "ingress.inflight_max must be 1..1000000");
        rc = TP_ECONFIG;
        goto out_free;
    }
    {
        char detail[96];
        snprintf(detail, sizeof(detail), "the body limit is %zu bytes", srv->body_limit);
        tp_problem *p = tp_problem_new(TP_PROBLEM_TOO_LARGE, detail);
        srv->too_large_json = p ? tp_problem_to_json(p, &srv->too_large_len) : NULL;
        tp_problem_free(p);
        if (!srv->too_large_json) {
            snprintf(errstr, errstr_size, "out of memory");
            rc = TP_ENOMEM;
            goto out_free;
        }
    }
    srv->allowlist = strdup(tp_config_get(cfg, "policy.region_allowlist"));
    if (!srv->allowlist) {
        snprintf(errstr, errstr_size, "out of memory");
        rc = TP_ENOMEM;
        goto out_free;
    }
    rc = tp_auth_new(cfg, &srv->auth, errstr, errstr_size);
    if (rc != 0)
        goto out_free;

    uv_loop_init(&srv->loop);
    srv->loop_ready = true;
    h2o_config_init(&srv->h2o_cfg);
    srv->h2o_cfg_ready = true;
    /* Up to 8 times the limit h2o reads the body and the handler answers 413 (a client that
     * does not wait for 100-continue gets its answer, not a reset); past that h2o refuses early
     * (from the Content-Length, before 100-continue, or as a chunked body passes it), so memory
     * stays bounded, and too_large_setup turns its plain-text answer into our problem+json 413. */
    srv->h2o_cfg.max_request_entity_size = srv->body_limit * 8;
    h2o_hostconf_t *host = h2o_config_register_host(&srv->h2o_cfg, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    too_large_register(srv, &host->fallback_path);
    h2o_pathconf_t *pathconf = h2o_config_register_path(host, "/", 0);
    too_large_register(srv, pathconf);
    handler *hd = (handler *)h2o_create_handler(pathconf, sizeof(*hd));
    hd->super.on_req = on_req;
    hd->srv = srv;
    h2o_context_init(&srv->h2o_ctx, &srv->loop, &srv->h2o_cfg);
    srv->h2o_ctx_ready = true;
    srv->accept_ctx.ctx = &srv->h2o_ctx;
    srv->accept_ctx.hosts = srv->h2o_cfg.hosts;

    struct sockaddr_in addr;
    const char *listen_host = tp_config_get(cfg, "ingress.listen_host");
    if (uv_ip4_addr(listen_host, (int)port, &addr) != 0) {
        snprintf(errstr, errstr_size, "ingress.listen_host must be an IPv4 address (got \"%s\")",
                 listen_host);
        rc = TP_ECONFIG;
        goto out_free;
    }
    snprintf(srv->host, sizeof(srv->host), "%s", listen_host);
    uv_tcp_init(&srv->loop, &srv->listener);
    srv->listener.data = srv;
    srv->listening = true;
    if ((uvrc = uv_tcp_bind(&srv->listener, (const struct sockaddr *)&addr, 0)) != 0 ||
        (uvrc = uv_listen((uv_stream_t *)&srv->listener, 511, on_accept)) != 0) {
        snprintf(errstr, errstr_size, "listen %s:%lld: %s", listen_host, (long long)port, uv_strerror(uvrc));
        rc = TP_EIO;
        goto out_free;
    }
    struct sockaddr_storage bound;
    int blen = sizeof(bound);
    uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&bound, &blen);
    srv->port = ntohs(((struct sockaddr_in *)&bound)->sin_port);

    uv_async_init(&srv->loop, &srv->stop_async, on_stop_async);
    srv->stop_async.data = srv;
    uv_timer_init(&srv->loop, &srv->drain_timer);
    srv->drain_timer.data = srv;
    *out = srv;
    return 0;
out_free:
    tp_ingress_server_free(srv);
    return rc;
}

int tp_ingress_server_port(const tp_ingress_server *srv) { return srv->port; }

int tp_ingress_server_run(tp_ingress_server *srv, bool handle_signals) {
    signal(SIGPIPE, SIG_IGN);
    if (handle_signals) {
        uv_signal_init(&srv->loop, &srv->sig_term);
        uv_signal_init(&srv->loop, &srv->sig_int);
        srv->sig_term.data = srv->sig_int.data = srv;
        uv_signal_start(&srv->sig_term, on_signal, SIGTERM);
        uv_signal_start(&srv->sig_int, on_signal, SIGINT);
        srv->signals = true;
    }
    tp_log_info(COMPONENT, "listening on %s:%d", srv->host, srv->port);
    uv_run(&srv->loop, UV_RUN_DEFAULT);
    tp_log_info(COMPONENT, "stopped");
    return 0;
}

void tp_ingress_server_stop(tp_ingress_server *srv) { uv_async_send(&srv->stop_async); }

static void close_walk(uv_handle_t *h, void *arg) {
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

void tp_ingress_server_set_drain_ms(tp_ingress_server *srv, uint64_t drain_ms,
                                    uint64_t pool_wait_ms) {
    srv->drain_max_ms = drain_ms;
    srv->pool_wait_max_ms = pool_wait_ms;
}

/* Waits (serving the loop) until no job is on the pool, at most pool_wait_max_ms; jobs not
 * started yet are cancelled first. Returns 0 or TP_ETIMEOUT. */
static int wait_pool(tp_ingress_server *srv) {
    uint64_t start = uv_hrtime();
    pool_cancel_waiting(srv);
    for (;;) {
        uv_run(&srv->loop, UV_RUN_NOWAIT);
        if (srv->n_pool_jobs == 0)
            return 0;
        if ((uv_hrtime() - start) / 1000000 >= srv->pool_wait_max_ms)
            break;
        uv_sleep(5);
    }
    tp_log_warn(COMPONENT, "%lld hooks still running on the pool after %llu ms: the server is left "
                "allocated", (long long)srv->n_pool_jobs, (unsigned long long)srv->pool_wait_max_ms);
    return TP_ETIMEOUT;
}

int tp_ingress_server_free(tp_ingress_server *srv) {
    if (!srv)
        return 0;
    if (srv->loop_ready) {
        /* A hook still running reads srv (and the hooks' opaque), and its completion is posted
         * to this loop: nothing may be freed before every job is back. */
        int rc = wait_pool(srv);
        if (rc != 0)
            return rc;
        if (srv->h2o_ctx_ready) {
            close_idle_connections(srv);
            for (int i = 0; i < 100 && uv_run(&srv->loop, UV_RUN_NOWAIT) != 0 &&
                            !(h2o_linklist_is_empty(&srv->h2o_ctx.http1._conns) &&
                              h2o_linklist_is_empty(&srv->h2o_ctx.http2._conns));
                 i++)
                ;
            /* A connection still busy (the drain budget ran out) keeps the context: leak it
             * rather than abort in h2o_context_dispose; the process is about to exit. */
            bool disposable = h2o_linklist_is_empty(&srv->h2o_ctx.http1._conns) &&
                              h2o_linklist_is_empty(&srv->h2o_ctx.http2._conns);
            /* h2o_context_request_shutdown parked the HTTP/2 GOAWAY resend on a timeout. */
            if (h2o_timeout_is_linked(&srv->h2o_ctx.http2._graceful_shutdown_timeout))
                h2o_timeout_unlink(&srv->h2o_ctx.http2._graceful_shutdown_timeout);
            if (disposable) {
                h2o_context_dispose(&srv->h2o_ctx);
            } else {
                tp_log_warn(COMPONENT, "connections still open at exit: context not disposed");
                srv->h2o_cfg_ready = false; /* the context still points into it */
            }
            srv->h2o_ctx_ready = false;
        }
        /* Whatever is left (listener, async, signals, timers, idle keep-alive connections whose
         * close callbacks free their memory) is closed here; run the loop until it is empty. */
        uv_walk(&srv->loop, close_walk, NULL);
        for (int i = 0; i < 100 && uv_run(&srv->loop, UV_RUN_NOWAIT) != 0; i++)
            ;
        int lrc = uv_loop_close(&srv->loop);
        if (lrc != 0) {
            tp_log_warn(COMPONENT, "uv_loop_close: %s: the server is left allocated", uv_strerror(lrc));
            return TP_EIO;
        }
        srv->loop_ready = false;
        if (srv->h2o_cfg_ready)
            h2o_config_dispose(&srv->h2o_cfg);
        srv->h2o_cfg_ready = false;
    }
    tp_auth_free(srv->auth);
    free(srv->allowlist);
    free(srv->too_large_json);
    free(srv);
    return 0;
}
