/* relay.h: the outbox relay inside tp-worker (worker/outbox/). It publishes unpublished
 * receipt_outbox rows to the receipts topic in per-tenant sequence order with the idempotent
 * producer (key = tenant id; headers receipt-id, action-type, content-type) and marks them
 * published only on a PERSISTED delivery report, a tenant's delivered prefix at a time. Woken by
 * events, never by a tick: tp_relay_wake after a local commit, NOTIFY tp_outbox from other
 * processes, delivery reports. Several relays share a database: tenants hash onto advisory-lock
 * slots and each relay serves the tenants of the slots it holds, so a tenant is never reordered.
 * A relay that takes a slot first reconciles with the topic's tail (receipts already there are
 * marked, not published again), so a crash between the broker's ack and the mark re-publishes
 * nothing. Loop thread only. */
#ifndef TP_RELAY_H
#define TP_RELAY_H

#include <stdbool.h>

#include "tp/config.h"
#include "tp/kafka.h"

typedef struct tp_relay tp_relay;

/* Called on the loop thread when the relay's state may matter to its owner: after it was stopped
 * (it may now be idle) or once it failed. */
typedef void (*tp_relay_event_fn)(void *arg);

/* Starts the relay on loop (a uv_loop_t *, kept opaque here) with a producer and a PostgreSQL
 * session of its own; it publishes what is waiting right away. cfg is borrowed and must outlive
 * the relay. Returns 0 or TP_E* (TP_ECONFIG: topic.receipts empty, schemas or producer settings
 * refused; the caller should not run without its relay). */
int tp_relay_new(const tp_config *cfg, void *loop, tp_relay **out);
/* Registers the owner's event callback (NULL to remove). */
void tp_relay_set_event_cb(tp_relay *r, tp_relay_event_fn fn, void *arg);
/* Tells the relay that a commit may have written outbox rows: it fetches soon (coalesced). */
void tp_relay_wake(tp_relay *r);
/* Stops fetching; rows in flight still settle (and are marked). */
void tp_relay_stop(tp_relay *r);
/* True once its producer hit a fatal error: the worker must restart (the relay stops publishing). */
bool tp_relay_failed(const tp_relay *r);
/* True when no database round runs and no row is in flight. */
bool tp_relay_idle(const tp_relay *r);
/* Frees a stopped relay (handles are closed on its loop: run the loop once more). */
void tp_relay_free(tp_relay *r);

#endif
