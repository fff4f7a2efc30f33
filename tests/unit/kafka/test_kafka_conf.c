/* test_kafka_conf: the fixed settings of our librdkafka clients are checked one by one: a setting
 * librdkafka refuses fails the client's creation with an error naming the key (they used to be set
 * with the result ignored, so a refused one silently left librdkafka's default in place). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "kafka/kafka_int.h"
#include "tp/error.h"

#include <string.h>

static void test_refused_setting_is_named(void **state) {
    (void)state;
    static const tp_kafka_setting settings[] = {
        {"acks", "all"},
        {"enable.idempotence", "maybe"}, /* not a boolean */
        {"linger.ms", "2"},
    };
    char err[512] = "";
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    assert_int_equal(tp_kafka__conf_set_all(conf, settings, 3, err, sizeof(err)), TP_ECONFIG);
    assert_non_null(strstr(err, "enable.idempotence=maybe"));
    rd_kafka_conf_destroy(conf);
}

static void test_unknown_key_is_named(void **state) {
    (void)state;
    static const tp_kafka_setting settings[] = {{"partitioner.flavour", "murmur2_random"}};
    char err[512] = "";
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    assert_int_equal(tp_kafka__conf_set_all(conf, settings, 1, err, sizeof(err)), TP_ECONFIG);
    assert_non_null(strstr(err, "partitioner.flavour"));
    rd_kafka_conf_destroy(conf);
}

static void test_accepted_settings_apply(void **state) {
    (void)state;
    static const tp_kafka_setting settings[] = {{"acks", "all"}, {"linger.ms", "7"}};
    char err[512] = "", val[32];
    size_t val_size = sizeof(val);
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    assert_int_equal(tp_kafka__conf_set_all(conf, settings, 2, err, sizeof(err)), 0);
    assert_int_equal(rd_kafka_conf_get(conf, "linger.ms", val, &val_size), RD_KAFKA_CONF_OK);
    assert_string_equal(val, "7");
    rd_kafka_conf_destroy(conf);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refused_setting_is_named),
        cmocka_unit_test(test_unknown_key_is_named),
        cmocka_unit_test(test_accepted_settings_apply),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
