/* e2e.h: end-to-end harness on the real stack: a scratch database, private topics (requests,
 * receipts, dlq) named for the test, a tp-worker child process configured for them, and helpers to
 * produce requests, query PostgreSQL and read topics. */
#ifndef TP_E2E_H
#define TP_E2E_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "support/pgtest.h"
#include "tp/codec.h"
#include "tp/config.h"
#include "tp/kafka.h"
#include "tp/request.h"
#include "tp/store.h"

#define E2E_MAX_WORKERS 4

typedef struct e2e {
    pgtest_db db;
    char suffix[40];
    char topic_requests[160], topic_receipts[160], topic_dlq[160], topic_checkpoints[160];
    char group[80];
    char config_path[256];
    char log_path[E2E_MAX_WORKERS][256];
    pid_t workers[E2E_MAX_WORKERS];
    tp_config *cfg;
    tp_codec *codec;
    tp_producer *producer;
    tp_db *conn;
} e2e;

/* Creates the database, the topics and the worker config (extra_config: more `key = value`
 * lines, may be NULL). Returns 0 or -1 (message on stderr). */
int e2e_setup(e2e *e, const char *name, const char *extra_config);
/* Kills remaining workers, drops the database, deletes the topics. */
void e2e_teardown(e2e *e);

/* Starts worker slot i (0..E2E_MAX_WORKERS-1); returns 0 or -1. */
int e2e_worker_start(e2e *e, int i);
/* Sends sig to worker i and waits up to timeout_ms; returns its exit status, 128+signal when
 * killed, or -1 on a timeout (then it is killed). *elapsed_ms may be NULL. */
int e2e_worker_stop(e2e *e, int i, int sig, int timeout_ms, int64_t *elapsed_ms);

/* A valid billing request: system actor, residency US, prod, a fresh UUID request id. */
void e2e_request_init(tp_request *req, const char *slug, tp_plan plan);
/* Encodes and produces req repeat times (partition -1: by key), waiting for PERSISTED. 0 or -1. */
int e2e_submit(e2e *e, const tp_request *req, int repeat, int partition);
/* Produces raw bytes (e.g. garbage) with key to partition (-1: by key). 0 or -1. */
int e2e_produce_raw(e2e *e, const void *buf, size_t len, const char *key, int partition);

/* One integer from a query (printf-style SQL built by the test itself); -1 on error. */
int64_t e2e_int(e2e *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* One text value into out; 0 or -1. */
int e2e_text(e2e *e, char *out, size_t cap, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* Polls the query until it returns want or timeout_s passes; returns the last value. */
int64_t e2e_wait_int(e2e *e, int64_t want, int timeout_s, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Reads topic from the beginning until expect records came or timeout_ms passed; calls fn for
 * each (may be NULL). Returns the number of records read. */
typedef void (*e2e_record_fn)(void *arg, const void *key, size_t key_len, const void *value,
                              size_t len, int32_t partition, int64_t offset);
int e2e_read_topic(e2e *e, const char *topic, int expect, int timeout_ms, e2e_record_fn fn, void *arg);

/* The sum of the worker group's committed offsets on the requests topic (offsets start at 0,
 * so this is the number of records consumed and finished); -1 on error. */
int64_t e2e_committed(e2e *e);
/* Polls e2e_committed until it equals want or timeout_s passes; returns the last value. */
int64_t e2e_wait_committed(e2e *e, int64_t want, int timeout_s);

/* Produces n encoded requests without waiting for each one, then waits for all. 0 or -1. */
int e2e_submit_batch(e2e *e, const tp_request *reqs, int n);

/* Serialises fault injection on the shared stack (stopping OPA or Kafka) between tests and
 * processes: an exclusive flock on /tmp/tp-stack-faults.lock. lock returns the fd to unlock. */
/* A loopback TCP port nobody listens on right now (for a daemon to bind a moment later). */
int e2e_free_port(void);
/* The stack lock: exclusive for tests that stop, freeze or restart shared services; shared (for the
 * whole process, taken by e2e_setup) for every other test of the stack. See e2e.c. */
int e2e_faults_lock(void);
void e2e_faults_unlock(int fd);
void e2e_stack_share(void);
/* Runs `scripts/stack VERB SVC` of the checkout that owns the stack: .stack may be a symlink to
 * another checkout's (a shared stack), whose services must come back serving that checkout's
 * policies and data paths, not this one's. Returns its exit status (and says which failed). */
int e2e_stack_cmd(const char *verb, const char *svc);

/* For a forked child about to exec a daemon with a test config: drops the TP_* variables of
 * .stack/env (scripts/test exports them), which would override the config's pg.dsn and topics and
 * point the child at the shared database. Also makes the child die with the test. */
void e2e_child_env_clear(void);

/* Encodes req and produces it to partition with one extra Kafka header; waits. 0 or -1. */
int e2e_submit_with_header(e2e *e, const tp_request *req, int partition, const char *name, const char *value);
/* Reads topic from the beginning (at most timeout_ms) and copies the value of the first header
 * called name found on any record into out. Returns 0, or -1 when none was seen. */
int e2e_topic_find_header(e2e *e, const char *topic, const char *name, char *out, size_t cap, int timeout_ms);

/* Runs a shell command from the repository root (scripts/stack stop opa, ...); returns its status. */
int e2e_sh(const char *cmd);

/* ---- added for the receipts tests ------------------------------------------------------------ */

/* Writes the path of a binary built next to this test (tpctl, tp-worker) into out; 0 or -1. */
int e2e_bin_path(const char *name, char *out, size_t cap);

/* Runs a shell command from the repository root with stdout and stderr captured into out
 * (NUL-terminated, truncated to cap - 1); returns its exit status, or -1. */
int e2e_run(char *out, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Creates / deletes an extra topic (e.g. a tampered copy); 0 or -1. */
int e2e_topic_create(const char *name, int partitions);
int e2e_topic_delete(const char *name);
/* Produces one record (value copied as is, no headers) to topic/partition (-1: by key) with an
 * idempotent producer and waits until it is PERSISTED; 0 or -1. */
int e2e_produce_to(const char *topic, const void *key, size_t key_len, const void *value, size_t len,
                   int partition);

/* As e2e_produce_to with one header (name = hvalue; name NULL: none), e.g. a copied leaf-index. */
int e2e_produce_to_with_header(const char *topic, const void *key, size_t key_len, const void *value,
                               size_t len, int partition, const char *name, const char *hvalue);

/* ---- added for the chaos run ----------------------------------------------------------------- */

/* Reads topic from the beginning and calls fn with the value of header name on each record (NULL
 * and 0 when it has none) until expect records came and linger_ms more passed (records past
 * expect, e.g. re-published copies, are read too), or timeout_ms passed. Returns the count. */
typedef void (*e2e_header_fn)(void *arg, const void *value, size_t len);
int e2e_read_topic_header(e2e *e, const char *topic, const char *name, int expect, int linger_ms,
                          int timeout_ms, e2e_header_fn fn, void *arg);

#endif
