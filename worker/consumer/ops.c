/* ops.c: what tp-worker's operations endpoint (worker/ops) answers: /healthz pings the engine's
 * loop, /readyz checks the assignment, Kafka, PostgreSQL and OPA each within
 * worker.probe_timeout_ms, /metrics adds consumer lag per partition and the receipt outbox's
 * backlog to the registry (include/tp/metrics.h).
 *
 * Why a thread and loop of its own rather than the engine's loop: a liveness probe must be able
 * to say the engine's loop is stuck, which a server on that loop cannot (it would just not
 * answer); the readiness checks and the outbox query block, and on the engine's loop they would
 * have to go to the libuv pool, whose threads are the stage runners (a probe queued behind
 * worker.inflight_max stage runs, or stuck with them on a frozen database). A scrape never adds
 * latency to the consumer. The cost is two threads that sleep between requests. */
#include "consumer/worker_int.h"
#include "tp/error.h"
#include "tp/log.h"
#include "tp/metrics.h"
#include "tp/ops.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { PHASE_STARTING, PHASE_RUNNING, PHASE_DRAINING, PHASE_STOPPED };

struct tp_worker_ops {
    tp_worker *w;
    tp_ops_server *server;
    int probe_ms;
    atomic_int phase;
    /* /healthz: the HTTP thread asks (ping_seq, w->ops_ping), the loop answers (pong_seq). */
    bool ping_ready;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t ping_seq, pong_seq;
    /* The check thread's own clients (never shared). */
    tp_db *db;
    tp_db_opts db_opts;
    tp_policy_client *policy;
    tp_kafka_probe *probe;
};

/* ---- /healthz (HTTP thread asks, loop thread answers) ------------------------------------------ */

static void on_ping(uv_async_t *a) {
    tp_worker_ops *o = a->data;
    pthread_mutex_lock(&o->mu);
    o->pong_seq = o->ping_seq;
    pthread_cond_broadcast(&o->cv);
    pthread_mutex_unlock(&o->mu);
}

static int hook_live(void *opaque, char *detail, size_t cap) {
    tp_worker_ops *o = opaque;
    struct timespec until;
    bool answered;
    int phase = atomic_load(&o->phase);
    if (phase == PHASE_STARTING) {
        snprintf(detail, cap, "starting: waiting for PostgreSQL");
        return 0;
    }
    if (phase == PHASE_STOPPED)
        return 0;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += o->probe_ms / 1000;
    until.tv_nsec += (long)(o->probe_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&o->mu);
    uint64_t seq = ++o->ping_seq;
    uv_async_send(&o->w->ops_ping);
    while (o->pong_seq < seq && atomic_load(&o->phase) != PHASE_STOPPED &&
           pthread_cond_timedwait(&o->cv, &o->mu, &until) == 0)
        ;
    answered = o->pong_seq >= seq || atomic_load(&o->phase) == PHASE_STOPPED;
    pthread_mutex_unlock(&o->mu);
    if (!answered) {
        snprintf(detail, cap, "the worker loop did not answer within %d ms", o->probe_ms);
        return TP_ETIMEOUT;
    }
    if (phase == PHASE_DRAINING)
        snprintf(detail, cap, "draining");
    return 0;
}

/* ---- /readyz (check thread) ------------------------------------------------------------------- */

static void json_string(tp_metrics_buf *b, const char *s) {
    tp_metrics_printf(b, "\"");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            tp_metrics_printf(b, "\\%c", c);
        else if (c < 0x20)
            tp_metrics_printf(b, "\\u%04x", c);
        else
            tp_metrics_printf(b, "%c", c);
    }
    tp_metrics_printf(b, "\"");
}

/* Opens the check thread's connection when it has none, and checks it answers in time. */
static int check_postgres(tp_worker_ops *o, char *detail, size_t cap) {
    char err[256] = "";
    int rc;
    if (!o->db && (rc = tp_db_connect_opts(tp_config_get(o->w->cfg, "pg.dsn"), &o->db_opts, &o->db,
                                           err, sizeof(err))) != 0) {
        o->db = NULL;
        snprintf(detail, cap, "%s: %s", tp_err_name(rc), err);
        return rc;
    }
    rc = tp_db_ping_within(o->db, o->probe_ms);
    if (rc != 0) {
        snprintf(detail, cap, "%s: no answer within %d ms", tp_err_name(rc), o->probe_ms);
        tp_db_close(o->db); /* the next check connects afresh */
        o->db = NULL;
    }
    return rc;
}

