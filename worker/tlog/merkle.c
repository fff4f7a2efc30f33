/* merkle.c: RFC 9162 Merkle tree hashing over stored complete-subtree hashes: range hashes,
 * inclusion and consistency proofs (§2.1.3.1, §2.1.4.1) and their verification (§2.1.3.2,
 * §2.1.4.2). SHA-256 is libsodium's. */
#include <string.h>

#include <sodium.h>

#include "tp/error.h"
#include "tp/tlog.h"

void tp_tlog_leaf_hash(const void *entry, size_t len, unsigned char out[TP_TLOG_HASH_LEN]) {
    crypto_hash_sha256_state st;
    const unsigned char prefix = 0x00;
    crypto_hash_sha256_init(&st);
    crypto_hash_sha256_update(&st, &prefix, 1);
    crypto_hash_sha256_update(&st, entry, len);
    crypto_hash_sha256_final(&st, out);
}

void tp_tlog_node_hash(const unsigned char left[TP_TLOG_HASH_LEN],
                       const unsigned char right[TP_TLOG_HASH_LEN],
                       unsigned char out[TP_TLOG_HASH_LEN]) {
    unsigned char buf[1 + 2 * TP_TLOG_HASH_LEN];
    buf[0] = 0x01;
    memcpy(buf + 1, left, TP_TLOG_HASH_LEN);
    memcpy(buf + 1 + TP_TLOG_HASH_LEN, right, TP_TLOG_HASH_LEN);
    crypto_hash_sha256(out, buf, sizeof(buf));
}

void tp_tlog_empty_root(unsigned char out[TP_TLOG_HASH_LEN]) {
    crypto_hash_sha256(out, (const unsigned char *)"", 0);
}

/* The largest power of two strictly below n (n >= 2). */
static int64_t split_point(int64_t n) {
    int64_t k = 1;
    while (k * 2 < n)
        k *= 2;
    return k;
}

/* log2 of n when n is a power of two, else -1. */
static int exact_log2(int64_t n) {
    int level = 0;
    if (n <= 0 || (n & (n - 1)) != 0)
        return -1;
    while ((INT64_C(1) << level) < n)
        level++;
    return level;
}

int tp_tlog_range_hash(tp_tlog_read_fn rd, void *arg, int64_t lo, int64_t hi,
                       unsigned char out[TP_TLOG_HASH_LEN]) {
    unsigned char left[TP_TLOG_HASH_LEN], right[TP_TLOG_HASH_LEN];
    int64_t n = hi - lo, k;
    int level, rc;
    if (lo < 0 || hi <= lo)
        return TP_EINVAL;
    /* A complete, aligned subtree is stored as one hash. */
    level = exact_log2(n);
    if (level >= 0 && lo % n == 0)
        return rd(arg, level, lo >> level, out);
    /* MTH(D[lo:hi]) = HASH(0x01 || MTH(D[lo:lo+k]) || MTH(D[lo+k:hi])), k < n the largest power
     * of two. The left part is stored whenever lo is aligned to k, as in every proof's ranges. */
    k = split_point(n);
    if ((rc = tp_tlog_range_hash(rd, arg, lo, lo + k, left)) != 0 ||
        (rc = tp_tlog_range_hash(rd, arg, lo + k, hi, right)) != 0)
        return rc;
    tp_tlog_node_hash(left, right, out);
    return 0;
}

int tp_tlog_append(tp_tlog_read_fn rd, tp_tlog_write_fn wr, void *arg, int64_t index,
                   const unsigned char leaf_hash[TP_TLOG_HASH_LEN]) {
    unsigned char cur[TP_TLOG_HASH_LEN], left[TP_TLOG_HASH_LEN];
    int rc;
    if (index < 0)
        return TP_EINVAL;
    memcpy(cur, leaf_hash, TP_TLOG_HASH_LEN);
    for (int level = 0;; level++) {
        int64_t i = index >> level;
        if ((rc = wr(arg, level, i, cur)) != 0)
            return rc;
        if ((i & 1) == 0)
            return 0; /* a left child: its parent is not complete yet */
        if ((rc = rd(arg, level, i - 1, left)) != 0)
            return rc;
        tp_tlog_node_hash(left, cur, cur);
    }
}

int tp_tlog_root(tp_tlog_read_fn rd, void *arg, int64_t size, unsigned char out[TP_TLOG_HASH_LEN]) {
    if (size < 0)
        return TP_EINVAL;
    if (size == 0) {
        tp_tlog_empty_root(out);
        return 0;
    }
    return tp_tlog_range_hash(rd, arg, 0, size, out);
}

/* PATH(m, D[lo:hi]) appended to proof (the deepest sibling first). */
static int path(tp_tlog_read_fn rd, void *arg, int64_t m, int64_t lo, int64_t hi,
                unsigned char proof[][TP_TLOG_HASH_LEN], size_t *n) {
    int64_t k;
    int rc;
    if (hi - lo <= 1)
        return 0;
    if (*n >= TP_TLOG_MAX_PROOF)
        return TP_EINVAL;
    k = split_point(hi - lo);
    if (m < k) {
        if ((rc = path(rd, arg, m, lo, lo + k, proof, n)) != 0)
            return rc;
        return tp_tlog_range_hash(rd, arg, lo + k, hi, proof[(*n)++]);
    }
    if ((rc = path(rd, arg, m - k, lo + k, hi, proof, n)) != 0)
        return rc;
    return tp_tlog_range_hash(rd, arg, lo, lo + k, proof[(*n)++]);
}

