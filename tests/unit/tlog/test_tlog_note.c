/* test_tlog_note.c: C2SP signed notes and tlog checkpoints: the specifications' published
 * examples (fixtures/c2sp-*), our own format → parse → verify round trip, and rejection of
 * malformed notes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "tp/error.h"
#include "tp/tlog.h"

#define FIXTURES TP_SOURCE_DIR "/tests/unit/tlog/fixtures/"

static size_t slurp(const char *path, char *buf, size_t cap) {
    FILE *f = fopen(path, "rb");
    size_t n;
    assert_non_null(f);
    n = fread(buf, 1, cap - 1, f);
    fclose(f);
    buf[n] = '\0';
    return n;
}

/* "<name>+<hex key id>+<base64(0x01 || pk)>" from the fixture. */
static void load_vkey(char name[64], unsigned char kh[4], unsigned char pk[32]) {
    char text[256], *plus1, *plus2;
    unsigned char blob[40];
    size_t n = slurp(FIXTURES "c2sp-signed-note-example.vkey", text, sizeof(text)), bl = 0;
    while (n && text[n - 1] == '\n')
        text[--n] = '\0';
    plus1 = strchr(text, '+');
    plus2 = plus1 ? strchr(plus1 + 1, '+') : NULL;
    assert_non_null(plus2);
    snprintf(name, 64, "%.*s", (int)(plus1 - text), text);
    assert_int_equal(sodium_hex2bin(kh, 4, plus1 + 1, (size_t)(plus2 - plus1 - 1), NULL, &bl, NULL), 0);
    assert_int_equal(bl, 4);
    assert_int_equal(sodium_base642bin(blob, sizeof(blob), plus2 + 1, strlen(plus2 + 1), NULL, &bl,
                                       NULL, sodium_base64_VARIANT_ORIGINAL),
                     0);
    assert_int_equal(bl, 33);
    assert_int_equal(blob[0], 0x01);
    memcpy(pk, blob + 1, 32);
}

static void test_c2sp_signed_note_example(void **state) {
    (void)state;
    char name[64], text[1024], err[128];
    unsigned char kh[4], pk[32], got[4];
    tp_note note;
    size_t len = slurp(FIXTURES "c2sp-signed-note-example.note", text, sizeof(text));
    load_vkey(name, kh, pk);
    tp_note_key_hash(name, pk, got);
    assert_memory_equal(got, kh, 4); /* 530d903a */

    assert_int_equal(tp_note_parse(text, len, &note, err, sizeof(err)), 0);
    assert_int_equal(note.n_sigs, 1);
    assert_string_equal(note.sigs[0].name, "example.com/foo");
    assert_int_equal(note.body_len, strlen("This is an example message.\n"));
    assert_true(tp_note_sig_verify(&note.sigs[0], name, pk, text, note.body_len));
    /* another body, another name or another key does not verify */
    text[0] = 't';
    assert_false(tp_note_sig_verify(&note.sigs[0], name, pk, text, note.body_len));
    text[0] = 'T';
    assert_false(tp_note_sig_verify(&note.sigs[0], "example.com/bar", pk, text, note.body_len));
    pk[0] ^= 1;
    assert_false(tp_note_sig_verify(&note.sigs[0], name, pk, text, note.body_len));
}

static void test_c2sp_checkpoint_example(void **state) {
    (void)state;
    char text[1024], err[128];
    tp_note note;
    tp_checkpoint cp;
    size_t len = slurp(FIXTURES "c2sp-tlog-checkpoint-example.note", text, sizeof(text));
    unsigned char root[32];
    size_t bl = 0;
    assert_int_equal(tp_note_parse(text, len, &note, err, sizeof(err)), 0);
    assert_int_equal(tp_checkpoint_parse(text, note.body_len, &cp, err, sizeof(err)), 0);
    assert_string_equal(cp.origin, "example.com/behind-the-sofa");
    assert_int_equal(cp.size, 20852163);
    sodium_base642bin(root, 32, "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=", 44, NULL, &bl, NULL,
                      sodium_base64_VARIANT_ORIGINAL);
    assert_memory_equal(cp.root, root, 32);
    assert_string_equal(note.sigs[0].name, "example.com/behind-the-sofa");
    assert_true(note.sigs[0].ed25519);
    /* Our formatter writes the same body back. */
    char body[512];
    int n = tp_checkpoint_format(&cp, body, sizeof(body));
    assert_int_equal(n, (int)note.body_len);
    assert_memory_equal(body, text, note.body_len);
}

