/* test_receipts_keys.c: key generation (files, modes, key ids), signer loading, key set parsing
 * with rotated keys, and rejection of malformed or mismatched key material. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>
#include <sodium.h>

#include "receipts/receipts_int.h"
#include "receipts_fixture.h"
#include "tp/config.h"

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_keygen_files(void **state) {
    fx_key k;
    struct stat st;
    char *buf = NULL, keyid[TP_KEYID_MAX + 1];
    size_t len = 0;
    unsigned char *pk = NULL;
    size_t pk_len = 0;
    (void)state;
    assert_int_equal(fx_key_new(&k), 0);
    assert_int_equal(stat(k.priv, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    /* Key id: "ed25519:" + 16 lowercase hex digits of sha256(pubkey). */
    const char *id = tp_signer_keyid(k.signer);
    assert_int_equal(strlen(id), 8 + 16);
    assert_memory_equal(id, "ed25519:", 8);
    /* The public file is "keyid base64(pubkey)\n" and its key id is the key's own. */
    assert_int_equal(tp_read_file(k.pub, 4096, &buf, &len), 0);
    assert_true(len > 0 && buf[len - 1] == '\n');
    buf[len - 1] = '\0';
    assert_string_equal(buf, k.pub_line);
    char *sp = strchr(buf, ' ');
    assert_non_null(sp);
    assert_int_equal(tp_receipts__b64_decode(sp + 1, strlen(sp + 1), &pk, &pk_len), 0);
    assert_int_equal(pk_len, 32);
    tp_receipt_keyid(pk, keyid);
    assert_string_equal(keyid, id);
    free(pk);
    free(buf);
    /* The private file starts with the key id too and never holds the public line. */
    assert_int_equal(tp_read_file(k.priv, 4096, &buf, &len), 0);
    assert_memory_equal(buf, id, strlen(id));
    assert_null(strstr(buf, k.pub_line + strlen(id) + 1));
    free(buf);
    fx_key_release(&k);
}

static void test_two_keys_differ_and_reload(void **state) {
    fx_key a, b;
    tp_signer *again = NULL;
    (void)state;
    assert_int_equal(fx_key_new(&a), 0);
    assert_int_equal(fx_key_new(&b), 0);
    assert_string_not_equal(tp_signer_keyid(a.signer), tp_signer_keyid(b.signer));
    assert_int_equal(tp_signer_load(a.priv, &again), 0);
    assert_string_equal(tp_signer_keyid(again), tp_signer_keyid(a.signer));
    tp_signer_free(again);
    /* keygen over an existing pair replaces it (rotation). */
    char old[TP_KEYID_MAX + 1];
    snprintf(old, sizeof(old), "%s", tp_signer_keyid(a.signer));
    assert_int_equal(tp_receipt_keygen(a.priv, a.pub), 0);
    assert_int_equal(tp_signer_load(a.priv, &again), 0);
    assert_string_not_equal(tp_signer_keyid(again), old);
    tp_signer_free(again);
    fx_key_release(&a);
    fx_key_release(&b);
}

static void test_signer_load_rejects(void **state) {
    fx_key k;
    tp_signer *s = NULL;
    char path[400], text[400];
    (void)state;
    assert_int_equal(fx_key_new(&k), 0);
    snprintf(path, sizeof(path), "%s/bad.key", k.dir);
    assert_int_equal(tp_signer_load("/nonexistent/receipts.key", &s), TP_EIO);
    write_text(path, "");
    assert_int_equal(tp_signer_load(path, &s), TP_ECRYPTO);
    write_text(path, "ed25519:0000000000000000 not-base64!!\n");
    assert_int_equal(tp_signer_load(path, &s), TP_ECRYPTO);
    write_text(path, "ed25519:0000000000000000 aGVsbG8=\n"); /* wrong length */
    assert_int_equal(tp_signer_load(path, &s), TP_ECRYPTO);
    /* A valid seed under another key's id is refused. */
    char *buf = NULL;
    size_t len = 0;
    assert_int_equal(tp_read_file(k.priv, 4096, &buf, &len), 0);
    snprintf(text, sizeof(text), "ed25519:0123456789abcdef%s", strchr(buf, ' '));
    free(buf);
    write_text(path, text);
    assert_int_equal(tp_signer_load(path, &s), TP_ECRYPTO);
    assert_null(s);
    fx_key_release(&k);
}

