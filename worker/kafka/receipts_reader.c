/* receipts_reader.c: reads a whole topic from its low watermarks to the high watermarks seen at
 * the start (or on, with follow) through librdkafka's simple consumer: partitions are started
 * explicitly on one queue, no consumer group is joined and no offset is ever committed. */
#include "tp/receipts_reader.h"
#include "tp/error.h"
#include "kafka/kafka_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define READER_META_TIMEOUT_MS 10000

typedef struct part_state {
    int64_t lo, hi;   /* watermarks at the start */
    int64_t next;     /* next offset expected */
    bool started;
    bool done;
} part_state;

static int64_t mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Returns the partition count of topic, or a negative TP_E* code. */
static int partition_count(rd_kafka_t *rk, rd_kafka_topic_t *rkt, const char *topic, char *errstr,
                           size_t errstr_size) {
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, rkt, &md, READER_META_TIMEOUT_MS);
    int n;
    if (err) {
        snprintf(errstr, errstr_size, "metadata of %s: %s", topic, rd_kafka_err2str(err));
        return err == RD_KAFKA_RESP_ERR__TIMED_OUT ? TP_ETIMEOUT : TP_EKAFKA;
    }
    if (md->topic_cnt != 1 || md->topics[0].err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART ||
        md->topics[0].partition_cnt == 0) {
        snprintf(errstr, errstr_size, "topic %s does not exist", topic);
        n = TP_ENOT_FOUND;
    } else if (md->topics[0].err) {
        snprintf(errstr, errstr_size, "metadata of %s: %s", topic, rd_kafka_err2str(md->topics[0].err));
        n = TP_EKAFKA;
    } else {
        n = md->topics[0].partition_cnt;
    }
    rd_kafka_metadata_destroy(md);
    return n;
}

static bool all_done(const part_state *ps, int n) {
    for (int i = 0; i < n; i++)
        if (!ps[i].done)
            return false;
    return true;
}

int tp_topic_read(const tp_config *cfg, const char *topic, const tp_topic_read_opts *opts,
                  tp_topic_record_fn fn, void *arg, char *errstr, size_t errstr_size) {
    return tp_topic_read_range(cfg, topic, opts, NULL, fn, arg, errstr, errstr_size);
}

