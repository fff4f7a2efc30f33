/* relay_db.c: the outbox relay's PostgreSQL round on a pool thread: connect and LISTEN,
 * rebalance the advisory-lock slots between relays, reconcile newly taken slots with the receipts
 * topic's tail, then in ONE transaction mark delivered rows published (with the topic positions
 * that allows), number the committed, unnumbered receipts of every tenant as log leaves (the
 * sequencer's statements, tp/tlog_db.h) and fetch the next unpublished, numbered rows of the held,
 * reconciled slots; and the checkpoint job (on a connection of its own): extend the log's tree,
 * sign a checkpoint. */
#include "outbox/outbox_int.h"
#include "tp/tlog_db.h"
#include "tp/error.h"
#include "tp/log.h"
#include "tp/receipts.h"
#include "tp/receipts_reader.h"

#include <jansson.h>
#include <sodium.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* pg_advisory_lock(SLOT_KEY, s) is slot s; every relay session holds (PRESENCE_KEY, 0) shared,
 * so counting its holders counts the relays of this database. */
#define SLOT_KEY "7349101"
#define PRESENCE_KEY "7349102"

/* Fills the envelope signatures of rec from the envelope's "signatures" array (JSON text:
 * PostgreSQL hands over just that array, not the whole envelope with its payload copy). */
static int parse_signatures(tp_receipt_record *rec, const char *signatures_json) {
    json_error_t jerr;
    json_t *sigs = json_loads(signatures_json, 0, &jerr), *s;
    size_t i;
    int rc = TP_EINVAL;
    if (!sigs)
        return TP_EINVAL;
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
    json_decref(sigs);
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
    if (tp_db_connect_cfg(round->cfg, &round->db, err, sizeof(err)) != 0) {
        round->db = NULL;
        tp_log_warn("relay", "postgres connect: %s", err);
        return fail(round, TP_EDB, "connect");
    }
    memset(round->held, 0, sizeof(round->held));
    memset(round->reconcile, 0, sizeof(round->reconcile));
    round->backend_pid = 0;
    round->first_claim = true;
    round->claim = true;
    if ((rc = tp_db_listen(round->db, TP_OUTBOX_CHANNEL)) != 0)
        return fail(round, rc, "listen");
    if ((rc = tp_db_exec(round->db, "SELECT pg_advisory_lock_shared(" PRESENCE_KEY ", 0)", 0, NULL, NULL)) != 0)
        return fail(round, rc, "presence lock");
    return 0;
}

/* Appends "{a,b,...}" of n integers ("{}" when n is 0) to *buf (grown as needed); 0 or TP_ENOMEM. */
static int int_array(char **buf, size_t *len, size_t *cap, const int64_t *v, size_t n) {
    for (size_t i = 0; i <= n; i++) {
        char item[24];
        int k = i < n    ? snprintf(item, sizeof(item), "%s%" PRId64, i ? "," : "{", v[i])
                : n == 0 ? snprintf(item, sizeof(item), "{}")
                         : snprintf(item, sizeof(item), "}");
        if (*len + (size_t)k + 1 > *cap) {
            size_t ncap = *cap ? *cap * 2 : 256;
            char *bigger;
            while (*len + (size_t)k + 1 > ncap)
                ncap *= 2;
            if (!(bigger = realloc(*buf, ncap)))
                return TP_ENOMEM;
            *buf = bigger;
            *cap = ncap;
        }
        memcpy(*buf + *len, item, (size_t)k + 1);
        *len += (size_t)k;
    }
    return 0;
}

/* Three parallel arrays (slots, partitions, offsets) as text, for unnest. */
static int pos_arrays(const tp_outbox_pos *pos, size_t n, char *out[3]) {
    int64_t *v = malloc((n ? n : 1) * sizeof(*v));
    int rc = v ? 0 : TP_ENOMEM;
    for (int a = 0; a < 3; a++) {
        size_t len = 0, cap = 0;
        out[a] = NULL;
        if (rc != 0)
            continue;
        for (size_t i = 0; i < n; i++)
            v[i] = a == 0 ? pos[i].slot : a == 1 ? pos[i].partition : pos[i].next_offset;
        rc = int_array(&out[a], &len, &cap, v, n);
    }
    free(v);
    return rc;
}

