/* metrics.c: Prometheus text exposition of tp-ingress: requests by route and status, a latency
 * histogram per route, requests in flight, produce and auth failures (written with the text-format
 * writer of include/tp/metrics.h, which tp-worker's registry uses too). */
#include "ingress/ingress_int.h"
#include "tp/metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const double bucket_le[TP_METRICS_BUCKETS] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                     0.1,   0.25,   0.5,   1.0,  2.5,   10.0};
static const char *const route_names[TP_ROUTE_COUNT_] = {
    "admin_tenants", "self_serve_provision", "request_status", "healthz", "readyz", "metrics",
    "openapi", "receipts_log", "admin_tenant_list", "admin_tenant", "admin_tenant_action", "tenant",
    "tenant_action", "other"};

const char *tp_ingress_route_name(tp_ingress_route r) {
    return (unsigned)r < TP_ROUTE_COUNT_ ? route_names[r] : "other";
}

void tp_ingress_metrics_observe(tp_ingress_metrics *m, tp_ingress_route r, int status, double seconds) {
    if ((unsigned)r >= TP_ROUTE_COUNT_)
        r = TP_ROUTE_OTHER;
    if (status < 0 || status >= TP_METRICS_STATUS_MAX)
        status = 0;
    m->requests[r][status]++;
    for (int b = 0; b < TP_METRICS_BUCKETS; b++) {
        if (seconds <= bucket_le[b]) {
            m->latency_buckets[r][b]++;
            break;
        }
    }
    m->latency_count[r]++;
    m->latency_sum_s[r] += seconds;
}

char *tp_ingress_metrics_render(const tp_ingress_metrics *m, size_t *len) {
    tp_metrics_buf b = {0};
    tp_metrics_printf(&b, "# HELP tp_ingress_requests_total HTTP requests answered, by route and status.\n"
            "# TYPE tp_ingress_requests_total counter\n");
    for (int r = 0; r < TP_ROUTE_COUNT_; r++)
        for (int s = 0; s < TP_METRICS_STATUS_MAX; s++)
            if (m->requests[r][s])
                tp_metrics_printf(&b, "tp_ingress_requests_total{route=\"%s\",status=\"%d\"} %llu\n",
                    route_names[r], s, (unsigned long long)m->requests[r][s]);
    tp_metrics_printf(&b, "# HELP tp_ingress_request_duration_seconds Time from request to response.\n"
            "# TYPE tp_ingress_request_duration_seconds histogram\n");
    for (int r = 0; r < TP_ROUTE_COUNT_; r++) {
        if (!m->latency_count[r])
            continue;
        uint64_t cum = 0;
        for (int bk = 0; bk < TP_METRICS_BUCKETS; bk++) {
            cum += m->latency_buckets[r][bk];
            tp_metrics_printf(&b, "tp_ingress_request_duration_seconds_bucket{route=\"%s\",le=\"%g\"} %llu\n",
                route_names[r], bucket_le[bk], (unsigned long long)cum);
        }
        tp_metrics_printf(&b, "tp_ingress_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} %llu\n"
                "tp_ingress_request_duration_seconds_sum{route=\"%s\"} %.6f\n"
                "tp_ingress_request_duration_seconds_count{route=\"%s\"} %llu\n",
            route_names[r], (unsigned long long)m->latency_count[r], route_names[r],
            m->latency_sum_s[r], route_names[r], (unsigned long long)m->latency_count[r]);
    }
    tp_metrics_printf(&b, "# HELP tp_ingress_requests_in_flight Requests being handled.\n"
            "# TYPE tp_ingress_requests_in_flight gauge\n"
            "tp_ingress_requests_in_flight %lld\n"
            "# HELP tp_ingress_produce_errors_total Enqueue (Kafka) failures.\n"
            "# TYPE tp_ingress_produce_errors_total counter\n"
            "tp_ingress_produce_errors_total %llu\n"
            "# HELP tp_ingress_auth_failures_total Requests rejected with 401.\n"
            "# TYPE tp_ingress_auth_failures_total counter\n"
            "tp_ingress_auth_failures_total %llu\n",
        (long long)m->in_flight, (unsigned long long)m->produce_errors,
        (unsigned long long)m->auth_failures);
    return tp_metrics_buf_take(&b, len);
}
