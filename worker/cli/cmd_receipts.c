/* cmd_receipts.c: `tpctl receipts verify|tail|prove`: checks receipts (signatures, chain per
 * tenant, duplicates) and prints them as JSON lines, reading either the receipts topic from the
 * beginning (Avro ProvenanceReceipt records, group-less) or a JSON-lines file; with the topic,
 * verify also audits the transparency log against the signed checkpoints of the checkpoints
 * topic (tlog/audit.c); prove prints a receipt's inclusion proof from the database. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/cli_common.h"
#include "tp/codec.h"
#include "tp/config.h"
#include "tp/error.h"
#include "tp/receipts.h"
#include "tp/receipts_reader.h"
#include "tp/store.h"
#include "tp/tlog.h"
#include "tp/tlog_db.h"

#include <jansson.h>
#include <sodium.h>

static void receipts_usage(FILE *out) {
    fprintf(out,
            "usage: tpctl receipts [--config FILE] verify [--topic T [--checkpoints C | --no-log] | --file F]\n"
            "                                             [--keyset K] [--quiet]\n"
            "       tpctl receipts [--config FILE] tail [--topic T [--follow] | --file F]\n"
            "       tpctl receipts [--config FILE] prove RECEIPT_ID\n"
            "  verify: checks every signature (key set: --keyset, else receipts.keyset_file /\n"
            "          TP_RECEIPTS_KEYSET_FILE), every chain link and sequence per tenant; prints a\n"
            "          summary; exit 1 on any break. Re-published receipt ids count as duplicates.\n"
            "          Reading the topic, it also audits the transparency log: every checkpoint of\n"
            "          C (else topic.checkpoints) must be signed by a key of the set and have the\n"
            "          root of that many receipts (by their leaf-index header); a leaf below the\n"
            "          latest checkpoint missing from the topic (a dropped tail), two checkpoints of\n"
            "          one size with different roots (a fork) or one that does not extend the\n"
            "          earlier ones is a break. Receipts without the header (made before the log\n"
            "          existed) are counted, not placed. --no-log skips the audit.\n"
            "  prove:  prints RECEIPT_ID's inclusion proof in the latest checkpoint (JSON: leaf\n"
            "          index, leaf hash, proof, and the signed checkpoint note) from pg.dsn.\n"
            "  tail:   prints the receipts as JSON lines with the decoded statement.\n"
            "  Without --file both read the receipts topic (--topic, else topic.receipts) from the\n"
            "  beginning to its current end (tail --follow: until interrupted). An undecodable\n"
            "  record is a break naming its topic, partition and offset. F is a JSON-lines file of\n"
            "  receipts (the format tail prints; - for stdin). Exit 0 ok, 1 break, 2 usage or I/O.\n");
}

int tpctl_receipts_verify_views(tp_verifier *v, const tp_receipt_view *views, size_t n) {
    int worst = 0;
    for (size_t i = 0; i < n; i++) {
        int rc = tp_verifier_feed(v, &views[i]);
        if (rc == TP_ENOMEM)
            return rc;
        if (rc != 0)
            worst = rc;
    }
    return worst;
}

int tpctl_receipts_view_from_record(const tp_receipt_record *rec, tp_receipt_view *view,
                                    tp_receipt_sig *sigs, size_t sigs_cap) {
    if (!rec || !view || (rec->n_signatures && (!sigs || !rec->signatures)))
        return TP_EINVAL;
    if (rec->n_signatures > sigs_cap)
        return TP_EINVAL;
    for (size_t i = 0; i < rec->n_signatures; i++)
        sigs[i] = (tp_receipt_sig){.keyid = rec->signatures[i].keyid,
                                   .sig = rec->signatures[i].sig,
                                   .sig_len = rec->signatures[i].sig_len};
    *view = (tp_receipt_view){
        .receipt_id = rec->receipt_id,
        .action_type = rec->action_type,
        .tenant_id = rec->tenant_id,
        .request_id = rec->request_id,
        .sequence = rec->sequence,
        .prev_hash_hex = rec->previous_hash,
        .hash_hex = rec->hash,
        .timestamp_ms = rec->timestamp_ms,
        .payload_type = rec->payload_type,
        .payload = rec->payload,
        .payload_len = rec->payload_len,
        .sigs = sigs,
        .n_sigs = rec->n_signatures,
    };
    return 0;
}

int tpctl_receipts_verify_records(tp_verifier *v, const tp_receipt_record *recs, size_t n) {
    int worst = 0;
    for (size_t i = 0; i < n; i++) {
        tp_receipt_sig sigs[TP_RECEIPT_SIGNATURES_MAX];
        tp_receipt_view view;
        int rc = tpctl_receipts_view_from_record(&recs[i], &view, sigs, TP_RECEIPT_SIGNATURES_MAX);
        if (rc != 0)
            return rc; /* the codec bounds signatures, so this is a caller bug */
        rc = tp_verifier_feed(v, &view);
        if (rc == TP_ENOMEM)
            return rc;
        if (rc != 0)
            worst = rc;
    }
    return worst;
}

