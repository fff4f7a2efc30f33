/* tlog.h: the transparency log over all receipts: RFC 9162 Merkle tree hashing (leaf =
 * SHA-256(0x00 || entry), node = SHA-256(0x01 || left || right)), tree hashes computed from stored
 * complete-subtree hashes, inclusion and consistency proofs and their verification, and the C2SP
 * tlog-checkpoint / signed-note text formats. Pure code: storage is the caller's (a read
 * callback); worker/tlog implements it, worker/outbox extends the tree, tp-ingress and tpctl
 * serve and check proofs. */
#ifndef TP_TLOG_H
#define TP_TLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TP_TLOG_HASH_LEN 32
/* A proof of a tree of at most 2^63 leaves has at most 63 (inclusion) or 126 (consistency)
 * hashes; 128 bounds both. */
#define TP_TLOG_MAX_PROOF 128

/* SHA-256(0x00 || entry). */
void tp_tlog_leaf_hash(const void *entry, size_t len, unsigned char out[TP_TLOG_HASH_LEN]);
/* SHA-256(0x01 || left || right). */
void tp_tlog_node_hash(const unsigned char left[TP_TLOG_HASH_LEN],
                       const unsigned char right[TP_TLOG_HASH_LEN],
                       unsigned char out[TP_TLOG_HASH_LEN]);
/* SHA-256 of nothing: the root of the empty tree. */
void tp_tlog_empty_root(unsigned char out[TP_TLOG_HASH_LEN]);

/* Stored hashes. The complete subtree (level, index) covers leaves [index << level,
 * (index + 1) << level); level 0 holds the leaf hashes. The callback fills out with the stored
 * hash and returns 0, or returns an error code (TP_ENOT_FOUND, TP_EDB, ...), which is passed
 * back to the caller unchanged. */
typedef int (*tp_tlog_read_fn)(void *arg, int level, int64_t index,
                               unsigned char out[TP_TLOG_HASH_LEN]);

/* Stores a hash: (level, index) as above. Returns 0 or an error code passed back unchanged. */
typedef int (*tp_tlog_write_fn)(void *arg, int level, int64_t index,
                                const unsigned char hash[TP_TLOG_HASH_LEN]);

/* Appends leaf number index (the tree has index leaves before it): writes its hash at level 0
 * and every complete subtree it closes, reading their left siblings. Returns 0 or a callback's
 * error. */
int tp_tlog_append(tp_tlog_read_fn rd, tp_tlog_write_fn wr, void *arg, int64_t index,
                   const unsigned char leaf_hash[TP_TLOG_HASH_LEN]);

/* The Merkle tree hash MTH(D[lo:hi]) of leaves lo .. hi-1 (lo < hi), read from the largest
 * stored subtrees that make it up (at most 2 log2(hi - lo) reads for the ranges proofs use).
 * Returns 0, TP_EINVAL or the callback's error. */
int tp_tlog_range_hash(tp_tlog_read_fn rd, void *arg, int64_t lo, int64_t hi,
                       unsigned char out[TP_TLOG_HASH_LEN]);
/* The root of a tree of size leaves (the empty root for 0). */
int tp_tlog_root(tp_tlog_read_fn rd, void *arg, int64_t size, unsigned char out[TP_TLOG_HASH_LEN]);

/* RFC 9162 §2.1.3.1: the inclusion proof PATH(index, D[size]) into proof (room for
 * TP_TLOG_MAX_PROOF hashes); *n gets its length. Returns 0, TP_EINVAL (index >= size) or the
 * callback's error. */
int tp_tlog_inclusion_proof(tp_tlog_read_fn rd, void *arg, int64_t index, int64_t size,
                            unsigned char proof[][TP_TLOG_HASH_LEN], size_t *n);
/* RFC 9162 §2.1.4.1: the consistency proof PROOF(m, D[n]) for 0 < m <= n (empty when m == n).
 * Returns 0, TP_EINVAL or the callback's error. */
int tp_tlog_consistency_proof(tp_tlog_read_fn rd, void *arg, int64_t m, int64_t n,
                              unsigned char proof[][TP_TLOG_HASH_LEN], size_t *len);

/* RFC 9162 §2.1.3.2. Returns 0 when proof shows leaf_hash at index in the tree of size with
 * root, else TP_EVERIFY (TP_EINVAL for impossible arguments). Inputs are untrusted. */
int tp_tlog_verify_inclusion(int64_t index, int64_t size, const unsigned char leaf_hash[TP_TLOG_HASH_LEN],
                             const unsigned char proof[][TP_TLOG_HASH_LEN], size_t n,
                             const unsigned char root[TP_TLOG_HASH_LEN]);
/* RFC 9162 §2.1.4.2, plus: m == n needs an empty proof and equal roots; m == 0 never verifies
 * (nothing to be consistent with). Returns 0, TP_EVERIFY or TP_EINVAL. */
int tp_tlog_verify_consistency(int64_t m, int64_t n, const unsigned char (*proof)[TP_TLOG_HASH_LEN],
                               size_t len, const unsigned char root_m[TP_TLOG_HASH_LEN],
                               const unsigned char root_n[TP_TLOG_HASH_LEN]);

