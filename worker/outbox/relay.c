/* relay.c: the transactional-outbox relay on tp-worker's loop: unpublished receipt_outbox rows →
 * Avro ProvenanceReceipt records on the receipts topic, marked published on PERSISTED delivery
 * reports. Woken by events only: a commit in this process (tp_relay_wake), a NOTIFY on
 * tp_outbox from another, a delivery report; a timer runs only to retry after a failure.
 * Fetch, produce and mark overlap: one database round at a time on a pool thread while earlier
 * rows are still being delivered. Rows in flight are tracked per tenant, so none is sent twice
 * and a tenant's rows are marked only as a delivered prefix. */
#include "tp/relay.h"
#include "outbox/outbox_int.h"
#include "tp/codec.h"
#include "tp/error.h"
#include "tp/log.h"
#include "tp/store.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define RELAY_BATCH 500
#define RELAY_INFLIGHT_MAX 4000 /* rows sent and not yet settled: above it, no fetch */
#define RELAY_RETRY_MIN_MS 100
#define RELAY_SERVE_MAX 1024    /* delivery reports served per loop turn */
#define TENANT_BUCKETS 1024
#define RECEIPT_CONTENT_TYPE "application/vnd.tenant-provisioner.receipt.v1+avro"

typedef struct tenant tenant;

typedef struct row {
    tp_receipt_record rec;
    struct tp_relay *relay;
    tenant *t;
    struct row *next; /* in its tenant's chain */
    tp_outbox_state state;
    bool markable;    /* verdict MARK: it and every earlier row of its tenant are delivered */
    bool marking;     /* in the running round's mark set */
} row;

struct tenant {
    tenant *next; /* hash bucket */
    char *id;
    int slot;
    row *head, *tail; /* unsettled rows, in sequence order */
    size_t n;
};

typedef struct db_watch {
    uv_poll_t poll;
} db_watch;

struct tp_relay {
    const tp_config *cfg;
    uv_loop_t *loop;
    tp_producer *producer;
    tp_codec *codec;
    uv_poll_t producer_poll;
    uv_idle_t more;    /* serves the rest of the delivery reports on the next loop turn */
    uv_timer_t timer;  /* retry after a failure; never armed when idle */
    int open_handles;
    tp_relay_event_fn event_fn;
    void *event_arg;

    /* The database session: owned by the pool thread while a round runs, by the loop otherwise. */
    tp_outbox_round round;
    uv_work_t work;
    bool running;
    db_watch *watch;   /* LISTEN socket watch while no round runs */
    bool backoff;      /* after a database failure: no round until the timer fires */
    int attempt;       /* consecutive failures */
    int64_t retry_max_ms;

    bool dirty;        /* there may be rows to fetch */
    bool woken_locally; /* by tp_relay_wake since the last round */
    bool need_claim;   /* rebalance the slots on the next round */
    int slot_rows[TP_OUTBOX_SLOTS];
    tenant *buckets[TENANT_BUCKETS];
    size_t n_rows;     /* unsettled rows */

    bool stopped;
    bool freeing;
    bool failed;
    uint64_t published;
};

static void kick(tp_relay *r);

/* ---- tenants and rows ---------------------------------------------------------------------- */

static unsigned bucket_of(const char *id) {
    unsigned h = 2166136261u;
    for (; *id; id++)
        h = (h ^ (unsigned char)*id) * 16777619u;
    return h % TENANT_BUCKETS;
}

static tenant *tenant_find(tp_relay *r, const char *id) {
    for (tenant *t = r->buckets[bucket_of(id)]; t; t = t->next)
        if (strcmp(t->id, id) == 0)
            return t;
    return NULL;
}

static tenant *tenant_get(tp_relay *r, const char *id, int slot) {
    tenant *t = tenant_find(r, id);
    unsigned b;
    if (t)
        return t;
    t = calloc(1, sizeof(*t));
    if (!t || !(t->id = strdup(id))) {
        free(t);
        return NULL;
    }
    t->slot = slot;
    b = bucket_of(id);
    t->next = r->buckets[b];
    r->buckets[b] = t;
    return t;
}

static void tenant_drop_if_empty(tp_relay *r, tenant *t) {
    tenant **pp;
    if (t->head)
        return;
    for (pp = &r->buckets[bucket_of(t->id)]; *pp; pp = &(*pp)->next)
        if (*pp == t) {
            *pp = t->next;
            break;
        }
    free(t->id);
    free(t);
}

static void row_free(row *rw) {
    tp_receipt_record_release(&rw->rec);
    free(rw);
}

