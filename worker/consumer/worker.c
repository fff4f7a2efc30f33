/* worker.c: tp-worker's engine. A Kafka group consumer served on a libuv loop when its queue
 * signals a wake-up pipe (no polling tick); each decoded
 * request becomes a job that runs its stages on the libuv thread pool (uv_queue_work); jobs with
 * the same key run one at a time in arrival order; offsets are stored only up to the contiguous
 * finished watermark of their partition; transient failures come back after a jittered backoff;
 * poison records and exhausted requests go to the dead-letter topic. Loop thread unless noted. */
#include "tp/backoff.h"
#include "tp/codec.h"
#include "tp/error.h"
#include "tp/kafka.h"
#include "tp/log.h"
#include "tp/policy.h"
#include "tp/receipts.h"
#include "tp/relay.h"
#include "tp/stages.h"
#include "tp/store.h"
#include "tp/worker.h"

#include "consumer/watermark.h"

#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#define POLL_BATCH 256    /* records per loop turn; the rest on the next turn (uv_idle) */
#define SERVE_MAX 1024    /* delivery reports per loop turn */

typedef struct job job;

typedef struct part_state {
    struct part_state *next;
    char topic[TP_DLQ_TOPIC_MAX + 1];
    int32_t partition;
    tp_watermark wm;
    int busy;     /* jobs of this partition on a pool thread or waiting for a delivery report */
    bool revoked; /* never store an offset of a revoked partition */
} part_state;

typedef struct key_slot {
    struct key_slot *next;
    char key[TP_SLUG_MAX + 1];
    job *head, *tail; /* head is the one running (or next to run) */
} key_slot;

typedef enum job_phase {
    JOB_QUEUED,      /* waiting behind an earlier job with the same key */
    JOB_RUNNING,     /* stages on a pool thread */
    JOB_BACKOFF,     /* waiting for its retry timer */
    JOB_DLQ_DB,      /* recording the dead letter in PostgreSQL on a pool thread */
    JOB_DLQ_PRODUCE, /* waiting for the DLQ delivery report */
} job_phase;

struct job {
    uv_work_t work;
    uv_timer_t timer;
    bool timer_inited;
    struct tp_worker *w;
    part_state *part;
    int64_t offset;
    uint32_t wm_epoch; /* the watermark epoch its offset was added in */
    unsigned char *raw;
    size_t raw_len;
    unsigned char *key;
    size_t key_len;
    tp_request req;
    bool decoded;
    bool cancelled;
    job_phase phase;
    tp_run_result result;
    int work_rc;
    int infra_attempts;
    int dlq_attempts;
    char dlq_reason[64];
    char dlq_message[512];
    char dlq_stage[32];
    key_slot *slot;
    job *next_in_key;
    job *prev_all, *next_all;
};

/* Per-pool-thread resources: a PostgreSQL connection and an OPA client, lent out under a mutex. */
typedef struct resource {
    struct resource *next;
    tp_db *db;
    tp_policy_client *policy;
} resource;

typedef struct tp_worker {
    const tp_config *cfg;
    uv_loop_t *loop;
    /* Kafka wakes the loop: the consumer and the producer each have a wake-up fd that becomes
     * readable when their queue becomes non-empty. */
    tp_consumer *consumer;
    uv_poll_t consumer_watch;
    uv_idle_t consumer_more;
    uv_poll_t producer_watch;
    uv_idle_t producer_more;
    uv_timer_t keepalive;     /* a poll before max.poll.interval.ms when nothing else polled */
    uint64_t last_poll;       /* uv_now of the last consumer poll */
    int64_t max_poll_ms;
    uv_timer_t grace_timer;
    uv_signal_t sigterm, sigint;
    tp_producer *producer;
    tp_codec *codec;
    tp_signer *signer;
    char *tiers_json;
    tp_quota_tier tiers[TP_PLAN_ENTERPRISE + 1]; /* tiers_json parsed once, by tp_plan */
    tp_relay *relay;
    part_state *parts;
    key_slot *slots;
    job *jobs;
    int inflight;
    int inflight_max;
    bool paused;
    bool revoke_pending;
    bool stopping;
    bool stopped;
    bool failed; /* a fatal condition: drain, then exit 1 so the supervisor restarts us */
    int max_attempts;
    tp_backoff backoff;
    pthread_mutex_t res_lock;
    pthread_cond_t res_cond;
    resource *res_free;
    int res_count;
    uint64_t stats_done, stats_dlq, stats_retries;
} tp_worker;

/* ---------------------------------------------------------------------------------------------
 * Pool-thread resources */

static resource *resource_acquire(tp_worker *w) {
    resource *r;
    pthread_mutex_lock(&w->res_lock);
    while (!w->res_free)
        pthread_cond_wait(&w->res_cond, &w->res_lock);
    r = w->res_free;
    w->res_free = r->next;
    pthread_mutex_unlock(&w->res_lock);
    return r;
}

static void resource_release(tp_worker *w, resource *r) {
    pthread_mutex_lock(&w->res_lock);
    r->next = w->res_free;
    w->res_free = r;
    pthread_cond_signal(&w->res_cond);
    pthread_mutex_unlock(&w->res_lock);
}

