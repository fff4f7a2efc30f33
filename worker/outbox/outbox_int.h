/* outbox_int.h: declarations private to worker/outbox (and its unit tests): the pure rules of
 * the relay (plan.c) and the pool-thread side of its PostgreSQL work (relay_db.c). */
#ifndef TP_OUTBOX_INT_H
#define TP_OUTBOX_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tp/codec.h"
#include "tp/config.h"
#include "tp/receipts.h"
#include "tp/store.h"
#include "tp/tlog.h"

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

/* Partitions of the receipts topic a relay keeps positions for (reconciliation fails above). */
#define TP_OUTBOX_PARTITIONS_MAX 256
/* An idle (slot, partition) position is written when it moved this far (bounds the re-read on
 * takeover without a write per mark). */
#define TP_OUTBOX_POSITION_STEP 1000

/* A round numbers at most this many receipts (in its one transaction, under the counter row
 * lock); the round after comes at once when it numbered that many. */
#define TP_OUTBOX_SEQUENCE_BATCH 500

/* A (slot, partition) position to store: every record of the slot's tenants below next_offset in
 * that partition is marked published. */
typedef struct tp_outbox_pos {
    int slot;
    int partition;
    int64_t next_offset;
} tp_outbox_pos;

/* The position the holder of a slot may store for one partition at a mark: below its first
 * delivered record that stays unmarked (first_unmarked, INT64_MAX when none) and below every
 * offset its producer has not reported yet (frontier: the last reported offset + 1; records
 * still in flight land at or above it, delivery reports coming in offset order per partition).
 * Pure. */
int64_t tp_outbox_position(int64_t frontier, int64_t first_unmarked);
/* Whether to write next over the stored position: it moved, and either rows of that slot and
 * partition are marked in this round or it moved TP_OUTBOX_POSITION_STEP. Pure. */
bool tp_outbox_position_due(int64_t stored, int64_t next, bool marked_here);

/* ---- rows in flight (inflight.c), loop thread ---------------------------------------------- */

#define TP_OUTBOX_TENANT_BUCKETS 1024

typedef struct tp_outbox_tenant tp_outbox_tenant;

/* A receipt sent to Kafka and not settled yet (marked, or dropped to be sent again). */
typedef struct tp_outbox_sent {
    tp_receipt_record rec;
    void *owner;                  /* the relay (for the delivery report) */
    tp_outbox_tenant *t;
    struct tp_outbox_sent *next;  /* in its tenant's chain */
    tp_outbox_state state;
    bool markable;                /* verdict MARK: it and every earlier row of its tenant are delivered */
    bool marking;                 /* in the running round's mark set */
    int32_t partition;            /* where it landed (DELIVERED) */
    int64_t offset;
    int64_t delivered_ms;         /* loop time of the report */
} tp_outbox_sent;

struct tp_outbox_tenant {
    tp_outbox_tenant *next; /* hash bucket */
    char *id;
    int slot;
    tp_outbox_sent *head, *tail; /* unsettled rows, in sequence order */
    size_t n;
};

/* The rows in flight of one relay, per tenant. */
typedef struct tp_outbox_inflight {
    tp_outbox_tenant *buckets[TP_OUTBOX_TENANT_BUCKETS];
    size_t n_rows;                    /* unsettled rows */
    int slot_rows[TP_OUTBOX_SLOTS];   /* unsettled rows per slot */
} tp_outbox_inflight;

tp_outbox_tenant *tp_outbox_tenant_find(tp_outbox_inflight *f, const char *id);
/* Finds or adds the tenant; NULL when out of memory. */
tp_outbox_tenant *tp_outbox_tenant_get(tp_outbox_inflight *f, const char *id, int slot);
/* Frees t when it has no rows left. */
void tp_outbox_tenant_drop_if_empty(tp_outbox_inflight *f, tp_outbox_tenant *t);
/* True when one of t's rows failed and is not dropped yet. */
bool tp_outbox_tenant_has_failed(const tp_outbox_tenant *t);
/* Appends a sent row (taking it over) to t's chain. */
void tp_outbox_append(tp_outbox_inflight *f, tp_outbox_tenant *t, tp_outbox_sent *rw);
void tp_outbox_sent_free(tp_outbox_sent *rw);
/* Applies the verdicts to t's chain: failed rows and those behind them are dropped (freed) once
 * all of them reported; *dropped is set when some were. Returns whether rows are ready to mark.
 * Never frees t (tp_outbox_tenant_drop_if_empty does, afterwards). */
bool tp_outbox_settle(tp_outbox_inflight *f, tp_outbox_tenant *t, bool *dropped);
/* The receipt ids ready to be marked as a "{...}" array (NULL when none), their rows flagged
 * marking. A row is ready once delay_ms passed since its report (a test hook; 0 in service);
 * *next_due_ms gets the loop time when a row held back by the delay is due (0: none). */
char *tp_outbox_collect_marks(tp_outbox_inflight *f, int64_t now_ms, int64_t delay_ms, int64_t *next_due_ms);
/* After a mark round: removes the marked rows, settles the rest; returns how many were
 * removed, *dropped as in tp_outbox_settle. */
size_t tp_outbox_settle_marked(tp_outbox_inflight *f, bool *dropped);
/* After a failed mark round: the flagged rows are marked again later. */
void tp_outbox_unflag_marks(tp_outbox_inflight *f);
/* Frees every row and tenant (their receipts are then published or reconciled by whoever holds
 * their slot next). */
void tp_outbox_forget_all(tp_outbox_inflight *f);
/* The positions due to be stored with the marks just collected: for every slot in slots (held
 * and reconciled) and partition p < n_parts with frontier[p] > 0. stored[s][p] is what was last
 * written. Returns the count written to out (room for TP_OUTBOX_SLOTS * n_parts). */