/* Unlinks rw (in t's chain) and frees it. */
static void chain_remove(tp_relay *r, tenant *t, row *rw) {
    row **pp, *prev = NULL;
    for (pp = &t->head; *pp; prev = *pp, pp = &(*pp)->next)
        if (*pp == rw) {
            *pp = rw->next;
            if (t->tail == rw)
                t->tail = prev;
            break;
        }
    t->n--;
    r->n_rows--;
    r->slot_rows[t->slot]--;
    row_free(rw);
}

typedef enum retry_kind {
    RETRY_SOON,    /* a full producer queue: the next round in RELAY_RETRY_MIN_MS */
    RETRY_LATER,   /* rows left behind (unreadable, undelivered): in outbox.retry_max_ms */
    RETRY_BACKOFF, /* a database failure: nothing runs before it, doubling up to the cap */
} retry_kind;

static void arm_timer(tp_relay *r, retry_kind kind);

/* Applies the verdicts to t's chain: failed rows and those behind them are dropped once all of
 * them reported (they are fetched again, in order). Returns whether rows are ready to mark. */
static bool settle(tp_relay *r, tenant *t) {
    tp_outbox_state st[64], *states = st;
    tp_outbox_verdict vd[64], *verdicts = vd;
    size_t i = 0;
    bool mark = false, dropped = false;
    row *rw, *next;
    if (t->n > 64) {
        states = malloc(t->n * sizeof(*states));
        verdicts = malloc(t->n * sizeof(*verdicts));
        if (!states || !verdicts) {
            if (states != st)
                free(states);
            if (verdicts != vd)
                free(verdicts);
            return false; /* settled on the next report */
        }
    }
    for (rw = t->head; rw; rw = rw->next)
        states[i++] = rw->state;
    tp_outbox_verdicts(states, t->n, verdicts);
    for (i = 0, rw = t->head; rw; rw = next, i++) {
        next = rw->next;
        rw->markable = verdicts[i] == TP_OUTBOX_MARK;
        if (rw->markable && !rw->marking)
            mark = true;
        else if (verdicts[i] == TP_OUTBOX_DROP && !rw->marking) {
            chain_remove(r, t, rw);
            dropped = true;
        }
    }
    if (states != st)
        free(states);
    if (verdicts != vd)
        free(verdicts);
    if (dropped) {
        /* Sent again after a pause: a failed delivery usually means Kafka is in trouble. */
        if (!r->stopped)
            arm_timer(r, RETRY_LATER);
        tenant_drop_if_empty(r, t);
    }
    return mark;
}

/* ---- events towards the worker ---------------------------------------------------------------- */

static void notify_owner(tp_relay *r) {
    if (!r->freeing && r->event_fn && (r->stopped || r->failed))
        r->event_fn(r->event_arg);
}

/* ---- delivery reports ---------------------------------------------------------------------- */

static void on_delivered(void *opaque, int err, int32_t partition, int64_t offset) {
    row *rw = opaque;
    tp_relay *r = rw->relay;
    (void)partition;
    (void)offset;
    rw->state = err == 0 ? TP_OUTBOX_DELIVERED : TP_OUTBOX_FAILED;
    if (err != 0)
        tp_log_warn("relay", "receipt %s (tenant %s, sequence %lld) not delivered (%s): it and the "
                    "tenant's later receipts go out again", rw->rec.receipt_id, rw->rec.tenant_id,
                    (long long)rw->rec.sequence, tp_strerror(err));
    if (err == TP_EKAFKA_FATAL && !r->failed) {
        r->failed = true;
        tp_log_error("relay", "the relay's producer hit a fatal error: it stops publishing");
    }
    if (r->freeing)
        return;
    settle(r, rw->t);
    kick(r);
    notify_owner(r);
}

static void on_more(uv_idle_t *h);

static void serve_reports(tp_relay *r) {
    if (tp_producer_serve(r->producer, RELAY_SERVE_MAX) >= RELAY_SERVE_MAX && !r->freeing)
        uv_idle_start(&r->more, on_more); /* the wake-up fd will not fire for what is left */
    else
        uv_idle_stop(&r->more);
}

static void on_more(uv_idle_t *h) { serve_reports(h->data); }

static void on_producer_readable(uv_poll_t *h, int status, int events) {
    (void)status;
    (void)events;
    serve_reports(h->data);
}

/* ---- sending ------------------------------------------------------------------------------- */

