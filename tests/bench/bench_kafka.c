/* bench_kafka.c: the Kafka side of scripts/bench (built only with -DTP_BENCH=ON):
 *   bench_kafka topics-create BOOTSTRAP NAME:PARTITIONS...   create scratch topics
 *   bench_kafka topics-delete BOOTSTRAP NAME...              delete them
 *   bench_kafka produce BOOTSTRAP TOPIC PREFIX COUNT [RATE]  produce COUNT valid billing
 *       ProvisioningRequest records (slugs PREFIX-1..PREFIX-COUNT, fresh UUID request ids) with an
 *       idempotent acks=all producer, as fast as possible (RATE 0) or RATE records/s; prints one
 *       line per persisted record: request_id TAB partition TAB offset TAB record_timestamp_ms.
 * Run from the repository root (schemas/avro). Exit 0 only when every record was persisted. */
#include "tp/codec.h"
#include "tp/ids.h"
#include "tp/request.h"

#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int64_t now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

typedef void dr_fn(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque);

static rd_kafka_t *client(const char *bootstrap, bool producer_conf, dr_fn *dr) {
    char err[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_t *rk;
    rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, err, sizeof(err));
    if (producer_conf) {
        rd_kafka_conf_set(conf, "enable.idempotence", "true", err, sizeof(err)); /* acks=all */
        rd_kafka_conf_set(conf, "partitioner", "murmur2_random", err, sizeof(err));
        rd_kafka_conf_set(conf, "linger.ms", "1", err, sizeof(err));
        rd_kafka_conf_set_dr_msg_cb(conf, dr);
    }
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (!rk)
        fprintf(stderr, "bench_kafka: %s\n", err);
    return rk;
}

static int topics(const char *bootstrap, bool create, int n, char **specs) {
    rd_kafka_t *rk = client(bootstrap, false, NULL);
    rd_kafka_queue_t *q;
    rd_kafka_event_t *ev;
    const rd_kafka_topic_result_t **res;
    size_t nres = 0;
    char err[256];
    int rc = 0;
    if (!rk)
        return 1;
    q = rd_kafka_queue_new(rk);
    if (create) {
        rd_kafka_NewTopic_t **nt = calloc((size_t)n, sizeof(*nt));
        for (int i = 0; i < n; i++) {
            char name[256];
            char *colon = strchr(specs[i], ':');
            int parts = colon ? atoi(colon + 1) : 1;
            snprintf(name, sizeof(name), "%.*s", colon ? (int)(colon - specs[i]) : (int)strlen(specs[i]), specs[i]);
            nt[i] = rd_kafka_NewTopic_new(name, parts, 1, err, sizeof(err));
        }
        rd_kafka_CreateTopics(rk, nt, (size_t)n, NULL, q);
        rd_kafka_NewTopic_destroy_array(nt, (size_t)n);
        free(nt);
    } else {
        rd_kafka_DeleteTopic_t **dt = calloc((size_t)n, sizeof(*dt));
        for (int i = 0; i < n; i++)
            dt[i] = rd_kafka_DeleteTopic_new(specs[i]);
        rd_kafka_DeleteTopics(rk, dt, (size_t)n, NULL, q);
        rd_kafka_DeleteTopic_destroy_array(dt, (size_t)n);
        free(dt);
    }
    ev = rd_kafka_queue_poll(q, 30000);
    if (!ev || rd_kafka_event_error(ev)) {
        fprintf(stderr, "bench_kafka: topic admin: %s\n", ev ? rd_kafka_event_error_string(ev) : "timeout");
        rc = 1;
    } else {
        res = create ? rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &nres)
                     : rd_kafka_DeleteTopics_result_topics(rd_kafka_event_DeleteTopics_result(ev), &nres);
        for (size_t i = 0; i < nres; i++)
            if (rd_kafka_topic_result_error(res[i])) {
                fprintf(stderr, "bench_kafka: %s: %s\n", rd_kafka_topic_result_name(res[i]),
                        rd_kafka_topic_result_error_string(res[i]));
                rc = 1;
            }
    }
    if (ev)
        rd_kafka_event_destroy(ev);
    rd_kafka_queue_destroy(q);
    rd_kafka_destroy(rk);
    return rc;
}

static int persisted, failed;

