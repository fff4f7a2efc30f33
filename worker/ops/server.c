/* server.c: tp-worker's operations endpoint: libh2o on a libuv loop of its own thread, answering
 * GET /healthz inline and handing /readyz and /metrics (whose hooks may block on PostgreSQL, OPA
 * or Kafka) to a second thread, so a frozen dependency never delays the liveness answer. */
#include "tp/error.h"
#include "tp/log.h"
#include "tp/ops.h"

#include <h2o.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define COMPONENT "ops"
#define BODY_MAX 4096 /* GET needs no body: anything larger is refused by h2o with 413 */

typedef enum job_kind { JOB_READY, JOB_METRICS } job_kind;

typedef struct job job;

/* In the request's memory pool: h2o disposes it with the request (client gone, connection
 * closed), which tells the job there is nobody left to answer. Loop thread. */
typedef struct req_guard {
    job *job;
} req_guard;

struct job {
    job *next;
    job_kind kind;
    h2o_req_t *req; /* NULL once the request was disposed (loop thread) */
    req_guard *guard;
    int status;           /* set by the check thread */
    tp_metrics_buf body;  /* set by the check thread */
};

struct tp_ops_server {
    tp_ops_hooks hooks;
    int port;
    uv_loop_t loop;
    uv_tcp_t listener;
    uv_async_t wake; /* check results are waiting, or stop was asked */
    h2o_globalconf_t h2o_cfg;
    h2o_context_t h2o_ctx;
    h2o_accept_ctx_t accept_ctx;
    uv_thread_t http_thread, check_thread;
    bool loop_ready, cfg_ready, ctx_ready, listening, http_started, check_started;
    pthread_mutex_t mu; /* guards what follows */
    pthread_cond_t cv;
    job *todo, **todo_tail; /* for the check thread, in arrival order */
    job *done;              /* answered by the check thread, for the loop */
    bool stop;
};

typedef struct handler {
    h2o_handler_t super;
    tp_ops_server *srv;
} handler;

/* ---- answers (loop thread) ------------------------------------------------------------------ */

static void send_text(h2o_req_t *req, int status, const char *reason, const char *ctype,
                      const char *body, size_t len) {
    req->res.status = status;
    req->res.reason = reason;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, ctype, strlen(ctype));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-store"));
    req->res.content_length = len; /* without it h2o closes the connection after the answer */
    h2o_send_inline(req, body, len);
}

static void send_json(h2o_req_t *req, int status, const char *body) {
    send_text(req, status, status == 200 ? "OK" : status == 404 ? "Not Found"
                           : status == 405 ? "Method Not Allowed" : status == 503 ? "Service Unavailable"
                           : "Internal Server Error",
              "application/json", body, strlen(body));
}

static void guard_dispose(void *p) {
    req_guard *g = p;
    if (g->job)
        g->job->req = NULL;
}

