/* jobs.c: a consumed record becomes a job; jobs with the same key run one at a time in arrival
 * order (key slots); a job runs its stages on the libuv thread pool (uv_queue_work; at most
 * TP_RUNS_PER_THREAD runs per pool thread are handed over, the others wait in the ready queue),
 * and its after-work callback stores its offset, schedules a jittered retry or hands it to the
 * dead letters. Loop thread unless noted. */
#include "consumer/worker_int.h"
#include "tp/error.h"
#include "tp/log.h"
#include "tp/metrics.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void start_run(job *j);
static void submit_run(job *j);

/* Hands ready jobs to the pool while it has a thread for them; a cancelled one ends instead. */
static void pump_ready(tp_worker *w) {
    while (w->ready_head && w->pool_running < TP_RUNS_PER_THREAD * w->pool_threads) {
        job *j = w->ready_head;
        w->ready_head = j->next_ready;
        if (!w->ready_head)
            w->ready_tail = NULL;
        j->next_ready = NULL;
        if (j->cancelled)
            tp_worker__job_finish(j, false);
        else
            submit_run(j);
    }
}

/* Takes j, a cancelled job, out of the ready queue. */
static void ready_remove(tp_worker *w, job *j) {
    job **jp, *prev = NULL;
    for (jp = &w->ready_head; *jp; prev = *jp, jp = &(*jp)->next_ready) {
        if (*jp == j) {
            *jp = j->next_ready;
            if (w->ready_tail == j)
                w->ready_tail = prev;
            j->next_ready = NULL;
            return;
        }
    }
}

/* The bucket of key's slot (FNV-1a). */
static key_slot **slot_bucket(tp_worker *w, const char *key) {
    uint32_t h = 2166136261u;
    for (const unsigned char *c = (const unsigned char *)key; *c; c++)
        h = (h ^ *c) * 16777619u;
    return &w->slots[h & (TP_KEY_SLOT_BUCKETS - 1)];
}

