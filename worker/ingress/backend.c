/* backend.c: the production hooks of tp-ingress: PostgreSQL (a small connection pool, idempotency
 * keys, the ACCEPTED record, status and owned tenants), Kafka (encode, produce, wait for the
 * delivery report with a bound) and OPA (pre-check, readiness). Every hook runs on a pool thread. */
#include "tp/codec.h"
#include "tp/error.h"
#include "tp/ingress.h"
#include "tp/kafka.h"
#include "tp/log.h"
#include "tp/stages.h"
#include "tp/store.h"

#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define COMPONENT "ingress"
#define POOL_MAX 64
#define PROBE_TIMEOUT_MS 1500

/* One PostgreSQL connection, lent to one pool thread at a time. */
typedef struct conn {
    struct conn *next;
    tp_db *db;
} conn;

/* A record waiting for its delivery report: shared by the waiting hook and the delivery thread,
 * freed by whichever lets go last. */
typedef struct pending {
    int refs;
    bool done;
    int err;
} pending;

struct tp_ingress_backend {
    char *dsn;
    tp_db_opts db_opts; /* pg.* deadlines: every connection, /readyz's included, is bounded */
    char *topic;
    int produce_timeout_ms;
    tp_producer *producer;
    tp_codec *codec;
    tp_ingress_opa *opa;
    rd_kafka_t *probe; /* metadata requests for /readyz */
    pthread_t poller;
    bool poller_started;
    atomic_bool stop;
    pthread_mutex_t dr_mu;
    pthread_cond_t dr_cv;
    pthread_mutex_t pool_mu;
    conn *free_conns;
    int n_conns;
};

/* ---- connection pool ------------------------------------------------------------------------ */

/* Lends a connection (opening one when none is free). Returns NULL when PostgreSQL is down. */
static conn *conn_acquire(tp_ingress_backend *b) {
    char err[256];
    conn *c;
    pthread_mutex_lock(&b->pool_mu);
    c = b->free_conns;
    if (c)
        b->free_conns = c->next;
    pthread_mutex_unlock(&b->pool_mu);
    if (c)
        return c;
    c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    if (tp_db_connect_opts(b->dsn, &b->db_opts, &c->db, err, sizeof(err)) != 0) {
        tp_log_warn(COMPONENT, "postgres connect: %s", err);
        free(c);
        return NULL;
    }
    pthread_mutex_lock(&b->pool_mu);
    b->n_conns++;
    pthread_mutex_unlock(&b->pool_mu);
    return c;
}

/* Returns a connection; one whose last call failed transiently (TP_EDB: maybe a lost connection)
 * is closed instead, so the next caller opens a fresh one. */
static void conn_release(tp_ingress_backend *b, conn *c, int last_rc) {
    if (!c)
        return;
    if (last_rc == TP_EDB || tp_db_in_tx(c->db)) {
        tp_db_close(c->db);
        free(c);
        pthread_mutex_lock(&b->pool_mu);
        b->n_conns--;
        pthread_mutex_unlock(&b->pool_mu);
        return;
    }
    pthread_mutex_lock(&b->pool_mu);
    c->next = b->free_conns;
    b->free_conns = c;
    pthread_mutex_unlock(&b->pool_mu);
}

static void fp_hex(const unsigned char fp[32], char out[65]) {
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        out[2 * i] = hex[fp[i] >> 4];
        out[2 * i + 1] = hex[fp[i] & 15];
    }
    out[64] = '\0';
}

/* ---- Kafka delivery ------------------------------------------------------------------------- */

static void pending_unref_locked(pending *p) {
    if (--p->refs == 0)
        free(p);
}

static void *poll_main(void *arg) {
    tp_ingress_backend *b = arg;
    while (!atomic_load(&b->stop))
        tp_producer_poll(b->producer, 100);
    return NULL;
}

typedef struct delivery_ctx {
    tp_ingress_backend *b;
    pending *p;
} delivery_ctx;

