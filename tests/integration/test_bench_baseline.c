/* test_bench_baseline: the pgbench baseline of scripts/bench (tests/bench/provision_tx.sql) writes
 * the rows that one real provisioning writes: the same tables with the same row counts; rows of
 * the same bytes (each table's row bytes, each stage output, and per receipt action the payload's
 * length, its stored size after compression and the envelope's stored size, within TOLERANCE of
 * the real ones); receipts in the state the provisioning commits them (unpublished, unnumbered,
 * signed). One request goes through tp-worker end to end in a scratch database; the baseline
 * script runs once (pgbench -t 1) in another scratch database. The real rows are measured as the
 * provisioning committed them: the test holds the tlog_counter row lock meanwhile, which the
 * relay's round takes to number receipts and a provisioning never takes, so nothing is numbered or
 * published until the test lets go; then the relay publishes all three as before. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "support/e2e.h"
#include "tp/store.h"

#include <math.h>
#include <signal.h>
#include <stdbool.h>
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

/* "table=bytes,..." over the same tables: the sum of pg_column_size of their rows. */
#define TABLE_BYTES_SQL                                                                                \
    "SELECT string_agg(table_name || '.rows=' || (xpath('/row/b/text()', query_to_xml(format("          \
    "'SELECT coalesce(sum(pg_column_size(t.*)), 0) AS b FROM %I t', table_name), false, true, "         \
    "'')))[1]::text, ',' ORDER BY table_name) FROM information_schema.tables WHERE table_schema = "      \
    "'public' AND table_type = 'BASE TABLE' AND table_name NOT IN ('receipt_topic_positions', "         \
    "'tlog_nodes', 'tlog_tree', 'tlog_checkpoints')"

/* Each stage's output JSON, as stored. */
#define STAGE_BYTES_SQL                                                                                \
    "SELECT string_agg(format('stage.%s.output=%s', stage, pg_column_size(output)), ',' ORDER BY "     \
    "ordinal) FROM provisioning_stages"

/* Per receipt action: the payload's length, its stored size (compressed, when PostgreSQL compressed
 * it) and the envelope's stored size. */
#define RECEIPT_BYTES_SQL                                                                              \
    "SELECT string_agg(format('%1$s.payload_length=%2$s,%1$s.payload_stored=%3$s,"                    \
    "%1$s.envelope_stored=%4$s', action_type, octet_length(payload), pg_column_size(payload), "       \
    "pg_column_size(envelope)), ',' ORDER BY sequence) FROM receipt_outbox"

/* Per receipt action: what the relay has done to it yet, and whether it carries its signed time. */
#define RECEIPT_STATE_SQL                                                                              \
    "SELECT string_agg(format('%s published=%s numbered=%s signed_at=%s', action_type, "               \
    "(published_at IS NOT NULL)::text, (leaf_index IS NOT NULL)::text, "                               \
    "(signed_at_ms IS NOT NULL)::text), '; ' ORDER BY sequence) FROM receipt_outbox"

/* How far a baseline size may be from the real one, as a fraction of the real one. */
#define TOLERANCE 0.25

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

/* The three size lists of one database, comma-joined into out ("key=bytes,..."); 0 or -1. */
static int sizes(tp_db *db, char *out, size_t cap) {
    const char *sqls[] = {TABLE_BYTES_SQL, STAGE_BYTES_SQL, RECEIPT_BYTES_SQL};
    size_t used = 0;
    out[0] = '\0';
    for (size_t i = 0; i < sizeof(sqls) / sizeof(sqls[0]); i++) {
        if (used + 2 >= cap)
            return -1;
        if (used)
            out[used++] = ',';
        if (pgtest_query_text(db, sqls[i], out + used, cap - used) != 0)
            return -1;
        used += strlen(out + used);
    }
    return 0;
}

/* The number after "key=" in a "key=number,..." list; false when the key is not there. */
static bool list_get(const char *list, const char *key, size_t key_len, double *out) {
    for (const char *p = list; p && *p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL) {
        if (strncmp(p, key, key_len) == 0 && p[key_len] == '=') {
            *out = strtod(p + key_len + 1, NULL);
            return true;
        }
    }
    return false;
}

