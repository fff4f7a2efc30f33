/* test_bench_baseline: the pgbench baseline of scripts/bench (tests/bench/provision_tx.sql) writes
 * exactly the rows that one real provisioning writes: the same tables with the same row counts.
 * One request goes through tp-worker end to end in a scratch database; the baseline script runs
 * once (pgbench -t 1) in another scratch database; the table -> count maps must be equal. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "support/e2e.h"
#include "tp/store.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* "table=count,..." over every table of the schema, in name order; the relay's bookkeeping of
 * topic positions (receipt_topic_positions) and of the transparency log's tree and checkpoints
 * (tlog_nodes, tlog_tree, tlog_checkpoints) is not part of a provisioning. */
#define COUNTS_SQL                                                                                     \
    "SELECT string_agg(table_name || '=' || (xpath('/row/c/text()', query_to_xml(format("               \
    "'SELECT count(*) AS c FROM %I', table_name), false, true, '')))[1]::text, ',' ORDER BY "            \
    "table_name) FROM information_schema.tables WHERE table_schema = 'public' AND table_type = "        \
    "'BASE TABLE' AND table_name NOT IN ('receipt_topic_positions', 'tlog_nodes', 'tlog_tree', "         \
    "'tlog_checkpoints')"

typedef struct fixture {
    e2e e;
    pgtest_db base;
} fixture;

static int setup(void **state) {
    fixture *f = calloc(1, sizeof(*f));
    if (!f || e2e_setup(&f->e, "benchbase", NULL) != 0 || e2e_worker_start(&f->e, 0) != 0 ||
        pgtest_create_migrated(&f->base) != 0) {
        if (f)
            e2e_teardown(&f->e);
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    e2e_teardown(&f->e);
    if (f->base.name[0])
        pgtest_drop(&f->base);
    free(f);
    return 0;
}

static void test_baseline_writes_the_rows_of_one_provisioning(void **state) {
    fixture *f = *state;
    e2e *e = &f->e;
    tp_request req;
    tp_db *conn = NULL;
    char real[2048], bench[2048], out[8192], err[256], pgbench[512];
    const char *bin = getenv("TP_PG_BIN");
    int rc;

    /* One real provisioning, end to end. */
    e2e_request_init(&req, "bench-baseline", TP_PLAN_PRO);
    assert_int_equal(e2e_submit(e, &req, 1, -1), 0);
    assert_int_equal(e2e_wait_int(e, 1, 90, "SELECT count(*) FROM provisioning_requests WHERE state = 'SUCCEEDED'"), 1);
    assert_int_equal(e2e_wait_int(e, 3, 30, "SELECT count(*) FROM receipt_outbox WHERE published_at IS NOT NULL"), 3);
    assert_int_equal(e2e_worker_stop(e, 0, SIGTERM, 20000, NULL), 0);
    assert_int_equal(e2e_text(e, real, sizeof(real), "%s", COUNTS_SQL), 0);

    /* The baseline transaction, once, in a database of its own. */
    snprintf(pgbench, sizeof(pgbench), "%s/pgbench", bin && *bin ? bin : "/usr/lib/postgresql/15/bin");
    rc = e2e_run(out, sizeof(out), "%s -n -M prepared -t 1 -c 1 -f tests/bench/provision_tx.sql '%s'", pgbench, f->base.dsn);
    if (rc != 0)
        fprintf(stderr, "pgbench: %s\n", out);
    assert_int_equal(rc, 0);
    assert_int_equal(tp_db_connect(f->base.dsn, &conn, err, sizeof(err)), 0);
    assert_int_equal(pgtest_query_text(conn, COUNTS_SQL, bench, sizeof(bench)), 0);
    {
        /* The real run's receipts were numbered 0, 1, 2 by the relay's sequencer, after the
         * provisioning committed; the baseline, like the provisioning's transaction, numbers none. */
        char leaves[64];
        assert_int_equal(pgtest_query_text(conn, "SELECT count(leaf_index)::text FROM receipt_outbox",
                                           leaves, sizeof(leaves)), 0);
        assert_string_equal(leaves, "0");
        assert_int_equal(e2e_text(e, leaves, sizeof(leaves), "SELECT string_agg(leaf_index::text, ',' ORDER BY "
                                                         "leaf_index) FROM receipt_outbox"), 0);
        assert_string_equal(leaves, "0,1,2");
        assert_int_equal(e2e_text(e, leaves, sizeof(leaves), "SELECT next_leaf::text FROM tlog_counter"), 0);
        assert_string_equal(leaves, "3");
        assert_int_equal(pgtest_query_text(conn, "SELECT next_leaf::text FROM tlog_counter", leaves, sizeof(leaves)), 0);
        assert_string_equal(leaves, "0");
    }
    tp_db_close(conn);

    fprintf(stderr, "real provisioning: %s\nbaseline:          %s\n", real, bench);
    assert_true(strstr(real, "receipt_outbox=3") != NULL); /* the real run is the one we think */
    assert_string_equal(bench, real);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_baseline_writes_the_rows_of_one_provisioning, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
