/* relay.c: the transactional-outbox relay on tp-worker's loop: unpublished receipt_outbox rows →
 * Avro ProvenanceReceipt records on the receipts topic (with their transparency-log leaf index as
 * the leaf-index header: a round numbers the committed, unnumbered receipts in the one
 * transaction that also marks, and only numbered ones are fetched), marked published on
 * PERSISTED delivery reports; after marks, at most once per tlog.checkpoint_interval_ms, a pool
 * job of its own (never two at once, never in a publishing round's way) extends the log's tree
 * and signs a checkpoint, which goes to the checkpoints topic. Woken by events only: a commit in
 * this process (tp_relay_wake), a NOTIFY on tp_outbox from another, a delivery report; a timer
 * runs only to retry after a failure, and, while this relay holds fewer than every slot, to look
 * for slots a dead relay left behind.
 * Fetch, produce and mark overlap: one database round at a time on a pool thread while earlier
 * rows are still being delivered. Rows in flight are tracked per tenant, so none is sent twice
 * and a tenant's rows are marked only as a delivered prefix. */
#include "tp/relay.h"
#include "outbox/outbox_int.h"
#include "tp/codec.h"
#include "tp/error.h"
#include "tp/log.h"
#include "tp/metrics.h"
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
#define RECEIPT_CONTENT_TYPE "application/vnd.tenant-provisioner.receipt.v1+avro"

typedef tp_outbox_sent row;
typedef tp_outbox_tenant tenant;

/* A uv_poll on a file descriptor, freed in its close callback. */
typedef struct fd_watch {
    uv_poll_t poll;
} fd_watch;

struct tp_relay {
    const tp_config *cfg;
    uv_loop_t *loop;
    tp_producer *producer;
    tp_codec *codec;
    fd_watch *producer_watch; /* the producer's wake-up fd */
    uv_idle_t more;    /* serves the rest of the delivery reports on the next loop turn */
    uv_timer_t timer;  /* retry after a failure; never armed when idle */
    uv_timer_t mark_timer; /* outbox.mark_delay_ms (tests only): marks held back are due */
    uv_timer_t checkpoint_timer; /* a checkpoint is owed and its interval not over yet */
    uv_timer_t claim_timer; /* armed only while this relay holds fewer than every slot */
    int open_handles;
    tp_relay_event_fn event_fn;
    void *event_arg;

    /* The database session: owned by the pool thread while a round runs, by the loop otherwise. */
    tp_outbox_round round;
    uv_work_t work;
    bool running;
    fd_watch *watch;   /* LISTEN socket watch while no round runs */
    bool backoff;      /* after a database failure: no round until the timer fires */
    int attempt;       /* consecutive failures */
    int64_t retry_max_ms;
    int64_t mark_delay_ms;
    int64_t claim_check_ms; /* outbox.claim_check_ms */

    bool dirty;        /* there may be rows to fetch */
    bool woken_locally; /* by tp_relay_wake since the last round */
    bool need_claim;   /* rebalance the slots on the next round */
    bool reconcile_wait; /* a reconciliation failed (Kafka): none before the timer fires */
    bool want_reconcile[TP_OUTBOX_SLOTS]; /* a delivery failed: the record may be there anyway */
    tp_outbox_inflight fl;
    /* The fetch's cursor: once a round fetched every unpublished row of its slots below the
     * log's next leaf N and each went out (or was already out), later rounds fetch from leaf N
     * on, for as long as the fetched slots stay fetch_mask. Before it, every round read again
     * the rows still in flight or awaiting their mark, to skip them: 2.35 rows fetched per row
     * sent at 230 provisionings/s (each row a payload to read and parse). Rewound to 0 when a
     * row is dropped (it goes out again), the slots change or the session is lost. */
    int64_t fetch_from;
    uint32_t fetch_mask;
    uint32_t fetch_epoch;  /* counts the rewinds */
    uint32_t round_epoch;  /* fetch_epoch when the running round was started */

