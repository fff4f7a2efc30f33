/* ingress_int.h: private declarations of worker/ingress (routes, Prometheus metrics, test knobs). */
#ifndef TP_INGRESS_INT_H
#define TP_INGRESS_INT_H

#include <stddef.h>
#include <stdint.h>

#include "tp/ingress.h"
#include "tp/stages.h"
#include "tp/store.h"

typedef enum tp_ingress_route {
    TP_ROUTE_ADMIN_TENANTS = 0, /* POST /api/admin/tenants */
    TP_ROUTE_SELF_SERVE,        /* POST /api/tenants/provision */
    TP_ROUTE_STATUS,            /* GET /api/provisioning/requests/{id} */
    TP_ROUTE_HEALTHZ,
    TP_ROUTE_READYZ,
    TP_ROUTE_METRICS,
    TP_ROUTE_OPENAPI, /* GET /openapi.yaml */
    TP_ROUTE_RECEIPTS_LOG, /* GET /api/receipts/checkpoint, {id}/inclusion, consistency */
    TP_ROUTE_ADMIN_TENANT_LIST,   /* GET /api/admin/tenants */
    TP_ROUTE_ADMIN_TENANT,        /* GET (DELETE) /api/admin/tenants/{slug} */
    TP_ROUTE_ADMIN_TENANT_ACTION, /* POST /api/admin/tenants/{slug}/plan|suspend|resume */
    TP_ROUTE_TENANT,              /* GET /api/tenants/{slug} (the owner's) */
    TP_ROUTE_TENANT_ACTION,       /* POST /api/tenants/{slug}/plan (the owner's) */
    TP_ROUTE_OTHER,
    TP_ROUTE_COUNT_
} tp_ingress_route;

#define TP_METRICS_BUCKETS 12
#define TP_METRICS_STATUS_MAX 600

/* Counters of the server; touched by the loop thread only. */
typedef struct tp_ingress_metrics {
    uint64_t requests[TP_ROUTE_COUNT_][TP_METRICS_STATUS_MAX];
    uint64_t latency_buckets[TP_ROUTE_COUNT_][TP_METRICS_BUCKETS]; /* cumulative at render */
    uint64_t latency_count[TP_ROUTE_COUNT_];
    double latency_sum_s[TP_ROUTE_COUNT_];
    int64_t in_flight;
    uint64_t produce_errors;
    uint64_t auth_failures;
} tp_ingress_metrics;

/* schemas/openapi.yaml as checked in, embedded at build time (cmake/embed.cmake); NUL-terminated,
 * tp_ingress_openapi_yaml_len bytes without the NUL. */
extern const char tp_ingress_openapi_yaml[];
extern const size_t tp_ingress_openapi_yaml_len;

/* The route label ("admin_tenants", ...). */
const char *tp_ingress_route_name(tp_ingress_route r);
/* Records one finished request. */
void tp_ingress_metrics_observe(tp_ingress_metrics *m, tp_ingress_route r, int status, double seconds);
/* Renders Prometheus text exposition 0.0.4; returns a new malloc'd string (length in *len) or NULL. */
char *tp_ingress_metrics_render(const tp_ingress_metrics *m, size_t *len);

typedef struct tp_ingress_server tp_ingress_server;
/* Overrides the shutdown budgets (tests): drain_ms for in-flight requests after a stop (default
 * 10 s), pool_wait_ms for hooks still running when tp_ingress_server_free is called (15 s).
 * Before tp_ingress_server_run. */
void tp_ingress_server_set_drain_ms(tp_ingress_server *srv, uint64_t drain_ms, uint64_t pool_wait_ms);

/* The dry run of a tenant action with this pool thread's OPA client and opa's tiers, allow-list
 * and admin role (tp_stages_action_preview on db). Returns what it returns, or TP_ENOMEM. */
int tp_ingress_opa_action_preview(tp_ingress_opa *opa, tp_db *db, const tp_request *req,
                                  tp_action_preview *out);

#endif
