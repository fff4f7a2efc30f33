/* test_store_pure.c: the parts of worker/store that need no server: SQLSTATE classification,
 * migration file names and directory listing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "store/store_int.h"
#include "tp/config.h"
#include "tp/error.h"
#include "tp/store.h"

static void test_sqlstate_mapping(void **state) {
    (void)state;
    assert_int_equal(tp_store_sqlstate_to_err("00000"), 0);
    assert_int_equal(tp_store_sqlstate_to_err(NULL), TP_EDB);
    assert_int_equal(tp_store_sqlstate_to_err(""), TP_EDB);
    assert_int_equal(tp_store_sqlstate_to_err("08006"), TP_EDB);
    assert_int_equal(tp_store_sqlstate_to_err("08001"), TP_EDB);
    assert_int_equal(tp_store_sqlstate_to_err("40001"), TP_EDB);
    assert_int_equal(tp_store_sqlstate_to_err("40P01"), TP_EDB);
    assert_int_equal(tp_store_sqlstate_to_err("57P01"), TP_EDB);
    assert_int_equal(tp_store_sqlstate_to_err("57014"), TP_EDB); /* statement_timeout */
    assert_int_equal(tp_store_sqlstate_to_err("55P03"), TP_EDB); /* lock_timeout */
    assert_int_equal(tp_store_sqlstate_to_err("53300"), TP_EDB);
    assert_int_equal(tp_store_sqlstate_to_err("23505"), TP_EDB_PERMANENT);
    assert_int_equal(tp_store_sqlstate_to_err("23503"), TP_EDB_PERMANENT);
    assert_int_equal(tp_store_sqlstate_to_err("42P01"), TP_EDB_PERMANENT);
    assert_int_equal(tp_store_sqlstate_to_err("22P02"), TP_EDB_PERMANENT);
    assert_int_equal(tp_store_sqlstate_to_err("40002"), TP_EDB_PERMANENT); /* integrity, not retry */
    assert_true(tp_err_is_transient(TP_EDB));
    assert_false(tp_err_is_transient(TP_EDB_PERMANENT));
    assert_true(tp_store_is_unique_violation("23505"));
    assert_false(tp_store_is_unique_violation("23503"));
    assert_false(tp_store_is_unique_violation(NULL));
}

static void test_migration_names(void **state) {
    int v = -1;
    (void)state;
    assert_int_equal(tp_store_parse_migration_name("0001_init.sql", &v), 0);
    assert_int_equal(v, 1);
    assert_int_equal(tp_store_parse_migration_name("12_more_things.sql", &v), 0);
    assert_int_equal(v, 12);
    assert_int_equal(tp_store_parse_migration_name("0001_init.sql.bak", &v), TP_EINVAL);
    assert_int_equal(tp_store_parse_migration_name("init.sql", &v), TP_EINVAL);
    assert_int_equal(tp_store_parse_migration_name("0001init.sql", &v), TP_EINVAL);
    assert_int_equal(tp_store_parse_migration_name("0001_.sql", &v), TP_EINVAL);
    assert_int_equal(tp_store_parse_migration_name("0000_zero.sql", &v), TP_EINVAL);
    assert_int_equal(tp_store_parse_migration_name("99999999999999999999_x.sql", &v), TP_EINVAL);
    assert_int_equal(tp_store_parse_migration_name("", &v), TP_EINVAL);
    assert_int_equal(tp_store_parse_migration_name(".", &v), TP_EINVAL);
}

static void touch(const char *dir, const char *name) {
    char path[256];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("SELECT 1;\n", f);
    fclose(f);
}

static void rm(const char *dir, const char *name) {
    char path[256];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    unlink(path);
}

static void test_list_sorted_and_duplicates(void **state) {
    char dir[] = "/tmp/tp_migr_XXXXXX", err[256];
    tp_migration_file files[8];
    int n = -1;
    (void)state;
    assert_non_null(mkdtemp(dir));
    touch(dir, "0010_ten.sql");
    touch(dir, "0002_two.sql");
    touch(dir, "README.md");
    touch(dir, "0001_one.sql");
    assert_int_equal(tp_store_list_migrations(dir, files, 8, &n, err, sizeof(err)), 0);
    assert_int_equal(n, 3);
    assert_int_equal(files[0].version, 1);
    assert_int_equal(files[1].version, 2);
    assert_int_equal(files[2].version, 10);
    assert_string_equal(files[2].name, "0010_ten.sql");
    /* Capacity is enforced. */
    assert_int_equal(tp_store_list_migrations(dir, files, 2, &n, err, sizeof(err)), TP_ECONFIG);
    touch(dir, "2_also_two.sql");
    assert_int_equal(tp_store_list_migrations(dir, files, 8, &n, err, sizeof(err)), TP_ECONFIG);
    assert_non_null(strstr(err, "version 2"));
    rm(dir, "0010_ten.sql");
    rm(dir, "0002_two.sql");
    rm(dir, "2_also_two.sql");
    rm(dir, "README.md");
    rm(dir, "0001_one.sql");
    rmdir(dir);
    assert_int_equal(tp_store_list_migrations(dir, files, 8, &n, err, sizeof(err)), TP_EIO);
}

