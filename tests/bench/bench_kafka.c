/* bench_kafka.c: the Kafka side of scripts/bench (built only with -DTP_BENCH=ON):
 *   bench_kafka topics-create BOOTSTRAP NAME:PARTITIONS...   create scratch topics
 *   bench_kafka topics-delete BOOTSTRAP NAME...              delete them
 *   bench_kafka produce BOOTSTRAP TOPIC PREFIX COUNT [RATE]  produce COUNT valid billing
 *       ProvisioningRequest records (slugs PREFIX-1..PREFIX-COUNT, fresh UUID request ids) with an
 *       idempotent acks=all producer, as fast as possible (RATE 0) or RATE records/s; prints one
 *       line per persisted record: request_id TAB partition TAB offset TAB record_timestamp_ms.
 *   bench_kafka inflight CONFIG CONCURRENCY SECONDS  the Kafka-alone baseline of `scripts/bench
 *       ingress`: with tp-ingress's own producer settings (CONFIG: kafka.*, topic.requests,
 *       codec.schema_dir) keeps CONCURRENCY admin-API records in flight for SECONDS, each one
 *       waiting for its own delivery report (acks=all) before its slot sends the next; prints
 *       "records N seconds S rate R p50_ms A p99_ms B".
 *   bench_kafka opa-body CONFIG BODY_JSON  prints the body tp-ingress POSTs to OPA for an admin
 *       (sub bench-admin) submitting BODY_JSON: {"input": <the same input document>}.
 * Run from the repository root (schemas/avro). Exit 0 only when every record was persisted. */
#include "tp/codec.h"
#include "tp/config.h"
#include "tp/ids.h"
#include "tp/ingress.h"
#include "tp/kafka.h"
#include "tp/policy.h"
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

/* ---- inflight: CONCURRENCY records in flight, each waiting for its own delivery report ---- */

typedef struct slot {
    struct inflight *run;
    int64_t sent_us;
} slot;

typedef struct inflight {
    tp_producer *producer;
    tp_codec *codec;
    const char *topic;
    char prefix[24];
    long next, delivered, failed;
    int64_t end_us;
    double *lat_ms;
    size_t n_lat, cap_lat;
    int running;
} inflight;

static void inflight_send(slot *sl);

static void on_inflight_delivery(void *opaque, int err, int32_t partition, int64_t offset) {
    slot *sl = opaque;
    inflight *r = sl->run;
    (void)partition;
    (void)offset;
    if (err == 0) {
        r->delivered++;
        if (r->n_lat == r->cap_lat) {
            size_t cap = r->cap_lat ? r->cap_lat * 2 : 4096;
            double *nl = realloc(r->lat_ms, cap * sizeof(*nl));
            if (nl) {
                r->lat_ms = nl;
                r->cap_lat = cap;
            }
        }
        if (r->n_lat < r->cap_lat)
            r->lat_ms[r->n_lat++] = (double)(now_us() - sl->sent_us) / 1000.0;
    } else {
        r->failed++;
    }
    if (now_us() < r->end_us)
        inflight_send(sl);
    else
        r->running--;
}

