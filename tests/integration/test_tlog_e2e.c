/* test_tlog_e2e: the transparency log on the real stack (issue 12, parts 1-2): two workers
 * provision tenants concurrently; every receipt is committed unnumbered and gets a leaf index from
 * the relays' sequencers, both at work at once (dense from 0, unique, increasing along each
 * tenant's chain); the tree stored in PostgreSQL, extended
 * by concurrent extenders, has the root an independent RFC 9162 computation in this file gives
 * over the receipts' DSSE PAE bytes; inclusion and consistency proofs read from it verify, and
 * they read O(log^2 n) stored hashes, not the leaves. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "support/e2e.h"
#include "tp/codec.h"
#include "tp/config.h"
#include "tp/error.h"
#include "tp/receipts.h"
#include "tp/receipts_reader.h"

#include <jansson.h>
#include "tp/tlog.h"
#include "tp/tlog_db.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

typedef struct tstate {
    e2e e;
    int lock_fd;
    unsigned char (*leaves)[32];
} tstate;

static int setup_with(void **state, const char *extra_config) {
    tstate *s = calloc(1, sizeof(*s));
    const char *name = *state ? *state : "tlog";
    if (!s)
        return -1;
    /* Wait out someone else's fault injection instead of failing in it. */
    s->lock_fd = open("/tmp/tp-stack-faults.lock", O_RDWR | O_CREAT, 0666);
    if (s->lock_fd >= 0)
        flock(s->lock_fd, LOCK_SH);
    if (e2e_setup(&s->e, name, extra_config) != 0) {
        e2e_teardown(&s->e);
        if (s->lock_fd >= 0)
            e2e_faults_unlock(s->lock_fd);
        free(s);
        return -1;
    }
    unsetenv("TP_PG_DSN");
    unsetenv("TP_KAFKA_BOOTSTRAP");
    unsetenv("TP_OPA_URL");
    *state = s;
    return 0;
}

static int setup(void **state) { return setup_with(state, NULL); }

/* Lock waits without a bound: a checkpoint job that waits for the tree stays waiting. */
static int setup_unbounded_locks(void **state) {
    return setup_with(state, "pg.lock_timeout_ms = 0\npg.statement_timeout_ms = 0");
}

static int teardown(void **state) {
    tstate *s = *state;
    for (int i = 0; i < E2E_MAX_WORKERS; i++)
        if (s->e.workers[i] > 0)
            e2e_worker_stop(&s->e, i, SIGTERM, 20000, NULL);
    e2e_teardown(&s->e);
    if (s->lock_fd >= 0)
        e2e_faults_unlock(s->lock_fd);
    free(s->leaves);
    free(s);
    return 0;
}

/* ---- the independent reference: RFC 9162 written out again with libsodium's SHA-256 --------- */

static void ref_node(const unsigned char l[32], const unsigned char r[32], unsigned char out[32]) {
    unsigned char buf[65];
    buf[0] = 1;
    memcpy(buf + 1, l, 32);
    memcpy(buf + 33, r, 32);
    crypto_hash_sha256(out, buf, sizeof(buf));
}

static void ref_mth(unsigned char (*leaves)[32], int64_t lo, int64_t hi, unsigned char out[32]) {
    unsigned char l[32], r[32];
    int64_t k = 1;
    if (hi - lo == 1) {
        memcpy(out, leaves[lo], 32);
        return;
    }
    while (k * 2 < hi - lo)
        k *= 2;
    ref_mth(leaves, lo, lo + k, l);
    ref_mth(leaves, lo + k, hi, r);
    ref_node(l, r, out);
}

/* SHA-256(0x00 || "DSSEv1 <len type> <type> <len payload> <payload>") from the hex payload. */
static void ref_leaf(const char *payload_hex, unsigned char out[32]) {
    const char *type = "application/vnd.in-toto+json";
    size_t hex_len = strlen(payload_hex), n = 0;
    unsigned char *payload = malloc(hex_len / 2 + 1);
    char head[128];
    crypto_hash_sha256_state st;
    assert_non_null(payload);
    assert_int_equal(sodium_hex2bin(payload, hex_len / 2 + 1, payload_hex, hex_len, NULL, &n, NULL), 0);
    int hl = snprintf(head, sizeof(head), "DSSEv1 %zu %s %zu ", strlen(type), type, n);
    crypto_hash_sha256_init(&st);
    crypto_hash_sha256_update(&st, (const unsigned char *)"\0", 1);
    crypto_hash_sha256_update(&st, (const unsigned char *)head, (size_t)hl);
    crypto_hash_sha256_update(&st, payload, n);
    crypto_hash_sha256_final(&st, out);
    free(payload);
}