/* The positions are written by the slot's holder only: never moved back here (a reconciliation
 * sets them). */
#define POSITIONS_UPSERT(filter, next)                                                             \
    "INSERT INTO receipt_topic_positions (topic, slot, partition, next_offset) "                  \
    "SELECT $2, s, p, o FROM unnest($3::int[], $4::int[], $5::bigint[]) AS x(s, p, o) " filter    \
    " ON CONFLICT (topic, slot, partition) DO UPDATE SET next_offset = " next ", updated_at = now()"

/* Only slots whose lock this session holds (a session silently replaced holds none). */
#define HELD_BY_ME                                                                                 \
    "WHERE s IN (SELECT objid::int FROM pg_locks WHERE locktype = 'advisory' AND granted "        \
    "AND objsubid = 2 AND classid = " SLOT_KEY " AND pid = pg_backend_pid())"

/* Marks the delivered rows published and stores the positions that allows, in one statement;
 * *pending gets whether committed receipts wait to be numbered (the same snapshot). */
static int mark(tp_outbox_round *round, bool *pending) {
    char *arr[3] = {NULL, NULL, NULL};
    const char *params[5];
    tp_res *res = NULL;
    int rc = pos_arrays(round->pos, round->n_pos, arr);
    if (rc != 0)
        return fail(round, rc, "mark");
    params[0] = round->mark_ids;
    params[1] = tp_config_get(round->cfg, "topic.receipts");
    params[2] = arr[0];
    params[3] = arr[1];
    params[4] = arr[2];
    rc = tp_db_query(round->db,
                     "WITH m AS (UPDATE receipt_outbox SET published_at = now() "
                     "WHERE receipt_id = ANY($1::text[]) AND published_at IS NULL RETURNING 1), "
                     "p AS (" POSITIONS_UPSERT(HELD_BY_ME, "GREATEST(receipt_topic_positions.next_offset, EXCLUDED.next_offset)")
                     " RETURNING 1) SELECT (SELECT count(*) FROM m), " TP_TLOG_SEQUENCE_PENDING_SQL,
                     5, params, &res);
    for (int a = 0; a < 3; a++)
        free(arr[a]);
    if (rc != 0)
        return fail(round, rc, "mark");
    tp_res_get_int64(res, 0, 0, &round->marked);
    *pending = strcmp(tp_res_get(res, 0, 1) ? tp_res_get(res, 0, 1) : "", "t") == 0;
    tp_res_free(res);
    return 0;
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
        round->session_replaced = true;
        round->slots_changed = true;
        memset(round->held, 0, sizeof(round->held));
        memset(round->reconcile, 0, sizeof(round->reconcile));
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
        round->reconcile[s] = false;
        round->slots_changed = true;
        held--;
        notify = true;
    }
    for (int s = 0; s < TP_OUTBOX_SLOTS && held < target; s++) {
        if (round->held[s] || (others & ((int64_t)1 << s)))
            continue;
        if (slot_lock(round, "pg_try_advisory_lock", s, &got) != 0)
            return round->rc;
        if (got) {
            round->slots_changed = true;
            round->held[s] = true;
            round->reconcile[s] = true; /* its last holder may have died between ack and mark */
            held++;
        }
    }
    /* A new session (a start, or a reconnect after its old one was lost) tells the others: slots
     * the old session held may now be free beyond this relay's share, and a relay that is idle
     * would otherwise not look for them until the next commit anywhere. */
    if (round->first_claim)
        notify = true;
    round->first_claim = false;
    if (notify && (rc = tp_db_exec(round->db, "SELECT pg_notify('" TP_OUTBOX_CHANNEL "', '')", 0, NULL, NULL)) != 0)
        return fail(round, rc, "notify");
    return 0;
}

/* ---- reconciliation with the topic's tail ------------------------------------------------ */

typedef struct found_ids {
    tp_codec *codec;
    char *arr; /* "{id,...}" */
    size_t len, cap, n, read;
} found_ids;

