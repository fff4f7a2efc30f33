/* probe.c: a librdkafka client that only asks for cluster metadata, for readiness checks
 * (tp-ingress's /readyz); it sends nothing. */
#include "tp/kafka.h"
#include "kafka/kafka_int.h"
#include "tp/error.h"

#include <stdio.h>

/* The public type is a librdkafka handle under another name. */
static rd_kafka_t *rd_handle(tp_kafka_probe *probe) { return (rd_kafka_t *)probe; }

int tp_kafka_probe_new(const tp_config *cfg, tp_kafka_probe **out, char *errstr, size_t errstr_size) {
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_t *rk;
    *out = NULL;
    if (tp_kafka__conf_apply(conf, cfg, errstr, errstr_size) != 0) {
        rd_kafka_conf_destroy(conf);
        return TP_ECONFIG;
    }
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, errstr_size);
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        return TP_EKAFKA_FATAL;
    }
    *out = (tp_kafka_probe *)rk;
    return 0;
}

int tp_kafka_probe_check(tp_kafka_probe *probe, int timeout_ms, char *errstr, size_t errstr_size) {
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t err = rd_kafka_metadata(rd_handle(probe), 0, NULL, &md, timeout_ms);
    if (md)
        rd_kafka_metadata_destroy(md);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        snprintf(errstr, errstr_size, "%s", rd_kafka_err2str(err));
        return TP_EKAFKA;
    }
    return 0;
}

void tp_kafka_probe_free(tp_kafka_probe *probe) {
    if (probe)
        rd_kafka_destroy(rd_handle(probe));
}
