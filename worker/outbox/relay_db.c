/* relay_db.c: the outbox relay's PostgreSQL round on a pool thread: connect and LISTEN, mark
 * delivered rows published, rebalance the advisory-lock slots between relays, fetch the next
 * unpublished rows of the held slots. */
#include "outbox/outbox_int.h"
#include "tp/error.h"
#include "tp/log.h"
#include "tp/receipts.h"

#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* pg_advisory_lock(SLOT_KEY, s) is slot s; every relay session holds (PRESENCE_KEY, 0) shared,
 * so counting its holders counts the relays of this database. */
#define SLOT_KEY "7349101"
#define PRESENCE_KEY "7349102"

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

static char *dup_cell(const tp_res *res, int row_i, int col) {
    return strdup(tp_res_isnull(res, row_i, col) ? "" : tp_res_get(res, row_i, col));
}

static int fail(tp_outbox_round *round, int rc, const char *step) {
    round->rc = rc;
    round->failed_step = step;
    return rc;
}

/* A fresh session: LISTEN, and count ourselves among the relays. */
static int session_start(tp_outbox_round *round) {
    char err[256];
    int rc;
    if (tp_db_connect(tp_config_get(round->cfg, "pg.dsn"), &round->db, err, sizeof(err)) != 0) {
        round->db = NULL;
        tp_log_warn("relay", "postgres connect: %s", err);
        return fail(round, TP_EDB, "connect");
    }
    memset(round->held, 0, sizeof(round->held));
    round->backend_pid = 0;
    round->first_claim = true;
    round->claim = true;
    if ((rc = tp_db_listen(round->db, TP_OUTBOX_CHANNEL)) != 0)
        return fail(round, rc, "listen");
    if ((rc = tp_db_exec(round->db, "SELECT pg_advisory_lock_shared(" PRESENCE_KEY ", 0)", 0, NULL, NULL)) != 0)
        return fail(round, rc, "presence lock");
    return 0;
}

static int mark(tp_outbox_round *round) {
    const char *params[1] = {round->mark_ids};
    int rc = tp_db_exec(round->db,
                        "UPDATE receipt_outbox SET published_at = now() "
                        "WHERE receipt_id = ANY($1::text[]) AND published_at IS NULL",
                        1, params, &round->marked);
    return rc ? fail(round, rc, "mark") : 0;
}

static int slot_lock(tp_outbox_round *round, const char *fn, int slot, bool *got) {
    char sql[96], s[8];
    bool found = false;
    int rc;
    snprintf(sql, sizeof(sql), "SELECT %s(" SLOT_KEY ", %d)", fn, slot);
    rc = tp_db_query_text(round->db, sql, 0, NULL, s, sizeof(s), &found);
    if (rc != 0)
        return fail(round, rc, fn);
    *got = found && strcmp(s, "t") == 0;
    return 0;
}

/* Takes free slots up to this relay's share; gives held slots without rows in flight back above
 * it. Asks the others to rebalance (NOTIFY) after giving slots back, and when a newly started
 * relay finds no free slot. */
