/* e2e.c: the end-to-end harness (see e2e.h): real PostgreSQL, Kafka and OPA from .stack/env, a
 * tp-worker child per slot, private topics per test so tests never see each other's records. */
#include "support/e2e.h"
#include "tp/error.h"
#include "tp/ids.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <librdkafka/rdkafka.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static rd_kafka_t *admin_client(void) {
    char err[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", pgtest_env("TP_KAFKA_BOOTSTRAP"), err, sizeof(err));
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (!rk)
        fprintf(stderr, "e2e: kafka admin client: %s\n", err);
    return rk;
}

static int topics_admin(e2e *e, bool create) {
    const char *names[4] = {e->topic_requests, e->topic_receipts, e->topic_dlq, e->topic_checkpoints};
    const int parts[4] = {6, 6, 1, 1};
    rd_kafka_t *rk = admin_client();
    rd_kafka_queue_t *q;
    rd_kafka_event_t *ev;
    int rc = 0;
    if (!rk)
        return -1;
    q = rd_kafka_queue_new(rk);
    if (create) {
        rd_kafka_NewTopic_t *nt[4];
        char err[256];
        for (int i = 0; i < 4; i++)
            nt[i] = rd_kafka_NewTopic_new(names[i], parts[i], 1, err, sizeof(err));
        rd_kafka_CreateTopics(rk, nt, 4, NULL, q);
        rd_kafka_NewTopic_destroy_array(nt, 4);
    } else {
        rd_kafka_DeleteTopic_t *dt[4];
        for (int i = 0; i < 4; i++)
            dt[i] = rd_kafka_DeleteTopic_new(names[i]);
        rd_kafka_DeleteTopics(rk, dt, 4, NULL, q);
        rd_kafka_DeleteTopic_destroy_array(dt, 4);
    }
    ev = rd_kafka_queue_poll(q, 30000);
    if (!ev || rd_kafka_event_error(ev)) {
        fprintf(stderr, "e2e: topic admin: %s\n", ev ? rd_kafka_event_error_string(ev) : "timeout");
        rc = -1;
    } else if (create) {
        size_t n;
        const rd_kafka_topic_result_t **res = rd_kafka_CreateTopics_result_topics(
            rd_kafka_event_CreateTopics_result(ev), &n);
        for (size_t i = 0; i < n; i++) {
            if (rd_kafka_topic_result_error(res[i])) {
                fprintf(stderr, "e2e: create %s: %s\n", rd_kafka_topic_result_name(res[i]),
                        rd_kafka_topic_result_error_string(res[i]));
                rc = -1;
            }
        }
    }
    if (ev)
        rd_kafka_event_destroy(ev);
    rd_kafka_queue_destroy(q);
    rd_kafka_destroy(rk);
    return rc;
}

