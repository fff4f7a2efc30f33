/* backend.c: the production hooks of tp-ingress: PostgreSQL (a small connection pool, idempotency
 * keys, the ACCEPTED record, status and owned tenants, the tenant view, the transparency log's
 * checkpoint and proofs), Kafka (encode, produce, wait for the delivery report with a bound) and
 * OPA (pre-check, readiness). Every hook runs on a pool thread. */
#include "ingress/ingress_int.h"
#include "tp/codec.h"
#include "tp/error.h"
#include "tp/ingress.h"
#include "tp/kafka.h"
#include "tp/log.h"
#include "tp/stages.h"
#include "tp/store.h"
#include "tp/tlog_db.h"

#include <jansson.h>
#include <sodium.h>

#include <errno.h>
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
 * freed by whichever lets go last. It has a condition variable of its own: with one shared by
 * every waiter, each delivery report woke all of them (up to 16 pool threads); 13.9 context
 * switches per accepted POST then, 10.4 now (scripts/bench ingress). */
typedef struct pending {
    int refs;
    bool done;
    int err;
    pthread_cond_t cv;
} pending;

struct tp_ingress_backend {
    char *dsn;
    tp_db_opts db_opts; /* pg.* deadlines: every connection, /readyz's included, is bounded */
    char *topic;
    int produce_timeout_ms;
    tp_producer *producer;
    tp_codec *codec;
    tp_ingress_opa *opa;
    tp_kafka_probe *probe; /* metadata requests for /readyz */
    pthread_t poller;
    bool poller_started;
    atomic_bool stop;
    pthread_mutex_t dr_mu;
    pthread_condattr_t dr_cattr; /* each pending's cv waits on the monotonic clock */
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
    if (--p->refs == 0) {
        pthread_cond_destroy(&p->cv);
        free(p);
    }
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
    pthread_cond_signal(&d->p->cv); /* before the unref: the waiter may free it right after */
    pending_unref_locked(d->p);
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
    pthread_cond_init(&p->cv, &b->dr_cattr);
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
        pthread_cond_destroy(&p->cv);
        free(p);
        free(d);
        snprintf(detail, detail_cap, "produce: %s", tp_err_name(rc));
        return rc;
    }
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline); /* p->cv waits on the monotonic clock */
    int64_t ns = (int64_t)deadline.tv_nsec + (int64_t)b->produce_timeout_ms * 1000000;
    deadline.tv_sec += (time_t)(ns / 1000000000);
    deadline.tv_nsec = (long)(ns % 1000000000);
    pthread_mutex_lock(&b->dr_mu);
    while (!p->done) {
        if (pthread_cond_timedwait(&p->cv, &b->dr_mu, &deadline) == ETIMEDOUT)
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

/* A stored Idempotency-Key: its request, its body fingerprint and the state of that request
 * ("" when the request row is missing). */
typedef struct stored_key {
    bool found;
    char request_id[TP_REQUEST_ID_MAX + 1];
    char fp[65];
    char state[16];
} stored_key;

static int select_key(tp_db *db, const char *caller, const char *key, stored_key *out) {
    const char *params[2] = {caller, key};
    tp_res *res = NULL;
    int rc = tp_db_query(db, "SELECT k.request_id, k.body_fingerprint, coalesce(r.state, '') "
                             "FROM idempotency_keys k LEFT JOIN provisioning_requests r "
                             "ON r.request_id = k.request_id WHERE k.caller = $1 AND k.key = $2",
                         2, params, &res);
    memset(out, 0, sizeof(*out));
    if (rc != 0)
        return rc;
    if (tp_res_nrows(res) == 1) {
        out->found = true;
        snprintf(out->request_id, sizeof(out->request_id), "%s", tp_res_get(res, 0, 0));
        snprintf(out->fp, sizeof(out->fp), "%s", tp_res_get(res, 0, 1));
        snprintf(out->state, sizeof(out->state), "%s", tp_res_get(res, 0, 2));
    }
    tp_res_free(res);
    return 0;
}

/* True while a stored request may not have reached Kafka: recorded ACCEPTED (or not recorded)
 * and not yet picked up by a worker, which moves it to RUNNING first. */
static bool maybe_not_enqueued(const stored_key *k) {
    return k->state[0] == '\0' || strcmp(k->state, "ACCEPTED") == 0;
}

/* A replay is answered from the store only once a worker has seen its request (so it is in
 * Kafka). While the stored request is still ACCEPTED it may never have been produced (the
 * process that recorded it died or failed before the delivery report): TP_ENOT_FOUND sends the
 * retry through hook_enqueue, which produces it again under the stored id. */
static int hook_idempotency_lookup(void *opaque, const char *caller, const char *key,
                                   const unsigned char fp[32], char *request_id, size_t cap) {
    tp_ingress_backend *b = opaque;
    char want[65];
    stored_key k;
    conn *c = conn_acquire(b);
    if (!c)
        return TP_EDB;
    int rc = select_key(c->db, caller, key, &k);
    conn_release(b, c, rc);
    if (rc != 0)
        return rc;
    if (!k.found)
        return TP_ENOT_FOUND;
    fp_hex(fp, want);
    if (strcmp(want, k.fp) != 0)
        return TP_EIDEMPOTENCY_MISMATCH;
    if (maybe_not_enqueued(&k))
        return TP_ENOT_FOUND;
    snprintf(request_id, cap, "%s", k.request_id);
    return 0;
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

/* Records the key (when set) and the request ACCEPTED in one short transaction and commits.
 * Returns 0 with *claimed true (ours: produce it), 0 with *claimed false and *k the key's
 * current holder (another request committed it first), or a TP_E* code. */
static int record_request(tp_db *db, const tp_request *req, const char *fphex, bool *claimed,
                          stored_key *k) {
    int64_t affected = 0;
    int rc;
    *claimed = false;
    memset(k, 0, sizeof(*k));
    if (!req->idempotency_key[0]) {
        if ((rc = tp_stages_accept(db, req, NULL, NULL, 0, 0)) == 0)
            *claimed = true;
        return rc;
    }
    if ((rc = tp_db_begin(db)) != 0)
        return rc;
    const char *params[4] = {req->actor.id, req->idempotency_key, req->request_id, fphex};
    rc = tp_db_exec(db,
                    "INSERT INTO idempotency_keys (caller, key, request_id, body_fingerprint) "
                    "VALUES ($1, $2, $3, $4) ON CONFLICT (caller, key) DO NOTHING",
                    4, params, &affected);
    if (rc == 0 && affected == 0) {
        /* Another request holds the key (committed: our insert waited for its short
         * transaction, never for a delivery wait). */
        rc = select_key(db, req->actor.id, req->idempotency_key, k);
        tp_db_rollback(db);
        if (rc == 0 && !k->found)
            rc = TP_EDB; /* deleted in between (its produce failed): let the client retry */
        return rc;
    }
    if (rc == 0)
        rc = tp_stages_accept(db, req, NULL, NULL, 0, 0);
    if (rc == 0)
        rc = tp_db_commit(db);
    if (rc != 0) {
        tp_db_rollback(db);
        return rc;
    }
    *claimed = true;
    return 0;
}

/* After a failed produce of a request we recorded: drops its key and, while no worker has seen
 * it (ACCEPTED), the request and its conditions, in one statement. A record that still arrives
 * later is recorded again by the worker itself. */
static int forget_request(tp_db *db, const tp_request *req) {
    const char *params[3] = {req->request_id, req->idempotency_key[0] ? req->actor.id : NULL,
                             req->idempotency_key[0] ? req->idempotency_key : NULL};
    return tp_db_exec(db,
                      "WITH r AS (SELECT request_id FROM provisioning_requests WHERE request_id = $1 "
                      "AND state = 'ACCEPTED' FOR UPDATE), "
                      "s AS (DELETE FROM provisioning_stages WHERE request_id IN (SELECT request_id FROM r)), "
                      "d AS (DELETE FROM provisioning_requests WHERE request_id IN (SELECT request_id FROM r)) "
                      "DELETE FROM idempotency_keys WHERE caller = $2 AND key = $3 AND request_id = $1",
                      3, params, NULL);
}

/* Records the key and the request ACCEPTED and commits (a short transaction: no row lock and no
 * connection is held while waiting for Kafka), then produces the record and waits for its
 * delivery report. A failed produce forgets the key and the request again in a second short
 * statement; if that fails too (or the process dies before), the key points at an ACCEPTED
 * request that a retry with the same key and body produces again under its id (the worker is
 * idempotent on request id). A concurrent request that finds the key taken with the same body
 * answers as a replay, after producing the record itself while it may not be in Kafka yet, so
 * its 202 is durable too. */
static int hook_enqueue(void *opaque, const tp_request *req, const unsigned char fp[32],
                        char *replay_id, size_t replay_cap) {
    tp_ingress_backend *b = opaque;
    tp_log_ctx lc = {.request_id = req->request_id, .traceparent = req->traceparent};
    char fphex[65], detail[256] = "";
    const tp_request *send = req;
    tp_request again;
    stored_key k;
    bool claimed = false;
    int rc;
    replay_id[0] = '\0';
    fp_hex(fp, fphex);
    conn *c = conn_acquire(b);
    if (!c)
        return TP_EDB;
    rc = record_request(c->db, req, fphex, &claimed, &k);
    conn_release(b, c, rc);
    if (rc != 0)
        return rc;
    if (!claimed) {
        if (strcmp(k.fp, fphex) != 0)
            return TP_EIDEMPOTENCY_MISMATCH;
        snprintf(replay_id, replay_cap, "%s", k.request_id);
        if (!maybe_not_enqueued(&k))
            return 0;
        /* Same meaning (same fingerprint), the stored id: the record its first request made. */
        again = *req;
        snprintf(again.request_id, sizeof(again.request_id), "%s", k.request_id);
        send = &again;
        lc.request_id = again.request_id;
    }
    rc = produce_and_wait(b, send, detail, sizeof(detail));
    if (rc == 0)
        return 0;
    tp_log(TP_LOG_WARN, COMPONENT, &lc, "enqueue failed: %s", detail);
    replay_id[0] = '\0';
    if (claimed && (c = conn_acquire(b)) != NULL) {
        int frc = forget_request(c->db, req);
        if (frc != 0)
            tp_log(TP_LOG_WARN, COMPONENT, &lc, "could not forget the unsent request (%s): %s; "
                   "a retry with its Idempotency-Key sends it again", tp_err_name(frc),
                   tp_db_errmsg(c->db));
        conn_release(b, c, frc);
    }
    return rc == TP_ENOMEM ? rc : TP_EKAFKA;
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

/* A 32-byte hash as a new base64 JSON string. */
static json_t *b64_hash(const unsigned char h[TP_TLOG_HASH_LEN]) {
    char b64[sodium_base64_ENCODED_LEN(TP_TLOG_HASH_LEN, sodium_base64_VARIANT_ORIGINAL)];
    sodium_bin2base64(b64, sizeof(b64), h, TP_TLOG_HASH_LEN, sodium_base64_VARIANT_ORIGINAL);
    return json_string(b64);
}

static json_t *b64_proof(unsigned char proof[][TP_TLOG_HASH_LEN], size_t n) {
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < n; i++)
        if (json_array_append_new(arr, b64_hash(proof[i])) != 0) {
            json_decref(arr);
            return NULL;
        }
    return arr;
}

/* A tree size the stored tree can prove: at most its size. */
static int check_size(tp_db *db, int64_t size, const char *what, char *detail, size_t cap) {
    int64_t stored = 0;
    int rc = tp_tlog_db_head(db, &stored, NULL);
    if (rc == 0 && size > stored) {
        snprintf(detail, cap, "%s %lld is beyond the log's %lld leaves", what, (long long)size,
                 (long long)stored);
        rc = TP_EINVAL;
    }
    return rc;
}

static int tlog_answer(tp_db *db, const tp_tlog_query *q, json_t **out, char *detail, size_t cap) {
    unsigned char proof[TP_TLOG_MAX_PROOF][TP_TLOG_HASH_LEN], root[TP_TLOG_HASH_LEN];
    unsigned char leaf[TP_TLOG_HASH_LEN], old_root[TP_TLOG_HASH_LEN];
    tp_checkpoint cp;
    char *note = NULL;
    size_t n = 0;
    int64_t index = 0, size = q->tree_size;
    int rc;
    if (q->ask == TP_TLOG_ASK_CHECKPOINT || (q->ask == TP_TLOG_ASK_INCLUSION && size == 0)) {
        rc = tp_tlog_db_latest(db, &note, &cp);
        if (rc == TP_ENOT_FOUND)
            snprintf(detail, cap, "no checkpoint has been signed yet");
        if (rc != 0)
            return rc;
        if (q->ask == TP_TLOG_ASK_CHECKPOINT) {
            *out = json_pack("{s:s, s:I, s:o, s:s}", "origin", cp.origin, "treeSize",
                             (json_int_t)cp.size, "rootHash", b64_hash(cp.root), "note", note);
            free(note);
            return *out ? 0 : TP_ENOMEM;
        }
        free(note);
        size = cp.size;
    }
    if (q->ask == TP_TLOG_ASK_INCLUSION) {
        rc = tp_tlog_db_leaf(db, q->receipt_id, &index, leaf);
        if (rc == TP_ENOT_FOUND)
            snprintf(detail, cap, "no receipt %s in the log", q->receipt_id);
        if (rc != 0 || (rc = check_size(db, size, "treeSize", detail, cap)) != 0)
            return rc;
        if (index >= size) {
            snprintf(detail, cap, "receipt %s is leaf %lld, not in a tree of %lld leaves",
                     q->receipt_id, (long long)index, (long long)size);
            return TP_EINVAL;
        }
        if ((rc = tp_tlog_inclusion_proof(tp_tlog_db_read, db, index, size, proof, &n)) != 0 ||
            (rc = tp_tlog_root(tp_tlog_db_read, db, size, root)) != 0)
            return rc;
        *out = json_pack("{s:s, s:I, s:I, s:o, s:o, s:o}", "receiptId", q->receipt_id, "leafIndex",
                         (json_int_t)index, "treeSize", (json_int_t)size, "leafHash", b64_hash(leaf),
                         "rootHash", b64_hash(root), "proof", b64_proof(proof, n));
        return *out ? 0 : TP_ENOMEM;
    }
    if ((rc = check_size(db, q->to, "to", detail, cap)) != 0 ||
        (rc = tp_tlog_consistency_proof(tp_tlog_db_read, db, q->from, q->to, proof, &n)) != 0 ||
        (rc = tp_tlog_root(tp_tlog_db_read, db, q->from, old_root)) != 0 ||
        (rc = tp_tlog_root(tp_tlog_db_read, db, q->to, root)) != 0)
        return rc;
    *out = json_pack("{s:I, s:I, s:o, s:o, s:o}", "from", (json_int_t)q->from, "to",
                     (json_int_t)q->to, "fromRoot", b64_hash(old_root), "toRoot", b64_hash(root),
                     "proof", b64_proof(proof, n));
    return *out ? 0 : TP_ENOMEM;
}

static int hook_tlog(void *opaque, const tp_tlog_query *q, char **json_out, char *detail, size_t cap) {
    tp_ingress_backend *b = opaque;
    json_t *out = NULL;
    *json_out = NULL;
    detail[0] = '\0';
    conn *c = conn_acquire(b);
    if (!c)
        return TP_EDB;
    int rc = tlog_answer(c->db, q, &out, detail, cap);
    if (rc == 0) {
        *json_out = json_dumps(out, JSON_COMPACT);
        if (!*json_out)
            rc = TP_ENOMEM;
    }
    json_decref(out);
    conn_release(b, c, rc == TP_ENOT_FOUND || rc == TP_EINVAL ? 0 : rc);
    return rc;
}

static int hook_tenants(void *opaque, const tp_tenant_ask *q, char **json_out) {
    tp_ingress_backend *b = opaque;
    int rc;
    *json_out = NULL;
    conn *c = conn_acquire(b);
    if (!c)
        return TP_EDB;
    if (q->list) {
        tp_tenant_query tq = {.state = q->state, .plan = q->plan,
                              .owner = q->owner[0] ? q->owner : NULL, .limit = q->limit,
                              .cursor = q->cursor};
        rc = tp_stages_tenant_list_json(c->db, &tq, json_out);
    } else {
        rc = tp_stages_tenant_json(c->db, q->slug, q->owner[0] ? q->owner : NULL, json_out);
    }
    conn_release(b, c, rc == TP_ENOT_FOUND || rc == TP_EINVAL ? 0 : rc);
    return rc;
}

/* A tenant action's dry run. A self-serve caller sees only the tenants it owns: anyone else's
 * is TENANT_NOT_FOUND, as on GET /api/tenants/{slug}. The admin role sees every tenant there, so
 * here too (sees_all): someone else's tenant goes to the policy, which answers NOT_TENANT_OWNER
 * (403) for a self-serve request, instead of a 404 for a tenant the GET shows. */
static int hook_action_preview(void *opaque, const tp_request *req, bool sees_all,
                               tp_ingress_preview *out) {
    tp_ingress_backend *b = opaque;
    tp_action_preview pv;
    int rc = 0;
    memset(out, 0, sizeof(*out));
    memset(&pv, 0, sizeof(pv));
    conn *c = conn_acquire(b);
    if (!c)
        return TP_EDB;
    if (req->source == TP_SOURCE_SELF_SERVE_API && !sees_all) {
        const char *params[2] = {req->tenant.slug, req->actor.id};
        char one[8];
        bool mine = false;
        rc = tp_db_query_text(c->db, "SELECT 1 FROM tenants WHERE slug = $1 AND owner_id = $2", 2,
                              params, one, sizeof(one), &mine);
        if (rc == 0 && !mine) {
            conn_release(b, c, 0);
            out->verdict = TP_ENOT_FOUND;
            snprintf(out->reason, sizeof(out->reason), "TENANT_NOT_FOUND");
            snprintf(out->message, sizeof(out->message), "no such tenant");
            return 0;
        }
    }
    if (rc == 0)
        rc = tp_ingress_opa_action_preview(b->opa, c->db, req, &pv);
    conn_release(b, c, rc);
    if (rc != 0) {
        tp_action_preview_release(&pv);
        return rc;
    }
    out->verdict = pv.reason == TP_PREVIEW_ALLOWED           ? 0
                   : pv.reason == TP_PREVIEW_TENANT_NOT_FOUND ? TP_ENOT_FOUND
                   : pv.reason == TP_PREVIEW_INVALID_STATE    ? TP_ECONFLICT
                   : pv.reason == TP_PREVIEW_POLICY_DENIED    ? TP_EPOLICY_DENIED
                                                              : TP_EINVAL;
    snprintf(out->reason, sizeof(out->reason), "%s", tp_preview_reason_name(pv.reason));
    snprintf(out->message, sizeof(out->message), "%s", pv.message);
    out->policy_asked = pv.policy_asked;
    out->decision = pv.decision;
    snprintf(out->tenant_status, sizeof(out->tenant_status), "%s", pv.tenant_status);
    out->changes_json = pv.changes_json; /* moved */
    return 0;
}

static int hook_ready(void *opaque, char *detail, size_t cap) {
    tp_ingress_backend *b = opaque;
    char kerr[256];
    if (tp_kafka_probe_check(b->probe, PROBE_TIMEOUT_MS, kerr, sizeof(kerr)) != 0) {
        snprintf(detail, cap, "kafka: %s", kerr);
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
    pthread_condattr_init(&b->dr_cattr);
    pthread_condattr_setclock(&b->dr_cattr, CLOCK_MONOTONIC); /* a wall-clock step never stretches a wait */
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
    if ((rc = tp_kafka_probe_new(cfg, &b->probe, errstr, errstr_size)) != 0)
        goto out_free;
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
    hooks->tlog = hook_tlog;
    hooks->tenants = hook_tenants;
    hooks->action_preview = hook_action_preview;
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
    tp_kafka_probe_free(b->probe);
    tp_ingress_opa_free(b->opa);
    tp_codec_free(b->codec);
    while (b->free_conns) {
        conn *c = b->free_conns;
        b->free_conns = c->next;
        tp_db_close(c->db);
        free(c);
    }
    pthread_mutex_destroy(&b->pool_mu);
    pthread_condattr_destroy(&b->dr_cattr);
    pthread_mutex_destroy(&b->dr_mu);
    free(b->dsn);
    free(b->topic);
    free(b);
}