int tpctl_receipts_tail_views(FILE *out, const tp_receipt_view *views, size_t n) {
    for (size_t i = 0; i < n; i++) {
        char *line = NULL;
        int rc = tp_receipt_to_jsonl(&views[i], &line);
        if (rc != 0)
            return rc;
        fprintf(out, "%s\n", line);
        free(line);
    }
    return fflush(out) == 0 ? 0 : TP_EIO;
}

void tpctl_receipts_print_summary(FILE *out, const tp_verify_summary *sum) {
    fprintf(out, "tenants: %zu\nreceipts: %zu\nduplicates: %zu\nerrors: %zu\nfirst error: %s\nresult: %s\n",
            sum->tenants, sum->receipts, sum->duplicates, sum->errors,
            sum->errors ? sum->first_error : "none", sum->errors ? "BROKEN" : "OK");
}

static void print_error(void *arg, const char *receipt_id, const char *text);

/* State shared by both inputs. Breaks found outside the verifier (unreadable lines, undecodable
 * records, a key that is not the tenant id) are counted here and merged into the summary. */
typedef struct read_state {
    tp_verifier *v;        /* verify mode; NULL: tail */
    tp_codec *codec;       /* topic input */
    size_t bad;            /* breaks found outside the verifier */
    size_t undecodable;    /* records/lines that were not receipts */
    char first_bad[512];   /* the first such break, when it came before any verifier break */
    char where[160];       /* position of the record being fed ("topic[p]@offset" or "file:line") */
    char first_where[160]; /* position of the first break of any kind */
    int quiet;
    tp_tlog_audit *audit;  /* verify from a topic: the log audit's leaves */
    size_t before_log;     /* receipts without a leaf-index header: made before the log existed */
} read_state;

static void print_error(void *arg, const char *receipt_id, const char *text) {
    read_state *st = arg;
    (void)receipt_id;
    if (!st->first_where[0])
        snprintf(st->first_where, sizeof(st->first_where), "%s", st->where);
    if (!st->quiet)
        fprintf(stderr, "BREAK %s (at %s)\n", text, st->where);
}

/* Records a break the verifier cannot see (text names where it is). */
static void outside_break(read_state *st, const char *text) {
    tp_verify_summary sum = {0};
    if (!st->quiet)
        fprintf(stderr, "BREAK %s\n", text);
    if (st->v)
        tp_verifier_summary(st->v, &sum);
    if (!st->first_where[0])
        snprintf(st->first_where, sizeof(st->first_where), "%s", st->where);
    if (st->bad++ == 0 && sum.errors == 0)
        snprintf(st->first_bad, sizeof(st->first_bad), "%s", text);
}

/* Feeds one view to the verifier or prints it. Returns 0 or a fatal TP_E* code. */
static int take_view(read_state *st, const tp_receipt_view *view) {
    int rc = st->v ? tpctl_receipts_verify_views(st->v, view, 1) : tpctl_receipts_tail_views(stdout, view, 1);
    return rc == TP_EVERIFY ? 0 : rc;
}