static key_slot *slot_get(tp_worker *w, const char *key) {
    key_slot **bucket = slot_bucket(w, key), *s;
    for (s = *bucket; s; s = s->next)
        if (strcmp(s->key, key) == 0)
            return s;
    s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    snprintf(s->key, sizeof(s->key), "%s", key);
    s->next = *bucket;
    *bucket = s;
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
        for (pp = slot_bucket(w, s->key); *pp; pp = &(*pp)->next) {
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

/* Ends a job: with store, its offset counts as finished; without (cancelled), it stays behind the
 * watermark so the record is consumed again by whoever owns the partition next. */
void tp_worker__job_finish(job *j, bool store) {
    tp_worker *w = j->w;
    part_state *p = j->part;
    job *next_head;

    if (store)
        tp_worker__part_finish_offset(w, p, j->offset, j->wm_epoch);
    if (j->phase == JOB_READY)
        ready_remove(w, j);
    next_head = slot_remove_job(w, j);
    if (j->prev_all)
        j->prev_all->next_all = j->next_all;
    else
        w->jobs = j->next_all;
    if (j->next_all)
        j->next_all->prev_all = j->prev_all;
    w->inflight--;
    tp_metrics_gauge_add(TP_METRICS_IN_FLIGHT, -1);
    job_free(j);
    /* The next job of the key runs now; one cancelled while it waited ends instead (and hands on). */
    if (next_head && next_head->phase == JOB_QUEUED) {
        if (next_head->cancelled)
            tp_worker__job_finish(next_head, false);
        else
            start_run(next_head);
    }
    tp_worker__maybe_resume(w);
    if (w->revoke_pending)
        tp_worker__check_revoke_done(w);
    else if (w->parts_abandoned > 0)
        tp_worker__parts_drop_revoked(w); /* frees an abandoned partition whose last job ended */
    if (w->stopping)
        tp_worker__check_drained(w);
}

static void run_work(uv_work_t *req) {
    job *j = req->data;
    tp_worker *w = j->w;
    resource *r = tp_worker__resource_acquire(w);
    tp_stage_env env;

    memset(&j->result, 0, sizeof(j->result));
    j->work_rc = tp_worker__resource_ready(w, r);
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
        env.max_elapsed_ms = w->max_elapsed_ms;
        env.max_tenants_per_user = (int)tp_config_get_int(w->cfg, "policy.max_tenants_per_user");
        env.admin_role = tp_config_get(w->cfg, "jwt.admin_role"); /* as tp-ingress tells OPA */
        j->work_rc = tp_stages_run(&env, &j->req, &j->result);
    }
    if (j->work_rc != 0 && r->db && !tp_err_is_transient(j->work_rc) && j->work_rc != TP_EDB_PERMANENT) {
        /* keep the connection */
    } else if (j->work_rc == TP_EDB && r->db && tp_db_ping(r->db) != 0) {
        tp_db_close(r->db);
        r->db = NULL;
    }
    tp_worker__resource_release(w, r);
}

static void on_retry_timer(uv_timer_t *t) {
    job *j = t->data;
    if (j->cancelled) {
        tp_worker__job_finish(j, false);
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
    if (j->work_rc != 0)
        tp_metrics_retry(-1, NULL, j->work_rc);
    else
        tp_metrics_retry((int)j->result.stage, tp_stage_name(j->result.stage), j->result.err);
    uv_timer_start(&j->timer, on_retry_timer, (uint64_t)delay, 0);
}

static void run_after(uv_work_t *req, int status) {
    job *j = req->data;
    tp_worker *w = j->w;
    tp_log_ctx ctx = {j->req.request_id, tp_stage_name(j->result.stage), j->result.attempts, j->req.traceparent};
    if (j->result.status == TP_RUN_SUCCEEDED)
        ctx.stage = NULL, ctx.attempt = 0;

    j->part->busy--;
    w->pool_running--;
    pump_ready(w);
    /* The run committed stage transactions, perhaps receipts: the relay looks right away. */
    if (status != UV_ECANCELED && j->work_rc == 0)
        tp_relay_wake(w->relay);
    /* Cancelled before it ran, or its partition is gone: leave the record to the next owner. A
     * cancelled run that did finish (shutdown) still counts, so a restart redoes less. */
    if (status == UV_ECANCELED || (j->cancelled && (j->part->revoked || j->work_rc != 0 ||
                                                    j->result.status == TP_RUN_RETRY))) {
        tp_worker__job_finish(j, false);
        return;
    }
    if (j->work_rc == TP_ENOMEM) {
        tp_worker__job_finish(j, false); /* its offset is not stored: it comes again after the restart */
        tp_worker__fail_fast(w, "out of memory");
        return;
    }
    if (j->work_rc != 0 && !tp_err_is_transient(j->work_rc)) {
        /* The database refuses this request's bookkeeping (e.g. a value it cannot store):
         * retrying would pin the key and the partition's offsets forever. */
        char msg[700];
        snprintf(msg, sizeof(msg), "%s: %s", tp_strerror(j->work_rc), j->result.message);
        tp_log(TP_LOG_ERROR, "worker", &ctx, "request cannot be recorded, dead-lettered: %s", msg);
        tp_worker__send_to_dlq(j, tp_err_name(j->work_rc) + 4 /* past "TP_E" */, NULL, msg);
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
        tp_metrics_provisioning(TP_METRICS_SUCCEEDED, j->req.source);
        break;
    case TP_RUN_DENIED:
        tp_log(TP_LOG_INFO, "worker", &ctx, "request DENIED: %s", j->result.message);
        tp_metrics_provisioning(TP_METRICS_DENIED, j->req.source);
        break;
    case TP_RUN_FAILED:
        tp_log(TP_LOG_WARN, "worker", &ctx, "request FAILED (%s): %s", j->result.failure_reason,
               j->result.message);
        if (!j->cancelled) /* a cancelled one is reported again when its record comes again */
            tp_metrics_provisioning(TP_METRICS_FAILED, j->req.source);
        if (strcmp(j->result.failure_reason, "RETRIES_EXHAUSTED") == 0) {
            if (j->cancelled) { /* the dead letter is written when the record comes again */
                tp_worker__job_finish(j, false);
                return;
            }
            tp_worker__send_to_dlq(j, "RETRIES_EXHAUSTED", tp_stage_name(j->result.stage), j->result.message);
            return;
        }
        break;
    }
    w->stats_done++;
    tp_worker__job_finish(j, true);
}

static void submit_run(job *j) {
    j->phase = JOB_RUNNING;
    j->part->busy++;
    j->w->pool_running++;
    j->work.data = j;
    uv_queue_work(j->w->loop, &j->work, run_work, run_after);
}

/* j's turn: it runs now when the pool has a thread for it, or waits in the ready queue. */
static void start_run(job *j) {
    tp_worker *w = j->w;
    if (w->pool_running < TP_RUNS_PER_THREAD * w->pool_threads && !w->ready_head) {
        submit_run(j);
        return;
    }
    j->phase = JOB_READY;
    if (w->ready_tail)
        w->ready_tail->next_ready = j;
    else
        w->ready_head = j;
    w->ready_tail = j;
}

void tp_worker__handle_message(tp_worker *w, const tp_kafka_message *msg) {
    const char *topic = msg->topic;
    part_state *p = tp_worker__part_find(w, topic, msg->partition);
    char err[256] = "";
    job *j;
    int rc = 0;

    if (!p || p->revoked)
        return; /* a prefetched record of a partition we no longer own */
    tp_metrics_record_consumed();
    /* Copies of the record (a dead letter carries it byte for byte) before it counts. */
    j = calloc(1, sizeof(*j));
    if (j) {
        j->raw = malloc(msg->len ? msg->len : 1);
        j->key = msg->key && msg->key_len ? malloc(msg->key_len) : NULL;
    }
    if (j && j->raw && (j->key || !msg->key || !msg->key_len))
        rc = tp_worker__part_add_offset(p, msg->offset);
    if (!j || !j->raw || (!j->key && msg->key && msg->key_len) || rc != 0) {
        if (j) {
            free(j->raw);
            free(j->key);
        }
        free(j);
        tp_log_error("worker", "out of memory at %s[%d]@%lld", topic, (int)msg->partition,
                     (long long)msg->offset);
        /* Never skip a record: stop taking new ones; its offset is never stored, so it comes again. */
        tp_worker__fail_fast(w, "out of memory");
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
    tp_metrics_gauge_add(TP_METRICS_IN_FLIGHT, 1);

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
        tp_worker__send_to_dlq(j, name + 4 /* past "TP_E" */, NULL, err);
        tp_worker__maybe_pause(w);
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
            tp_worker__send_to_dlq(j, "VALIDATION", NULL, err);
            tp_worker__maybe_pause(w);
            return;
        }
    }
    j->slot = slot_get(w, j->req.tenant.slug);
    if (!j->slot) {
        tp_worker__job_finish(j, false); /* before the drain, which would otherwise cancel it too */
        tp_worker__fail_fast(w, "out of memory");
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
    tp_worker__maybe_pause(w);
}

/* Cancels the jobs of revoked (or, when stopping, all) partitions. Jobs that wait (for their key
 * or a retry timer) end now; jobs on a pool thread or waiting for a delivery report end when that
 * returns. Either way their offsets are not stored. */
void tp_worker__cancel_jobs(tp_worker *w, bool all) {
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
            if (j->cancelled && (j->phase == JOB_QUEUED || j->phase == JOB_READY || j->phase == JOB_BACKOFF))
                break;
        if (!j)
            return;
        if (j->timer_inited)
            uv_timer_stop(&j->timer);
        tp_worker__job_finish(j, false);
    }
}
