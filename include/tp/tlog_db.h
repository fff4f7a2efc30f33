/* tlog_db.h: the transparency log's tree kept in PostgreSQL (schemas/sql/0005_tlog.sql): receipts
 * are committed unnumbered (stages/) and numbered as leaves by the sequencer here, the stored complete-subtree hashes are extended here
 * from the committed leaves, and proofs read them through tp_tlog_db_read. Implemented in
 * worker/tlog/tree_db.c over worker/store; used by the relay (extends, signs checkpoints),
 * tp-ingress (serves proofs) and tpctl. */
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
 * Returns 0, TP_EINVAL or TP_EDB*. */
int tp_tlog_db_sequence(tp_db *db, int batch, int max_batches, int64_t *numbered, bool *more);

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
