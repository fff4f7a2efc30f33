/* ingress_child.h: a tp-ingress child process for tests that drive one beside the e2e harness's
 * workers (the e2e config plus a free port), and a small blocking HTTP client (libcurl) whose
 * answers carry status, lower-cased headers, body and elapsed time. */
#ifndef TP_INGRESS_CHILD_H
#define TP_INGRESS_CHILD_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "support/e2e.h"

typedef struct ingress_child {
    pid_t pid;
    int port;
    char config_path[300];
    char log_path[300];
} ingress_child;

typedef struct http_answer {
    long status; /* 0: no answer (connection failed or the client's timeout passed) */
    char headers[8192];
    char body[8192];
    int64_t elapsed_ms;
} http_answer;

/* Starts tp-ingress with e's config plus extra lines (may be NULL); waits for /healthz. 0 or -1. */
int ingress_child_start(e2e *e, ingress_child *ic, const char *name, const char *extra);
/* SIGTERM, then SIGKILL after 15 s; returns the exit status or -1. */
int ingress_child_stop(ingress_child *ic);
/* One request (body NULL: none; token NULL: no Authorization) with a client-side timeout of
 * timeout_ms; fills a and returns a->status. */
long ingress_http(http_answer *a, int port, const char *method, const char *path, const char *token,
                  const char *body, long timeout_ms);

#endif
