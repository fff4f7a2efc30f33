/* test_stages_store.c: the store on the real PostgreSQL: migrations (twice idempotent, newer schema
 * refused, check without applying), SQLSTATE classification, aborted transactions, reconnect,
 * pipelined statements (queued inserts, their errors, a connection lost under them),
 * connection deadlines (lock, statement, a frozen server), dead letters unique by origin. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "support/pgproxy.h"
#include "support/pgtest.h"
#include "tp/error.h"
#include "tp/store.h"

typedef struct fixture {
    pgtest_db t;
    tp_db *db;
} fixture;

static int setup(void **state) {
    static fixture f;
    char err[256];
    memset(&f, 0, sizeof(f));
    if (pgtest_create(&f.t) != 0)
        return -1;
    if (tp_db_connect(f.t.dsn, &f.db, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    *state = &f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    tp_db_close(f->db);
    return pgtest_drop(&f->t);
}

static void test_migrate_twice(void **state) {
    fixture *f = *state;
    char err[512];
    int64_t n = 0, tables = 0;
    int version = -1;

    assert_int_equal(tp_store_check_schema(f->db, "schemas/sql", err, sizeof(err)), TP_ECONFLICT);
    assert_int_equal(tp_store_migrate(f->db, "schemas/sql", err, sizeof(err)), 0);
    assert_int_equal(pgtest_query_int(f->db, "SELECT count(*) FROM schema_migrations", &n), 0);
    assert_true(n >= 1);
    assert_int_equal(pgtest_query_int(f->db,
                                      "SELECT count(*) FROM information_schema.tables WHERE "
                                      "table_schema = 'public' AND table_name IN ('tenants', "
                                      "'tenant_namespaces', 'tenant_partitions', 'tenant_quotas', "
                                      "'provisioning_requests', 'provisioning_stages', "
                                      "'policy_decisions', 'receipt_outbox', 'idempotency_keys', "
                                      "'dead_letters', 'schema_migrations')",
                                      &tables),
                     0);
    assert_int_equal(tables, 11);
    /* Second run: nothing applied, nothing duplicated, no error. */
    assert_int_equal(tp_store_migrate(f->db, "schemas/sql", err, sizeof(err)), 0);
    int64_t n2 = 0;
    assert_int_equal(pgtest_query_int(f->db, "SELECT count(*) FROM schema_migrations", &n2), 0);
    assert_int_equal(n2, n);
    assert_int_equal(tp_store_check_schema(f->db, "schemas/sql", err, sizeof(err)), 0);
    assert_int_equal(tp_store_schema_version(f->db, &version), 0);
    assert_true(version >= 1);
}

static void test_newer_schema_refused(void **state) {
    fixture *f = *state;
    char err[512] = "";
    assert_int_equal(tp_store_migrate(f->db, "schemas/sql", err, sizeof(err)), 0);
    assert_int_equal(tp_db_exec(f->db, "INSERT INTO schema_migrations (version, name) VALUES "
                                       "(99999, '99999_from_the_future.sql')",
                                0, NULL, NULL),
                     0);
    assert_int_equal(tp_store_migrate(f->db, "schemas/sql", err, sizeof(err)), TP_EDB_SCHEMA_NEWER);
    assert_non_null(strstr(err, "99999"));
    assert_int_equal(tp_store_check_schema(f->db, "schemas/sql", err, sizeof(err)),
                     TP_EDB_SCHEMA_NEWER);
    assert_int_equal(tp_db_exec(f->db, "DELETE FROM schema_migrations WHERE version = 99999", 0,
                                NULL, NULL),
                     0);
    /* The advisory lock was released on the error path: another migrate does not block. */
    assert_int_equal(tp_store_migrate(f->db, "schemas/sql", err, sizeof(err)), 0);
}

static void test_missing_dir(void **state) {
    fixture *f = *state;
    char err[512] = "";
    assert_int_equal(tp_store_migrate(f->db, "/nonexistent/sql", err, sizeof(err)), TP_EIO);
    assert_true(err[0] != '\0');
}

