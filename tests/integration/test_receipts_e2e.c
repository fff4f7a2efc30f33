/* test_receipts_e2e: provenance receipts end to end on the real stack (issue 4's must-shows): the
 * topic after the happy path, tampered copies caught by `tpctl receipts verify`, a 20 s broker
 * outage, kill -9 during relaying, and race-free sequences with two workers whose relays share
 * the publishing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "support/e2e.h"
#include "tp/codec.h"
#include "tp/error.h"
#include "tp/receipts.h"
#include "tp/receipts_reader.h"

#include <fcntl.h>
#include <signal.h>
#include <sodium.h>
#include <sys/file.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define KEYSET ".stack/keys/receipts.keyset"
#define OUT_CAP (1 << 20)

typedef struct rstate {
    e2e e;
    int lock_fd;
    bool kafka_stopped;
    char extra_topic[8][200];
    int n_extra;
    char *out;             /* captured output of tpctl runs */
    struct recs *rs;       /* records read back, freed in teardown (assertions longjmp) */
} rstate;

static void recs_free(struct recs *rs);
static int log_count(const char *path, const char *needle);

static int64_t wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Tests that need a healthy stack hold the fault lock shared, so that they wait out someone
 * else's outage instead of failing in it; the Kafka outage test takes it exclusively. */
