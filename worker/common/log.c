/* log.c: one JSON object per line on stderr, written with a single write(2) so that lines from
 * the loop and the pool threads never interleave. */
#include "tp/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static atomic_int min_level = -1;

static const char *level_names[] = {"debug", "info", "warn", "error"};

void tp_log_set_level(tp_log_level level) { atomic_store(&min_level, (int)level); }

int tp_log_level_parse(const char *s) {
    for (int i = 0; i < 4; i++)
        if (s && strcasecmp(s, level_names[i]) == 0)
            return i;
    return -1;
}

static int current_level(void) {
    int lvl = atomic_load(&min_level);
    if (lvl < 0) {
        int parsed = tp_log_level_parse(getenv("TP_LOG_LEVEL"));
        lvl = parsed < 0 ? TP_LOG_INFO : parsed;
        atomic_store(&min_level, lvl);
    }
    return lvl;
}

/* Appends s JSON-escaped to buf at *off, never past cap - 1. */
static void put_escaped(char *buf, size_t cap, size_t *off, const char *s) {
    for (; s && *s && *off + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            buf[(*off)++] = '\\';
            buf[(*off)++] = (char)c;
        } else if (c < 0x20) {
            *off += (size_t)snprintf(buf + *off, cap - *off, "\\u%04x", c);
        } else {
            buf[(*off)++] = (char)c;
        }
    }
}

static void put_raw(char *buf, size_t cap, size_t *off, const char *s) {
    size_t n = strlen(s);
    if (*off + n >= cap)
        n = cap - *off - 1;
    memcpy(buf + *off, s, n);
    *off += n;
}

void tp_log(tp_log_level level, const char *component, const tp_log_ctx *ctx, const char *fmt, ...) {
    char msg[1024], line[2048], ts[96];
    size_t off = 0;
    struct timespec now;
    struct tm tm;
    va_list ap;

    if ((int)level < current_level())
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, now.tv_nsec / 1000000);

    put_raw(line, sizeof(line), &off, "{\"ts\":\"");
    put_raw(line, sizeof(line), &off, ts);
    put_raw(line, sizeof(line), &off, "\",\"level\":\"");
    put_raw(line, sizeof(line), &off, level_names[level]);
    put_raw(line, sizeof(line), &off, "\",\"component\":\"");
    put_escaped(line, sizeof(line), &off, component ? component : "-");
    put_raw(line, sizeof(line), &off, "\"");
    if (ctx && ctx->request_id) {
        put_raw(line, sizeof(line), &off, ",\"requestId\":\"");
        put_escaped(line, sizeof(line), &off, ctx->request_id);
        put_raw(line, sizeof(line), &off, "\"");
    }
    if (ctx && ctx->stage) {
        put_raw(line, sizeof(line), &off, ",\"stage\":\"");
        put_escaped(line, sizeof(line), &off, ctx->stage);
        put_raw(line, sizeof(line), &off, "\"");
    }
    if (ctx && ctx->traceparent && ctx->traceparent[0]) {
        put_raw(line, sizeof(line), &off, ",\"traceparent\":\"");
        put_escaped(line, sizeof(line), &off, ctx->traceparent);
        put_raw(line, sizeof(line), &off, "\"");
    }
    if (ctx && ctx->attempt > 0) {
        char num[24];
        snprintf(num, sizeof(num), ",\"attempt\":%d", ctx->attempt);
        put_raw(line, sizeof(line), &off, num);
    }
    put_raw(line, sizeof(line), &off, ",\"msg\":\"");
    put_escaped(line, sizeof(line), &off, msg);
    if (off > sizeof(line) - 4)
        off = sizeof(line) - 4;
    line[off++] = '"';
    line[off++] = '}';
    line[off++] = '\n';
    (void)!write(STDERR_FILENO, line, off);
}
