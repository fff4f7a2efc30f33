/* test_receipts_cli.c: JSON-lines round trip and parser robustness, `tpctl keygen` (files, modes,
 * rotation into the key set) and `tpctl receipts verify|tail --file` exit codes and summaries. */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "cli/cli.h"
#include "receipts_fixture.h"
#include "tp/codec.h"
#include "tp/config.h"

/* Runs fn with stdout/stderr redirected into files; returns its exit code; out/err get the text. */
typedef int (*cmd_fn)(int, char **);
static int capture(cmd_fn fn, int argc, char **argv, const char *dir, char **out, char **err) {
    char op[400], ep[400];
    int so, se, fo, fe, code;
    size_t len;
    snprintf(op, sizeof(op), "%s/stdout.txt", dir);
    snprintf(ep, sizeof(ep), "%s/stderr.txt", dir);
    fflush(stdout);
    fflush(stderr);
    so = dup(1);
    se = dup(2);
    fo = open(op, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    fe = open(ep, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(so >= 0 && se >= 0 && fo >= 0 && fe >= 0);
    dup2(fo, 1);
    dup2(fe, 2);
    code = fn(argc, argv);
    fflush(stdout);
    fflush(stderr);
    dup2(so, 1);
    dup2(se, 2);
    close(so);
    close(se);
    close(fo);
    close(fe);
    assert_int_equal(tp_read_file(op, 1 << 20, out, &len), 0);
    assert_int_equal(tp_read_file(ep, 1 << 20, err, &len), 0);
    return code;
}

static int count_lines(const char *path) {
    char *buf = NULL;
    size_t len = 0;
    int n = 0;
    if (tp_read_file(path, 1 << 20, &buf, &len) != 0)
        return -1;
    for (size_t i = 0; i < len; i++)
        n += buf[i] == '\n';
    free(buf);
    return n;
}

static void test_jsonl_roundtrip(void **state) {
    fx_key k;
    fx_receipt r;
    char *line = NULL;
    tp_receipt_doc *d = NULL;
    const tp_receipt_view *v;
    (void)state;
    assert_int_equal(fx_key_new(&k), 0);
    assert_int_equal(fx_seal(k.signer, "ten_j", NULL, &r), 0);
    assert_int_equal(tp_receipt_to_jsonl(&r.view, &line), 0);
    assert_null(strchr(line, '\n'));
    assert_non_null(strstr(line, "\"statement\":{"));
    assert_int_equal(tp_receipt_doc_parse(line, strlen(line), &d, NULL, 0), 0);
    v = tp_receipt_doc_view(d);
    assert_string_equal(v->receipt_id, r.view.receipt_id);
    assert_string_equal(v->action_type, r.view.action_type);
    assert_string_equal(v->tenant_id, r.view.tenant_id);
    assert_string_equal(v->request_id, r.view.request_id);
    assert_int_equal(v->sequence, r.view.sequence);
    assert_int_equal(v->timestamp_ms, r.view.timestamp_ms);
    assert_string_equal(v->prev_hash_hex, r.view.prev_hash_hex);
    assert_string_equal(v->hash_hex, r.view.hash_hex);
    assert_string_equal(v->payload_type, TP_RECEIPT_PAYLOAD_TYPE);
    assert_int_equal(v->payload_len, r.view.payload_len);
    assert_memory_equal(v->payload, r.view.payload, v->payload_len);
    assert_int_equal(v->n_sigs, 1);
    assert_string_equal(v->sigs[0].keyid, r.sealed.keyid);
    assert_int_equal(v->sigs[0].sig_len, 64);
    assert_memory_equal(v->sigs[0].sig, r.sealed.sig, 64);
    tp_receipt_doc_free(d);
    free(line);
    fx_receipt_release(&r);
    fx_key_release(&k);
}

static void test_jsonl_rejects_and_mutations(void **state) {
    fx_key k;
    fx_receipt r;
    char *line = NULL, *copy, errstr[256];
    tp_receipt_doc *d = NULL;
    size_t len;
    const char *bad[] = {
        "", "[]", "{", "{\"sequence\":\"1\",\"envelope\":{}}", "{\"sequence\":1}",
        "{\"sequence\":1,\"envelope\":{\"payloadType\":\"x\",\"payload\":\"###\",\"signatures\":[]}}",
        "{\"sequence\":1,\"envelope\":{\"payloadType\":\"x\",\"payload\":\"\",\"signatures\":[1]}}",
        "{\"sequence\":1,\"receiptId\":5,\"envelope\":{\"payloadType\":\"x\",\"payload\":\"\",\"signatures\":[]}}",
        "{\"receiptId\":\"r\",\"actionType\":\"a\",\"tenantId\":\"t\",\"previousHash\":\"p\",\"hash\":\"h\","
        "\"timestampMs\":1,\"sequence\":1,\"envelope\":{\"payloadType\":\"x\",\"payload\":\"\",\"signatures\":[]}}",
        "{\"sequence\":1,\"sequence\":2,\"envelope\":{\"payloadType\":\"x\",\"payload\":\"\",\"signatures\":[]}}",
    };
    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        errstr[0] = '\0';
        assert_int_equal(tp_receipt_doc_parse(bad[i], strlen(bad[i]), &d, errstr, sizeof(errstr)), TP_EINVAL);
        assert_null(d);
        assert_true(errstr[0] != '\0');
    }
    /* Every single-byte corruption and every truncation of a good line: parse fails or the
     * verifier reports a break; never a crash or a leak (ASan). */
    assert_int_equal(fx_key_new(&k), 0);
    assert_int_equal(fx_seal(k.signer, "ten_m", NULL, &r), 0);
    assert_int_equal(tp_receipt_to_jsonl(&r.view, &line), 0);
    len = strlen(line);
    const fx_key *keys[1] = {&k};
    tp_keyset *ks = fx_keyset(keys, 1);
    copy = malloc(len + 1);
    size_t accepted = 0, accepted_outside = 0;
    /* The informative "statement" copy: the only span whose edits may go unnoticed. */
    size_t st_from = (size_t)(strstr(line, "\"statement\":") - line);
    size_t st_to = 0;
    for (const char *p = line; (p = strstr(p, ",\"tenantId\":")) != NULL; p++)
        st_to = (size_t)(p - line); /* the outer tenantId follows the statement */
    assert_true(st_from < st_to && st_to < len);
    for (size_t i = 0; i < len; i++) {
        for (int variant = 0; variant < 2; variant++) {
            size_t n = len;
            memcpy(copy, line, len + 1);
            if (variant == 0)
                copy[i] ^= 0x04;
            else
                n = i;
            if (tp_receipt_doc_parse(copy, n, &d, NULL, 0) == 0) {
                tp_verifier *v = NULL;
                tp_verify_summary sum;
                assert_int_equal(tp_verifier_new(ks, &v), 0);
                (void)tp_verifier_feed(v, tp_receipt_doc_view(d));
                tp_verifier_summary(v, &sum);
                accepted += sum.errors == 0;
                if (sum.errors == 0 && (i < st_from || i >= st_to) && variant == 0)
                    accepted_outside++;
                tp_verifier_free(v);
                tp_receipt_doc_free(d);
                d = NULL;
            }
        }
    }
    print_message("mutations accepted as valid: %zu of %zu (outside the statement copy: %zu)\n",
                  accepted, 2 * len, accepted_outside);
    assert_int_equal(accepted_outside, 0);
    free(copy);
    tp_keyset_free(ks);
    free(line);
    fx_receipt_release(&r);
    fx_key_release(&k);
}

static void test_cmd_keygen(void **state) {
    fx_key scratch;
    char dir[300], keyset[400], priv[400], *out = NULL, *err = NULL;
    struct stat st;
    tp_keyset *ks = NULL;
    (void)state;
    assert_int_equal(fx_key_new(&scratch), 0); /* only for its temp dir */
    snprintf(dir, sizeof(dir), "%s/keys", scratch.dir);
    snprintf(keyset, sizeof(keyset), "%s/receipts.keyset", dir);
    snprintf(priv, sizeof(priv), "%s/receipts.key", dir);
    char *argv1[] = {"keygen", "--out-dir", dir, NULL};
    assert_int_equal(capture(tpctl_cmd_keygen, 3, argv1, scratch.dir, &out, &err), 0);
    assert_memory_equal(out, "ed25519:", 8);
    assert_int_equal(strlen(out), 8 + 16 + 1);
    assert_int_equal(stat(priv, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(count_lines(keyset), 1);
    char first_id[64];
    snprintf(first_id, sizeof(first_id), "%.*s", 24, out);
    free(out);
    free(err);
    /* A second run refuses to clobber the key. */
    assert_int_equal(capture(tpctl_cmd_keygen, 3, argv1, scratch.dir, &out, &err), 2);
    assert_non_null(strstr(err, "--force"));
    free(out);
    free(err);
    /* Rotation: a new key, the key set keeps both. */
    char *argv2[] = {"keygen", "--out-dir", dir, "--force", NULL};
    assert_int_equal(capture(tpctl_cmd_keygen, 4, argv2, scratch.dir, &out, &err), 0);
    assert_memory_not_equal(out, first_id, 24);
    assert_int_equal(count_lines(keyset), 2);
    assert_int_equal(tp_keyset_load(keyset, &ks, NULL, 0), 0);
    assert_int_equal(tp_keyset_count(ks), 2);
    assert_non_null(tp_keyset_lookup(ks, first_id));
    tp_keyset_free(ks);
    free(out);
    free(err);
    {
        /* The rotation wrote validity windows: the old key closes after the overlap (default
         * 300 s), the new one opens now. */
        char *text = NULL;
        size_t len = 0;
        int64_t from, until;
        assert_int_equal(tp_read_file(keyset, 4096, &text, &len), 0);
        assert_non_null(strstr(text, " valid-until="));
        assert_non_null(strstr(text, " valid-from="));
        free(text);
        assert_int_equal(tp_keyset_load(keyset, &ks, NULL, 0), 0);
        assert_int_equal(tp_keyset_window(ks, first_id, &from, &until), 0);
        assert_true(from == INT64_MIN && until > 1700000000000LL && until < INT64_MAX);
        tp_keyset_free(ks);
    }
    {
        /* Rotate again with no overlap: receipts the retired key signed before keep verifying,
         * one it signs after its window does not; the newest key signs from now on. */
        tp_signer *old = NULL, *cur = NULL;
        fx_receipt a, b, c;
        tp_verifier *v = NULL;
        tp_verify_summary sum;
        struct timespec now;
        assert_int_equal(tp_signer_load(priv, &old), 0);
        clock_gettime(CLOCK_REALTIME, &now);
        int64_t before = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
        char *argv4[] = {"keygen", "--out-dir", dir, "--force", "--overlap-s", "0", NULL};
        assert_int_equal(capture(tpctl_cmd_keygen, 6, argv4, scratch.dir, &out, &err), 0);
        free(out);
        free(err);
        assert_int_equal(count_lines(keyset), 3);
        assert_int_equal(tp_signer_load(priv, &cur), 0);
        assert_int_equal(tp_keyset_load(keyset, &ks, NULL, 0), 0);
        clock_gettime(CLOCK_REALTIME, &now);
        int64_t later = (int64_t)now.tv_sec * 1000 + 60000;
        assert_int_equal(fx_seal_at(old, "t-old", NULL, before, &a), 0); /* in its window */
        assert_int_equal(fx_seal_at(old, "t-late", NULL, later, &b), 0); /* after its end */
        assert_int_equal(fx_seal_at(cur, "t-new", NULL, later, &c), 0);  /* the newest key */
        assert_int_equal(tp_verifier_new(ks, &v), 0);
        assert_int_equal(tp_verifier_feed(v, &a.view), 0);
        assert_int_equal(tp_verifier_feed(v, &c.view), 0);
        assert_int_equal(tp_verifier_feed(v, &b.view), TP_EVERIFY);
        tp_verifier_summary(v, &sum);
        assert_int_equal(sum.errors, 1);
        assert_non_null(strstr(sum.first_error, "outside its validity window"));
        tp_verifier_free(v);
        /* and the new key before its window opened */
        fx_receipt d;
        assert_int_equal(fx_seal(cur, "t-early", NULL, &d), 0);
        assert_int_equal(tp_verifier_new(ks, &v), 0);
        assert_int_equal(tp_verifier_feed(v, &d.view), TP_EVERIFY);
        tp_verifier_summary(v, &sum);
        assert_non_null(strstr(sum.first_error, "outside its validity window [20"));
        tp_verifier_free(v);
        fx_receipt_release(&a);
        fx_receipt_release(&b);
        fx_receipt_release(&c);
        fx_receipt_release(&d);
        tp_keyset_free(ks);
        tp_signer_free(old);
        tp_signer_free(cur);
    }
    char *argv3[] = {"keygen", NULL};
    assert_int_equal(capture(tpctl_cmd_keygen, 1, argv3, scratch.dir, &out, &err), 2);
    free(out);
    free(err);
    fx_rmdir(dir);
    fx_key_release(&scratch);
}

/* Writes a chain a1 b1 a2 b2 a3 b3 as JSON lines; lines[] get copies for tampering. */
static void write_chain(const fx_key *k, const char *path, int tamper_line, int drop_line) {
    fx_receipt a[3], b[3];
    FILE *f = fopen(path, "w");
    int n = 0;
    assert_non_null(f);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(fx_seal(k->signer, "ten_a", i ? &a[i - 1] : NULL, &a[i]), 0);
        assert_int_equal(fx_seal(k->signer, "ten_b", i ? &b[i - 1] : NULL, &b[i]), 0);
    }
    for (int i = 0; i < 3; i++) {
        const fx_receipt *pair[2] = {&a[i], &b[i]};
        for (int j = 0; j < 2; j++, n++) {
            char *line = NULL;
            assert_int_equal(tp_receipt_to_jsonl(&pair[j]->view, &line), 0);
            if (n == tamper_line) {
                /* Flip one base64 character of the payload. */
                char *p = strstr(line, "\"payload\":\"");
                assert_non_null(p);
                p += strlen("\"payload\":\"") + 40;
                *p = *p == 'A' ? 'B' : 'A';
            }
            if (n != drop_line)
                fprintf(f, "%s\n", line);
            free(line);
        }
    }
    fclose(f);
    for (int i = 0; i < 3; i++) {
        fx_receipt_release(&a[i]);
        fx_receipt_release(&b[i]);
    }
}

static void test_cmd_verify_and_tail(void **state) {
    fx_key k;
    char file[400], keyset[400], *out = NULL, *err = NULL;
    FILE *f;
    (void)state;
    assert_int_equal(fx_key_new(&k), 0);
    snprintf(file, sizeof(file), "%s/receipts.jsonl", k.dir);
    snprintf(keyset, sizeof(keyset), "%s/receipts.keyset", k.dir);
    f = fopen(keyset, "w");
    fprintf(f, "%s\n", k.pub_line);
    fclose(f);

    char *verify[] = {"receipts", "verify", "--file", file, "--keyset", keyset, NULL};
    write_chain(&k, file, -1, -1);
    assert_int_equal(capture(tpctl_cmd_receipts, 6, verify, k.dir, &out, &err), 0);
    assert_non_null(strstr(out, "tenants: 2\n"));
    assert_non_null(strstr(out, "receipts: 6\n"));
    assert_non_null(strstr(out, "duplicates: 0\n"));
    assert_non_null(strstr(out, "errors: 0\n"));
    assert_non_null(strstr(out, "result: OK\n"));
    free(out);
    free(err);

    /* Key set from the environment (config key receipts.keyset_file). */
    setenv("TP_RECEIPTS_KEYSET_FILE", keyset, 1);
    assert_int_equal(capture(tpctl_cmd_receipts, 4, verify, k.dir, &out, &err), 0);
    unsetenv("TP_RECEIPTS_KEYSET_FILE");
    free(out);
    free(err);

    /* tail prints each receipt as a JSON line; its output verifies too. */
    char *tail[] = {"receipts", "tail", "--file", file, NULL};
    assert_int_equal(capture(tpctl_cmd_receipts, 4, tail, k.dir, &out, &err), 0);
    f = fopen(file, "w");
    fputs(out, f);
    fputs(out, f); /* everything re-published once: duplicates only */
    fclose(f);
    free(out);
    free(err);
    assert_int_equal(capture(tpctl_cmd_receipts, 6, verify, k.dir, &out, &err), 0);
    assert_non_null(strstr(out, "receipts: 12\n"));
    assert_non_null(strstr(out, "duplicates: 6\n"));
    free(out);
    free(err);

    /* Tampered line 3 (a2): exit 1, named. */
    write_chain(&k, file, 2, -1);
    assert_int_equal(capture(tpctl_cmd_receipts, 6, verify, k.dir, &out, &err), 1);
    assert_non_null(strstr(out, "result: BROKEN\n"));
    assert_non_null(strstr(out, "first error: receipt prov_ten_a_2 "));
    assert_non_null(strstr(err, "BREAK receipt prov_ten_a_2 "));
    free(out);
    free(err);

    /* Removed line 4 (b2): exit 1, b3 named. */
    write_chain(&k, file, -1, 3);
    assert_int_equal(capture(tpctl_cmd_receipts, 6, verify, k.dir, &out, &err), 1);
    assert_non_null(strstr(out, "first error: receipt prov_ten_b_3 "));
    free(out);
    free(err);

    /* A line that is not a receipt is a break. */
    write_chain(&k, file, -1, -1);
    f = fopen(file, "a");
    fputs("not json\n", f);
    fclose(f);
    assert_int_equal(capture(tpctl_cmd_receipts, 6, verify, k.dir, &out, &err), 1);
    assert_non_null(strstr(out, "line 7: not a receipt"));
    free(out);
    free(err);

    /* Usage errors and missing inputs: exit 2. */
    char *nofile[] = {"receipts", "verify", "--file", "/nonexistent/receipts.jsonl", NULL};
    assert_int_equal(capture(tpctl_cmd_receipts, 4, nofile, k.dir, &out, &err), 2);
    free(out);
    free(err);
    char *badkeys[] = {"receipts", "verify", "--file", file, "--keyset", "/nonexistent", NULL};
    assert_int_equal(capture(tpctl_cmd_receipts, 6, badkeys, k.dir, &out, &err), 2);
    free(out);
    free(err);
    char *badsub[] = {"receipts", "frobnicate", NULL};
    assert_int_equal(capture(tpctl_cmd_receipts, 2, badsub, k.dir, &out, &err), 2);
    free(out);
    free(err);
    fx_key_release(&k);
}

/* The hook the Kafka reader will use: Avro-encoded receipts, decoded, mapped and verified. */
static void test_verify_decoded_avro_records(void **state) {
    fx_key k;
    fx_receipt r[3];
    tp_receipt_record dec[3];
    tp_codec *codec;
    tp_keyset *ks;
    tp_verifier *v = NULL;
    tp_verify_summary sum;
    char errstr[256] = "";
    (void)state;
    codec = tp_codec_new(TP_SOURCE_DIR "/schemas/avro", NULL, errstr, sizeof(errstr));
    if (!codec)
        fail_msg("codec: %s", errstr);
    assert_int_equal(fx_key_new(&k), 0);
    const fx_key *keys[1] = {&k};
    ks = fx_keyset(keys, 1);
    memset(dec, 0, sizeof(dec));
    for (int i = 0; i < 3; i++) {
        unsigned char *buf = NULL;
        size_t len = 0;
        assert_int_equal(fx_seal(k.signer, "ten_avro", i ? &r[i - 1] : NULL, &r[i]), 0);
        tp_receipt_signature sig = {r[i].sealed.keyid, r[i].sealed.sig, 64};
        tp_receipt_record rec = {
            .receipt_id = r[i].receipt_id, .action_type = r[i].action, .tenant_id = r[i].tenant_id,
            .request_id = r[i].request_id, .sequence = r[i].seq, .previous_hash = r[i].prev,
            .hash = r[i].sealed.hash_hex, .timestamp_ms = r[i].ts,
            .payload_type = (char *)TP_RECEIPT_PAYLOAD_TYPE,
            .payload = (unsigned char *)r[i].sealed.payload, .payload_len = r[i].sealed.payload_len,
            .n_signatures = 1, .signatures = &sig};
        assert_int_equal(tp_codec_encode_receipt(codec, &rec, &buf, &len), 0);
        if (i == 1)
            buf[len - 100] ^= 0x20; /* inside the payload bytes, near the end of the record */
        assert_int_equal(tp_codec_decode_receipt(codec, buf, len, &dec[i], errstr, sizeof(errstr)), 0);
        free(buf);
    }
    assert_int_equal(tp_verifier_new(ks, &v), 0);
    assert_int_equal(tpctl_receipts_verify_records(v, dec, 3), TP_EVERIFY);
    tp_verifier_summary(v, &sum);
    assert_int_equal(sum.receipts, 3);
    assert_int_equal(sum.errors, 1);
    assert_non_null(strstr(sum.first_error, "receipt prov_ten_avro_2 "));
    tp_verifier_free(v);
    /* The untouched first record verifies on its own. */
    assert_int_equal(tp_verifier_new(ks, &v), 0);
    assert_int_equal(tpctl_receipts_verify_records(v, dec, 1), 0);
    tp_verifier_free(v);
    for (int i = 0; i < 3; i++) {
        tp_receipt_record_release(&dec[i]);
        fx_receipt_release(&r[i]);
    }
    tp_keyset_free(ks);
    fx_key_release(&k);
    tp_codec_free(codec);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_jsonl_roundtrip),
        cmocka_unit_test(test_jsonl_rejects_and_mutations),
        cmocka_unit_test(test_cmd_keygen),
        cmocka_unit_test(test_cmd_verify_and_tail),
        cmocka_unit_test(test_verify_decoded_avro_records),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
