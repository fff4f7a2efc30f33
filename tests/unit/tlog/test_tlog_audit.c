/* test_tlog_audit.c: the offline log audit of `tpctl receipts verify`: a faithful log passes;
 * a dropped tail, a missing middle leaf, a forked log, a checkpoint that does not extend the
 * earlier ones, a leaf index claimed twice and a receipt without an index are each reported by
 * name. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tp/error.h"
#include "tp/tlog.h"

#define N 12

static unsigned char leaves[N][32];

typedef struct errs {
    int n;
    char text[8][640];
} errs;

static void on_error(void *arg, const char *text) {
    errs *e = arg;
    if (e->n < 8)
        snprintf(e->text[e->n], sizeof(e->text[0]), "%s", text);
    e->n++;
}

static bool mentions(const errs *e, const char *what) {
    for (int i = 0; i < e->n && i < 8; i++)
        if (strstr(e->text[i], what))
            return true;
    return false;
}

static void root_of(int64_t size, unsigned char out[32]);

static tp_checkpoint cp_of(int64_t size) {
    tp_checkpoint cp;
    memset(&cp, 0, sizeof(cp));
    snprintf(cp.origin, sizeof(cp.origin), "example.test/log");
    cp.size = size;
    root_of(size, cp.root);
    return cp;
}

/* MTH straight from RFC 9162 §2.1.1. */
static void mth(int64_t lo, int64_t hi, unsigned char out[32]) {
    unsigned char l[32], r[32];
    int64_t k = 1;
    if (hi - lo == 1) {
        memcpy(out, leaves[lo], 32);
        return;
    }
    while (k * 2 < hi - lo)
        k *= 2;
    mth(lo, lo + k, l);
    mth(lo + k, hi, r);
    tp_tlog_node_hash(l, r, out);
}

static void root_of(int64_t size, unsigned char out[32]) {
    if (size == 0)
        tp_tlog_empty_root(out);
    else
        mth(0, size, out);
}

/* Feeds leaves 0..N-1 except skip (-1: none), checkpoints of sizes 5 and N, and runs the audit. */
static int run(int64_t skip, bool gapless, errs *e, tp_tlog_audit_summary *sum,
               void (*extra)(tp_tlog_audit *a)) {
    tp_tlog_audit *a = NULL;
    tp_checkpoint cp;
    char rid[32];
    assert_int_equal(tp_tlog_audit_new(&a), 0);
    /* fed out of order, with one re-published duplicate, as a topic delivers them */
    for (int64_t i = N - 1; i >= 0; i--) {
        if (i == skip)
            continue;
        snprintf(rid, sizeof(rid), "prov_%lld", (long long)i);
        assert_int_equal(tp_tlog_audit_leaf(a, i, leaves[i], rid, "t[0]@1"), 0);
        if (i == 3)
            assert_int_equal(tp_tlog_audit_leaf(a, i, leaves[i], rid, "t[0]@2"), 0);
    }
    cp = cp_of(N);
    assert_int_equal(tp_tlog_audit_checkpoint(a, &cp, "cp[0]@1"), 0);
    cp = cp_of(5);
    assert_int_equal(tp_tlog_audit_checkpoint(a, &cp, "cp[0]@0"), 0);
    if (extra)
        extra(a);
    memset(e, 0, sizeof(*e));
    int rc = tp_tlog_audit_finish(a, gapless, on_error, e, sum);
    tp_tlog_audit_free(a);
    for (int i = 0; i < e->n && i < 8; i++)
        fprintf(stderr, "  audit: %s\n", e->text[i]);
    return rc;
}

static int setup(void **state) {
    (void)state;
    for (int i = 0; i < N; i++) {
        char entry[16];
        int len = snprintf(entry, sizeof(entry), "leaf %d", i);
        tp_tlog_leaf_hash(entry, (size_t)len, leaves[i]);
    }
    return 0;
}

static void test_faithful_log_passes(void **state) {
    (void)state;
    errs e;
    tp_tlog_audit_summary sum;
    assert_int_equal(run(-1, true, &e, &sum, NULL), 0);
    assert_int_equal(e.n, 0);
    assert_int_equal(sum.leaves, N);
    assert_int_equal(sum.checkpoints, 2);
    assert_int_equal(sum.latest_size, N);
    assert_int_equal(sum.not_yet, 0);
}

static void test_dropped_tail_and_missing_middle(void **state) {
    (void)state;
    errs e;
    tp_tlog_audit_summary sum;
    assert_int_equal(run(N - 1, true, &e, &sum, NULL), TP_EVERIFY);
    assert_true(mentions(&e, "dropped tail: leaf 11 of the log is in the checkpoint of size 12 but not on the receipts topic"));
    assert_int_equal(run(4, true, &e, &sum, NULL), TP_EVERIFY);
    assert_true(mentions(&e, "dropped tail: leaf 4 "));
    assert_int_equal(e.n, 1); /* the checkpoints below the gap still match */
    assert_int_equal(run(4, false, &e, &sum, NULL), TP_EVERIFY);
    assert_true(mentions(&e, "missing receipts: leaf 4 "));
}