static void test_sqlstate_classification(void **state) {
    fixture *f = *state;
    int64_t affected = -1;
    const char *p[1] = {"dup"};
    assert_int_equal(tp_db_exec(f->db, "CREATE TABLE IF NOT EXISTS t_uniq (k text PRIMARY KEY)", 0,
                                NULL, NULL),
                     0);
    assert_int_equal(tp_db_exec(f->db, "INSERT INTO t_uniq VALUES ($1)", 1, p, &affected), 0);
    assert_int_equal(affected, 1);
    assert_int_equal(tp_db_exec(f->db, "INSERT INTO t_uniq VALUES ($1) ON CONFLICT DO NOTHING", 1,
                                p, &affected),
                     0);
    assert_int_equal(affected, 0);
    assert_int_equal(tp_db_exec(f->db, "INSERT INTO t_uniq VALUES ($1)", 1, p, NULL),
                     TP_EDB_PERMANENT);
    assert_string_equal(tp_db_sqlstate(f->db), "23505");
    assert_true(tp_store_is_unique_violation(tp_db_sqlstate(f->db)));
    assert_int_equal(tp_db_exec(f->db, "SELECT * FROM no_such_table", 0, NULL, NULL),
                     TP_EDB_PERMANENT);
    assert_string_equal(tp_db_sqlstate(f->db), "42P01");
    /* A serialization failure raised by the server is transient. */
    assert_int_equal(tp_db_exec(f->db, "DO $$BEGIN RAISE EXCEPTION 'x' USING ERRCODE = '40001'; END$$",
                                0, NULL, NULL),
                     TP_EDB);
    assert_string_equal(tp_db_sqlstate(f->db), "40001");
}

static void test_aborted_tx_commit_fails(void **state) {
    fixture *f = *state;
    const char *p[1] = {"tx1"};
    int64_t n = -1;
    assert_int_equal(tp_db_exec(f->db, "CREATE TABLE IF NOT EXISTS t_tx (k text PRIMARY KEY)", 0,
                                NULL, NULL),
                     0);
    assert_int_equal(tp_db_begin(f->db), 0);
    assert_int_equal(tp_db_begin(f->db), TP_EINVAL);
    assert_int_equal(tp_db_exec(f->db, "INSERT INTO t_tx VALUES ($1)", 1, p, NULL), 0);
    assert_int_equal(tp_db_exec(f->db, "SELECT 1/0", 0, NULL, NULL), TP_EDB_PERMANENT);
    assert_int_not_equal(tp_db_commit(f->db), 0);
    assert_false(tp_db_in_tx(f->db));
    assert_int_equal(pgtest_query_int(f->db, "SELECT count(*) FROM t_tx", &n), 0);
    assert_int_equal(n, 0);
    /* And a good transaction commits. */
    assert_int_equal(tp_db_begin(f->db), 0);
    assert_int_equal(tp_db_exec(f->db, "INSERT INTO t_tx VALUES ($1)", 1, p, NULL), 0);
    assert_int_equal(tp_db_commit(f->db), 0);
    assert_int_equal(pgtest_query_int(f->db, "SELECT count(*) FROM t_tx", &n), 0);
    assert_int_equal(n, 1);
}

/* Pipeline mode (store.c): BEGIN rides with the first statement, queued statements with the
 * next one that waits, or with COMMIT; their errors surface there and abort the transaction. */
