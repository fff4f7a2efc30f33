/* kafka_int.h: declarations private to worker/kafka, the one component that includes
 * librdkafka's header. */
#ifndef TP_KAFKA_INT_H
#define TP_KAFKA_INT_H

#include <stddef.h>

#include <librdkafka/rdkafka.h>

#include "tp/config.h"

/* Applies every kafka.* key of cfg to conf (the prefix stripped, values unchanged) and routes
 * librdkafka's log lines into our JSON logs. Returns 0 or TP_ECONFIG (errstr names the key). */
int tp_kafka__conf_apply(rd_kafka_conf_t *conf, const tp_config *cfg, char *errstr, size_t errstr_size);

/* A key and the value we always give it (a client's fixed settings). */
typedef struct tp_kafka_setting {
    const char *key;
    const char *value;
} tp_kafka_setting;

/* Sets each of the n settings on conf and stops at the first one librdkafka refuses (an unknown
 * key in this build of librdkafka, a value out of range). Returns 0, or TP_ECONFIG with errstr
 * naming the key, its value and librdkafka's reason. */
int tp_kafka__conf_set_all(rd_kafka_conf_t *conf, const tp_kafka_setting *settings, size_t n,
                           char *errstr, size_t errstr_size);

/* Drains a non-blocking wake-up pipe's read end (librdkafka writes one byte per empty to
 * non-empty transition of a queue). */
void tp_kafka__wake_drain(int fd);

#endif
