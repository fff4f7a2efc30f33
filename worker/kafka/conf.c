/* conf.c: what every librdkafka client of ours shares: the kafka.* config keys applied to a
 * librdkafka conf, librdkafka's log lines turned into our JSON lines, the wake-up pipe drain. */
#include "kafka/kafka_int.h"
#include "tp/error.h"
#include "tp/log.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

typedef struct conf_apply {
    rd_kafka_conf_t *conf;
    char *errstr;
    size_t errstr_size;
    int rc;
} conf_apply;

static void apply_one(const char *key, const char *value, void *opaque) {
    conf_apply *ca = opaque;
    char err[256];
    if (ca->rc != 0)
        return;
    if (rd_kafka_conf_set(ca->conf, key + strlen("kafka."), value, err, sizeof(err)) != RD_KAFKA_CONF_OK) {
        snprintf(ca->errstr, ca->errstr_size, "%s: %s", key, err);
        ca->rc = TP_ECONFIG;
    }
}

/* librdkafka's own log lines, as JSON lines like ours (called from its threads). */
static void on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
    tp_log_level lvl = level <= 3 ? TP_LOG_ERROR : level == 4 ? TP_LOG_WARN : level <= 6 ? TP_LOG_INFO : TP_LOG_DEBUG;
    tp_log(lvl, "rdkafka", NULL, "%s: %s: %s", rd_kafka_name(rk), fac, buf);
}

int tp_kafka__conf_apply(rd_kafka_conf_t *conf, const tp_config *cfg, char *errstr, size_t errstr_size) {
    conf_apply ca = {conf, errstr, errstr_size, 0};
    rd_kafka_conf_set_log_cb(conf, on_log);
    tp_config_foreach(cfg, "kafka.", apply_one, &ca);
    return ca.rc;
}

int tp_kafka__conf_set_all(rd_kafka_conf_t *conf, const tp_kafka_setting *settings, size_t n,
                           char *errstr, size_t errstr_size) {
    char err[256];
    for (size_t i = 0; i < n; i++) {
        if (rd_kafka_conf_set(conf, settings[i].key, settings[i].value, err, sizeof(err)) != RD_KAFKA_CONF_OK) {
            snprintf(errstr, errstr_size, "librdkafka refuses %s=%s: %s", settings[i].key,
                     settings[i].value, err);
            return TP_ECONFIG;
        }
    }
    return 0;
}

void tp_kafka__wake_drain(int fd) {
    char buf[64];
    if (fd >= 0)
        while (read(fd, buf, sizeof(buf)) > 0)
            ;
}
