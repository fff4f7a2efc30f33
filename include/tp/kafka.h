/* kafka.h: the librdkafka wrapper (worker/kafka/, the only includer of rdkafka.h), shared by
 * tp-worker (group consumer, DLQ, receipts relay), tp-ingress (requests, readiness) and tpctl.
 * Idempotent producer (acks=all), murmur2_random partitioner; a group consumer whose offsets are
 * stored only when asked; a metadata probe. `kafka.*` config keys are passed to librdkafka
 * unchanged. librdkafka errors become TP_E* codes here. */
#ifndef TP_KAFKA_H
#define TP_KAFKA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tp/config.h"

typedef struct tp_producer tp_producer;

typedef struct tp_kafka_header {
    const char *name;
    const void *value;
    size_t len;
} tp_kafka_header;

/* Called from tp_producer_poll/flush on the polling thread once per record: err is 0 when the
 * broker reports the record PERSISTED, a negative TP_E* otherwise. */
typedef void (*tp_delivery_fn)(void *opaque, int err, int32_t partition, int64_t offset);

/* Creates an idempotent producer from cfg (kafka.* keys). Returns 0 or TP_EKAFKA_FATAL/TP_ECONFIG. */
int tp_producer_new(const tp_config *cfg, tp_producer **out, char *errstr, size_t errstr_size);
/* Destroys the producer after flushing for at most flush_ms. */
void tp_producer_free(tp_producer *p, int flush_ms);
/* Enqueues one record (bytes are copied). fn may be NULL. Returns 0, TP_EKAFKA (queue full, try
 * later) or TP_EKAFKA_FATAL. Thread-safe. */
int tp_producer_send(tp_producer *p, const char *topic, const void *key, size_t key_len,
                     const void *value, size_t value_len, const tp_kafka_header *headers,
                     int n_headers, tp_delivery_fn fn, void *opaque);
/* Serves delivery reports; returns the number served. */
int tp_producer_poll(tp_producer *p, int timeout_ms);
/* Event-driven delivery reports: returns a file descriptor (owned by p, valid until
 * tp_producer_free) that becomes readable when reports are waiting, or -1 when it cannot be made.
 * Watch it (e.g. with uv_poll) and call tp_producer_serve when it is readable. The fd is written
 * only when the queue goes from empty to non-empty: tp_producer_serve empties both. */
int tp_producer_wakeup_fd(tp_producer *p);
/* Drains the wake-up fd, then serves delivery reports without blocking until none is waiting or
 * max (> 0) were served. Returns the number served: max means more may be waiting (call again
 * soon, e.g. from a uv_idle, since the fd will not fire for them). Polling thread only. */
int tp_producer_serve(tp_producer *p, int max);
/* Waits until every record is delivered or failed; 0 or TP_ETIMEOUT. */
int tp_producer_flush(tp_producer *p, int timeout_ms);
/* Records waiting for a delivery report. */
int tp_producer_outq_len(tp_producer *p);

/* ---- group consumer ------------------------------------------------------------------------ */

typedef struct tp_consumer tp_consumer;

/* One consumed record. Everything is borrowed for the duration of the callback only. */
typedef struct tp_kafka_message {
    const char *topic;
    int32_t partition;
    int64_t offset;
    const void *key; /* NULL when the record has no key */
    size_t key_len;
    const void *value;
    size_t len;
    const void *impl; /* the wrapper's own; for tp_kafka_message_header */
} tp_kafka_message;

/* One partition; topic is borrowed from the list it came from. */
typedef struct tp_kafka_partition {
    const char *topic;
    int32_t partition;
} tp_kafka_partition;

/* A list of partitions handed to a rebalance callback (librdkafka's own, borrowed for the
 * duration of the callback). */
typedef struct tp_kafka_partitions tp_kafka_partitions;

int tp_kafka_partitions_count(const tp_kafka_partitions *parts);
/* The i-th partition of parts (0 <= i < count). */
tp_kafka_partition tp_kafka_partitions_get(const tp_kafka_partitions *parts, int i);

/* Called for each record served by tp_consumer_serve (never for consumer errors: those are
 * logged). */
typedef void (*tp_consumer_message_fn)(void *arg, const tp_kafka_message *msg);
/* Called on a rebalance, from tp_consumer_serve or tp_consumer_close, on their thread: assign
 * is true when parts were assigned to us, false when they are being revoked. The callee must
 * call tp_consumer_assign: with parts when assigned (then perhaps tp_consumer_pause), with NULL
 * once it has let go of the revoked ones (now or later). */