/* Reads path line by line; each receipt goes to the verifier (st->v != NULL) or to stdout. */
static int run_file(const char *path, read_state *st) {
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
    char *line = NULL, errstr[256];
    size_t cap = 0, lineno = 0;
    ssize_t n;
    int rc = 0;
    if (!f) {
        fprintf(stderr, "tpctl receipts: cannot open %s\n", path);
        return TP_EIO;
    }
    while ((n = getline(&line, &cap, f)) >= 0) {
        tp_receipt_doc *d = NULL;
        lineno++;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            n--;
        if (n == 0)
            continue;
        snprintf(st->where, sizeof(st->where), "%.120s:%zu", path, lineno);
        rc = tp_receipt_doc_parse(line, (size_t)n, &d, errstr, sizeof(errstr));
        if (rc == TP_ENOMEM)
            break;
        if (rc != 0) {
            char text[512];
            snprintf(text, sizeof(text), "%.150s line %zu: not a receipt: %.250s", path, lineno, errstr);
            outside_break(st, text);
            st->undecodable++;
            rc = 0;
            continue;
        }
        rc = take_view(st, tp_receipt_doc_view(d));
        tp_receipt_doc_free(d);
        if (rc != 0)
            break;
    }
    if (rc == 0 && ferror(f))
        rc = TP_EIO;
    free(line);
    if (f != stdin)
        fclose(f);
    return rc;
}

/* One record of the topic: decode, check the key, feed or print. */
static int on_record(void *arg, const tp_topic_record *rec) {
    read_state *st = arg;
    tp_receipt_record dec;
    tp_receipt_sig sigs[TP_RECEIPT_SIGNATURES_MAX];
    tp_receipt_view view;
    char errstr[256], text[512];
    int rc;

    snprintf(st->where, sizeof(st->where), "%.120s[%d]@%lld", rec->topic, (int)rec->partition,
             (long long)rec->offset);
    memset(&dec, 0, sizeof(dec));
    errstr[0] = '\0';
    rc = rec->value ? tp_codec_decode_receipt(st->codec, rec->value, rec->len, &dec, errstr, sizeof(errstr))
                    : TP_EDECODE_FRAMING;
    if (rc == TP_ENOMEM) {
        tp_receipt_record_release(&dec);
        return rc;
    }
    if (rc != 0) {
        snprintf(text, sizeof(text), "record at topic %.120s, partition %d, offset %lld is not a "
                 "ProvenanceReceipt: %.200s", rec->topic, (int)rec->partition, (long long)rec->offset,
                 errstr[0] ? errstr : tp_strerror(rc));
        outside_break(st, text);
        st->undecodable++;
        tp_receipt_record_release(&dec);
        return 0;
    }
    rc = tpctl_receipts_view_from_record(&dec, &view, sigs, TP_RECEIPT_SIGNATURES_MAX);
    if (rc == 0 && st->v &&
        (!rec->key || rec->key_len != strlen(dec.tenant_id) || memcmp(rec->key, dec.tenant_id, rec->key_len) != 0)) {
        /* The key decides the partition, and so the order the chain is read in. */
        snprintf(text, sizeof(text), "receipt %.100s (tenant %.100s, sequence %lld): record key is not "
                 "the tenant id (at %s)", dec.receipt_id, dec.tenant_id, (long long)dec.sequence, st->where);
        outside_break(st, text);
    }
    if (rc == 0 && st->audit) {
        /* Its place in the log: the leaf-index header (-1 when malformed). A receipt without
         * one was made before the log existed; stripping it from a later receipt leaves its leaf
         * missing, which the audit reports. */
        const void *hv = NULL;
        size_t hlen = 0;
        int64_t index = -1;
        unsigned char leaf[TP_TLOG_HASH_LEN];
        if (tp_topic_record_header(rec, "leaf-index", &hv, &hlen) != 0) {
            st->before_log++;
        } else {
            if (hlen > 0 && hlen <= 18) {
                index = 0;
                for (size_t i = 0; i < hlen && index >= 0; i++) {
                    char ch = ((const char *)hv)[i];
                    index = (ch >= '0' && ch <= '9') ? index * 10 + (ch - '0') : -1;
                }
            }
            rc = tp_tlog_receipt_leaf_hash(dec.payload, dec.payload_len, leaf);
            if (rc == 0)
                rc = tp_tlog_audit_leaf(st->audit, index, leaf, dec.receipt_id, st->where);
        }
    }
    if (rc == 0)
        rc = take_view(st, &view);
    tp_receipt_record_release(&dec);
    return rc;
}

