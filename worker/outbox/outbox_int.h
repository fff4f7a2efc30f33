/* outbox_int.h: declarations private to worker/outbox (and its unit tests): the pure rules of
 * the relay (plan.c) and the pool-thread side of its PostgreSQL work (relay_db.c). */
#ifndef TP_OUTBOX_INT_H
#define TP_OUTBOX_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tp/codec.h"
#include "tp/config.h"
#include "tp/store.h"

/* Tenants are spread over this many advisory-lock slots (slot = hashtext(tenant_id) & 15); a
 * relay publishes the tenants of the slots it holds, so one tenant has one publisher at a time. */
#define TP_OUTBOX_SLOTS 16
#define TP_OUTBOX_CHANNEL "tp_outbox"

/* A receipt sent to Kafka and not yet settled. */
typedef enum tp_outbox_state {
    TP_OUTBOX_SENT,      /* waiting for its delivery report */
    TP_OUTBOX_DELIVERED, /* PERSISTED */
    TP_OUTBOX_FAILED,    /* not persisted: must go out again, before any later row of its tenant */
} tp_outbox_state;

typedef enum tp_outbox_verdict {
    TP_OUTBOX_WAIT, /* keep: an earlier row of the tenant is unsettled, or it is */
    TP_OUTBOX_MARK, /* mark published: it and every earlier row of the tenant are delivered */
    TP_OUTBOX_DROP, /* forget without marking: a failed row or one behind it, all reported; they
                     * are fetched and sent again in order */
} tp_outbox_verdict;

/* One tenant's unsettled rows in send order (which is sequence order): the verdict of each.
 * Marks only the delivered prefix, so a later receipt is never marked while an earlier one
 * failed (it would then be republished behind the later one). Pure. */
void tp_outbox_verdicts(const tp_outbox_state *state, size_t n, tp_outbox_verdict *out);

/* The number of slots one of n_relays relays should hold (every slot covered). Pure. */
int tp_outbox_slot_target(int n_relays);

/* The slot of a tenant as PostgreSQL computes it: hashtext(tenant_id) & (TP_OUTBOX_SLOTS - 1). */
#define TP_OUTBOX_SLOT_SQL "(hashtext(tenant_id) & 15)"

/* ---- pool-thread side (relay_db.c) ------------------------------------------------------- */

/* A row read from the outbox. */
typedef struct tp_outbox_row {
    tp_receipt_record rec;
    int slot;
    bool bad; /* unreadable (payload or envelope): its tenant waits from here on */
} tp_outbox_row;

/* One database round of a relay: everything a pool thread needs, nothing the loop touches while
 * it runs. In: the fields marked in; out: the fields marked out. */
typedef struct tp_outbox_round {
    const tp_config *cfg;              /* in */
    tp_db *db;                         /* in/out: NULL connects (and LISTENs) */
    int backend_pid;                   /* in/out: the session the slots are held in */
    bool held[TP_OUTBOX_SLOTS];        /* in/out */
    bool releasable[TP_OUTBOX_SLOTS];  /* in: held slots without rows in flight */
    bool claim;                        /* in: rebalance the slots first */
    bool first_claim;                  /* in/out: the first claim of this session */
    char *mark_ids;                    /* in: "{id,...}" to mark published, or NULL */
    bool fetch;                        /* in */
    bool notify_others;                /* in: NOTIFY after the fetch (a local commit may have
                                        * written rows of another relay's slots) */
    int limit;                         /* in */
    int n_relays;                      /* out: relays seen at the claim */
    tp_outbox_row *rows;               /* out: fetched rows (caller frees) */
    size_t n_rows;                     /* out */
    int64_t marked;                    /* out */
    int rc;                            /* out: 0 or the first failure (the round stops there) */
    const char *failed_step;           /* out */
} tp_outbox_round;

/* Pool thread: connect if needed, mark, claim, fetch, in that order, stopping at the first
 * failure (the caller then closes round->db: its session, locks and LISTEN are suspect). */
void tp_outbox_round_run(tp_outbox_round *round);
/* Frees the fetched rows of round. */
void tp_outbox_round_rows_free(tp_outbox_round *round);

#endif
