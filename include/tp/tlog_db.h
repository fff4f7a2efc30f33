/* tlog_db.h: the transparency log's tree kept in PostgreSQL (schemas/sql/0005_tlog.sql): receipts
 * are committed unnumbered (stages/) and numbered as leaves by the sequencer's statements here,
 * the stored complete-subtree hashes are extended here from the committed leaves, and proofs read
 * them through tp_tlog_db_read. Implemented in worker/tlog/sequence_db.c and tree_db.c over
 * worker/store; used by the relay (numbers, extends, signs checkpoints), tp-ingress (serves
 * proofs) and tpctl. */
#ifndef TP_TLOG_DB_H
#define TP_TLOG_DB_H

#include <stdint.h>

#include "tp/receipts.h"
#include "tp/store.h"
#include "tp/tlog.h"

/* The leaf entry of a receipt: its DSSE PAE bytes (what the receipt's signature covers), so the
 * leaf hash is SHA-256(0x00 || PAE(payloadType, payload)). */
int tp_tlog_receipt_leaf_hash(const unsigned char *payload, size_t payload_len,
                              unsigned char out[TP_TLOG_HASH_LEN]);

/* The sequencer: numbers committed, unnumbered, unpublished receipts as the next leaves, in
 * (tenant, sequence) order, up to batch per transaction (tlog_counter row lock, then one
 * statement, then COMMIT), repeating while a batch was full, at most max_batches times.
 * *numbered (may be NULL) gets how many it numbered, *more whether the last batch was full.
 * Must be called outside a transaction; safe with several sequencers at once (they take turns).
 * The relay does not call it: its round numbers with the statements below, inside the one
 * transaction that also marks delivered receipts published (outbox/relay_db.c).
 * Returns 0, TP_EINVAL or TP_EDB*. */
int tp_tlog_db_sequence(tp_db *db, int batch, int max_batches, int64_t *numbered, bool *more);

/* *pending: whether a committed receipt waits to be numbered (TP_TLOG_SEQUENCE_PENDING_SQL, one
 * read, no lock). Returns 0 or TP_EDB*. */
int tp_tlog_db_sequence_pending(tp_db *db, bool *pending);

/* The sequencer's statements, for a caller that numbers inside a transaction of its own making.
 * TP_TLOG_SEQUENCE_PENDING_SQL: a boolean expression, whether a committed receipt waits to be
 * numbered (read it first: without one, take no lock and write nothing).
 * TP_TLOG_SEQUENCE_LOCK_SQL: the counter row lock, a statement of its own that must come before
 * the numbering statement in the same transaction: a READ COMMITTED statement takes its snapshot
 * when it starts, so the numbering statement, started once the lock is granted, sees every
 * receipt committed before and none that another sequencer numbered while this one waited.
 * TP_TLOG_SEQUENCE_CTES(limit): the numbering statement's WITH items, limit being the parameter
 * ("$1") that bounds how many it numbers: n (the receipts to number, k = 1.. in (tenant,
 * sequence) order), c (the counter, moved past them; untouched when n is empty), u (the rows
 * numbered, RETURNING every column of receipt_outbox with its new leaf_index). Holding the lock
 * until COMMIT keeps the indexes dense and "a committed next_leaf N: every leaf below N is
 * committed" true (the extenders rely on it). */
#define TP_TLOG_SEQUENCE_PENDING_SQL                                                               \
    "EXISTS (SELECT 1 FROM receipt_outbox WHERE leaf_index IS NULL AND published_at IS NULL)"
#define TP_TLOG_SEQUENCE_LOCK_SQL "SELECT next_leaf FROM tlog_counter WHERE id = 1 FOR UPDATE"
#define TP_TLOG_SEQUENCE_CTES(limit)                                                               \
    "n AS (SELECT receipt_id, row_number() OVER (ORDER BY tenant_id, sequence) AS k FROM "        \
    "(SELECT receipt_id, tenant_id, sequence FROM receipt_outbox WHERE leaf_index IS NULL AND "    \
    "published_at IS NULL ORDER BY tenant_id, sequence LIMIT " limit "::int) s), "                \
    "c AS (UPDATE tlog_counter SET next_leaf = next_leaf + (SELECT count(*) FROM n) "             \
    "WHERE id = 1 AND EXISTS (SELECT 1 FROM n) RETURNING next_leaf), "                            \
    "u AS (UPDATE receipt_outbox o SET leaf_index = c.next_leaf - (SELECT count(*) FROM n) + "    \
    "n.k - 1 FROM n, c WHERE o.receipt_id = n.receipt_id RETURNING o.*)"

/* Hashes every committed leaf not yet in the stored tree (at most max_leaves per call, 0: no
 * bound), in transactions of up to 1000 leaves under the tlog_tree row lock (safe with several
 * relays). *size and root (either may be NULL) get the stored tree's size and root afterwards.
 * Must be called outside a transaction. Returns 0, TP_EDB* or TP_ENOMEM. */
int tp_tlog_db_extend(tp_db *db, int64_t max_leaves, int64_t *size,
                      unsigned char root[TP_TLOG_HASH_LEN]);

/* The stored tree's size and root. */
int tp_tlog_db_head(tp_db *db, int64_t *size, unsigned char root[TP_TLOG_HASH_LEN]);

/* A tp_tlog_read_fn over tlog_nodes; arg is the tp_db. TP_ENOT_FOUND for a hash not stored. */
int tp_tlog_db_read(void *arg, int level, int64_t index, unsigned char out[TP_TLOG_HASH_LEN]);

/* The leaf index and leaf hash of a receipt. TP_ENOT_FOUND when the receipt does not exist or
 * has no leaf index yet. */
int tp_tlog_db_leaf(tp_db *db, const char *receipt_id, int64_t *index,
                    unsigned char leaf_hash[TP_TLOG_HASH_LEN]);

/* Extends the tree, then signs a checkpoint (C2SP tlog-checkpoint in a signed note; key name =
 * origin) at the largest size whose leaves are all published on the receipts topic (a checkpoint
 * never names a receipt a reader cannot have seen yet), when that size is beyond the latest stored
 * checkpoint, and stores it in tlog_checkpoints. *note gets the new note (caller frees) and cp its
 * fields, or *note = NULL when there was nothing new (or another relay stored that size first).
 * Outside a transaction. Returns 0, TP_EDB*, TP_ECRYPTO or TP_ENOMEM. */
int tp_tlog_db_checkpoint(tp_db *db, const tp_signer *s, const char *origin, char **note,
                          tp_checkpoint *cp);

/* The latest stored checkpoint: *note (caller frees) and cp; TP_ENOT_FOUND when none yet. */
int tp_tlog_db_latest(tp_db *db, char **note, tp_checkpoint *cp);

#endif