int e2e_setup(e2e *e, const char *name, const char *extra_config) {
    char err[512], uuid[TP_UUID_LEN + 1];
    FILE *f;
    memset(e, 0, sizeof(*e));
    e2e_stack_share();
    if (!pgtest_env("TP_KAFKA_BOOTSTRAP") || !pgtest_env("TP_PG_DSN") || !pgtest_env("TP_OPA_URL")) {
        fprintf(stderr, "e2e: TP_KAFKA_BOOTSTRAP, TP_PG_DSN and TP_OPA_URL are needed: scripts/stack up\n");
        return -1;
    }
    tp_uuid_v4(uuid);
    snprintf(e->suffix, sizeof(e->suffix), "%.8s", uuid);
    snprintf(e->topic_requests, sizeof(e->topic_requests), "t.%s.%s.requests", name, e->suffix);
    snprintf(e->topic_receipts, sizeof(e->topic_receipts), "t.%s.%s.receipts", name, e->suffix);
    snprintf(e->topic_dlq, sizeof(e->topic_dlq), "t.%s.%s.dlq", name, e->suffix);
    snprintf(e->topic_checkpoints, sizeof(e->topic_checkpoints), "t.%s.%s.checkpoints", name, e->suffix);
    snprintf(e->group, sizeof(e->group), "t-%s-%s", name, e->suffix);
    snprintf(e->config_path, sizeof(e->config_path), "/tmp/tp-e2e-%s-%s.conf", name, e->suffix);
    for (int i = 0; i < E2E_MAX_WORKERS; i++)
        snprintf(e->log_path[i], sizeof(e->log_path[i]), "/tmp/tp-e2e-%s-%s.worker%d.log", name, e->suffix, i);
    if (pgtest_create_migrated(&e->db) != 0 || topics_admin(e, true) != 0)
        return -1;
    f = fopen(e->config_path, "w");
    if (!f)
        return -1;
    /* Several workers per test, and tests side by side: each /metrics endpoint on a free port
     * (a test that scrapes sets its own). Retry budget: 80 attempts of full-jitter backoff capped at 1 s is ~38 s on average, far past
     * the ~12 s OPA outage of test_opa_down_then_back (30 attempts, ~13 s, was a coin toss). */
    fprintf(f,
            "kafka.bootstrap.servers = %s\npg.dsn = %s\nopa.url = %s\nopa.timeout_ms = 1000\n"
            "topic.requests = %s\ntopic.receipts = %s\ntopic.dlq = %s\ntopic.checkpoints = %s\n"
            "worker.group_id = %s\ntlog.checkpoint_interval_ms = 200\n"
            "retry.initial_ms = 100\nretry.cap_ms = 1000\nretry.max_attempts = 80\n"
            "worker.shutdown_grace_ms = 15000\noutbox.retry_max_ms = 1000\n"
            "receipts.signing_key_file = .stack/keys/receipts.key\n"
            "receipts.keyset_file = .stack/keys/receipts.keyset\n"
            "worker.http_listen = 127.0.0.1:0\n%s\n",
            pgtest_env("TP_KAFKA_BOOTSTRAP"), e->db.dsn, pgtest_env("TP_OPA_URL"), e->topic_requests,
            e->topic_receipts, e->topic_dlq, e->topic_checkpoints, e->group,
            extra_config ? extra_config : "");
    fclose(f);
    e->cfg = tp_config_new();
    if (!e->cfg || tp_config_load_file(e->cfg, e->config_path, err, sizeof(err)) != 0) {
        fprintf(stderr, "e2e: config: %s\n", err);
        return -1;
    }
    e->codec = tp_codec_new("schemas/avro", "", err, sizeof(err));
    if (!e->codec || tp_producer_new(e->cfg, &e->producer, err, sizeof(err)) != 0 ||
        tp_db_connect(e->db.dsn, &e->conn, err, sizeof(err)) != 0) {
        fprintf(stderr, "e2e: %s\n", err);
        return -1;
    }
    return 0;
}

void e2e_teardown(e2e *e) {
    for (int i = 0; i < E2E_MAX_WORKERS; i++)
        if (e->workers[i] > 0)
            e2e_worker_stop(e, i, SIGKILL, 5000, NULL);
    tp_db_close(e->conn);
    tp_producer_free(e->producer, 5000);
    tp_codec_free(e->codec);
    tp_config_free(e->cfg);
    if (e->db.name[0])
        pgtest_drop(&e->db);
    if (e->topic_requests[0])
        topics_admin(e, false);
    unlink(e->config_path);
}

/* The test's config file is authoritative (see e2e.h). */
void e2e_child_env_clear(void) {
    static const char *const names[] = {"TP_PG_DSN", "TP_KAFKA_BOOTSTRAP", "TP_KAFKA_BOOTSTRAP_SERVERS",
                                        "TP_OPA_URL", "TP_TOPIC_REQUESTS", "TP_TOPIC_RECEIPTS", "TP_TOPIC_DLQ"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        unsetenv(names[i]);
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive a crashed test */
}

int e2e_worker_start(e2e *e, int i) {
    char exe[1024], dir[1024];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    pid_t pid;
    if (n <= 0)
        return -1;
    exe[n] = '\0';
    snprintf(dir, sizeof(dir), "%s", dirname(exe));
    snprintf(exe, sizeof(exe), "%s/tp-worker", dir);
    pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        FILE *log = freopen(e->log_path[i], "a", stderr);
        (void)log;
        dup2(STDERR_FILENO, STDOUT_FILENO);
        e2e_child_env_clear();
        execl(exe, "tp-worker", "--config", e->config_path, (char *)NULL);
        _exit(127);
    }
    e->workers[i] = pid;
    return 0;
}