/* One output line per persisted record; the request id travels as the message opaque. */
static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque) {
    char *request_id = msg->_private;
    rd_kafka_timestamp_type_t tstype;
    int64_t ts = rd_kafka_message_timestamp(msg, &tstype);
    (void)rk;
    (void)opaque;
    if (!msg->err && rd_kafka_message_status(msg) == RD_KAFKA_MSG_STATUS_PERSISTED) {
        persisted++;
        printf("%s\t%d\t%lld\t%lld\n", request_id, (int)msg->partition, (long long)msg->offset, (long long)ts);
    } else {
        failed++;
        fprintf(stderr, "bench_kafka: %s: %s\n", request_id, rd_kafka_err2str(msg->err));
    }
    free(request_id);
}

static int produce(const char *bootstrap, const char *topic, const char *prefix, long count, double rate) {
    char err[512];
    tp_codec *codec = tp_codec_new("schemas/avro", "", err, sizeof(err));
    rd_kafka_t *rk;
    int64_t start = now_us();
    if (!codec) {
        fprintf(stderr, "bench_kafka: codec: %s\n", err);
        return 1;
    }
    rk = client(bootstrap, true, on_delivery);
    if (!rk)
        return 1;
    for (long n = 1; n <= count; n++) {
        tp_request req;
        unsigned char *buf = NULL;
        size_t len = 0;
        rd_kafka_resp_err_t e;
        if (rate > 0) { /* steady pace: record n leaves at start + (n-1)/rate */
            int64_t due = start + (int64_t)((double)(n - 1) * 1e6 / rate), wait;
            while ((wait = due - now_us()) > 0)
                rd_kafka_poll(rk, (int)(wait / 1000) > 0 ? (int)(wait / 1000) : 0);
        }
        memset(&req, 0, sizeof(req));
        tp_uuid_v4(req.request_id);
        req.source = TP_SOURCE_BILLING;
        snprintf(req.actor.id, sizeof(req.actor.id), "billing-bench");
        snprintf(req.actor.type, sizeof(req.actor.type), "system");
        snprintf(req.tenant.slug, sizeof(req.tenant.slug), "%.30s-%ld", prefix, n);
        snprintf(req.tenant.name, sizeof(req.tenant.name), "Bench %s", req.tenant.slug);
        req.tenant.residency = TP_RESIDENCY_US;
        req.plan = (tp_plan)(n % 4);
        req.environment = TP_ENV_PROD;
        req.submitted_at_ms = (int64_t)time(NULL) * 1000;
        if (tp_codec_encode_request(codec, &req, &buf, &len) != 0) {
            fprintf(stderr, "bench_kafka: encoding failed\n");
            return 1;
        }
        while ((e = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(req.tenant.slug, strlen(req.tenant.slug)),
                                      RD_KAFKA_V_VALUE(buf, len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                      RD_KAFKA_V_OPAQUE(strdup(req.request_id)), RD_KAFKA_V_END)) ==
               RD_KAFKA_RESP_ERR__QUEUE_FULL)
            rd_kafka_poll(rk, 50);
        free(buf);
        if (e) {
            fprintf(stderr, "bench_kafka: produce: %s\n", rd_kafka_err2str(e));
            return 1;
        }
        rd_kafka_poll(rk, 0);
    }
    rd_kafka_flush(rk, 60000);
    rd_kafka_destroy(rk);
    tp_codec_free(codec);
    fflush(stdout);
    if (persisted != count || failed) {
        fprintf(stderr, "bench_kafka: %d of %ld persisted, %d failed\n", persisted, count, failed);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 4 && strcmp(argv[1], "topics-create") == 0)
        return topics(argv[2], true, argc - 3, argv + 3);
    if (argc >= 4 && strcmp(argv[1], "topics-delete") == 0)
        return topics(argv[2], false, argc - 3, argv + 3);
    if ((argc == 6 || argc == 7) && strcmp(argv[1], "produce") == 0)
        return produce(argv[2], argv[3], argv[4], atol(argv[5]), argc == 7 ? atof(argv[6]) : 0);
    fprintf(stderr, "usage: bench_kafka topics-create BOOTSTRAP NAME:PARTS... | topics-delete BOOTSTRAP NAME...\n"
                    "       bench_kafka produce BOOTSTRAP TOPIC SLUG_PREFIX COUNT [RATE_PER_S]\n");
    return 2;
}
