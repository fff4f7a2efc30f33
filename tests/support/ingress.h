/* ingress.h: the one way tests run tp-ingress and talk HTTP. The fixture is a tp-ingress child
 * process on the e2e harness's config (scratch database, private topics, the stack's keys) plus a
 * free port and any extra lines, ready once /readyz answers 200, stopped and reaped by the test.
 * The client is one blocking libcurl request to a local server (tp-ingress, tp-worker's operations
 * endpoint, OPA) whose answer carries status, body, headers and elapsed time. */
#ifndef TP_TEST_INGRESS_H
#define TP_TEST_INGRESS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "support/e2e.h"

/* ---- the tp-ingress fixture ------------------------------------------------------------------ */

typedef struct ingress_proc {
    pid_t pid; /* 0: not running */
    int port;
    char config_path[300];
    char log_path[300]; /* stdout and stderr of the child */
} ingress_proc;

/* Starts tp-ingress with a copy of e's config as it is now (later keys win, so extra may override
 * any of it: pg.dsn of a proxy, jwt.*), plus `ingress.listen_port` on a free port and extra (more
 * `key = value` lines; may be NULL). Waits (at most 30 s) until GET ready_path answers 200:
 * "/readyz" for ingress_start, "/healthz" where a dependency is down on purpose. Files are
 * /tmp/tp-e2e-<name>-<suffix>.ingress.{conf,log}. Returns 0, or -1 with the reason and the log's
 * path on stderr (the child, if any, is killed and reaped). Main thread. */
int ingress_start(e2e *e, ingress_proc *ip, const char *name, const char *extra);
int ingress_start_until(e2e *e, ingress_proc *ip, const char *name, const char *extra,
                        const char *ready_path);
/* SIGTERM, then SIGKILL after 20 s; reaps the child and removes its config. Returns its exit
 * status (128 + signal when a signal ended it), or -1 when it had to be killed or was not
 * running. On anything but 0 the log is kept and its path printed; the log of a clean stop is
 * removed by ingress_logs_finish(0). */
int ingress_stop(ingress_proc *ip);
/* SIGKILL (a crash on purpose), reaps the child and removes its config. */
void ingress_kill(ingress_proc *ip);
/* Call with the failure count of the test run (cmocka_run_group_tests' result) as main returns:
 * when it is 0, removes the logs of the children stopped cleanly or killed on purpose; otherwise
 * keeps them all. Returns failed. A program that never calls it keeps every log. */
int ingress_logs_finish(int failed);

/* ---- the HTTP client ------------------------------------------------------------------------- */

typedef struct http_req {
    const char *method;          /* NULL: POST when there is a body, else GET; HEAD sends no body */
    const char *path;            /* from the root, query included: "/api/admin/tenants?limit=3" */
    const char *token;           /* Authorization: Bearer <token>; NULL: none */
    const char *idempotency_key; /* Idempotency-Key; NULL: none */
    const char *prefer;          /* Prefer ("wait=10"); NULL: none */
    const char *body;            /* NULL: none */
    size_t body_len;             /* 0: strlen(body) */
    const char *content_type;    /* NULL: application/json when there is a body, else none */
    const char *const *headers;  /* more "Name: value" lines, NULL-terminated; may be NULL */
    long timeout_ms;             /* the whole exchange; 0: 60 s */
    bool expect_continue;        /* send Expect: 100-continue and wait for it (curl's default past
                                    1 MiB); false: the body follows the headers at once */
} http_req;

typedef struct http_resp {
    long status; /* 0: no answer (refused, reset, or the client's timeout passed) */
    char *body;  /* NUL-terminated (len bytes before it), "" without a body; owned, http_resp_free */
    size_t len;
    char headers[8192]; /* the final answer's header lines, lower-cased (names and values) */
    /* The values (case kept, trimmed) of the headers tests look at; "" when absent. */
    char location[512];
    char retry_after[32];
    char content_type[128];
    char allow[128];
    int64_t elapsed_ms;
} http_resp;

/* One request to http://127.0.0.1:port (http_call) or to base_url ("http://host:port", no
 * trailing slash; http_call_url). r must be zeroed before its first use; it is reset (its old body
 * freed) by every call. Returns r->status. Any thread (libcurl is initialised once). */
long http_call(http_resp *r, int port, const http_req *q);
long http_call_url(http_resp *r, const char *base_url, const http_req *q);
/* Shorthands: GET path, and POST of a JSON body (token NULL: no Authorization). */
long http_get(http_resp *r, int port, const char *path, const char *token);
long http_post(http_resp *r, int port, const char *path, const char *token, const char *body);
/* Frees the body and zeroes r. */
void http_resp_free(http_resp *r);

/* The request id of a provisioning or action answer's Location (/api/provisioning/requests/<id>)
 * into out; 0, or -1 when there is none or it does not fit. Any thread. */
int http_request_id(const http_resp *r, char *out, size_t cap);

/* cmocka checks for the test's main thread (they fail the running test): */
/* the body parsed as JSON (a new reference; the body is printed when it is not JSON); */
json_t *http_assert_json(const http_resp *r);
/* an RFC 9457 problem of type TP_PROBLEM_TYPE_PREFIX + type (e.g. "not-found"); */
void http_assert_problem(const http_resp *r, const char *type);
/* http_request_id succeeded. */
void http_assert_request_id(const http_resp *r, char *out, size_t cap);

#endif
