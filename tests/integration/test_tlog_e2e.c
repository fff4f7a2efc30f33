/* test_tlog_e2e: the transparency log on the real stack (issue 12, parts 1-2): two workers
 * provision tenants concurrently; every receipt gets a leaf index in its own transaction (dense
 * from 0, unique, increasing along each tenant's chain); the tree stored in PostgreSQL, extended
 * by concurrent extenders, has the root an independent RFC 9162 computation in this file gives
 * over the receipts' DSSE PAE bytes; inclusion and consistency proofs read from it verify, and
 * they read O(log^2 n) stored hashes, not the leaves. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "support/e2e.h"
#include "tp/error.h"
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

static int setup(void **state) {
    tstate *s = calloc(1, sizeof(*s));
    const char *name = *state ? *state : "tlog";
    if (!s)
        return -1;
    /* Wait out someone else's fault injection instead of failing in it. */
    s->lock_fd = open("/tmp/tp-stack-faults.lock", O_RDWR | O_CREAT, 0666);
    if (s->lock_fd >= 0)
        flock(s->lock_fd, LOCK_SH);
    if (e2e_setup(&s->e, name, NULL) != 0) {
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
    assert_int_equal(tp_tlog_db_extend(e->conn, 5, &size, root), 0); /* a bound is honoured */
    assert_int_equal(size, n + 5);
    assert_int_equal(tp_tlog_db_extend(e->conn, 0, &size, root), 0);
    assert_int_equal(size, n + 12);
    assert_int_equal(load_leaves(s), n + 12);
    ref_mth(s->leaves, 0, n + 12, ref);
    assert_memory_equal(root, ref, 32);
    assert_int_equal(tp_tlog_consistency_proof(tp_tlog_db_read, e->conn, n, n + 12, proof, &plen), 0);
    assert_int_equal(tp_tlog_verify_consistency(n, n + 12, (const unsigned char(*)[32])proof, plen, before, ref), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_prestate_setup_teardown(test_leaves_tree_and_proofs, setup, teardown, "tlog"),
    };
    if (getenv("TP_TEST_FILTER"))
        cmocka_set_test_filter(getenv("TP_TEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