/* ---- the transparency log's checkpoints -------------------------------------------------------- */

typedef struct cp_state {
    read_state *st;
    const tp_keyset *ks;
    tp_codec *codec;
    size_t records;
} cp_state;

/* The key of the set that signed sig for a note named name, or NULL. */
static const unsigned char *note_signer(const tp_keyset *ks, const tp_note_sig *sig, const char *body,
                                        size_t body_len) {
    for (size_t i = 0; i < tp_keyset_count(ks); i++) {
        const char *keyid;
        const unsigned char *pk;
        tp_keyset_get(ks, i, &keyid, &pk);
        if (tp_note_sig_verify(sig, sig->name, pk, body, body_len))
            return pk;
    }
    return NULL;
}

static int on_checkpoint(void *arg, const tp_topic_record *rec) {
    cp_state *cs = arg;
    read_state *st = cs->st;
    tp_checkpoint_record dec;
    tp_note note;
    tp_checkpoint cp;
    char errstr[256] = "", text[600];
    bool signed_ok = false;
    int rc;
    cs->records++;
    snprintf(st->where, sizeof(st->where), "%.120s[%d]@%lld", rec->topic, (int)rec->partition,
             (long long)rec->offset);
    rc = rec->value ? tp_codec_decode_checkpoint(cs->codec, rec->value, rec->len, &dec, errstr, sizeof(errstr))
                    : TP_EDECODE_FRAMING;
    if (rc == TP_ENOMEM)
        return rc;
    if (rc != 0) {
        snprintf(text, sizeof(text), "checkpoint record at %s is not a TreeCheckpoint: %.200s", st->where,
                 errstr[0] ? errstr : tp_strerror(rc));
        outside_break(st, text);
        return 0;
    }
    rc = tp_note_parse(dec.note, strlen(dec.note), &note, errstr, sizeof(errstr));
    if (rc == 0)
        rc = tp_checkpoint_parse(dec.note, note.body_len, &cp, errstr, sizeof(errstr));
    if (rc != 0) {
        snprintf(text, sizeof(text), "checkpoint at %s: not a signed checkpoint note: %.200s", st->where, errstr);
        outside_break(st, text);
        tp_checkpoint_record_release(&dec);
        return 0;
    }
    /* The log's own signature: key name = origin, by a key of the set. */
    for (size_t i = 0; i < note.n_sigs && !signed_ok; i++)
        signed_ok = strcmp(note.sigs[i].name, cp.origin) == 0 &&
                    note_signer(cs->ks, &note.sigs[i], dec.note, note.body_len) != NULL;
    if (!signed_ok) {
        snprintf(text, sizeof(text), "checkpoint of size %lld at %s: no signature by %.100s with a key of "
                 "the key set verifies", (long long)cp.size, st->where, cp.origin);
        outside_break(st, text);
    } else {
        rc = tp_tlog_audit_checkpoint(st->audit, &cp, st->where);
    }
    tp_checkpoint_record_release(&dec);
    return rc == TP_ENOMEM ? rc : 0;
}

static void on_audit_error(void *arg, const char *text) { outside_break(arg, text); }