static int claim(tp_outbox_round *round) {
    tp_res *res = NULL;
    int64_t pid = 0, relays = 0, others = 0;
    int held = 0, target, rc;
    bool notify = false, got;

    rc = tp_db_query(round->db,
                     "SELECT pg_backend_pid(), count(*) FILTER (WHERE classid = " PRESENCE_KEY "), "
                     "coalesce(bit_or(1::bigint << objid::int8::int) FILTER (WHERE classid = " SLOT_KEY
                     " AND pid <> pg_backend_pid()), 0) "
                     "FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2 "
                     "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                     0, NULL, &res);
    if (rc != 0)
        return fail(round, rc, "claim");
    tp_res_get_int64(res, 0, 0, &pid);
    tp_res_get_int64(res, 0, 1, &relays);
    tp_res_get_int64(res, 0, 2, &others);
    tp_res_free(res);
    if (round->backend_pid != 0 && round->backend_pid != (int)pid) {
        /* The session was replaced under us: whatever we held is gone. */
        tp_log_warn("relay", "postgres session changed: slots are taken afresh");
        memset(round->held, 0, sizeof(round->held));
    }
    round->backend_pid = (int)pid;
    round->n_relays = relays < 1 ? 1 : (int)relays;
    target = tp_outbox_slot_target(round->n_relays);
    for (int s = 0; s < TP_OUTBOX_SLOTS; s++)
        held += round->held[s];
    for (int s = TP_OUTBOX_SLOTS - 1; s >= 0 && held > target; s--) {
        if (!round->held[s] || !round->releasable[s])
            continue;
        if (slot_lock(round, "pg_advisory_unlock", s, &got) != 0)
            return round->rc;
        round->held[s] = false;
        held--;
        notify = true;
    }
    for (int s = 0; s < TP_OUTBOX_SLOTS && held < target; s++) {
        if (round->held[s] || (others & ((int64_t)1 << s)))
            continue;
        if (slot_lock(round, "pg_try_advisory_lock", s, &got) != 0)
            return round->rc;
        if (got) {
            round->held[s] = true;
            held++;
        }
    }
    if (held < target && round->first_claim)
        notify = true;
    round->first_claim = false;
    if (notify && (rc = tp_db_exec(round->db, "SELECT pg_notify('" TP_OUTBOX_CHANNEL "', '')", 0, NULL, NULL)) != 0)
        return fail(round, rc, "notify");
    return 0;
}

static int read_row(tp_outbox_row *row, const tp_res *res, int i) {
    tp_receipt_record *rec = &row->rec;
    const char *b64 = tp_res_get(res, i, 8);
    size_t b64_len = strlen(b64), bin_len = 0;
    int64_t slot = 0;
    rec->receipt_id = dup_cell(res, i, 0);
    rec->action_type = dup_cell(res, i, 1);
    rec->tenant_id = dup_cell(res, i, 2);
    rec->request_id = dup_cell(res, i, 3);
    tp_res_get_int64(res, i, 4, &rec->sequence);
    rec->previous_hash = dup_cell(res, i, 5);
    rec->hash = dup_cell(res, i, 6);
    tp_res_get_int64(res, i, 7, &rec->timestamp_ms);
    tp_res_get_int64(res, i, 10, &slot);
    row->slot = (int)slot;
    if (!rec->receipt_id || !rec->tenant_id)
        return TP_ENOMEM;
    rec->payload_type = strdup(TP_RECEIPT_PAYLOAD_TYPE);
    rec->payload = malloc(b64_len + 1);
    if (!rec->action_type || !rec->request_id || !rec->previous_hash || !rec->hash ||
        !rec->payload_type || !rec->payload ||
        sodium_base642bin(rec->payload, b64_len + 1, b64, b64_len, "\n", &bin_len, NULL,
                          sodium_base64_VARIANT_ORIGINAL) != 0 ||
        parse_signatures(rec, tp_res_get(res, i, 9)) != 0)
        row->bad = true;
    rec->payload_len = bin_len;
    return 0;
}

static int fetch(tp_outbox_round *round) {
    char limit[16], slots[TP_OUTBOX_SLOTS * 4 + 4];
    const char *params[2] = {limit, slots};
    size_t len = 0;
    int held = 0, rc;
    tp_res *res = NULL;

    slots[len++] = '{';
    for (int s = 0; s < TP_OUTBOX_SLOTS; s++)
        if (round->held[s]) {
            len += (size_t)snprintf(slots + len, sizeof(slots) - len, "%s%d", held ? "," : "", s);
            held++;
        }
    slots[len++] = '}';
    slots[len] = '\0';
    if (held == 0)
        return 0;
    snprintf(limit, sizeof(limit), "%d", round->limit);
    rc = tp_db_query(round->db,
                     "SELECT receipt_id, action_type, tenant_id, request_id, sequence, previous_hash, hash, "
                     "(extract(epoch FROM (convert_from(payload, 'UTF8')::jsonb #>> '{predicate,timestamp}')::timestamptz) "
                     "* 1000)::bigint, encode(payload, 'base64'), envelope::text, " TP_OUTBOX_SLOT_SQL " "
                     "FROM receipt_outbox WHERE published_at IS NULL AND " TP_OUTBOX_SLOT_SQL " = ANY($2::int[]) "
                     "ORDER BY tenant_id, sequence LIMIT $1::int",
                     2, params, &res);
    if (rc != 0)
        return fail(round, rc, "fetch");
    round->rows = calloc((size_t)tp_res_nrows(res) + 1, sizeof(*round->rows));
    if (!round->rows) {
        tp_res_free(res);
        return fail(round, TP_ENOMEM, "fetch");
    }
    for (int i = 0; i < tp_res_nrows(res); i++) {
        rc = read_row(&round->rows[round->n_rows], res, i);
        round->n_rows++;
        if (rc != 0) {
            tp_res_free(res);
            return fail(round, rc, "fetch");
        }
    }
    tp_res_free(res);
    return 0;
}

void tp_outbox_round_run(tp_outbox_round *round) {
    round->rc = 0;
    round->failed_step = NULL;
    round->marked = 0;
    round->rows = NULL;
    round->n_rows = 0;
    if (!round->db && session_start(round) != 0)
        return;
    if (round->mark_ids && mark(round) != 0)
        return;
    if (round->claim && claim(round) != 0)
        return;
    if (round->fetch && fetch(round) != 0)
        return;
    if (round->notify_others) {
        int rc = tp_db_exec(round->db, "SELECT pg_notify('" TP_OUTBOX_CHANNEL "', '')", 0, NULL, NULL);
        if (rc != 0)
            fail(round, rc, "notify");
    }
}

void tp_outbox_round_rows_free(tp_outbox_round *round) {
    for (size_t i = 0; i < round->n_rows; i++)
        tp_receipt_record_release(&round->rows[i].rec);
    free(round->rows);
    round->rows = NULL;
    round->n_rows = 0;
}