int e2e_worker_stop(e2e *e, int i, int sig, int timeout_ms, int64_t *elapsed_ms) {
    int64_t start = now_ms();
    int status;
    pid_t pid = e->workers[i];
    if (pid <= 0)
        return -1;
    kill(pid, sig);
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            break;
        if (now_ms() - start > timeout_ms) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            e->workers[i] = 0;
            if (elapsed_ms)
                *elapsed_ms = now_ms() - start;
            return -1;
        }
        usleep(20000);
    }
    e->workers[i] = 0;
    if (elapsed_ms)
        *elapsed_ms = now_ms() - start;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

void e2e_request_init(tp_request *req, const char *slug, tp_plan plan) {
    memset(req, 0, sizeof(*req));
    tp_uuid_v4(req->request_id);
    req->source = TP_SOURCE_BILLING;
    snprintf(req->actor.id, sizeof(req->actor.id), "billing-e2e");
    snprintf(req->actor.type, sizeof(req->actor.type), "system");
    snprintf(req->tenant.name, sizeof(req->tenant.name), "Tenant %s", slug);
    snprintf(req->tenant.slug, sizeof(req->tenant.slug), "%s", slug);
    req->tenant.residency = TP_RESIDENCY_US;
    req->plan = plan;
    req->environment = TP_ENV_PROD;
    req->submitted_at_ms = (int64_t)time(NULL) * 1000;
}

typedef struct sent_state {
    int ok, failed;
} sent_state;

static void on_sent(void *opaque, int err, int32_t partition, int64_t offset) {
    sent_state *s = opaque;
    (void)partition;
    (void)offset;
    if (err)
        s->failed++;
    else
        s->ok++;
}

/* Produces through librdkafka directly when a partition is forced (tp_producer partitions by key). */
static void on_persisted(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque) {
    (void)rk;
    (void)opaque;
    if (!msg->err && rd_kafka_message_status(msg) == RD_KAFKA_MSG_STATUS_PERSISTED)
        (*(int *)msg->_private)++;
}

/* Produces one record with a throwaway idempotent producer (partition -1: by key, murmur2 like
 * ours; header_name may be NULL) and waits until the broker reports it PERSISTED. 0 or -1. */
static int produce_one(const char *topic, const void *key, size_t key_len, const void *value, size_t len,
                       int partition, const char *header_name, const char *header_value) {
    char err[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_headers_t *hdrs = rd_kafka_headers_new(1);
    rd_kafka_t *rk;
    int persisted = 0, rc = 0;
    rd_kafka_conf_set(conf, "bootstrap.servers", pgtest_env("TP_KAFKA_BOOTSTRAP"), err, sizeof(err));
    rd_kafka_conf_set(conf, "enable.idempotence", "true", err, sizeof(err));
    rd_kafka_conf_set(conf, "partitioner", "murmur2_random", err, sizeof(err));
    rd_kafka_conf_set_dr_msg_cb(conf, on_persisted);
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (!rk) {
        rd_kafka_headers_destroy(hdrs);
        return -1;
    }
    if (header_name)
        rd_kafka_header_add(hdrs, header_name, -1, header_value, -1);
    if (rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic),
                          RD_KAFKA_V_PARTITION(partition < 0 ? RD_KAFKA_PARTITION_UA : partition),
                          RD_KAFKA_V_KEY(key, key_len), RD_KAFKA_V_VALUE((void *)value, len),
                          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_OPAQUE(&persisted),
                          RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_END) != 0) {
        rd_kafka_headers_destroy(hdrs); /* librdkafka owns them only on success */
        rc = -1;
    } else if (rd_kafka_flush(rk, 30000) != 0 || persisted != 1) {
        rc = -1;
    }
    rd_kafka_destroy(rk);
    return rc;
}