static void test_repo_migrations_listed(void **state) {
    tp_migration_file files[TP_MIGRATIONS_MAX];
    char err[256];
    int n = 0;
    (void)state;
    assert_int_equal(tp_store_list_migrations("schemas/sql", files, TP_MIGRATIONS_MAX, &n, err,
                                              sizeof(err)),
                     0);
    assert_true(n >= 1);
    assert_int_equal(files[0].version, 1);
}

static void test_connect_refused_is_transient(void **state) {
    tp_db *db = (tp_db *)0x1;
    char err[256] = "";
    (void)state;
    int rc = tp_db_connect("host=127.0.0.1 port=1 dbname=x user=x connect_timeout=2", &db, err,
                           sizeof(err));
    assert_int_equal(rc, TP_EDB);
    assert_null(db);
    assert_true(err[0] != '\0');
    assert_int_equal(tp_db_connect(NULL, &db, err, sizeof(err)), TP_EINVAL);
    tp_db_close(NULL);
}

/* The deadlines' defaults are the config table's, and the pg.* keys reach the options. */
static void test_deadline_options(void **state) {
    tp_db_opts d, c;
    char err[256];
    (void)state;
    tp_config *cfg = tp_config_new();
    assert_non_null(cfg);
    tp_db_opts_default(&d);
    tp_db_opts_from_config(&c, cfg);
    assert_memory_equal(&d, &c, sizeof(d));
    assert_int_equal(d.connect_timeout_s, 5);
    assert_int_equal(d.statement_timeout_ms, 15000);
    assert_int_equal(d.lock_timeout_ms, 5000);
    assert_int_equal(d.idle_in_tx_timeout_ms, 30000);
    assert_int_equal(d.keepalives_idle_s, 10);
    assert_int_equal(d.keepalives_interval_s, 5);
    assert_int_equal(d.keepalives_count, 3);
    assert_int_equal(d.tcp_user_timeout_ms, 15000);
    assert_int_equal(tp_config_set(cfg, "pg.statement_timeout_ms", "250", err, sizeof(err)), 0);
    assert_int_equal(tp_config_set(cfg, "pg.lock_timeout_ms", "-3", err, sizeof(err)), 0);
    tp_db_opts_from_config(&c, cfg);
    assert_int_equal(c.statement_timeout_ms, 250);
    assert_int_equal(c.lock_timeout_ms, 0);
    tp_config_free(cfg);
}

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Issue 9 item 1: a server that accepts the TCP connection and never answers (frozen, hung)
 * costs connect_timeout, not forever. Before the fix tp_db_connect waited without bound (the
 * alarm ends the test). A DSN's own connect_timeout wins over the configured one. */
static void test_connect_to_silent_server_is_bounded(void **state) {
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t alen = sizeof(a);
    char dsn[128], err[256];
    tp_db *db = NULL;
    tp_db_opts o;
    (void)state;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(fd, 8), 0); /* the kernel completes handshakes; nobody answers */
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
    snprintf(dsn, sizeof(dsn), "host=127.0.0.1 port=%d dbname=x user=x", ntohs(a.sin_port));
    alarm(60);
    int64_t t0 = now_ms();
    assert_int_equal(tp_db_connect(dsn, &db, err, sizeof(err)), TP_EDB); /* defaults: 5 s */
    int64_t took = now_ms() - t0;
    fprintf(stderr, "silent server: default connect gave up after %lld ms: %s\n", (long long)took, err);
    assert_null(db);
    assert_true(took >= 4000 && took < 9000);
    tp_db_opts_default(&o);
    o.connect_timeout_s = 2;
    t0 = now_ms();
    assert_int_equal(tp_db_connect_opts(dsn, &o, &db, err, sizeof(err)), TP_EDB);
    took = now_ms() - t0;
    assert_true(took >= 1500 && took < 4500);
    o.connect_timeout_s = 30;
    char dsn2[160];
    snprintf(dsn2, sizeof(dsn2), "%s connect_timeout=2", dsn);
    t0 = now_ms();
    assert_int_equal(tp_db_connect_opts(dsn2, &o, &db, err, sizeof(err)), TP_EDB);
    took = now_ms() - t0;
    assert_true(took < 4500);
    alarm(0);
    close(fd);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sqlstate_mapping),
        cmocka_unit_test(test_migration_names),
        cmocka_unit_test(test_list_sorted_and_duplicates),
        cmocka_unit_test(test_repo_migrations_listed),
        cmocka_unit_test(test_connect_refused_is_transient),
        cmocka_unit_test(test_deadline_options),
        cmocka_unit_test(test_connect_to_silent_server_is_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
