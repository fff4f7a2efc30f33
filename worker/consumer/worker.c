/* worker.c: tp-worker's engine, its loop: start-up, the wake-ups (the consumer's and the
 * producer's fds, a keepalive poll of an idle consumer), the receipts relay's events, and the
 * shutdown (SIGTERM drain within the grace, fail-fast exit 1). Jobs, partitions, dead letters
 * and pool resources live beside it (consumer/worker_int.h). Loop thread. */
#include "consumer/worker_int.h"
#include "tp/error.h"
#include "tp/log.h"
#include "tp/worker.h"

#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define POLL_BATCH 256    /* records per loop turn; the rest on the next turn (uv_idle) */
#define SERVE_MAX 1024    /* delivery reports per loop turn */

static void on_consumer_more(uv_idle_t *h);
static void on_producer_more(uv_idle_t *h);

static void on_message(void *arg, const tp_kafka_message *msg) {
    tp_worker *w = arg;
    if (!w->stopping)
        tp_worker__handle_message(w, msg);
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
        tp_worker__fail_fast(w, "the receipts relay's producer hit a fatal error");
    if (w->stopping)
        tp_worker__check_drained(w);
}

static void finish_now(tp_worker *w) {
    if (w->stopped)
        return;
    w->stopped = true;
    uv_timer_stop(&w->grace_timer);
    uv_stop(w->loop);
}

void tp_worker__check_drained(tp_worker *w) {
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
    tp_worker__ops_draining(w);
    tp_worker__set_paused(w, true);
    tp_worker__cancel_jobs(w, true);
    if (w->relay)
        tp_relay_stop(w->relay);
    uv_timer_start(&w->grace_timer, on_grace,
                   (uint64_t)tp_config_get_int(w->cfg, "worker.shutdown_grace_ms"), 0);
    tp_worker__check_drained(w);
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
void tp_worker__fail_fast(tp_worker *w, const char *why) {
    w->failed = true;
    if (w->stopping)
        return;
    tp_log_error("worker", "%s: draining %d in-flight requests, then exit 1", why, w->inflight);
    begin_drain(w);
}

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

static volatile sig_atomic_t stop_waiting;

static void on_stop_while_waiting(int signum) {
    (void)signum;
    stop_waiting = 1;
}

/* Start-up waits for PostgreSQL instead of exiting: the migrations run as soon as it answers,
 * with a doubling backoff (200 ms up to 5 s) while it does not (a worker started before its
 * database, or during a restart of it, comes up by itself). SIGTERM/SIGINT end the wait.
 * Returns 0, a permanent TP_E* (e.g. a newer schema), or TP_ESHUTDOWN when stopped. */
static int wait_for_database(const tp_config *cfg) {
    struct sigaction sa, old_term, old_int;
    int64_t delay = 200;
    int rc;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop_while_waiting;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, &old_term);
    sigaction(SIGINT, &sa, &old_int);
    while ((rc = migrate(cfg)) != 0 && tp_err_is_transient(rc) && !stop_waiting) {
        tp_log_warn("worker", "PostgreSQL is not reachable: trying again in %lld ms (nothing is "
                    "consumed meanwhile)", (long long)delay);
        for (int64_t slept = 0; slept < delay && !stop_waiting; slept += 50)
            usleep(50 * 1000);
        delay = delay * 2 > 5000 ? 5000 : delay * 2;
    }
    sigaction(SIGTERM, &old_term, NULL);
    sigaction(SIGINT, &old_int, NULL);
    return rc != 0 && stop_waiting ? TP_ESHUTDOWN : rc;
}