/* Sends the fetched rows that are not in flight yet, keeping each tenant's order: a tenant with
 * a failed row waits until that row was dropped; an unreadable or unencodable row holds back its
 * tenant's later rows; a full queue ends the batch. Returns how many were sent. */
static size_t send_rows(tp_relay *r, tp_outbox_round *round) {
    const char *topic = tp_config_get(r->cfg, "topic.receipts");
    const char *blocked = NULL;
    size_t sent = 0;
    for (size_t i = 0; i < round->n_rows; i++) {
        tp_outbox_row *src = &round->rows[i];
        tenant *t = tenant_find(r, src->rec.tenant_id);
        unsigned char *buf = NULL;
        size_t len = 0;
        row *rw;
        int rc;
        if (blocked && strcmp(blocked, src->rec.tenant_id) == 0)
            continue;
        blocked = NULL;
        if (t && t->tail && src->rec.sequence <= t->tail->rec.sequence)
            continue; /* in flight, or delivered and not marked yet */
        if (t) {
            bool failed = false;
            for (row *x = t->head; x; x = x->next)
                failed = failed || x->state == TP_OUTBOX_FAILED;
            if (failed)
                continue; /* goes out again once the failed row is dropped */
        }
        if (src->bad) {
            tp_log_error("relay", "outbox row %s is unreadable: tenant %s's receipts wait from here on",
                         src->rec.receipt_id, src->rec.tenant_id);
            blocked = src->rec.tenant_id;
            arm_timer(r, RETRY_LATER);
            continue;
        }
        rc = tp_codec_encode_receipt(r->codec, &src->rec, &buf, &len);
        if (rc != 0) {
            tp_log_error("relay", "receipt %s does not encode (%s): tenant %s's receipts wait from here on",
                         src->rec.receipt_id, tp_strerror(rc), src->rec.tenant_id);
            blocked = src->rec.tenant_id;
            arm_timer(r, RETRY_LATER);
            continue;
        }
        rw = calloc(1, sizeof(*rw));
        if (!t)
            t = tenant_get(r, src->rec.tenant_id, src->slot);
        if (!rw || !t) {
            free(rw);
            free(buf);
            tp_log_error("relay", "out of memory: the rest of the batch waits");
            arm_timer(r, RETRY_SOON);
            break;
        }
        rw->rec = src->rec; /* takes the strings over */
        memset(&src->rec, 0, sizeof(src->rec));
        rw->relay = r;
        rw->t = t;
        rw->state = TP_OUTBOX_SENT;
        {
            tp_kafka_header hdrs[3] = {
                {"receipt-id", rw->rec.receipt_id, strlen(rw->rec.receipt_id)},
                {"action-type", rw->rec.action_type, strlen(rw->rec.action_type)},
                {"content-type", RECEIPT_CONTENT_TYPE, strlen(RECEIPT_CONTENT_TYPE)},
            };
            rc = tp_producer_send(r->producer, topic, rw->rec.tenant_id, strlen(rw->rec.tenant_id),
                                  buf, len, hdrs, 3, on_delivered, rw);
        }
        free(buf);
        if (rc != 0) {
            tp_log_warn("relay", "receipt %s not sent (%s); later rows wait for the next round",
                        rw->rec.receipt_id, tp_strerror(rc));
            row_free(rw);
            tenant_drop_if_empty(r, t);
            if (rc == TP_EKAFKA_FATAL)
                r->failed = true;
            else
                arm_timer(r, RETRY_SOON);
            break; /* keeps every tenant's order: the rest goes out next round */
        }
        if (t->tail)
            t->tail->next = rw;
        else
            t->head = rw;
        t->tail = rw;
        t->n++;
        r->n_rows++;
        r->slot_rows[t->slot]++;
        sent++;
    }
    return sent;
}

/* ---- database rounds ------------------------------------------------------------------------- */

static void watch_closed(uv_handle_t *h) { free(h->data); }

static void watch_close(tp_relay *r) {
    if (!r->watch)
        return;
    r->watch->poll.data = r->watch;
    uv_close((uv_handle_t *)&r->watch->poll, watch_closed);
    r->watch = NULL;
}

static void on_db_readable(uv_poll_t *h, int status, int events);

static void watch_start(tp_relay *r) {
    int fd;
    if (!r->round.db || r->freeing)
        return;
    if (!r->watch) {
        fd = tp_db_socket(r->round.db);
        if (fd < 0)
            return;
        r->watch = calloc(1, sizeof(*r->watch));
        if (!r->watch)
            return;
        if (uv_poll_init(r->loop, &r->watch->poll, fd) != 0) {
            free(r->watch);
            r->watch = NULL;
            return;
        }
    }
    r->watch->poll.data = r;
    uv_poll_start(&r->watch->poll, UV_READABLE, on_db_readable);
}