typedef void (*tp_consumer_rebalance_fn)(void *arg, tp_consumer *c, bool assign,
                                         const tp_kafka_partitions *parts);

/* Creates a consumer in group group_id, subscribed to topic, from cfg (kafka.* keys). Offsets
 * are committed automatically (each second) but only once stored with tp_consumer_store_offset;
 * a partition without a committed offset starts at its earliest record. A wake-up fd
 * (tp_consumer_wakeup_fd) is armed before the subscription. on_rebalance is required. Returns 0,
 * TP_ECONFIG or TP_EKAFKA (errstr filled). */
int tp_consumer_new(const tp_config *cfg, const char *group_id, const char *topic,
                    tp_consumer_rebalance_fn on_rebalance, void *arg, tp_consumer **out,
                    char *errstr, size_t errstr_size);
/* Destroys the consumer (after tp_consumer_close, or without leaving the group politely). NULL
 * is ignored. */
void tp_consumer_free(tp_consumer *c);
/* A file descriptor (owned by c) that becomes readable when the consumer queue goes from empty
 * to non-empty: watch it and call tp_consumer_serve. */
int tp_consumer_wakeup_fd(const tp_consumer *c);
/* librdkafka's max.poll.interval.ms as configured (the consumer leaves its group when it was not
 * served for that long). */
int64_t tp_consumer_max_poll_interval_ms(const tp_consumer *c);
/* Drains the wake-up fd, then serves the consumer queue without blocking: at most max events
 * (records, errors, rebalances). Returns the number served: max means more may be waiting (call
 * again soon; the fd will not fire for them). The polling thread only. */
int tp_consumer_serve(tp_consumer *c, int max, tp_consumer_message_fn fn, void *arg);
/* Copies nothing: points *value and *len at the last header called name of msg. Returns 0 or
 * TP_ENOT_FOUND. */
int tp_kafka_message_header(const tp_kafka_message *msg, const char *name, const void **value,
                            size_t *len);
/* Takes parts as the assignment (NULL: none). Returns 0 or TP_EKAFKA. */
int tp_consumer_assign(tp_consumer *c, const tp_kafka_partitions *parts);
/* Pauses fetching parts (NULL: the whole current assignment). Returns 0 or TP_EKAFKA (the
 * assignment could not be read). */
int tp_consumer_pause(tp_consumer *c, const tp_kafka_partitions *parts);
/* Resumes fetching the whole current assignment. Returns 0 or TP_EKAFKA. */
int tp_consumer_resume(tp_consumer *c);
/* Stores next (the next offset to consume) as topic[partition]'s offset to commit. 0 or
 * TP_EKAFKA (logged). */
int tp_consumer_store_offset(tp_consumer *c, const char *topic, int32_t partition, int64_t next);
/* Commits the stored offsets now and waits for the answer. 0 or TP_EKAFKA. */
int tp_consumer_commit(tp_consumer *c);
/* Leaves the group (a last rebalance callback revokes everything). Call tp_consumer_free after. */
void tp_consumer_close(tp_consumer *c);
/* Called by tp_consumer_lag once per assigned partition. */
typedef void (*tp_consumer_lag_fn)(void *arg, const char *topic, int32_t partition, int64_t lag);
/* Reports each assigned partition's lag: records on the broker past the consumer's position (the
 * high watermark as last fetched, so a paused partition's may be stale; before the first record,
 * counted from the committed offset, asked within timeout_ms). Partitions not fetched yet are
 * left out. Any thread (e.g. a metrics scrape beside the polling thread); blocks at most
 * timeout_ms. Returns 0 or TP_EKAFKA. */
int tp_consumer_lag(tp_consumer *c, int timeout_ms, tp_consumer_lag_fn fn, void *arg);

/* ---- metadata probe ------------------------------------------------------------------------- */

typedef struct tp_kafka_probe tp_kafka_probe;

/* A client that only asks the cluster for metadata (readiness checks). Returns 0 or
 * TP_EKAFKA_FATAL/TP_ECONFIG (errstr filled). */
int tp_kafka_probe_new(const tp_config *cfg, tp_kafka_probe **out, char *errstr, size_t errstr_size);
/* Asks for the cluster's metadata within timeout_ms. Returns 0, or TP_EKAFKA with librdkafka's
 * reason in errstr. Any thread; blocks. */
int tp_kafka_probe_check(tp_kafka_probe *probe, int timeout_ms, char *errstr, size_t errstr_size);
/* NULL is ignored. */
void tp_kafka_probe_free(tp_kafka_probe *probe);

#endif
