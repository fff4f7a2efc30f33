/* resources.c: what a stage run borrows on its pool thread: a PostgreSQL connection (opened on
 * first use, dropped when it is found dead) and an OPA client, one pair per pool thread, lent
 * out from a mutex-guarded free list. */
#include "consumer/worker_int.h"
#include "tp/error.h"
#include "tp/log.h"
#include "tp/metrics.h"

#include <stdlib.h>

resource *tp_worker__resource_acquire(tp_worker *w) {
    resource *r;
    uint64_t waited_since = 0;
    pthread_mutex_lock(&w->res_lock);
    if (!w->res_free)
        waited_since = tp_metrics_now_ns();
    while (!w->res_free)
        pthread_cond_wait(&w->res_cond, &w->res_lock);
    if (waited_since)
        tp_metrics_pool_wait(tp_metrics_now_ns() - waited_since);
    r = w->res_free;
    w->res_free = r->next;
    pthread_mutex_unlock(&w->res_lock);
    return r;
}

void tp_worker__resource_release(tp_worker *w, resource *r) {
    pthread_mutex_lock(&w->res_lock);
    r->next = w->res_free;
    w->res_free = r;
    pthread_cond_signal(&w->res_cond);
    pthread_mutex_unlock(&w->res_lock);
}

/* Pool thread: makes sure the resource holds a live connection. */
int tp_worker__resource_ready(tp_worker *w, resource *r) {
    char err[256];
    if (r->db)
        return 0;
    if (tp_db_connect_cfg(w->cfg, &r->db, err, sizeof(err)) != 0) {
        tp_log_warn("worker", "postgres connect: %s", err);
        r->db = NULL;
        return TP_EDB;
    }
    return 0;
}

int tp_worker__resources_new(tp_worker *w, int n) {
    for (int i = 0; i < n; i++) {
        resource *r = calloc(1, sizeof(*r));
        if (!r)
            return TP_ENOMEM;
        r->policy = tp_policy_client_new(tp_config_get(w->cfg, "opa.url"),
                                         (long)tp_config_get_int(w->cfg, "opa.timeout_ms"));
        if (!r->policy) {
            free(r);
            return TP_ENOMEM;
        }
        r->next = w->res_free;
        w->res_free = r;
    }
    w->res_count = n;
    return 0;
}

void tp_worker__resources_free(tp_worker *w) {
    resource *r = w->res_free, *next;
    for (; r; r = next) { /* every resource is back on the free list once the pool is idle */
        next = r->next;
        tp_db_close(r->db);
        tp_policy_client_free(r->policy);
        free(r);
    }
}