static void session_lost(tp_relay *r, const char *why, int rc) {
    tp_log_warn("relay", "%s failed (%s): reconnecting", why, tp_strerror(rc));
    watch_close(r);
    tp_db_close(r->round.db); /* its advisory locks go with the session */
    r->round.db = NULL;
    memset(r->round.held, 0, sizeof(r->round.held));
    r->round.backend_pid = 0;
    r->need_claim = true;
    r->dirty = true;
    arm_timer(r, RETRY_BACKOFF);
}

/* Reads notifications that arrived (during a round, or while idle). */
static void take_notifies(tp_relay *r) {
    int n = 0, rc;
    if (!r->round.db)
        return;
    rc = tp_db_consume_notifies(r->round.db, &n);
    if (rc != 0) {
        session_lost(r, "listening", rc);
        return;
    }
    if (n > 0) {
        r->dirty = true;
        r->need_claim = true; /* a relay joined or gave slots back, or a commit somewhere */
    }
}

static void on_db_readable(uv_poll_t *h, int status, int events) {
    tp_relay *r = h->data;
    (void)events;
    if (status < 0) {
        session_lost(r, "polling the postgres socket", TP_EDB);
        return;
    }
    take_notifies(r);
    kick(r);
}

static void on_timer(uv_timer_t *t) {
    tp_relay *r = t->data;
    r->backoff = false;
    r->dirty = true;
    r->need_claim = true;
    kick(r);
}

/* Arms the one timer the relay has (never when idle); never re-arms a running one. */
static void arm_timer(tp_relay *r, retry_kind kind) {
    int64_t delay = RELAY_RETRY_MIN_MS;
    if (r->freeing)
        return;
    if (kind == RETRY_BACKOFF) {
        r->backoff = true;
        r->attempt++;
        for (int i = 1; i < r->attempt && delay < r->retry_max_ms; i++)
            delay *= 2;
    } else if (kind == RETRY_LATER) {
        delay = r->retry_max_ms;
    }
    if (delay > r->retry_max_ms)
        delay = r->retry_max_ms;
    if (!uv_is_active((uv_handle_t *)&r->timer))
        uv_timer_start(&r->timer, on_timer, (uint64_t)delay, 0);
}

/* Appends the receipt ids ready to be marked to a "{...}" array; flags their rows. */
static char *collect_marks(tp_relay *r) {
    size_t cap = 256, len = 1, n = 0;
    char *arr = malloc(cap);
    if (!arr)
        return NULL;
    arr[0] = '{';
    for (int b = 0; b < TENANT_BUCKETS; b++)
        for (tenant *t = r->buckets[b]; t; t = t->next)
            for (row *rw = t->head; rw && rw->markable; rw = rw->next) {
                size_t need = strlen(rw->rec.receipt_id) + 4;
                if (rw->marking)
                    continue;
                if (len + need + 2 > cap) {
                    char *bigger;
                    while (len + need + 2 > cap)
                        cap *= 2;
                    bigger = realloc(arr, cap);
                    if (!bigger)
                        goto out; /* what is collected so far is marked */
                    arr = bigger;
                }
                /* receipt ids are prov_<uuid>: no quotes or commas to escape */
                len += (size_t)snprintf(arr + len, cap - len, "%s\"%s\"", n ? "," : "", rw->rec.receipt_id);
                rw->marking = true;
                n++;
            }
out:
    if (n == 0) {
        free(arr);
        return NULL;
    }
    arr[len++] = '}';
    arr[len] = '\0';
    return arr;
}

static void round_work(uv_work_t *req) { tp_outbox_round_run(req->data); }
static void round_after(uv_work_t *req, int status);

/* Starts a database round when there is something to do and none runs: marks first, then a
 * fetch when something may be waiting. Loop thread. */