/* Reads every receipt's leaf hash in leaf order. */
static int64_t load_leaves(tstate *s) {
    tp_res *res = NULL;
    int n;
    assert_int_equal(tp_db_query(s->e.conn,
                                 "SELECT leaf_index, encode(payload, 'hex') FROM receipt_outbox "
                                 "ORDER BY leaf_index",
                                 0, NULL, &res),
                     0);
    n = tp_res_nrows(res);
    free(s->leaves);
    s->leaves = calloc((size_t)n + 1, 32);
    assert_non_null(s->leaves);
    for (int r = 0; r < n; r++) {
        int64_t idx = -1;
        assert_int_equal(tp_res_get_int64(res, r, 0, &idx), 0);
        assert_int_equal(idx, r);
        ref_leaf(tp_res_get(res, r, 1), s->leaves[r]);
    }
    tp_res_free(res);
    return n;
}

/* A reader that counts what the proofs cost. */
typedef struct counting {
    tp_db *db;
    int reads;
} counting;

static int counting_read(void *arg, int level, int64_t index, unsigned char out[32]) {
    counting *c = arg;
    c->reads++;
    return tp_tlog_db_read(c->db, level, index, out);
}

typedef struct extender {
    const char *dsn;
    int rc;
    int64_t size;
    unsigned char root[32];
} extender;

static void *extend_thread(void *arg) {
    extender *x = arg;
    tp_db *db = NULL;
    char err[256];
    x->rc = tp_db_connect(x->dsn, &db, err, sizeof(err));
    if (x->rc == 0)
        x->rc = tp_tlog_db_extend(db, 0, &x->size, x->root);
    tp_db_close(db);
    return NULL;
}