static int hook_ready(void *opaque, tp_metrics_buf *b) {
    tp_worker_ops *o = opaque;
    static const char *const phase_names[] = {"starting", "running", "draining", "stopped"};
    const char *names[5] = {"worker", "partitions", "kafka", "postgresql", "opa"};
    char detail[5][320];
    int rc[5], phase = atomic_load(&o->phase), failed = 0;
    int64_t assigned = tp_metrics_gauge_get(TP_METRICS_ASSIGNED_PARTITIONS);
    char kerr[256] = "";

    rc[0] = phase == PHASE_RUNNING ? 0 : TP_EUNAVAILABLE;
    snprintf(detail[0], sizeof(detail[0]), "%s", phase_names[phase]);
    rc[1] = assigned > 0 ? 0 : TP_EUNAVAILABLE;
    snprintf(detail[1], sizeof(detail[1]), assigned > 0 ? "%lld assigned" : "none assigned (yet)",
             (long long)assigned);
    rc[2] = o->probe ? tp_kafka_probe_check(o->probe, o->probe_ms, kerr, sizeof(kerr)) : TP_EKAFKA;
    snprintf(detail[2], sizeof(detail[2]), "%s%s%s", rc[2] ? tp_err_name(rc[2]) : "ok",
             rc[2] ? ": " : "", rc[2] ? kerr : "");
    rc[3] = check_postgres(o, detail[3], sizeof(detail[3]));
    if (rc[3] == 0)
        snprintf(detail[3], sizeof(detail[3]), "ok");
    rc[4] = o->policy ? tp_policy_ping(o->policy) : TP_EOPA_UNAVAILABLE;
    snprintf(detail[4], sizeof(detail[4]), "%s", rc[4] ? tp_err_name(rc[4]) : "ok");

    for (int i = 0; i < 5; i++)
        failed += rc[i] != 0;
    tp_metrics_printf(b, "{\"status\":\"%s\",\"failed\":[", failed ? "not ready" : "ready");
    for (int i = 0, n = 0; i < 5; i++)
        if (rc[i] != 0)
            tp_metrics_printf(b, "%s\"%s\"", n++ ? "," : "", names[i]);
    tp_metrics_printf(b, "],\"checks\":{");
    for (int i = 0; i < 5; i++) {
        tp_metrics_printf(b, "%s\"%s\":", i ? "," : "", names[i]);
        json_string(b, detail[i]);
    }
    tp_metrics_printf(b, "}}\n");
    return failed ? TP_EUNAVAILABLE : 0;
}

/* ---- /metrics: the series computed at scrape time (check thread) ------------------------------ */

static void put_lag(void *arg, const char *topic, int32_t partition, int64_t lag) {
    tp_metrics_buf *b = arg;
    tp_metrics_printf(b, "tp_worker_consumer_lag{topic=\"");
    tp_metrics_label_value(b, topic);
    tp_metrics_printf(b, "\",partition=\"%d\"} %lld\n", (int)partition, (long long)lag);
}

static void hook_render(void *opaque, tp_metrics_buf *b) {
    tp_worker_ops *o = opaque;
    char detail[320];
    tp_metrics_family(b, "tp_worker_consumer_lag", "gauge",
                      "Records on the requests topic past this worker's position, per assigned "
                      "partition (high watermark as last fetched: stale while paused).");
    if (atomic_load(&o->phase) == PHASE_RUNNING || atomic_load(&o->phase) == PHASE_DRAINING)
        tp_consumer_lag(o->w->consumer, o->probe_ms, put_lag, b);

    tp_metrics_family(b, "tp_worker_outbox_backlog", "gauge",
                      "Receipts in the outbox not yet published, whole database (every worker "
                      "reports the same value: aggregate with max).");
    tp_metrics_family(b, "tp_worker_outbox_oldest_age_seconds", "gauge",
                      "Age of the oldest receipt not yet published, whole database (0 when none).");
    /* A ping within the bound first: the query itself is bounded only by statement_timeout, which
     * a frozen server never enforces. Unreachable: the two gauges are left out of this scrape. */
    if (check_postgres(o, detail, sizeof(detail)) == 0) {
        tp_res *res = NULL;
        int64_t n = 0, age_ms = 0;
        if (tp_db_query(o->db, "SELECT count(*), coalesce((extract(epoch FROM clock_timestamp() - "
                               "min(created_at)) * 1000)::bigint, 0) FROM receipt_outbox "
                               "WHERE published_at IS NULL",
                        0, NULL, &res) == 0 &&
            tp_res_nrows(res) == 1 && tp_res_get_int64(res, 0, 0, &n) == 0 &&
            tp_res_get_int64(res, 0, 1, &age_ms) == 0)
            tp_metrics_printf(b, "tp_worker_outbox_backlog %lld\ntp_worker_outbox_oldest_age_seconds %.3f\n",
                              (long long)n, (double)age_ms / 1000.0);
        tp_res_free(res);
    }
}