/* Reads the checkpoints topic and runs the log audit; prints its summary lines. */
static int audit_log(const tp_config *cfg, const char *topic, const tp_keyset *ks, read_state *st,
                     bool chains_gapless) {
    cp_state cs = {st, ks, NULL, 0};
    tp_tlog_audit_summary sum;
    char errstr[512] = "";
    int rc;
    cs.codec = tp_codec_new(tp_config_get(cfg, "codec.schema_dir"), "", errstr, sizeof(errstr));
    if (!cs.codec) {
        fprintf(stderr, "tpctl receipts: codec: %s\n", errstr);
        return TP_ECONFIG;
    }
    rc = tp_topic_read(cfg, topic, NULL, on_checkpoint, &cs, errstr, sizeof(errstr));
    tp_codec_free(cs.codec);
    if (rc == TP_ENOT_FOUND) {
        printf("log: no checkpoints topic %s: not audited\n", topic);
        return 0;
    }
    if (rc != 0) {
        if (errstr[0])
            fprintf(stderr, "tpctl receipts: %s\n", errstr);
        return rc;
    }
    st->where[0] = '\0'; /* the audit's findings name their own places */
    rc = tp_tlog_audit_finish(st->audit, chains_gapless, on_audit_error, st, &sum);
    if (rc == TP_ENOMEM)
        return rc;
    printf("log leaves: %lld\ncheckpoints: %zu\nlatest checkpoint size: %lld\nnot yet in a checkpoint: %lld\n"
           "made before the log: %zu\n",
           (long long)sum.leaves, sum.checkpoints, (long long)sum.latest_size, (long long)sum.not_yet,
           st->before_log);
    return 0;
}

static volatile sig_atomic_t follow_stop;

static void on_stop_signal(int sig) {
    (void)sig;
    follow_stop = 1;
}

static int run_topic(const tp_config *cfg, const char *topic, bool follow, read_state *st) {
    tp_topic_read_opts opts = {follow, 30000, &follow_stop};
    char errstr[512] = "";
    int rc;
    st->codec = tp_codec_new(tp_config_get(cfg, "codec.schema_dir"),
                             tp_config_get(cfg, "codec.confluent_schema_ids"), errstr, sizeof(errstr));
    if (!st->codec) {
        fprintf(stderr, "tpctl receipts: codec: %s\n", errstr);
        return TP_ECONFIG;
    }
    if (follow) {
        follow_stop = 0;
        signal(SIGINT, on_stop_signal);
        signal(SIGTERM, on_stop_signal);
    }
    rc = tp_topic_read(cfg, topic, &opts, on_record, st, errstr, sizeof(errstr));
    if (follow) {
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
    }
    if (rc != 0 && errstr[0])
        fprintf(stderr, "tpctl receipts: %s\n", errstr);
    tp_codec_free(st->codec);
    st->codec = NULL;
    return rc;
}

typedef struct receipts_args {
    const char *sub, *config, *file, *topic, *keyset, *checkpoints, *receipt_id;
    bool follow, no_log;
    int quiet;
} receipts_args;

static int cmd_verify(const receipts_args *a, const tp_config *cfg) {
    const char *keyset_path = a->keyset ? a->keyset : tp_config_get(cfg, "receipts.keyset_file");
    tp_keyset *ks = NULL;
    tp_verifier *v = NULL;
    tp_verify_summary sum;
    read_state st;
    char errstr[256] = "";
    int rc, exit_code = 2;

    memset(&st, 0, sizeof(st));
    rc = tp_keyset_load(keyset_path, &ks, errstr, sizeof(errstr));
    if (rc != 0) {
        fprintf(stderr, "tpctl receipts verify: %s\n", errstr[0] ? errstr : tp_strerror(rc));
        goto out;
    }
    rc = tp_verifier_new(ks, &v);
    if (rc != 0) {
        fprintf(stderr, "tpctl receipts verify: %s\n", tp_strerror(rc));
        goto out;
    }
    st.v = v;
    st.quiet = a->quiet;
    tp_verifier_set_error_cb(v, print_error, &st);
    if (!a->file && !a->no_log && (rc = tp_tlog_audit_new(&st.audit)) != 0)
        goto out;
    rc = a->file ? run_file(a->file, &st)
                 : run_topic(cfg, a->topic ? a->topic : tp_config_get(cfg, "topic.receipts"), false, &st);
    if (rc != 0) {
        fprintf(stderr, "tpctl receipts verify: %s\n", tp_strerror(rc));
        goto out;
    }
    tp_verifier_summary(v, &sum);
    if (st.audit) {
        rc = audit_log(cfg, a->checkpoints ? a->checkpoints : tp_config_get(cfg, "topic.checkpoints"), ks,
                       &st, sum.errors == 0 && st.bad == 0);
        if (rc != 0) {
            fprintf(stderr, "tpctl receipts verify: %s\n", tp_strerror(rc));
            goto out;
        }
    }
    if (st.bad) {
        if (st.first_bad[0])
            snprintf(sum.first_error, sizeof(sum.first_error), "%s", st.first_bad);
        sum.errors += st.bad;
        sum.receipts += st.undecodable;
    }
    if (sum.errors && st.first_where[0] && !strstr(sum.first_error, st.first_where)) {
        size_t len = strlen(sum.first_error);
        snprintf(sum.first_error + len, sizeof(sum.first_error) - len, " (at %s)", st.first_where);
    }
    tpctl_receipts_print_summary(stdout, &sum);
    exit_code = sum.errors ? 1 : 0;
out:
    tp_tlog_audit_free(st.audit);
    tp_verifier_free(v);
    tp_keyset_free(ks);
    return exit_code;
}