static void test_leaves_tree_and_proofs(void **state) {
    tstate *s = *state;
    e2e *e = &s->e;
    enum { N = 24 };
    tp_request reqs[N];
    unsigned char root[32], ref[32], proof[TP_TLOG_MAX_PROOF][32];
    int64_t size = -1, n;
    size_t plen;

    for (int i = 0; i < N; i++) {
        char slug[64];
        snprintf(slug, sizeof(slug), "tl-%s-%d", e->suffix, i);
        e2e_request_init(&reqs[i], slug, (tp_plan)(i % 4));
    }
    assert_int_equal(e2e_worker_start(e, 0), 0);
    assert_int_equal(e2e_worker_start(e, 1), 0);
    sleep(3); /* both members own partitions: receipts are written by two processes at once */
    assert_int_equal(e2e_submit_batch(e, reqs, N), 0);
    assert_int_equal(e2e_wait_int(e, N, 120, "SELECT count(*) FROM provisioning_requests WHERE state = 'SUCCEEDED'"), N);
    /* Numbered after their commits, off the request path: wait for the sequencers. */
    assert_int_equal(e2e_wait_int(e, 3 * N, 60, "SELECT count(leaf_index) FROM receipt_outbox"), 3 * N);

    /* Dense, unique, counted, and in chain order per tenant. */
    assert_int_equal(e2e_int(e, "SELECT count(*) FROM receipt_outbox"), 3 * N);
    assert_int_equal(e2e_int(e, "SELECT count(DISTINCT leaf_index) FROM receipt_outbox"), 3 * N);
    assert_int_equal(e2e_int(e, "SELECT min(leaf_index) FROM receipt_outbox"), 0);
    assert_int_equal(e2e_int(e, "SELECT max(leaf_index) FROM receipt_outbox"), 3 * N - 1);
    assert_int_equal(e2e_int(e, "SELECT next_leaf FROM tlog_counter"), 3 * N);
    assert_int_equal(e2e_int(e, "SELECT count(*) FROM (SELECT leaf_index < lead(leaf_index) OVER "
                                "(PARTITION BY tenant_id ORDER BY sequence) AS up FROM receipt_outbox) x "
                                "WHERE up IS FALSE"),
                     0);

    /* Two extenders at once: one waits for the other, neither fails, both see the same tree. */
    extender x[2] = {{e->db.dsn, -1, 0, {0}}, {e->db.dsn, -1, 0, {0}}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&th[i], NULL, extend_thread, &x[i]), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(x[0].rc, 0);
    assert_int_equal(x[1].rc, 0);
    assert_int_equal(x[0].size, 3 * N);
    assert_int_equal(x[1].size, 3 * N);
    assert_memory_equal(x[0].root, x[1].root, 32);

    n = load_leaves(s);
    assert_int_equal(n, 3 * N);
    ref_mth(s->leaves, 0, n, ref);
    assert_memory_equal(x[0].root, ref, 32);
    assert_int_equal(tp_tlog_db_head(e->conn, &size, root), 0);
    assert_int_equal(size, n);
    assert_memory_equal(root, ref, 32);
    /* every complete subtree is stored once: n leaves have 2n - popcount(n) of them */
    assert_int_equal(e2e_int(e, "SELECT count(*) FROM tlog_nodes"), 2 * n - __builtin_popcountll((unsigned long long)n));

    /* Inclusion of every receipt at the current size and at a smaller one; consistency from
     * every smaller size. Each proof reads few stored hashes. */
    for (int64_t i = 0; i < n; i++) {
        counting c = {e->conn, 0};
        char rid[80];
        int64_t idx = -1;
        unsigned char leaf[32];
        assert_int_equal(tp_tlog_inclusion_proof(counting_read, &c, i, n, proof, &plen), 0);
        assert_true(c.reads <= 2 * 7 * 7);
        assert_int_equal(tp_tlog_verify_inclusion(i, n, s->leaves[i], proof, plen, ref), 0);
        assert_int_equal(e2e_text(e, rid, sizeof(rid), "SELECT receipt_id FROM receipt_outbox WHERE leaf_index = %lld", (long long)i), 0);
        assert_int_equal(tp_tlog_db_leaf(e->conn, rid, &idx, leaf), 0);
        assert_int_equal(idx, i);
        assert_memory_equal(leaf, s->leaves[i], 32);
    }
    for (int64_t m = 1; m < n; m++) {
        unsigned char old[32];
        ref_mth(s->leaves, 0, m, old);
        assert_int_equal(tp_tlog_consistency_proof(tp_tlog_db_read, e->conn, m, n, proof, &plen), 0);
        assert_int_equal(tp_tlog_verify_consistency(m, n, (const unsigned char(*)[32])proof, plen, old, ref), 0);
        assert_int_equal(tp_tlog_inclusion_proof(tp_tlog_db_read, e->conn, m - 1, m, proof, &plen), 0);
        assert_int_equal(tp_tlog_verify_inclusion(m - 1, m, s->leaves[m - 1], proof, plen, old), 0);
    }
    {
        int64_t idx;
        unsigned char leaf[32];
        assert_int_equal(tp_tlog_db_leaf(e->conn, "prov_nope", &idx, leaf), TP_ENOT_FOUND);
    }

    /* More receipts later: the tree grows from where it was, and stays consistent. */
    unsigned char before[32];
    memcpy(before, ref, 32);
    tp_request more[4];
    for (int i = 0; i < 4; i++) {
        char slug[64];
        snprintf(slug, sizeof(slug), "tl2-%s-%d", e->suffix, i);
        e2e_request_init(&more[i], slug, TP_PLAN_STARTER);
    }
    assert_int_equal(e2e_submit_batch(e, more, 4), 0);
    assert_int_equal(e2e_wait_int(e, N + 4, 120, "SELECT count(*) FROM provisioning_requests WHERE state = 'SUCCEEDED'"), N + 4);
    assert_int_equal(e2e_wait_int(e, n + 12, 60, "SELECT count(leaf_index) FROM receipt_outbox"), n + 12);
    assert_int_equal(tp_tlog_db_extend(e->conn, 0, &size, root), 0);
    assert_int_equal(size, n + 12);
    assert_int_equal(load_leaves(s), n + 12);
    ref_mth(s->leaves, 0, n + 12, ref);
    assert_memory_equal(root, ref, 32);
    assert_int_equal(tp_tlog_consistency_proof(tp_tlog_db_read, e->conn, n, n + 12, proof, &plen), 0);
    assert_int_equal(tp_tlog_verify_consistency(n, n + 12, (const unsigned char(*)[32])proof, plen, before, ref), 0);

    /* With the relays stopped: the stored tree rebuilt from nothing, in bounded steps, is the
     * same tree. */
    assert_int_equal(e2e_worker_stop(e, 0, SIGTERM, 20000, NULL), 0);
    assert_int_equal(e2e_worker_stop(e, 1, SIGTERM, 20000, NULL), 0);
    assert_int_equal(tp_db_exec_script(e->conn, "DELETE FROM tlog_nodes; UPDATE tlog_tree SET size = 0"), 0);
    assert_int_equal(tp_tlog_db_extend(e->conn, 5, &size, root), 0); /* a bound is honoured */
    assert_int_equal(size, 5);
    ref_mth(s->leaves, 0, 5, before);
    assert_memory_equal(root, before, 32);
    assert_int_equal(tp_tlog_db_extend(e->conn, 0, &size, root), 0);
    assert_int_equal(size, n + 12);
    assert_memory_equal(root, ref, 32);
}

/* The worker's public key: the last line of the key set the workers' key belongs to. */
static void worker_public_key(unsigned char pk[32]) {
    char *text = NULL, *line, *last = NULL, *save = NULL;
    size_t len = 0, n = 0;
    assert_int_equal(tp_read_file(".stack/keys/receipts.pub", 4096, &text, &len), 0);
    for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
        if (*line && *line != '#')
            last = line;
    assert_non_null(last);
    char *b64 = strchr(last, ' ');
    assert_non_null(b64);
    assert_int_equal(sodium_base642bin(pk, 32, b64 + 1, strlen(b64 + 1), NULL, &n, NULL,
                                       sodium_base64_VARIANT_ORIGINAL),
                     0);
    assert_int_equal(n, 32);
    free(text);
}

typedef struct topic_scan {
    tstate *s;
    tp_codec *codec;
    int checkpoints, bad, headers_ok;
    int64_t last_size;
    unsigned char pk[32];
} topic_scan;

/* Every checkpoint record: an Avro TreeCheckpoint whose note is signed by the worker's key over
 * a body that says what the record says, with the root of that many leaves. */
