/* test_outbox_inflight: the relay's rows in flight and the topic positions its marks may store
 * (issue 9 item 12): a (slot, partition) position never passes a delivered record that stays
 * unmarked, nor the last offset the producer reported (records in flight land above it). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "outbox/outbox_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static tp_outbox_sent *add(tp_outbox_inflight *f, const char *tenant, int slot, int64_t seq) {
    tp_outbox_tenant *t = tp_outbox_tenant_get(f, tenant, slot);
    tp_outbox_sent *rw = calloc(1, sizeof(*rw));
    char id[64];
    assert_non_null(t);
    assert_non_null(rw);
    snprintf(id, sizeof(id), "prov_%s_%lld", tenant, (long long)seq);
    rw->rec.receipt_id = strdup(id);
    rw->rec.tenant_id = strdup(tenant);
    rw->rec.sequence = seq;
    rw->state = TP_OUTBOX_SENT;
    rw->partition = -1;
    tp_outbox_append(f, t, rw);
    return rw;
}

static void deliver(tp_outbox_inflight *f, tp_outbox_sent *rw, int32_t partition, int64_t offset, int64_t *frontier) {
    bool dropped = false;
    rw->state = TP_OUTBOX_DELIVERED;
    rw->partition = partition;
    rw->offset = offset;
    if (offset + 1 > frontier[partition])
        frontier[partition] = offset + 1;
    tp_outbox_settle(f, rw->t, &dropped);
    assert_false(dropped);
}

static void test_position_rules(void **state) {
    (void)state;
    assert_int_equal(tp_outbox_position(100, INT64_MAX), 100);
    assert_int_equal(tp_outbox_position(100, 42), 42);
    assert_false(tp_outbox_position_due(100, 100, true));
    assert_false(tp_outbox_position_due(100, 90, true));
    assert_true(tp_outbox_position_due(100, 101, true));
    assert_false(tp_outbox_position_due(100, 101, false));
    assert_true(tp_outbox_position_due(100, 100 + TP_OUTBOX_POSITION_STEP, false));
}

static void test_positions_stop_at_unmarked_delivered(void **state) {
    static tp_outbox_inflight f;
    static int64_t stored[TP_OUTBOX_SLOTS][TP_OUTBOX_PARTITIONS_MAX];
    int64_t frontier[TP_OUTBOX_PARTITIONS_MAX] = {0};
    tp_outbox_pos pos[TP_OUTBOX_SLOTS * 2];
    bool slots[TP_OUTBOX_SLOTS] = {false};
    int64_t due = -1;
    char *ids;
    size_t n;
    (void)state;
    memset(&f, 0, sizeof(f));
    slots[3] = slots[5] = true;
    /* Slot 3: tenant a (1 delivered at 10, 2 delivered at 12) in partition 0; tenant b (1 still
     * in flight, 2 delivered at 11) in partition 0. Slot 5: tenant c delivered at 20 in
     * partition 1. */
    tp_outbox_sent *a1 = add(&f, "a", 3, 1), *a2 = add(&f, "a", 3, 2);
    tp_outbox_sent *b1 = add(&f, "b", 3, 1), *b2 = add(&f, "b", 3, 2);
    tp_outbox_sent *c1 = add(&f, "c", 5, 1);
    (void)b1;
    deliver(&f, a1, 0, 10, frontier);
    deliver(&f, b2, 0, 11, frontier);
    deliver(&f, a2, 0, 12, frontier);
    deliver(&f, c1, 1, 20, frontier);
    /* a's 1 and 2 and c's 1 are marked; b's 2 waits behind b's 1 (not reported). */
    ids = tp_outbox_collect_marks(&f, 0, 0, &due);
    assert_non_null(ids);
    assert_non_null(strstr(ids, "prov_a_1"));
    assert_non_null(strstr(ids, "prov_a_2"));
    assert_non_null(strstr(ids, "prov_c_1"));
    assert_null(strstr(ids, "prov_b_"));
    free(ids);
    n = tp_outbox_collect_positions(&f, slots, frontier, 2, stored, pos);
    /* Slot 3, partition 0: b's delivered 2 at offset 11 stays unmarked: stop there (not 13).
     * Slot 5, partition 1: 21. Slot 3, partition 1 and slot 5, partition 0: idle, under the step. */
    assert_int_equal(n, 2);
    assert_int_equal(pos[0].slot, 3);
    assert_int_equal(pos[0].partition, 0);
    assert_int_equal(pos[0].next_offset, 11);
    assert_int_equal(pos[1].slot, 5);
    assert_int_equal(pos[1].partition, 1);
    assert_int_equal(pos[1].next_offset, 21);
    /* The marks done: a's and c's rows leave, b's stay. */
    {
        bool dropped = false;
        assert_int_equal(tp_outbox_settle_marked(&f, &dropped), 3);
        assert_false(dropped);
    }
    assert_int_equal(f.n_rows, 2);
    assert_int_equal(f.slot_rows[3], 2);
    assert_int_equal(f.slot_rows[5], 0);
    tp_outbox_forget_all(&f);
    assert_int_equal(f.n_rows, 0);
}

static void test_mark_delay_holds_back_a_prefix(void **state) {
    static tp_outbox_inflight f;
    int64_t frontier[TP_OUTBOX_PARTITIONS_MAX] = {0};
    int64_t due = 0;
    char *ids;
    (void)state;
    memset(&f, 0, sizeof(f));
    tp_outbox_sent *a1 = add(&f, "a", 1, 1), *a2 = add(&f, "a", 1, 2);
    deliver(&f, a1, 0, 1, frontier);
    deliver(&f, a2, 0, 2, frontier);
    a1->delivered_ms = 1000;
    a2->delivered_ms = 1500;
    assert_null(tp_outbox_collect_marks(&f, 1200, 500, &due));
    assert_int_equal(due, 1500);
    ids = tp_outbox_collect_marks(&f, 1600, 500, &due);
    assert_string_equal(ids, "{\"prov_a_1\"}");
    assert_int_equal(due, 2000);
    free(ids);
    tp_outbox_unflag_marks(&f);
    ids = tp_outbox_collect_marks(&f, 2000, 500, &due);
    assert_string_equal(ids, "{\"prov_a_1\",\"prov_a_2\"}");
    assert_int_equal(due, 0);
    free(ids);
    tp_outbox_forget_all(&f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_position_rules),
        cmocka_unit_test(test_positions_stop_at_unmarked_delivered),
        cmocka_unit_test(test_mark_delay_holds_back_a_prefix),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
