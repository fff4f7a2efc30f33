/* consumer.c: the group consumer behind include/tp/kafka.h that tp-worker's engine drives: offsets
 * are stored only when the engine says so, the consumer queue signals a wake-up pipe instead of
 * being polled on a tick, records and rebalances reach the engine through two callbacks. */
#include "tp/kafka.h"
#include "kafka/kafka_int.h"
#include "tp/error.h"
#include "tp/log.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define COMPONENT "consumer"

struct tp_consumer {
    rd_kafka_t *rk;
    rd_kafka_queue_t *queue; /* the consumer queue, with io events on wake[1] */
    int wake[2];             /* librdkafka writes wake[1] when the queue becomes non-empty */
    int64_t max_poll_ms;
    tp_consumer_rebalance_fn on_rebalance;
    void *arg;
};

/* The public list type is librdkafka's list under another name. */
static const rd_kafka_topic_partition_list_t *rd_list(const tp_kafka_partitions *parts) {
    return (const rd_kafka_topic_partition_list_t *)parts;
}

int tp_kafka_partitions_count(const tp_kafka_partitions *parts) { return rd_list(parts)->cnt; }

tp_kafka_partition tp_kafka_partitions_get(const tp_kafka_partitions *parts, int i) {
    const rd_kafka_topic_partition_t *e = &rd_list(parts)->elems[i];
    return (tp_kafka_partition){e->topic, e->partition};
}

static void on_rd_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque) {
    tp_consumer *c = opaque;
    (void)rk;
    c->on_rebalance(c->arg, c, err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS,
                    (const tp_kafka_partitions *)parts);
}

int tp_consumer_new(const tp_config *cfg, const char *group_id, const char *topic,
                    tp_consumer_rebalance_fn rebalance_fn, void *arg, tp_consumer **out,
                    char *errstr, size_t errstr_size) {
    rd_kafka_conf_t *conf;
    rd_kafka_topic_partition_list_t *topics;
    tp_consumer *c;
    char val[32];
    size_t val_size = sizeof(val);
    int rc = TP_ECONFIG;
    static const tp_kafka_setting fixed[] = {
        {"enable.auto.offset.store", "false"},
        {"enable.auto.commit", "true"},
        {"auto.commit.interval.ms", "1000"},
        {"auto.offset.reset", "earliest"},
        {"partition.assignment.strategy", "roundrobin"},
        {"session.timeout.ms", "10000"},
        {"heartbeat.interval.ms", "1000"},
    };
    const tp_kafka_setting after_user[] = {{"group.id", group_id}, {"enable.auto.offset.store", "false"}};

    *out = NULL;
    c = calloc(1, sizeof(*c));
    if (!c) {
        snprintf(errstr, errstr_size, "out of memory");
        return TP_ENOMEM;
    }
    c->on_rebalance = rebalance_fn;
    c->arg = arg;
    if (pipe2(c->wake, O_NONBLOCK | O_CLOEXEC) != 0) {
        snprintf(errstr, errstr_size, "wake-up pipe: cannot create");
        free(c);
        return TP_EKAFKA;
    }
    conf = rd_kafka_conf_new();
    /* Offsets are ours to store: re-assert after the user's keys. */
    if (tp_kafka__conf_set_all(conf, fixed, sizeof(fixed) / sizeof(fixed[0]), errstr, errstr_size) != 0 ||
        tp_kafka__conf_apply(conf, cfg, errstr, errstr_size) != 0 ||
        tp_kafka__conf_set_all(conf, after_user, 2, errstr, errstr_size) != 0)
        goto out_conf;
    c->max_poll_ms = 300000;
    if (rd_kafka_conf_get(conf, "max.poll.interval.ms", val, &val_size) == RD_KAFKA_CONF_OK)
        c->max_poll_ms = atoll(val);
    rd_kafka_conf_set_rebalance_cb(conf, on_rd_rebalance);
    rd_kafka_conf_set_opaque(conf, c);
    c->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, errstr_size);
    if (!c->rk) {
        rc = TP_EKAFKA;
        goto out_conf;
    }
    rd_kafka_poll_set_consumer(c->rk);
    /* Before subscribing: every event from here on wakes the owner through the pipe. */
    c->queue = rd_kafka_queue_get_consumer(c->rk);
    rd_kafka_queue_io_event_enable(c->queue, c->wake[1], "1", 1);
    topics = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, topic, RD_KAFKA_PARTITION_UA);
    if (rd_kafka_subscribe(c->rk, topics) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        snprintf(errstr, errstr_size, "subscribe failed");
        rd_kafka_topic_partition_list_destroy(topics);
        tp_consumer_free(c);
        return TP_EKAFKA;
    }
    rd_kafka_topic_partition_list_destroy(topics);
    *out = c;
    return 0;
out_conf:
    rd_kafka_conf_destroy(conf);
    close(c->wake[0]);
    close(c->wake[1]);
    free(c);
    return rc;
}

void tp_consumer_free(tp_consumer *c) {
    if (!c)
        return;
    if (c->queue) {
        rd_kafka_queue_io_event_enable(c->queue, -1, NULL, 0);
        rd_kafka_queue_destroy(c->queue);
    }
    if (c->rk)
        rd_kafka_destroy(c->rk);
    close(c->wake[0]);
    close(c->wake[1]);
    free(c);
}

int tp_consumer_wakeup_fd(const tp_consumer *c) { return c->wake[0]; }

int64_t tp_consumer_max_poll_interval_ms(const tp_consumer *c) { return c->max_poll_ms; }

/* librdkafka writes the wake-up pipe only when the queue goes from empty to non-empty, so after
 * a full batch the caller serves the rest on its next turn. Rebalance callbacks run from
 * rd_kafka_consumer_poll. */
