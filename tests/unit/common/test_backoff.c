/* test_backoff: ceilings grow geometrically up to the cap; delays stay within [0, ceiling]. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "tp/backoff.h"

static void test_ceiling(void **state) {
    (void)state;
    tp_backoff b = {200, 2.0, 5000};
    assert_int_equal(tp_backoff_ceiling(&b, 1), 200);
    assert_int_equal(tp_backoff_ceiling(&b, 2), 400);
    assert_int_equal(tp_backoff_ceiling(&b, 4), 1600);
    assert_int_equal(tp_backoff_ceiling(&b, 6), 5000);
    assert_int_equal(tp_backoff_ceiling(&b, 1000), 5000);
}

static void test_delay_bounds(void **state) {
    (void)state;
    tp_backoff b = {100, 3.0, 2000};
    uint64_t x = 88172645463325252ull;
    int64_t max_seen = 0;
    for (int i = 0; i < 10000; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        int64_t d = tp_backoff_delay(&b, 3, x);
        assert_true(d >= 0 && d <= 900);
        if (d > max_seen)
            max_seen = d;
    }
    assert_true(max_seen > 800); /* jitter spans the range */
    assert_int_equal(tp_backoff_delay(&b, 1, UINT64_MAX), (int64_t)(UINT64_MAX % 101));
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_ceiling), cmocka_unit_test(test_delay_bounds)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
