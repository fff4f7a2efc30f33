/* test_stage_plans: the plans PostgreSQL keeps for the stages' prepared statements. tp-worker
 * prepares each statement once per connection, and after five runs PostgreSQL may keep one
 * generic plan for the connection's life; a plan chosen while the tables are tiny must still use
 * the indexes when they hold thousands of tenants. Checked on a freshly migrated database, never
 * analyzed (how a new installation and scripts/bench start), with plan_cache_mode forced generic. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "stages/stages_int.h"
#include "support/e2e.h"
#include "support/pgtest.h"
#include "tp/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct fixture {
    pgtest_db t;
    tp_db *db;
} fixture;

static int setup(void **state) {
    static fixture f;
    char err[256];
    memset(&f, 0, sizeof(f));
    if (pgtest_create_migrated(&f.t) != 0)
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

/* The generic plan of sql (EXPLAIN text, one line per row) into out. */
static void generic_plan(tp_db *db, const char *sql, const char *args, char *out, size_t cap) {
    char *stmt = NULL;
    tp_res *res = NULL;
    size_t used = 0;
    assert_int_equal(tp_db_exec(db, "SET plan_cache_mode = force_generic_plan", 0, NULL, NULL), 0);
    assert_int_equal(tp_db_exec(db, "DEALLOCATE ALL", 0, NULL, NULL), 0);
    assert_true(asprintf(&stmt, "PREPARE plan_probe AS %s", sql) > 0);
    assert_int_equal(tp_db_exec(db, stmt, 0, NULL, NULL), 0);
    free(stmt);
    assert_true(asprintf(&stmt, "EXPLAIN EXECUTE plan_probe(%s)", args) > 0);
    assert_int_equal(tp_db_query(db, stmt, 0, NULL, &res), 0);
    free(stmt);
    out[0] = '\0';
    for (int r = 0; r < tp_res_nrows(res); r++)
        used += (size_t)snprintf(out + used, used < cap ? cap - used : 0, "%s\n", tp_res_get(res, r, 0));
    tp_res_free(res);
}

/* A few tenants with their namespace, partitions and quota, as early in a database's life. */
static void seed(tp_db *db, int n) {
    char sql[2048];
    snprintf(sql, sizeof(sql),
             "INSERT INTO tenants (id, name, slug, residency, region, plan, environment, status, "
             "created_by_request) SELECT 'tenant-' || g, 'T' || g, 's' || g, 'US', 'us-east-1', "
             "'PRO', 'prod', 'active', 'r' || g FROM generate_series(1, %d) g; "
             "INSERT INTO tenant_namespaces (id, tenant_id, slug, environment) SELECT "
             "'ns_tenant-' || g, 'tenant-' || g, 's' || g || '-prod', 'prod' FROM generate_series(1, %d) g; "
             "INSERT INTO tenant_partitions (id, tenant_id, name, type, region, isolation) SELECT "
             "'part_tenant-' || g || '_' || n, 'tenant-' || g, n, n, 'us-east-1', 'shared' FROM "
             "generate_series(1, %d) g, unnest(ARRAY['primary', 'analytics', 'audit']) n; "
             "INSERT INTO tenant_quotas (tenant_id, tier, requests_per_minute, requests_per_day, "
             "ingest_events_per_minute, max_tokens_per_request, storage_bytes, seat_cap, "
             "burst_multiplier) SELECT 'tenant-' || g, 'PRO', 1, 1, 1, 1, 1, 1, 1 FROM "
             "generate_series(1, %d) g",
             n, n, n, n);
    assert_int_equal(tp_db_exec_script(db, sql), 0);
}

/* The isolation guard's read of what a tenant owns: index lookups only. Before it was written as
 * two UNIONs its generic plan scanned tenant_namespaces and tenant_partitions whole. */
static void test_isolation_read_uses_indexes(void **state) {
    fixture *f = *state;
    char plan[8192];
    seed(f->db, 20);
    generic_plan(f->db, tp_isolation_read_sql,
                 "'tenant-7', 'part_tenant-7_primary', 'part_tenant-7_analytics', 'part_tenant-7_audit'",
                 plan, sizeof(plan));
    if (strstr(plan, "Seq Scan"))
        fprintf(stderr, "generic plan:\n%s", plan);
    assert_null(strstr(plan, "Seq Scan on tenant_namespaces"));
    assert_null(strstr(plan, "Seq Scan on tenant_partitions"));
    assert_null(strstr(plan, "Seq Scan on tenant_quotas"));
    /* and it still finds the rows: 1 namespace + 3 partitions + 1 quota, no duplicates */
    {
        const char *p[4] = {"tenant-7", "part_tenant-7_primary", "part_tenant-7_analytics",
                            "part_tenant-7_audit"};
        tp_res *res = NULL;
        assert_int_equal(tp_db_exec(f->db, "SET plan_cache_mode = auto", 0, NULL, NULL), 0);
        assert_int_equal(tp_db_query(f->db, tp_isolation_read_sql, 4, p, &res), 0);
        assert_int_equal(tp_res_nrows(res), 5);
        tp_res_free(res);
    }
}

int main(void) {
    e2e_stack_share();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_isolation_read_uses_indexes, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