static void test_keyset_rotation_and_lookup(void **state) {
    fx_key a, b;
    tp_keyset *ks = NULL;
    char path[400], text[1024], errstr[256];
    (void)state;
    assert_int_equal(fx_key_new(&a), 0);
    assert_int_equal(fx_key_new(&b), 0);
    snprintf(path, sizeof(path), "%s/receipts.keyset", a.dir);
    snprintf(text, sizeof(text), "# rotated out\n%s\n\n  %s  \r\n%s\n", a.pub_line, b.pub_line, a.pub_line);
    write_text(path, text);
    assert_int_equal(tp_keyset_load(path, &ks, errstr, sizeof(errstr)), 0);
    assert_int_equal(tp_keyset_count(ks), 2);
    assert_non_null(tp_keyset_lookup(ks, tp_signer_keyid(a.signer)));
    assert_non_null(tp_keyset_lookup(ks, tp_signer_keyid(b.signer)));
    assert_null(tp_keyset_lookup(ks, "ed25519:ffffffffffffffff"));
    tp_keyset_free(ks);
    fx_key_release(&a);
    fx_key_release(&b);
}

static void test_keyset_rejects(void **state) {
    fx_key a;
    tp_keyset *ks = NULL;
    char text[1024], errstr[256] = "";
    (void)state;
    assert_int_equal(fx_key_new(&a), 0);
    /* Empty. */
    assert_int_equal(tp_keyset_parse("# nothing\n", 10, &ks, errstr, sizeof(errstr)), TP_ECRYPTO);
    assert_non_null(strstr(errstr, "no keys"));
    /* A bad line is named. */
    snprintf(text, sizeof(text), "%s\ngarbage\n", a.pub_line);
    assert_int_equal(tp_keyset_parse(text, strlen(text), &ks, errstr, sizeof(errstr)), TP_ECRYPTO);
    assert_non_null(strstr(errstr, "line 2"));
    /* A key listed under a key id that is not its own. */
    snprintf(text, sizeof(text), "ed25519:0123456789abcdef%s\n", strchr(a.pub_line, ' '));
    assert_int_equal(tp_keyset_parse(text, strlen(text), &ks, errstr, sizeof(errstr)), TP_ECRYPTO);
    assert_non_null(strstr(errstr, "does not match"));
    /* Embedded NUL. */
    assert_int_equal(tp_keyset_parse("a\0b c\n", 6, &ks, NULL, 0), TP_ECRYPTO);
    assert_null(ks);
    assert_int_equal(tp_keyset_load("/nonexistent/keyset", &ks, errstr, sizeof(errstr)), TP_EIO);
    /* Validity windows: parsed when well formed, refused otherwise (the line is named). */
    {
        static const char *const bad[] = {" valid-from=yesterday", " valid-until=2026-13-01T00:00:00Z",
                                          " valid-from=2026-01-02T00:00:00Z valid-until=2026-01-01T00:00:00Z",
                                          " expires=2026-01-01T00:00:00Z", "  valid-from=2026-01-01T00:00:00Z"};
        int64_t from, until;
        snprintf(text, sizeof(text), "%s valid-from=2026-01-01T00:00:00Z valid-until=2026-02-01T00:00:00.500Z\n",
                 a.pub_line);
        assert_int_equal(tp_keyset_parse(text, strlen(text), &ks, errstr, sizeof(errstr)), 0);
        assert_int_equal(tp_keyset_window(ks, tp_signer_keyid(a.signer), &from, &until), 0);
        assert_int_equal(from, 1767225600000LL);
        assert_int_equal(until, 1769904000500LL);
        assert_int_equal(tp_keyset_window(ks, "ed25519:nope", &from, &until), TP_ENOT_FOUND);
        tp_keyset_free(ks);
        ks = NULL;
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
            snprintf(text, sizeof(text), "# k\n%s%s\n", a.pub_line, bad[i]);
            assert_int_equal(tp_keyset_parse(text, strlen(text), &ks, errstr, sizeof(errstr)), TP_ECRYPTO);
            assert_non_null(strstr(errstr, "line 2"));
        }
    }
    fx_key_release(&a);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keygen_files),        cmocka_unit_test(test_two_keys_differ_and_reload),
        cmocka_unit_test(test_signer_load_rejects), cmocka_unit_test(test_keyset_rotation_and_lookup),
        cmocka_unit_test(test_keyset_rejects),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
