/* relay.c: the transactional-outbox relay: unpublished receipt_outbox rows → Avro
 * ProvenanceReceipt records on the receipts topic, marked published on PERSISTED delivery reports.
 * Batches run one at a time: fetch on a pool thread, produce on the loop, mark on a pool thread. */
#include "tp/relay.h"
#include "tp/receipts.h"
#include "tp/codec.h"
#include "tp/error.h"
#include "tp/log.h"
#include "tp/store.h"

#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define RELAY_BATCH 500
#define RELAY_LOCK_KEY "7349101"  /* pg advisory lock: one relay per database */
#define RECEIPT_CONTENT_TYPE "application/vnd.tenant-provisioner.receipt.v1+avro"

typedef struct row {
    tp_receipt_record rec;
    struct tp_relay *relay;
    bool delivered;
} row;

struct tp_relay {
    const tp_config *cfg;
    uv_loop_t *loop;
    uv_timer_t timer;
    uv_work_t work;
    tp_producer *producer;
    tp_codec *codec;
    tp_db *db;           /* owned by whichever thread runs the current phase */
    bool leader;         /* holds the advisory lock on db */
    bool busy;
    bool stopped;
    bool freeing;
    bool failed;
    row *rows;
    size_t n_rows;
    size_t outstanding;
    int work_rc;
    uint64_t published;
};

static void rows_free(tp_relay *r) {
    for (size_t i = 0; i < r->n_rows; i++)
        tp_receipt_record_release(&r->rows[i].rec);
    free(r->rows);
    r->rows = NULL;
    r->n_rows = 0;
}

static char *dup_cell(const tp_res *res, int row_i, int col) {
    return strdup(tp_res_isnull(res, row_i, col) ? "" : tp_res_get(res, row_i, col));
}

/* Fills the envelope signatures of rec from the outbox's envelope JSON. */
static int parse_signatures(tp_receipt_record *rec, const char *envelope_json) {
    json_error_t jerr;
    json_t *env = json_loads(envelope_json, 0, &jerr), *sigs, *s;
    size_t i;
    int rc = TP_EINVAL;
    if (!env)
        return TP_EINVAL;
    sigs = json_object_get(env, "signatures");
    if (!json_is_array(sigs) || json_array_size(sigs) == 0 || json_array_size(sigs) > TP_RECEIPT_SIGNATURES_MAX)
        goto out;
    rec->signatures = calloc(json_array_size(sigs), sizeof(*rec->signatures));
    if (!rec->signatures)
        goto out;
    json_array_foreach(sigs, i, s) {
        const char *keyid = json_string_value(json_object_get(s, "keyid"));
        const char *sig64 = json_string_value(json_object_get(s, "sig"));
        tp_receipt_signature *out = &rec->signatures[rec->n_signatures];
        size_t bin_len = 0;
        if (!keyid || !sig64)
            goto out;
        out->keyid = strdup(keyid);
        out->sig = malloc(strlen(sig64) + 1);
        rec->n_signatures++;
        if (!out->keyid || !out->sig ||
            sodium_base642bin(out->sig, strlen(sig64) + 1, sig64, strlen(sig64), NULL, &bin_len, NULL,
                              sodium_base64_VARIANT_ORIGINAL) != 0)
            goto out;
        out->sig_len = bin_len;
    }
    rc = 0;
out:
    json_decref(env);
    return rc;
}