static json_t *b64_hash(const unsigned char h[TP_TLOG_HASH_LEN]) {
    char b64[sodium_base64_ENCODED_LEN(TP_TLOG_HASH_LEN, sodium_base64_VARIANT_ORIGINAL)];
    sodium_bin2base64(b64, sizeof(b64), h, TP_TLOG_HASH_LEN, sodium_base64_VARIANT_ORIGINAL);
    return json_string(b64);
}

/* `tpctl receipts prove ID`: the receipt's inclusion proof in the latest checkpoint, with the
 * signed note, as one JSON object: everything a third party needs besides the receipt itself
 * (leaf = SHA-256(0x00 || DSSE PAE of its envelope)) and the public key set. */
static int cmd_prove(const receipts_args *a, const tp_config *cfg) {
    unsigned char proof[TP_TLOG_MAX_PROOF][TP_TLOG_HASH_LEN], leaf[TP_TLOG_HASH_LEN];
    tp_checkpoint cp;
    tp_db *db = NULL;
    char errstr[256] = "", *note = NULL, *text = NULL;
    json_t *out = NULL, *arr;
    int64_t index = 0;
    size_t n = 0;
    int rc, code = 2;
    if ((rc = tp_db_connect_cfg(cfg, &db, errstr, sizeof(errstr))) != 0) {
        fprintf(stderr, "tpctl receipts prove: %s\n", errstr[0] ? errstr : tp_strerror(rc));
        return 2;
    }
    rc = tp_tlog_db_leaf(db, a->receipt_id, &index, leaf);
    if (rc == TP_ENOT_FOUND) {
        fprintf(stderr, "tpctl receipts prove: no receipt %s in the log\n", a->receipt_id);
        code = 1;
        goto out;
    }
    if (rc == 0)
        rc = tp_tlog_db_latest(db, &note, &cp);
    if (rc == TP_ENOT_FOUND) {
        fprintf(stderr, "tpctl receipts prove: no checkpoint has been signed yet\n");
        code = 1;
        goto out;
    }
    if (rc == 0 && index >= cp.size) {
        fprintf(stderr, "tpctl receipts prove: receipt %s is leaf %lld, after the latest checkpoint "
                "(size %lld): try again after the next one\n", a->receipt_id, (long long)index,
                (long long)cp.size);
        code = 1;
        goto out;
    }
    if (rc == 0)
        rc = tp_tlog_inclusion_proof(tp_tlog_db_read, db, index, cp.size, proof, &n);
    if (rc != 0) {
        fprintf(stderr, "tpctl receipts prove: %s (%s)\n", tp_strerror(rc), tp_db_errmsg(db));
        goto out;
    }
    arr = json_array();
    for (size_t i = 0; arr && i < n; i++)
        json_array_append_new(arr, b64_hash(proof[i]));
    out = json_pack("{s:s, s:I, s:o, s:I, s:o, s:o, s:s}", "receiptId", a->receipt_id, "leafIndex",
                    (json_int_t)index, "leafHash", b64_hash(leaf), "treeSize", (json_int_t)cp.size,
                    "rootHash", b64_hash(cp.root), "proof", arr, "checkpoint", note);
    text = out ? json_dumps(out, JSON_INDENT(2)) : NULL;
    if (!text) {
        fprintf(stderr, "tpctl receipts prove: out of memory\n");
        goto out;
    }
    printf("%s\n", text);
    code = 0;
out:
    free(text);
    json_decref(out);
    free(note);
    tp_db_close(db);
    return code;
}