int tp_consumer_serve(tp_consumer *c, int max, tp_consumer_message_fn fn, void *arg) {
    int i;
    tp_kafka__wake_drain(c->wake[0]);
    for (i = 0; i < max; i++) {
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(c->rk, 0);
        if (!msg)
            break;
        if (msg->err) {
            if (msg->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                tp_log_warn(COMPONENT, "%s", rd_kafka_message_errstr(msg));
        } else {
            tp_kafka_message m = {rd_kafka_topic_name(msg->rkt), msg->partition, msg->offset,
                                  msg->key, msg->key_len, msg->payload, msg->len, msg};
            fn(arg, &m);
        }
        rd_kafka_message_destroy(msg);
    }
    return i;
}

int tp_kafka_message_header(const tp_kafka_message *msg, const char *name, const void **value,
                            size_t *len) {
    rd_kafka_headers_t *hdrs = NULL;
    if (rd_kafka_message_headers(msg->impl, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        rd_kafka_header_get_last(hdrs, name, value, len) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return TP_ENOT_FOUND;
    return 0;
}

int tp_consumer_assign(tp_consumer *c, const tp_kafka_partitions *parts) {
    return rd_kafka_assign(c->rk, parts ? rd_list(parts) : NULL) ? TP_EKAFKA : 0;
}

int tp_consumer_pause(tp_consumer *c, const tp_kafka_partitions *parts) {
    rd_kafka_topic_partition_list_t *list = NULL;
    if (parts) /* librdkafka writes each element's result into the list it is given */
        return rd_kafka_pause_partitions(c->rk, (rd_kafka_topic_partition_list_t *)rd_list(parts))
                   ? TP_EKAFKA : 0;
    if (rd_kafka_assignment(c->rk, &list) != RD_KAFKA_RESP_ERR_NO_ERROR || !list)
        return TP_EKAFKA;
    if (list->cnt > 0)
        rd_kafka_pause_partitions(c->rk, list);
    rd_kafka_topic_partition_list_destroy(list);
    return 0;
}

int tp_consumer_resume(tp_consumer *c) {
    rd_kafka_topic_partition_list_t *list = NULL;
    if (rd_kafka_assignment(c->rk, &list) != RD_KAFKA_RESP_ERR_NO_ERROR || !list)
        return TP_EKAFKA;
    if (list->cnt > 0)
        rd_kafka_resume_partitions(c->rk, list);
    rd_kafka_topic_partition_list_destroy(list);
    return 0;
}

int tp_consumer_store_offset(tp_consumer *c, const char *topic, int32_t partition, int64_t next) {
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(1);
    rd_kafka_resp_err_t err;
    rd_kafka_topic_partition_list_add(list, topic, partition)->offset = next;
    err = rd_kafka_offsets_store(c->rk, list);
    if (err)
        tp_log_warn(COMPONENT, "offsets_store %s[%d]@%lld: %s", topic, (int)partition,
                    (long long)next, rd_kafka_err2str(err));
    rd_kafka_topic_partition_list_destroy(list);
    return err ? TP_EKAFKA : 0;
}

int tp_consumer_commit(tp_consumer *c) { return rd_kafka_commit(c->rk, NULL, 0) ? TP_EKAFKA : 0; }

void tp_consumer_close(tp_consumer *c) { rd_kafka_consumer_close(c->rk); }

/* Lag per assigned partition: the high watermark last seen in a fetch response (cached, no
 * request) minus the position (the offset after the last record handed to the engine). Where no
 * record was handed out yet since the assignment, the committed offset stands in (one request,
 * bounded by timeout_ms), or the low watermark when the group has none (auto.offset.reset is
 * earliest). librdkafka's calls used here are thread-safe. */
int tp_consumer_lag(tp_consumer *c, int timeout_ms, tp_consumer_lag_fn fn, void *arg) {
    rd_kafka_topic_partition_list_t *list = NULL, *unknown = NULL;
    if (rd_kafka_assignment(c->rk, &list) != RD_KAFKA_RESP_ERR_NO_ERROR || !list)
        return TP_EKAFKA;
    rd_kafka_position(c->rk, list);
    for (int i = 0; i < list->cnt; i++) {
        if (list->elems[i].offset < 0) {
            if (!unknown)
                unknown = rd_kafka_topic_partition_list_new(list->cnt);
            if (unknown)
                rd_kafka_topic_partition_list_add(unknown, list->elems[i].topic, list->elems[i].partition);
        }
    }
    if (unknown && rd_kafka_committed(c->rk, unknown, timeout_ms) != RD_KAFKA_RESP_ERR_NO_ERROR)
        for (int i = 0; i < unknown->cnt; i++)
            unknown->elems[i].offset = RD_KAFKA_OFFSET_INVALID;
    for (int i = 0; i < list->cnt; i++) {
        const rd_kafka_topic_partition_t *e = &list->elems[i];
        int64_t lo = -1, hi = -1, pos = e->offset;
        if (rd_kafka_get_watermark_offsets(c->rk, e->topic, e->partition, &lo, &hi) != 0 || hi < 0)
            continue; /* no fetch answer yet: unknown */
        if (pos < 0 && unknown) {
            rd_kafka_topic_partition_t *u = rd_kafka_topic_partition_list_find(unknown, e->topic, e->partition);
            pos = u ? u->offset : -1;
        }
        if (pos < 0)
            pos = lo >= 0 ? lo : 0;
        fn(arg, e->topic, e->partition, hi > pos ? hi - pos : 0);
    }
    if (unknown)
        rd_kafka_topic_partition_list_destroy(unknown);
    rd_kafka_topic_partition_list_destroy(list);
    return 0;
}
