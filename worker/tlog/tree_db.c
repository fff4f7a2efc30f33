/* tree_db.c: the transparency log's Merkle tree in PostgreSQL: extends tlog_nodes (every complete
 * subtree's hash) from the receipts whose leaf indexes are committed, in batches under the
 * tlog_tree row lock; reads stored hashes for proofs; a receipt's leaf entry is its DSSE PAE. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "tp/error.h"
#include "tp/receipts.h"
#include "tp/tlog_db.h"

#define BATCH 1000

int tp_tlog_receipt_leaf_hash(const unsigned char *payload, size_t payload_len,
                              unsigned char out[TP_TLOG_HASH_LEN]) {
    unsigned char *pae = NULL;
    size_t pae_len = 0;
    int rc = tp_dsse_pae(TP_RECEIPT_PAYLOAD_TYPE, payload, payload_len, &pae, &pae_len);
    if (rc != 0)
        return rc;
    tp_tlog_leaf_hash(pae, pae_len, out);
    free(pae);
    return 0;
}

/* A bytea cell into a new buffer. Returns 0, TP_ENOMEM or TP_EDB_PERMANENT (NULL cell). */
static int bytea_cell(const tp_res *res, int row, int col, unsigned char **out, size_t *len) {
    int rc = tp_res_get_bytea(res, row, col, out, len);
    return rc == TP_EINVAL ? TP_EDB_PERMANENT : rc;
}

static int hash_cell(const tp_res *res, int row, int col, unsigned char out[TP_TLOG_HASH_LEN]) {
    unsigned char *buf = NULL;
    size_t len = 0;
    int rc = bytea_cell(res, row, col, &buf, &len);
    if (rc != 0)
        return rc;
    if (len != TP_TLOG_HASH_LEN)
        rc = TP_EDB_PERMANENT;
    else
        memcpy(out, buf, TP_TLOG_HASH_LEN);
    free(buf);
    return rc;
}

int tp_tlog_db_read(void *arg, int level, int64_t index, unsigned char out[TP_TLOG_HASH_LEN]) {
    tp_db *db = arg;
    tp_res *res = NULL;
    char lb[16], ib[32];
    int rc;
    snprintf(lb, sizeof(lb), "%d", level);
    snprintf(ib, sizeof(ib), "%lld", (long long)index);
    const char *p[2] = {lb, ib};
    rc = tp_db_query(db, "SELECT hash FROM tlog_nodes WHERE level = $1::smallint AND idx = $2::bigint",
                     2, p, &res);
    if (rc != 0)
        return rc;
    rc = tp_res_nrows(res) == 1 ? hash_cell(res, 0, 0, out) : TP_ENOT_FOUND;
    tp_res_free(res);
    return rc;
}

int tp_tlog_db_head(tp_db *db, int64_t *size, unsigned char root[TP_TLOG_HASH_LEN]) {
    tp_res *res = NULL;
    int64_t n = 0;
    int rc = tp_db_query(db, "SELECT size, root FROM tlog_tree WHERE id = 1", 0, NULL, &res);
    if (rc != 0)
        return rc;
    if (tp_res_nrows(res) != 1 || tp_res_get_int64(res, 0, 0, &n) != 0)
        rc = TP_EDB_PERMANENT;
    else if (root)
        rc = hash_cell(res, 0, 1, root);
    if (rc == 0 && size)
        *size = n;
    tp_res_free(res);
    return rc;
}

int tp_tlog_db_leaf(tp_db *db, const char *receipt_id, int64_t *index,
                    unsigned char leaf_hash[TP_TLOG_HASH_LEN]) {
    tp_res *res = NULL;
    unsigned char *payload = NULL;
    size_t len = 0;
    const char *p[1] = {receipt_id};
    int rc = tp_db_query(db,
                         "SELECT leaf_index, payload FROM receipt_outbox WHERE receipt_id = $1 "
                         "AND leaf_index IS NOT NULL",
                         1, p, &res);
    if (rc != 0)
        return rc;
    if (tp_res_nrows(res) != 1) {
        tp_res_free(res);
        return TP_ENOT_FOUND;
    }
    if (tp_res_get_int64(res, 0, 0, index) != 0)
        rc = TP_EDB_PERMANENT;
    else if ((rc = bytea_cell(res, 0, 1, &payload, &len)) == 0)
        rc = tp_tlog_receipt_leaf_hash(payload, len, leaf_hash);
    free(payload);
    tp_res_free(res);
    return rc;
}