int tp_worker_run(const tp_config *cfg) {
    tp_worker w;
    char err[512];
    char threads[16];
    int pool = (int)tp_config_get_int(cfg, "worker.db_pool_size");
    int status = 1, rc;

    memset(&w, 0, sizeof(w));
    w.cfg = cfg;
    w.inflight_max = (int)tp_config_get_int(cfg, "worker.inflight_max");
    if (w.inflight_max < 1)
        w.inflight_max = 1;
    w.max_attempts = (int)tp_config_get_int(cfg, "retry.max_attempts");
    w.max_elapsed_ms = tp_config_get_int(cfg, "retry.max_elapsed_ms");
    w.backoff.initial_ms = tp_config_get_int(cfg, "retry.initial_ms");
    w.backoff.multiplier = tp_config_get_double(cfg, "retry.multiplier");
    w.backoff.cap_ms = tp_config_get_int(cfg, "retry.cap_ms");
    if (pool < 1)
        pool = 1;
    w.pool_threads = pool;
    /* libuv reads this once, at its first use of the pool: one pool thread per connection. */
    snprintf(threads, sizeof(threads), "%d", pool);
    setenv("UV_THREADPOOL_SIZE", threads, 1);
    pthread_mutex_init(&w.res_lock, NULL);
    pthread_cond_init(&w.res_cond, NULL);

    if (sodium_init() < 0) {
        tp_log_error("worker", "libsodium init failed");
        goto out;
    }
    /* Probes answer from the start (alive, not ready while PostgreSQL is awaited). */
    if (tp_worker__ops_start(&w) != 0)
        goto out;
    if ((rc = wait_for_database(cfg)) != 0) {
        if (rc == TP_ESHUTDOWN) {
            tp_log_info("worker", "stopped while waiting for PostgreSQL");
            status = 0;
        }
        goto out;
    }
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
    if (tp_quota_tiers_parse(w.tiers_json, w.tiers, err, sizeof(err)) != 0) {
        tp_log_error("worker", "quota tiers: %s: %s", tp_config_get(cfg, "quota.tiers_file"), err);
        goto out;
    }
    if (tp_signer_load(tp_config_get(cfg, "receipts.signing_key_file"), &w.signer) != 0) {
        tp_log_error("worker", "receipts signing key: cannot load %s (tpctl keygen writes one)",
                     tp_config_get(cfg, "receipts.signing_key_file"));
        goto out;
    }
    if (tp_worker__resources_new(&w, pool) != 0)
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
                        tp_worker__on_rebalance, &w, &w.consumer, err, sizeof(err)) != 0) {
        tp_log_error("worker", "consumer: %s", err);
        goto out;
    }
    w.max_poll_ms = tp_consumer_max_poll_interval_ms(w.consumer);
    if (w.max_poll_ms < 2000)
        w.max_poll_ms = 2000;
    w.loop = uv_default_loop();
    w.revoke_timeout_ms = tp_config_get_int(cfg, "worker.revoke_timeout_ms");
    uv_timer_init(w.loop, &w.revoke_timer); /* before any rebalance callback can run */
    w.revoke_timer.data = &w;
    /* A worker without its relay would provision and sign receipts that no one publishes: what
     * makes the start fail is permanent (configuration, memory), so say so and exit 1. */
    if ((rc = tp_relay_new(cfg, w.loop, &w.relay)) != 0) {
        tp_log_error("worker", "receipts relay: cannot start (%s): exit 1 rather than run without "
                     "publishing receipts", tp_err_name(rc));
        tp_consumer_close(w.consumer);
        goto out;
    }
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

    tp_worker__ops_loop_ready(&w);
    uv_run(w.loop, UV_RUN_DEFAULT);

    /* Drained: stop answering probes and scrapes (they read the consumer), commit what is
     * stored, leave the group, release everything. */
    tp_worker__ops_stop(&w);
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
    uv_close((uv_handle_t *)&w.revoke_timer, NULL);
    uv_close((uv_handle_t *)&w.sigterm, NULL);
    uv_close((uv_handle_t *)&w.sigint, NULL);
    uv_run(w.loop, UV_RUN_DEFAULT);
    uv_loop_close(w.loop);
    tp_log_info("worker", "stopped: %llu requests finished, %llu dead letters, %llu retries, "
                "%llu PostgreSQL round trips",
                (unsigned long long)w.stats_done, (unsigned long long)w.stats_dlq,
                (unsigned long long)w.stats_retries, tp_db_round_trips());
    status = w.failed ? 1 : 0;
out:
    tp_worker__ops_stop(&w);
    tp_consumer_free(w.consumer);
    tp_producer_free(w.producer, 5000);
    tp_worker__resources_free(&w);
    tp_signer_free(w.signer);
    free(w.tiers_json);
    tp_codec_free(w.codec);
    tp_worker__parts_free(&w);
    pthread_mutex_destroy(&w.res_lock);
    pthread_cond_destroy(&w.res_cond);
    return status;
}