static void answer_job(job *j) {
    if (j->req) {
        size_t len = 0;
        char *text = tp_metrics_buf_take(&j->body, &len);
        j->guard->job = NULL;
        if (!text)
            send_json(j->req, 500, "{\"status\":\"error\",\"detail\":\"out of memory\"}");
        else if (j->kind == JOB_METRICS)
            send_text(j->req, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", text, len);
        else
            send_text(j->req, j->status, j->status == 200 ? "OK" : "Service Unavailable",
                      "application/json", text, len);
        free(text);
    } else {
        free(tp_metrics_buf_take(&j->body, NULL));
    }
    free(j);
}

static void queue_job(tp_ops_server *srv, h2o_req_t *req, job_kind kind) {
    job *j = calloc(1, sizeof(*j));
    if (!j) {
        send_json(req, 500, "{\"status\":\"error\",\"detail\":\"out of memory\"}");
        return;
    }
    j->kind = kind;
    j->req = req;
    j->guard = h2o_mem_alloc_shared(&req->pool, sizeof(*j->guard), guard_dispose);
    j->guard->job = j;
    pthread_mutex_lock(&srv->mu);
    *srv->todo_tail = j;
    srv->todo_tail = &j->next;
    pthread_cond_signal(&srv->cv);
    pthread_mutex_unlock(&srv->mu);
}

static int on_req(h2o_handler_t *self, h2o_req_t *req) {
    tp_ops_server *srv = ((handler *)self)->srv;
    h2o_iovec_t path = req->path_normalized;
    bool healthz = h2o_memis(path.base, path.len, H2O_STRLIT("/healthz"));
    bool readyz = h2o_memis(path.base, path.len, H2O_STRLIT("/readyz"));
    bool metrics = h2o_memis(path.base, path.len, H2O_STRLIT("/metrics"));

    if (!healthz && !readyz && !metrics) {
        send_json(req, 404, "{\"status\":\"error\",\"detail\":\"no such resource: GET /metrics, "
                            "/healthz or /readyz\"}");
        return 0;
    }
    if (!h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET"))) {
        h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("allow"), 0, NULL, H2O_STRLIT("GET"));
        send_json(req, 405, "{\"status\":\"error\",\"detail\":\"use GET\"}");
        return 0;
    }
    if (healthz) {
        char detail[256] = "", body[512];
        int rc = srv->hooks.live ? srv->hooks.live(srv->hooks.opaque, detail, sizeof(detail)) : 0;
        /* detail is the engine's own text (no quotes or backslashes in it). */
        snprintf(body, sizeof(body), "{\"status\":\"%s\"%s%s%s}", rc == 0 ? "ok" : "stuck",
                 detail[0] ? ",\"detail\":\"" : "", detail, detail[0] ? "\"" : "");
        send_json(req, rc == 0 ? 200 : 503, body);
        return 0;
    }
    queue_job(srv, req, readyz ? JOB_READY : JOB_METRICS);
    return 0;
}

/* ---- the check thread: blocking hooks, one at a time ----------------------------------------- */

static void check_main(void *arg) {
    tp_ops_server *srv = arg;
    pthread_mutex_lock(&srv->mu);
    for (;;) {
        while (!srv->todo && !srv->stop)
            pthread_cond_wait(&srv->cv, &srv->mu);
        if (srv->stop)
            break;
        job *j = srv->todo;
        srv->todo = j->next;
        if (!srv->todo)
            srv->todo_tail = &srv->todo;
        pthread_mutex_unlock(&srv->mu);
        if (j->kind == JOB_READY) {
            j->status = srv->hooks.ready && srv->hooks.ready(srv->hooks.opaque, &j->body) != 0 ? 503 : 200;
            if (!srv->hooks.ready)
                tp_metrics_printf(&j->body, "{\"status\":\"ready\"}");
        } else {
            tp_metrics_render(&j->body);
            if (srv->hooks.render)
                srv->hooks.render(srv->hooks.opaque, &j->body);
        }
        pthread_mutex_lock(&srv->mu);
        j->next = srv->done;
        srv->done = j;
        uv_async_send(&srv->wake);
    }
    pthread_mutex_unlock(&srv->mu);
}

/* ---- loop ------------------------------------------------------------------------------------ */

/* h2o 2.2.5 closes idle HTTP/1 keep-alive connections only when they time out: run their
 * timeouts now so the context can be disposed. */
static void close_idle_connections(tp_ops_server *srv) {
    h2o_timeout_t *timeouts[] = {&srv->h2o_ctx.http1.req_timeout, &srv->h2o_ctx.http2.idle_timeout};
    for (size_t i = 0; i < sizeof(timeouts) / sizeof(timeouts[0]); i++) {
        timeouts[i]->timeout = 0;
        h2o_timeout_run(&srv->loop, timeouts[i], h2o_now(&srv->loop));
    }
}