int tp_topic_read_range(const tp_config *cfg, const char *topic, const tp_topic_read_opts *opts,
                        tp_topic_range *range, tp_topic_record_fn fn, void *arg, char *errstr,
                        size_t errstr_size) {
    static const tp_topic_read_opts defaults = {false, 0, NULL};
    /* A reader, never a group member: no commits, see every record, report partition ends. */
    static const tp_kafka_setting reader_settings[] = {
        {"enable.partition.eof", "true"},
        {"enable.auto.commit", "false"},
        {"enable.auto.offset.store", "false"},
        {"check.crcs", "true"},
    };
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_t *rk = NULL;
    rd_kafka_topic_t *rkt = NULL;
    rd_kafka_queue_t *q = NULL;
    part_state *ps = NULL;
    int n_parts = 0, rc = 0, idle_ms;
    int64_t last_progress;
    char err[256];

    if (!opts)
        opts = &defaults;
    idle_ms = opts->idle_timeout_ms > 0 ? opts->idle_timeout_ms : 30000;
    if (tp_kafka__conf_apply(conf, cfg, errstr, errstr_size) != 0) {
        rd_kafka_conf_destroy(conf);
        return TP_ECONFIG;
    }
    if (tp_kafka__conf_set_all(conf, reader_settings, sizeof(reader_settings) / sizeof(reader_settings[0]),
                               errstr, errstr_size) != 0) {
        rd_kafka_conf_destroy(conf);
        return TP_ECONFIG;
    }
    rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    if (!rk) {
        snprintf(errstr, errstr_size, "%s", err);
        rd_kafka_conf_destroy(conf);
        return TP_ECONFIG;
    }
    rkt = rd_kafka_topic_new(rk, topic, NULL);
    if (!rkt) {
        snprintf(errstr, errstr_size, "topic %s: %s", topic, rd_kafka_err2str(rd_kafka_last_error()));
        rc = TP_EKAFKA;
        goto out;
    }
    n_parts = partition_count(rk, rkt, topic, errstr, errstr_size);
    if (n_parts < 0) {
        rc = n_parts;
        n_parts = 0;
        goto out;
    }
    if (range)
        range->n_partitions = n_parts;
    ps = calloc((size_t)n_parts, sizeof(*ps));
    q = rd_kafka_queue_new(rk);
    if (!ps || !q) {
        rc = TP_ENOMEM;
        goto out;
    }
    for (int p = 0; p < n_parts; p++) {
        rd_kafka_resp_err_t e =
            rd_kafka_query_watermark_offsets(rk, topic, p, &ps[p].lo, &ps[p].hi, READER_META_TIMEOUT_MS);
        if (e) {
            snprintf(errstr, errstr_size, "watermarks of %s[%d]: %s", topic, p, rd_kafka_err2str(e));
            rc = e == RD_KAFKA_RESP_ERR__TIMED_OUT ? TP_ETIMEOUT : TP_EKAFKA;
            goto out;
        }
        ps[p].next = ps[p].lo;
        if (range && p < range->n_start && range->start[p] > ps[p].lo && range->start[p] <= ps[p].hi)
            ps[p].next = range->start[p];
        if (range && p < range->n_end)
            range->end[p] = ps[p].hi;
        ps[p].done = !opts->follow && ps[p].hi <= ps[p].next;
        if (ps[p].done)
            continue;
        if (rd_kafka_consume_start_queue(rkt, p, ps[p].next, q) != 0) {
            snprintf(errstr, errstr_size, "start %s[%d]: %s", topic, p,
                     rd_kafka_err2str(rd_kafka_last_error()));
            rc = TP_EKAFKA;
            goto out;
        }
        ps[p].started = true;
    }

    last_progress = mono_ms();
    while (opts->follow || !all_done(ps, n_parts)) {
        rd_kafka_message_t *msg;
        if (opts->stop && *opts->stop)
            break;
        if (!opts->follow && mono_ms() - last_progress > idle_ms) {
            snprintf(errstr, errstr_size, "no progress reading %s for %d ms (broker unreachable?)", topic,
                     idle_ms);
            rc = TP_ETIMEOUT;
            break;
        }
        msg = rd_kafka_consume_queue(q, 200);
        if (!msg)
            continue;
        if (msg->partition < 0 || msg->partition >= n_parts) {
            rd_kafka_message_destroy(msg);
            continue;
        }
        part_state *st = &ps[msg->partition];
        if (msg->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            if (msg->offset > st->next)
                st->next = msg->offset;
            if (st->next >= st->hi)
                st->done = true;
            last_progress = mono_ms();
        } else if (msg->err) {
            if (rd_kafka_fatal_error(rk, NULL, 0) || msg->err == RD_KAFKA_RESP_ERR_OFFSET_OUT_OF_RANGE ||
                msg->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) {
                snprintf(errstr, errstr_size, "reading %s[%d]: %s", topic, (int)msg->partition,
                         rd_kafka_message_errstr(msg));
                rc = TP_EKAFKA;
            }
            /* Other errors (a broker down for a moment) are retried by librdkafka. */
        } else if (!opts->follow && msg->offset >= st->hi) {
            st->done = true; /* written after we started: not part of this read */
        } else {
            tp_topic_record rec = {topic, msg->partition, msg->offset, msg->key, msg->key_len,
                                   msg->payload, msg->len, msg};
            st->next = msg->offset + 1;
            if (!opts->follow && st->next >= st->hi)
                st->done = true;
            last_progress = mono_ms();
            rc = fn ? fn(arg, &rec) : 0;
        }
        rd_kafka_message_destroy(msg);
        if (rc != 0)
            break;
    }

out:
    for (int p = 0; p < n_parts; p++)
        if (ps && ps[p].started)
            rd_kafka_consume_stop(rkt, p);
    free(ps);
    if (q)
        rd_kafka_queue_destroy(q);
    if (rkt)
        rd_kafka_topic_destroy(rkt);
    rd_kafka_destroy(rk);
    return rc;
}

int tp_topic_record_header(const tp_topic_record *rec, const char *name, const void **value,
                           size_t *len) {
    rd_kafka_headers_t *hdrs = NULL;
    if (!rec->impl ||
        rd_kafka_message_headers((const rd_kafka_message_t *)rec->impl, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        rd_kafka_header_get_last(hdrs, name, value, len) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return TP_ENOT_FOUND;
    return 0;
}
