/* metrics.h: tp-worker's metric registry (worker/metrics) and the Prometheus text-format writer
 * (exposition format 0.0.4) it shares with tp-ingress. The registry is process-wide: fixed arrays
 * of C11 atomics in static storage, so any layer (stages, policy, outbox, the engine) bumps a
 * counter with one or two relaxed atomic operations, from any thread, without a lock, without an
 * allocation and without knowing who renders it. Counters live as long as the process (a restart
 * starts from zero), and their help texts say so. Depends on common only. */
#ifndef TP_METRICS_H
#define TP_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "tp/request.h"

/* ---- text-format writer ---------------------------------------------------------------------- */

/* A growing text buffer. Zero-initialise it; on out of memory it stops growing and sets failed. */
typedef struct tp_metrics_buf {
    char *p;
    size_t len, cap;
    int failed;
} tp_metrics_buf;

/* Appends printf-style text. */
void tp_metrics_printf(tp_metrics_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends the # HELP and # TYPE lines of a family (type: counter, gauge, histogram). */
void tp_metrics_family(tp_metrics_buf *b, const char *name, const char *type, const char *help);
/* Appends a label value with the format's escapes (backslash, double quote, newline). */
void tp_metrics_label_value(tp_metrics_buf *b, const char *value);
/* Returns the text (the caller frees it, *len set) or NULL when the buffer failed (then freed). */
char *tp_metrics_buf_take(tp_metrics_buf *b, size_t *len);

/* ---- the registry (any thread) --------------------------------------------------------------- */

#define TP_METRICS_STAGES 8 /* the stages of include/tp/stages.h (seven + state), by tp_stage_id */

typedef enum tp_metrics_state {
    TP_METRICS_SUCCEEDED = 0,
    TP_METRICS_FAILED,
    TP_METRICS_DENIED,
    TP_METRICS_STATE_COUNT_
} tp_metrics_state;

typedef enum tp_metrics_gauge {
    TP_METRICS_IN_FLIGHT = 0,       /* requests consumed and not finished (the engine's jobs) */
    TP_METRICS_ASSIGNED_PARTITIONS, /* partitions of the requests topic assigned to this worker */
    TP_METRICS_PAUSED_PARTITIONS,   /* of those, paused (in flight at worker.inflight_max) */
    TP_METRICS_GAUGE_COUNT_
} tp_metrics_gauge;

/* A request reached a terminal state in this process. */
void tp_metrics_provisioning(tp_metrics_state state, tp_source source);
/* A record was taken from the requests topic. */
void tp_metrics_record_consumed(void);
/* One stage (stage: its tp_stage_id, name: its static name) ran for ns nanoseconds. */
void tp_metrics_stage_observe(int stage, const char *name, uint64_t ns);
/* A retry was scheduled: stage is a tp_stage_id, or -1 when the run could not even reach the
 * database to record its outcome; err the TP_E* code behind it. */
void tp_metrics_retry(int stage, const char *name, int err);
/* A dead letter was stored (PostgreSQL row and DLQ record); reason is a TP_E* name without its
 * "TP_E" prefix ("VALIDATION", "RETRIES_EXHAUSTED", "DECODE_FRAMING", ...). */
void tp_metrics_dead_letter(const char *reason);
/* The relay saw a receipt PERSISTED on the receipts topic. */
void tp_metrics_receipt_published(void);
/* One OPA decision call took ns; err is 0 or the TP_E* code it failed with. */
void tp_metrics_opa_decision(uint64_t ns, int err);
/* A stage run waited ns for a free PostgreSQL connection of the pool (only waits are counted). */
void tp_metrics_pool_wait(uint64_t ns);
/* Sets or moves a gauge. */
void tp_metrics_gauge_set(tp_metrics_gauge g, int64_t value);
void tp_metrics_gauge_add(tp_metrics_gauge g, int64_t delta);
int64_t tp_metrics_gauge_get(tp_metrics_gauge g);

/* Monotonic nanoseconds, for the durations above. */
uint64_t tp_metrics_now_ns(void);

/* Appends every family of the registry to b. Any thread; the values are read one by one, so a
 * scrape during updates may see one counter bumped and the next not yet. */
void tp_metrics_render(tp_metrics_buf *b);

#endif