    /* What the topic positions may say (see tp_outbox_position). */
    int n_parts;       /* partitions seen (reports, reconciliation) */
    int64_t frontier[TP_OUTBOX_PARTITIONS_MAX]; /* last offset reported per partition + 1 */
    int64_t stored[TP_OUTBOX_SLOTS][TP_OUTBOX_PARTITIONS_MAX]; /* last written per slot */
    tp_outbox_pos *pos; /* the running round's positions (TP_OUTBOX_SLOTS * PARTITIONS_MAX) */

    /* The transparency log's checkpoints: a pool job of their own, on a connection of their own. */
    tp_signer *signer;         /* NULL: no key, no checkpoints (logged once) */
    int64_t checkpoint_interval_ms;
    uint64_t last_checkpoint_ms; /* loop time the last checkpoint job started */
    bool checkpoint_owed;      /* receipts were marked published since the last job started */
    tp_outbox_checkpoint_job cp_job; /* owned by the pool thread while cp_running */
    uv_work_t cp_work;
    bool cp_running;

    bool stopped;
    bool freeing;
    bool replacing;    /* the producer is being replaced: its reports only record their state */
    bool failed;
    uint64_t published;
};

static void kick(tp_relay *r);

typedef enum retry_kind {
    RETRY_SOON,    /* a full producer queue: the next round in RELAY_RETRY_MIN_MS */
    RETRY_LATER,   /* rows left behind (unreadable, undelivered): in outbox.retry_max_ms */
    RETRY_BACKOFF, /* a database failure: nothing runs before it, doubling up to the cap */
} retry_kind;

static void arm_timer(tp_relay *r, retry_kind kind);

/* The next fetch reads every unpublished row of the slots again. */
static void rewind_fetch(tp_relay *r) {
    r->fetch_from = 0;
    r->fetch_mask = 0;
    r->fetch_epoch++;
}

/* Settles t after a report or a mark; failed rows dropped are sent again after a pause (a
 * failed delivery usually means Kafka is in trouble). */