/* Receipt ids are prov_<uuid>: anything else (a record that is not ours) is not looked up. */
static bool plain_id(const char *id) {
    if (!*id || strlen(id) > 64)
        return false;
    for (; *id; id++)
        if (!((*id >= 'a' && *id <= 'z') || (*id >= 'A' && *id <= 'Z') || (*id >= '0' && *id <= '9') ||
              *id == '_' || *id == '-'))
            return false;
    return true;
}

static int found_record(void *arg, const tp_topic_record *r) {
    found_ids *f = arg;
    tp_receipt_record rec;
    char err[128];
    size_t need;
    f->read++;
    memset(&rec, 0, sizeof(rec));
    if (!r->value || tp_codec_decode_receipt(f->codec, r->value, r->len, &rec, err, sizeof(err)) != 0 ||
        !rec.receipt_id || !plain_id(rec.receipt_id)) {
        tp_receipt_record_release(&rec);
        return 0;
    }
    need = strlen(rec.receipt_id) + 4;
    if (f->len + need + 2 > f->cap) {
        size_t ncap = f->cap ? f->cap * 2 : 4096;
        char *bigger;
        while (f->len + need + 2 > ncap)
            ncap *= 2;
        if (!(bigger = realloc(f->arr, ncap))) {
            tp_receipt_record_release(&rec);
            return TP_ENOMEM;
        }
        f->arr = bigger;
        f->cap = ncap;
    }
    if (f->len == 0)
        f->arr[f->len++] = '{';
    f->len += (size_t)snprintf(f->arr + f->len, f->cap - f->len, "%s\"%s\"", f->n ? "," : "", rec.receipt_id);
    f->n++;
    tp_receipt_record_release(&rec);
    return 0;
}

/* The slots to reconcile as "{s,...}" and their count. */
static int reconcile_slots(const tp_outbox_round *round, char *buf, size_t cap) {
    size_t len = 0;
    int n = 0;
    buf[len++] = '{';
    for (int s = 0; s < TP_OUTBOX_SLOTS; s++)
        if (round->held[s] && round->reconcile[s])
            len += (size_t)snprintf(buf + len, cap - len, "%s%d", n++ ? "," : "", s);
    snprintf(buf + len, cap - len, "}");
    return n;
}

/* For the slots just taken: reads the receipts topic from their stored positions (the lowest of
 * them per partition; a partition without a position for one of them from its start) to the
 * high watermarks, marks every row of these slots whose receipt is already there, and stores
 * the high watermarks as their positions. Only relays write the topic and a slot has one holder,
 * so what a dead holder (or this relay's lost session) delivered without marking is found here
 * and never published again. A Kafka failure leaves the slots held and unreconciled (their rows
 * wait); a database failure fails the round. */