/* Delivery thread: marks the record done under the backend's lock and wakes the waiters. */
static void on_delivery(void *opaque, int err, int32_t partition, int64_t offset) {
    delivery_ctx *d = opaque;
    tp_ingress_backend *b = d->b;
    (void)partition;
    (void)offset;
    /* The backend outlives every record: the poller is joined before the producer is freed and
     * the producer's final purge runs before the lock is destroyed. */
    pthread_mutex_lock(&b->dr_mu);
    d->p->err = err;
    d->p->done = true;
    pending_unref_locked(d->p);
    pthread_cond_broadcast(&b->dr_cv);
    pthread_mutex_unlock(&b->dr_mu);
    free(d);
}

/* Produces one encoded request and waits (at most produce_timeout_ms) for its delivery
 * report. Returns 0 (PERSISTED), TP_EKAFKA, TP_ETIMEOUT or TP_ENOMEM. */
static int produce_and_wait(tp_ingress_backend *b, const tp_request *req, char *detail,
                            size_t detail_cap) {
    unsigned char *buf = NULL;
    size_t len = 0;
    int rc = tp_codec_encode_request(b->codec, req, &buf, &len);
    if (rc != 0) {
        snprintf(detail, detail_cap, "encode: %s", tp_err_name(rc));
        return rc;
    }
    pending *p = calloc(1, sizeof(*p));
    delivery_ctx *d = calloc(1, sizeof(*d));
    if (!p || !d) {
        free(p);
        free(d);
        free(buf);
        return TP_ENOMEM;
    }
    p->refs = 2;
    d->b = b;
    d->p = p;
    tp_kafka_header hdrs[2];
    int n_hdrs = 0;
    if (req->correlation_id[0])
        hdrs[n_hdrs++] = (tp_kafka_header){"correlation-id", req->correlation_id, strlen(req->correlation_id)};
    if (req->traceparent[0])
        hdrs[n_hdrs++] = (tp_kafka_header){"traceparent", req->traceparent, strlen(req->traceparent)};
    rc = tp_producer_send(b->producer, b->topic, req->tenant.slug, strlen(req->tenant.slug), buf,
                          len, n_hdrs ? hdrs : NULL, n_hdrs, on_delivery, d);
    free(buf);
    if (rc != 0) {
        free(p);
        free(d);
        snprintf(detail, detail_cap, "produce: %s", tp_err_name(rc));
        return rc;
    }
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    int64_t ns = (int64_t)deadline.tv_nsec + (int64_t)b->produce_timeout_ms * 1000000;
    deadline.tv_sec += (time_t)(ns / 1000000000);
    deadline.tv_nsec = (long)(ns % 1000000000);
    pthread_mutex_lock(&b->dr_mu);
    while (!p->done) {
        if (pthread_cond_timedwait(&b->dr_cv, &b->dr_mu, &deadline) == ETIMEDOUT)
            break;
    }
    rc = p->done ? p->err : TP_ETIMEOUT;
    pending_unref_locked(p);
    pthread_mutex_unlock(&b->dr_mu);
    if (rc != 0)
        snprintf(detail, detail_cap, "no delivery report within %d ms (%s)", b->produce_timeout_ms,
                 tp_err_name(rc));
    return rc;
}

/* ---- hooks ---------------------------------------------------------------------------------- */

static int select_key(tp_db *db, const char *caller, const char *key, char *request_id,
                      size_t cap, char fp_out[65], bool *found) {
    const char *params[2] = {caller, key};
    tp_res *res = NULL;
    int rc = tp_db_query(db, "SELECT request_id, body_fingerprint FROM idempotency_keys WHERE "
                             "caller = $1 AND key = $2",
                         2, params, &res);
    *found = false;
    if (rc != 0)
        return rc;
    if (tp_res_nrows(res) == 1) {
        *found = true;
        snprintf(request_id, cap, "%s", tp_res_get(res, 0, 0));
        snprintf(fp_out, 65, "%s", tp_res_get(res, 0, 1));
    }
    tp_res_free(res);
    return 0;
}