int e2e_produce_raw(e2e *e, const void *buf, size_t len, const char *key, int partition) {
    sent_state s = {0, 0};
    if (partition >= 0)
        return produce_one(e->topic_requests, key, key ? strlen(key) : 0, buf, len, partition, NULL, NULL);
    if (tp_producer_send(e->producer, e->topic_requests, key, key ? strlen(key) : 0, buf, len, NULL, 0,
                         on_sent, &s) != 0 ||
        tp_producer_flush(e->producer, 30000) != 0 || s.ok != 1)
        return -1;
    return 0;
}

int e2e_submit(e2e *e, const tp_request *req, int repeat, int partition) {
    unsigned char *buf = NULL;
    size_t len = 0;
    int rc = 0;
    if (tp_codec_encode_request(e->codec, req, &buf, &len) != 0)
        return -1;
    for (int i = 0; i < repeat && rc == 0; i++)
        rc = e2e_produce_raw(e, buf, len, req->tenant.slug, partition);
    free(buf);
    return rc;
}

static int64_t vquery_int(e2e *e, const char *fmt, va_list ap) {
    char sql[4096];
    int64_t v = -1;
    vsnprintf(sql, sizeof(sql), fmt, ap);
    if (pgtest_query_int(e->conn, sql, &v) != 0)
        return -1;
    return v;
}

int64_t e2e_int(e2e *e, const char *fmt, ...) {
    va_list ap;
    int64_t v;
    va_start(ap, fmt);
    v = vquery_int(e, fmt, ap);
    va_end(ap);
    return v;
}

int e2e_text(e2e *e, char *out, size_t cap, const char *fmt, ...) {
    char sql[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof(sql), fmt, ap);
    va_end(ap);
    return pgtest_query_text(e->conn, sql, out, cap) == 0 ? 0 : -1;
}

int64_t e2e_wait_int(e2e *e, int64_t want, int timeout_s, const char *fmt, ...) {
    int64_t deadline = now_ms() + (int64_t)timeout_s * 1000, v = -1;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        v = vquery_int(e, fmt, ap);
        va_end(ap);
        if (v == want || now_ms() > deadline)
            return v;
        usleep(200000);
    }
}

/* A consumer in a group of its own (tag names it) subscribed to topic from the beginning, committing
 * nothing; NULL on error. */
