/* test_stack: proves the local stack from our own code: a record produced with the idempotent
 * producer (acks=all) is read back in a consumer group; a parameterised libpq query; an OPA
 * decision through libcurl from config/policies/stack. Needs TP_KAFKA_BOOTSTRAP, TP_PG_DSN, TP_OPA_URL. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <curl/curl.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

typedef struct buf {
    char data[4096];
    size_t len;
} buf;

static size_t collect(char *ptr, size_t size, size_t n, void *opaque) {
    buf *b = opaque;
    size_t take = size * n;
    if (take > sizeof(b->data) - 1 - b->len)
        take = sizeof(b->data) - 1 - b->len;
    memcpy(b->data + b->len, ptr, take);
    b->len += take;
    b->data[b->len] = '\0';
    return size * n;
}

static int opa_allow(const char *ping) {
    char url[512], body[128];
    buf out = {.len = 0};
    long status = 0;
    int allow = -1;
    CURL *curl = curl_easy_init();
    struct curl_slist *hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    json_t *doc, *result;

    snprintf(url, sizeof(url), "%s/v1/data/stack/smoke/allow", need_env("TP_OPA_URL"));
    snprintf(body, sizeof(body), "{\"input\":{\"ping\":\"%s\"}}", ping);
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 5000L);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &out);
    assert_int_equal(curl_easy_perform(curl), CURLE_OK);
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    assert_int_equal(status, 200);
    doc = json_loads(out.data, 0, NULL);
    assert_non_null(doc);
    result = json_object_get(doc, "result");
    assert_true(json_is_boolean(result));
    allow = json_is_true(result);
    json_decref(doc);
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(curl);
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
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
