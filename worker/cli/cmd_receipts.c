/* cmd_receipts.c: `tpctl receipts verify|tail`: checks receipts (signatures, chain per tenant,
 * duplicates) and prints them as JSON lines. Input today is a JSON-lines file; the Kafka topic
 * reader plugs into the *_views hooks once the Avro codec exists. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "tp/config.h"
#include "tp/error.h"
#include "tp/receipts.h"

static void receipts_usage(FILE *out) {
    fprintf(out,
            "usage: tpctl receipts verify --file F [--keyset K] [--quiet]\n"
            "       tpctl receipts tail --file F\n"
            "  verify: checks every signature (key set: --keyset, else receipts.keyset_file /\n"
            "          TP_RECEIPTS_KEYSET_FILE), every chain link and sequence per tenant; prints a\n"
            "          summary; exit 1 on any break. Re-published receipt ids count as duplicates.\n"
            "  tail:   prints the receipts as JSON lines with the decoded statement.\n"
            "  F is a JSON-lines file of receipts (the format tail prints). Reading the topic\n"
            "  directly is not wired yet.\n");
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

static void print_error(void *arg, const char *receipt_id, const char *text) {
    (void)receipt_id;
    if (!*(const int *)arg)
        fprintf(stderr, "BREAK %s\n", text);
}

typedef struct file_state {
    tp_verifier *v;        /* verify mode */
    size_t bad_lines;      /* unreadable lines */
    char first_bad[512];   /* the first unreadable line, when it came before any verifier break */
    int quiet;
} file_state;

/* Reads path line by line; each receipt goes to the verifier (v != NULL) or to stdout. */
static int run_file(const char *path, file_state *fs) {
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
        rc = tp_receipt_doc_parse(line, (size_t)n, &d, errstr, sizeof(errstr));
        if (rc == TP_ENOMEM)
            break;
        if (rc != 0) {
            tp_verify_summary sum = {0};
            char text[512];
            snprintf(text, sizeof(text), "%s line %zu: not a receipt: %s", path, lineno, errstr);
            if (!fs->quiet)
                fprintf(stderr, "BREAK %s\n", text);
            if (fs->v)
                tp_verifier_summary(fs->v, &sum);
            if (fs->bad_lines++ == 0 && sum.errors == 0)
                snprintf(fs->first_bad, sizeof(fs->first_bad), "%s", text);
            rc = 0;
            continue;
        }
        if (fs->v)
            rc = tpctl_receipts_verify_views(fs->v, tp_receipt_doc_view(d), 1);
        else
            rc = tpctl_receipts_tail_views(stdout, tp_receipt_doc_view(d), 1);
        tp_receipt_doc_free(d);
        if (rc == TP_EVERIFY)
            rc = 0;
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

static int cmd_verify(const char *file, const char *keyset_path, int quiet) {
    tp_config *cfg = NULL;
    tp_keyset *ks = NULL;
    tp_verifier *v = NULL;
    tp_verify_summary sum;
    file_state fs = {0};
    char errstr[256] = "";
    int rc, exit_code = 2;

    if (!keyset_path) {
        cfg = tp_config_new();
        if (!cfg || tp_config_apply_env(cfg, errstr, sizeof(errstr)) != 0) {
            fprintf(stderr, "tpctl receipts verify: %s\n", cfg ? errstr : "out of memory");
            goto out;
        }
        keyset_path = tp_config_get(cfg, "receipts.keyset_file");
    }
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
    fs.v = v;
    fs.quiet = quiet;
    tp_verifier_set_error_cb(v, print_error, &fs.quiet);
    rc = run_file(file, &fs);
    if (rc != 0) {
        fprintf(stderr, "tpctl receipts verify: %s\n", tp_strerror(rc));
        goto out;
    }
    tp_verifier_summary(v, &sum);
    if (fs.bad_lines) {
        if (fs.first_bad[0])
            snprintf(sum.first_error, sizeof(sum.first_error), "%s", fs.first_bad);
        sum.errors += fs.bad_lines;
        sum.receipts += fs.bad_lines;
    }
    tpctl_receipts_print_summary(stdout, &sum);
    exit_code = sum.errors ? 1 : 0;
out:
    tp_verifier_free(v);
    tp_keyset_free(ks);
    tp_config_free(cfg);
    return exit_code;
}

int tpctl_cmd_receipts(int argc, char **argv) {
    const char *sub, *file = NULL, *keyset = NULL;
    int quiet = 0;
    if (argc < 2) {
        receipts_usage(stderr);
        return 2;
    }
    sub = argv[1];
    if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0) {
        receipts_usage(stdout);
        return 0;
    }
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--file") == 0 && i + 1 < argc) {
            file = argv[++i];
        } else if (strcmp(argv[i], "--keyset") == 0 && i + 1 < argc) {
            keyset = argv[++i];
        } else if (strcmp(argv[i], "--quiet") == 0) {
            quiet = 1;
        } else {
            receipts_usage(stderr);
            return 2;
        }
    }
    if (strcmp(sub, "verify") != 0 && strcmp(sub, "tail") != 0) {
        receipts_usage(stderr);
        return 2;
    }
    if (!file) {
        /* TODO(kafka): read the receipts topic from the beginning via the codec and the *_views hooks. */
        fprintf(stderr, "tpctl receipts %s: reading the topic is not available yet; use --file F\n", sub);
        return 2;
    }
    if (strcmp(sub, "verify") == 0)
        return cmd_verify(file, keyset, quiet);
    {
        file_state fs = {0};
        int rc = run_file(file, &fs);
        if (rc != 0) {
            fprintf(stderr, "tpctl receipts tail: %s\n", tp_strerror(rc));
            return 2;
        }
        return fs.bad_lines ? 1 : 0;
    }
}