static int hook_idempotency_lookup(void *opaque, const char *caller, const char *key,
                                   const unsigned char fp[32], char *request_id, size_t cap) {
    tp_ingress_backend *b = opaque;
    char want[65], have[65] = "";
    bool found = false;
    conn *c = conn_acquire(b);
    if (!c)
        return TP_EDB;
    int rc = select_key(c->db, caller, key, request_id, cap, have, &found);
    conn_release(b, c, rc);
    if (rc != 0)
        return rc;
    if (!found)
        return TP_ENOT_FOUND;
    fp_hex(fp, want);
    return strcmp(want, have) == 0 ? 0 : TP_EIDEMPOTENCY_MISMATCH;
}

static int hook_pre_check(void *opaque, const tp_request *req, tp_policy_decision *out) {
    tp_ingress_backend *b = opaque;
    int owned = 0;
    if (req->source == TP_SOURCE_SELF_SERVE_API) {
        /* The same count as the worker's policy stage: tenants this user owns already. */
        char buf[32];
        bool found = false;
        const char *params[1] = {req->actor.id};
        conn *c = conn_acquire(b);
        if (!c)
            return TP_EDB;
        int rc = tp_db_query_text(c->db, "SELECT count(*) FROM tenants WHERE owner_id = $1", 1,
                                  params, buf, sizeof(buf), &found);
        conn_release(b, c, rc);
        if (rc != 0)
            return rc;
        owned = found ? atoi(buf) : 0;
    }
    return tp_ingress_opa_decide(b->opa, req, owned, out);
}

/* Claims the key, records the request ACCEPTED and produces it, all inside one transaction that
 * commits only after the delivery report: a concurrent request with the same key waits on the
 * key's row and then sees the winner; a failed produce leaves neither key nor request behind. */
static int hook_enqueue(void *opaque, const tp_request *req, const unsigned char fp[32],
                        char *replay_id, size_t replay_cap) {
    tp_ingress_backend *b = opaque;
    tp_log_ctx lc = {.request_id = req->request_id, .traceparent = req->traceparent};
    char fphex[65], detail[256] = "";
    int64_t affected = 0;
    int rc;
    replay_id[0] = '\0';
    conn *c = conn_acquire(b);
    if (!c)
        return TP_EDB;
    if ((rc = tp_db_begin(c->db)) != 0)
        goto out_release;
    if (req->idempotency_key[0]) {
        fp_hex(fp, fphex);
        const char *params[4] = {req->actor.id, req->idempotency_key, req->request_id, fphex};
        rc = tp_db_exec(c->db,
                        "INSERT INTO idempotency_keys (caller, key, request_id, body_fingerprint) "
                        "VALUES ($1, $2, $3, $4) ON CONFLICT (caller, key) DO NOTHING",
                        4, params, &affected);
        if (rc != 0)
            goto out_rollback;
        if (affected == 0) {
            /* Another request holds the key (committed: our insert waited for it). */
            char have[65] = "";
            bool found = false;
            rc = select_key(c->db, req->actor.id, req->idempotency_key, replay_id, replay_cap,
                            have, &found);
            tp_db_rollback(c->db);
            if (rc == 0 && !found)
                rc = TP_EDB; /* deleted in between: let the client retry */
            else if (rc == 0 && strcmp(have, fphex) != 0)
                rc = TP_EIDEMPOTENCY_MISMATCH;
            if (rc != 0)
                replay_id[0] = '\0';
            goto out_release;
        }
    }
    if ((rc = tp_stages_accept(c->db, req, NULL, NULL, 0, 0)) != 0)
        goto out_rollback;
    rc = produce_and_wait(b, req, detail, sizeof(detail));
    if (rc != 0) {
        tp_log(TP_LOG_WARN, COMPONENT, &lc, "enqueue failed: %s", detail);
        if (rc != TP_ENOMEM)
            rc = TP_EKAFKA;
        goto out_rollback;
    }
    rc = tp_db_commit(c->db);
    if (rc != 0) {
        /* The record is durable in Kafka: the worker records the request itself when it
         * consumes it. Only the Idempotency-Key is lost. */
        tp_log(TP_LOG_WARN, COMPONENT, &lc, "commit after produce failed (%s): %s",
               tp_err_name(rc), tp_db_errmsg(c->db));
        tp_db_rollback(c->db);
        conn_release(b, c, TP_EDB);
        return 0;
    }
    conn_release(b, c, 0);
    return 0;
out_rollback:
    tp_db_rollback(c->db);
out_release:
    conn_release(b, c, rc == TP_EKAFKA ? 0 : rc);
    return rc;
}