static void test_pipeline_queued_statements(void **state) {
    fixture *f = *state;
    int64_t n = -1;
    char key[16];
    const char *p[1] = {key};
    assert_int_equal(tp_db_exec(f->db, "CREATE TABLE IF NOT EXISTS t_pipe (k text PRIMARY KEY)", 0,
                                NULL, NULL),
                     0);
    /* A transaction that sends nothing commits and rolls back without a word to the server. */
    assert_int_equal(tp_db_begin(f->db), 0);
    assert_true(tp_db_in_tx(f->db));
    assert_int_equal(tp_db_commit(f->db), 0);
    assert_false(tp_db_in_tx(f->db));
    assert_int_equal(tp_db_begin(f->db), 0);
    assert_int_equal(tp_db_rollback(f->db), 0);

    /* Queued inserts are visible to the next statement of the transaction, and committed. */
    assert_int_equal(tp_db_begin(f->db), 0);
    for (int i = 0; i < 3; i++) {
        snprintf(key, sizeof(key), "a%d", i);
        assert_int_equal(tp_db_exec_queued(f->db, "INSERT INTO t_pipe VALUES ($1)", 1, p, NULL, NULL), 0);
    }
    assert_int_equal(pgtest_query_int(f->db, "SELECT count(*) FROM t_pipe", &n), 0);
    assert_int_equal(n, 3);
    snprintf(key, sizeof(key), "a3");
    assert_int_equal(tp_db_exec_queued(f->db, "INSERT INTO t_pipe VALUES ($1)", 1, p, NULL, NULL), 0);
    assert_int_equal(tp_db_commit(f->db), 0); /* the fourth travels with COMMIT */
    assert_int_equal(pgtest_query_int(f->db, "SELECT count(*) FROM t_pipe", &n), 0);
    assert_int_equal(n, 4);

    /* More than a pipeline holds: flushed on the way, all committed. */
    assert_int_equal(tp_db_begin(f->db), 0);
    for (int i = 0; i < 40; i++) {
        snprintf(key, sizeof(key), "b%d", i);
        assert_int_equal(tp_db_exec_queued(f->db, "INSERT INTO t_pipe VALUES ($1)", 1, p, NULL, NULL), 0);
    }
    assert_int_equal(tp_db_commit(f->db), 0);
    assert_int_equal(pgtest_query_int(f->db, "SELECT count(*) FROM t_pipe", &n), 0);
    assert_int_equal(n, 44);

    /* A queued duplicate: the next statement reports it (with its SQLSTATE), commit fails, the
     * whole transaction is gone, and the session is usable again. */
    assert_int_equal(tp_db_begin(f->db), 0);
    snprintf(key, sizeof(key), "c0");
    assert_int_equal(tp_db_exec_queued(f->db, "INSERT INTO t_pipe VALUES ($1)", 1, p, NULL, NULL), 0);
    snprintf(key, sizeof(key), "a0");
    assert_int_equal(tp_db_exec_queued(f->db, "INSERT INTO t_pipe VALUES ($1)", 1, p, NULL, NULL), 0);
    assert_int_equal(tp_db_exec(f->db, "SELECT 1", 0, NULL, NULL), TP_EDB_PERMANENT);
    assert_string_equal(tp_db_sqlstate(f->db), "23505");
    assert_int_not_equal(tp_db_commit(f->db), 0);
    assert_false(tp_db_in_tx(f->db));
    assert_int_equal(pgtest_query_int(f->db, "SELECT count(*) FROM t_pipe WHERE k = 'c0'", &n), 0);
    assert_int_equal(n, 0);

    /* The same with the duplicate riding along with COMMIT itself. */
    assert_int_equal(tp_db_begin(f->db), 0);
    snprintf(key, sizeof(key), "d0");
    assert_int_equal(tp_db_exec_queued(f->db, "INSERT INTO t_pipe VALUES ($1)", 1, p, NULL, NULL), 0);
    snprintf(key, sizeof(key), "a1");
    assert_int_equal(tp_db_exec_queued(f->db, "INSERT INTO t_pipe VALUES ($1)", 1, p, NULL, NULL), 0);
    assert_int_equal(tp_db_commit(f->db), TP_EDB_PERMANENT);
    assert_string_equal(tp_db_sqlstate(f->db), "23505");
    assert_false(tp_db_in_tx(f->db));
    assert_int_equal(pgtest_query_int(f->db, "SELECT count(*) FROM t_pipe WHERE k = 'd0'", &n), 0);
    assert_int_equal(n, 0); /* not committed, and no transaction left open: autocommit works */

    /* A rollback drops queued statements; their error does not replace the caller's. */
    assert_int_equal(tp_db_begin(f->db), 0);
    snprintf(key, sizeof(key), "e0");
    assert_int_equal(tp_db_exec_queued(f->db, "INSERT INTO t_pipe VALUES ($1)", 1, p, NULL, NULL), 0);
    assert_int_equal(tp_db_rollback(f->db), 0);
    assert_int_equal(pgtest_query_int(f->db, "SELECT count(*) FROM t_pipe WHERE k = 'e0'", &n), 0);
    assert_int_equal(n, 0);

    /* A statement that cannot be prepared fails each time it is queued, and the session goes on
     * (its failed prepare is forgotten, not reused). */
    for (int round = 0; round < 2; round++) {
        assert_int_equal(tp_db_begin(f->db), 0);
        assert_int_equal(tp_db_exec_queued(f->db, "INSERT INTO t_pipe_missing VALUES ($1)", 1, p, NULL, NULL), 0);
        assert_int_equal(tp_db_commit(f->db), TP_EDB_PERMANENT);
        assert_string_equal(tp_db_sqlstate(f->db), "42P01");
    }
    assert_int_equal(tp_db_begin(f->db), 0);
    snprintf(key, sizeof(key), "f0");
    assert_int_equal(tp_db_exec_queued(f->db, "INSERT INTO t_pipe VALUES ($1)", 1, p, NULL, NULL), 0);
    assert_int_equal(tp_db_commit(f->db), 0);
    assert_int_equal(pgtest_query_int(f->db, "SELECT count(*) FROM t_pipe", &n), 0);
    assert_int_equal(n, 45);

    /* Outside a transaction a queued statement runs at once. */
    snprintf(key, sizeof(key), "g0");
    assert_int_equal(tp_db_exec_queued(f->db, "INSERT INTO t_pipe VALUES ($1)", 1, p, NULL, NULL), 0);
    assert_int_equal(pgtest_query_int(f->db, "SELECT count(*) FROM t_pipe", &n), 0);
    assert_int_equal(n, 46);
}

