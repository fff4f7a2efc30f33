/* test_config: the config table, its parser (untrusted bytes), TP_* overrides, and that
 * config/tp.conf.example lists every key with its default. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "tp/config.h"
#include "tp/error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void test_defaults_and_types(void **state) {
    (void)state;
    tp_config *cfg = tp_config_new();
    char err[256];
    assert_non_null(cfg);
    assert_string_equal(tp_config_get(cfg, "topic.requests"), "tenant.provisioning.requests.v1");
    assert_int_equal(tp_config_get_int(cfg, "retry.max_attempts"), 8);
    /* Issue 9 item 1: every PostgreSQL wait has a setting. */
    assert_int_equal(tp_config_get_int(cfg, "pg.connect_timeout_s"), 5);
    assert_int_equal(tp_config_get_int(cfg, "pg.statement_timeout_ms"), 15000);
    assert_int_equal(tp_config_get_int(cfg, "pg.lock_timeout_ms"), 5000);
    assert_int_equal(tp_config_get_int(cfg, "pg.idle_in_transaction_timeout_ms"), 30000);
    assert_int_equal(tp_config_get_int(cfg, "pg.tcp_user_timeout_ms"), 15000);
    assert_int_equal(tp_config_set(cfg, "retry.max_attempts", "lots", err, sizeof(err)), TP_ECONFIG);
    assert_non_null(strstr(err, "retry.max_attempts"));
    assert_int_equal(tp_config_set(cfg, "retry.multiplier", "1.5", err, sizeof(err)), 0);
    assert_true(tp_config_get_double(cfg, "retry.multiplier") == 1.5);
    assert_int_equal(tp_config_set(cfg, "no.such.key", "1", err, sizeof(err)), TP_ECONFIG);
    assert_non_null(strstr(err, "unknown configuration key"));
    assert_int_equal(tp_config_set(cfg, "kafka.linger.ms", "5", err, sizeof(err)), 0); /* passthrough */
    /* Issue 8: the relay has no polling tick; its key bounds the retry delay after a failure. */
    assert_int_equal(tp_config_get_int(cfg, "outbox.retry_max_ms"), 5000);
    assert_int_equal(tp_config_set(cfg, "worker.relay_interval_ms", "200", err, sizeof(err)), TP_ECONFIG);
    tp_config_free(cfg);
}

static void test_parse_errors_name_the_line(void **state) {
    (void)state;
    static const struct {
        const char *text;
        const char *want;
    } bad[] = {
        {"# ok\nretry.max_attempts = 3\nthis line has no equals\n", "line 3"},
        {"= value\n", "line 1: empty key"},
        {"opa.timeout_ms = 12x\n", "line 1"},
        {"bogus.key = 1\n", "unknown configuration key"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        tp_config *cfg = tp_config_new();
        char err[256] = "";
        assert_int_equal(tp_config_parse(cfg, bad[i].text, strlen(bad[i].text), err, sizeof(err)), TP_ECONFIG);
        assert_non_null(strstr(err, bad[i].want));
        tp_config_free(cfg);
    }
    {
        tp_config *cfg = tp_config_new();
        char err[256] = "";
        const char nul[] = "pg.dsn = a\0b\n";
        assert_int_equal(tp_config_parse(cfg, nul, sizeof(nul) - 1, err, sizeof(err)), TP_ECONFIG);
        tp_config_free(cfg);
    }
}

static void test_env_overrides(void **state) {
    (void)state;
    tp_config *cfg = tp_config_new();
    char err[256];
    setenv("TP_PG_DSN", "postgresql://x@127.0.0.1:1/y", 1);
    setenv("TP_KAFKA_BOOTSTRAP", "127.0.0.1:1", 1);
    setenv("TP_RETRY_CAP_MS", "777", 1);
    assert_int_equal(tp_config_apply_env(cfg, err, sizeof(err)), 0);
    assert_string_equal(tp_config_get(cfg, "pg.dsn"), "postgresql://x@127.0.0.1:1/y");
    assert_string_equal(tp_config_get(cfg, "kafka.bootstrap.servers"), "127.0.0.1:1");
    assert_int_equal(tp_config_get_int(cfg, "retry.cap_ms"), 777);
    setenv("TP_RETRY_CAP_MS", "soon", 1);
    assert_int_equal(tp_config_apply_env(cfg, err, sizeof(err)), TP_ECONFIG);
    unsetenv("TP_PG_DSN");
    unsetenv("TP_KAFKA_BOOTSTRAP");
    unsetenv("TP_RETRY_CAP_MS");
    tp_config_free(cfg);
}

typedef struct check {
    const tp_config *example;
    int keys;
    int mismatches;
} check;

static void compare(const char *key, const char *value, void *opaque) {
    check *c = opaque;
    c->keys++;
    if (strcmp(tp_config_get(c->example, key), value) != 0) {
        fprintf(stderr, "config/tp.conf.example: %s = \"%s\", the table says \"%s\"\n", key,
                tp_config_get(c->example, key), value);
        c->mismatches++;
    }
}

static void test_example_file_matches_table(void **state) {
    (void)state;
    tp_config *defaults = tp_config_new(), *example = tp_config_new();
    char err[256], *text = NULL;
    size_t len = 0;
    check c = {example, 0, 0};
    assert_int_equal(tp_read_file(TP_SOURCE_DIR "/config/tp.conf.example", 1 << 20, &text, &len), 0);
    /* Every key must be written out: parse into an empty-valued copy first. */
    assert_int_equal(tp_config_parse(example, text, len, err, sizeof(err)), 0);
    tp_config_foreach(defaults, "", compare, &c);
    assert_true(c.keys > 20);
    assert_int_equal(c.mismatches, 0);
    /* As many `key = value` lines as the table has keys: none missing, none extra. */
    {
        int lines = 0;
        for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
            const char *eol = strchr(p, '\n'), *eq = strstr(p, " = ");
            if (*p != '#' && eq && (!eol || eq < eol))
                lines++;
        }
        assert_int_equal(lines, c.keys);
    }
    free(text);
    tp_config_free(defaults);
    tp_config_free(example);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_and_types),
        cmocka_unit_test(test_parse_errors_name_the_line),
        cmocka_unit_test(test_env_overrides),
        cmocka_unit_test(test_example_file_matches_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
