/* dlq.c: dead letters (poison records, invalid requests, exhausted retries, bookkeeping the
 * database refuses): first a dead_letters row in PostgreSQL on a pool thread (tpctl dlq reads
 * it), then the DeadLetter record on the DLQ topic, produced again after a backoff until it is
 * delivered; only then does the job's offset count. Loop thread unless noted. */
#include "consumer/worker_int.h"
#include "tp/error.h"
#include "tp/log.h"
#include "tp/metrics.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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
        tp_metrics_dead_letter(j->dlq_reason);
        tp_worker__job_finish(j, true);
        return;
    }
    if (err == TP_EKAFKA_FATAL)
        tp_worker__fail_fast(j->w, "the producer hit a fatal error");
    if (j->cancelled || err == TP_EKAFKA_FATAL) {
        tp_worker__job_finish(j, false);
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
        tp_worker__job_finish(j, false);
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
        tp_metrics_dead_letter(j->dlq_reason);
        tp_worker__job_finish(j, true);
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
    resource *r = tp_worker__resource_acquire(w);
    char part[16], off[32];
    const char *params[7];
    int lens[7] = {0}, fmts[7] = {0};
    tp_res *res = NULL;

    j->work_rc = tp_worker__resource_ready(w, r);
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
    tp_worker__resource_release(w, r);
}

static void dlq_db_after(uv_work_t *req, int status) {
    job *j = req->data;
    (void)status;
    j->part->busy--;
    if (j->cancelled) {
        tp_worker__job_finish(j, false);
        return;
    }
    if (j->work_rc != 0)
        tp_log_warn("worker", "recording dead letter in postgres failed (%s); producing it anyway",
                    tp_strerror(j->work_rc));
    dlq_produce(j);
}

void tp_worker__send_to_dlq(job *j, const char *reason, const char *stage, const char *message) {
    snprintf(j->dlq_reason, sizeof(j->dlq_reason), "%s", reason);
    snprintf(j->dlq_stage, sizeof(j->dlq_stage), "%s", stage ? stage : "");
    snprintf(j->dlq_message, sizeof(j->dlq_message), "%s", message ? message : "");
    j->phase = JOB_DLQ_DB;
    j->part->busy++;
    j->work.data = j;
    uv_queue_work(j->w->loop, &j->work, dlq_db_work, dlq_db_after);
}
