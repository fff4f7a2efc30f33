/* worker_int.h: declarations private to tp-worker's engine (worker/consumer): its state, the
 * job, partition and key-slot records, and the functions its files share: worker.c (loop,
 * start-up, shutdown), jobs.c, partitions.c, dlq.c, resources.c. Loop thread unless noted. */
#ifndef TP_WORKER_INT_H
#define TP_WORKER_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "consumer/watermark.h"
#include "tp/backoff.h"
#include "tp/codec.h"
#include "tp/config.h"
#include "tp/kafka.h"
#include "tp/policy.h"
#include "tp/receipts.h"
#include "tp/relay.h"
#include "tp/stages.h"
#include "tp/store.h"

typedef struct job job;
typedef struct tp_worker_ops tp_worker_ops;

typedef struct part_state {
    struct part_state *next;
    char topic[TP_DLQ_TOPIC_MAX + 1];
    int32_t partition;
    tp_watermark wm;
    int busy;     /* jobs of this partition on a pool thread or waiting for a delivery report */
    bool revoked; /* never store an offset of a revoked partition */
    bool abandoned; /* revoked, and its running work outlived worker.revoke_timeout_ms: no longer
                     * found by tp_worker__part_find; freed when its last job ends */
} part_state;

/* Buckets of the key slots' hash table: at worker.inflight_max (512 by default) keys in flight,
 * a list walked per job start and end cost ~2% of tp-worker's CPU (perf, scripts/bench). */
#define TP_KEY_SLOT_BUCKETS 1024
/* Runs handed to libuv's pool per pool thread (the rest wait in the ready queue). A relay round
 * then waits behind at most this many runs per thread: ~0.1 s at 300 provisionings/s with 4
 * threads. At 2 the relay's rounds came so often that their batches shrank (1.22 commits and
 * 0.29 ms of Kafka CPU per request against 1.11 and 0.18 at 8, scripts/bench in one sitting). */
#define TP_RUNS_PER_THREAD 8

typedef struct key_slot {
    struct key_slot *next;
    char key[TP_SLUG_MAX + 1];
    job *head, *tail; /* head is the one running (or next to run) */
} key_slot;

typedef enum job_phase {
    JOB_QUEUED,      /* waiting behind an earlier job with the same key */
    JOB_READY,       /* first of its key, waiting for a pool thread (the ready queue) */
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
    job *next_ready;
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
    tp_quota_tier tiers[TP_QUOTA_TIERS_N]; /* tiers_json parsed once, by tp_plan */
    tp_relay *relay;
    part_state *parts;
    key_slot *slots[TP_KEY_SLOT_BUCKETS]; /* the keys with jobs, hashed (slot_bucket) */
    job *jobs;
    /* Jobs whose turn it is wait here, not in libuv's queue: at most TP_RUNS_PER_THREAD x
     * pool_threads runs are handed to the pool at once, so the relay's and the dead letters'
     * pool work waits behind a few runs, not behind every request in flight (at 512 in flight,
     * a relay round waited ~3 s and receipts went out in bursts after the drain). */
    job *ready_head, *ready_tail;
    int pool_threads;
    int pool_running;  /* runs handed to the pool and not yet back */
    int inflight;
    int inflight_max;
    bool paused;
    bool revoke_pending;
    uv_timer_t revoke_timer;   /* bounds revoke_pending by worker.revoke_timeout_ms */
    int64_t revoke_timeout_ms;
    int parts_abandoned;       /* part_state records marked abandoned, not yet freed */
    bool stopping;
    bool stopped;
    bool failed; /* a fatal condition: drain, then exit 1 so the supervisor restarts us */
    int max_attempts;
    int64_t max_elapsed_ms; /* retry.max_elapsed_ms, read once */
    tp_backoff backoff;
    pthread_mutex_t res_lock;
    pthread_cond_t res_cond;
    resource *res_free;
    int res_count;
    uint64_t stats_done, stats_dlq, stats_retries;
    struct tp_worker_ops *ops; /* /metrics, /healthz, /readyz (ops.c); NULL when off */
    uv_async_t ops_ping;       /* /healthz asks the loop whether it turns */
} tp_worker;

/* ---- resources.c (pool threads borrow, the loop creates and frees) ------------------------- */