static int reconcile(tp_outbox_round *round) {
    char slots[TP_OUTBOX_SLOTS * 4 + 4], count[8], err[256] = "";
    const char *topic = tp_config_get(round->cfg, "topic.receipts");
    const char *params[5];
    char *arr[3] = {NULL, NULL, NULL};
    tp_outbox_pos *pos = NULL;
    found_ids found = {round->codec, NULL, 0, 0, 0, 0};
    tp_topic_read_opts opts = {false, 10000, NULL};
    tp_topic_range range = {NULL, TP_OUTBOX_PARTITIONS_MAX, round->end, TP_OUTBOX_PARTITIONS_MAX, 0};
    tp_res *res = NULL;
    int n_slots = reconcile_slots(round, slots, sizeof(slots)), n_parts = 0, rc;
    size_t n_pos = 0;

    if (n_slots == 0 || round->skip_reconcile)
        return 0;
    int64_t *from = calloc(TP_OUTBOX_PARTITIONS_MAX, sizeof(*from));
    if (!from)
        return fail(round, TP_ENOMEM, "reconcile");
    snprintf(count, sizeof(count), "%d", n_slots);
    params[0] = topic;
    params[1] = slots;
    params[2] = count;
    rc = tp_db_query(round->db,
                     "SELECT partition, CASE WHEN count(*) = $3::int THEN min(next_offset) ELSE 0 END "
                     "FROM receipt_topic_positions WHERE topic = $1 AND slot = ANY($2::int[]) GROUP BY partition",
                     3, params, &res);
    if (rc != 0) {
        free(from);
        return fail(round, rc, "reconcile positions");
    }
    for (int i = 0; i < tp_res_nrows(res); i++) {
        int64_t p = -1, off = 0;
        tp_res_get_int64(res, i, 0, &p);
        tp_res_get_int64(res, i, 1, &off);
        if (p >= 0 && p < TP_OUTBOX_PARTITIONS_MAX)
            from[p] = off;
    }
    tp_res_free(res);
    res = NULL;

    range.start = from;
    rc = tp_topic_read_range(round->cfg, topic, &opts, &range, found_record, &found, err, sizeof(err));
    n_parts = range.n_partitions;
    free(from);
    if (rc == 0 && n_parts > TP_OUTBOX_PARTITIONS_MAX) {
        snprintf(err, sizeof(err), "the topic has %d partitions (at most %d)", n_parts, TP_OUTBOX_PARTITIONS_MAX);
        rc = TP_ECONFIG;
    }
    if (rc != 0) {
        /* TP_ENOT_FOUND too: the topic is missing, nothing is published until it exists. */
        tp_log_warn("relay", "reconciling slots %s with %s: %s (%s): their receipts wait", slots, topic,
                    tp_strerror(rc), err);
        round->reconcile_rc = rc;
        free(found.arr);
        return 0;
    }
    if (found.n == 0) {
        free(found.arr);
        found.arr = strdup("{}");
        if (!found.arr)
            return fail(round, TP_ENOMEM, "reconcile");
    } else {
        found.arr[found.len++] = '}';
        found.arr[found.len] = '\0';
    }
    pos = calloc((size_t)(n_slots * (n_parts ? n_parts : 1)), sizeof(*pos));
    if (!pos) {
        free(found.arr);
        return fail(round, TP_ENOMEM, "reconcile");
    }
    for (int s = 0; s < TP_OUTBOX_SLOTS; s++)
        if (round->held[s] && round->reconcile[s])
            for (int p = 0; p < n_parts; p++)
                pos[n_pos++] = (tp_outbox_pos){s, p, round->end[p]};
    rc = pos_arrays(pos, n_pos, arr);
    free(pos);
    if (rc != 0) {
        free(found.arr);
        return fail(round, rc, "reconcile");
    }
    params[0] = found.arr;
    params[1] = topic;
    params[2] = arr[0];
    params[3] = arr[1];
    params[4] = arr[2];
    /* One statement: the marks and the positions commit together. The reconciled slots are
     * those of the positions written ($3). */
    rc = tp_db_query(round->db,
                     "WITH m AS (UPDATE receipt_outbox SET published_at = now() "
                     "WHERE receipt_id = ANY($1::text[]) AND published_at IS NULL AND " TP_OUTBOX_SLOT_SQL
                     " = ANY($3::int[]) RETURNING 1), "
                     "p AS (" POSITIONS_UPSERT("", "EXCLUDED.next_offset") " RETURNING 1) "
                     "SELECT (SELECT count(*) FROM m)",
                     5, params, &res);
    free(found.arr);
    for (int a = 0; a < 3; a++)
        free(arr[a]);
    if (rc != 0)
        return fail(round, rc, "reconcile mark");
    tp_res_get_int64(res, 0, 0, &round->reconciled_marked);
    tp_res_free(res);
    round->reconciled_read = found.read;
    round->n_partitions = n_parts;
    for (int s = 0; s < TP_OUTBOX_SLOTS; s++)
        if (round->held[s] && round->reconcile[s]) {
            round->reconciled[s] = true;
            round->slots_changed = true;
            round->reconcile[s] = false;
        }
    return 0;
}