/* A connection killed while statements are queued: the call that collects them fails
 * transiently, the transaction is gone, and the next one reconnects. */
static void test_pipeline_connection_lost(void **state) {
    fixture *f = *state;
    char err[256], pid[32];
    tp_db *killer = NULL;
    int64_t n = -1;
    const char *p[1] = {"k0"};
    assert_int_equal(tp_db_exec(f->db, "CREATE TABLE IF NOT EXISTS t_pipe2 (k text PRIMARY KEY)", 0,
                                NULL, NULL),
                     0);
    assert_int_equal(pgtest_query_text(f->db, "SELECT pg_backend_pid()", pid, sizeof(pid)), 0);
    assert_int_equal(tp_db_begin(f->db), 0);
    assert_int_equal(tp_db_exec_queued(f->db, "INSERT INTO t_pipe2 VALUES ($1)", 1, p, NULL, NULL), 0);
    assert_int_equal(tp_db_connect(f->t.dsn, &killer, err, sizeof(err)), 0);
    const char *kp[1] = {pid};
    assert_int_equal(tp_db_exec(killer, "SELECT pg_terminate_backend($1::int)", 1, kp, NULL), 0);
    tp_db_close(killer);
    usleep(100 * 1000);
    int rc = tp_db_commit(f->db);
    assert_true(rc == TP_EDB);
    assert_false(tp_db_in_tx(f->db));
    tp_db_rollback(f->db);
    assert_int_equal(pgtest_query_int(f->db, "SELECT count(*) FROM t_pipe2", &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(tp_db_begin(f->db), 0);
    assert_int_equal(tp_db_exec_queued(f->db, "INSERT INTO t_pipe2 VALUES ($1)", 1, p, NULL, NULL), 0);
    assert_int_equal(tp_db_commit(f->db), 0);
    assert_int_equal(pgtest_query_int(f->db, "SELECT count(*) FROM t_pipe2", &n), 0);
    assert_int_equal(n, 1);
}

static void test_reconnect_after_terminate(void **state) {
    fixture *f = *state;
    char err[256];
    tp_db *killer = NULL;
    char pid[32];
    int64_t one = 0;
    assert_int_equal(pgtest_query_text(f->db, "SELECT pg_backend_pid()", pid, sizeof(pid)), 0);
    assert_int_equal(tp_db_connect(f->t.dsn, &killer, err, sizeof(err)), 0);
    const char *p[1] = {pid};
    assert_int_equal(tp_db_exec(killer, "SELECT pg_terminate_backend($1::int)", 1, p, NULL), 0);
    tp_db_close(killer);
    /* The first statement on the dead connection fails transiently ... */
    int rc = tp_db_exec(f->db, "SELECT 1", 0, NULL, NULL);
    assert_int_equal(rc, TP_EDB);
    assert_true(tp_err_is_transient(rc));
    /* ... and the next one reconnects. */
    assert_int_equal(pgtest_query_int(f->db, "SELECT 1", &one), 0);
    assert_int_equal(one, 1);
    assert_int_equal(tp_db_ping(f->db), 0);
}

static void test_result_api(void **state) {
    fixture *f = *state;
    tp_res *res = NULL;
    int64_t v = 0;
    const char *p[2] = {"abc", NULL};
    assert_int_equal(tp_db_query(f->db, "SELECT $1::text, $2::text, 42::bigint", 2, p, &res), 0);
    assert_int_equal(tp_res_nrows(res), 1);
    assert_int_equal(tp_res_ncols(res), 3);
    assert_string_equal(tp_res_get(res, 0, 0), "abc");
    assert_true(tp_res_isnull(res, 0, 1));
    assert_false(tp_res_isnull(res, 0, 0));
    assert_int_equal(tp_res_get_int64(res, 0, 2, &v), 0);
    assert_int_equal(v, 42);
    assert_int_equal(tp_res_get_int64(res, 0, 0, &v), TP_EINVAL);
    assert_null(tp_res_get(res, 1, 0));
    assert_null(tp_res_get(res, 0, 3));
    assert_true(tp_res_isnull(res, 5, 5));
    tp_res_free(res);

    /* bytea cells as bytes, whichever text form the server sends (hex by default, escape if
     * bytea_output says so); NULL and out of range refused. */
    unsigned char *bytes = NULL;
    size_t n = 0;
    static const unsigned char want[5] = {0x00, 0xff, 'A', '\n', 0x7f};
    for (int form = 0; form < 2; form++) {
        assert_int_equal(tp_db_exec(f->db, form ? "SET bytea_output = escape" : "SET bytea_output = hex",
                                    0, NULL, NULL),
                         0);
        assert_int_equal(tp_db_query(f->db, "SELECT '\\x00ff410a7f'::bytea, NULL::bytea, ''::bytea", 0,
                                     NULL, &res),
                         0);
        assert_int_equal(tp_res_get_bytea(res, 0, 0, &bytes, &n), 0);
        assert_int_equal(n, sizeof(want));
        assert_memory_equal(bytes, want, sizeof(want));
        assert_int_equal(bytes[n], 0);
        free(bytes);
        assert_int_equal(tp_res_get_bytea(res, 0, 1, &bytes, &n), TP_EINVAL);
        assert_null(bytes);
        assert_int_equal(tp_res_get_bytea(res, 0, 2, &bytes, &n), 0);
        assert_int_equal(n, 0);
        free(bytes);
        assert_int_equal(tp_res_get_bytea(res, 1, 0, &bytes, &n), TP_EINVAL);
        tp_res_free(res);
    }
    assert_int_equal(tp_db_exec(f->db, "RESET bytea_output", 0, NULL, NULL), 0);
}

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Issue 9 item 1: a lock held by another session (a migration, an operator) no longer blocks a
 * statement without bound: with the default deadlines (lock_timeout 5 s) it fails transiently
 * with 55P03. Before the fix it waited forever (the alarm below ends the test). */
static void test_lock_wait_is_bounded(void **state) {
    fixture *f = *state;
    char err[512];
    tp_db *holder = NULL;
    int64_t n = -1;
    assert_int_equal(tp_store_migrate(f->db, "schemas/sql", err, sizeof(err)), 0);
    assert_int_equal(tp_db_connect(f->t.dsn, &holder, err, sizeof(err)), 0);
    assert_int_equal(tp_db_begin(holder), 0);
    assert_int_equal(tp_db_exec(holder, "LOCK TABLE tenants IN ACCESS EXCLUSIVE MODE", 0, NULL, NULL), 0);
    alarm(60); /* a hang is a failure, not a stuck ctest */
    int64_t t0 = now_ms();
    int rc = tp_db_exec(f->db, "SELECT count(*) FROM tenants", 0, NULL, NULL);
    int64_t took = now_ms() - t0;
    alarm(0);
    fprintf(stderr, "lock wait: rc %s sqlstate %s after %lld ms\n", tp_err_name(rc),
            tp_db_sqlstate(f->db), (long long)took);
    assert_int_equal(rc, TP_EDB);
    assert_true(tp_err_is_transient(rc));
    assert_string_equal(tp_db_sqlstate(f->db), "55P03");
    assert_true(took >= 4000 && took < 9000);
    assert_int_equal(tp_db_rollback(holder), 0);
    tp_db_close(holder);
    /* The session is fine afterwards. */
    assert_int_equal(pgtest_query_int(f->db, "SELECT count(*) FROM tenants", &n), 0);
    assert_int_equal(n, 0);
}

/* The session settings arrive on the server; statement_timeout cancels with 57014 (transient);
 * a DSN's explicit options win over the configured ones. */
static void test_session_deadlines(void **state) {
    fixture *f = *state;
    char err[512], buf[64], dsn[1200];
    tp_db *db = NULL;
    tp_db_opts o;
    assert_int_equal(pgtest_query_text(f->db, "SHOW statement_timeout", buf, sizeof(buf)), 0);
    assert_string_equal(buf, "15s");
    assert_int_equal(pgtest_query_text(f->db, "SHOW lock_timeout", buf, sizeof(buf)), 0);
    assert_string_equal(buf, "5s");
    assert_int_equal(pgtest_query_text(f->db, "SHOW idle_in_transaction_session_timeout", buf, sizeof(buf)), 0);
    assert_string_equal(buf, "30s");

    tp_db_opts_default(&o);
    o.statement_timeout_ms = 300;
    assert_int_equal(tp_db_connect_opts(f->t.dsn, &o, &db, err, sizeof(err)), 0);
    int64_t t0 = now_ms();
    int rc = tp_db_exec(db, "SELECT pg_sleep(10)", 0, NULL, NULL);
    int64_t took = now_ms() - t0;
    assert_int_equal(rc, TP_EDB);
    assert_string_equal(tp_db_sqlstate(db), "57014");
    assert_true(took < 3000);
    /* The settings survive a reconnect (they are connection parameters, not a SET). */
    char pid[32];
    assert_int_equal(pgtest_query_text(db, "SELECT pg_backend_pid()", pid, sizeof(pid)), 0);
    const char *pp[1] = {pid};
    assert_int_equal(tp_db_exec(f->db, "SELECT pg_terminate_backend($1::int)", 1, pp, NULL), 0);
    assert_int_equal(tp_db_exec(db, "SELECT 1", 0, NULL, NULL), TP_EDB);
    assert_int_equal(pgtest_query_text(db, "SHOW statement_timeout", buf, sizeof(buf)), 0);
    assert_string_equal(buf, "300ms");
    tp_db_close(db);

    /* Explicit settings of the DSN beat the configured ones. */
    snprintf(dsn, sizeof(dsn), "%s%soptions=-c%%20lock_timeout%%3D1234", f->t.dsn,
             strchr(f->t.dsn, '?') ? "&" : "?");
    if (!strstr(f->t.dsn, "://"))
        snprintf(dsn, sizeof(dsn), "%s options='-c lock_timeout=1234'", f->t.dsn);
    assert_int_equal(tp_db_connect_opts(dsn, &o, &db, err, sizeof(err)), 0);
    assert_int_equal(pgtest_query_text(db, "SHOW lock_timeout", buf, sizeof(buf)), 0);
    assert_string_equal(buf, "1234ms");
    assert_int_equal(pgtest_query_text(db, "SHOW statement_timeout", buf, sizeof(buf)), 0);
    assert_string_equal(buf, "300ms");
    tp_db_close(db);
}

/* A frozen server (no answer at all; statement_timeout cannot fire): the readiness ping gives up
 * within its own deadline and the handle reconnects once the server is back. Connecting while it
 * is frozen is bounded by connect_timeout. */
static void test_ping_within_frozen_server(void **state) {
    fixture *f = *state;
    char err[512], dsn[1200];
    tp_db *db = NULL, *db2 = NULL;
    tp_db_opts o;
    pgproxy *px = pgproxy_start(f->t.dsn, dsn, sizeof(dsn));
    assert_non_null(px);
    assert_int_equal(tp_db_connect(dsn, &db, err, sizeof(err)), 0);
    assert_int_equal(tp_db_ping_within(db, 1000), 0);
    pgproxy_freeze(px, true);
    alarm(60);
    int64_t t0 = now_ms();
    int rc = tp_db_ping_within(db, 1000);
    int64_t took = now_ms() - t0;
    assert_int_equal(rc, TP_EDB);
    assert_true(took >= 900 && took < 3000);
    tp_db_opts_default(&o);
    o.connect_timeout_s = 2;
    t0 = now_ms();
    assert_int_equal(tp_db_connect_opts(dsn, &o, &db2, err, sizeof(err)), TP_EDB);
    took = now_ms() - t0;
    fprintf(stderr, "frozen: connect gave up after %lld ms (%s)\n", (long long)took, err);
    assert_true(took < 5000);
    alarm(0);
    pgproxy_freeze(px, false);
    assert_int_equal(tp_db_ping_within(db, 2000), 0); /* reconnected */
    tp_db_close(db);
    pgproxy_stop(px);
}

/* Issue 9 item 8: dead letters are unique by origin (topic, partition, offset); the worker's
 * INSERT ... ON CONFLICT DO NOTHING keeps one row however often a record is dead-lettered, and
 * the migration folds duplicates an older schema let in. */
#define DLQ_INSERT                                                                                 \
    "INSERT INTO dead_letters (request_id, reason, message, origin_topic, origin_partition, "      \
    "origin_offset, original) VALUES ($1, $2, $3, $4, $5::int, $6::bigint, $7) "                   \
    "ON CONFLICT (origin_topic, origin_partition, origin_offset) DO NOTHING"

static void test_dead_letters_unique_by_origin(void **state) {
    fixture *f = *state;
    char err[512], dir[] = "/tmp/tp_mig_XXXXXX", cmd[1200];
    int64_t n = -1, affected = -1;
    /* Schema 0001 only, with the duplicates the old NOT EXISTS race could write. */
    assert_non_null(mkdtemp(dir));
    snprintf(cmd, sizeof(cmd), "cp schemas/sql/0001_*.sql %s/", dir);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(tp_store_migrate(f->db, dir, err, sizeof(err)), 0);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(tp_db_exec_script(f->db,
        "INSERT INTO dead_letters (reason, origin_topic, origin_partition, origin_offset, replayed_at) "
        "VALUES ('A', 't', 0, 7, NULL), ('A', 't', 0, 7, now()), ('A', 't', 0, 7, NULL), "
        "('B', 't', 1, 7, NULL), ('C', NULL, NULL, NULL, NULL), ('C', NULL, NULL, NULL, NULL)"), 0);
    assert_int_equal(tp_store_migrate(f->db, "schemas/sql", err, sizeof(err)), 0);
    assert_int_equal(pgtest_query_int(f->db, "SELECT count(*) FROM dead_letters", &n), 0);
    assert_int_equal(n, 4);
    assert_int_equal(pgtest_query_int(f->db, "SELECT count(*) FROM dead_letters WHERE origin_offset = 7 "
                                             "AND origin_partition = 0 AND replayed_at IS NOT NULL", &n), 0);
    assert_int_equal(n, 1); /* the kept row carries the replay mark */

    const char *p[7] = {"req-1", "VALIDATION", "m", "topic-x", "3", "42", "raw"};
    assert_int_equal(tp_db_exec(f->db, DLQ_INSERT, 7, p, &affected), 0);
    assert_int_equal(affected, 1);
    assert_int_equal(tp_db_exec(f->db, DLQ_INSERT, 7, p, &affected), 0);
    assert_int_equal(affected, 0);
    assert_int_equal(pgtest_query_int(f->db, "SELECT count(*) FROM dead_letters WHERE origin_topic = 'topic-x'", &n), 0);
    assert_int_equal(n, 1);
    /* Without ON CONFLICT the index refuses the copy. */
    int rc = tp_db_exec(f->db, "INSERT INTO dead_letters (reason, origin_topic, origin_partition, origin_offset) "
                               "VALUES ('X', 'topic-x', 3, 42)", 0, NULL, NULL);
    assert_int_equal(rc, TP_EDB_PERMANENT);
    assert_true(tp_store_is_unique_violation(tp_db_sqlstate(f->db)));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_migrate_twice, setup, teardown),
        cmocka_unit_test_setup_teardown(test_newer_schema_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_dir, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sqlstate_classification, setup, teardown),
        cmocka_unit_test_setup_teardown(test_aborted_tx_commit_fails, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reconnect_after_terminate, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pipeline_queued_statements, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pipeline_connection_lost, setup, teardown),
        cmocka_unit_test_setup_teardown(test_result_api, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lock_wait_is_bounded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_session_deadlines, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ping_within_frozen_server, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dead_letters_unique_by_origin, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
