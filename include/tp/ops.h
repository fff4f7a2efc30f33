/* ops.h: tp-worker's operations endpoint (worker/ops): a small libh2o server on its own thread
 * and libuv loop serving GET /metrics (Prometheus text format 0.0.4), /healthz and /readyz. What
 * the answers say comes from the caller's hooks, so the server knows nothing of the engine. */
#ifndef TP_OPS_H
#define TP_OPS_H

#include <stddef.h>

#include "tp/metrics.h"

typedef struct tp_ops_server tp_ops_server;

/* The engine's answers. Every hook may block (bounded by the engine's own deadlines) and is
 * called from the server's threads, one call at a time per hook kind: live on the HTTP thread
 * (keep it short: it delays every answer while it runs), ready and render on the server's check
 * thread (they never delay /healthz). */
typedef struct tp_ops_hooks {
    void *opaque;
    /* Is the engine's loop turning? 0, or non-zero with why in detail. */
    int (*live)(void *opaque, char *detail, size_t cap);
    /* Writes a JSON object of checks into b and returns 0 when ready, non-zero when not. */
    int (*ready)(void *opaque, tp_metrics_buf *b);
    /* Appends the engine's own series (those computed at scrape time) to b. */
    void (*render)(void *opaque, tp_metrics_buf *b);
} tp_ops_hooks;

/* Starts serving on listen ("ip:port" or "[ipv6]:port", numeric; port 0 picks a free one). Returns 0 with
 * *out set, or TP_ECONFIG (unparsable address) / TP_EIO (cannot listen) / TP_ENOMEM with errstr
 * filled. hooks is copied; its opaque must outlive the server. */
int tp_ops_server_start(const char *listen, const tp_ops_hooks *hooks, tp_ops_server **out,
                        char *errstr, size_t errstr_size);
/* The port it listens on. */
int tp_ops_server_port(const tp_ops_server *s);
/* Stops serving, waits for the check thread's current hook call, joins the threads and frees.
 * NULL is ignored. */
void tp_ops_server_stop(tp_ops_server *s);

#endif