/* Compares the baseline's sizes with the real ones key by key (every key of real must be in bench,
 * within TOLERANCE of the real value), prints the table, returns the number of keys off. */
static int sizes_off(const char *real, const char *bench) {
    int off = 0;
    fprintf(stderr, "bytes (tolerance %.0f%%)%*s %8s %8s\n", TOLERANCE * 100, 23, "", "real",
            "baseline");
    for (const char *p = real; p && *p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL) {
        const char *eq = strchr(p, '=');
        double r, b = -1;
        bool found, ok;
        if (!eq)
            break;
        r = strtod(eq + 1, NULL);
        found = list_get(bench, p, (size_t)(eq - p), &b);
        ok = found && fabs(b - r) <= TOLERANCE * r;
        fprintf(stderr, "%-44.*s %8.0f %8.0f%s\n", (int)(eq - p), p, r, b, ok ? "" : "  <- off");
        off += !ok;
    }
    return off;
}

static void test_baseline_writes_the_rows_of_one_provisioning(void **state) {
    fixture *f = *state;
    e2e *e = &f->e;
    tp_request req;
    tp_db *conn = NULL;
    tp_db *lock = NULL;
    char real[2048], bench[2048], out[8192], err[256], pgbench[512], held[32];
    char real_sizes[4096], bench_sizes[4096], real_state[512], bench_state[512];
    const char *bin = getenv("TP_PG_BIN");
    int rc, off;

    /* One real provisioning, end to end, measured as it committed: the relay waits on the
     * tlog_counter row lock held here (a provisioning that took that lock would never finish). */
    assert_int_equal(tp_db_connect(e->db.dsn, &lock, err, sizeof(err)), 0);
    assert_int_equal(tp_db_begin(lock), 0);
    assert_int_equal(pgtest_query_text(lock, "SELECT next_leaf::text FROM tlog_counter WHERE id = 1 "
                                             "FOR UPDATE", held, sizeof(held)), 0);
    e2e_request_init(&req, "bench-baseline", TP_PLAN_PRO);
    assert_int_equal(e2e_submit(e, &req, 1, -1), 0);
    assert_int_equal(e2e_wait_int(e, 1, 90, "SELECT count(*) FROM provisioning_requests WHERE state = 'SUCCEEDED'"), 1);
    assert_int_equal(sizes(e->conn, real_sizes, sizeof(real_sizes)), 0);
    assert_int_equal(pgtest_query_text(e->conn, RECEIPT_STATE_SQL, real_state, sizeof(real_state)),
                     0);
    assert_int_equal(tp_db_rollback(lock), 0);
    tp_db_close(lock);
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
    assert_int_equal(sizes(conn, bench_sizes, sizeof(bench_sizes)), 0);
    assert_int_equal(pgtest_query_text(conn, RECEIPT_STATE_SQL, bench_state, sizeof(bench_state)),
                     0);
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

    /* Everything is printed first, so one failing run shows every difference. */
    fprintf(stderr, "real provisioning: %s\nbaseline:          %s\n", real, bench);
    fprintf(stderr, "real receipts as committed: %s\nbaseline receipts:          %s\n", real_state,
            bench_state);
    off = sizes_off(real_sizes, bench_sizes);

    /* The same tables and row counts. */
    assert_true(strstr(real, "receipt_outbox=3") != NULL); /* the real run is the one we think */
    assert_string_equal(bench, real);
    /* The receipts as committed: unpublished and unnumbered, with their signed time. */
    assert_true(strstr(real_state, "TENANT_PROVISIONED published=false numbered=false "
                                   "signed_at=true") != NULL);
    assert_string_equal(bench_state, real_state);
    /* The same bytes, within the tolerance. */
    assert_true(strstr(real_sizes, "TENANT_PROVISIONED.payload_stored=") != NULL);
    assert_int_equal(off, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_baseline_writes_the_rows_of_one_provisioning, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
