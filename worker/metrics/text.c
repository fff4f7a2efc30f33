/* text.c: the Prometheus text exposition format (0.0.4) writer: a growing buffer, # HELP/# TYPE
 * lines and escaped label values. Shared by tp-worker's registry and tp-ingress's metrics. */
#include "tp/metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void tp_metrics_printf(tp_metrics_buf *b, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        if (b->failed)
            return;
        size_t room = b->cap - b->len;
        va_start(ap, fmt);
        int n = vsnprintf(b->p ? b->p + b->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = 1;
            return;
        }
        if ((size_t)n < room) {
            b->len += (size_t)n;
            return;
        }
        size_t ncap = (b->cap ? b->cap * 2 : 4096) + (size_t)n;
        char *np = realloc(b->p, ncap);
        if (!np) {
            b->failed = 1;
            return;
        }
        b->p = np;
        b->cap = ncap;
    }
}

void tp_metrics_family(tp_metrics_buf *b, const char *name, const char *type, const char *help) {
    tp_metrics_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void tp_metrics_label_value(tp_metrics_buf *b, const char *value) {
    for (const char *s = value; *s; s++) {
        if (*s == '\\' || *s == '"')
            tp_metrics_printf(b, "\\%c", *s);
        else if (*s == '\n')
            tp_metrics_printf(b, "\\n");
        else
            tp_metrics_printf(b, "%c", *s);
    }
}

char *tp_metrics_buf_take(tp_metrics_buf *b, size_t *len) {
    char *p = b->p;
    if (b->failed || !p) {
        free(p);
        memset(b, 0, sizeof(*b));
        return NULL;
    }
    if (len)
        *len = b->len;
    memset(b, 0, sizeof(*b));
    return p;
}
