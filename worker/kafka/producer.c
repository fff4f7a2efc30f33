/* producer.c: the idempotent librdkafka producer behind include/tp/kafka.h; delivery reports
 * are mapped to PERSISTED-or-error and handed to a per-record callback. */
#include "tp/kafka.h"
#include "kafka/kafka_int.h"
#include "tp/error.h"
#include "tp/log.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct tp_producer {
    rd_kafka_t *rk;
    int wake[2]; /* pipe librdkafka writes to when its main queue becomes non-empty; -1 unused */
};

typedef struct delivery {
    tp_delivery_fn fn;
    void *opaque;
} delivery;

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque) {
    delivery *d = msg->_private;
    int err = 0;
    (void)rk;
    (void)opaque;
    if (msg->err || rd_kafka_message_status(msg) != RD_KAFKA_MSG_STATUS_PERSISTED) {
        err = (msg->err == RD_KAFKA_RESP_ERR__FATAL) ? TP_EKAFKA_FATAL : TP_EKAFKA;
        tp_log_warn("producer", "delivery to %s failed: %s", rd_kafka_topic_name(msg->rkt),
                    rd_kafka_err2str(msg->err));
    }
    if (d) {
        if (d->fn)
            d->fn(d->opaque, err, msg->partition, msg->offset);
        free(d);
    }
}

static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
    (void)rk;
    (void)opaque;
    tp_log_warn("producer", "kafka: %s: %s", rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
}

int tp_producer_new(const tp_config *cfg, tp_producer **out, char *errstr, size_t errstr_size) {
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    tp_producer *p;
    static const tp_kafka_setting fixed[] = {
        {"enable.idempotence", "true"}, /* forces acks=all */
        {"acks", "all"},
        {"partitioner", "murmur2_random"},
        {"linger.ms", "2"},
        {"message.timeout.ms", "30000"},
    };
    if (tp_kafka__conf_set_all(conf, fixed, sizeof(fixed) / sizeof(fixed[0]), errstr, errstr_size) != 0 ||
        tp_kafka__conf_apply(conf, cfg, errstr, errstr_size) != 0)
        goto out_conf;
    /* Durability is not negotiable: re-assert the first two after the user's keys. */
    if (tp_kafka__conf_set_all(conf, fixed, 2, errstr, errstr_size) != 0)
        goto out_conf;
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_conf_set_error_cb(conf, on_error);
    p = calloc(1, sizeof(*p));
    if (!p) {
        snprintf(errstr, errstr_size, "out of memory");
        goto out_conf;
    }
    p->wake[0] = p->wake[1] = -1;
    p->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, errstr_size);
    if (!p->rk) {
        free(p);
        goto out_conf;
    }
    *out = p;
    return 0;
out_conf:
    rd_kafka_conf_destroy(conf);
    return TP_ECONFIG;
}

void tp_producer_free(tp_producer *p, int flush_ms) {
    if (!p)
        return;
    rd_kafka_flush(p->rk, flush_ms);
    /* Records still queued get their callbacks (as failures) through purge + poll. */
    rd_kafka_purge(p->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_poll(p->rk, 0);
    if (p->wake[1] >= 0) {
        rd_kafka_queue_t *q = rd_kafka_queue_get_main(p->rk);
        rd_kafka_queue_io_event_enable(q, -1, NULL, 0);
        rd_kafka_queue_destroy(q);
    }
    rd_kafka_destroy(p->rk);
    if (p->wake[0] >= 0) {
        close(p->wake[0]);
        close(p->wake[1]);
    }
    free(p);
}

int tp_producer_send(tp_producer *p, const char *topic, const void *key, size_t key_len,
                     const void *value, size_t value_len, const tp_kafka_header *headers,
                     int n_headers, tp_delivery_fn fn, void *opaque) {
    rd_kafka_headers_t *hdrs = NULL;
    rd_kafka_resp_err_t err;
    delivery *d = calloc(1, sizeof(*d));
    if (!d)
        return TP_ENOMEM;
    d->fn = fn;
    d->opaque = opaque;
    if (n_headers > 0) {
        hdrs = rd_kafka_headers_new((size_t)n_headers);
        for (int i = 0; i < n_headers; i++)
            rd_kafka_header_add(hdrs, headers[i].name, -1, headers[i].value, (ssize_t)headers[i].len);
    }
    if (hdrs) /* on success librdkafka owns hdrs */
        err = rd_kafka_producev(p->rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, key_len),
                                RD_KAFKA_V_VALUE((void *)value, value_len),
                                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_OPAQUE(d),
                                RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_END);
    else
        err = rd_kafka_producev(p->rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, key_len),
                                RD_KAFKA_V_VALUE((void *)value, value_len),
                                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_OPAQUE(d),
                                RD_KAFKA_V_END);
    if (err) {
        if (hdrs)
            rd_kafka_headers_destroy(hdrs);
        free(d);
        tp_log_warn("producer", "produce to %s: %s", topic, rd_kafka_err2str(err));
        return err == RD_KAFKA_RESP_ERR__FATAL ? TP_EKAFKA_FATAL : TP_EKAFKA;
    }
    return 0;
}

int tp_producer_poll(tp_producer *p, int timeout_ms) { return rd_kafka_poll(p->rk, timeout_ms); }

int tp_producer_wakeup_fd(tp_producer *p) {
    rd_kafka_queue_t *q;
    if (p->wake[0] >= 0)
        return p->wake[0];
    if (pipe2(p->wake, O_NONBLOCK | O_CLOEXEC) != 0) {
        p->wake[0] = p->wake[1] = -1;
        return -1;
    }
    /* Delivery reports and error events land on the main queue; librdkafka writes one byte to
     * the pipe each time that queue goes from empty to non-empty. */
    q = rd_kafka_queue_get_main(p->rk);
    rd_kafka_queue_io_event_enable(q, p->wake[1], "1", 1);
    rd_kafka_queue_destroy(q);
    return p->wake[0];
}

int tp_producer_serve(tp_producer *p, int max) {
    int served = 0, n;
    tp_kafka__wake_drain(p->wake[0]);
    /* Each rd_kafka_poll(0) serves what is queued now; stop when a round serves nothing. */
    while (served < max && (n = rd_kafka_poll(p->rk, 0)) > 0)
        served += n;
    return served < max ? served : max;
}

int tp_producer_flush(tp_producer *p, int timeout_ms) {
    return rd_kafka_flush(p->rk, timeout_ms) == RD_KAFKA_RESP_ERR_NO_ERROR ? 0 : TP_ETIMEOUT;
}

int tp_producer_outq_len(tp_producer *p) { return rd_kafka_outq_len(p->rk); }