static int shared_fault_lock(void) {
    int fd = open("/tmp/tp-stack-faults.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (fd >= 0)
        flock(fd, LOCK_SH);
    return fd;
}

static int setup_with_config(void **state, bool healthy_stack, const char *extra_config) {
    rstate *s = calloc(1, sizeof(*s));
    const char *name = *state ? *state : "rcpt";
    if (!s)
        return -1;
    s->lock_fd = healthy_stack ? shared_fault_lock() : -1;
    s->out = malloc(OUT_CAP);
    if (!s->out || e2e_setup(&s->e, name, extra_config) != 0) {
        e2e_teardown(&s->e);
        if (s->lock_fd >= 0)
            e2e_faults_unlock(s->lock_fd);
        free(s->out);
        free(s);
        return -1;
    }
    /* The workers and tpctl must use this test's config file: TP_* variables exported by the
     * caller's shell would override it (and point them at the shared database). The harness
     * reads .stack/env itself. */
    unsetenv("TP_PG_DSN");
    unsetenv("TP_KAFKA_BOOTSTRAP");
    unsetenv("TP_OPA_URL");
    *state = s;
    return 0;
}

static int setup_with(void **state, bool healthy_stack) { return setup_with_config(state, healthy_stack, NULL); }

static int setup(void **state) { return setup_with(state, true); }
/* Workers that mark a delivered receipt only 10 minutes after its ack: a kill lands between the
 * two for sure. */
static int setup_mark_delay(void **state) { return setup_with_config(state, true, "outbox.mark_delay_ms = 600000"); }
static int setup_outage(void **state) { return setup_with(state, false); }
/* Workers that take 64 requests at a time (the default was 64 until it became 512): the kill -9
 * test must catch the relay mid-run, and at 512 a worker published all 3,600 receipts before the
 * third kill. */
static int setup_kill9(void **state) { return setup_with_config(state, true, "worker.inflight_max = 64"); }

static int teardown(void **state) {
    rstate *s = *state;
    if (s->kafka_stopped) { /* an assertion failed mid-outage: always bring Kafka back */
        e2e_stack_cmd("start", "kafka");
        s->kafka_stopped = false;
    }
    for (int i = 0; i < s->n_extra; i++)
        e2e_topic_delete(s->extra_topic[i]);
    for (int i = 0; i < E2E_MAX_WORKERS; i++)
        if (s->e.workers[i] > 0) {
            int st = e2e_worker_stop(&s->e, i, SIGTERM, 20000, NULL);
            if (st != 0)
                fprintf(stderr, "worker %d exit status %d (log %s)\n", i, st, s->e.log_path[i]);
        }
    e2e_teardown(&s->e);
    if (s->lock_fd >= 0)
        e2e_faults_unlock(s->lock_fd);
    if (s->rs) {
        recs_free(s->rs);
        free(s->rs);
    }
    free(s->out);
    free(s);
    return 0;
}

static void make_batch(e2e *e, tp_request *reqs, int n, const char *prefix) {
    for (int i = 0; i < n; i++) {
        char slug[64];
        snprintf(slug, sizeof(slug), "%s-%s-%d", prefix, e->suffix, i);
        e2e_request_init(&reqs[i], slug, (tp_plan)(i % 4));
    }
}

/* Runs `tpctl receipts verify` on topic as a child process; returns its exit status, out gets
 * its stdout and stderr. */
static int run_verify(e2e *e, const char *topic, char *out, int expect) {
    char tpctl[1024];
    int64_t t0 = wall_ms();
    int rc;
    assert_int_equal(e2e_bin_path("tpctl", tpctl, sizeof(tpctl)), 0);
    rc = e2e_run(out, OUT_CAP, "%s receipts --config %s verify --topic %s --keyset " KEYSET, tpctl,
                 e->config_path, topic);
    fprintf(stderr, "tpctl receipts verify %s: exit %d in %lld ms\n", topic, rc, (long long)(wall_ms() - t0));
    if (getenv("TP_TEST_VERBOSE") || rc != expect)
        fprintf(stderr, "%s", out);
    return rc;
}

/* ---- reading the topic back ------------------------------------------------------------------ */

typedef struct rec {
    tp_receipt_record d;      /* decoded */
    unsigned char *raw;       /* the record value as read */
    size_t raw_len;
    char key[128];
    char leaf_index[24];      /* the leaf-index header ("" when none), kept by the copies */
    int32_t partition;
} rec;

typedef struct recs {
    e2e *e;
    rec *v;
    size_t n, cap;
    size_t undecodable;
} recs;

static int collect(void *arg, const tp_topic_record *r) {
    recs *rs = arg;
    rec *x;
    char err[256];
    if (rs->n == rs->cap) {
        rec *bigger = realloc(rs->v, (rs->cap ? rs->cap * 2 : 64) * sizeof(*bigger));
        if (!bigger)
            return TP_ENOMEM;
        rs->v = bigger;
        rs->cap = rs->cap ? rs->cap * 2 : 64;
    }
    x = &rs->v[rs->n];
    memset(x, 0, sizeof(*x));
    if (!r->value || tp_codec_decode_receipt(rs->e->codec, r->value, r->len, &x->d, err, sizeof(err)) != 0) {
        tp_receipt_record_release(&x->d);
        rs->undecodable++;
        return 0;
    }
    x->raw = malloc(r->len);
    if (!x->raw)
        return TP_ENOMEM;
    memcpy(x->raw, r->value, r->len);
    x->raw_len = r->len;
    snprintf(x->key, sizeof(x->key), "%.*s", (int)r->key_len, r->key ? (const char *)r->key : "");
    {
        const void *hv;
        size_t hl;
        if (tp_topic_record_header(r, "leaf-index", &hv, &hl) == 0 && hl < sizeof(x->leaf_index))
            snprintf(x->leaf_index, sizeof(x->leaf_index), "%.*s", (int)hl, (const char *)hv);
    }
    x->partition = r->partition;
    rs->n++;
    return 0;
}

/* Reads topic into s->rs (replacing what was there). */
static recs *recs_read(rstate *s, const char *topic) {
    e2e *e = &s->e;
    char err[256] = "";
    recs *rs;
    if (s->rs) {
        recs_free(s->rs);
        free(s->rs);
    }
    s->rs = rs = calloc(1, sizeof(*rs));
    assert_non_null(rs);
    rs->e = e;
    int rc = tp_topic_read(e->cfg, topic, NULL, collect, rs, err, sizeof(err));
    if (rc != 0)
        fprintf(stderr, "reading %s: %s\n", topic, err);
    assert_int_equal(rc, 0);
    return rs;
}

static void recs_free(struct recs *rs) {
    for (size_t i = 0; i < rs->n; i++) {
        tp_receipt_record_release(&rs->v[i].d);
        free(rs->v[i].raw);
    }
    free(rs->v);
    memset(rs, 0, sizeof(*rs));
}

/* Index of the record of tenant with sequence seq (first occurrence), or -1. */
static int recs_find(const recs *rs, const char *tenant, int64_t seq) {
    for (size_t i = 0; i < rs->n; i++)
        if (strcmp(rs->v[i].d.tenant_id, tenant) == 0 && rs->v[i].d.sequence == seq)
            return (int)i;
    return -1;
}

/* Every outbox row is on the topic at least once, under its own id, and nothing else is: no
 * (tenant, sequence) under two receipt ids, no receipt id with two contents. Returns the number of
 * duplicate records (re-publishes). */
static size_t assert_topic_matches_outbox(e2e *e, const recs *rs) {
    int64_t rows = e2e_int(e, "SELECT count(*) FROM receipt_outbox");
    size_t dups = 0;
    for (size_t i = 0; i < rs->n; i++) {
        const tp_receipt_record *d = &rs->v[i].d;
        bool seen_before = false;
        /* The record is exactly the outbox row with that id. */
        assert_int_equal(e2e_int(e, "SELECT count(*) FROM receipt_outbox WHERE receipt_id = '%s' AND tenant_id = '%s' "
                                    "AND sequence = %lld AND hash = '%s' AND action_type = '%s'",
                                 d->receipt_id, d->tenant_id, (long long)d->sequence, d->hash, d->action_type), 1);
        assert_string_equal(rs->v[i].key, d->tenant_id);
        for (size_t j = 0; j < i; j++) {
            const tp_receipt_record *o = &rs->v[j].d;
            if (strcmp(o->tenant_id, d->tenant_id) == 0 && o->sequence == d->sequence) {
                assert_string_equal(o->receipt_id, d->receipt_id); /* never under two ids */
                assert_int_equal(o->payload_len, d->payload_len);
                assert_memory_equal(o->payload, d->payload, d->payload_len);
                seen_before = true;
                break;
            }
        }
        dups += seen_before;
    }
    assert_int_equal((int64_t)(rs->n - dups), rows); /* every row published at least once */
    return dups;
}

/* ---- 1. the happy path --------------------------------------------------------------------------- */

static void test_happy_path_topic(void **state) {
    rstate *s = *state;
    e2e *e = &s->e;
    enum { N = 4 };
    static const char *const actions[3] = {"TENANT_PROVISIONED", "TENANT_QUOTA_ASSIGNED",
                                           "TENANT_ISOLATION_VERIFIED"};
    tp_request reqs[N];
    recs *rs;
    char *out = s->out, tpctl[1024];
    make_batch(e, reqs, N, "happy");
    assert_int_equal(e2e_worker_start(e, 0), 0);
    assert_int_equal(e2e_submit_batch(e, reqs, N), 0);
    assert_int_equal(e2e_wait_int(e, N, 60, "SELECT count(*) FROM provisioning_requests WHERE state = 'SUCCEEDED'"), N);
    assert_int_equal(e2e_wait_int(e, 3 * N, 60, "SELECT count(*) FROM receipt_outbox WHERE published_at IS NOT NULL"), 3 * N);

    rs = recs_read(s, e->topic_receipts);
    assert_int_equal(rs->undecodable, 0);
    assert_int_equal(rs->n, 3 * N);
    for (int i = 0; i < N; i++) {
        char tenant[128];
        int last = -1;
        assert_int_equal(e2e_text(e, tenant, sizeof(tenant), "SELECT id FROM tenants WHERE slug = '%s'", reqs[i].tenant.slug), 0);
        for (int seq = 1; seq <= 3; seq++) {
            int at = recs_find(rs, tenant, seq);
            assert_true(at > last); /* in topic order */
            last = at;
            assert_string_equal(rs->v[at].d.action_type, actions[seq - 1]);
            assert_string_equal(rs->v[at].d.request_id, reqs[i].request_id);
            assert_string_equal(rs->v[at].key, tenant);
            assert_string_equal(rs->v[at].d.previous_hash,
                                seq == 1 ? TP_RECEIPT_ZERO_HASH : rs->v[recs_find(rs, tenant, seq - 1)].d.hash);
        }
    }
    assert_int_equal(assert_topic_matches_outbox(e, rs), 0);

    assert_int_equal(run_verify(e, e->topic_receipts, out, 0), 0);
    assert_non_null(strstr(out, "tenants: 4\n"));
    assert_non_null(strstr(out, "receipts: 12\n"));
    assert_non_null(strstr(out, "duplicates: 0\n"));
    assert_non_null(strstr(out, "errors: 0\n"));
    assert_non_null(strstr(out, "result: OK\n"));

    /* tail prints the same twelve receipts as JSON lines, and its output verifies as a file. */
    assert_int_equal(e2e_bin_path("tpctl", tpctl, sizeof(tpctl)), 0);
    {
        char path[300];
        int lines = 0;
        snprintf(path, sizeof(path), "/tmp/tp-e2e-receipts-%s.jsonl", e->suffix);
        assert_int_equal(e2e_run(out, OUT_CAP, "%s receipts --config %s tail --topic %s > %s", tpctl,
                                 e->config_path, e->topic_receipts, path), 0);
        assert_int_equal(e2e_run(out, OUT_CAP, "grep -c '\"receiptId\":\"prov_' %s", path), 0);
        lines = atoi(out);
        assert_int_equal(lines, 12);
        assert_int_equal(e2e_run(out, OUT_CAP, "%s receipts verify --file %s --keyset " KEYSET, tpctl, path), 0);
        assert_non_null(strstr(out, "receipts: 12\n"));
        unlink(path);
    }
}

/* ---- 2. tampering ---------------------------------------------------------------------------------- */

typedef enum tamper { T_NONE, T_FLIP, T_SWAP, T_REMOVE, T_UNKNOWN_KEY, T_GARBAGE } tamper;

/* Produces a copy of rs into a new one-partition topic, with one tamper applied to tenant's
 * receipt of sequence 2 (and 3 for a swap). */
static void make_copy(rstate *s, const recs *rs, const char *tenant, tamper t, char *topic, size_t cap) {
    e2e *e = &s->e;
    int i2 = recs_find(rs, tenant, 2), i3 = recs_find(rs, tenant, 3);
    assert_true(i2 >= 0 && i3 >= 0);
    snprintf(topic, cap, "%s.tamper%d", e->topic_receipts, (int)t);
    assert_int_equal(e2e_topic_create(topic, 1), 0);
    assert_true(s->n_extra < 8);
    snprintf(s->extra_topic[s->n_extra++], sizeof(s->extra_topic[0]), "%s", topic);
    for (size_t k = 0; k < rs->n; k++) {
        size_t i = k;
        const rec *x;
        unsigned char *buf = NULL;
        size_t len = 0;
        if (t == T_SWAP && (int)k == i2)
            i = (size_t)i3;
        else if (t == T_SWAP && (int)k == i3)
            i = (size_t)i2;
        x = &rs->v[i];
        if (t == T_REMOVE && (int)i == i2)
            continue;
        if ((int)i == i2 && (t == T_FLIP || t == T_UNKNOWN_KEY)) {
            tp_receipt_record copy = x->d;
            unsigned char *payload = malloc(x->d.payload_len);
            tp_receipt_signature sig;
            unsigned char pk[32], sk[64], sigbytes[64];
            char keyid[TP_KEYID_MAX + 1];
            assert_non_null(payload);
            memcpy(payload, x->d.payload, x->d.payload_len);
            copy.payload = payload;
            if (t == T_FLIP) {
                payload[x->d.payload_len / 2] ^= 0x01;
            } else {
                /* Re-signed, validly, by a key the key set does not hold. */
                unsigned char *pae = NULL;
                size_t pae_len = 0;
                assert_int_equal(tp_dsse_pae(x->d.payload_type, payload, x->d.payload_len, &pae, &pae_len), 0);
                crypto_sign_keypair(pk, sk);
                crypto_sign_detached(sigbytes, NULL, pae, pae_len, sk);
                free(pae);
                tp_receipt_keyid(pk, keyid);
                sig = (tp_receipt_signature){keyid, sigbytes, sizeof(sigbytes)};
                copy.signatures = &sig;
                copy.n_signatures = 1;
            }
            assert_int_equal(tp_codec_encode_receipt(e->codec, &copy, &buf, &len), 0);
            free(payload);
        }
        assert_int_equal(e2e_produce_to_with_header(topic, x->key, strlen(x->key), buf ? buf : x->raw,
                                                    buf ? len : x->raw_len, 0,
                                                    x->leaf_index[0] ? "leaf-index" : NULL, x->leaf_index),
                         0);
        free(buf);
        if (t == T_GARBAGE && (int)k == i2) {
            static const char junk[] = "\xC3\x01not a receipt";
            assert_int_equal(e2e_produce_to(topic, tenant, strlen(tenant), junk, sizeof(junk) - 1, 0), 0);
        }
    }
}

static void test_tampering_named(void **state) {
    rstate *s = *state;
    e2e *e = &s->e;
    enum { N = 2 };
    tp_request reqs[N];
    recs *rs;
    char tenant[128], topic[256], line[512];
    char *out = s->out;
    const char *id2, *id3;
    make_batch(e, reqs, N, "tamper");
    assert_int_equal(e2e_worker_start(e, 0), 0);
    assert_int_equal(e2e_submit_batch(e, reqs, N), 0);
    assert_int_equal(e2e_wait_int(e, 3 * N, 60, "SELECT count(*) FROM receipt_outbox WHERE published_at IS NOT NULL"), 3 * N);
    assert_int_equal(e2e_text(e, tenant, sizeof(tenant), "SELECT id FROM tenants WHERE slug = '%s'", reqs[0].tenant.slug), 0);
    rs = recs_read(s, e->topic_receipts);
    assert_int_equal(rs->n, 3 * N);
    id2 = rs->v[recs_find(rs, tenant, 2)].d.receipt_id;
    id3 = rs->v[recs_find(rs, tenant, 3)].d.receipt_id;

    /* The untouched copy verifies: the copying itself changes nothing. */
    make_copy(s, rs, tenant, T_NONE, topic, sizeof(topic));
    assert_int_equal(run_verify(e, topic, out, 0), 0);
    assert_non_null(strstr(out, "receipts: 6\n"));

    /* A flipped payload byte: the signature no longer verifies; receipt 2 is named. */
    make_copy(s, rs, tenant, T_FLIP, topic, sizeof(topic));
    assert_int_equal(run_verify(e, topic, out, 1), 1);
    snprintf(line, sizeof(line), "first error: receipt %s ", id2);
    assert_non_null(strstr(out, line));
    assert_non_null(strstr(out, "does not verify"));
    assert_non_null(strstr(out, "result: BROKEN\n"));

    /* Two receipts swapped: 3 comes right after 1 and is named first, then 2. */
    make_copy(s, rs, tenant, T_SWAP, topic, sizeof(topic));
    assert_int_equal(run_verify(e, topic, out, 1), 1);
    snprintf(line, sizeof(line), "first error: receipt %s ", id3);
    assert_non_null(strstr(out, line));
    assert_non_null(strstr(out, "sequence break"));
    snprintf(line, sizeof(line), "BREAK receipt %s ", id2);
    assert_non_null(strstr(out, line));

    /* One removed: 3 no longer follows anything it links to. */
    make_copy(s, rs, tenant, T_REMOVE, topic, sizeof(topic));
    assert_int_equal(run_verify(e, topic, out, 1), 1);
    snprintf(line, sizeof(line), "first error: receipt %s ", id3);
    assert_non_null(strstr(out, line));
    assert_non_null(strstr(out, "expected 2 after 1"));
    assert_non_null(strstr(out, "receipts: 5\n"));

    /* Signed (validly) by a key outside the key set. */
    make_copy(s, rs, tenant, T_UNKNOWN_KEY, topic, sizeof(topic));
    assert_int_equal(run_verify(e, topic, out, 1), 1);
    snprintf(line, sizeof(line), "first error: receipt %s ", id2);
    assert_non_null(strstr(out, line));
    assert_non_null(strstr(out, "unknown key id ed25519:"));

    /* A record that is not a receipt: a break naming topic, partition and offset (after the
     * tenant's receipt 2, which is at offset 1 or later: the junk is right behind it). */
    make_copy(s, rs, tenant, T_GARBAGE, topic, sizeof(topic));
    assert_int_equal(run_verify(e, topic, out, 1), 1);
    snprintf(line, sizeof(line), "first error: record at topic %s, partition 0, offset %d is not a ProvenanceReceipt",
             topic, recs_find(rs, tenant, 2) + 1);
    assert_non_null(strstr(out, line));
    assert_non_null(strstr(out, "receipts: 7\n"));

}

/* ---- 3. a 20 s broker outage ----------------------------------------------------------------------- */

static int64_t published(e2e *e) {
    return e2e_int(e, "SELECT count(*) FROM receipt_outbox WHERE published_at IS NOT NULL");
}

/* Waits until at least want receipts are published; returns the last count. */
static int64_t wait_published_at_least(e2e *e, int64_t want, int timeout_s) {
    int64_t deadline = wall_ms() + (int64_t)timeout_s * 1000, n;
    while ((n = published(e)) < want && wall_ms() < deadline)
        usleep(50000);
    return n;
}

/* After a disturbance: everything finished and published, the topic matches the outbox, and
 * `tpctl receipts verify` passes, reporting re-publishes as duplicates. */
static size_t assert_all_published_and_verified(rstate *s, int n) {
    e2e *e = &s->e;
    recs *rs;
    size_t dups;
    char line[64];
    assert_int_equal(e2e_wait_int(e, n, 300, "SELECT count(*) FROM provisioning_requests WHERE state = 'SUCCEEDED'"), n);
    assert_int_equal(e2e_wait_int(e, 3 * n, 300, "SELECT count(*) FROM receipt_outbox WHERE published_at IS NOT NULL"), 3 * n);
    assert_int_equal(e2e_int(e, "SELECT count(*) FROM receipt_outbox"), 3 * n);
    rs = recs_read(s, e->topic_receipts);
    assert_int_equal(rs->undecodable, 0);
    dups = assert_topic_matches_outbox(e, rs);
    fprintf(stderr, "topic: %zu records for %d receipts (%zu re-published)\n", rs->n, 3 * n, dups);
    assert_int_equal(run_verify(e, e->topic_receipts, s->out, 0), 0);
    snprintf(line, sizeof(line), "receipts: %zu\n", rs->n);
    assert_non_null(strstr(s->out, line));
    snprintf(line, sizeof(line), "duplicates: %zu\n", dups);
    assert_non_null(strstr(s->out, line));
    snprintf(line, sizeof(line), "tenants: %d\n", n);
    assert_non_null(strstr(s->out, line));
    assert_non_null(strstr(s->out, "errors: 0\n"));
    return dups;
}

static void test_broker_outage_20s(void **state) {
    rstate *s = *state;
    e2e *e = &s->e;
    /* Enough work that Kafka stops mid-run: since the relay is event-driven and the happy path is
     * one transaction, 300 requests were all published before the broker went down. */
    enum { N = 1200 };
    static tp_request reqs[N];
    int64_t at_stop, unpublished_before_start = -1, unfinished_before_start = -1, created_during = -1,
            t_stopped, t_down;
    int stop_rc, start_rc;
    make_batch(e, reqs, N, "outage");
    /* The shared broker is ours before the batch starts: waiting for the lock after it would let
     * the whole batch be published first (another fault test may hold the lock for minutes). */
    s->lock_fd = e2e_faults_lock();
    assert_int_equal(e2e_worker_start(e, 0), 0);
    assert_int_equal(e2e_submit_batch(e, reqs, N), 0);
    /* Stop the broker while the worker provisions and the relay publishes. */
    assert_true(wait_published_at_least(e, 30, 120) >= 30);
    s->kafka_stopped = true;
    at_stop = published(e);
    stop_rc = e2e_stack_cmd("stop", "kafka");
    t_stopped = wall_ms();
    /* No assertion until Kafka is back (the teardown restarts it if one fails anyway). */
    while (wall_ms() - t_stopped < 20000)
        usleep(200000);
    unpublished_before_start = e2e_int(e, "SELECT count(*) FROM receipt_outbox WHERE published_at IS NULL");
    unfinished_before_start = N - e2e_int(e, "SELECT count(*) FROM provisioning_requests WHERE state = 'SUCCEEDED'");
    created_during = e2e_int(e, "SELECT count(*) FROM receipt_outbox WHERE created_at > now() - interval '20 seconds'");
    t_down = wall_ms() - t_stopped;
    start_rc = e2e_stack_cmd("start", "kafka");
    s->kafka_stopped = false;
    e2e_faults_unlock(s->lock_fd);
    s->lock_fd = -1;
    fprintf(stderr, "kafka down %lld ms (+ stop time); published at stop %lld, sealed while down %lld, "
                    "unpublished when it came back %lld, requests not finished %lld\n",
            (long long)t_down, (long long)at_stop, (long long)created_during,
            (long long)unpublished_before_start, (long long)unfinished_before_start);
    assert_int_equal(stop_rc, 0);
    assert_int_equal(start_rc, 0);
    /* The outage hit work in progress: receipts waiting to be published, or requests still to be
     * consumed and provisioned (with an event-driven relay the broker's graceful stop often lets
     * every receipt sealed so far out first; what the worker had not consumed waits for it). */
    assert_true(unpublished_before_start > 0 || unfinished_before_start > 0);
    assert_all_published_and_verified(s, N);
    assert_int_equal(e2e_worker_stop(e, 0, SIGTERM, 20000, NULL), 0);
}

/* ---- 4. kill -9 during relaying ---------------------------------------------------------------------- */

static void test_kill9_while_relaying(void **state) {
    rstate *s = *state;
    e2e *e = &s->e;
    enum { N = 1200, KILLS = 3 }; /* 300 were all published before the third kill */
    static tp_request reqs[N];
    int slot = 0;
    make_batch(e, reqs, N, "k9r");
    assert_int_equal(e2e_submit_batch(e, reqs, N), 0);
    assert_int_equal(e2e_worker_start(e, slot), 0);
    /* Three times: once the relay has published some more, kill -9 and start a fresh worker. */
    for (int k = 0; k < KILLS; k++) {
        int64_t before = published(e), at_kill;
        assert_true(wait_published_at_least(e, before + 30, 120) >= before + 30);
        assert_int_equal(e2e_worker_stop(e, slot, SIGKILL, 5000, NULL), 128 + SIGKILL);
        at_kill = published(e);
        fprintf(stderr, "kill -9 #%d with %lld of %d receipts marked published\n", k + 1, (long long)at_kill, 3 * N);
        assert_true(at_kill < 3 * N); /* killed mid-run */
        if (k == KILLS - 1) {
            /* The window between a PERSISTED report and the UPDATE that marks the row is short, so
             * a kill rarely lands in it. Leave the state such a crash leaves (on the topic, not
             * marked, the topic positions not past them: they move with the marks) for the 20
             * receipts published last: the restart must find them on the topic, not re-publish. */
            assert_int_equal(e2e_int(e, "WITH last AS (SELECT receipt_id FROM receipt_outbox WHERE published_at IS NOT NULL "
                                        "ORDER BY published_at DESC, tenant_id, sequence LIMIT 20), "
                                        "u AS (UPDATE receipt_outbox SET published_at = NULL WHERE receipt_id IN "
                                        "(SELECT receipt_id FROM last) RETURNING 1) SELECT count(*) FROM u"), 20);
            assert_true(e2e_int(e, "WITH d AS (DELETE FROM receipt_topic_positions RETURNING 1) SELECT count(*) FROM d") >= 0);
            assert_int_equal(published(e), at_kill - 20);
        }
        slot = (slot + 1) % E2E_MAX_WORKERS;
        assert_int_equal(e2e_worker_start(e, slot), 0);
    }
    assert_int_equal(assert_all_published_and_verified(s, N), 0);
    assert_int_equal(e2e_worker_stop(e, slot, SIGTERM, 20000, NULL), 0);
}

/* Reads the receipts topic until it holds want records (at most timeout_s); returns the count. */
static size_t wait_topic_records(rstate *s, size_t want, int timeout_s) {
    int64_t deadline = wall_ms() + (int64_t)timeout_s * 1000;
    size_t n;
    while ((n = recs_read(s, s->e.topic_receipts)->n) < want && wall_ms() < deadline)
        usleep(500000);
    return n;
}

/* Every receipt id on the topic exactly once (the topic read into s->rs). */
static void assert_one_copy_each(rstate *s, int receipts) {
    size_t copies_max = 0;
    assert_int_equal(s->rs->n, (size_t)receipts);
    for (size_t i = 0; i < s->rs->n; i++) {
        size_t copies = 0;
        for (size_t j = 0; j < s->rs->n; j++)
            copies += strcmp(s->rs->v[i].d.receipt_id, s->rs->v[j].d.receipt_id) == 0;
        if (copies > copies_max)
            copies_max = copies;
    }
    assert_int_equal(copies_max, 1);
}

/* Issue 9 item 12: a relay killed after the broker acked its receipts and before it marked them.
 * The relay that takes its slots over reconciles with the topic's tail first: it marks what is
 * there and publishes nothing again (before: every receipt of the batch twice). */
static void test_kill9_between_ack_and_mark(void **state) {
    rstate *s = *state;
    e2e *e = &s->e;
    enum { N = 40 };
    tp_request reqs[N];
    make_batch(e, reqs, N, "ackmark");
    assert_int_equal(e2e_worker_start(e, 0), 0);
    assert_int_equal(e2e_submit_batch(e, reqs, N), 0);
    assert_int_equal(e2e_wait_int(e, N, 120, "SELECT count(*) FROM provisioning_requests WHERE state = 'SUCCEEDED'"), N);
    /* All on the topic (acked), none marked: the worker holds its marks back. */
    assert_int_equal(wait_topic_records(s, 3 * N, 60), 3 * N);
    assert_int_equal(published(e), 0);
    assert_int_equal(e2e_worker_stop(e, 0, SIGKILL, 5000, NULL), 128 + SIGKILL);
    assert_int_equal(published(e), 0);
    /* Another relay takes the slots over. */
    assert_int_equal(e2e_worker_start(e, 1), 0);
    assert_int_equal(e2e_wait_int(e, 3 * N, 60, "SELECT count(*) FROM receipt_outbox WHERE published_at IS NOT NULL"), 3 * N);
    sleep(2); /* a re-publish would be on its way by now */
    assert_int_equal(assert_all_published_and_verified(s, N), 0);
    assert_one_copy_each(s, 3 * N);
    assert_true(log_count(e->log_path[1], "reconciled slots") > 0);
    assert_int_equal(e2e_worker_stop(e, 1, SIGTERM, 20000, NULL), 0);
}

/* The second source of copies: a relay whose PostgreSQL session is lost while its receipts are
 * acked and unmarked (or still in flight) loses its slots with the session; whoever takes them
 * (another relay, or itself on reconnect) must not publish those receipts again. The relay drops
 * its rows in flight (its producer replaced) and the taker reconciles. */
static void test_session_lost_between_ack_and_mark(void **state) {
    rstate *s = *state;
    e2e *e = &s->e;
    enum { N = 40 };
    tp_request reqs[N];
    int64_t killed;
    make_batch(e, reqs, N, "sesslost");
    assert_int_equal(e2e_worker_start(e, 0), 0);
    assert_int_equal(e2e_submit_batch(e, reqs, N), 0);
    assert_int_equal(e2e_wait_int(e, N, 120, "SELECT count(*) FROM provisioning_requests WHERE state = 'SUCCEEDED'"), N);
    assert_int_equal(wait_topic_records(s, 3 * N, 60), 3 * N);
    assert_int_equal(published(e), 0);
    /* A second relay joins (it gets the slots without rows in flight), then every session holding
     * a slot is terminated: the slots change hands while the first relay's receipts are acked and
     * unmarked. */
    assert_int_equal(e2e_worker_start(e, 1), 0);
    sleep(3);
    killed = e2e_int(e, "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM (SELECT DISTINCT pid FROM pg_locks "
                        "WHERE locktype = 'advisory' AND classid = 7349101 AND granted AND database = "
                        "(SELECT oid FROM pg_database WHERE datname = current_database())) l) t");
    fprintf(stderr, "terminated %lld relay sessions\n", (long long)killed);
    assert_true(killed >= 1);
    assert_int_equal(e2e_wait_int(e, 3 * N, 60, "SELECT count(*) FROM receipt_outbox WHERE published_at IS NOT NULL"), 3 * N);
    sleep(2);
    assert_int_equal(assert_all_published_and_verified(s, N), 0);
    assert_one_copy_each(s, 3 * N);
    assert_int_equal(e2e_worker_stop(e, 0, SIGTERM, 20000, NULL), 0);
    assert_int_equal(e2e_worker_stop(e, 1, SIGTERM, 20000, NULL), 0);
}

/* ---- 5. sequences with two workers ------------------------------------------------------------------- */

/* Per tenant: sequences exactly 1..3, each linking to the hash of the one before. */
static void assert_outbox_chains(e2e *e, int tenants) {
    assert_int_equal(e2e_int(e, "SELECT count(DISTINCT tenant_id) FROM receipt_outbox"), tenants);
    assert_int_equal(e2e_int(e, "SELECT count(*) FROM (SELECT tenant_id FROM receipt_outbox GROUP BY tenant_id "
                                "HAVING array_agg(sequence ORDER BY sequence) <> ARRAY[1,2,3]::bigint[]) x"), 0);
    assert_int_equal(e2e_int(e, "SELECT count(*) FROM receipt_outbox o WHERE o.previous_hash <> CASE WHEN o.sequence = 1 "
                                "THEN repeat('0', 64) ELSE (SELECT p.hash FROM receipt_outbox p WHERE p.tenant_id = o.tenant_id "
                                "AND p.sequence = o.sequence - 1) END"), 0);
}

static int log_count(const char *path, const char *needle) {
    char out[64], cmd[600];
    snprintf(cmd, sizeof(cmd), "grep -c '%s' %s", needle, path);
    if (e2e_run(out, sizeof(out), "%s", cmd) > 1)
        return -1;
    return atoi(out);
}

/* The receipts a worker's relay published, from its "stopped after publishing N receipts" line
 * (-1 when the line is missing: the worker has not stopped cleanly). */
static long relay_published(const char *path) {
    char out[64] = "";
    if (e2e_run(out, sizeof(out), "grep -o 'stopped after publishing [0-9]*' %s | tail -n 1 | grep -o '[0-9]*$'",
                path) != 0)
        return -1;
    return atol(out);
}

static void test_two_workers_50_tenants(void **state) {
    rstate *s = *state;
    e2e *e = &s->e;
    enum { N = 50 };
    tp_request reqs[N];
    int done0, done1;
    make_batch(e, reqs, N, "two");
    assert_int_equal(e2e_worker_start(e, 0), 0);
    assert_int_equal(e2e_worker_start(e, 1), 0);
    sleep(3); /* let the group settle: both members own partitions */
    assert_int_equal(e2e_submit_batch(e, reqs, N), 0);
    assert_int_equal(e2e_wait_int(e, N, 120, "SELECT count(*) FROM provisioning_requests WHERE state = 'SUCCEEDED'"), N);
    assert_int_equal(e2e_wait_int(e, 3 * N, 120, "SELECT count(*) FROM receipt_outbox WHERE published_at IS NOT NULL"), 3 * N);
    done0 = log_count(e->log_path[0], "request SUCCEEDED");
    done1 = log_count(e->log_path[1], "request SUCCEEDED");
    fprintf(stderr, "worker 0 finished %d requests, worker 1 finished %d\n", done0, done1);
    assert_true(done0 > 0 && done1 > 0);
    assert_outbox_chains(e, N);
    /* verify checks each tenant's chain in topic order: two relays never reorder a tenant. */
    assert_all_published_and_verified(s, N);
    /* The marks moved the topic positions along (the takeover re-read stays short), and no
     * database round failed on the way. */
    assert_true(e2e_int(e, "SELECT coalesce(max(next_offset), 0) FROM receipt_topic_positions") > 0);
    assert_int_equal(log_count(e->log_path[0], "outbox round"), 0);
    assert_int_equal(log_count(e->log_path[1], "outbox round"), 0);
    assert_int_equal(e2e_worker_stop(e, 0, SIGTERM, 20000, NULL), 0);
    assert_int_equal(e2e_worker_stop(e, 1, SIGTERM, 20000, NULL), 0);
    /* Both relays published: the tenants' advisory-lock slots were shared between them. */
    {
        long p0 = relay_published(e->log_path[0]), p1 = relay_published(e->log_path[1]);
        fprintf(stderr, "relay 0 published %ld receipts, relay 1 published %ld\n", p0, p1);
        assert_true(p0 > 0 && p1 > 0);
        assert_true(p0 + p1 >= 3 * N);
    }
}

/* The same request on every partition: both workers run it at once, so both seal receipts for
 * the same tenant concurrently; the tenant row lock must still give one chain 1, 2, 3. */
static void test_two_workers_same_tenant(void **state) {
    rstate *s = *state;
    e2e *e = &s->e;
    enum { N = 8, PARTS = 6 };
    tp_request reqs[N];
    make_batch(e, reqs, N, "same");
    assert_int_equal(e2e_worker_start(e, 0), 0);
    assert_int_equal(e2e_worker_start(e, 1), 0);
    sleep(3);
    for (int i = 0; i < N; i++)
        for (int p = 0; p < PARTS; p++)
            assert_int_equal(e2e_submit(e, &reqs[i], 1, p), 0);
    assert_int_equal(e2e_wait_committed(e, N * PARTS, 120), N * PARTS);
    assert_int_equal(e2e_int(e, "SELECT count(*) FROM provisioning_requests WHERE state = 'SUCCEEDED'"), N);
    assert_true(log_count(e->log_path[0], "assigned") > 0 && log_count(e->log_path[1], "assigned") > 0);
    assert_int_equal(e2e_int(e, "SELECT count(*) FROM receipt_outbox"), 3 * N);
    assert_outbox_chains(e, N);
    assert_all_published_and_verified(s, N);
    assert_int_equal(e2e_worker_stop(e, 0, SIGTERM, 20000, NULL), 0);
    assert_int_equal(e2e_worker_stop(e, 1, SIGTERM, 20000, NULL), 0);
}

/* A relay that dies for good (scaled down, crashed and not restarted) frees its slots silently:
 * no commit or NOTIFY need follow. The survivor, holding half the slots, must take the rest by
 * itself and publish the receipts of their tenants (before: those stayed unpublished until some
 * other relay started). */
static int setup_claim_check(void **state) { return setup_with_config(state, true, "outbox.claim_check_ms = 2000"); }

static void test_dead_relay_slots_taken(void **state) {
    rstate *s = *state;
    e2e *e = &s->e;
    enum { N = 40 };
    tp_request reqs[N];
    make_batch(e, reqs, N, "deadrelay");
    assert_int_equal(e2e_worker_start(e, 0), 0);
    assert_int_equal(e2e_worker_start(e, 1), 0);
    /* Both relays hold their share (8 slots each) and have settled (every NOTIFY of the exchange
     * answered) before one of them dies. */
    for (int i = 0; i < 200 && (log_count(e->log_path[0], "reconciled slots") == 0 ||
                                log_count(e->log_path[1], "reconciled slots") == 0); i++)
        usleep(100 * 1000);
    sleep(2);
    assert_int_equal(e2e_int(e, "SELECT count(DISTINCT pid) FROM pg_locks WHERE locktype = 'advisory' AND "
                                "classid = 7349101 AND granted AND database = (SELECT oid FROM pg_database "
                                "WHERE datname = current_database())"), 2);
    assert_int_equal(e2e_worker_stop(e, 1, SIGKILL, 5000, NULL), 128 + SIGKILL);
    assert_int_equal(e2e_submit_batch(e, reqs, N), 0);
    assert_int_equal(e2e_wait_int(e, N, 120, "SELECT count(*) FROM provisioning_requests WHERE state = 'SUCCEEDED'"), N);
    assert_int_equal(e2e_wait_int(e, 3 * N, 30, "SELECT count(*) FROM receipt_outbox WHERE published_at IS NOT NULL"), 3 * N);
    assert_int_equal(assert_all_published_and_verified(s, N), 0);
    assert_int_equal(e2e_worker_stop(e, 0, SIGTERM, 20000, NULL), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_prestate_setup_teardown(test_happy_path_topic, setup, teardown, "rhappy"),
        cmocka_unit_test_prestate_setup_teardown(test_tampering_named, setup, teardown, "rtamper"),
        cmocka_unit_test_prestate_setup_teardown(test_broker_outage_20s, setup_outage, teardown, "routage"),
        cmocka_unit_test_prestate_setup_teardown(test_kill9_while_relaying, setup_kill9, teardown, "rkill9"),
        cmocka_unit_test_prestate_setup_teardown(test_kill9_between_ack_and_mark, setup_mark_delay, teardown, "rackmark"),
        cmocka_unit_test_prestate_setup_teardown(test_session_lost_between_ack_and_mark, setup_mark_delay, teardown, "rsesslost"),
        cmocka_unit_test_prestate_setup_teardown(test_two_workers_50_tenants, setup, teardown, "rtwo"),
        cmocka_unit_test_prestate_setup_teardown(test_dead_relay_slots_taken, setup_claim_check, teardown, "rdead"),
        cmocka_unit_test_prestate_setup_teardown(test_two_workers_same_tenant, setup, teardown, "rsame"),
    };
    if (getenv("TP_TEST_FILTER"))
        cmocka_set_test_filter(getenv("TP_TEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