static bool settle(tp_relay *r, tenant *t) {
    bool dropped = false, mark = tp_outbox_settle(&r->fl, t, &dropped);
    if (dropped)
        rewind_fetch(r);
    if (dropped && !r->stopped)
        arm_timer(r, RETRY_LATER);
    tp_outbox_tenant_drop_if_empty(&r->fl, t);
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
    tp_relay *r = rw->owner;
    rw->state = err == 0 ? TP_OUTBOX_DELIVERED : TP_OUTBOX_FAILED;
    if (err == 0)
        tp_metrics_receipt_published();
    if (err == 0 && partition >= 0 && partition < TP_OUTBOX_PARTITIONS_MAX && offset >= 0) {
        rw->partition = partition;
        rw->offset = offset;
        rw->delivered_ms = (int64_t)uv_now(r->loop);
        if (offset + 1 > r->frontier[partition])
            r->frontier[partition] = offset + 1;
        if (partition + 1 > r->n_parts)
            r->n_parts = partition + 1;
    } else if (err == 0) {
        rw->partition = -1; /* no position is ever derived from it */
    }
    if (err != 0) {
        tp_log_warn("relay", "receipt %s (tenant %s, sequence %lld) not delivered (%s): it and the "
                    "tenant's later receipts go out again", rw->rec.receipt_id, rw->rec.tenant_id,
                    (long long)rw->rec.sequence, tp_strerror(err));
        /* It may have reached the topic all the same: reconcile the slot before it goes again. */
        r->want_reconcile[rw->t->slot] = true;
    }
    if (err == TP_EKAFKA_FATAL && !r->failed) {
        r->failed = true;
        tp_log_error("relay", "the relay's producer hit a fatal error: it stops publishing");
    }
    if (r->freeing || r->replacing)
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

static void watch_closed(uv_handle_t *h) { free(h->data); }

static void fd_watch_close(fd_watch **w) {
    if (!*w)
        return;
    (*w)->poll.data = *w;
    uv_close((uv_handle_t *)&(*w)->poll, watch_closed);
    *w = NULL;
}

static int fd_watch_open(tp_relay *r, fd_watch **w, int fd) {
    *w = calloc(1, sizeof(**w));
    if (!*w)
        return TP_ENOMEM;
    if (uv_poll_init(r->loop, &(*w)->poll, fd) != 0) {
        free(*w);
        *w = NULL;
        return TP_EIO;
    }
    (*w)->poll.data = r;
    return 0;
}

static void copy_key(const char *key, const char *value, void *opaque) {
    char err[64];
    (void)tp_config_set(opaque, key, value, err, sizeof(err));
}

/* A producer of the relay's own and the watch on its wake-up fd. */
static int producer_open(tp_relay *r) {
    char err[256];
    tp_config *pcfg = tp_config_new();
    int rc, fd;
    if (!pcfg)
        return TP_ENOMEM;
    /* The relay's own producer never gives a record up (message.timeout.ms = 0): a receipt that
     * timed out while a later one of its tenant got through would reach the topic out of order. */
    tp_config_foreach(r->cfg, "", copy_key, pcfg);
    tp_config_set(pcfg, "kafka.message.timeout.ms", "0", err, sizeof(err));
    rc = tp_producer_new(pcfg, &r->producer, err, sizeof(err));
    tp_config_free(pcfg);
    if (rc != 0) {
        tp_log_error("relay", "producer: %s", err);
        r->producer = NULL;
        return rc;
    }
    fd = tp_producer_wakeup_fd(r->producer);
    if (fd < 0 || (rc = fd_watch_open(r, &r->producer_watch, fd)) != 0) {
        tp_log_error("relay", "producer wake-up pipe: cannot watch it");
        tp_producer_free(r->producer, 0);
        r->producer = NULL;
        return fd < 0 ? TP_EIO : rc;
    }
    uv_poll_start(&r->producer_watch->poll, UV_READABLE, on_producer_readable);
    return 0;
}

/* Destroys the producer: what it still holds is purged (its reports, failures, only record their
 * state: the caller forgets or frees the rows). */
static void producer_close(tp_relay *r, int flush_ms) {
    if (r->producer_watch)
        uv_poll_stop(&r->producer_watch->poll);
    fd_watch_close(&r->producer_watch);
    uv_idle_stop(&r->more);
    r->replacing = true;
    tp_producer_free(r->producer, flush_ms);
    r->producer = NULL;
    r->replacing = false;
}

/* After a lost session (its slots may have a new holder already): drops every row in flight.
 * The producer is replaced, which purges what it had not sent, so nothing of ours reaches the
 * topic after the next holder of a slot read its tail; what was delivered and not marked is
 * found by that reconciliation (ours too: a new session reconciles every slot it takes). */
static void forget_in_flight(tp_relay *r) {
    rewind_fetch(r);
    if (r->fl.n_rows == 0)
        return;
    tp_log_warn("relay", "dropping %zu receipts in flight and replacing the producer: their slots are "
                "reconciled with the topic by whoever takes them next", r->fl.n_rows);
    producer_close(r, 0);
    tp_outbox_forget_all(&r->fl);
    if (producer_open(r) != 0 && !r->failed) {
        r->failed = true;
        tp_log_error("relay", "no producer after replacing it: the relay stops publishing");
    }
}

/* ---- sending ------------------------------------------------------------------------------- */

/* Sends the fetched rows that are not in flight yet, keeping each tenant's order: a tenant with
 * a failed row waits until that row was dropped; an unreadable or unencodable row holds back its
 * tenant's later rows; a full queue ends the batch. Returns how many were sent. */
static size_t send_rows(tp_relay *r, tp_outbox_round *round, bool *all_out) {
    const char *topic = tp_config_get(r->cfg, "topic.receipts");
    const char *blocked = NULL;
    size_t sent = 0;
    bool missed = false; /* a row neither sent now nor already out */
    for (size_t i = 0; i < round->n_rows; i++) {
        tp_outbox_row *src = &round->rows[i];
        tenant *t = tp_outbox_tenant_find(&r->fl, src->rec.tenant_id);
        unsigned char *buf = NULL;
        size_t len = 0;
        row *rw;
        int rc;
        if (blocked && strcmp(blocked, src->rec.tenant_id) == 0) {
            missed = true;
            continue;
        }
        blocked = NULL;
        if (t && t->tail && src->rec.sequence <= t->tail->rec.sequence)
            continue; /* in flight, or delivered and not marked yet */
        if (t && tp_outbox_tenant_has_failed(t)) {
            missed = true;
            continue; /* goes out again once the failed row is dropped */
        }
        if (src->bad) {
            tp_log_error("relay", "outbox row %s is unreadable: tenant %s's receipts wait from here on",
                         src->rec.receipt_id, src->rec.tenant_id);
            blocked = src->rec.tenant_id;
            missed = true;
            arm_timer(r, RETRY_LATER);
            continue;
        }
        rc = tp_codec_encode_receipt(r->codec, &src->rec, &buf, &len);
        if (rc != 0) {
            tp_log_error("relay", "receipt %s does not encode (%s): tenant %s's receipts wait from here on",
                         src->rec.receipt_id, tp_strerror(rc), src->rec.tenant_id);
            blocked = src->rec.tenant_id;
            missed = true;
            arm_timer(r, RETRY_LATER);
            continue;
        }
        rw = calloc(1, sizeof(*rw));
        if (!t)
            t = tp_outbox_tenant_get(&r->fl, src->rec.tenant_id, src->slot);
        if (!rw || !t) {
            free(rw);
            free(buf);
            tp_log_error("relay", "out of memory: the rest of the batch waits");
            missed = true;
            arm_timer(r, RETRY_SOON);
            break;
        }
        char leaf[24];
        snprintf(leaf, sizeof(leaf), "%lld", (long long)src->leaf_index);
        rw->rec = src->rec; /* takes the strings over */
        memset(&src->rec, 0, sizeof(src->rec));
        rw->owner = r;
        rw->t = t;
        rw->state = TP_OUTBOX_SENT;
        rw->partition = -1;
        {
            tp_kafka_header hdrs[4] = {
                {"receipt-id", rw->rec.receipt_id, strlen(rw->rec.receipt_id)},
                {"action-type", rw->rec.action_type, strlen(rw->rec.action_type)},
                {"content-type", RECEIPT_CONTENT_TYPE, strlen(RECEIPT_CONTENT_TYPE)},
                {"leaf-index", leaf, strlen(leaf)},
            };
            rc = tp_producer_send(r->producer, topic, rw->rec.tenant_id, strlen(rw->rec.tenant_id),
                                  buf, len, hdrs, 4, on_delivered, rw);
        }
        free(buf);
        if (rc != 0) {
            tp_log_warn("relay", "receipt %s not sent (%s); later rows wait for the next round",
                        rw->rec.receipt_id, tp_strerror(rc));
            tp_outbox_sent_free(rw);
            tp_outbox_tenant_drop_if_empty(&r->fl, t);
            if (rc == TP_EKAFKA_FATAL)
                r->failed = true;
            else
                arm_timer(r, RETRY_SOON);
            missed = true;
            break; /* keeps every tenant's order: the rest goes out next round */
        }
        tp_outbox_append(&r->fl, t, rw);
        sent++;
    }
    *all_out = !missed;
    return sent;
}

/* ---- database rounds ------------------------------------------------------------------------- */

static void on_db_readable(uv_poll_t *h, int status, int events);

static void watch_start(tp_relay *r) {
    int fd;
    if (!r->round.db || r->freeing)
        return;
    if (!r->watch) {
        fd = tp_db_socket(r->round.db);
        if (fd < 0 || fd_watch_open(r, &r->watch, fd) != 0)
            return;
    }
    uv_poll_start(&r->watch->poll, UV_READABLE, on_db_readable);
}

static void session_lost(tp_relay *r, const char *why, int rc) {
    tp_log_warn("relay", "%s failed (%s): reconnecting", why, tp_strerror(rc));
    rewind_fetch(r);
    fd_watch_close(&r->watch);
    tp_db_close(r->round.db); /* its advisory locks go with the session */
    r->round.db = NULL;
    memset(r->round.held, 0, sizeof(r->round.held));
    memset(r->round.reconcile, 0, sizeof(r->round.reconcile));
    r->round.backend_pid = 0;
    r->need_claim = true;
    r->dirty = true;
    forget_in_flight(r);
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
    r->reconcile_wait = false;
    r->dirty = true;
    r->need_claim = true;
    kick(r);
}

static void on_mark_timer(uv_timer_t *t) { kick(t->data); }

/* Slots are freed silently when a relay dies for good (a worker scaled down or crashed without
 * coming back): no commit and no NOTIFY need follow, so a relay that does not hold every slot
 * looks again now and then. A relay holding all of them (the lone one) keeps no timer. */
static void on_claim_timer(uv_timer_t *t) {
    tp_relay *r = t->data;
    r->need_claim = true;
    r->dirty = true;
    kick(r);
}

static void claim_check(tp_relay *r, const tp_outbox_round *round) {
    int held = 0;
    for (int s = 0; s < TP_OUTBOX_SLOTS; s++)
        held += round->held[s];
    if (held == TP_OUTBOX_SLOTS || r->stopped || r->freeing || r->claim_check_ms <= 0)
        uv_timer_stop(&r->claim_timer);
    else
        uv_timer_start(&r->claim_timer, on_claim_timer, (uint64_t)r->claim_check_ms, 0);
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

static void round_work(uv_work_t *req) { tp_outbox_round_run(req->data); }
static void round_after(uv_work_t *req, int status);

/* The marks ready now (and the positions they allow); arms the mark timer for those held back. */
static void collect_marks(tp_relay *r, tp_outbox_round *round) {
    int64_t now = (int64_t)uv_now(r->loop), due = 0;
    bool slots[TP_OUTBOX_SLOTS];
    round->mark_ids = tp_outbox_collect_marks(&r->fl, now, r->mark_delay_ms, &due);
    round->n_pos = 0;
    if (due > 0)
        uv_timer_start(&r->mark_timer, on_mark_timer, (uint64_t)(due > now ? due - now : 0), 0);
    if (!round->mark_ids)
        return;
    for (int s = 0; s < TP_OUTBOX_SLOTS; s++)
        slots[s] = round->held[s] && !round->reconcile[s];
    round->n_pos = tp_outbox_collect_positions(&r->fl, slots, r->frontier, r->n_parts, r->stored, r->pos);
    round->pos = r->pos;
}

static void checkpoint_delivered(void *opaque, int err, int32_t partition, int64_t offset) {
    (void)opaque;
    (void)offset;
    if (err != 0)
        tp_log_warn("relay", "checkpoint not delivered (%s): the next one supersedes it",
                    tp_strerror(err));
    else
        tp_log_debug("relay", "checkpoint delivered to partition %d", (int)partition);
}

/* Publishes the checkpoint the job signed (the row in tlog_checkpoints is already durable: a lost
 * record is superseded by the next checkpoint, which is consistent with it). */
static void publish_checkpoint(tp_relay *r, tp_outbox_checkpoint_job *job) {
    tp_checkpoint_record rec = {job->cp.origin, job->cp.size, job->cp.root,
                                sizeof(job->cp.root), job->note};
    unsigned char *buf = NULL;
    size_t len = 0;
    int rc = tp_codec_encode_checkpoint(r->codec, &rec, &buf, &len);
    if (rc == 0)
        rc = tp_producer_send(r->producer, tp_config_get(r->cfg, "topic.checkpoints"), rec.origin,
                              strlen(rec.origin), buf, len, NULL, 0, checkpoint_delivered, NULL);
    free(buf);
    if (rc != 0)
        tp_log_warn("relay", "checkpoint of size %lld not sent: %s", (long long)job->cp.size,
                    tp_strerror(rc));
    else
        tp_log_info("relay", "signed checkpoint: %lld receipts in the log", (long long)job->cp.size);
}

static void checkpoint_work(uv_work_t *req) { tp_outbox_checkpoint_run(req->data); }
static void checkpoint_after(uv_work_t *req, int status);
static void on_checkpoint_timer(uv_timer_t *t);

/* Starts the checkpoint job when receipts were marked since the last one started, none runs and
 * its interval is over; when it is not over yet, the timer comes back for it. Loop thread. */
static void checkpoint_kick(tp_relay *r) {
    uint64_t now, next;
    if (!r->signer || !r->checkpoint_owed || r->cp_running || r->failed || r->freeing)
        return;
    now = uv_now(r->loop);
    next = r->last_checkpoint_ms + (uint64_t)r->checkpoint_interval_ms;
    if (r->last_checkpoint_ms != 0 && now < next) {
        if (!uv_is_active((uv_handle_t *)&r->checkpoint_timer))
            uv_timer_start(&r->checkpoint_timer, on_checkpoint_timer, next - now, 0);
        return;
    }
    /* Marks committed from here on are owed the next one: this job may not see them. */
    r->checkpoint_owed = false;
    r->last_checkpoint_ms = now ? now : 1;
    r->cp_job.cfg = r->cfg;
    r->cp_job.signer = r->signer;
    r->cp_running = true;
    r->cp_work.data = &r->cp_job;
    uv_queue_work(r->loop, &r->cp_work, checkpoint_work, checkpoint_after);
}

static void on_checkpoint_timer(uv_timer_t *t) { checkpoint_kick(t->data); }

/* Starts a database round when there is something to do and none runs: the marks ready, and a
 * fetch (after numbering what waits) when something may be waiting. Loop thread. */
static void kick(tp_relay *r) {
    tp_outbox_round *round = &r->round;
    bool fetch, reconcile = false;
    if (r->running || r->freeing || r->backoff)
        return;
    fetch = r->dirty && !r->stopped && !r->failed && r->fl.n_rows < RELAY_INFLIGHT_MAX;
    for (int s = 0; s < TP_OUTBOX_SLOTS; s++) {
        if (r->want_reconcile[s] && round->held[s])
            round->reconcile[s] = true;
        r->want_reconcile[s] = false;
        reconcile = reconcile || (round->held[s] && round->reconcile[s]);
    }
    reconcile = reconcile && !r->reconcile_wait && !r->stopped && !r->failed;
    collect_marks(r, round);
    if (!round->mark_ids && !fetch && !reconcile &&
        !(round->db == NULL && !r->stopped && r->need_claim))
        return;
    round->cfg = r->cfg;
    round->fetch = fetch;
    round->skip_reconcile = r->reconcile_wait || r->stopped || r->failed;
    round->limit = RELAY_BATCH + (int)r->fl.n_rows; /* rows in flight may come back: skipped */
    round->from_leaf = r->fetch_from;
    round->from_mask = r->fetch_mask;
    r->round_epoch = r->fetch_epoch;
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
        round->releasable[s] = r->fl.slot_rows[s] == 0;
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

static void relay_release(tp_relay *r);

/* Takes in what a successful round reports about positions and reconciliation. */
static void round_positions(tp_relay *r, tp_outbox_round *round) {
    char slots[TP_OUTBOX_SLOTS * 4 + 4];
    size_t len = 0;
    int n = 0;
    for (size_t i = 0; round->mark_ids && i < round->n_pos; i++) {
        const tp_outbox_pos *p = &round->pos[i];
        if (p->next_offset > r->stored[p->slot][p->partition])
            r->stored[p->slot][p->partition] = p->next_offset;
    }
    if (round->n_partitions > r->n_parts)
        r->n_parts = round->n_partitions < TP_OUTBOX_PARTITIONS_MAX ? round->n_partitions : TP_OUTBOX_PARTITIONS_MAX;
    slots[0] = '\0';
    for (int s = 0; s < TP_OUTBOX_SLOTS; s++) {
        if (!round->reconciled[s])
            continue;
        for (int p = 0; p < TP_OUTBOX_PARTITIONS_MAX; p++)
            r->stored[s][p] = p < round->n_partitions ? round->end[p] : 0;
        len += (size_t)snprintf(slots + len, sizeof(slots) - len, "%s%d", n++ ? "," : "", s);
    }
    if (n > 0)
        tp_log_info("relay", "reconciled slots %s with the topic: %zu records read, %lld receipts found "
                    "there and marked published", slots, round->reconciled_read,
                    (long long)round->reconciled_marked);
    if (round->reconcile_rc != 0) {
        r->reconcile_wait = true; /* the timer clears it */
        arm_timer(r, RETRY_LATER);
    }
}

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
        /* Rows in flight and marks not done are dropped: whoever takes their slots reconciles. */
        session_lost(r, round->failed_step ? round->failed_step : "outbox round", round->rc);
    } else {
        bool dropped = false;
        r->attempt = 0;
        if (round->session_replaced)
            forget_in_flight(r);
        round_positions(r, round);
        if (round->claim)
            claim_check(r, round);
        if (round->slots_changed)
            rewind_fetch(r);
        if (round->mark_ids) {
            r->checkpoint_owed = true;
            r->published += tp_outbox_settle_marked(&r->fl, &dropped);
            if (dropped)
                rewind_fetch(r);
            if (dropped && !r->stopped)
                arm_timer(r, RETRY_LATER);
        }
        if (round->sequence_more)
            r->dirty = true; /* receipts left unnumbered: the next round goes on at once */
        bool stale = r->round_epoch != r->fetch_epoch && round->from_leaf > 0 &&
                     round->fetched_mask == round->from_mask;
        if (stale) {
            /* Rewound while this round fetched from its cursor (a row was dropped): a dropped
             * row below the cursor did not come back, and its tenant's later rows must not go
             * out ahead of it. The next round fetches them all again. */
            tp_outbox_round_rows_free(round);
            r->dirty = true;
        }
        {
            bool all_out = true;
            size_t sent = 0;
            if (round->n_rows)
                sent = r->stopped || r->failed ? 0 : send_rows(r, round, &all_out);
            if (sent > 0 && round->n_rows >= (size_t)round->limit)
                r->dirty = true; /* a full batch: there is more */
            /* Every row below next_leaf came back and is out: later fetches start there. */
            if (!stale && round->fetched_mask != 0 && all_out && !r->stopped && !r->failed &&
                round->next_leaf >= 0 && round->n_rows < (size_t)round->limit) {
                r->fetch_from = round->next_leaf;
                r->fetch_mask = round->fetched_mask;
            }
        }
        take_notifies(r);
        watch_start(r);
    }
    tp_outbox_round_rows_free(round);
    free(round->mark_ids);
    round->mark_ids = NULL;
    round->n_pos = 0;
    kick(r);
    checkpoint_kick(r); /* after marks: the log may now name more receipts */
    notify_owner(r);
}

static void relay_destroy(tp_relay *r);

static void checkpoint_after(uv_work_t *req, int status) {
    tp_outbox_checkpoint_job *job = req->data;
    tp_relay *r = (tp_relay *)((char *)job - offsetof(tp_relay, cp_job));
    (void)status;
    r->cp_running = false;
    if (r->freeing) {
        free(job->note);
        job->note = NULL;
        tp_db_close(job->db);
        job->db = NULL;
        if (r->open_handles == 0 && !r->running)
            relay_destroy(r);
        return;
    }
    if (job->rc != 0) {
        /* Not at once (the database may be down): after the next round, as before. */
        tp_log_warn("relay", "checkpoint: %s (%s); tried again after the next round",
                    tp_strerror(job->rc), job->err);
        r->checkpoint_owed = true;
    }
    if (job->note && !r->stopped)
        publish_checkpoint(r, job);
    free(job->note);
    job->note = NULL;
    if (job->rc == 0)
        checkpoint_kick(r); /* marks made while it ran are owed one more */
    notify_owner(r);
}

/* ---- life cycle ------------------------------------------------------------------------------ */

int tp_relay_new(const tp_config *cfg, void *loop, tp_relay **out) {
    char err[256];
    tp_relay *r = calloc(1, sizeof(*r));
    int rc;
    const char *topic = tp_config_get(cfg, "topic.receipts");
    if (!r)
        return TP_ENOMEM;
    if (!topic || !*topic) {
        tp_log_error("relay", "topic.receipts is empty: nowhere to publish receipts");
        free(r);
        return TP_ECONFIG;
    }
    r->cfg = cfg;
    r->loop = loop;
    r->retry_max_ms = tp_config_get_int(cfg, "outbox.retry_max_ms");
    if (r->retry_max_ms < RELAY_RETRY_MIN_MS)
        r->retry_max_ms = RELAY_RETRY_MIN_MS;
    r->mark_delay_ms = tp_config_get_int(cfg, "outbox.mark_delay_ms");
    r->claim_check_ms = tp_config_get_int(cfg, "outbox.claim_check_ms");
    r->checkpoint_interval_ms = tp_config_get_int(cfg, "tlog.checkpoint_interval_ms");
    if (r->checkpoint_interval_ms < 0)
        r->checkpoint_interval_ms = 0;
    if (tp_signer_load(tp_config_get(cfg, "receipts.signing_key_file"), &r->signer) != 0) {
        r->signer = NULL;
        tp_log_warn("relay", "no signing key at %s: no transparency-log checkpoints",
                    tp_config_get(cfg, "receipts.signing_key_file"));
    }
    r->pos = calloc((size_t)TP_OUTBOX_SLOTS * TP_OUTBOX_PARTITIONS_MAX, sizeof(*r->pos));
    r->codec = tp_codec_new(tp_config_get(cfg, "codec.schema_dir"), "", err, sizeof(err));
    r->round.codec = r->codec ? tp_codec_new(tp_config_get(cfg, "codec.schema_dir"), "", err, sizeof(err)) : NULL;
    if (!r->pos || !r->codec || !r->round.codec) {
        rc = r->pos ? TP_ECONFIG : TP_ENOMEM;
        if (rc == TP_ECONFIG)
            tp_log_error("relay", "%s", err);
        goto out_free;
    }
    if ((rc = producer_open(r)) != 0)
        goto out_free;
    uv_timer_init(r->loop, &r->timer);
    r->timer.data = r;
    uv_timer_init(r->loop, &r->mark_timer);
    r->mark_timer.data = r;
    uv_timer_init(r->loop, &r->checkpoint_timer);
    r->checkpoint_timer.data = r;
    uv_timer_init(r->loop, &r->claim_timer);
    r->claim_timer.data = r;
    uv_idle_init(r->loop, &r->more);
    r->more.data = r;
    r->open_handles = 5;
    /* The first round connects, LISTENs, takes slots, reconciles them with the topic and
     * publishes what is waiting. */
    r->dirty = true;
    r->need_claim = true;
    kick(r);
    *out = r;
    return 0;

out_free:
    tp_codec_free(r->round.codec);
    tp_codec_free(r->codec);
    tp_signer_free(r->signer);
    free(r->pos);
    free(r);
    return rc;
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

bool tp_relay_idle(const tp_relay *r) { return !r || (!r->running && !r->cp_running && r->fl.n_rows == 0); }

bool tp_relay_failed(const tp_relay *r) { return r && r->failed; }

static void relay_destroy(tp_relay *r) {
    tp_signer_free(r->signer);
    tp_codec_free(r->round.codec);
    tp_codec_free(r->codec);
    free(r->pos);
    free(r);
}

static void relay_closed(uv_handle_t *h) {
    tp_relay *r = h->data;
    if (--r->open_handles == 0 && !r->running && !r->cp_running)
        relay_destroy(r);
}

/* Frees rows, tenants, the session and the handles (the last close callback frees r). */
static void relay_release(tp_relay *r) {
    tp_outbox_forget_all(&r->fl);
    fd_watch_close(&r->watch);
    tp_db_close(r->round.db);
    r->round.db = NULL;
    if (!r->cp_running) { /* else checkpoint_after closes it */
        tp_db_close(r->cp_job.db);
        r->cp_job.db = NULL;
    }
    if (r->open_handles == 0 && !r->cp_running)
        relay_destroy(r);
}

void tp_relay_free(tp_relay *r) {
    if (!r)
        return;
    tp_log_info("relay", "stopped after publishing %llu receipts", (unsigned long long)r->published);
    r->freeing = true;
    uv_timer_stop(&r->timer);
    uv_timer_stop(&r->mark_timer);
    uv_timer_stop(&r->checkpoint_timer);
    uv_timer_stop(&r->claim_timer);
    /* What is still queued fails into on_delivered (unmarked rows are published again later, or
     * found on the topic by the next holder's reconciliation). */
    producer_close(r, 5000);
    uv_close((uv_handle_t *)&r->timer, relay_closed);
    uv_close((uv_handle_t *)&r->mark_timer, relay_closed);
    uv_close((uv_handle_t *)&r->checkpoint_timer, relay_closed);
    uv_close((uv_handle_t *)&r->claim_timer, relay_closed);
    uv_close((uv_handle_t *)&r->more, relay_closed);
    if (!r->running)
        relay_release(r);
    /* else round_after releases once the pool thread is done with the session */
}