size_t tp_outbox_collect_positions(const tp_outbox_inflight *f, const bool *slots, const int64_t *frontier,
                                   int n_parts, int64_t (*stored)[TP_OUTBOX_PARTITIONS_MAX],
                                   tp_outbox_pos *out);

/* ---- pool-thread side (relay_db.c) ------------------------------------------------------- */

/* A row read from the outbox. */
typedef struct tp_outbox_row {
    tp_receipt_record rec;
    int64_t leaf_index; /* its transparency-log leaf (the leaf-index header); always numbered */
    int slot;
    bool bad; /* unreadable (payload or envelope): its tenant waits from here on */
} tp_outbox_row;

/* One database round of a relay: everything a pool thread needs, nothing the loop touches while
 * it runs. In: the fields marked in; out: the fields marked out. */
typedef struct tp_outbox_round {
    const tp_config *cfg;              /* in */
    tp_codec *codec;                   /* in: decodes the topic's records (reconciliation) */
    tp_db *db;                         /* in/out: NULL connects (and LISTENs) */
    int backend_pid;                   /* in/out: the session the slots are held in */
    bool held[TP_OUTBOX_SLOTS];        /* in/out */
    bool releasable[TP_OUTBOX_SLOTS];  /* in: held slots without rows in flight */
    bool claim;                        /* in: rebalance the slots first */
    bool first_claim;                  /* in/out: the first claim of this session */
    char *mark_ids;                    /* in: "{id,...}" to mark published, or NULL */
    tp_outbox_pos *pos;                /* in: positions stored with the mark (owned by the loop) */
    size_t n_pos;                      /* in */
    bool reconcile[TP_OUTBOX_SLOTS];   /* in/out: held slots to reconcile with the topic before
                                        * their rows are fetched (set by the claim for every slot
                                        * taken; cleared once done); never fetched while set */
    bool skip_reconcile;               /* in: not in this round (after a Kafka failure) */
    bool reconciled[TP_OUTBOX_SLOTS];  /* out: reconciled in this round (positions = end) */
    int n_partitions;                  /* out: the topic's partitions, when reconciled */
    int64_t end[TP_OUTBOX_PARTITIONS_MAX]; /* out: the high watermarks read up to */
    int64_t reconciled_marked;         /* out: rows found on the topic and marked */
    size_t reconciled_read;            /* out: records read */
    int reconcile_rc;                  /* out: 0, or why the reconciliation failed (Kafka): the
                                        * slots stay held and unreconciled, retried later */
    bool fetch;                        /* in: number committed receipts (sequence), fetch */
    int64_t sequenced;                 /* out: receipts numbered as log leaves in this round */
    bool sequence_more;                /* out: the batch was full: more may wait unnumbered */
    bool notify_others;                /* in: NOTIFY with the round's commit, or after the fetch
                                        * (a local commit may have written rows of another
                                        * relay's slots) */
    int limit;                         /* in */
    int64_t from_leaf;                 /* in: fetch only leaves from here on (0: all), when
                                        * the fetched slots are from_mask; see the relay's cursor */
    uint32_t from_mask;                /* in: the fetched slots from_leaf was learned for */
    uint32_t fetched_mask;             /* out: the slots this round fetched (0: no fetch) */
    int64_t next_leaf;                 /* out: the log's committed next leaf in the fetch's
                                        * snapshot: every unpublished leaf of the fetched slots
                                        * below it came back (unless the batch was full) */
    int n_relays;                      /* out: relays seen at the claim */
    bool slots_changed;                /* out: slots taken, given back or reconciled */
    bool session_replaced;             /* out: the claim found another backend (a silent
                                        * reconnect): the slots were lost meanwhile */
    tp_outbox_row *rows;               /* out: fetched rows (caller frees) */
    size_t n_rows;                     /* out */
    int64_t marked;                    /* out */
    int rc;                            /* out: 0 or the first failure (the round stops there) */
    const char *failed_step;           /* out */
} tp_outbox_round;

/* The transparency log's job, a pool job of its own next to the rounds (never two at once):
 * extend the tree and sign a checkpoint, on a connection of its own (db), so that neither a
 * publishing round waits for it nor the session holding the slots stays busy with it (a relay
 * killed mid-checkpoint must not keep its slots past its death while a busy backend notices
 * it). A failure is reported, the connection dropped and the checkpoint tried again later. */
typedef struct tp_outbox_checkpoint_job {
    const tp_config *cfg;              /* in */
    const tp_signer *signer;           /* in */
    tp_db *db;                         /* in/out: NULL connects */
    int rc;                            /* out */
    char err[256];                     /* out: what PostgreSQL said when it failed */
    char *note;                        /* out: a new signed checkpoint to publish (loop frees) */
    tp_checkpoint cp;                  /* out: its fields */
} tp_outbox_checkpoint_job;

/* Pool thread: extends the stored tree to every committed leaf and signs a checkpoint at the
 * largest size whose receipts are all marked published (tp_tlog_db_checkpoint). */
void tp_outbox_checkpoint_run(tp_outbox_checkpoint_job *job);

/* Pool thread: connect if needed, claim, reconcile, then mark, sequence and fetch in ONE
 * transaction (at most one durable commit; none when there is nothing to mark or number),
 * stopping at the first failure (no rows then: the caller closes round->db, its session, locks
 * and LISTEN being suspect). */
void tp_outbox_round_run(tp_outbox_round *round);
/* Frees the fetched rows of round. */
void tp_outbox_round_rows_free(tp_outbox_round *round);

#endif