static void on_wake(uv_async_t *a) {
    tp_ops_server *srv = a->data;
    job *done, *todo = NULL;
    bool stop;
    pthread_mutex_lock(&srv->mu);
    done = srv->done;
    srv->done = NULL;
    stop = srv->stop;
    if (stop) { /* the check thread is gone: nobody will run these */
        todo = srv->todo;
        srv->todo = NULL;
        srv->todo_tail = &srv->todo;
    }
    pthread_mutex_unlock(&srv->mu);
    while (done) {
        job *next = done->next;
        answer_job(done);
        done = next;
    }
    while (todo) {
        job *next = todo->next;
        if (todo->req) {
            todo->guard->job = NULL;
            send_json(todo->req, 503, "{\"status\":\"stopping\"}");
        }
        free(todo);
        todo = next;
    }
    if (stop) {
        if (srv->listening) {
            uv_close((uv_handle_t *)&srv->listener, NULL);
            srv->listening = false;
        }
        uv_stop(&srv->loop);
    }
}

static void on_accept(uv_stream_t *listener, int status) {
    tp_ops_server *srv = listener->data;
    if (status != 0)
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

static void http_main(void *arg) {
    tp_ops_server *srv = arg;
    uv_run(&srv->loop, UV_RUN_DEFAULT);
    /* Stopped: answers in progress finish, idle connections close, then the context goes. */
    close_idle_connections(srv);
    for (int i = 0; i < 100 && uv_run(&srv->loop, UV_RUN_NOWAIT) != 0 &&
                    !(h2o_linklist_is_empty(&srv->h2o_ctx.http1._conns) &&
                      h2o_linklist_is_empty(&srv->h2o_ctx.http2._conns));
         i++)
        uv_sleep(1);
}

static void close_walk(uv_handle_t *h, void *arg) {
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

/* Parses "ip:port" or "[ipv6]:port" (numeric) into addr. Returns 0 or TP_ECONFIG. */
static int parse_listen(const char *listen, struct sockaddr_storage *addr) {
    char host[64];
    const char *colon = strrchr(listen, ':');
    char *end;
    long port;
    size_t hlen;
    if (!colon)
        return TP_ECONFIG;
    port = strtol(colon + 1, &end, 10);
    if (colon[1] == '\0' || *end != '\0' || port < 0 || port > 65535)
        return TP_ECONFIG;
    hlen = (size_t)(colon - listen);
    if (hlen >= 2 && listen[0] == '[' && listen[hlen - 1] == ']') {
        if (hlen - 2 >= sizeof(host))
            return TP_ECONFIG;
        memcpy(host, listen + 1, hlen - 2);
        host[hlen - 2] = '\0';
        return uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)addr) == 0 ? 0 : TP_ECONFIG;
    }
    if (hlen == 0 || hlen >= sizeof(host))
        return TP_ECONFIG;
    memcpy(host, listen, hlen);
    host[hlen] = '\0';
    return uv_ip4_addr(host, (int)port, (struct sockaddr_in *)addr) == 0 ? 0 : TP_ECONFIG;
}

static void free_server(tp_ops_server *srv) {
    if (srv->loop_ready) {
        if (srv->ctx_ready && h2o_linklist_is_empty(&srv->h2o_ctx.http1._conns) &&
            h2o_linklist_is_empty(&srv->h2o_ctx.http2._conns)) {
            h2o_context_dispose(&srv->h2o_ctx);
        } else if (srv->ctx_ready) {
            /* A connection still busy keeps the context (and its config): leave both. */
            tp_log_warn(COMPONENT, "connections still open at exit: context not disposed");
            srv->cfg_ready = false;
        }
        uv_walk(&srv->loop, close_walk, NULL);
        for (int i = 0; i < 100 && uv_run(&srv->loop, UV_RUN_NOWAIT) != 0; i++)
            ;
        if (uv_loop_close(&srv->loop) != 0) {
            tp_log_warn(COMPONENT, "handles still open at exit: the server is left allocated");
            return;
        }
    }
    if (srv->cfg_ready)
        h2o_config_dispose(&srv->h2o_cfg);
    pthread_cond_destroy(&srv->cv);
    pthread_mutex_destroy(&srv->mu);
    free(srv);
}