static int on_checkpoint(void *arg, const tp_topic_record *rec) {
    topic_scan *t = arg;
    tp_checkpoint_record cr;
    tp_note note;
    tp_checkpoint cp;
    unsigned char ref[32];
    char err[256];
    if (tp_codec_decode_checkpoint(t->codec, rec->value, rec->len, &cr, err, sizeof(err)) != 0) {
        fprintf(stderr, "checkpoint record: %s\n", err);
        t->bad++;
        return 0;
    }
    if (tp_note_parse(cr.note, strlen(cr.note), &note, err, sizeof(err)) != 0 ||
        tp_checkpoint_parse(cr.note, note.body_len, &cp, err, sizeof(err)) != 0 ||
        !tp_note_sig_verify(&note.sigs[0], cp.origin, t->pk, cr.note, note.body_len) ||
        strcmp(cp.origin, "tenant-provisioner.dev/receipts") != 0 || cp.size != cr.tree_size ||
        cr.root_hash_len != 32 || memcmp(cp.root, cr.root_hash, 32) != 0 || cp.size <= t->last_size) {
        fprintf(stderr, "checkpoint note does not verify or match: %s\n%s", err, cr.note);
        t->bad++;
    } else {
        ref_mth(t->s->leaves, 0, cp.size, ref);
        if (memcmp(ref, cp.root, 32) != 0) {
            fprintf(stderr, "checkpoint of size %lld has another root than the receipts\n", (long long)cp.size);
            t->bad++;
        }
        t->last_size = cp.size;
    }
    t->checkpoints++;
    tp_checkpoint_record_release(&cr);
    return 0;
}

/* Every receipt record carries its leaf index as the leaf-index header, equal to the database's. */
static int on_receipt(void *arg, const tp_topic_record *rec) {
    topic_scan *t = arg;
    const void *v;
    size_t len;
    char idx[32], rid[128], want[32];
    const void *rv;
    size_t rlen;
    if (tp_topic_record_header(rec, "leaf-index", &v, &len) != 0 || len >= sizeof(idx) ||
        tp_topic_record_header(rec, "receipt-id", &rv, &rlen) != 0 || rlen >= sizeof(rid)) {
        t->bad++;
        return 0;
    }
    snprintf(idx, sizeof(idx), "%.*s", (int)len, (const char *)v);
    snprintf(rid, sizeof(rid), "%.*s", (int)rlen, (const char *)rv);
    if (e2e_text(&t->s->e, want, sizeof(want), "SELECT leaf_index::text FROM receipt_outbox WHERE receipt_id = '%s'", rid) != 0 ||
        strcmp(want, idx) != 0)
        t->bad++;
    else
        t->headers_ok++;
    return 0;
}

static void test_checkpoints_signed_and_published(void **state) {
    tstate *s = *state;
    e2e *e = &s->e;
    enum { N = 10 };
    tp_request reqs[N];
    topic_scan t;
    char err[256];
    memset(&t, 0, sizeof(t));
    t.s = s;
    t.codec = e->codec;
    worker_public_key(t.pk);
    for (int i = 0; i < N; i++) {
        char slug[64];
        snprintf(slug, sizeof(slug), "cp-%s-%d", e->suffix, i);
        e2e_request_init(&reqs[i], slug, (tp_plan)(i % 4));
    }
    assert_int_equal(e2e_worker_start(e, 0), 0);
    assert_int_equal(e2e_submit_batch(e, reqs, N / 2), 0);
    assert_int_equal(e2e_wait_int(e, 3 * (N / 2), 60, "SELECT count(*) FROM receipt_outbox WHERE published_at IS NOT NULL"), 3 * (N / 2));
    /* The relay signs a checkpoint once everything it published is in (interval 200 ms). */
    assert_int_equal(e2e_wait_int(e, 3 * (N / 2), 30, "SELECT coalesce(max(size), 0) FROM tlog_checkpoints"), 3 * (N / 2));
    assert_int_equal(e2e_submit_batch(e, reqs + N / 2, N - N / 2), 0);
    assert_int_equal(e2e_wait_int(e, 3 * N, 60, "SELECT count(*) FROM receipt_outbox WHERE published_at IS NOT NULL"), 3 * N);
    assert_int_equal(e2e_wait_int(e, 3 * N, 30, "SELECT coalesce(max(size), 0) FROM tlog_checkpoints"), 3 * N);
    assert_int_equal(load_leaves(s), 3 * N);

    /* On the topic: each checkpoint verifies with the public key, grows, and has the root of the
     * receipts; the last one covers all of them. */
    for (int tries = 0; tries < 50 && t.last_size < 3 * N; tries++) { /* the last may be in flight */
        if (tries)
            usleep(200 * 1000);
        t.checkpoints = 0;
        t.last_size = 0;
        assert_int_equal(tp_topic_read(e->cfg, e->topic_checkpoints, NULL, on_checkpoint, &t, err, sizeof(err)), 0);
    }
    assert_int_equal(t.bad, 0);
    assert_true(t.checkpoints >= 2);
    assert_int_equal(t.last_size, 3 * N);
    assert_int_equal(tp_topic_read(e->cfg, e->topic_receipts, NULL, on_receipt, &t, err, sizeof(err)), 0);
    assert_int_equal(t.bad, 0);
    assert_true(t.headers_ok >= 3 * N);

    /* The latest stored checkpoint is the last one published. */
    {
        char *note = NULL;
        tp_checkpoint cp;
        assert_int_equal(tp_tlog_db_latest(e->conn, &note, &cp), 0);
        assert_int_equal(cp.size, 3 * N);
        free(note);
    }
}

