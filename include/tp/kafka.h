/* kafka.h: the librdkafka wrapper's producer side, shared by tp-worker (DLQ, receipts relay),
 * tp-ingress (requests) and tpctl. Idempotent producer (acks=all), murmur2_random partitioner;
 * `kafka.*` config keys are passed to librdkafka unchanged. */
#ifndef TP_KAFKA_H
#define TP_KAFKA_H

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

/* Applies every kafka.* key of cfg to a librdkafka conf (as void * to keep rdkafka.h private) and
 * routes librdkafka's log lines into our JSON logs. Returns 0 or TP_ECONFIG. */
int tp_kafka_conf_apply(void *rd_conf, const tp_config *cfg, char *errstr, size_t errstr_size);

#endif