/* ---- C2SP tlog-checkpoint and signed-note --------------------------------------------------
 * Checkpoint body: "<origin>\n<size>\n<base64 root>\n" (no extension lines are written; parsed
 * ones are ignored). Signed note: body, a blank line, then signature lines
 * "— <key name> <base64(4-byte key hash || 64-byte Ed25519 signature)>\n" where the key hash is
 * the first 4 bytes of SHA-256(<key name> || "\n" || 0x01 || public key). */

#define TP_TLOG_ORIGIN_MAX 256
#define TP_TLOG_NOTE_MAX 8192

typedef struct tp_checkpoint {
    char origin[TP_TLOG_ORIGIN_MAX + 1];
    int64_t size;
    unsigned char root[TP_TLOG_HASH_LEN];
} tp_checkpoint;

/* Writes the checkpoint body into buf (NUL-terminated). Returns its length, or -1 when the
 * origin is empty, has a newline or cap is too small. */
int tp_checkpoint_format(const tp_checkpoint *c, char *buf, size_t cap);

/* The 4-byte key hash of an Ed25519 note key. */
void tp_note_key_hash(const char *name, const unsigned char pk[32], unsigned char out[4]);

/* Appends one signature line for (name, pk, sig over the body) to a body: writes
 * body + "\n" + line into buf. Returns the note's length or -1 (name with a space or newline,
 * cap too small). */
int tp_note_format(const char *body, const char *name, const unsigned char pk[32],
                   const unsigned char sig[64], char *buf, size_t cap);

/* A parsed signed note (untrusted text): the body's length (the body stays in the caller's text)
 * and a copy of each signature line's fields. */
#define TP_NOTE_MAX_SIGS 16
typedef struct tp_note_sig {
    char name[TP_TLOG_ORIGIN_MAX + 1];
    unsigned char key_hash[4];
    unsigned char sig[64];
    bool ed25519;    /* 68 bytes after base64: a key hash and an Ed25519 signature */
} tp_note_sig;

typedef struct tp_note {
    size_t body_len;  /* the body is text[0 .. body_len) of the parsed note, ending in "\n" */
    size_t n_sigs;
    tp_note_sig sigs[TP_NOTE_MAX_SIGS];
} tp_note;

/* Parses a signed note (at most TP_TLOG_NOTE_MAX bytes of UTF-8 without control characters other
 * than newline). Returns 0 or TP_EINVAL with errstr naming the problem. */
int tp_note_parse(const char *text, size_t len, tp_note *out, char *errstr, size_t errstr_size);
/* Parses a checkpoint body (the first body_len bytes of a note). Returns 0 or TP_EINVAL. */
int tp_checkpoint_parse(const char *body, size_t len, tp_checkpoint *out, char *errstr,
                        size_t errstr_size);
/* True when sig is a valid Ed25519 signature line by (name, pk) over body. */
bool tp_note_sig_verify(const tp_note_sig *sig, const char *name, const unsigned char pk[32],
                        const char *body, size_t body_len);

/* ---- offline audit (tpctl receipts verify) -------------------------------------------------
 * Fed every receipt read from the receipts topic (its leaf index from the leaf-index header and
 * its leaf hash) and every checkpoint whose signature the caller verified, it rebuilds the tree
 * from the leaves and checks: each leaf index held by one leaf hash; every leaf below the latest
 * checkpoint's size present (a missing one is a dropped receipt: when no chain on the topic
 * shows a gap, a dropped tail); each checkpoint's root equal to the root of that many leaves
 * (so every receipt below it is included, and checkpoints are consistent with each other); no
 * two checkpoints of one size with different roots (a fork), none that does not extend the
 * checkpoints before it. Untrusted input: memory grows with what is fed, never with the indexes
 * claimed. */

typedef struct tp_tlog_audit tp_tlog_audit;

/* Called once per problem found; text names it (receipt ids, leaf indexes, sizes, where). */
typedef void (*tp_tlog_audit_error_fn)(void *arg, const char *text);

int tp_tlog_audit_new(tp_tlog_audit **out);
void tp_tlog_audit_free(tp_tlog_audit *a);
/* One receipt as read; where names its position ("topic[p]@offset"). Strings are copied.
 * Returns 0 or TP_ENOMEM. */
int tp_tlog_audit_leaf(tp_tlog_audit *a, int64_t index, const unsigned char leaf_hash[TP_TLOG_HASH_LEN],
                       const char *receipt_id, const char *where);
/* One verified checkpoint. Returns 0 or TP_ENOMEM. */
int tp_tlog_audit_checkpoint(tp_tlog_audit *a, const tp_checkpoint *cp, const char *where);

typedef struct tp_tlog_audit_summary {
    int64_t leaves;          /* distinct leaf indexes fed */
    size_t checkpoints;
    int64_t latest_size;     /* the largest checkpoint size (0: none) */
    int64_t not_yet;         /* leaves at or beyond it (not in a checkpoint yet) */
    size_t errors;
} tp_tlog_audit_summary;

/* Runs the checks; chains_gapless tells whether the chain verifier found no gap (then a missing
 * leaf can only be the end of a chain). Returns 0 (no problem), TP_EVERIFY or TP_ENOMEM. */
int tp_tlog_audit_finish(tp_tlog_audit *a, bool chains_gapless, tp_tlog_audit_error_fn fn, void *arg,
                         tp_tlog_audit_summary *sum);

#endif