/* Pool thread: connect, take the relay lock, read the next batch. */
static void fetch_work(uv_work_t *req) {
    tp_relay *r = req->data;
    tp_res *res = NULL;
    char blocked_tenant[256] = "";
    char err[256], limit[16];
    const char *params[1];
    int rc;

    r->work_rc = 0;
    if (!r->db) {
        if (tp_db_connect(tp_config_get(r->cfg, "pg.dsn"), &r->db, err, sizeof(err)) != 0) {
            r->work_rc = TP_EDB;
            return;
        }
        r->leader = false;
    }
    if (!r->leader) {
        rc = tp_db_query(r->db, "SELECT pg_try_advisory_lock(" RELAY_LOCK_KEY ")", 0, NULL, &res);
        if (rc != 0) {
            r->work_rc = rc;
            goto out_reset;
        }
        r->leader = tp_res_nrows(res) == 1 && strcmp(tp_res_get(res, 0, 0), "t") == 0;
        tp_res_free(res);
        res = NULL;
        if (!r->leader)
            return; /* another worker relays */
        tp_log_info("relay", "this worker relays the receipts outbox");
    }
    snprintf(limit, sizeof(limit), "%d", RELAY_BATCH);
    params[0] = limit;
    rc = tp_db_query(r->db,
                     "SELECT receipt_id, action_type, tenant_id, request_id, sequence, previous_hash, hash, "
                     "(extract(epoch FROM (convert_from(payload, 'UTF8')::jsonb #>> '{predicate,timestamp}')::timestamptz) "
                     "* 1000)::bigint, encode(payload, 'base64'), envelope::text "
                     "FROM receipt_outbox WHERE published_at IS NULL ORDER BY tenant_id, sequence LIMIT $1::int",
                     1, params, &res);
    if (rc != 0) {
        r->work_rc = rc;
        goto out_reset;
    }
    r->n_rows = 0;
    r->rows = calloc((size_t)tp_res_nrows(res) + 1, sizeof(*r->rows));
    if (!r->rows) {
        r->work_rc = TP_ENOMEM;
        goto out;
    }
    for (int i = 0; i < tp_res_nrows(res); i++) {
        tp_receipt_record *rec = &r->rows[r->n_rows].rec;
        const char *b64 = tp_res_get(res, i, 8);
        size_t b64_len = strlen(b64), bin_len = 0;
        /* Rows come ordered by tenant: after a bad row, its tenant's later rows wait (order). */
        if (blocked_tenant[0] && strcmp(tp_res_get(res, i, 2), blocked_tenant) == 0)
            continue;
        rec->receipt_id = dup_cell(res, i, 0);
        rec->action_type = dup_cell(res, i, 1);
        rec->tenant_id = dup_cell(res, i, 2);
        rec->request_id = dup_cell(res, i, 3);
        tp_res_get_int64(res, i, 4, &rec->sequence);
        rec->previous_hash = dup_cell(res, i, 5);
        rec->hash = dup_cell(res, i, 6);
        tp_res_get_int64(res, i, 7, &rec->timestamp_ms);
        rec->payload_type = strdup(TP_RECEIPT_PAYLOAD_TYPE);
        rec->payload = malloc(b64_len + 1);
        r->n_rows++;
        if (!rec->receipt_id || !rec->action_type || !rec->tenant_id || !rec->request_id ||
            !rec->previous_hash || !rec->hash || !rec->payload_type || !rec->payload ||
            sodium_base642bin(rec->payload, b64_len + 1, b64, b64_len, "\n", &bin_len, NULL,
                              sodium_base64_VARIANT_ORIGINAL) != 0 ||
            parse_signatures(rec, tp_res_get(res, i, 9)) != 0) {
            tp_log_error("relay", "outbox row %s is unreadable: tenant %s's receipts wait from here on",
                         tp_res_get(res, i, 0), tp_res_get(res, i, 2));
            snprintf(blocked_tenant, sizeof(blocked_tenant), "%s", tp_res_get(res, i, 2));
            r->n_rows--;
            tp_receipt_record_release(rec);
            memset(rec, 0, sizeof(*rec));
            continue;
        }
        rec->payload_len = bin_len;
    }
out:
    tp_res_free(res);
    return;
out_reset:
    tp_res_free(res);
    if (tp_db_ping(r->db) != 0) {
        tp_db_close(r->db);
        r->db = NULL;
        r->leader = false;
    }
}

