/* registry.c: tp-worker's metrics as fixed arrays of atomics in static storage (any thread bumps
 * them with relaxed atomic operations: no lock, no allocation on the hot path), rendered in the
 * Prometheus text format on a scrape. Label sets are closed: stages, states, sources and the
 * TP_E* codes of include/tp/error.h. */
#include "tp/error.h"
#include "tp/metrics.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define N_ERRS (TP_ERR_LAST_ - TP_ERR_FIRST_ - 1)
#define N_SOURCES 3 /* tp_source */
#define N_BUCKETS 13

/* Upper bounds of the duration buckets, in seconds and in nanoseconds. */
static const double bucket_s[N_BUCKETS] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                           0.25,  0.5,    1.0,   2.5,  5.0,   10.0};
static const uint64_t bucket_ns[N_BUCKETS] = {
    1000000ull,   2500000ull,   5000000ull,    10000000ull,   25000000ull,
    50000000ull,  100000000ull, 250000000ull,  500000000ull,  1000000000ull,
    2500000000ull, 5000000000ull, 10000000000ull};

typedef struct hist {
    atomic_uint_fast64_t bucket[N_BUCKETS + 1]; /* per bucket (not cumulative); the last is +Inf */
    atomic_uint_fast64_t sum_ns;
} hist;

static struct registry {
    atomic_uint_fast64_t provisionings[TP_METRICS_STATE_COUNT_][N_SOURCES];
    atomic_uint_fast64_t consumed;
    hist stage[TP_METRICS_STAGES];
    const char *_Atomic stage_name[TP_METRICS_STAGES];
    atomic_uint_fast64_t retries[TP_METRICS_STAGES + 1][N_ERRS]; /* [0]: before any stage */
    atomic_uint_fast64_t dead_letters[N_ERRS + 1];               /* [N_ERRS]: other */
    atomic_uint_fast64_t receipts_published;
    hist opa;
    atomic_uint_fast64_t opa_errors[N_ERRS];
    atomic_uint_fast64_t pool_waits, pool_wait_ns;
    atomic_int_fast64_t gauge[TP_METRICS_GAUGE_COUNT_];
} reg;

static const char *const state_names[TP_METRICS_STATE_COUNT_] = {"SUCCEEDED", "FAILED", "DENIED"};

#define BUMP(x) atomic_fetch_add_explicit(&(x), 1, memory_order_relaxed)
#define ADD(x, n) atomic_fetch_add_explicit(&(x), (n), memory_order_relaxed)
#define LOAD(x) ((unsigned long long)atomic_load_explicit(&(x), memory_order_relaxed))

static int err_index(int err) {
    int i = err - TP_ERR_FIRST_ - 1;
    return i >= 0 && i < N_ERRS ? i : -1;
}

static const char *err_label(int i) { return tp_err_name(TP_ERR_FIRST_ + 1 + i) + 4; /* past "TP_E" */ }

uint64_t tp_metrics_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void hist_observe(hist *h, uint64_t ns) {
    int b = 0;
    while (b < N_BUCKETS && ns > bucket_ns[b])
        b++;
    BUMP(h->bucket[b]);
    ADD(h->sum_ns, ns);
}

void tp_metrics_provisioning(tp_metrics_state state, tp_source source) {
    if ((unsigned)state < TP_METRICS_STATE_COUNT_ && (unsigned)source < N_SOURCES)
        BUMP(reg.provisionings[state][source]);
}

void tp_metrics_record_consumed(void) { BUMP(reg.consumed); }

void tp_metrics_stage_observe(int stage, const char *name, uint64_t ns) {
    if (stage < 0 || stage >= TP_METRICS_STAGES)
        return;
    if (!atomic_load_explicit(&reg.stage_name[stage], memory_order_relaxed))
        atomic_store_explicit(&reg.stage_name[stage], name, memory_order_relaxed);
    hist_observe(&reg.stage[stage], ns);
}

void tp_metrics_retry(int stage, const char *name, int err) {
    int e = err_index(err);
    if (stage < -1 || stage >= TP_METRICS_STAGES || e < 0)
        return;
    if (stage >= 0 && name && !atomic_load_explicit(&reg.stage_name[stage], memory_order_relaxed))
        atomic_store_explicit(&reg.stage_name[stage], name, memory_order_relaxed);
    BUMP(reg.retries[stage + 1][e]);
}