int tp_ops_server_start(const char *listen, const tp_ops_hooks *hooks, tp_ops_server **out,
                        char *errstr, size_t errstr_size) {
    struct sockaddr_storage addr, bound;
    int blen = sizeof(bound), uvrc;
    tp_ops_server *srv;
    *out = NULL;
    memset(&addr, 0, sizeof(addr));
    if (parse_listen(listen, &addr) != 0) {
        snprintf(errstr, errstr_size, "worker.http_listen: \"%s\" is not ip:port or [ipv6]:port", listen);
        return TP_ECONFIG;
    }
    srv = calloc(1, sizeof(*srv));
    if (!srv) {
        snprintf(errstr, errstr_size, "out of memory");
        return TP_ENOMEM;
    }
    if (hooks)
        srv->hooks = *hooks;
    pthread_mutex_init(&srv->mu, NULL);
    pthread_cond_init(&srv->cv, NULL);
    srv->todo_tail = &srv->todo;
    uv_loop_init(&srv->loop);
    srv->loop_ready = true;
    h2o_config_init(&srv->h2o_cfg);
    srv->cfg_ready = true;
    srv->h2o_cfg.max_request_entity_size = BODY_MAX;
    h2o_hostconf_t *host = h2o_config_register_host(&srv->h2o_cfg, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *pathconf = h2o_config_register_path(host, "/", 0);
    handler *hd = (handler *)h2o_create_handler(pathconf, sizeof(*hd));
    hd->super.on_req = on_req;
    hd->srv = srv;
    h2o_context_init(&srv->h2o_ctx, &srv->loop, &srv->h2o_cfg);
    srv->ctx_ready = true;
    srv->accept_ctx.ctx = &srv->h2o_ctx;
    srv->accept_ctx.hosts = srv->h2o_cfg.hosts;

    uv_tcp_init(&srv->loop, &srv->listener);
    srv->listener.data = srv;
    srv->listening = true;
    if ((uvrc = uv_tcp_bind(&srv->listener, (const struct sockaddr *)&addr, 0)) != 0 ||
        (uvrc = uv_listen((uv_stream_t *)&srv->listener, 64, on_accept)) != 0) {
        snprintf(errstr, errstr_size, "worker.http_listen %s: %s", listen, uv_strerror(uvrc));
        free_server(srv);
        return TP_EIO;
    }
    uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&bound, &blen);
    srv->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                  : ((struct sockaddr_in *)&bound)->sin_port);
    uv_async_init(&srv->loop, &srv->wake, on_wake);
    srv->wake.data = srv;
    if (uv_thread_create(&srv->check_thread, check_main, srv) != 0) {
        snprintf(errstr, errstr_size, "cannot start the check thread");
        free_server(srv);
        return TP_ENOMEM;
    }
    srv->check_started = true;
    if (uv_thread_create(&srv->http_thread, http_main, srv) != 0) {
        snprintf(errstr, errstr_size, "cannot start the HTTP thread");
        tp_ops_server_stop(srv);
        return TP_ENOMEM;
    }
    srv->http_started = true;
    tp_log_info(COMPONENT, "serving /metrics, /healthz and /readyz on %s (port %d)", listen, srv->port);
    *out = srv;
    return 0;
}

int tp_ops_server_port(const tp_ops_server *s) { return s->port; }

void tp_ops_server_stop(tp_ops_server *srv) {
    if (!srv)
        return;
    pthread_mutex_lock(&srv->mu);
    srv->stop = true;
    pthread_cond_signal(&srv->cv);
    pthread_mutex_unlock(&srv->mu);
    if (srv->check_started)
        uv_thread_join(&srv->check_thread); /* after its current hook call */
    if (srv->http_started) {
        uv_async_send(&srv->wake); /* answers what is left, stops the loop */
        uv_thread_join(&srv->http_thread);
    }
    free_server(srv);
}