static int read_row(tp_outbox_row *row, const tp_res *res, int i) {
    tp_receipt_record *rec = &row->rec;
    int64_t slot = 0;
    int rc;
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
    if (tp_res_isnull(res, i, 11) || tp_res_get_int64(res, i, 11, &row->leaf_index) != 0) {
        row->leaf_index = -1;
        row->bad = true; /* never published without its leaf index (the fetch takes none) */
    }
    if (!rec->receipt_id || !rec->tenant_id)
        return TP_ENOMEM;
    rec->payload_type = strdup(TP_RECEIPT_PAYLOAD_TYPE);
    rc = tp_res_get_bytea(res, i, 8, &rec->payload, &rec->payload_len);
    if (rc == TP_ENOMEM)
        return rc;
    if (rc != 0 || !rec->action_type || !rec->request_id || !rec->previous_hash || !rec->hash ||
        !rec->payload_type || parse_signatures(rec, tp_res_get(res, i, 9)) != 0)
        row->bad = true;
    return 0;
}

/* The columns read_row reads, from receipt_outbox or from the sequencer's u (the same columns),
 * and the rows a round fetches: unpublished, numbered, of the slots it holds and reconciled ($2). */
#define FETCH_COLS                                                                                 \
    "receipt_id, action_type, tenant_id, request_id, sequence, previous_hash, hash, "             \
    "coalesce(signed_at_ms, (extract(epoch FROM (convert_from(payload, 'UTF8')::jsonb "          \
    "#>> '{predicate,timestamp}')::timestamptz) * 1000)::bigint) AS ts, "                         \
    "payload, (envelope->'signatures')::text AS signatures, "                                     \
    TP_OUTBOX_SLOT_SQL " AS slot, leaf_index"
#define FETCH_WHERE                                                                                \
    "published_at IS NULL AND leaf_index >= $3::bigint AND " TP_OUTBOX_SLOT_SQL " = ANY($2::int[])"

/* The held, reconciled slots as "{s,...}" and as round->fetched_mask; the leaf the fetch starts
 * from as from (round->from_leaf while the slots are those it was learned for, else 0); returns
 * the slots' count. */
static int fetch_slots(tp_outbox_round *round, char *buf, size_t cap, char from[24]) {
    size_t len = 0;
    int n = 0;
    round->fetched_mask = 0;
    buf[len++] = '{';
    for (int s = 0; s < TP_OUTBOX_SLOTS; s++) {
        if (round->held[s] && !round->reconcile[s]) {
            len += (size_t)snprintf(buf + len, cap - len, "%s%d", n++ ? "," : "", s);
            round->fetched_mask |= (uint32_t)1 << s;
        }
    }
    snprintf(buf + len, cap - len, "}");
    snprintf(from, 24, "%lld", round->fetched_mask == round->from_mask ? (long long)round->from_leaf : 0LL);
    return n;
}

/* Takes the rows of res (those with a receipt id: the numbering statement answers one row with
 * NULLs when it fetched none) into round->rows. */
