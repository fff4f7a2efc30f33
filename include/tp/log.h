/* log.h: structured JSON logs, one line per event on stderr.
 * Every line carries a level, a component and a message; request id, stage and attempt when the
 * caller has them. Never pass secrets or whole payloads. Thread-safe (one write(2) per line). */
#ifndef TP_LOG_H
#define TP_LOG_H

typedef enum tp_log_level { TP_LOG_DEBUG = 0, TP_LOG_INFO, TP_LOG_WARN, TP_LOG_ERROR } tp_log_level;

/* Context of a log line; any field may be NULL/0. */
typedef struct tp_log_ctx {
    const char *request_id;
    const char *stage;
    int attempt;
    const char *traceparent; /* W3C trace context of the request, when it came with one */
} tp_log_ctx;

/* Sets the lowest level written (default INFO; TP_LOG_LEVEL=debug in the environment lowers it). */
void tp_log_set_level(tp_log_level level);
/* Parses "debug|info|warn|error"; returns -1 for anything else. */
int tp_log_level_parse(const char *s);

#if defined(__GNUC__)
#define TP_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define TP_PRINTF(a, b)
#endif

/* Writes one JSON line: {"ts":..,"level":..,"component":..,"requestId":..,"stage":..,"attempt":..,"msg":..}. */
void tp_log(tp_log_level level, const char *component, const tp_log_ctx *ctx, const char *fmt, ...)
    TP_PRINTF(4, 5);

#define tp_log_info(comp, ...) tp_log(TP_LOG_INFO, comp, NULL, __VA_ARGS__)
#define tp_log_warn(comp, ...) tp_log(TP_LOG_WARN, comp, NULL, __VA_ARGS__)
#define tp_log_error(comp, ...) tp_log(TP_LOG_ERROR, comp, NULL, __VA_ARGS__)
#define tp_log_debug(comp, ...) tp_log(TP_LOG_DEBUG, comp, NULL, __VA_ARGS__)

#endif