/* The checkpoint job runs beside the publishing rounds, never in their way: while it waits for the
 * tree (its row locked here, with no lock timeout), receipts keep being fetched, published and
 * marked; no checkpoint is signed meanwhile; once the tree is free, one covers them all. Before,
 * the tree was extended at the end of a publishing round, and that round waited with it. */
/* Backends of this database waiting for a lock in a statement on the tree row (not the stage
 * transactions, which wait for each other on the log's counter). */
#define TREE_WAITERS_SQL                                                                            \
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type " \
    "= 'Lock' AND query LIKE '%FROM tlog_tree%'"

static void test_publishing_goes_on_while_checkpoint_waits(void **state) {
    tstate *s = *state;
    e2e *e = &s->e;
    enum { N = 6 };
    tp_request reqs[N];
    tp_db *holder = NULL;
    tp_res *res = NULL;
    char err[256];
    for (int i = 0; i < N; i++) {
        char slug[64];
        snprintf(slug, sizeof(slug), "cpw-%s-%d", e->suffix, i);
        e2e_request_init(&reqs[i], slug, (tp_plan)(i % 4));
    }
    assert_int_equal(tp_db_connect(e->db.dsn, &holder, err, sizeof(err)), 0);
    /* held for as long as the test needs it */
    assert_int_equal(tp_db_exec(holder, "SET idle_in_transaction_session_timeout = 0", 0, NULL, NULL), 0);
    assert_int_equal(tp_db_begin(holder), 0);
    assert_int_equal(tp_db_query(holder, "SELECT size FROM tlog_tree WHERE id = 1 FOR UPDATE", 0, NULL, &res), 0);
    tp_res_free(res);

    assert_int_equal(e2e_worker_start(e, 0), 0);
    assert_int_equal(e2e_submit_batch(e, reqs, N / 2), 0);
    assert_int_equal(e2e_wait_int(e, 3 * (N / 2), 60, "SELECT count(*) FROM receipt_outbox WHERE published_at IS NOT NULL"), 3 * (N / 2));
    /* Marks were made: the checkpoint job starts and waits for the tree row. */
    assert_int_equal(e2e_wait_int(e, 1, 60, "%s", TREE_WAITERS_SQL), 1);
    assert_int_equal(e2e_submit_batch(e, reqs + N / 2, N - N / 2), 0);
    assert_int_equal(e2e_wait_int(e, 3 * N, 60, "SELECT count(*) FROM receipt_outbox WHERE published_at IS NOT NULL"), 3 * N);
    /* still waiting, and nothing signed */
    assert_int_equal(e2e_int(e, "%s", TREE_WAITERS_SQL), 1);
    assert_int_equal(e2e_int(e, "SELECT count(*) FROM tlog_checkpoints"), 0);

    assert_int_equal(tp_db_rollback(holder), 0);
    tp_db_close(holder);
    assert_int_equal(e2e_wait_int(e, 3 * N, 30, "SELECT coalesce(max(size), 0) FROM tlog_checkpoints"), 3 * N);
    assert_int_equal(load_leaves(s), 3 * N);
}

/* ---- tpctl receipts verify: the log audit end to end ------------------------------------------ */

#define OUT_CAP (1 << 20)

typedef struct raw_rec {
    unsigned char *value;
    size_t len;
    char key[160];
    char leaf[24];
    char tenant[96];
    int64_t seq;
} raw_rec;

typedef struct raw_topic {
    tp_codec *codec;
    bool receipts;
    raw_rec v[256];
    size_t n;
} raw_topic;

static int collect_raw(void *arg, const tp_topic_record *r) {
    raw_topic *t = arg;
    raw_rec *x;
    const void *hv;
    size_t hl;
    if (t->n == sizeof(t->v) / sizeof(t->v[0]) || !r->value)
        return 0;
    x = &t->v[t->n++];
    memset(x, 0, sizeof(*x));
    x->value = malloc(r->len);
    assert_non_null(x->value);
    memcpy(x->value, r->value, r->len);
    x->len = r->len;
    snprintf(x->key, sizeof(x->key), "%.*s", (int)r->key_len, r->key ? (const char *)r->key : "");
    if (tp_topic_record_header(r, "leaf-index", &hv, &hl) == 0 && hl < sizeof(x->leaf))
        snprintf(x->leaf, sizeof(x->leaf), "%.*s", (int)hl, (const char *)hv);
    if (t->receipts) {
        tp_receipt_record d;
        char err[128];
        assert_int_equal(tp_codec_decode_receipt(t->codec, r->value, r->len, &d, err, sizeof(err)), 0);
        snprintf(x->tenant, sizeof(x->tenant), "%s", d.tenant_id);
        x->seq = d.sequence;
        tp_receipt_record_release(&d);
    }
    return 0;
}