/* Pool thread: mark the delivered rows published. */
static void mark_work(uv_work_t *req) {
    tp_relay *r = req->data;
    size_t cap = 16, len = 0;
    char *arr = malloc(cap);
    const char *params[1];
    int64_t affected = 0;

    r->work_rc = 0;
    if (!arr) {
        r->work_rc = TP_ENOMEM;
        return;
    }
    arr[len++] = '{';
    for (size_t i = 0; i < r->n_rows; i++) {
        size_t need;
        if (!r->rows[i].delivered)
            continue;
        need = strlen(r->rows[i].rec.receipt_id) + 4;
        if (len + need + 2 > cap) {
            char *bigger;
            while (len + need + 2 > cap)
                cap *= 2;
            bigger = realloc(arr, cap);
            if (!bigger) {
                free(arr);
                r->work_rc = TP_ENOMEM;
                return;
            }
            arr = bigger;
        }
        /* receipt ids are prov_<uuid>: no quotes or commas to escape */
        len += (size_t)snprintf(arr + len, cap - len, "%s\"%s\"", len > 1 ? "," : "", r->rows[i].rec.receipt_id);
    }
    arr[len++] = '}';
    arr[len] = '\0';
    params[0] = arr;
    if (len > 2)
        r->work_rc = tp_db_exec(r->db,
                                "UPDATE receipt_outbox SET published_at = now() "
                                "WHERE receipt_id = ANY($1::text[]) AND published_at IS NULL",
                                1, params, &affected);
    free(arr);
}

static void batch_done(tp_relay *r) {
    rows_free(r);
    r->busy = false;
}

static void mark_after(uv_work_t *req, int status) {
    tp_relay *r = req->data;
    size_t n = 0;
    (void)status;
    for (size_t i = 0; i < r->n_rows; i++)
        n += r->rows[i].delivered;
    if (r->work_rc != 0) {
        tp_log_warn("relay", "marking %zu receipts published failed (%s): they will be published again",
                    n, tp_strerror(r->work_rc));
        /* The session (and with it the advisory lock) may be gone: take the lock again. */
        tp_db_close(r->db);
        r->db = NULL;
        r->leader = false;
    }
    else if (n)
        tp_log_debug("relay", "published %zu receipts", n);
    r->published += n;
    batch_done(r);
}

static void on_delivered(void *opaque, int err, int32_t partition, int64_t offset) {
    row *rw = opaque;
    tp_relay *r = rw->relay;
    (void)partition;
    (void)offset;
    rw->delivered = err == 0;
    if (err == TP_EKAFKA_FATAL)
        r->failed = true;
    if (--r->outstanding == 0 && r->freeing) {
        batch_done(r); /* unmarked rows are published again after a restart */
    } else if (r->outstanding == 0) {
        r->work.data = r;
        uv_queue_work(r->loop, &r->work, mark_work, mark_after);
    }
}

static void produce_batch(tp_relay *r) {
    const char *topic = tp_config_get(r->cfg, "topic.receipts");
    row sentinel = {.relay = r};
    const char *blocked = NULL;
    r->outstanding = r->n_rows + 1; /* +1 keeps the batch open until every send is issued */
    for (size_t i = 0; i < r->n_rows; i++) {
        row *rw = &r->rows[i];
        unsigned char *buf = NULL;
        size_t len = 0;
        tp_kafka_header hdrs[3] = {
            {"receipt-id", rw->rec.receipt_id, strlen(rw->rec.receipt_id)},
            {"action-type", rw->rec.action_type, strlen(rw->rec.action_type)},
            {"content-type", RECEIPT_CONTENT_TYPE, strlen(RECEIPT_CONTENT_TYPE)},
        };
        int rc;
        rw->relay = r;
        if (blocked && strcmp(blocked, rw->rec.tenant_id) == 0) {
            r->outstanding--; /* waits for the next round, behind its tenant's unsent receipt */
            continue;
        }
        rc = tp_codec_encode_receipt(r->codec, &rw->rec, &buf, &len);
        if (rc != 0) {
            tp_log_error("relay", "receipt %s does not encode (%s): tenant %s's receipts wait from here on",
                         rw->rec.receipt_id, tp_strerror(rc), rw->rec.tenant_id);
            blocked = rw->rec.tenant_id;
            r->outstanding--;
            continue;
        }
        rc = tp_producer_send(r->producer, topic, rw->rec.tenant_id, strlen(rw->rec.tenant_id), buf,
                              len, hdrs, 3, on_delivered, rw);
        free(buf);
        if (rc != 0) {
            tp_log_warn("relay", "receipt %s not sent (%s); later rows wait for the next round",
                        rw->rec.receipt_id, tp_strerror(rc));
            /* Keep per-tenant order: stop here; the rest of the batch is sent next round. */
            if (rc == TP_EKAFKA_FATAL)
                r->failed = true;
            r->outstanding -= r->n_rows - i;
            break;
        }
    }
    on_delivered(&sentinel, TP_EKAFKA, -1, -1);
}

