/* test_watermark: the stored offset never passes an unfinished offset. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "consumer/watermark.h"
#include "tp/error.h"

static void test_in_order(void **state) {
    (void)state;
    tp_watermark wm;
    int64_t next = -1;
    tp_watermark_init(&wm);
    for (int64_t o = 10; o < 13; o++)
        assert_int_equal(tp_watermark_add(&wm, o), 0);
    assert_true(tp_watermark_finish(&wm, 10, &next));
    assert_int_equal(next, 11);
    assert_int_equal(tp_watermark_pending(&wm), 2);
    tp_watermark_release(&wm);
}

static void test_out_of_order_holds_back(void **state) {
    (void)state;
    tp_watermark wm;
    int64_t next = -1;
    tp_watermark_init(&wm);
    for (int64_t o = 0; o < 5; o++)
        tp_watermark_add(&wm, o);
    assert_false(tp_watermark_finish(&wm, 3, &next));
    assert_false(tp_watermark_finish(&wm, 1, &next));
    assert_int_equal(next, -1);
    assert_true(tp_watermark_finish(&wm, 0, &next));
    assert_int_equal(next, 2); /* 0 and 1 done, 2 not */
    assert_true(tp_watermark_finish(&wm, 2, &next));
    assert_int_equal(next, 4); /* 2 and 3 */
    assert_true(tp_watermark_finish(&wm, 4, &next));
    assert_int_equal(next, 5);
    assert_int_equal(tp_watermark_pending(&wm), 0);
    tp_watermark_release(&wm);
}

static void test_gaps_and_unknown(void **state) {
    (void)state;
    tp_watermark wm;
    int64_t next = -1;
    tp_watermark_init(&wm);
    tp_watermark_add(&wm, 100);
    tp_watermark_add(&wm, 105); /* compacted topics and transactions leave gaps */
    assert_int_equal(tp_watermark_add(&wm, 105), TP_EINVAL);
    assert_false(tp_watermark_finish(&wm, 101, &next));
    assert_true(tp_watermark_finish(&wm, 100, &next));
    assert_int_equal(next, 101);
    assert_true(tp_watermark_finish(&wm, 105, &next));
    assert_int_equal(next, 106);
    tp_watermark_release(&wm);
}

static void test_growth_and_wraparound(void **state) {
    (void)state;
    tp_watermark wm;
    int64_t next = -1, o = 0;
    tp_watermark_init(&wm);
    for (int round = 0; round < 50; round++) {
        int64_t first = o;
        for (int i = 0; i < 37; i++)
            assert_int_equal(tp_watermark_add(&wm, o++), 0);
        /* finish backwards: only the last call advances, to the end of the round */
        for (int64_t x = o - 1; x > first; x--)
            assert_false(tp_watermark_finish(&wm, x, &next));
        assert_true(tp_watermark_finish(&wm, first, &next));
        assert_int_equal(next, o);
    }
    assert_int_equal(tp_watermark_pending(&wm), 0);
    tp_watermark_release(&wm);
}

/* Offsets going backwards (a reset, a truncated log) restart the watermark in a new epoch. */
static void test_restart(void **state) {
    (void)state;
    tp_watermark wm;
    int64_t next = -1;
    tp_watermark_init(&wm);
    for (int64_t o = 100; o < 106; o++)
        assert_int_equal(tp_watermark_add(&wm, o), 0);
    assert_true(tp_watermark_finish(&wm, 100, &next));
    uint32_t old = wm.epoch;
    assert_int_equal(tp_watermark_add(&wm, 90), TP_EINVAL);
    tp_watermark_restart(&wm);
    assert_int_not_equal(wm.epoch, old);
    assert_int_equal(tp_watermark_pending(&wm), 0);
    for (int64_t o = 90; o < 95; o++)
        assert_int_equal(tp_watermark_add(&wm, o), 0);
    next = -1;
    assert_false(tp_watermark_finish(&wm, 104, &next)); /* an old epoch's offset is unknown */
    assert_true(tp_watermark_finish(&wm, 90, &next));
    assert_int_equal(next, 91);
    assert_int_equal(tp_watermark_pending(&wm), 4);
    tp_watermark_release(&wm);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_restart),
        cmocka_unit_test(test_in_order),
        cmocka_unit_test(test_out_of_order_holds_back),
        cmocka_unit_test(test_gaps_and_unknown),
        cmocka_unit_test(test_growth_and_wraparound),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