static void test_round_trip(void **state) {
    (void)state;
    unsigned char pk[32], sk[64], sig[64];
    char body[512], text[TP_TLOG_NOTE_MAX], err[128];
    tp_checkpoint cp, back;
    tp_note note;
    assert_true(sodium_init() >= 0);
    crypto_sign_keypair(pk, sk);
    memset(&cp, 0, sizeof(cp));
    snprintf(cp.origin, sizeof(cp.origin), "tenant-provisioner.dev/receipts");
    cp.size = 42;
    memset(cp.root, 0xab, 32);
    int bl = tp_checkpoint_format(&cp, body, sizeof(body));
    assert_true(bl > 0);
    crypto_sign_detached(sig, NULL, (unsigned char *)body, (size_t)bl, sk);
    int tl = tp_note_format(body, cp.origin, pk, sig, text, sizeof(text));
    assert_true(tl > bl);
    assert_int_equal(tp_note_parse(text, (size_t)tl, &note, err, sizeof(err)), 0);
    assert_int_equal(note.body_len, (size_t)bl);
    assert_true(tp_note_sig_verify(&note.sigs[0], cp.origin, pk, text, note.body_len));
    assert_int_equal(tp_checkpoint_parse(text, note.body_len, &back, err, sizeof(err)), 0);
    assert_string_equal(back.origin, cp.origin);
    assert_int_equal(back.size, 42);
    assert_memory_equal(back.root, cp.root, 32);
    /* names with spaces cannot sign; a body without its newline cannot be a note */
    assert_int_equal(tp_note_format(body, "a b", pk, sig, text, sizeof(text)), -1);
    assert_int_equal(tp_note_format("x", "a", pk, sig, text, sizeof(text)), -1);
    assert_int_equal(tp_note_format(body, "a", pk, sig, text, 10), -1);
}

static void expect_note_error(const char *text, const char *what) {
    tp_note note;
    char err[128] = "";
    assert_int_equal(tp_note_parse(text, strlen(text), &note, err, sizeof(err)), TP_EINVAL);
    if (!strstr(err, what))
        fail_msg("note %s: error '%s' does not mention '%s'", text, err, what);
}

static void expect_checkpoint_error(const char *body, const char *what) {
    tp_checkpoint cp;
    char err[128] = "";
    assert_int_equal(tp_checkpoint_parse(body, strlen(body), &cp, err, sizeof(err)), TP_EINVAL);
    if (!strstr(err, what))
        fail_msg("checkpoint %s: error '%s' does not mention '%s'", body, err, what);
}

#define SIG "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="

static void test_malformed(void **state) {
    (void)state;
    expect_note_error("", "empty");
    expect_note_error("body\n", "blank line");
    expect_note_error("body\n\n", "no signatures");
    expect_note_error("body\n\n\xe2\x80\x94 a " SIG, "newline");
    expect_note_error("body\n\n- a " SIG "\n", "em dash");
    expect_note_error("body\n\n\xe2\x80\x94 a\n", "no signature");
    expect_note_error("body\n\n\xe2\x80\x94 a+b " SIG "\n", "key name");
    expect_note_error("body\n\n\xe2\x80\x94 a !!!!\n", "base64");
    expect_note_error("bo\rdy\n\n\xe2\x80\x94 a " SIG "\n", "control");
    expect_note_error("bo\xff" "dy\n\n\xe2\x80\x94 a " SIG "\n", "UTF-8");

    expect_checkpoint_error("", "newline");
    expect_checkpoint_error("\n1\nAAAA\n", "origin");
    expect_checkpoint_error("o\n\n", "size");
    expect_checkpoint_error("o\n-1\n", "decimal");
    expect_checkpoint_error("o\n01\n", "malformed");
    expect_checkpoint_error("o\n99999999999999999999\n", "malformed");
    expect_checkpoint_error("o\n9999999999999999999\n", "too large");
    expect_checkpoint_error("o\n1\nAAAA\n", "root");
    expect_checkpoint_error("o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n", "extension");
    /* an extension line is allowed and ignored */
    tp_checkpoint cp;
    const char *ok = "o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\next\n";
    assert_int_equal(tp_checkpoint_parse(ok, strlen(ok), &cp, NULL, 0), 0);

    /* more signatures than we keep */
    char many[4096] = "body\n\n";
    for (int i = 0; i <= TP_NOTE_MAX_SIGS; i++)
        strcat(many, "\xe2\x80\x94 a " SIG "\n");
    expect_note_error(many, "too many");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_c2sp_signed_note_example),
        cmocka_unit_test(test_c2sp_checkpoint_example),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_malformed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