static int cmd_tail(const receipts_args *a, const tp_config *cfg) {
    read_state st;
    int rc;
    memset(&st, 0, sizeof(st));
    rc = a->file ? run_file(a->file, &st)
                 : run_topic(cfg, a->topic ? a->topic : tp_config_get(cfg, "topic.receipts"), a->follow, &st);
    fflush(stdout);
    if (rc != 0) {
        fprintf(stderr, "tpctl receipts tail: %s\n", tp_strerror(rc));
        return 2;
    }
    return st.bad ? 1 : 0;
}

int tpctl_cmd_receipts(int argc, char **argv) {
    receipts_args a;
    tp_config *cfg;
    int i = 1, code;

    memset(&a, 0, sizeof(a));
    /* --config may come before or after the subcommand. */
    if (i + 1 < argc && strcmp(argv[i], "--config") == 0) {
        a.config = argv[i + 1];
        i += 2;
    }
    if (i >= argc) {
        receipts_usage(stderr);
        return 2;
    }
    a.sub = argv[i++];
    if (strcmp(a.sub, "--help") == 0 || strcmp(a.sub, "-h") == 0) {
        receipts_usage(stdout);
        return 0;
    }
    for (; i < argc; i++) {
        if (strcmp(argv[i], "--file") == 0 && i + 1 < argc) {
            a.file = argv[++i];
        } else if (strcmp(argv[i], "--keyset") == 0 && i + 1 < argc) {
            a.keyset = argv[++i];
        } else if (strcmp(argv[i], "--topic") == 0 && i + 1 < argc) {
            a.topic = argv[++i];
        } else if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            a.config = argv[++i];
        } else if (strcmp(argv[i], "--checkpoints") == 0 && i + 1 < argc) {
            a.checkpoints = argv[++i];
        } else if (strcmp(argv[i], "--no-log") == 0) {
            a.no_log = true;
        } else if (strcmp(argv[i], "--quiet") == 0) {
            a.quiet = 1;
        } else if (strcmp(argv[i], "--follow") == 0) {
            a.follow = true;
        } else if (strcmp(a.sub, "prove") == 0 && !a.receipt_id && argv[i][0] != '-') {
            a.receipt_id = argv[i];
        } else {
            receipts_usage(stderr);
            return 2;
        }
    }
    if ((strcmp(a.sub, "verify") != 0 && strcmp(a.sub, "tail") != 0 && strcmp(a.sub, "prove") != 0) ||
        (a.file && (a.topic || a.follow || a.checkpoints)) || (a.follow && strcmp(a.sub, "tail") != 0) ||
        ((a.checkpoints || a.no_log) && strcmp(a.sub, "verify") != 0) || (a.checkpoints && a.no_log) ||
        (strcmp(a.sub, "prove") == 0) != (a.receipt_id != NULL)) {
        receipts_usage(stderr);
        return 2;
    }
    cfg = tpctl_config_load(a.config);
    if (!cfg)
        return 2;
    code = strcmp(a.sub, "verify") == 0 ? cmd_verify(&a, cfg)
           : strcmp(a.sub, "prove") == 0 ? cmd_prove(&a, cfg)
                                          : cmd_tail(&a, cfg);
    tp_config_free(cfg);
    return code;
}
