/* partitions.c: the partitions tp-worker owns: their offset watermarks and the offsets stored
 * from them, pause/resume of fetching around worker.inflight_max, and rebalances (a revoked
 * partition stores nothing more; its unassign waits for its pool work, at most
 * worker.revoke_timeout_ms: then that work is abandoned to the next owner). Loop thread. */
#include "consumer/worker_int.h"
#include "tp/error.h"
#include "tp/log.h"
#include "tp/metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

part_state *tp_worker__part_find(tp_worker *w, const char *topic, int32_t partition) {
    for (part_state *p = w->parts; p; p = p->next)
        if (!p->abandoned && p->partition == partition && strcmp(p->topic, topic) == 0)
            return p;
    return NULL;
}

static part_state *part_add(tp_worker *w, const char *topic, int32_t partition) {
    part_state *p = tp_worker__part_find(w, topic, partition);
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

void tp_worker__parts_drop_revoked(tp_worker *w) {
    part_state **pp = &w->parts;
    while (*pp) {
        part_state *p = *pp;
        if (p->revoked && p->busy == 0) {
            *pp = p->next;
            if (p->abandoned)
                w->parts_abandoned--;
            tp_watermark_release(&p->wm);
            free(p);
        } else {
            pp = &p->next;
        }
    }
}

/* Records a consumed offset in p's watermark. Returns 0 or TP_ENOMEM. */
int tp_worker__part_add_offset(part_state *p, int64_t offset) {
    int rc = tp_watermark_add(&p->wm, offset);
    if (rc == TP_EINVAL) {
        /* Offsets went backwards (an offset reset, a truncated log): whatever is still pending
         * from before can never be stored in order, so the partition starts over from here. */
        tp_log_warn("worker", "%s[%d]: offset %lld is behind earlier ones (reset or truncation): "
                    "%zu pending offsets forgotten, the watermark starts again", p->topic,
                    (int)p->partition, (long long)offset, tp_watermark_pending(&p->wm));
        tp_watermark_restart(&p->wm);
        rc = tp_watermark_add(&p->wm, offset);
    }
    return rc;
}

void tp_worker__part_finish_offset(tp_worker *w, part_state *p, int64_t offset, uint32_t epoch) {
    int64_t next;
    if (!p->revoked && epoch == p->wm.epoch && tp_watermark_finish(&p->wm, offset, &next))
        tp_consumer_store_offset(w->consumer, p->topic, p->partition, next);
}

void tp_worker__parts_free(tp_worker *w) {
    while (w->parts) {
        part_state *p = w->parts;
        w->parts = p->next;
        tp_watermark_release(&p->wm);
        free(p);
    }
}

/* The assignment gauges of include/tp/metrics.h, after any change to it or to pausing. */
static void publish_gauges(tp_worker *w) {
    int64_t n = 0;
    for (part_state *p = w->parts; p; p = p->next)
        n += !p->revoked;
    tp_metrics_gauge_set(TP_METRICS_ASSIGNED_PARTITIONS, n);
    tp_metrics_gauge_set(TP_METRICS_PAUSED_PARTITIONS, w->paused ? n : 0);
}

void tp_worker__set_paused(tp_worker *w, bool pause) {
    if ((pause ? tp_consumer_pause(w->consumer, NULL) : tp_consumer_resume(w->consumer)) != 0)
        return;
    w->paused = pause;
    publish_gauges(w);
}

void tp_worker__maybe_pause(tp_worker *w) {
    if (!w->paused && w->inflight >= w->inflight_max) {
        tp_log_debug("worker", "pausing: %d requests in flight", w->inflight);
        tp_worker__set_paused(w, true);
    }
}

void tp_worker__maybe_resume(tp_worker *w) {
    if (w->paused && !w->stopping && w->inflight <= w->inflight_max / 2) {
        tp_log_debug("worker", "resuming: %d requests in flight", w->inflight);
        tp_worker__set_paused(w, false);
    }
}

void tp_worker__check_revoke_done(tp_worker *w) {
    for (part_state *p = w->parts; p; p = p->next)
        if (p->revoked && p->busy > 0)
            return;
    w->revoke_pending = false;
    uv_timer_stop(&w->revoke_timer);
    tp_consumer_assign(w->consumer, NULL);
    tp_worker__parts_drop_revoked(w);
    tp_log_info("worker", "revocation complete");
}

/* The revoked partitions' work outlived worker.revoke_timeout_ms (a hung dependency): the whole
 * group's rebalance waits for this member, so give the partitions up now. Their running jobs are
 * already cancelled and their partitions revoked, so none stores an offset: each record is
 * consumed again by the next owner (the stages are idempotent if both runs overlap). The
 * abandoned states stay allocated, invisible, until their last job returns. */
static void on_revoke_timeout(uv_timer_t *t) {
    tp_worker *w = t->data;
    int parts = 0, jobs = 0;
    if (!w->revoke_pending)
        return;
    for (part_state *p = w->parts; p; p = p->next) {
        if (p->revoked && p->busy > 0 && !p->abandoned) {
            p->abandoned = true;
            w->parts_abandoned++;
            parts++;
            jobs += p->busy;
        }
    }
    tp_log_warn("worker", "revoke: %d jobs of %d partitions still running after %lld ms: abandoned "
                "to the next owner (their offsets are not stored)", jobs, parts,
                (long long)w->revoke_timeout_ms);
    w->revoke_pending = false;
    tp_consumer_assign(w->consumer, NULL);
    tp_worker__parts_drop_revoked(w);
    tp_log_info("worker", "revocation complete (work abandoned)");
}

void tp_worker__on_rebalance(void *arg, tp_consumer *c, bool assign, const tp_kafka_partitions *parts) {
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
        publish_gauges(w);
        return;
    }
    tp_log_info("worker", "revoking %d partitions", n);
    for (int i = 0; i < n; i++) {
        tp_kafka_partition kp = tp_kafka_partitions_get(parts, i);
        part_state *p = tp_worker__part_find(w, kp.topic, kp.partition);
        if (p)
            p->revoked = true;
    }
    publish_gauges(w);
    tp_worker__cancel_jobs(w, false);
    if (w->stopping) {
        /* Closing: in-flight work is checkpointed in PostgreSQL; give the partitions up now. */
        w->revoke_pending = false;
        tp_consumer_assign(c, NULL);
        return;
    }
    w->revoke_pending = true;
    tp_worker__check_revoke_done(w);
    if (w->revoke_pending && w->revoke_timeout_ms > 0) {
        w->revoke_timer.data = w;
        uv_timer_start(&w->revoke_timer, on_revoke_timeout, (uint64_t)w->revoke_timeout_ms, 0);
    }
}