void tp_metrics_dead_letter(const char *reason) {
    for (int i = 0; reason && i < N_ERRS; i++) {
        if (strcmp(err_label(i), reason) == 0) {
            BUMP(reg.dead_letters[i]);
            return;
        }
    }
    BUMP(reg.dead_letters[N_ERRS]);
}

void tp_metrics_receipt_published(void) { BUMP(reg.receipts_published); }

void tp_metrics_opa_decision(uint64_t ns, int err) {
    int e = err_index(err);
    hist_observe(&reg.opa, ns);
    if (err != 0 && e >= 0)
        BUMP(reg.opa_errors[e]);
}

void tp_metrics_pool_wait(uint64_t ns) {
    BUMP(reg.pool_waits);
    ADD(reg.pool_wait_ns, ns);
}

void tp_metrics_gauge_set(tp_metrics_gauge g, int64_t value) {
    if ((unsigned)g < TP_METRICS_GAUGE_COUNT_)
        atomic_store_explicit(&reg.gauge[g], value, memory_order_relaxed);
}

void tp_metrics_gauge_add(tp_metrics_gauge g, int64_t delta) {
    if ((unsigned)g < TP_METRICS_GAUGE_COUNT_)
        ADD(reg.gauge[g], delta);
}

int64_t tp_metrics_gauge_get(tp_metrics_gauge g) {
    return (unsigned)g < TP_METRICS_GAUGE_COUNT_
               ? (int64_t)atomic_load_explicit(&reg.gauge[g], memory_order_relaxed)
               : 0;
}

/* A histogram's series; labels is "" or `stage="tenant",` (with its trailing comma). The count
 * is the cumulative +Inf bucket, so the two always agree within a scrape. */
static void render_hist(tp_metrics_buf *b, const char *name, const char *labels, hist *h) {
    unsigned long long cum = 0;
    for (int i = 0; i <= N_BUCKETS; i++) {
        cum += LOAD(h->bucket[i]);
        if (i < N_BUCKETS)
            tp_metrics_printf(b, "%s_bucket{%sle=\"%g\"} %llu\n", name, labels, bucket_s[i], cum);
        else
            tp_metrics_printf(b, "%s_bucket{%sle=\"+Inf\"} %llu\n", name, labels, cum);
    }
    size_t n = strlen(labels);
    tp_metrics_printf(b, "%s_sum%s%.*s%s %.9f\n%s_count%s%.*s%s %llu\n", name, n ? "{" : "",
                      (int)(n ? n - 1 : 0), labels, n ? "}" : "", (double)LOAD(h->sum_ns) / 1e9,
                      name, n ? "{" : "", (int)(n ? n - 1 : 0), labels, n ? "}" : "", cum);
}

static const char *stage_label(int s) {
    const char *n = atomic_load_explicit(&reg.stage_name[s], memory_order_relaxed);
    return n ? n : "?";
}