/* Pool thread: lends a resource, waiting for one to be free. */
resource *tp_worker__resource_acquire(tp_worker *w);
/* Pool thread: gives r back. */
void tp_worker__resource_release(tp_worker *w, resource *r);
/* Pool thread: makes sure r holds a live connection. Returns 0 or TP_EDB. */
int tp_worker__resource_ready(tp_worker *w, resource *r);
/* Creates n resources (OPA clients now, connections on first use). 0 or TP_ENOMEM. */
int tp_worker__resources_new(tp_worker *w, int n);
/* Frees every resource; the pool must be idle. */
void tp_worker__resources_free(tp_worker *w);

/* ---- partitions.c ---------------------------------------------------------------------------- */

/* Returns the state of an assigned (or revoked, not yet dropped) partition, or NULL. */
part_state *tp_worker__part_find(tp_worker *w, const char *topic, int32_t partition);
/* Records a consumed offset in p's watermark (restarting it when offsets went backwards).
 * Returns 0 or TP_ENOMEM. */
int tp_worker__part_add_offset(part_state *p, int64_t offset);
/* Marks offset (added in watermark epoch epoch) finished and stores the offset after the
 * finished prefix, unless p was revoked or restarted since. */
void tp_worker__part_finish_offset(tp_worker *w, part_state *p, int64_t offset, uint32_t epoch);
/* Frees every partition state (shutdown). */
void tp_worker__parts_free(tp_worker *w);
/* Pauses or resumes fetching the whole assignment. */
void tp_worker__set_paused(tp_worker *w, bool pause);
/* Pauses at worker.inflight_max requests in flight; resumes at half of it (not while stopping). */
void tp_worker__maybe_pause(tp_worker *w);
void tp_worker__maybe_resume(tp_worker *w);
/* Gives the revoked partitions up once none of them has work on a pool thread or in delivery. */
void tp_worker__check_revoke_done(tp_worker *w);
/* Frees the states of revoked partitions whose work has all ended (abandoned ones included). */
void tp_worker__parts_drop_revoked(tp_worker *w);
/* The consumer's rebalance callback (arg is the tp_worker). */
void tp_worker__on_rebalance(void *arg, tp_consumer *c, bool assign, const tp_kafka_partitions *parts);

/* ---- jobs.c ---------------------------------------------------------------------------------- */

/* Turns a consumed record into a job: copies it, decodes and validates it (dead-lettering what
 * fails), queues it behind its key and runs it when it is first. */
void tp_worker__handle_message(tp_worker *w, const tp_kafka_message *msg);
/* Ends a job: with store, its offset counts as finished; without (cancelled), it stays behind the
 * watermark so the record is consumed again by whoever owns the partition next. Frees j and
 * starts the next job of its key. */
void tp_worker__job_finish(job *j, bool store);
/* Cancels the jobs of revoked (or, with all, every) partitions; none stores its offset. */
void tp_worker__cancel_jobs(tp_worker *w, bool all);

/* ---- dlq.c ----------------------------------------------------------------------------------- */

/* Sends j to the dead letters with a reason code, the failed stage (or NULL) and a message. */
void tp_worker__send_to_dlq(job *j, const char *reason, const char *stage, const char *message);

/* ---- ops.c: the operations endpoint's answers (worker/ops serves them) ----------------------- */

/* Starts serving worker.http_listen (nothing when it is empty), before the start-up waits.
 * Returns 0 or the TP_E* of a bad or busy address (logged). */
int tp_worker__ops_start(tp_worker *w);
/* Loop thread, before uv_run: /healthz pings the loop from now on. */
void tp_worker__ops_loop_ready(tp_worker *w);
/* The drain began: /readyz says so. */
void tp_worker__ops_draining(tp_worker *w);
/* Stops serving and frees; closes the ping handle (run the loop afterwards). NULL ops is fine. */
void tp_worker__ops_stop(tp_worker *w);

/* ---- worker.c -------------------------------------------------------------------------------- */

/* While stopping: leaves the loop once no job is in flight and the relay is idle. */
void tp_worker__check_drained(tp_worker *w);
/* Something the worker cannot recover from in place (a fatal producer error, out of memory):
 * drain like SIGTERM and exit 1; a restart resumes from the stored offsets. */
void tp_worker__fail_fast(tp_worker *w, const char *why);

#endif