int tp_tlog_inclusion_proof(tp_tlog_read_fn rd, void *arg, int64_t index, int64_t size,
                            unsigned char proof[][TP_TLOG_HASH_LEN], size_t *n) {
    *n = 0;
    if (index < 0 || index >= size)
        return TP_EINVAL;
    return path(rd, arg, index, 0, size, proof, n);
}

/* SUBPROOF(m, D[lo:hi], b) appended to proof. */
static int subproof(tp_tlog_read_fn rd, void *arg, int64_t m, int64_t lo, int64_t hi, bool b,
                    unsigned char proof[][TP_TLOG_HASH_LEN], size_t *len) {
    int64_t n = hi - lo, k;
    int rc;
    if (*len >= TP_TLOG_MAX_PROOF)
        return TP_EINVAL;
    if (m == n) {
        if (b)
            return 0;
        return tp_tlog_range_hash(rd, arg, lo, hi, proof[(*len)++]);
    }
    k = split_point(n);
    if (m <= k) {
        if ((rc = subproof(rd, arg, m, lo, lo + k, b, proof, len)) != 0)
            return rc;
        return tp_tlog_range_hash(rd, arg, lo + k, hi, proof[(*len)++]);
    }
    if ((rc = subproof(rd, arg, m - k, lo + k, hi, false, proof, len)) != 0)
        return rc;
    return tp_tlog_range_hash(rd, arg, lo, lo + k, proof[(*len)++]);
}

int tp_tlog_consistency_proof(tp_tlog_read_fn rd, void *arg, int64_t m, int64_t n,
                              unsigned char proof[][TP_TLOG_HASH_LEN], size_t *len) {
    *len = 0;
    if (m <= 0 || m > n)
        return TP_EINVAL;
    if (m == n)
        return 0;
    return subproof(rd, arg, m, 0, n, true, proof, len);
}

int tp_tlog_verify_inclusion(int64_t index, int64_t size, const unsigned char leaf_hash[TP_TLOG_HASH_LEN],
                             const unsigned char proof[][TP_TLOG_HASH_LEN], size_t n,
                             const unsigned char root[TP_TLOG_HASH_LEN]) {
    unsigned char r[TP_TLOG_HASH_LEN];
    uint64_t fn, sn;
    if (index < 0 || size <= 0 || index >= size)
        return TP_EINVAL;
    fn = (uint64_t)index;
    sn = (uint64_t)size - 1;
    memcpy(r, leaf_hash, TP_TLOG_HASH_LEN);
    for (size_t i = 0; i < n; i++) {
        if (sn == 0)
            return TP_EVERIFY;
        if ((fn & 1) || fn == sn) {
            tp_tlog_node_hash(proof[i], r, r);
            while (!(fn & 1) && fn != 0) {
                fn >>= 1;
                sn >>= 1;
            }
        } else {
            tp_tlog_node_hash(r, proof[i], r);
        }
        fn >>= 1;
        sn >>= 1;
    }
    if (sn != 0 || sodium_memcmp(r, root, TP_TLOG_HASH_LEN) != 0)
        return TP_EVERIFY;
    return 0;
}

int tp_tlog_verify_consistency(int64_t m, int64_t n, const unsigned char (*proof)[TP_TLOG_HASH_LEN],
                               size_t len, const unsigned char root_m[TP_TLOG_HASH_LEN],
                               const unsigned char root_n[TP_TLOG_HASH_LEN]) {
    unsigned char fr[TP_TLOG_HASH_LEN], sr[TP_TLOG_HASH_LEN];
    const unsigned char *first;
    uint64_t fn, sn;
    size_t i;
    if (m < 0 || n < 0 || m > n)
        return TP_EINVAL;
    if (m == 0)
        return TP_EVERIFY;
    if (m == n) {
        if (len != 0 || sodium_memcmp(root_m, root_n, TP_TLOG_HASH_LEN) != 0)
            return TP_EVERIFY;
        return 0;
    }
    if (len == 0)
        return TP_EVERIFY;
    /* When m is a power of two the old root is the proof's implicit first element. */
    if (exact_log2(m) >= 0) {
        first = root_m;
        i = 0;
    } else {
        first = proof[0];
        i = 1;
    }
    fn = (uint64_t)m - 1;
    sn = (uint64_t)n - 1;
    while (fn & 1) {
        fn >>= 1;
        sn >>= 1;
    }
    memcpy(fr, first, TP_TLOG_HASH_LEN);
    memcpy(sr, first, TP_TLOG_HASH_LEN);
    for (; i < len; i++) {
        if (sn == 0)
            return TP_EVERIFY;
        if ((fn & 1) || fn == sn) {
            tp_tlog_node_hash(proof[i], fr, fr);
            tp_tlog_node_hash(proof[i], sr, sr);
            while (!(fn & 1) && fn != 0) {
                fn >>= 1;
                sn >>= 1;
            }
        } else {
            tp_tlog_node_hash(sr, proof[i], sr);
        }
        fn >>= 1;
        sn >>= 1;
    }
    if (sn != 0 || sodium_memcmp(fr, root_m, TP_TLOG_HASH_LEN) != 0 ||
        sodium_memcmp(sr, root_n, TP_TLOG_HASH_LEN) != 0)
        return TP_EVERIFY;
    return 0;
}