static int take_rows(tp_outbox_round *round, const tp_res *res) {
    round->rows = calloc((size_t)tp_res_nrows(res) + 1, sizeof(*round->rows));
    if (!round->rows)
        return TP_ENOMEM;
    for (int i = 0; i < tp_res_nrows(res); i++) {
        if (tp_res_isnull(res, i, 0))
            continue;
        int rc = read_row(&round->rows[round->n_rows], res, i);
        round->n_rows++;
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* The next rows of the held, reconciled slots, numbered by earlier transactions. */
static int fetch(tp_outbox_round *round) {
    char limit[16], slots[TP_OUTBOX_SLOTS * 4 + 4], from[24];
    const char *params[3] = {limit, slots, from};
    tp_res *res = NULL;
    int rc;
    if (fetch_slots(round, slots, sizeof(slots), from) == 0)
        return 0;
    snprintf(limit, sizeof(limit), "%d", round->limit);
    /* The counter in the same snapshot: every leaf below it is committed, so visible here. */
    rc = tp_db_query(round->db,
                     "SELECT " FETCH_COLS ", (SELECT next_leaf FROM tlog_counter WHERE id = 1) "
                     "FROM receipt_outbox WHERE " FETCH_WHERE
                     " ORDER BY tenant_id, sequence LIMIT $1::int",
                     3, params, &res);
    if (rc != 0)
        return fail(round, rc, "fetch");
    if (tp_res_nrows(res) > 0 && tp_res_get_int64(res, 0, 12, &round->next_leaf) != 0) {
        tp_res_free(res);
        return fail(round, TP_EDB_PERMANENT, "fetch");
    }
    rc = take_rows(round, res);
    tp_res_free(res);
    return rc != 0 ? fail(round, rc, "fetch") : 0;
}

/* The sequencer and the fetch in one statement, after the counter lock (queued ahead of it):
 * numbers up to TP_OUTBOX_SEQUENCE_BATCH committed receipts of every tenant (a held slot's holder
 * may be idle) and answers the round's rows: those it numbered of the held, reconciled slots with
 * those numbered before (its snapshot does not see its own numbering), the first round->limit in
 * (tenant, sequence) order, as a fetch after the COMMIT would find them; the count it numbered
 * and the log's next leaf after it come as the last two columns of every row. The caller commits
 * before any row goes out. */
static int sequence_and_fetch(tp_outbox_round *round) {
    char limit[16], slots[TP_OUTBOX_SLOTS * 4 + 4], batch[16], from[24];
    const char *params[4] = {limit, slots, from, batch};
    tp_res *res = NULL;
    int rc;
    fetch_slots(round, slots, sizeof(slots), from);
    snprintf(limit, sizeof(limit), "%d", round->limit);
    snprintf(batch, sizeof(batch), "%d", TP_OUTBOX_SEQUENCE_BATCH);
    if ((rc = tp_db_exec_queued(round->db, TP_TLOG_SEQUENCE_LOCK_SQL, 0, NULL, NULL, NULL)) != 0)
        return fail(round, rc, "sequence");
    rc = tp_db_query(round->db,
                     "WITH " TP_TLOG_SEQUENCE_CTES("$4") ", "
                     "f AS ((SELECT " FETCH_COLS " FROM u WHERE " TP_OUTBOX_SLOT_SQL " = ANY($2::int[])) "
                     "UNION ALL (SELECT " FETCH_COLS " FROM receipt_outbox WHERE " FETCH_WHERE
                     " ORDER BY tenant_id, sequence LIMIT $1::int)) "
                     "SELECT f.*, k.numbered, coalesce((SELECT next_leaf FROM c), "
                     "(SELECT next_leaf FROM tlog_counter WHERE id = 1)) "
                     "FROM (SELECT count(*) AS numbered FROM u) k LEFT JOIN "
                     "(SELECT * FROM f ORDER BY tenant_id, sequence LIMIT $1::int) f ON true "
                     "ORDER BY f.tenant_id, f.sequence",
                     4, params, &res);
    if (rc != 0)
        return fail(round, rc, "sequence");
    if (tp_res_nrows(res) < 1 || tp_res_get_int64(res, 0, 12, &round->sequenced) != 0 ||
        tp_res_get_int64(res, 0, 13, &round->next_leaf) != 0) {
        tp_res_free(res);
        return fail(round, TP_EDB_PERMANENT, "sequence");
    }
    round->sequence_more = round->sequenced >= TP_OUTBOX_SEQUENCE_BATCH;
    rc = take_rows(round, res);
    tp_res_free(res);
    return rc != 0 ? fail(round, rc, "sequence") : 0;
}

/* Marks, the sequencer and the fetch: at most ONE transaction, so a round makes at most one
 * durable commit. Marks only (no fetch): the mark statement alone. Otherwise: the marks (when
 * any) tell in the same statement whether committed receipts wait to be numbered (without marks
 * a read asks); when some wait, the counter lock, then the numbering statement that also
 * fetches; when none, the plain fetch; and the NOTIFY to the other relays when one is owed (sent
 * at COMMIT, after the numbering is visible); then COMMIT. Nothing to mark and nothing to
 * number: reads only, no write, no commit to flush. Rows go out only once COMMIT succeeded (a
 * failure frees them), so no relay publishes a leaf index that is not committed. */
static int publish_round(tp_outbox_round *round, bool *notified) {
    bool pending = false, tx;
    int rc;
    *notified = false;
    if (!round->fetch)
        return round->mark_ids ? mark(round, &pending) : 0; /* autocommit: its own commit */
    if (round->mark_ids) {
        if ((rc = tp_db_begin(round->db)) != 0)
            return fail(round, rc, "begin");
        if ((rc = mark(round, &pending)) != 0)
            goto out_fail;
    } else {
        if ((rc = tp_tlog_db_sequence_pending(round->db, &pending)) != 0)
            return fail(round, rc, "sequence");
        if (pending && (rc = tp_db_begin(round->db)) != 0)
            return fail(round, rc, "begin");
    }
    tx = tp_db_in_tx(round->db);
    if ((rc = pending ? sequence_and_fetch(round) : fetch(round)) != 0)
        goto out_fail;
    if (!tx)
        return 0; /* nothing marked, nothing numbered: reads only */
    if (round->notify_others) {
        /* Delivered at COMMIT: the others find the rows of their slots numbered. */
        if ((rc = tp_db_exec_queued(round->db, "SELECT pg_notify('" TP_OUTBOX_CHANNEL "', '')", 0,
                                    NULL, NULL, NULL)) != 0) {
            fail(round, rc, "notify");
            goto out_fail;
        }
        *notified = true;
    }
    if ((rc = tp_db_commit(round->db)) != 0) {
        fail(round, rc, "commit");
        goto out_fail;
    }
    return 0;
out_fail:
    /* Its numbering may not be committed (a lost COMMIT answer too): none of its rows goes out;
     * the caller closes the session. */
    tp_db_rollback(round->db);
    tp_outbox_round_rows_free(round);
    round->sequenced = 0;
    round->sequence_more = false;
    *notified = false;
    return round->rc;
}

void tp_outbox_round_run(tp_outbox_round *round) {
    bool notified = false;
    round->rc = 0;
    round->failed_step = NULL;
    round->marked = 0;
    round->rows = NULL;
    round->n_rows = 0;
    round->reconcile_rc = 0;
    round->session_replaced = false;
    round->reconciled_marked = 0;
    round->reconciled_read = 0;
    round->n_partitions = 0;
    round->sequenced = 0;
    round->sequence_more = false;
    round->fetched_mask = 0;
    round->next_leaf = -1;
    round->slots_changed = false;
    memset(round->reconciled, 0, sizeof(round->reconciled));
    if (!round->db && session_start(round) != 0)
        return;
    if (round->claim && claim(round) != 0)
        return;
    if (reconcile(round) != 0)
        return;
    if (publish_round(round, &notified) != 0)
        return;
    if (round->notify_others && !notified) {
        int rc = tp_db_exec(round->db, "SELECT pg_notify('" TP_OUTBOX_CHANNEL "', '')", 0, NULL, NULL);
        if (rc != 0 && fail(round, rc, "notify") != 0)
            return;
    }
}

void tp_outbox_checkpoint_run(tp_outbox_checkpoint_job *job) {
    char err[256];
    job->rc = 0;
    job->err[0] = '\0';
    job->note = NULL;
    if (!job->db && tp_db_connect_cfg(job->cfg, &job->db, err, sizeof(err)) != 0) {
        job->db = NULL;
        job->rc = TP_EDB;
        snprintf(job->err, sizeof(job->err), "%s", err);
        return;
    }
    job->rc = tp_tlog_db_checkpoint(job->db, job->signer, tp_config_get(job->cfg, "tlog.origin"),
                                    &job->note, &job->cp);
    if (job->rc != 0 && job->rc != TP_ENOMEM) {
        snprintf(job->err, sizeof(job->err), "%s", tp_db_errmsg(job->db));
        tp_db_close(job->db); /* a fresh connection next time */
        job->db = NULL;
    }
}

void tp_outbox_round_rows_free(tp_outbox_round *round) {
    for (size_t i = 0; i < round->n_rows; i++)
        tp_receipt_record_release(&round->rows[i].rec);
    free(round->rows);
    round->rows = NULL;
    round->n_rows = 0;
}