/* An admin-API request as tp-ingress records it, encoded and sent with its correlation-id header. */
static void inflight_send(slot *sl) {
    inflight *r = sl->run;
    tp_request req;
    unsigned char *buf = NULL;
    size_t len = 0;
    memset(&req, 0, sizeof(req));
    tp_uuid_v4(req.request_id);
    snprintf(req.correlation_id, sizeof(req.correlation_id), "%s", req.request_id);
    req.source = TP_SOURCE_ADMIN_API;
    snprintf(req.actor.id, sizeof(req.actor.id), "bench-admin");
    snprintf(req.actor.type, sizeof(req.actor.type), "user");
    req.actor.n_roles = 1;
    snprintf(req.actor.roles[0], sizeof(req.actor.roles[0]), "admin");
    snprintf(req.tenant.slug, sizeof(req.tenant.slug), "%s-%ld", r->prefix, ++r->next);
    snprintf(req.tenant.name, sizeof(req.tenant.name), "Bench %s", req.tenant.slug);
    req.tenant.residency = TP_RESIDENCY_US;
    snprintf(req.tenant.region, sizeof(req.tenant.region), "us-east-1");
    req.plan = TP_PLAN_PRO;
    req.environment = TP_ENV_PROD;
    req.submitted_at_ms = (int64_t)time(NULL) * 1000;
    tp_kafka_header h = {"correlation-id", req.correlation_id, strlen(req.correlation_id)};
    sl->sent_us = now_us();
    if (tp_codec_encode_request(r->codec, &req, &buf, &len) != 0 ||
        tp_producer_send(r->producer, r->topic, req.tenant.slug, strlen(req.tenant.slug), buf, len, &h, 1,
                         on_inflight_delivery, sl) != 0) {
        r->failed++;
        r->running--;
    }
    free(buf);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(const double *v, size_t n, double p) {
    if (n == 0)
        return 0;
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return v[i < n ? i : n - 1];
}

static tp_config *load_config(const char *path) {
    char err[512];
    tp_config *cfg = tp_config_new();
    if (!cfg || tp_config_load_file(cfg, path, err, sizeof(err)) != 0) {
        fprintf(stderr, "bench_kafka: config %s: %s\n", path, cfg ? err : "out of memory");
        tp_config_free(cfg);
        return NULL;
    }
    return cfg;
}

static int run_inflight(const char *config, int conc, double seconds) {
    char err[512];
    inflight r = {0};
    tp_config *cfg = load_config(config);
    if (!cfg || conc < 1 || seconds <= 0)
        return 1;
    r.topic = tp_config_get(cfg, "topic.requests");
    r.codec = tp_codec_new(tp_config_get(cfg, "codec.schema_dir"), tp_config_get(cfg, "codec.confluent_schema_ids"),
                           err, sizeof(err));
    if (!r.codec || tp_producer_new(cfg, &r.producer, err, sizeof(err)) != 0) {
        fprintf(stderr, "bench_kafka: %s\n", err);
        return 1;
    }
    char id[TP_UUID_LEN + 1];
    tp_uuid_v4(id);
    snprintf(r.prefix, sizeof(r.prefix), "kin-%.8s", id);
    slot *slots = calloc((size_t)conc, sizeof(*slots));
    /* Warm up: one record, so metadata and the connection are there before the clock starts. */
    r.end_us = 0;
    slots[0].run = &r;
    r.running = 1;
    inflight_send(&slots[0]);
    while (r.running > 0)
        tp_producer_poll(r.producer, 100);
    r.delivered = r.failed = 0;
    r.n_lat = 0;
    int64_t start = now_us();
    r.end_us = start + (int64_t)(seconds * 1e6);
    r.running = conc;
    for (int i = 0; i < conc; i++) {
        slots[i].run = &r;
        inflight_send(&slots[i]);
    }
    while (r.running > 0)
        tp_producer_poll(r.producer, 100);
    double took = (double)(now_us() - start) / 1e6;
    qsort(r.lat_ms, r.n_lat, sizeof(double), cmp_double);
    printf("records %ld seconds %.2f rate %.1f p50_ms %.1f p99_ms %.1f failed %ld\n", r.delivered, took,
           (double)r.delivered / took, pct(r.lat_ms, r.n_lat, 0.5), pct(r.lat_ms, r.n_lat, 0.99), r.failed);
    tp_producer_free(r.producer, 5000);
    tp_codec_free(r.codec);
    tp_config_free(cfg);
    free(slots);
    free(r.lat_ms);
    return r.failed ? 1 : 0;
}

/* ---- opa-body: what tp-ingress POSTs to OPA for an admin's request ------------------------ */

static int opa_body(const char *config, const char *body) {
    tp_config *cfg = load_config(config);
    tp_request req;
    tp_problem *prob = NULL;
    char *tiers = NULL, errstr[256];
    tp_quota_tier table[TP_QUOTA_TIERS_N];
    if (!cfg)
        return 1;
    const char *allow = tp_config_get(cfg, "policy.region_allowlist");
    if (tp_ingress_parse_body(body, strlen(body), TP_SOURCE_ADMIN_API, allow, &req, &prob) != 0) {
        fprintf(stderr, "bench_kafka: the body does not validate\n");
        return 1;
    }
    tp_uuid_v4(req.request_id);
    snprintf(req.actor.id, sizeof(req.actor.id), "bench-admin");
    snprintf(req.actor.type, sizeof(req.actor.type), "user");
    req.actor.n_roles = 1;
    snprintf(req.actor.roles[0], sizeof(req.actor.roles[0]), "admin");
    const char *tiers_file = tp_config_get(cfg, "quota.tiers_file");
    if (*tiers_file && (tp_read_file(tiers_file, 1 << 20, &tiers, NULL) != 0 ||
                        tp_quota_tiers_parse(tiers, table, errstr, sizeof(errstr)) != 0)) {
        fprintf(stderr, "bench_kafka: cannot read %s\n", tiers_file);
        return 1;
    }
    /* The context of tp_ingress_opa_decide (worker/ingress/opa_hook.c) for an admin request. */
    tp_policy_context ctx = {.owned_tenants = 0,
                             .tiers = tiers ? table : NULL,
                             .region_allowlist_csv = allow,
                             .max_tenants_per_user = (int)tp_config_get_int(cfg, "policy.max_tenants_per_user"),
                             .admin_role = tp_config_get(cfg, "jwt.admin_role")};
    char *input = tp_policy_build_input_ctx(&req, "provision", &ctx);
    if (!input)
        return 1;
    printf("{\"input\":%s}\n", input);
    free(input);
    free(tiers);
    tp_config_free(cfg);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 4 && strcmp(argv[1], "topics-create") == 0)
        return topics(argv[2], true, argc - 3, argv + 3);
    if (argc >= 4 && strcmp(argv[1], "topics-delete") == 0)
        return topics(argv[2], false, argc - 3, argv + 3);
    if ((argc == 6 || argc == 7) && strcmp(argv[1], "produce") == 0)
        return produce(argv[2], argv[3], argv[4], atol(argv[5]), argc == 7 ? atof(argv[6]) : 0);
    if (argc == 5 && strcmp(argv[1], "inflight") == 0)
        return run_inflight(argv[2], atoi(argv[3]), atof(argv[4]));
    if (argc == 4 && strcmp(argv[1], "opa-body") == 0)
        return opa_body(argv[2], argv[3]);
    fprintf(stderr, "usage: bench_kafka topics-create BOOTSTRAP NAME:PARTS... | topics-delete BOOTSTRAP NAME...\n"
                    "       bench_kafka produce BOOTSTRAP TOPIC SLUG_PREFIX COUNT [RATE_PER_S]\n"
                    "       bench_kafka inflight CONFIG CONCURRENCY SECONDS | opa-body CONFIG BODY_JSON\n");
    return 2;
}
