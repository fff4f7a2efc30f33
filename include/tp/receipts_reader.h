/* receipts_reader.h: reads a topic (the receipts topic) from the beginning with a group-less,
 * assign-based librdkafka consumer: every partition from its low watermark up to the high
 * watermark seen at the start, in offset order per partition, or on and on with follow. Used by
 * `tpctl receipts verify|tail` and the receipts tests. Nothing is committed. */
#ifndef TP_RECEIPTS_READER_H
#define TP_RECEIPTS_READER_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tp/config.h"

/* One record as fetched. Everything is borrowed for the duration of the callback only. */
typedef struct tp_topic_record {
    const char *topic;
    int32_t partition;
    int64_t offset;
    const void *key;       /* NULL when the record has no key */
    size_t key_len;
    const void *value;     /* NULL for a null (tombstone) value */
    size_t len;
    const void *impl;      /* the wrapper's own; for tp_topic_record_header */
} tp_topic_record;

/* The value of the last header called name (borrowed like the record). Returns 0 or
 * TP_ENOT_FOUND. */
int tp_topic_record_header(const tp_topic_record *rec, const char *name, const void **value,
                           size_t *len);

/* Called once per record, in offset order within a partition. Returning non-zero stops the read
 * and becomes tp_topic_read's result. */
typedef int (*tp_topic_record_fn)(void *arg, const tp_topic_record *rec);

typedef struct tp_topic_read_opts {
    bool follow;            /* false: stop at the high watermarks seen at the start */
    int idle_timeout_ms;    /* without follow: give up when no progress for this long (0: 30000) */
    volatile sig_atomic_t *stop;     /* optional: the read ends (returns 0) once *stop is non-zero */
} tp_topic_read_opts;

/* Reads topic with the kafka.* keys of cfg (bootstrap servers, security). opts may be NULL.
 * Returns 0 when every partition was read to its end (or, with follow, when *stop was set),
 * TP_ENOT_FOUND when the topic does not exist, TP_ETIMEOUT when the end was not reached in time,
 * TP_EKAFKA / TP_ECONFIG on client errors (errstr filled), or the callback's non-zero result.
 * Any thread; blocks. */
int tp_topic_read(const tp_config *cfg, const char *topic, const tp_topic_read_opts *opts,
                  tp_topic_record_fn fn, void *arg, char *errstr, size_t errstr_size);

/* Where a read starts and where it ended, per partition (the outbox relay's reconciliation reads
 * a topic's tail only). */
typedef struct tp_topic_range {
    const int64_t *start; /* in: partition p < n_start starts at start[p], clamped to its
                           * watermarks (below the low one: the low one; above the high one, a
                           * topic recreated: the low one); the others at their low watermark */
    int n_start;
    int64_t *end;         /* out: the high watermark partition p < n_end was read to */
    int n_end;
    int n_partitions;     /* out: the topic's partition count */
} tp_topic_range;

/* As tp_topic_read, starting where range says (range may be NULL: from the beginning) and
 * reporting how far each partition was read. */
int tp_topic_read_range(const tp_config *cfg, const char *topic, const tp_topic_read_opts *opts,
                        tp_topic_range *range, tp_topic_record_fn fn, void *arg, char *errstr,
                        size_t errstr_size);

#endif