static int hook_status_lookup(void *opaque, const char *request_id, char **json_out, char *owner,
                              size_t owner_cap) {
    tp_ingress_backend *b = opaque;
    const char *params[1] = {request_id};
    bool found = false;
    *json_out = NULL;
    conn *c = conn_acquire(b);
    if (!c)
        return TP_EDB;
    int rc = tp_db_query_text(c->db, "SELECT actor_id FROM provisioning_requests WHERE request_id = $1",
                              1, params, owner, owner_cap, &found);
    if (rc == 0 && !found)
        rc = TP_ENOT_FOUND;
    if (rc == 0) {
        *json_out = tp_stages_status_json(c->db, request_id);
        if (!*json_out)
            rc = TP_EDB;
    }
    conn_release(b, c, rc == TP_ENOT_FOUND ? 0 : rc);
    return rc;
}

static int hook_state_lookup(void *opaque, const char *request_id, char *state, size_t cap) {
    tp_ingress_backend *b = opaque;
    const char *params[1] = {request_id};
    bool found = false;
    conn *c = conn_acquire(b);
    if (!c)
        return TP_EDB;
    int rc = tp_db_query_text(c->db, "SELECT state FROM provisioning_requests WHERE request_id = $1",
                              1, params, state, cap, &found);
    conn_release(b, c, rc);
    if (rc == 0 && !found)
        rc = TP_ENOT_FOUND;
    return rc;
}

static int hook_ready(void *opaque, char *detail, size_t cap) {
    tp_ingress_backend *b = opaque;
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t kerr = rd_kafka_metadata(b->probe, 0, NULL, &md, PROBE_TIMEOUT_MS);
    if (md)
        rd_kafka_metadata_destroy(md);
    if (kerr != RD_KAFKA_RESP_ERR_NO_ERROR) {
        snprintf(detail, cap, "kafka: %s", rd_kafka_err2str(kerr));
        return TP_EKAFKA;
    }
    /* Bounded twice: opening a connection by pg.connect_timeout_s, the answer by the probe's
     * own client-side deadline (a frozen server never lets statement_timeout fire). */
    conn *c = conn_acquire(b);
    int rc = c ? tp_db_ping_within(c->db, PROBE_TIMEOUT_MS) : TP_EDB;
    conn_release(b, c, rc);
    if (rc != 0) {
        snprintf(detail, cap, "postgresql: %s", tp_err_name(rc));
        return rc;
    }
    rc = tp_ingress_opa_ping(b->opa);
    if (rc != 0) {
        snprintf(detail, cap, "opa: %s", tp_err_name(rc));
        return rc;
    }
    return 0;
}

/* ---- lifecycle ------------------------------------------------------------------------------ */

static rd_kafka_t *probe_new(const tp_config *cfg, char *errstr, size_t errstr_size) {
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (tp_kafka_conf_apply(conf, cfg, errstr, errstr_size) != 0) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, errstr_size);
    if (!rk)
        rd_kafka_conf_destroy(conf);
    return rk;
}

