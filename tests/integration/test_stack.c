/* test_stack: proves the local stack from our own code: a record produced with the idempotent
 * producer (acks=all) is read back in a consumer group; a parameterised libpq query; an OPA
 * decision from config/policies/stack through the tests' libcurl client (support/ingress.c).
 * Needs TP_KAFKA_BOOTSTRAP, TP_PG_DSN, TP_OPA_URL. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "support/ingress.h"

static const char *need_env(const char *name) {
    const char *v = getenv(name);
    if (!v || !*v) {
        fprintf(stderr, "%s is not set: run scripts/stack up and source .stack/env\n", name);
        fail();
    }
    return v;
}

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque) {
    (void)rk;
    *(int *)opaque = (msg->err == 0 && rd_kafka_message_status(msg) == RD_KAFKA_MSG_STATUS_PERSISTED) ? 1 : -1;
}

static void set_conf(rd_kafka_conf_t *conf, const char *k, const char *v) {
    char err[256];
    assert_int_equal(rd_kafka_conf_set(conf, k, v, err, sizeof(err)), RD_KAFKA_CONF_OK);
}

static void test_kafka_roundtrip(void **state) {
    (void)state;
    const char *bootstrap = need_env("TP_KAFKA_BOOTSTRAP");
    const char *topic = "tenant.provisioning.dlq.v1";
    char err[512], value[128], group[64];
    int delivered = 0, found = 0;
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_t *producer, *consumer;

    snprintf(value, sizeof(value), "stack-smoke-%ld-%d", (long)time(NULL), rand());
    set_conf(conf, "bootstrap.servers", bootstrap);
    set_conf(conf, "enable.idempotence", "true");
    set_conf(conf, "acks", "all");
    rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
    rd_kafka_conf_set_opaque(conf, &delivered);
    producer = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    assert_non_null(producer);
    assert_int_equal(rd_kafka_producev(producer, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY("smoke", 5),
                                       RD_KAFKA_V_VALUE(value, strlen(value)),
                                       RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
                     RD_KAFKA_RESP_ERR_NO_ERROR);
    assert_int_equal(rd_kafka_flush(producer, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
    assert_int_equal(delivered, 1);
    rd_kafka_destroy(producer);

    conf = rd_kafka_conf_new();
    snprintf(group, sizeof(group), "stack-smoke-%d", rand());
    set_conf(conf, "bootstrap.servers", bootstrap);
    set_conf(conf, "group.id", group);
    set_conf(conf, "auto.offset.reset", "earliest");
    set_conf(conf, "partition.assignment.strategy", "roundrobin");
    consumer = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    assert_non_null(consumer);
    rd_kafka_poll_set_consumer(consumer);
    rd_kafka_topic_partition_list_t *subs = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(subs, topic, RD_KAFKA_PARTITION_UA);
    assert_int_equal(rd_kafka_subscribe(consumer, subs), 0);
    rd_kafka_topic_partition_list_destroy(subs);
    for (int i = 0; i < 600 && !found; i++) {
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(consumer, 100);
        if (!msg)
            continue;
        if (!msg->err && msg->len == strlen(value) && memcmp(msg->payload, value, msg->len) == 0)
            found = 1;
        rd_kafka_message_destroy(msg);
    }
    rd_kafka_consumer_close(consumer);
    rd_kafka_destroy(consumer);
    assert_true(found);
}

static void test_postgres_parameterised(void **state) {
    (void)state;
    PGconn *conn = PQconnectdb(need_env("TP_PG_DSN"));
    const char *params[2] = {"acme-intel", "41"};
    PGresult *res;
    assert_int_equal(PQstatus(conn), CONNECTION_OK);
    res = PQexecParams(conn, "SELECT $1::text || '-' || ($2::int + 1)::text, current_setting('fsync')",
                       2, NULL, params, NULL, NULL, 0);
    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    assert_string_equal(PQgetvalue(res, 0, 0), "acme-intel-42");
    assert_string_equal(PQgetvalue(res, 0, 1), "on");
    PQclear(res);
    PQfinish(conn);
}

static int opa_allow(const char *ping) {
    char body[128];
    http_resp r = {0};
    int allow = -1;
    json_t *doc, *result;

    snprintf(body, sizeof(body), "{\"input\":{\"ping\":\"%s\"}}", ping);
    assert_int_equal(http_call_url(&r, need_env("TP_OPA_URL"),
                                   &(http_req){.path = "/v1/data/stack/smoke/allow", .body = body,
                                               .timeout_ms = 5000}),
                     200);
    doc = http_assert_json(&r);
    result = json_object_get(doc, "result");
    assert_true(json_is_boolean(result));
    allow = json_is_true(result);
    json_decref(doc);
    http_resp_free(&r);
    return allow;
}

static void test_opa_decision(void **state) {
    (void)state;
    assert_int_equal(opa_allow("pong"), 1);
    assert_int_equal(opa_allow("ping"), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kafka_roundtrip),
        cmocka_unit_test(test_postgres_parameterised),
        cmocka_unit_test(test_opa_decision),
    };
    srand((unsigned)time(NULL));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