void tp_metrics_render(tp_metrics_buf *b) {
    tp_metrics_family(b, "tp_worker_provisionings_total", "counter",
                      "Provisioning requests this process saw end in a terminal state, by state and "
                      "source (process-local: starts at 0 on every start; a redelivered finished "
                      "request counts again).");
    for (int s = 0; s < TP_METRICS_STATE_COUNT_; s++)
        for (int src = 0; src < N_SOURCES; src++)
            tp_metrics_printf(b, "tp_worker_provisionings_total{state=\"%s\",source=\"%s\"} %llu\n",
                              state_names[s], tp_source_name((tp_source)src),
                              LOAD(reg.provisionings[s][src]));
    tp_metrics_family(b, "tp_worker_records_consumed_total", "counter",
                      "Records taken from the requests topic (process-local).");
    tp_metrics_printf(b, "tp_worker_records_consumed_total %llu\n", LOAD(reg.consumed));

    tp_metrics_family(b, "tp_worker_stage_duration_seconds", "histogram",
                      "Time one stage took, by stage (its statements and, for policy, the OPA "
                      "decision; process-local).");
    for (int s = 0; s < TP_METRICS_STAGES; s++) {
        char labels[64];
        if (!atomic_load_explicit(&reg.stage_name[s], memory_order_relaxed))
            continue; /* never ran here */
        snprintf(labels, sizeof(labels), "stage=\"%s\",", stage_label(s));
        render_hist(b, "tp_worker_stage_duration_seconds", labels, &reg.stage[s]);
    }

    tp_metrics_family(b, "tp_worker_retries_total", "counter",
                      "Retries scheduled after a transient failure, by stage (\"none\": the run "
                      "could not reach the database) and reason (a TP_E* code; process-local).");
    for (int s = 0; s <= TP_METRICS_STAGES; s++)
        for (int e = 0; e < N_ERRS; e++)
            if (LOAD(reg.retries[s][e]))
                tp_metrics_printf(b, "tp_worker_retries_total{stage=\"%s\",reason=\"%s\"} %llu\n",
                                  s == 0 ? "none" : stage_label(s - 1), err_label(e),
                                  LOAD(reg.retries[s][e]));

    tp_metrics_family(b, "tp_worker_dead_letters_total", "counter",
                      "Dead letters stored (PostgreSQL row and DLQ record), by reason "
                      "(process-local).");
    for (int e = 0; e <= N_ERRS; e++)
        if (LOAD(reg.dead_letters[e]))
            tp_metrics_printf(b, "tp_worker_dead_letters_total{reason=\"%s\"} %llu\n",
                              e < N_ERRS ? err_label(e) : "OTHER", LOAD(reg.dead_letters[e]));

    tp_metrics_family(b, "tp_worker_receipts_published_total", "counter",
                      "Receipts this process's relay saw PERSISTED on the receipts topic "
                      "(process-local).");
    tp_metrics_printf(b, "tp_worker_receipts_published_total %llu\n", LOAD(reg.receipts_published));

    tp_metrics_family(b, "tp_worker_opa_decision_duration_seconds", "histogram",
                      "Time of one OPA decision call, failed ones included (process-local).");
    render_hist(b, "tp_worker_opa_decision_duration_seconds", "", &reg.opa);
    tp_metrics_family(b, "tp_worker_opa_errors_total", "counter",
                      "OPA decision calls that failed, by reason (process-local).");
    for (int e = 0; e < N_ERRS; e++)
        if (LOAD(reg.opa_errors[e]) || e == err_index(TP_EOPA_UNAVAILABLE))
            tp_metrics_printf(b, "tp_worker_opa_errors_total{reason=\"%s\"} %llu\n", err_label(e),
                              LOAD(reg.opa_errors[e]));

    tp_metrics_family(b, "tp_worker_pg_pool_waits_total", "counter",
                      "Stage runs that waited for a free PostgreSQL connection (process-local).");
    tp_metrics_printf(b, "tp_worker_pg_pool_waits_total %llu\n", LOAD(reg.pool_waits));
    tp_metrics_family(b, "tp_worker_pg_pool_wait_seconds_total", "counter",
                      "Time stage runs spent waiting for a free PostgreSQL connection "
                      "(process-local).");
    tp_metrics_printf(b, "tp_worker_pg_pool_wait_seconds_total %.9f\n",
                      (double)LOAD(reg.pool_wait_ns) / 1e9);

    tp_metrics_family(b, "tp_worker_requests_in_flight", "gauge",
                      "Requests consumed and not finished (running, queued behind their key, "
                      "waiting for a retry or a dead letter).");
    tp_metrics_printf(b, "tp_worker_requests_in_flight %lld\n",
                      (long long)tp_metrics_gauge_get(TP_METRICS_IN_FLIGHT));
    tp_metrics_family(b, "tp_worker_assigned_partitions", "gauge",
                      "Partitions of the requests topic assigned to this worker.");
    tp_metrics_printf(b, "tp_worker_assigned_partitions %lld\n",
                      (long long)tp_metrics_gauge_get(TP_METRICS_ASSIGNED_PARTITIONS));
    tp_metrics_family(b, "tp_worker_paused_partitions", "gauge",
                      "Assigned partitions whose fetching is paused (worker.inflight_max reached, "
                      "or draining).");
    tp_metrics_printf(b, "tp_worker_paused_partitions %lld\n",
                      (long long)tp_metrics_gauge_get(TP_METRICS_PAUSED_PARTITIONS));
}