static void kick(tp_relay *r) {
    tp_outbox_round *round = &r->round;
    bool fetch;
    if (r->running || r->freeing || r->backoff)
        return;
    fetch = r->dirty && !r->stopped && !r->failed && r->n_rows < RELAY_INFLIGHT_MAX;
    round->mark_ids = collect_marks(r);
    if (!round->mark_ids && !fetch && !(round->db == NULL && !r->stopped && r->need_claim))
        return;
    round->cfg = r->cfg;
    round->fetch = fetch;
    round->limit = RELAY_BATCH + (int)r->n_rows; /* rows in flight come back too: skipped */
    round->claim = (r->need_claim || round->db == NULL) && !r->stopped;
    {
        /* Rows committed here may belong to slots another relay holds: tell the others, until
         * the stage transaction NOTIFYs by itself. */
        int held = 0;
        for (int s = 0; s < TP_OUTBOX_SLOTS; s++)
            held += round->held[s];
        round->notify_others = fetch && r->woken_locally && held < TP_OUTBOX_SLOTS;
        if (fetch)
            r->woken_locally = false;
    }
    for (int s = 0; s < TP_OUTBOX_SLOTS; s++)
        round->releasable[s] = r->slot_rows[s] == 0;
    if (fetch)
        r->dirty = false;
    if (round->claim)
        r->need_claim = false;
    if (r->watch)
        uv_poll_stop(&r->watch->poll); /* the session belongs to the pool thread now */
    r->running = true;
    r->work.data = round;
    uv_queue_work(r->loop, &r->work, round_work, round_after);
}

static void unflag_marks(tp_relay *r) {
    for (int b = 0; b < TENANT_BUCKETS; b++)
        for (tenant *t = r->buckets[b]; t; t = t->next)
            for (row *rw = t->head; rw; rw = rw->next)
                rw->marking = false;
}

/* Removes the rows of the finished mark set (each a prefix of its tenant's chain). */
static void settle_marked(tp_relay *r) {
    for (int b = 0; b < TENANT_BUCKETS; b++) {
        tenant *t = r->buckets[b], *next;
        for (; t; t = next) {
            next = t->next;
            while (t->head && t->head->marking) {
                r->published++;
                chain_remove(r, t, t->head);
            }
            settle(r, t);
            tenant_drop_if_empty(r, t);
        }
    }
}

static void relay_release(tp_relay *r);

static void round_after(uv_work_t *req, int status) {
    tp_outbox_round *round = req->data;
    tp_relay *r = (tp_relay *)((char *)round - offsetof(tp_relay, round));
    (void)status;
    r->running = false;
    if (r->freeing) {
        tp_outbox_round_rows_free(round);
        free(round->mark_ids);
        round->mark_ids = NULL;
        relay_release(r);
        return;
    }
    if (round->rc != 0) {
        tp_log_warn("relay", "outbox round: %s: %s (%s)", round->failed_step ? round->failed_step : "?",
                    tp_strerror(round->rc), round->db ? tp_db_errmsg(round->db) : "not connected");
        unflag_marks(r); /* marked again later: the UPDATE only touches unpublished rows */
        if (r->stopped)
            /* Draining: what is delivered and unmarked is published again after the restart. */
            for (int b = 0; b < TENANT_BUCKETS; b++)
                for (tenant *t = r->buckets[b]; t; t = t->next)
                    for (row *rw = t->head; rw; rw = rw->next)
                        if (rw->state == TP_OUTBOX_DELIVERED)
                            rw->state = TP_OUTBOX_FAILED;
        session_lost(r, round->failed_step ? round->failed_step : "outbox round", round->rc);
        for (int b = 0; b < TENANT_BUCKETS; b++) {
            tenant *t = r->buckets[b], *next;
            for (; t; t = next) {
                next = t->next;
                settle(r, t);
                tenant_drop_if_empty(r, t);
            }
        }
        r->dirty = true;
    } else {
        r->attempt = 0;
        if (round->mark_ids)
            settle_marked(r);
        if (round->n_rows) {
            size_t sent = r->stopped ? 0 : send_rows(r, round);
            if (sent > 0 && round->n_rows >= (size_t)round->limit)
                r->dirty = true; /* a full batch: there is more */
        }
        take_notifies(r);
        watch_start(r);
    }
    tp_outbox_round_rows_free(round);
    free(round->mark_ids);
    round->mark_ids = NULL;
    kick(r);
    notify_owner(r);
}

/* ---- life cycle ------------------------------------------------------------------------------ */

static void copy_key(const char *key, const char *value, void *opaque) {
    char err[64];
    (void)tp_config_set(opaque, key, value, err, sizeof(err));
}