/* The hashes one batch writes, kept until one INSERT stores them all; reads look here first. */
typedef struct pending_node {
    int level;
    int64_t idx;
    unsigned char hash[TP_TLOG_HASH_LEN];
} pending_node;

typedef struct batch {
    tp_db *db;
    pending_node *nodes;
    size_t n, cap;
} batch;

static int batch_read(void *arg, int level, int64_t index, unsigned char out[TP_TLOG_HASH_LEN]) {
    batch *b = arg;
    for (size_t i = b->n; i-- > 0;)
        if (b->nodes[i].level == level && b->nodes[i].idx == index) {
            memcpy(out, b->nodes[i].hash, TP_TLOG_HASH_LEN);
            return 0;
        }
    return tp_tlog_db_read(b->db, level, index, out);
}

static int batch_write(void *arg, int level, int64_t index, const unsigned char hash[TP_TLOG_HASH_LEN]) {
    batch *b = arg;
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 2 * BATCH + 64;
        pending_node *p = realloc(b->nodes, cap * sizeof(*p));
        if (!p)
            return TP_ENOMEM;
        b->nodes = p;
        b->cap = cap;
    }
    b->nodes[b->n].level = level;
    b->nodes[b->n].idx = index;
    memcpy(b->nodes[b->n].hash, hash, TP_TLOG_HASH_LEN);
    b->n++;
    return 0;
}

/* Stores the batch's hashes with one statement: levels, indexes and hex hashes as three arrays
 * unnested together. (Cutting one long hex string with substr() was quadratic: substr counts
 * characters from the start of a text, so 2,000 nodes took a second of server CPU.) */
static int batch_store(batch *b) {
    size_t cap = b->n * 24 + 16;
    char *levels = malloc(cap), *idxs = malloc(cap), *hex = malloc(b->n * 65 + 3);
    size_t lo = 0, io = 0, ho = 0;
    int rc = TP_ENOMEM;
    if (!levels || !idxs || !hex)
        goto out;
    levels[lo++] = '{';
    idxs[io++] = '{';
    hex[ho++] = '{';
    for (size_t i = 0; i < b->n; i++) {
        lo += (size_t)snprintf(levels + lo, cap - lo, "%s%d", i ? "," : "", b->nodes[i].level);
        io += (size_t)snprintf(idxs + io, cap - io, "%s%lld", i ? "," : "", (long long)b->nodes[i].idx);
        if (i)
            hex[ho++] = ',';
        sodium_bin2hex(hex + ho, 65, b->nodes[i].hash, TP_TLOG_HASH_LEN);
        ho += 64;
    }
    snprintf(levels + lo, cap - lo, "}");
    snprintf(idxs + io, cap - io, "}");
    hex[ho++] = '}';
    hex[ho] = '\0';
    const char *p[3] = {levels, idxs, hex};
    rc = tp_db_exec(b->db,
                    "INSERT INTO tlog_nodes (level, idx, hash) SELECT u.l, u.i, decode(u.h, 'hex') "
                    "FROM unnest($1::smallint[], $2::bigint[], $3::text[]) AS u(l, i, h)",
                    3, p, NULL);
out:
    free(levels);
    free(idxs);
    free(hex);
    return rc;
}