/* Pool thread: makes sure the resource holds a live connection. */
static int resource_ready(tp_worker *w, resource *r) {
    char err[256];
    if (r->db)
        return 0;
    if (tp_db_connect_cfg(w->cfg, &r->db, err, sizeof(err)) != 0) {
        tp_log_warn("worker", "postgres connect: %s", err);
        r->db = NULL;
        return TP_EDB;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Partitions, keys, jobs */

static part_state *part_find(tp_worker *w, const char *topic, int32_t partition) {
    for (part_state *p = w->parts; p; p = p->next)
        if (p->partition == partition && strcmp(p->topic, topic) == 0)
            return p;
    return NULL;
}

static part_state *part_add(tp_worker *w, const char *topic, int32_t partition) {
    part_state *p = part_find(w, topic, partition);
    if (p && p->revoked) {
        /* Assigned again before the old state was dropped: start afresh. */
        tp_watermark_release(&p->wm);
        tp_watermark_init(&p->wm);
        p->revoked = false;
        return p;
    }
    if (p)
        return p;
    p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    snprintf(p->topic, sizeof(p->topic), "%s", topic);
    p->partition = partition;
    tp_watermark_init(&p->wm);
    p->next = w->parts;
    w->parts = p;
    return p;
}

static void parts_drop_revoked(tp_worker *w) {
    part_state **pp = &w->parts;
    while (*pp) {
        part_state *p = *pp;
        if (p->revoked && p->busy == 0) {
            *pp = p->next;
            tp_watermark_release(&p->wm);
            free(p);
        } else {
            pp = &p->next;
        }
    }
}

static key_slot *slot_get(tp_worker *w, const char *key) {
    key_slot *s;
    for (s = w->slots; s; s = s->next)
        if (strcmp(s->key, key) == 0)
            return s;
    s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    snprintf(s->key, sizeof(s->key), "%s", key);
    s->next = w->slots;
    w->slots = s;
    return s;
}

/* Removes j from its key's queue. Returns the job that should run next for that key (when j was
 * running at the head), or NULL. */
static job *slot_remove_job(tp_worker *w, job *j) {
    key_slot *s = j->slot, **pp;
    job **jp, *next_head = NULL;
    bool was_head;
    if (!s)
        return NULL;
    was_head = s->head == j;
    for (jp = &s->head; *jp; jp = &(*jp)->next_in_key) {
        if (*jp == j) {
            *jp = j->next_in_key;
            break;
        }
    }
    s->tail = NULL;
    for (job *x = s->head; x; x = x->next_in_key)
        s->tail = x;
    j->slot = NULL;
    j->next_in_key = NULL;
    if (!s->head) {
        for (pp = &w->slots; *pp; pp = &(*pp)->next) {
            if (*pp == s) {
                *pp = s->next;
                free(s);
                break;
            }
        }
    } else if (was_head) {
        next_head = s->head;
    }
    return next_head;
}

static void job_free_cb(uv_handle_t *h) {
    job *j = h->data;
    free(j->raw);
    free(j->key);
    free(j);
}

static void job_free(job *j) {
    if (j->timer_inited) {
        j->timer.data = j;
        uv_close((uv_handle_t *)&j->timer, job_free_cb);
    } else {
        free(j->raw);
        free(j->key);
        free(j);
    }
}

static void start_run(job *j);
static void fail_fast(tp_worker *w, const char *why);
static void maybe_resume(tp_worker *w);
static void check_revoke_done(tp_worker *w);
static void check_drained(tp_worker *w);

/* Ends a job: with store, its offset counts as finished; without (cancelled), it stays behind the
 * watermark so the record is consumed again by whoever owns the partition next. */
static void job_finish(job *j, bool store) {
    tp_worker *w = j->w;
    part_state *p = j->part;
    job *next_head;
    int64_t next;

    if (store && !p->revoked && j->wm_epoch == p->wm.epoch &&
        tp_watermark_finish(&p->wm, j->offset, &next))
        tp_consumer_store_offset(w->consumer, p->topic, p->partition, next);
    next_head = slot_remove_job(w, j);
    if (j->prev_all)
        j->prev_all->next_all = j->next_all;
    else
        w->jobs = j->next_all;
    if (j->next_all)
        j->next_all->prev_all = j->prev_all;
    w->inflight--;
    job_free(j);
    /* The next job of the key runs now; one cancelled while it waited ends instead (and hands on). */
    if (next_head && next_head->phase == JOB_QUEUED) {
        if (next_head->cancelled)
            job_finish(next_head, false);
        else
            start_run(next_head);
    }
    maybe_resume(w);
    if (w->revoke_pending)
        check_revoke_done(w);
    if (w->stopping)
        check_drained(w);
}

/* ---------------------------------------------------------------------------------------------
 * Dead letters */

static void dlq_produce(job *j);

static void on_dlq_timer(uv_timer_t *t) { dlq_produce(t->data); }

static void on_dlq_delivered(void *opaque, int err, int32_t partition, int64_t offset) {
    job *j = opaque;
    (void)partition;
    j->part->busy--;
    if (err == 0) {
        tp_log_info("worker", "dead letter %s for %s[%d]@%lld stored at dlq offset %lld", j->dlq_reason,
                    j->part->topic, (int)j->part->partition, (long long)j->offset, (long long)offset);
        j->w->stats_dlq++;
        job_finish(j, true);
        return;
    }
    if (err == TP_EKAFKA_FATAL)
        fail_fast(j->w, "the producer hit a fatal error");
    if (j->cancelled || err == TP_EKAFKA_FATAL) {
        job_finish(j, false);
        return;
    }
    j->dlq_attempts++;
    j->phase = JOB_BACKOFF;
    if (!j->timer_inited) {
        uv_timer_init(j->w->loop, &j->timer);
        j->timer_inited = true;
    }
    j->timer.data = j;
    uv_timer_start(&j->timer, on_dlq_timer,
                   (uint64_t)tp_backoff_delay(&j->w->backoff, j->dlq_attempts, randombytes_random()), 0);
}

static void dlq_produce(job *j) {
    tp_worker *w = j->w;
    tp_dead_letter dl;
    unsigned char *buf = NULL;
    size_t len = 0;
    tp_kafka_header hdrs[2] = {{"reason", j->dlq_reason, strlen(j->dlq_reason)},
                               {"traceparent", j->req.traceparent, strlen(j->req.traceparent)}};
    int rc;

    if (j->cancelled) {
        job_finish(j, false);
        return;
    }
    memset(&dl, 0, sizeof(dl));
    dl.original = j->raw;
    dl.original_len = j->raw_len;
    snprintf(dl.reason_code, sizeof(dl.reason_code), "%s", j->dlq_reason);
    snprintf(dl.reason_message, sizeof(dl.reason_message), "%s", j->dlq_message);
    snprintf(dl.origin_topic, sizeof(dl.origin_topic), "%s", j->part->topic);
    dl.origin_partition = j->part->partition;
    dl.origin_offset = j->offset;
    snprintf(dl.failed_stage, sizeof(dl.failed_stage), "%s", j->dlq_stage);
    if (j->decoded)
        snprintf(dl.request_id, sizeof(dl.request_id), "%s", j->req.request_id);
    dl.timestamp_ms = (int64_t)time(NULL) * 1000;
    dl.has_original_key = j->key != NULL;
    dl.original_key = j->key;
    dl.original_key_len = j->key_len;
    rc = tp_codec_encode_dead_letter(w->codec, &dl, &buf, &len);
    if (rc != 0) {
        /* Only oversized originals get here; the dead_letters row holds it, so move on. */
        tp_log_error("worker", "encoding a dead letter failed (%s): %s[%d]@%lld is recorded in "
                     "PostgreSQL only", tp_strerror(rc), j->part->topic, (int)j->part->partition,
                     (long long)j->offset);
        job_finish(j, true);
        return;
    }
    j->phase = JOB_DLQ_PRODUCE;
    j->part->busy++;
    rc = tp_producer_send(w->producer, tp_config_get(w->cfg, "topic.dlq"), j->key, j->key_len, buf,
                          len, hdrs, j->req.traceparent[0] ? 2 : 1, on_dlq_delivered, j);
    free(buf);
    if (rc != 0)
        on_dlq_delivered(j, rc, -1, -1);
}

/* Pool thread: remember the dead letter in PostgreSQL (tpctl dlq list/replay read it there). */
static void dlq_db_work(uv_work_t *req) {
    job *j = req->data;
    tp_worker *w = j->w;
    resource *r = resource_acquire(w);
    char part[16], off[32];
    const char *params[7];
    int lens[7] = {0}, fmts[7] = {0};
    tp_res *res = NULL;

    j->work_rc = resource_ready(w, r);
    if (j->work_rc == 0) {
        snprintf(part, sizeof(part), "%d", (int)j->part->partition);
        snprintf(off, sizeof(off), "%lld", (long long)j->offset);
        params[0] = j->decoded ? j->req.request_id : NULL;
        params[1] = j->dlq_reason;
        params[2] = j->dlq_message;
        params[3] = j->part->topic;
        params[4] = part;
        params[5] = off;
        params[6] = (const char *)j->raw;
        lens[6] = (int)j->raw_len;
        fmts[6] = 1;
        j->work_rc = tp_db_query_bin(
            r->db,
            "INSERT INTO dead_letters (request_id, reason, message, origin_topic, origin_partition, "
            "origin_offset, original) VALUES ($1, $2, $3, $4, $5::int, $6::bigint, $7) "
            "ON CONFLICT (origin_topic, origin_partition, origin_offset) DO NOTHING",
            7, params, lens, fmts, &res);
        tp_res_free(res);
    }
    resource_release(w, r);
}

static void dlq_db_after(uv_work_t *req, int status) {
    job *j = req->data;
    (void)status;
    j->part->busy--;
    if (j->cancelled) {
        job_finish(j, false);
        return;
    }
    if (j->work_rc != 0)
        tp_log_warn("worker", "recording dead letter in postgres failed (%s); producing it anyway",
                    tp_strerror(j->work_rc));
    dlq_produce(j);
}

static void send_to_dlq(job *j, const char *reason, const char *stage, const char *message) {
    snprintf(j->dlq_reason, sizeof(j->dlq_reason), "%s", reason);
    snprintf(j->dlq_stage, sizeof(j->dlq_stage), "%s", stage ? stage : "");
    snprintf(j->dlq_message, sizeof(j->dlq_message), "%s", message ? message : "");
    j->phase = JOB_DLQ_DB;
    j->part->busy++;
    j->work.data = j;
    uv_queue_work(j->w->loop, &j->work, dlq_db_work, dlq_db_after);
}

/* ---------------------------------------------------------------------------------------------
 * Stage runs */

static void run_work(uv_work_t *req) {
    job *j = req->data;
    tp_worker *w = j->w;
    resource *r = resource_acquire(w);
    tp_stage_env env;

    memset(&j->result, 0, sizeof(j->result));
    j->work_rc = resource_ready(w, r);
    if (j->work_rc == 0) {
        /* The runner records a new request with its origin in its first statement. */
        memset(&env, 0, sizeof(env));
        env.db = r->db;
        env.policy = r->policy;
        env.signer = w->signer;
        env.tiers_json = w->tiers_json;
        env.tiers = w->tiers;
        env.origin_topic = j->part->topic;
        env.origin_partition = j->part->partition;
        env.origin_offset = j->offset;
        env.region_allowlist = tp_config_get(w->cfg, "policy.region_allowlist");
        env.max_attempts = w->max_attempts;
        env.max_tenants_per_user = (int)tp_config_get_int(w->cfg, "policy.max_tenants_per_user");
        j->work_rc = tp_stages_run(&env, &j->req, &j->result);
    }
    if (j->work_rc != 0 && r->db && !tp_err_is_transient(j->work_rc) && j->work_rc != TP_EDB_PERMANENT) {
        /* keep the connection */
    } else if (j->work_rc == TP_EDB && r->db && tp_db_ping(r->db) != 0) {
        tp_db_close(r->db);
        r->db = NULL;
    }
    resource_release(w, r);
}

static void on_retry_timer(uv_timer_t *t) {
    job *j = t->data;
    if (j->cancelled) {
        job_finish(j, false);
        return;
    }
    start_run(j);
}

static void schedule_retry(job *j, int attempt) {
    tp_worker *w = j->w;
    int64_t delay = tp_backoff_delay(&w->backoff, attempt, randombytes_random());
    j->phase = JOB_BACKOFF;
    if (!j->timer_inited) {
        uv_timer_init(w->loop, &j->timer);
        j->timer_inited = true;
    }
    j->timer.data = j;
    w->stats_retries++;
    uv_timer_start(&j->timer, on_retry_timer, (uint64_t)delay, 0);
}

static void run_after(uv_work_t *req, int status) {
    job *j = req->data;
    tp_worker *w = j->w;
    tp_log_ctx ctx = {j->req.request_id, tp_stage_name(j->result.stage), j->result.attempts, j->req.traceparent};
    if (j->result.status == TP_RUN_SUCCEEDED)
        ctx.stage = NULL, ctx.attempt = 0;

    j->part->busy--;
    /* The run committed stage transactions, perhaps receipts: the relay looks right away. */
    if (status != UV_ECANCELED && j->work_rc == 0)
        tp_relay_wake(w->relay);
    /* Cancelled before it ran, or its partition is gone: leave the record to the next owner. A
     * cancelled run that did finish (shutdown) still counts, so a restart redoes less. */
    if (status == UV_ECANCELED || (j->cancelled && (j->part->revoked || j->work_rc != 0 ||
                                                    j->result.status == TP_RUN_RETRY))) {
        job_finish(j, false);
        return;
    }
    if (j->work_rc == TP_ENOMEM) {
        job_finish(j, false); /* its offset is not stored: it comes again after the restart */
        fail_fast(w, "out of memory");
        return;
    }
    if (j->work_rc != 0 && !tp_err_is_transient(j->work_rc)) {
        /* The database refuses this request's bookkeeping (e.g. a value it cannot store):
         * retrying would pin the key and the partition's offsets forever. */
        char msg[700];
        snprintf(msg, sizeof(msg), "%s: %s", tp_strerror(j->work_rc), j->result.message);
        tp_log(TP_LOG_ERROR, "worker", &ctx, "request cannot be recorded, dead-lettered: %s", msg);
        send_to_dlq(j, tp_err_name(j->work_rc) + 4 /* past "TP_E" */, NULL, msg);
        return;
    }
    if (j->work_rc != 0) {
        /* Even the outcome could not be recorded (database down): try again later. */
        j->infra_attempts++;
        ctx.stage = NULL;
        ctx.attempt = j->infra_attempts;
        tp_log(TP_LOG_WARN, "worker", &ctx, "stage run could not reach the database: %s",
               tp_strerror(j->work_rc));
        schedule_retry(j, j->infra_attempts);
        return;
    }
    j->infra_attempts = 0;
    switch (j->result.status) {
    case TP_RUN_RETRY:
        tp_log(TP_LOG_WARN, "worker", &ctx, "transient failure, retrying: %s", j->result.message);
        schedule_retry(j, j->result.attempts);
        return;
    case TP_RUN_SUCCEEDED:
        tp_log(TP_LOG_INFO, "worker", &ctx, "request SUCCEEDED (tenant %s)", j->result.tenant_id);
        break;
    case TP_RUN_DENIED:
        tp_log(TP_LOG_INFO, "worker", &ctx, "request DENIED: %s", j->result.message);
        break;
    case TP_RUN_FAILED:
        tp_log(TP_LOG_WARN, "worker", &ctx, "request FAILED (%s): %s", j->result.failure_reason,
               j->result.message);
        if (strcmp(j->result.failure_reason, "RETRIES_EXHAUSTED") == 0) {
            if (j->cancelled) { /* the dead letter is written when the record comes again */
                job_finish(j, false);
                return;
            }
            send_to_dlq(j, "RETRIES_EXHAUSTED", tp_stage_name(j->result.stage), j->result.message);
            return;
        }
        break;
    }
    w->stats_done++;
    job_finish(j, true);
}

static void start_run(job *j) {
    j->phase = JOB_RUNNING;
    j->part->busy++;
    j->work.data = j;
    uv_queue_work(j->w->loop, &j->work, run_work, run_after);
}

/* ---------------------------------------------------------------------------------------------
 * Consumption, pause/resume, rebalances */

static void set_paused(tp_worker *w, bool pause) {
    if ((pause ? tp_consumer_pause(w->consumer, NULL) : tp_consumer_resume(w->consumer)) != 0)
        return;
    w->paused = pause;
}

static void maybe_pause(tp_worker *w) {
    if (!w->paused && w->inflight >= w->inflight_max) {
        tp_log_debug("worker", "pausing: %d requests in flight", w->inflight);
        set_paused(w, true);
    }
}

static void maybe_resume(tp_worker *w) {
    if (w->paused && !w->stopping && w->inflight <= w->inflight_max / 2) {
        tp_log_debug("worker", "resuming: %d requests in flight", w->inflight);
        set_paused(w, false);
    }
}

static void handle_message(tp_worker *w, const tp_kafka_message *msg) {
    const char *topic = msg->topic;
    part_state *p = part_find(w, topic, msg->partition);
    char err[256] = "";
    job *j;
    int rc = 0;

    if (!p || p->revoked)
        return; /* a prefetched record of a partition we no longer own */
    /* Copies of the record (a dead letter carries it byte for byte) before it counts. */
    j = calloc(1, sizeof(*j));
    if (j) {
        j->raw = malloc(msg->len ? msg->len : 1);
        j->key = msg->key && msg->key_len ? malloc(msg->key_len) : NULL;
    }
    if (j && j->raw && (j->key || !msg->key || !msg->key_len) &&
        (rc = tp_watermark_add(&p->wm, msg->offset)) == TP_EINVAL) {
        /* Offsets went backwards (an offset reset, a truncated log): whatever is still pending
         * from before can never be stored in order, so the partition starts over from here. */
        tp_log_warn("worker", "%s[%d]: offset %lld is behind earlier ones (reset or truncation): "
                    "%zu pending offsets forgotten, the watermark starts again", topic,
                    (int)msg->partition, (long long)msg->offset, tp_watermark_pending(&p->wm));
        tp_watermark_restart(&p->wm);
        rc = tp_watermark_add(&p->wm, msg->offset);
    }
    if (!j || !j->raw || (!j->key && msg->key && msg->key_len) || rc != 0) {
        if (j) {
            free(j->raw);
            free(j->key);
        }
        free(j);
        tp_log_error("worker", "out of memory at %s[%d]@%lld", topic, (int)msg->partition,
                     (long long)msg->offset);
        /* Never skip a record: stop taking new ones; its offset is never stored, so it comes again. */
        fail_fast(w, "out of memory");
        return;
    }
    j->w = w;
    j->part = p;
    j->offset = msg->offset;
    j->wm_epoch = p->wm.epoch;
    if (msg->len)
        memcpy(j->raw, msg->value, msg->len);
    j->raw_len = msg->len;
    if (j->key) {
        memcpy(j->key, msg->key, msg->key_len);
        j->key_len = msg->key_len;
    }
    j->next_all = w->jobs;
    if (w->jobs)
        w->jobs->prev_all = j;
    w->jobs = j;
    w->inflight++;

    rc = tp_codec_decode_request(w->codec, msg->value, msg->len, &j->req, err, sizeof(err));
    {
        const void *val;
        size_t len;
        if (tp_kafka_message_header(msg, "traceparent", &val, &len) == 0 &&
            tp_traceparent_valid(val, len))
            tp_copy_field(j->req.traceparent, sizeof(j->req.traceparent), val, len);
    }
    if (rc != 0) {
        const char *name = tp_err_name(rc);
        tp_log_warn("worker", "poison record %s[%d]@%lld: %s (%s)", topic, (int)msg->partition,
                    (long long)msg->offset, err, name);
        send_to_dlq(j, name + 4 /* past "TP_E" */, NULL, err);
        maybe_pause(w);
        return;
    }
    j->decoded = true;
    {
        /* Billing producers skip tp-ingress: the same field rules apply here. */
        char field[64], why[128];
        if (tp_request_validate(&j->req, tp_config_get(w->cfg, "policy.region_allowlist"), field,
                                sizeof(field), why, sizeof(why)) != 0) {
            snprintf(err, sizeof(err), "%s %s", field, why);
            tp_log(TP_LOG_WARN, "worker", &(tp_log_ctx){j->req.request_id, NULL, 0, j->req.traceparent},
                   "invalid request %s[%d]@%lld: %s", topic, (int)msg->partition, (long long)msg->offset, err);
            send_to_dlq(j, "VALIDATION", NULL, err);
            maybe_pause(w);
            return;
        }
    }
    j->slot = slot_get(w, j->req.tenant.slug);
    if (!j->slot) {
        job_finish(j, false); /* before the drain, which would otherwise cancel it too */
        fail_fast(w, "out of memory");
        return;
    }
    if (j->slot->tail)
        j->slot->tail->next_in_key = j;
    else
        j->slot->head = j;
    j->slot->tail = j;
    j->phase = JOB_QUEUED;
    if (j->slot->head == j)
        start_run(j);
    maybe_pause(w);
}

/* Cancels the jobs of revoked (or, when stopping, all) partitions. Jobs that wait (for their key
 * or a retry timer) end now; jobs on a pool thread or waiting for a delivery report end when that
 * returns. Either way their offsets are not stored. */
static void cancel_jobs(tp_worker *w, bool all) {
    job *j;
    for (j = w->jobs; j; j = j->next_all) {
        if (all || j->part->revoked) {
            j->cancelled = true;
            if (j->phase == JOB_RUNNING || j->phase == JOB_DLQ_DB)
                uv_cancel((uv_req_t *)&j->work); /* not started yet: its after-callback comes now */
        }
    }
    /* Finishing a job may finish others (a cancelled successor of its key): rescan each time. */
    for (;;) {
        for (j = w->jobs; j; j = j->next_all)
            if (j->cancelled && (j->phase == JOB_QUEUED || j->phase == JOB_BACKOFF))
                break;
        if (!j)
            return;
        if (j->timer_inited)
            uv_timer_stop(&j->timer);
        job_finish(j, false);
    }
}

static void check_revoke_done(tp_worker *w) {
    for (part_state *p = w->parts; p; p = p->next)
        if (p->revoked && p->busy > 0)
            return;
    w->revoke_pending = false;
    tp_consumer_assign(w->consumer, NULL);
    parts_drop_revoked(w);
    tp_log_info("worker", "revocation complete");
}

static void on_rebalance(void *arg, tp_consumer *c, bool assign, const tp_kafka_partitions *parts) {
    tp_worker *w = arg;
    int n = tp_kafka_partitions_count(parts);
    if (assign) {
        for (int i = 0; i < n; i++) {
            tp_kafka_partition kp = tp_kafka_partitions_get(parts, i);
            part_add(w, kp.topic, kp.partition);
        }
        tp_consumer_assign(c, parts);
        tp_log_info("worker", "assigned %d partitions", n);
        if (w->paused || w->stopping)
            tp_consumer_pause(c, parts);
        return;
    }
    tp_log_info("worker", "revoking %d partitions", n);
    for (int i = 0; i < n; i++) {
        tp_kafka_partition kp = tp_kafka_partitions_get(parts, i);
        part_state *p = part_find(w, kp.topic, kp.partition);
        if (p)
            p->revoked = true;
    }
    cancel_jobs(w, false);
    if (w->stopping) {
        /* Closing: in-flight work is checkpointed in PostgreSQL; give the partitions up now. */
        w->revoke_pending = false;
        tp_consumer_assign(c, NULL);
        return;
    }
    w->revoke_pending = true;
    check_revoke_done(w);
}

static void on_consumer_more(uv_idle_t *h);

static void on_message(void *arg, const tp_kafka_message *msg) {
    tp_worker *w = arg;
    if (!w->stopping)
        handle_message(w, msg);
}

/* Serves the consumer queue without blocking: records, errors and rebalance callbacks. The
 * wake-up fd fires only when the queue goes from empty to non-empty, so after a full batch the
 * rest is served on the next loop turn. */
static void serve_consumer(tp_worker *w) {
    int n = tp_consumer_serve(w->consumer, POLL_BATCH, on_message, w);
    w->last_poll = uv_now(w->loop);
    if (n == POLL_BATCH && !w->stopped)
        uv_idle_start(&w->consumer_more, on_consumer_more);
    else
        uv_idle_stop(&w->consumer_more);
}

static void on_consumer_more(uv_idle_t *h) { serve_consumer(h->data); }

static void on_consumer_readable(uv_poll_t *h, int status, int events) {
    (void)status;
    (void)events;
    serve_consumer(h->data);
}

/* An idle consumer gets no events, yet librdkafka leaves the group when the application has not
 * polled for max.poll.interval.ms: poll at half of it when nothing else did (one wake-up per
 * 150 s with the default, none while records flow). */
static void on_keepalive(uv_timer_t *t) {
    tp_worker *w = t->data;
    uint64_t half = (uint64_t)(w->max_poll_ms / 2), since = uv_now(w->loop) - w->last_poll;
    if (since + 1000 >= half)
        serve_consumer(w);
    since = uv_now(w->loop) - w->last_poll;
    uv_timer_start(&w->keepalive, on_keepalive, since < half ? half - since : half, 0);
}

static void on_producer_more(uv_idle_t *h);

static void serve_producer(tp_worker *w) {
    if (tp_producer_serve(w->producer, SERVE_MAX) >= SERVE_MAX && !w->stopped)
        uv_idle_start(&w->producer_more, on_producer_more);
    else
        uv_idle_stop(&w->producer_more);
}

static void on_producer_more(uv_idle_t *h) { serve_producer(h->data); }

static void on_producer_readable(uv_poll_t *h, int status, int events) {
    (void)status;
    (void)events;
    serve_producer(h->data);
}

/* The relay was stopped (it may have gone idle) or its producer failed. */
static void on_relay_event(void *arg) {
    tp_worker *w = arg;
    if (tp_relay_failed(w->relay))
        fail_fast(w, "the receipts relay's producer hit a fatal error");
    if (w->stopping)
        check_drained(w);
}

/* ---------------------------------------------------------------------------------------------
 * Shutdown */

static void finish_now(tp_worker *w) {
    if (w->stopped)
        return;
    w->stopped = true;
    uv_timer_stop(&w->grace_timer);
    uv_stop(w->loop);
}

static void check_drained(tp_worker *w) {
    if (w->inflight == 0 && (!w->relay || tp_relay_idle(w->relay)))
        finish_now(w);
}

static void on_grace(uv_timer_t *t) {
    tp_worker *w = t->data;
    tp_log_warn("worker", "shutdown grace over with %d requests in flight: they resume after a restart",
                w->inflight);
    /* Pool work cannot be interrupted; what it wrote is committed per stage. Commit what is
     * finished and leave now. */
    tp_consumer_commit(w->consumer);
    tp_consumer_close(w->consumer);
    tp_log_info("worker", "exit after grace");
    fflush(NULL);
    _exit(w->failed ? 1 : 0);
}

static void begin_drain(tp_worker *w) {
    w->stopping = true;
    set_paused(w, true);
    cancel_jobs(w, true);
    if (w->relay)
        tp_relay_stop(w->relay);
    uv_timer_start(&w->grace_timer, on_grace,
                   (uint64_t)tp_config_get_int(w->cfg, "worker.shutdown_grace_ms"), 0);
    check_drained(w);
}

static void on_signal(uv_signal_t *s, int signum) {
    tp_worker *w = s->data;
    if (w->stopping)
        return;
    tp_log_info("worker", "signal %d: draining %d in-flight requests (grace %lld ms)", signum,
                w->inflight, (long long)tp_config_get_int(w->cfg, "worker.shutdown_grace_ms"));
    begin_drain(w);
}

/* Something the worker cannot recover from in place (a fatal producer error, out of memory):
 * drain like SIGTERM and exit 1; a restart resumes from the stored offsets. */
static void fail_fast(tp_worker *w, const char *why) {
    w->failed = true;
    if (w->stopping)
        return;
    tp_log_error("worker", "%s: draining %d in-flight requests, then exit 1", why, w->inflight);
    begin_drain(w);
}

/* ---------------------------------------------------------------------------------------------
 * Start-up */

static int migrate(const tp_config *cfg) {
    tp_db *db = NULL;
    char err[512];
    char dir[1024];
    int rc = tp_db_connect_cfg(cfg, &db, err, sizeof(err));
    if (rc != 0) {
        tp_log_error("worker", "postgres: %s", err);
        return rc;
    }
    snprintf(dir, sizeof(dir), "%s", tp_config_get(cfg, "store.migrations_dir"));
    rc = tp_store_migrate(db, dir, err, sizeof(err));
    if (rc != 0)
        tp_log_error("worker", "migrations: %s", err);
    tp_db_close(db);
    return rc;
}

static void resources_free(tp_worker *w) {
    resource *r = w->res_free, *next;
    for (; r; r = next) { /* every resource is back on the free list once the pool is idle */
        next = r->next;
        tp_db_close(r->db);
        tp_policy_client_free(r->policy);
        free(r);
    }
}

static int resources_new(tp_worker *w, int n) {
    for (int i = 0; i < n; i++) {
        resource *r = calloc(1, sizeof(*r));
        if (!r)
            return TP_ENOMEM;
        r->policy = tp_policy_client_new(tp_config_get(w->cfg, "opa.url"),
                                         (long)tp_config_get_int(w->cfg, "opa.timeout_ms"));
        if (!r->policy) {
            free(r);
            return TP_ENOMEM;
        }
        r->next = w->res_free;
        w->res_free = r;
    }
    w->res_count = n;
    return 0;
}

int tp_worker_run(const tp_config *cfg) {
    tp_worker w;
    char err[512];
    char threads[16];
    int pool = (int)tp_config_get_int(cfg, "worker.db_pool_size");
    int status = 1;

    memset(&w, 0, sizeof(w));
    w.cfg = cfg;
    w.inflight_max = (int)tp_config_get_int(cfg, "worker.inflight_max");
    if (w.inflight_max < 1)
        w.inflight_max = 1;
    w.max_attempts = (int)tp_config_get_int(cfg, "retry.max_attempts");
    w.backoff.initial_ms = tp_config_get_int(cfg, "retry.initial_ms");
    w.backoff.multiplier = tp_config_get_double(cfg, "retry.multiplier");
    w.backoff.cap_ms = tp_config_get_int(cfg, "retry.cap_ms");
    if (pool < 1)
        pool = 1;
    /* libuv reads this once, at its first use of the pool: one pool thread per connection. */
    snprintf(threads, sizeof(threads), "%d", pool);
    setenv("UV_THREADPOOL_SIZE", threads, 1);
    pthread_mutex_init(&w.res_lock, NULL);
    pthread_cond_init(&w.res_cond, NULL);

    if (sodium_init() < 0) {
        tp_log_error("worker", "libsodium init failed");
        goto out;
    }
    if (migrate(cfg) != 0)
        goto out;
    w.codec = tp_codec_new(tp_config_get(cfg, "codec.schema_dir"),
                           tp_config_get(cfg, "codec.confluent_schema_ids"), err, sizeof(err));
    if (!w.codec) {
        tp_log_error("worker", "codec: %s", err);
        goto out;
    }
    w.tiers_json = tp_policy_load_tiers(tp_config_get(cfg, "quota.tiers_file"));
    if (!w.tiers_json) {
        tp_log_error("worker", "quota tiers: cannot load %s", tp_config_get(cfg, "quota.tiers_file"));
        goto out;
    }
    for (int p = TP_PLAN_FREE; p <= TP_PLAN_ENTERPRISE; p++) {
        if (tp_quota_tiers_get(w.tiers_json, (tp_plan)p, &w.tiers[p]) != 0) {
            tp_log_error("worker", "quota tiers: %s has no valid %s entry",
                         tp_config_get(cfg, "quota.tiers_file"), tp_plan_name((tp_plan)p));
            goto out;
        }
    }
    if (tp_signer_load(tp_config_get(cfg, "receipts.signing_key_file"), &w.signer) != 0) {
        tp_log_error("worker", "receipts signing key: cannot load %s (tpctl keygen writes one)",
                     tp_config_get(cfg, "receipts.signing_key_file"));
        goto out;
    }
    if (resources_new(&w, pool) != 0)
        goto out;
    if (tp_producer_new(cfg, &w.producer, err, sizeof(err)) != 0) {
        tp_log_error("worker", "producer: %s", err);
        goto out;
    }
    if (tp_producer_wakeup_fd(w.producer) < 0) {
        tp_log_error("worker", "wake-up pipes: cannot create");
        goto out;
    }
    if (tp_consumer_new(cfg, tp_config_get(cfg, "worker.group_id"), tp_config_get(cfg, "topic.requests"),
                        on_rebalance, &w, &w.consumer, err, sizeof(err)) != 0) {
        tp_log_error("worker", "consumer: %s", err);
        goto out;
    }
    w.max_poll_ms = tp_consumer_max_poll_interval_ms(w.consumer);
    if (w.max_poll_ms < 2000)
        w.max_poll_ms = 2000;
    w.loop = uv_default_loop();
    if (tp_relay_new(cfg, w.loop, &w.relay) != 0)
        tp_log_warn("worker", "receipts relay not started");
    tp_relay_set_event_cb(w.relay, on_relay_event, &w);

    uv_poll_init(w.loop, &w.consumer_watch, tp_consumer_wakeup_fd(w.consumer));
    w.consumer_watch.data = &w;
    uv_poll_start(&w.consumer_watch, UV_READABLE, on_consumer_readable);
    uv_idle_init(w.loop, &w.consumer_more);
    w.consumer_more.data = &w;
    uv_idle_start(&w.consumer_more, on_consumer_more); /* whatever queued before the first wake-up */
    uv_poll_init(w.loop, &w.producer_watch, tp_producer_wakeup_fd(w.producer));
    w.producer_watch.data = &w;
    uv_poll_start(&w.producer_watch, UV_READABLE, on_producer_readable);
    uv_idle_init(w.loop, &w.producer_more);
    w.producer_more.data = &w;
    uv_timer_init(w.loop, &w.keepalive);
    w.keepalive.data = &w;
    uv_timer_start(&w.keepalive, on_keepalive, (uint64_t)w.max_poll_ms / 2, 0);
    uv_timer_init(w.loop, &w.grace_timer);
    w.grace_timer.data = &w;
    uv_signal_init(w.loop, &w.sigterm);
    w.sigterm.data = &w;
    uv_signal_start(&w.sigterm, on_signal, SIGTERM);
    uv_signal_init(w.loop, &w.sigint);
    w.sigint.data = &w;
    uv_signal_start(&w.sigint, on_signal, SIGINT);
    tp_log_info("worker", "consuming %s as group %s (in flight <= %d, %d pool threads)",
                tp_config_get(cfg, "topic.requests"), tp_config_get(cfg, "worker.group_id"),
                w.inflight_max, pool);

    uv_run(w.loop, UV_RUN_DEFAULT);

    /* Drained: commit what is stored, leave the group, release everything. */
    tp_consumer_commit(w.consumer);
    tp_consumer_close(w.consumer);
    tp_relay_free(w.relay);
    w.relay = NULL;
    uv_close((uv_handle_t *)&w.consumer_watch, NULL);
    uv_close((uv_handle_t *)&w.consumer_more, NULL);
    uv_close((uv_handle_t *)&w.producer_watch, NULL);
    uv_close((uv_handle_t *)&w.producer_more, NULL);
    uv_close((uv_handle_t *)&w.keepalive, NULL);
    uv_close((uv_handle_t *)&w.grace_timer, NULL);
    uv_close((uv_handle_t *)&w.sigterm, NULL);
    uv_close((uv_handle_t *)&w.sigint, NULL);
    uv_run(w.loop, UV_RUN_DEFAULT);
    uv_loop_close(w.loop);
    tp_log_info("worker", "stopped: %llu requests finished, %llu dead letters, %llu retries",
                (unsigned long long)w.stats_done, (unsigned long long)w.stats_dlq,
                (unsigned long long)w.stats_retries);
    status = w.failed ? 1 : 0;
out:
    tp_consumer_free(w.consumer);
    tp_producer_free(w.producer, 5000);
    resources_free(&w);
    tp_signer_free(w.signer);
    free(w.tiers_json);
    tp_codec_free(w.codec);
    while (w.parts) {
        part_state *p = w.parts;
        w.parts = p->next;
        tp_watermark_release(&p->wm);
        free(p);
    }
    pthread_mutex_destroy(&w.res_lock);
    pthread_cond_destroy(&w.res_cond);
    return status;
}