/* ---- lifecycle --------------------------------------------------------------------------------- */

int tp_worker__ops_start(tp_worker *w) {
    char err[512];
    tp_ops_hooks hooks;
    const char *listen = tp_config_get(w->cfg, "worker.http_listen");
    tp_worker_ops *o;
    pthread_condattr_t ca;
    int rc;

    if (!listen[0]) {
        tp_log_info("worker", "worker.http_listen is empty: no /metrics, /healthz or /readyz");
        return 0;
    }
    o = calloc(1, sizeof(*o));
    if (!o)
        return TP_ENOMEM;
    o->w = w;
    o->probe_ms = (int)tp_config_get_int(w->cfg, "worker.probe_timeout_ms");
    if (o->probe_ms < 100)
        o->probe_ms = 100;
    atomic_init(&o->phase, PHASE_STARTING);
    pthread_mutex_init(&o->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&o->cv, &ca);
    pthread_condattr_destroy(&ca);
    /* The check connection: opening it and each statement bounded by the probe's deadline. */
    tp_db_opts_from_config(&o->db_opts, w->cfg);
    o->db_opts.connect_timeout_s = (o->probe_ms + 999) / 1000;
    o->db_opts.statement_timeout_ms = o->probe_ms;
    o->policy = tp_policy_client_new(tp_config_get(w->cfg, "opa.url"), o->probe_ms);
    if (tp_kafka_probe_new(w->cfg, &o->probe, err, sizeof(err)) != 0)
        tp_log_warn("worker", "readiness: Kafka probe: %s", err);
    w->ops = o;
    memset(&hooks, 0, sizeof(hooks));
    hooks.opaque = o;
    hooks.live = hook_live;
    hooks.ready = hook_ready;
    hooks.render = hook_render;
    rc = tp_ops_server_start(listen, &hooks, &o->server, err, sizeof(err));
    if (rc != 0) {
        tp_log_error("worker", "%s", err);
        tp_worker__ops_stop(w);
        return rc;
    }
    return 0;
}

void tp_worker__ops_loop_ready(tp_worker *w) {
    tp_worker_ops *o = w->ops;
    if (!o)
        return;
    uv_async_init(w->loop, &w->ops_ping, on_ping);
    w->ops_ping.data = o;
    o->ping_ready = true;
    atomic_store(&o->phase, PHASE_RUNNING);
}

void tp_worker__ops_draining(tp_worker *w) {
    if (w->ops)
        atomic_store(&w->ops->phase, PHASE_DRAINING);
}

void tp_worker__ops_stop(tp_worker *w) {
    tp_worker_ops *o = w->ops;
    if (!o)
        return;
    pthread_mutex_lock(&o->mu);
    atomic_store(&o->phase, PHASE_STOPPED); /* a /healthz waiting for the loop stops waiting */
    pthread_cond_broadcast(&o->cv);
    pthread_mutex_unlock(&o->mu);
    tp_ops_server_stop(o->server); /* joins the threads that use what follows */
    if (o->ping_ready)
        uv_close((uv_handle_t *)&w->ops_ping, NULL); /* the caller runs the loop once more */
    tp_db_close(o->db);
    tp_policy_client_free(o->policy);
    tp_kafka_probe_free(o->probe);
    pthread_cond_destroy(&o->cv);
    pthread_mutex_destroy(&o->mu);
    free(o);
    w->ops = NULL;
}