static void add_fork(tp_tlog_audit *a) {
    tp_checkpoint cp = cp_of(N);
    cp.root[0] ^= 1;
    assert_int_equal(tp_tlog_audit_checkpoint(a, &cp, "cp[0]@2"), 0);
}

static void add_non_extending(tp_tlog_audit *a) {
    tp_checkpoint cp = cp_of(8);
    cp.root[5] ^= 1;
    assert_int_equal(tp_tlog_audit_checkpoint(a, &cp, "cp[0]@3"), 0);
}

static void add_conflict_and_unindexed(tp_tlog_audit *a) {
    unsigned char other[32];
    tp_tlog_leaf_hash("evil", 4, other);
    assert_int_equal(tp_tlog_audit_leaf(a, 7, other, "prov_evil", "t[1]@9"), 0);
    assert_int_equal(tp_tlog_audit_leaf(a, -1, other, "prov_noindex", "t[1]@10"), 0);
}

static void add_other_origin(tp_tlog_audit *a) {
    tp_checkpoint cp = cp_of(3);
    snprintf(cp.origin, sizeof(cp.origin), "other.test/log");
    assert_int_equal(tp_tlog_audit_checkpoint(a, &cp, "cp[0]@4"), 0);
}

static void test_fork_non_extension_conflicts(void **state) {
    (void)state;
    errs e;
    tp_tlog_audit_summary sum;
    assert_int_equal(run(-1, true, &e, &sum, add_fork), TP_EVERIFY);
    assert_true(mentions(&e, "forked log: the checkpoints at cp[0]@1 and cp[0]@2 both have size 12"));
    assert_int_equal(run(-1, true, &e, &sum, add_non_extending), TP_EVERIFY);
    assert_true(mentions(&e, "checkpoint of size 8 (at cp[0]@3) is not an extension of the checkpoint of size 5 (at cp[0]@0)"));
    assert_int_equal(e.n, 1); /* the later checkpoint of size 12 still matches */
    assert_int_equal(run(-1, true, &e, &sum, add_conflict_and_unindexed), TP_EVERIFY);
    assert_true(mentions(&e, "leaf 7 is claimed by receipt prov_7"));
    assert_true(mentions(&e, "receipt prov_noindex (at t[1]@10) has no valid leaf-index header"));
    assert_int_equal(run(-1, true, &e, &sum, add_other_origin), TP_EVERIFY);
    assert_true(mentions(&e, "two logs mixed"));
}

/* Regression: no checkpoint yet (or nothing at all) passed NULL to qsort (UBSan, seen with two
 * relays right after their first receipts). */
static void test_nothing_or_no_checkpoint(void **state) {
    (void)state;
    tp_tlog_audit *a = NULL;
    tp_tlog_audit_summary sum;
    errs e = {0};
    assert_int_equal(tp_tlog_audit_new(&a), 0);
    assert_int_equal(tp_tlog_audit_finish(a, true, on_error, &e, &sum), 0);
    tp_tlog_audit_free(a);
    assert_int_equal(tp_tlog_audit_new(&a), 0);
    for (int i = 0; i < N; i++)
        assert_int_equal(tp_tlog_audit_leaf(a, i, leaves[i], "prov", "x"), 0);
    assert_int_equal(tp_tlog_audit_finish(a, true, on_error, &e, &sum), 0);
    assert_int_equal(e.n, 0);
    assert_int_equal(sum.checkpoints, 0);
    assert_int_equal(sum.not_yet, N);
    tp_tlog_audit_free(a);
}

static void test_untrusted_huge_index(void **state) {
    (void)state;
    tp_tlog_audit *a = NULL;
    tp_tlog_audit_summary sum;
    errs e = {0};
    tp_checkpoint cp = cp_of(1);
    assert_int_equal(tp_tlog_audit_new(&a), 0);
    assert_int_equal(tp_tlog_audit_leaf(a, 0, leaves[0], "prov_0", "x"), 0);
    assert_int_equal(tp_tlog_audit_leaf(a, INT64_MAX - 1, leaves[1], "prov_big", "x"), 0);
    cp.size = INT64_MAX;
    assert_int_equal(tp_tlog_audit_checkpoint(a, &cp, "cp"), 0);
    assert_int_equal(tp_tlog_audit_finish(a, true, on_error, &e, &sum), TP_EVERIFY);
    assert_true(mentions(&e, "dropped tail"));
    tp_tlog_audit_free(a);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_faithful_log_passes),
        cmocka_unit_test(test_dropped_tail_and_missing_middle),
        cmocka_unit_test(test_fork_non_extension_conflicts),
        cmocka_unit_test(test_untrusted_huge_index),
        cmocka_unit_test(test_nothing_or_no_checkpoint),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