/* One transaction: up to BATCH leaves. *more tells whether committed leaves remain. */
static int extend_once(tp_db *db, int64_t limit, bool *more, int64_t *size_out,
                       unsigned char root[TP_TLOG_HASH_LEN], int64_t *took) {
    tp_res *res = NULL;
    batch b = {db, NULL, 0, 0};
    int64_t size = 0, next = 0, take;
    char sb[32], nb[32], lb[32], rhex[2 * TP_TLOG_HASH_LEN + 1];
    int rc;
    *more = false;
    *took = 0;
    if ((rc = tp_db_begin(db)) != 0)
        return rc;
    /* The tree row first: concurrent extenders wait here, then see what the first one stored. */
    rc = tp_db_query(db, "SELECT size, root FROM tlog_tree WHERE id = 1 FOR UPDATE", 0, NULL, &res);
    if (rc != 0 || tp_res_nrows(res) != 1 || tp_res_get_int64(res, 0, 0, &size) != 0 ||
        (rc = hash_cell(res, 0, 1, root)) != 0)
        goto out_fail;
    tp_res_free(res);
    /* A later statement, a later snapshot: every leaf below the committed counter is committed. */
    rc = tp_db_query(db, "SELECT next_leaf FROM tlog_counter WHERE id = 1", 0, NULL, &res);
    if (rc != 0 || tp_res_nrows(res) != 1 || tp_res_get_int64(res, 0, 0, &next) != 0)
        goto out_fail;
    tp_res_free(res);
    res = NULL;
    take = next - size;
    if (take > BATCH)
        take = BATCH;
    if (limit > 0 && take > limit)
        take = limit;
    if (take <= 0) {
        *size_out = size;
        tp_db_rollback(db); /* nothing written */
        return 0;
    }
    snprintf(sb, sizeof(sb), "%lld", (long long)size);
    snprintf(nb, sizeof(nb), "%lld", (long long)(size + take));
    const char *p2[2] = {sb, nb};
    rc = tp_db_query(db,
                     "SELECT leaf_index, payload FROM receipt_outbox WHERE leaf_index >= $1::bigint "
                     "AND leaf_index < $2::bigint ORDER BY leaf_index",
                     2, p2, &res);
    if (rc != 0)
        goto out_fail;
    if (tp_res_nrows(res) != take) {
        rc = TP_EDB_PERMANENT; /* a committed leaf index without its receipt: never by design */
        goto out_fail;
    }
    for (int r = 0; r < tp_res_nrows(res); r++) {
        unsigned char *payload = NULL, leaf[TP_TLOG_HASH_LEN];
        size_t len = 0;
        int64_t idx = -1;
        if (tp_res_get_int64(res, r, 0, &idx) != 0 || idx != size + r) {
            rc = TP_EDB_PERMANENT;
            goto out_fail;
        }
        if ((rc = bytea_cell(res, r, 1, &payload, &len)) != 0)
            goto out_fail;
        rc = tp_tlog_receipt_leaf_hash(payload, len, leaf);
        free(payload);
        if (rc != 0 || (rc = tp_tlog_append(batch_read, batch_write, &b, idx, leaf)) != 0)
            goto out_fail;
    }
    tp_res_free(res);
    res = NULL;
    if ((rc = batch_store(&b)) != 0)
        goto out_fail;
    size += take;
    if ((rc = tp_tlog_root(batch_read, &b, size, root)) != 0)
        goto out_fail;
    sodium_bin2hex(rhex, sizeof(rhex), root, TP_TLOG_HASH_LEN);
    snprintf(lb, sizeof(lb), "%lld", (long long)size);
    const char *p3[2] = {lb, rhex};
    rc = tp_db_exec(db,
                    "UPDATE tlog_tree SET size = $1::bigint, root = decode($2, 'hex'), "
                    "updated_at = now() WHERE id = 1",
                    2, p3, NULL);
    if (rc != 0)
        goto out_fail;
    free(b.nodes);
    if ((rc = tp_db_commit(db)) != 0)
        return rc;
    *size_out = size;
    *took = take;
    *more = size < next;
    return 0;
out_fail:
    if (rc == 0)
        rc = TP_EDB_PERMANENT;
    tp_res_free(res);
    free(b.nodes);
    tp_db_rollback(db);
    return rc;
}

int tp_tlog_db_extend(tp_db *db, int64_t max_leaves, int64_t *size,
                      unsigned char root[TP_TLOG_HASH_LEN]) {
    unsigned char r[TP_TLOG_HASH_LEN];
    int64_t s = 0, done = 0, took = 0;
    bool more = true;
    int rc;
    while (more) {
        int64_t limit = max_leaves > 0 ? max_leaves - done : 0;
        if (max_leaves > 0 && limit <= 0)
            break;
        if ((rc = extend_once(db, limit, &more, &s, r, &took)) != 0)
            return rc;
        done += took;
    }
    if (size)
        *size = s;
    if (root)
        memcpy(root, r, TP_TLOG_HASH_LEN);
    return 0;
}