static void raw_free(raw_topic *t) {
    for (size_t i = 0; i < t->n; i++)
        free(t->v[i].value);
    t->n = 0;
}

#define STRIP_NONE (-2)
#define STRIP_ALL (-1)

/* Copies t into a new one-partition topic, leaving out record skip (-1: none), the leaf-index
 * header of record strip (STRIP_NONE, STRIP_ALL) and appending extra (may be NULL) at the end. */
static void copy_topic_strip(const raw_topic *t, const char *name, int skip, int strip,
                             const unsigned char *extra, size_t extra_len, const char *extra_key) {
    assert_int_equal(e2e_topic_create(name, 1), 0);
    for (size_t i = 0; i < t->n; i++) {
        const raw_rec *x = &t->v[i];
        bool keep = x->leaf[0] && strip != STRIP_ALL && strip != (int)i;
        if ((int)i == skip)
            continue;
        assert_int_equal(e2e_produce_to_with_header(name, x->key, strlen(x->key), x->value, x->len, 0,
                                                    keep ? "leaf-index" : NULL, x->leaf),
                         0);
    }
    if (extra)
        assert_int_equal(e2e_produce_to(name, extra_key, strlen(extra_key), extra, extra_len, 0), 0);
}

static void copy_topic(const raw_topic *t, const char *name, int skip, const unsigned char *extra,
                       size_t extra_len, const char *extra_key) {
    copy_topic_strip(t, name, skip, STRIP_NONE, extra, extra_len, extra_key);
}

/* A TreeCheckpoint record for (size, root) signed by sk/pk as the note key `origin`. */
static unsigned char *forge_checkpoint(e2e *e, int64_t size, const unsigned char root[32],
                                       const tp_signer *signer, size_t *len) {
    tp_checkpoint cp;
    char body[512], note[2048];
    unsigned char sig[64], pk[32], sk[64], *buf = NULL;
    memset(&cp, 0, sizeof(cp));
    snprintf(cp.origin, sizeof(cp.origin), "tenant-provisioner.dev/receipts");
    cp.size = size;
    memcpy(cp.root, root, 32);
    int bl = tp_checkpoint_format(&cp, body, sizeof(body));
    assert_true(bl > 0);
    if (signer) {
        assert_int_equal(tp_signer_sign(signer, body, (size_t)bl, sig), 0);
        tp_signer_public_key(signer, pk);
    } else { /* a key outside the key set */
        crypto_sign_keypair(pk, sk);
        crypto_sign_detached(sig, NULL, (const unsigned char *)body, (size_t)bl, sk);
    }
    assert_true(tp_note_format(body, cp.origin, pk, sig, note, sizeof(note)) > 0);
    tp_checkpoint_record rec = {cp.origin, size, cp.root, 32, note};
    assert_int_equal(tp_codec_encode_checkpoint(e->codec, &rec, &buf, len), 0);
    return buf;
}

static int run_tpctl_verify(e2e *e, char *out, const char *receipts, const char *checkpoints) {
    char tpctl[1024];
    int rc;
    assert_int_equal(e2e_bin_path("tpctl", tpctl, sizeof(tpctl)), 0);
    rc = e2e_run(out, OUT_CAP, "%s receipts --config %s verify --topic %s --checkpoints %s --keyset "
                 ".stack/keys/receipts.keyset", tpctl, e->config_path, receipts, checkpoints);
    fprintf(stderr, "tpctl receipts verify --topic %s --checkpoints %s: exit %d\n%s", receipts, checkpoints, rc, out);
    return rc;
}