static void fetch_after(uv_work_t *req, int status) {
    tp_relay *r = req->data;
    (void)status;
    if (r->work_rc != 0 || r->n_rows == 0) {
        if (r->work_rc != 0 && r->work_rc != TP_EINVAL)
            tp_log_warn("relay", "reading the outbox failed: %s", tp_strerror(r->work_rc));
        batch_done(r);
        return;
    }
    produce_batch(r);
}

static void on_tick(uv_timer_t *t) {
    tp_relay *r = t->data;
    tp_producer_poll(r->producer, 0); /* delivery reports come here, on the loop thread */
    if (r->busy || r->stopped || r->failed)
        return;
    r->busy = true;
    r->work.data = r;
    uv_queue_work(r->loop, &r->work, fetch_work, fetch_after);
}

static void copy_key(const char *key, const char *value, void *opaque) {
    char err[64];
    (void)tp_config_set(opaque, key, value, err, sizeof(err));
}

int tp_relay_new(const tp_config *cfg, void *loop, tp_relay **out) {
    char err[256];
    tp_relay *r = calloc(1, sizeof(*r));
    tp_config *pcfg = tp_config_new();
    uint64_t interval = (uint64_t)tp_config_get_int(cfg, "worker.relay_interval_ms");
    int rc;
    if (!r || !pcfg) {
        free(r);
        tp_config_free(pcfg);
        return TP_ENOMEM;
    }
    r->cfg = cfg;
    r->loop = loop;
    /* The relay's own producer never gives a record up (message.timeout.ms = 0): a receipt that
     * timed out while a later one of its tenant got through would reach the topic out of order. */
    tp_config_foreach(cfg, "", copy_key, pcfg);
    tp_config_set(pcfg, "kafka.message.timeout.ms", "0", err, sizeof(err));
    rc = tp_producer_new(pcfg, &r->producer, err, sizeof(err));
    tp_config_free(pcfg);
    if (rc != 0) {
        tp_log_error("relay", "producer: %s", err);
        free(r);
        return rc;
    }
    r->codec = tp_codec_new(tp_config_get(cfg, "codec.schema_dir"), "", err, sizeof(err));
    if (!r->codec) {
        tp_log_error("relay", "codec: %s", err);
        tp_producer_free(r->producer, 0);
        free(r);
        return TP_ECONFIG;
    }
    uv_timer_init(r->loop, &r->timer);
    r->timer.data = r;
    uv_timer_start(&r->timer, on_tick, 0, interval ? interval : 200);
    *out = r;
    return 0;
}

void tp_relay_stop(tp_relay *r) {
    if (!r)
        return;
    r->stopped = true; /* the timer keeps serving delivery reports until the batch is done */
}

bool tp_relay_idle(const tp_relay *r) { return !r || !r->busy; }

bool tp_relay_failed(const tp_relay *r) { return r && r->failed; }

static void relay_closed(uv_handle_t *h) {
    tp_relay *r = h->data;
    tp_codec_free(r->codec);
    free(r);
}

void tp_relay_free(tp_relay *r) {
    if (!r)
        return;
    tp_log_info("relay", "stopped after publishing %llu receipts", (unsigned long long)r->published);
    r->freeing = true;
    uv_timer_stop(&r->timer);
    tp_producer_free(r->producer, 5000); /* what is still queued fails into on_delivered */
    rows_free(r);
    tp_db_close(r->db);
    r->timer.data = r;
    uv_close((uv_handle_t *)&r->timer, relay_closed);
}
