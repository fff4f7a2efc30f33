/* relay.h: the outbox relay inside tp-worker. It publishes unpublished receipt_outbox rows to the
 * receipts topic in per-tenant sequence order with the idempotent producer (key = tenant id;
 * headers receipt-id, action-type, content-type) and marks them published only on a PERSISTED
 * delivery report. One relay at a time per database (advisory lock), so several workers never
 * race; a crash re-publishes under the same receipt id. Loop thread only. */
#ifndef TP_RELAY_H
#define TP_RELAY_H

#include <stdbool.h>

#include "tp/config.h"
#include "tp/kafka.h"

typedef struct tp_relay tp_relay;

/* Starts the relay on loop (a uv_loop_t *, kept opaque here) with a producer of its own. cfg is
 * borrowed and must outlive the relay. Returns 0 or TP_E*. */
int tp_relay_new(const tp_config *cfg, void *loop, tp_relay **out);
/* Stops polling the outbox; a batch in progress still completes. */
void tp_relay_stop(tp_relay *r);
/* True once its producer hit a fatal error: the worker must restart (the relay stops publishing). */
bool tp_relay_failed(const tp_relay *r);
/* True when no batch is in progress. */
bool tp_relay_idle(const tp_relay *r);
/* Frees a stopped, idle relay (handles are closed on its loop: run the loop once more). */
void tp_relay_free(tp_relay *r);

#endif
