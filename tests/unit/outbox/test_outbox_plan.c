/* test_outbox_plan: the relay's pure rules. Regression for the reorder of issue 8: when a
 * tenant's earlier receipt fails delivery and a later one succeeds, the later one must not be
 * marked published (the relay used to mark every delivered row), nor be sent again ahead of it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "outbox/outbox_int.h"

#define S TP_OUTBOX_SENT
#define D TP_OUTBOX_DELIVERED
#define F TP_OUTBOX_FAILED
#define W TP_OUTBOX_WAIT
#define M TP_OUTBOX_MARK
#define X TP_OUTBOX_DROP

static void check(const tp_outbox_state *states, size_t n, const tp_outbox_verdict *want) {
    tp_outbox_verdict got[16];
    tp_outbox_verdicts(states, n, got);
    for (size_t i = 0; i < n; i++) {
        if (got[i] != want[i])
            fail_msg("row %zu: verdict %d, want %d", i, (int)got[i], (int)want[i]);
    }
}

static void test_earlier_failure_later_success_is_not_marked(void **state) {
    (void)state;
    /* Receipts 1, 2, 3 of one tenant: 1 delivered, 2 failed, 3 delivered. Only 1 is marked; 2 and
     * 3 are forgotten together, so the next fetch sends 2 then 3 again, in order. */
    const tp_outbox_state st[] = {D, F, D};
    const tp_outbox_verdict want[] = {M, X, X};
    check(st, 3, want);
}

static void test_failure_first(void **state) {
    (void)state;
    const tp_outbox_state st[] = {F, D, D};
    const tp_outbox_verdict want[] = {X, X, X};
    check(st, 3, want);
}

static void test_drop_waits_for_every_report_behind_the_failure(void **state) {
    (void)state;
    /* 3 is still in flight: dropping 2 now would let a refetch send 2 and 3 again while the
     * first 3 may still land ahead of the new 2. Wait for 3's report. */
    const tp_outbox_state st[] = {D, F, S};
    const tp_outbox_verdict want[] = {M, W, W};
    check(st, 3, want);
}

static void test_delivered_behind_an_unreported_row_waits(void **state) {
    (void)state;
    const tp_outbox_state st[] = {S, D, D};
    const tp_outbox_verdict want[] = {W, W, W};
    check(st, 3, want);
    const tp_outbox_state st2[] = {D, D, S, D};
    const tp_outbox_verdict want2[] = {M, M, W, W};
    check(st2, 4, want2);
}

static void test_all_delivered_all_marked(void **state) {
    (void)state;
    const tp_outbox_state st[] = {D, D, D};
    const tp_outbox_verdict want[] = {M, M, M};
    check(st, 3, want);
    tp_outbox_verdicts(st, 0, NULL); /* an empty chain is fine */
}

static void test_failed_row_behind_an_unreported_one(void **state) {
    (void)state;
    /* 1 still in flight, 2 failed: 2 is dropped (it goes out again after 1, which was sent first). */
    const tp_outbox_state st[] = {S, F};
    const tp_outbox_verdict want[] = {W, X};
    check(st, 2, want);
}

static void test_slot_targets_cover_every_slot(void **state) {
    (void)state;
    assert_int_equal(tp_outbox_slot_target(0), TP_OUTBOX_SLOTS);
    assert_int_equal(tp_outbox_slot_target(1), TP_OUTBOX_SLOTS);
    assert_int_equal(tp_outbox_slot_target(2), TP_OUTBOX_SLOTS / 2);
    for (int n = 1; n <= 40; n++) {
        int t = tp_outbox_slot_target(n);
        assert_true(t >= 1);
        assert_true(t * n >= TP_OUTBOX_SLOTS);           /* together they hold every slot */
        assert_true((t - 1) * n < TP_OUTBOX_SLOTS || t == 1); /* and no more than needed */
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_earlier_failure_later_success_is_not_marked),
        cmocka_unit_test(test_failure_first),
        cmocka_unit_test(test_drop_waits_for_every_report_behind_the_failure),
        cmocka_unit_test(test_delivered_behind_an_unreported_row_waits),
        cmocka_unit_test(test_all_delivered_all_marked),
        cmocka_unit_test(test_failed_row_behind_an_unreported_one),
        cmocka_unit_test(test_slot_targets_cover_every_slot),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