static void test_verify_audits_the_log(void **state) {
    tstate *s = *state;
    e2e *e = &s->e;
    enum { N = 4 };
    tp_request reqs[N];
    char *out = malloc(OUT_CAP), topic[256], line[640], tenant[128];
    static raw_topic rt, ct;
    unsigned char root[32];
    int64_t n;
    tp_signer *signer = NULL;
    assert_non_null(out);
    assert_int_equal(tp_signer_load(".stack/keys/receipts.key", &signer), 0);
    for (int i = 0; i < N; i++) {
        char slug[64];
        snprintf(slug, sizeof(slug), "va-%s-%d", e->suffix, i);
        e2e_request_init(&reqs[i], slug, (tp_plan)(i % 4));
    }
    /* Two checkpoints at least: one after the first half, one after all. */
    assert_int_equal(e2e_worker_start(e, 0), 0);
    assert_int_equal(e2e_submit_batch(e, reqs, N / 2), 0);
    assert_int_equal(e2e_wait_int(e, 3 * (N / 2), 60, "SELECT coalesce(max(size), 0) FROM tlog_checkpoints"), 3 * (N / 2));
    assert_int_equal(e2e_submit_batch(e, reqs + N / 2, N - N / 2), 0);
    assert_int_equal(e2e_wait_int(e, 3 * N, 60, "SELECT coalesce(max(size), 0) FROM tlog_checkpoints"), 3 * N);
    n = 3 * N;
    assert_int_equal(load_leaves(s), n);
    /* the record of the last checkpoint is on the topic */
    for (int tries = 0; tries < 50; tries++) {
        char err[256];
        raw_free(&ct);
        ct.codec = e->codec;
        assert_int_equal(tp_topic_read(e->cfg, e->topic_checkpoints, NULL, collect_raw, &ct, err, sizeof(err)), 0);
        if (e2e_int(e, "SELECT count(*) FROM tlog_checkpoints") == (int64_t)ct.n)
            break;
        usleep(200 * 1000);
    }

    /* The real topics pass, with the log audited. */
    assert_int_equal(run_tpctl_verify(e, out, e->topic_receipts, e->topic_checkpoints), 0);
    snprintf(line, sizeof(line), "log leaves: %lld\n", (long long)n);
    assert_non_null(strstr(out, line));
    snprintf(line, sizeof(line), "latest checkpoint size: %lld\n", (long long)n);
    assert_non_null(strstr(out, line));
    assert_non_null(strstr(out, "errors: 0\n"));

    /* A tenant's last receipt deleted from a copy of the receipts topic: every chain still
     * verifies, the log names the dropped tail. */
    {
        char err[256], leaf[24] = "";
        int skip = -1;
        rt.codec = e->codec;
        rt.receipts = true;
        assert_int_equal(tp_topic_read(e->cfg, e->topic_receipts, NULL, collect_raw, &rt, err, sizeof(err)), 0);
        assert_int_equal(e2e_text(e, tenant, sizeof(tenant), "SELECT id FROM tenants WHERE slug = '%s'", reqs[0].tenant.slug), 0);
        for (size_t i = 0; i < rt.n; i++)
            if (strcmp(rt.v[i].tenant, tenant) == 0 && rt.v[i].seq == 3) {
                skip = (int)i;
                snprintf(leaf, sizeof(leaf), "%s", rt.v[i].leaf);
            }
        assert_true(skip >= 0 && leaf[0]);
        snprintf(topic, sizeof(topic), "%s.droptail", e->topic_receipts);
        copy_topic(&rt, topic, skip, NULL, 0, NULL);
        assert_int_equal(run_tpctl_verify(e, out, topic, e->topic_checkpoints), 1);
        snprintf(line, sizeof(line), "first error: dropped tail: leaf %s of the log is in the checkpoint of size %lld",
                 leaf, (long long)n);
        assert_non_null(strstr(out, line));
        assert_non_null(strstr(out, "result: BROKEN\n"));
        e2e_topic_delete(topic);

        /* The header stripped from that receipt: it counts as made before the log, and its
         * leaf is missing from the log all the same. */
        snprintf(topic, sizeof(topic), "%s.stripone", e->topic_receipts);
        copy_topic_strip(&rt, topic, -1, skip, NULL, 0, NULL);
        assert_int_equal(run_tpctl_verify(e, out, topic, e->topic_checkpoints), 1);
        snprintf(line, sizeof(line), "dropped tail: leaf %s of the log", leaf);
        assert_non_null(strstr(out, line));
        assert_non_null(strstr(out, "made before the log: 1\n"));
        e2e_topic_delete(topic);

        /* Receipts from before the log (no header at all) and no checkpoint: they verify. */
        char empty[256];
        snprintf(topic, sizeof(topic), "%s.prelog", e->topic_receipts);
        snprintf(empty, sizeof(empty), "%s.none", e->topic_checkpoints);
        copy_topic_strip(&rt, topic, -1, STRIP_ALL, NULL, 0, NULL);
        assert_int_equal(e2e_topic_create(empty, 1), 0);
        assert_int_equal(run_tpctl_verify(e, out, topic, empty), 0);
        snprintf(line, sizeof(line), "made before the log: %lld\n", (long long)n);
        assert_non_null(strstr(out, line));
        assert_non_null(strstr(out, "result: OK\n"));
        e2e_topic_delete(topic);
        e2e_topic_delete(empty);
        raw_free(&rt);
    }

    /* A forked log: a second checkpoint of the latest size, validly signed, another root. */
    {
        size_t len = 0;
        memcpy(root, s->leaves[0], 32);
        unsigned char *forged = forge_checkpoint(e, n, root, signer, &len);
        snprintf(topic, sizeof(topic), "%s.fork", e->topic_checkpoints);
        copy_topic(&ct, topic, -1, forged, len, "tenant-provisioner.dev/receipts");
        free(forged);
        assert_int_equal(run_tpctl_verify(e, out, e->topic_receipts, topic), 1);
        snprintf(line, sizeof(line), "both have size %lld but different root hashes", (long long)n);
        assert_non_null(strstr(out, "first error: forked log: the checkpoints at "));
        assert_non_null(strstr(out, line));
        e2e_topic_delete(topic);
    }

    /* A checkpoint that does not extend the previous one: the copy keeps the real checkpoints
     * below the latest size and gets, instead of the latest, one of that size, validly signed,
     * with a root that is not of those leaves. */
    {
        size_t len = 0, kept = 0;
        int64_t prev = e2e_int(e, "SELECT max(size) FROM tlog_checkpoints WHERE size < %lld", (long long)n);
        assert_true(prev >= 1);
        unsigned char *forged = forge_checkpoint(e, n, s->leaves[1], signer, &len);
        snprintf(topic, sizeof(topic), "%s.nonext", e->topic_checkpoints);
        assert_int_equal(e2e_topic_create(topic, 1), 0);
        for (size_t i = 0; i < ct.n; i++) {
            tp_checkpoint_record d;
            char err[128];
            assert_int_equal(tp_codec_decode_checkpoint(e->codec, ct.v[i].value, ct.v[i].len, &d, err, sizeof(err)), 0);
            if (d.tree_size < n) {
                assert_int_equal(e2e_produce_to(topic, ct.v[i].key, strlen(ct.v[i].key), ct.v[i].value, ct.v[i].len, 0), 0);
                kept++;
            }
            tp_checkpoint_record_release(&d);
        }
        assert_int_equal(e2e_produce_to(topic, "o", 1, forged, len, 0), 0);
        free(forged);
        assert_int_equal(run_tpctl_verify(e, out, e->topic_receipts, topic), 1);
        snprintf(line, sizeof(line), "first error: checkpoint of size %lld (at %s[0]@%zu) is not an extension of the checkpoint of size %lld",
                 (long long)n, topic, kept, (long long)prev);
        assert_non_null(strstr(out, line));
        assert_null(strstr(out, "forked log"));
        e2e_topic_delete(topic);
    }

    /* A checkpoint signed by a key outside the key set. */
    {
        size_t len = 0;
        tp_tlog_root(tp_tlog_db_read, e->conn, n, root);
        unsigned char *forged = forge_checkpoint(e, n, root, NULL, &len);
        snprintf(topic, sizeof(topic), "%s.badkey", e->topic_checkpoints);
        copy_topic(&ct, topic, -1, forged, len, "tenant-provisioner.dev/receipts");
        free(forged);
        assert_int_equal(run_tpctl_verify(e, out, e->topic_receipts, topic), 1);
        assert_non_null(strstr(out, "with a key of the key set verifies"));
        e2e_topic_delete(topic);
    }

    /* tpctl receipts prove: a proof a third party checks with the checkpoint's root. */
    {
        char tpctl[1024], rid[96];
        unsigned char proof[TP_TLOG_MAX_PROOF][32];
        json_t *j;
        assert_int_equal(e2e_bin_path("tpctl", tpctl, sizeof(tpctl)), 0);
        assert_int_equal(e2e_text(e, rid, sizeof(rid), "SELECT receipt_id FROM receipt_outbox WHERE leaf_index = 5"), 0);
        assert_int_equal(e2e_run(out, OUT_CAP, "%s receipts --config %s prove %s 2>/dev/null", tpctl, e->config_path, rid), 0);
        j = json_loads(out, 0, NULL);
        assert_non_null(j);
        assert_int_equal(json_integer_value(json_object_get(j, "leafIndex")), 5);
        assert_int_equal(json_integer_value(json_object_get(j, "treeSize")), n);
        json_t *arr = json_object_get(j, "proof");
        size_t np = json_array_size(arr), bl;
        for (size_t i = 0; i < np; i++)
            assert_int_equal(sodium_base642bin(proof[i], 32, json_string_value(json_array_get(arr, i)), 44, NULL, &bl,
                                               NULL, sodium_base64_VARIANT_ORIGINAL), 0);
        ref_mth(s->leaves, 0, n, root);
        assert_int_equal(tp_tlog_verify_inclusion(5, n, s->leaves[5], (const unsigned char(*)[32])proof, np, root), 0);
        assert_non_null(strstr(json_string_value(json_object_get(j, "checkpoint")), "tenant-provisioner.dev/receipts\n"));
        json_decref(j);
        assert_int_equal(e2e_run(out, OUT_CAP, "%s receipts --config %s prove prov_nope", tpctl, e->config_path), 1);
        assert_non_null(strstr(out, "no receipt prov_nope in the log"));
    }
    raw_free(&ct);
    tp_signer_free(signer);
    free(out);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_prestate_setup_teardown(test_leaves_tree_and_proofs, setup, teardown, "tlog"),
        cmocka_unit_test_prestate_setup_teardown(test_checkpoints_signed_and_published, setup, teardown, "tlogcp"),
        cmocka_unit_test_prestate_setup_teardown(test_publishing_goes_on_while_checkpoint_waits,
                                                 setup_unbounded_locks, teardown, "tlogcpw"),
        cmocka_unit_test_prestate_setup_teardown(test_verify_audits_the_log, setup, teardown, "tlogva"),
    };
    if (getenv("TP_TEST_FILTER"))
        cmocka_set_test_filter(getenv("TP_TEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