int tp_ingress_backend_new(tp_config *cfg, tp_ingress_backend **out, char *errstr,
                           size_t errstr_size) {
    int rc = TP_ENOMEM;
    *out = NULL;
    tp_ingress_backend *b = calloc(1, sizeof(*b));
    if (!b) {
        snprintf(errstr, errstr_size, "out of memory");
        return TP_ENOMEM;
    }
    pthread_mutex_init(&b->dr_mu, NULL);
    pthread_cond_init(&b->dr_cv, NULL);
    pthread_mutex_init(&b->pool_mu, NULL);
    b->produce_timeout_ms = (int)tp_config_get_int(cfg, "ingress.produce_timeout_ms");
    if (b->produce_timeout_ms < 100 || b->produce_timeout_ms > 60000) {
        snprintf(errstr, errstr_size, "ingress.produce_timeout_ms must be 100..60000");
        rc = TP_ECONFIG;
        goto out_free;
    }
    if (!*tp_config_get(cfg, "kafka.message.timeout.ms")) {
        /* librdkafka scans for expired records about once a second: let it give up a second
         * before we do, so the failed report (not a late delivery) is what ends the wait. */
        char v[32];
        int t = b->produce_timeout_ms;
        snprintf(v, sizeof(v), "%d", t > 2000 ? t - 1000 : t / 2);
        if ((rc = tp_config_set(cfg, "kafka.message.timeout.ms", v, errstr, errstr_size)) != 0)
            goto out_free;
    }
    b->dsn = strdup(tp_config_get(cfg, "pg.dsn"));
    tp_db_opts_from_config(&b->db_opts, cfg);
    b->topic = strdup(tp_config_get(cfg, "topic.requests"));
    if (!b->dsn || !b->topic) {
        snprintf(errstr, errstr_size, "out of memory");
        rc = TP_ENOMEM;
        goto out_free;
    }
    b->codec = tp_codec_new(tp_config_get(cfg, "codec.schema_dir"),
                            tp_config_get(cfg, "codec.confluent_schema_ids"), errstr, errstr_size);
    if (!b->codec) {
        rc = TP_ECONFIG;
        goto out_free;
    }
    if ((rc = tp_ingress_opa_new(cfg, &b->opa, errstr, errstr_size)) != 0)
        goto out_free;
    if ((rc = tp_producer_new(cfg, &b->producer, errstr, errstr_size)) != 0)
        goto out_free;
    b->probe = probe_new(cfg, errstr, errstr_size);
    if (!b->probe) {
        rc = TP_EKAFKA_FATAL;
        goto out_free;
    }
    if (pthread_create(&b->poller, NULL, poll_main, b) != 0) {
        snprintf(errstr, errstr_size, "cannot start the delivery thread");
        rc = TP_ENOMEM;
        goto out_free;
    }
    b->poller_started = true;
    *out = b;
    return 0;
out_free:
    tp_ingress_backend_free(b);
    return rc;
}

void tp_ingress_backend_hooks(tp_ingress_backend *b, tp_ingress_hooks *hooks) {
    memset(hooks, 0, sizeof(*hooks));
    hooks->opaque = b;
    hooks->idempotency_lookup = hook_idempotency_lookup;
    hooks->pre_check = hook_pre_check;
    hooks->enqueue = hook_enqueue;
    hooks->status_lookup = hook_status_lookup;
    hooks->ready = hook_ready;
    hooks->state_lookup = hook_state_lookup;
}

void tp_ingress_backend_free(tp_ingress_backend *b) {
    if (!b)
        return;
    if (b->poller_started) {
        atomic_store(&b->stop, true);
        pthread_join(b->poller, NULL);
    }
    /* Records still queued get their (failed) reports here; no waiter is left to see them. */
    tp_producer_free(b->producer, 5000);
    if (b->probe)
        rd_kafka_destroy(b->probe);
    tp_ingress_opa_free(b->opa);
    tp_codec_free(b->codec);
    while (b->free_conns) {
        conn *c = b->free_conns;
        b->free_conns = c->next;
        tp_db_close(c->db);
        free(c);
    }
    pthread_mutex_destroy(&b->pool_mu);
    pthread_cond_destroy(&b->dr_cv);
    pthread_mutex_destroy(&b->dr_mu);
    free(b->dsn);
    free(b->topic);
    free(b);
}