int tp_relay_new(const tp_config *cfg, void *loop, tp_relay **out) {
    char err[256];
    tp_relay *r = calloc(1, sizeof(*r));
    tp_config *pcfg = tp_config_new();
    int rc, fd;
    if (!r || !pcfg) {
        free(r);
        tp_config_free(pcfg);
        return TP_ENOMEM;
    }
    r->cfg = cfg;
    r->loop = loop;
    r->retry_max_ms = tp_config_get_int(cfg, "outbox.retry_max_ms");
    if (r->retry_max_ms < RELAY_RETRY_MIN_MS)
        r->retry_max_ms = RELAY_RETRY_MIN_MS;
    /* The relay's own producer never gives a record up (message.timeout.ms = 0): a receipt that
     * timed out while a later one of its tenant got through would reach the topic out of order. */
    tp_config_foreach(cfg, "", copy_key, pcfg);
    tp_config_set(pcfg, "kafka.message.timeout.ms", "0", err, sizeof(err));
    rc = tp_producer_new(pcfg, &r->producer, err, sizeof(err));
    tp_config_free(pcfg);
    if (rc != 0) {
        tp_log_error("relay", "producer: %s", err);
        free(r);
        return rc;
    }
    r->codec = tp_codec_new(tp_config_get(cfg, "codec.schema_dir"), "", err, sizeof(err));
    fd = tp_producer_wakeup_fd(r->producer);
    if (!r->codec || fd < 0) {
        rc = r->codec ? TP_EIO : TP_ECONFIG;
        tp_log_error("relay", "%s", r->codec ? "producer wake-up pipe: cannot create" : err);
        tp_codec_free(r->codec);
        tp_producer_free(r->producer, 0);
        free(r);
        return rc;
    }
    uv_timer_init(r->loop, &r->timer);
    r->timer.data = r;
    uv_idle_init(r->loop, &r->more);
    r->more.data = r;
    uv_poll_init(r->loop, &r->producer_poll, fd);
    r->producer_poll.data = r;
    uv_poll_start(&r->producer_poll, UV_READABLE, on_producer_readable);
    r->open_handles = 3;
    /* The first round connects, LISTENs, takes slots and publishes what is waiting. */
    r->dirty = true;
    r->need_claim = true;
    kick(r);
    *out = r;
    return 0;
}

void tp_relay_set_event_cb(tp_relay *r, tp_relay_event_fn fn, void *arg) {
    if (!r)
        return;
    r->event_fn = fn;
    r->event_arg = arg;
}

void tp_relay_wake(tp_relay *r) {
    if (!r || r->stopped || r->freeing)
        return;
    r->dirty = true;
    r->woken_locally = true;
    kick(r);
}

void tp_relay_stop(tp_relay *r) {
    if (!r)
        return;
    r->stopped = true; /* rows in flight still settle; nothing new is fetched */
    if (!r->backoff)
        uv_timer_stop(&r->timer);
    kick(r);
}

bool tp_relay_idle(const tp_relay *r) { return !r || (!r->running && r->n_rows == 0); }

bool tp_relay_failed(const tp_relay *r) { return r && r->failed; }

static void relay_closed(uv_handle_t *h) {
    tp_relay *r = h->data;
    if (--r->open_handles == 0 && !r->running) {
        tp_codec_free(r->codec);
        free(r);
    }
}

/* Frees rows, tenants, the session and the handles (the last close callback frees r). */
static void relay_release(tp_relay *r) {
    for (int b = 0; b < TENANT_BUCKETS; b++) {
        tenant *t = r->buckets[b], *next;
        for (; t; t = next) {
            next = t->next;
            while (t->head) {
                row *rw = t->head;
                t->head = rw->next;
                row_free(rw);
            }
            free(t->id);
            free(t);
        }
        r->buckets[b] = NULL;
    }
    watch_close(r);
    tp_db_close(r->round.db);
    r->round.db = NULL;
    if (r->open_handles == 0) {
        tp_codec_free(r->codec);
        free(r);
    }
}

void tp_relay_free(tp_relay *r) {
    if (!r)
        return;
    tp_log_info("relay", "stopped after publishing %llu receipts", (unsigned long long)r->published);
    r->freeing = true;
    uv_timer_stop(&r->timer);
    uv_idle_stop(&r->more);
    uv_poll_stop(&r->producer_poll);
    /* What is still queued fails into on_delivered (unmarked rows are published again later). */
    tp_producer_free(r->producer, 5000);
    r->producer = NULL;
    uv_close((uv_handle_t *)&r->timer, relay_closed);
    uv_close((uv_handle_t *)&r->more, relay_closed);
    uv_close((uv_handle_t *)&r->producer_poll, relay_closed);
    if (!r->running)
        relay_release(r);
    /* else round_after releases once the pool thread is done with the session */
}