static rd_kafka_t *topic_reader_new(e2e *e, const char *topic, const char *tag) {
    char err[256], group[160];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_topic_partition_list_t *subs;
    rd_kafka_t *rk;
    snprintf(group, sizeof(group), "%s-%s-%d", e->group, tag, rand());
    rd_kafka_conf_set(conf, "bootstrap.servers", pgtest_env("TP_KAFKA_BOOTSTRAP"), err, sizeof(err));
    rd_kafka_conf_set(conf, "group.id", group, err, sizeof(err));
    rd_kafka_conf_set(conf, "auto.offset.reset", "earliest", err, sizeof(err));
    rd_kafka_conf_set(conf, "enable.auto.commit", "false", err, sizeof(err));
    rd_kafka_conf_set(conf, "partition.assignment.strategy", "roundrobin", err, sizeof(err));
    rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    if (!rk)
        return NULL;
    rd_kafka_poll_set_consumer(rk);
    subs = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(subs, topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_subscribe(rk, subs);
    rd_kafka_topic_partition_list_destroy(subs);
    return rk;
}

static void topic_reader_free(rd_kafka_t *rk) {
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
}

int e2e_read_topic(e2e *e, const char *topic, int expect, int timeout_ms, e2e_record_fn fn, void *arg) {
    rd_kafka_t *rk = topic_reader_new(e, topic, "reader");
    int64_t deadline = now_ms() + timeout_ms;
    int n = 0;
    if (!rk)
        return -1;
    while (now_ms() < deadline && (expect < 0 || n < expect)) {
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(rk, 100);
        if (!msg)
            continue;
        if (!msg->err) {
            n++;
            if (fn)
                fn(arg, msg->key, msg->key_len, msg->payload, msg->len, msg->partition, msg->offset);
        }
        rd_kafka_message_destroy(msg);
    }
    topic_reader_free(rk);
    return n;
}

int e2e_sh(const char *cmd) {
    char full[4096];
    int rc;
    /* Same reason as clear_stack_env: commands given --config must not be redirected by TP_*. */
    snprintf(full, sizeof(full),
             "env -u TP_PG_DSN -u TP_KAFKA_BOOTSTRAP -u TP_KAFKA_BOOTSTRAP_SERVERS -u TP_OPA_URL sh -c '%s'", cmd);
    rc = system(strchr(cmd, '\'') ? cmd : full);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

int64_t e2e_committed(e2e *e) {
    char err[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_t *rk;
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(6);
    int64_t sum = 0;
    rd_kafka_conf_set(conf, "bootstrap.servers", pgtest_env("TP_KAFKA_BOOTSTRAP"), err, sizeof(err));
    rd_kafka_conf_set(conf, "group.id", e->group, err, sizeof(err));
    rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    if (!rk) {
        rd_kafka_topic_partition_list_destroy(parts);
        return -1;
    }
    for (int i = 0; i < 6; i++)
        rd_kafka_topic_partition_list_add(parts, e->topic_requests, i);
    if (rd_kafka_committed(rk, parts, 10000) != RD_KAFKA_RESP_ERR_NO_ERROR)
        sum = -1;
    for (int i = 0; sum >= 0 && i < parts->cnt; i++)
        if (parts->elems[i].offset > 0)
            sum += parts->elems[i].offset;
    rd_kafka_topic_partition_list_destroy(parts);
    rd_kafka_destroy(rk);
    return sum;
}

int64_t e2e_wait_committed(e2e *e, int64_t want, int timeout_s) {
    int64_t deadline = now_ms() + (int64_t)timeout_s * 1000, v;
    while ((v = e2e_committed(e)) != want && now_ms() < deadline)
        usleep(250000);
    return v;
}

int e2e_submit_batch(e2e *e, const tp_request *reqs, int n) {
    sent_state s = {0, 0};
    for (int i = 0; i < n; i++) {
        unsigned char *buf = NULL;
        size_t len = 0;
        int rc;
        if (tp_codec_encode_request(e->codec, &reqs[i], &buf, &len) != 0)
            return -1;
        while ((rc = tp_producer_send(e->producer, e->topic_requests, reqs[i].tenant.slug,
                                      strlen(reqs[i].tenant.slug), buf, len, NULL, 0, on_sent, &s)) == TP_EKAFKA)
            tp_producer_poll(e->producer, 50);
        free(buf);
        if (rc != 0)
            return -1;
        tp_producer_poll(e->producer, 0);
    }
    if (tp_producer_flush(e->producer, 60000) != 0 || s.ok != n) {
        fprintf(stderr, "e2e: %d of %d records persisted\n", s.ok, n);
        return -1;
    }
    return 0;
}

int e2e_free_port(void) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

/* The stack lock (/tmp/tp-stack-faults.lock): tests that stop, freeze or restart shared services
 * hold it exclusively (e2e_faults_lock); every other test that uses the stack holds it shared for
 * its whole process (e2e_stack_share, called by e2e_setup), so a broker restarted by a fault test
 * never fails an unrelated test run at the same time by someone else on the same stack. One
 * process holds at most one of the two at a time: taking the exclusive lock drops the shared one
 * first (two fault tests never wait on each other's shared lock), and unlocking takes it back. */
static int share_fd = -1;   /* open while this process wants the shared lock */
static int faults_held = 0; /* this process holds the exclusive lock */

static int lock_file_open(void) {
    /* O_CLOEXEC: `scripts/stack start kafka` under the lock must not hand it to the broker, which
     * would hold it for good if this test died before unlocking (it did, under TSan). */
    return open("/tmp/tp-stack-faults.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0666);
}

void e2e_stack_share(void) {
    if (share_fd >= 0)
        return;
    share_fd = lock_file_open();
    if (share_fd >= 0 && !faults_held && flock(share_fd, LOCK_SH | LOCK_NB) != 0) {
        fprintf(stderr, "e2e: waiting for /tmp/tp-stack-faults.lock (a fault test or scripts/bench "
                        "holds the stack)\n");
        flock(share_fd, LOCK_SH);
    }
}

int e2e_faults_lock(void) {
    int fd = lock_file_open();
    if (share_fd >= 0)
        flock(share_fd, LOCK_UN);
    if (fd >= 0)
        flock(fd, LOCK_EX);
    faults_held = 1;
    return fd;
}

void e2e_faults_unlock(int fd) {
    if (fd >= 0) {
        flock(fd, LOCK_UN);
        close(fd);
    }
    faults_held = 0;
    if (share_fd >= 0)
        flock(share_fd, LOCK_SH);
}

int e2e_stack_cmd(const char *verb, const char *svc) {
    char real[PATH_MAX], cmd[PATH_MAX + 64];
    int rc;
    if (!realpath(".stack", real))
        snprintf(real, sizeof(real), "%s", ".stack");
    snprintf(cmd, sizeof(cmd), "%s/scripts/stack %s %s >/dev/null", dirname(real), verb, svc);
    rc = e2e_sh(cmd);
    if (rc != 0)
        fprintf(stderr, "e2e: `%s` failed\n", cmd);
    return rc;
}

/* ---- added for the receipts tests ------------------------------------------------------------ */

int e2e_bin_path(const char *name, char *out, size_t cap) {
    char exe[1024];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n <= 0)
        return -1;
    exe[n] = '\0';
    return snprintf(out, cap, "%s/%s", dirname(exe), name) < (int)cap ? 0 : -1;
}

int e2e_run(char *out, size_t cap, const char *fmt, ...) {
    char cmd[4096];
    va_list ap;
    FILE *p;
    size_t len = 0;
    int status;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd) - 8, fmt, ap);
    va_end(ap);
    strcat(cmd, " 2>&1");
    out[0] = '\0';
    p = popen(cmd, "r");
    if (!p)
        return -1;
    for (;;) {
        char buf[4096];
        size_t n = fread(buf, 1, sizeof(buf), p);
        if (n == 0)
            break;
        if (len + 1 < cap) {
            size_t take = n < cap - 1 - len ? n : cap - 1 - len;
            memcpy(out + len, buf, take);
            len += take;
        }
    }
    out[len] = '\0';
    status = pclose(p);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int one_topic_admin(const char *name, int partitions) {
    rd_kafka_t *rk = admin_client();
    rd_kafka_queue_t *q;
    rd_kafka_event_t *ev;
    char err[256];
    int rc = 0;
    if (!rk)
        return -1;
    q = rd_kafka_queue_new(rk);
    if (partitions > 0) {
        rd_kafka_NewTopic_t *nt = rd_kafka_NewTopic_new(name, partitions, 1, err, sizeof(err));
        rd_kafka_CreateTopics(rk, &nt, 1, NULL, q);
        rd_kafka_NewTopic_destroy(nt);
    } else {
        rd_kafka_DeleteTopic_t *dt = rd_kafka_DeleteTopic_new(name);
        rd_kafka_DeleteTopics(rk, &dt, 1, NULL, q);
        rd_kafka_DeleteTopic_destroy(dt);
    }
    ev = rd_kafka_queue_poll(q, 30000);
    if (!ev || rd_kafka_event_error(ev)) {
        fprintf(stderr, "e2e: topic %s: %s\n", name, ev ? rd_kafka_event_error_string(ev) : "timeout");
        rc = -1;
    } else if (partitions > 0) {
        size_t n;
        const rd_kafka_topic_result_t **res =
            rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &n);
        for (size_t i = 0; i < n; i++)
            if (rd_kafka_topic_result_error(res[i])) {
                fprintf(stderr, "e2e: create %s: %s\n", name, rd_kafka_topic_result_error_string(res[i]));
                rc = -1;
            }
    }
    if (ev)
        rd_kafka_event_destroy(ev);
    rd_kafka_queue_destroy(q);
    rd_kafka_destroy(rk);
    return rc;
}

int e2e_topic_create(const char *name, int partitions) {
    return one_topic_admin(name, partitions > 0 ? partitions : 1);
}

int e2e_topic_delete(const char *name) { return one_topic_admin(name, 0); }

int e2e_produce_to(const char *topic, const void *key, size_t key_len, const void *value, size_t len,
                   int partition) {
    return produce_one(topic, key, key_len, value, len, partition, NULL, NULL);
}

int e2e_produce_to_with_header(const char *topic, const void *key, size_t key_len, const void *value,
                               size_t len, int partition, const char *name, const char *hvalue) {
    return produce_one(topic, key, key_len, value, len, partition, name, hvalue);
}

int e2e_submit_with_header(e2e *e, const tp_request *req, int partition, const char *name, const char *value) {
    unsigned char *buf = NULL;
    size_t len = 0;
    int rc;
    if (tp_codec_encode_request(e->codec, req, &buf, &len) != 0)
        return -1;
    rc = produce_one(e->topic_requests, req->tenant.slug, strlen(req->tenant.slug), buf, len, partition,
                     name, value);
    free(buf);
    return rc;
}

int e2e_topic_find_header(e2e *e, const char *topic, const char *name, char *out, size_t cap, int timeout_ms) {
    rd_kafka_t *rk = topic_reader_new(e, topic, "hdr");
    int64_t deadline = now_ms() + timeout_ms;
    int found = -1;
    if (!rk)
        return -1;
    while (found != 0 && now_ms() < deadline) {
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(rk, 100);
        rd_kafka_headers_t *hdrs = NULL;
        const void *val;
        size_t len;
        if (!msg)
            continue;
        if (!msg->err && rd_kafka_message_headers(msg, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR &&
            rd_kafka_header_get_last(hdrs, name, &val, &len) == RD_KAFKA_RESP_ERR_NO_ERROR && len < cap) {
            memcpy(out, val, len);
            out[len] = '\0';
            found = 0;
        }
        rd_kafka_message_destroy(msg);
    }
    topic_reader_free(rk);
    return found;
}

/* ---- added for the chaos run ----------------------------------------------------------------- */

int e2e_read_topic_header(e2e *e, const char *topic, const char *name, int expect, int linger_ms,
                          int timeout_ms, e2e_header_fn fn, void *arg) {
    rd_kafka_t *rk = topic_reader_new(e, topic, "hdrs");
    int64_t deadline = now_ms() + timeout_ms, reached = -1;
    int n = 0;
    if (!rk)
        return -1;
    while (now_ms() < deadline && (reached < 0 || now_ms() - reached < linger_ms)) {
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(rk, 100);
        rd_kafka_headers_t *hdrs = NULL;
        const void *val = NULL;
        size_t len = 0;
        if (!msg)
            continue;
        if (!msg->err) {
            n++;
            if (rd_kafka_message_headers(msg, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR ||
                rd_kafka_header_get_last(hdrs, name, &val, &len) != RD_KAFKA_RESP_ERR_NO_ERROR)
                val = NULL, len = 0;
            if (fn)
                fn(arg, val, len);
            if (n >= expect && reached < 0)
                reached = now_ms();
        }
        rd_kafka_message_destroy(msg);
    }
    topic_reader_free(rk);
    return n;
}
