/* test_receipts_dsse.c: DSSE PAE against the specification's published example, SHA-256 and
 * base64 against known vectors, RFC 3339 time formatting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "receipts/receipts_int.h"
#include "tp/error.h"
#include "tp/receipts.h"

/* secure-systems-lab/dsse protocol.md, "Test vectors" / PAE example. */
static void test_pae_spec_example(void **state) {
    unsigned char *pae = NULL;
    size_t len = 0;
    const char *want = "DSSEv1 29 http://example.com/HelloWorld 11 hello world";
    (void)state;
    assert_int_equal(tp_dsse_pae("http://example.com/HelloWorld", (const unsigned char *)"hello world",
                                 11, &pae, &len),
                     0);
    assert_int_equal(len, strlen(want));
    assert_memory_equal(pae, want, len);
    free(pae);
}

static void test_pae_empty_and_binary(void **state) {
    unsigned char *pae = NULL;
    size_t len = 0;
    const unsigned char body[] = {'a', 0, 'b', '\n'};
    (void)state;
    assert_int_equal(tp_dsse_pae("", NULL, 0, &pae, &len), 0);
    assert_int_equal(len, strlen("DSSEv1 0  0 "));
    assert_memory_equal(pae, "DSSEv1 0  0 ", len);
    free(pae);
    /* Lengths count bytes, embedded NULs included. */
    assert_int_equal(tp_dsse_pae("t", body, sizeof(body), &pae, &len), 0);
    assert_int_equal(len, strlen("DSSEv1 1 t 4 ") + 4);
    assert_memory_equal(pae, "DSSEv1 1 t 4 a\0b\n", len);
    free(pae);
    assert_int_equal(tp_dsse_pae(NULL, body, 1, &pae, &len), TP_EINVAL);
}

static void test_sha256_vector(void **state) {
    char hex[TP_HASH_HEX_LEN + 1];
    (void)state;
    tp_sha256_hex("abc", 3, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    tp_sha256_hex("", 0, hex);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

static void test_base64(void **state) {
    unsigned char *bin = NULL;
    size_t len = 0;
    char *s;
    (void)state;
    assert_int_equal(tp_receipts__init(), 0);
    s = tp_receipts__b64_encode((const unsigned char *)"hello world", 11);
    assert_string_equal(s, "aGVsbG8gd29ybGQ=");
    free(s);
    assert_int_equal(tp_receipts__b64_decode("aGVsbG8gd29ybGQ=", 16, &bin, &len), 0);
    assert_int_equal(len, 11);
    assert_memory_equal(bin, "hello world", 11);
    free(bin);
    /* Rejected: missing padding, URL alphabet, junk after, whitespace, non-canonical bits. */
    assert_int_equal(tp_receipts__b64_decode("aGVsbG8gd29ybGQ", 15, &bin, &len), TP_EINVAL);
    assert_int_equal(tp_receipts__b64_decode("_-__", 4, &bin, &len), TP_EINVAL);
    assert_int_equal(tp_receipts__b64_decode("aGk=x", 5, &bin, &len), TP_EINVAL);
    assert_int_equal(tp_receipts__b64_decode("aG k=", 5, &bin, &len), TP_EINVAL);
    assert_int_equal(tp_receipts__b64_decode("aGl=", 4, &bin, &len), TP_EINVAL);
    assert_int_equal(tp_receipts__b64_decode("", 0, &bin, &len), 0);
    assert_int_equal(len, 0);
    free(bin);
}

static void test_time_format(void **state) {
    char ts[32];
    (void)state;
    assert_int_equal(tp_receipt_format_time(0, ts, sizeof(ts)), 0);
    assert_string_equal(ts, "1970-01-01T00:00:00.000Z");
    assert_int_equal(tp_receipt_format_time(1700000000123LL, ts, sizeof(ts)), 0);
    assert_string_equal(ts, "2023-11-14T22:13:20.123Z");
    assert_int_equal(tp_receipt_format_time(-1, ts, sizeof(ts)), 0);
    assert_string_equal(ts, "1969-12-31T23:59:59.999Z");
    assert_int_equal(tp_receipt_format_time(INT64_MAX, ts, sizeof(ts)), TP_EINVAL);
    assert_int_equal(tp_receipt_format_time(0, ts, 10), TP_EINVAL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pae_spec_example), cmocka_unit_test(test_pae_empty_and_binary),
        cmocka_unit_test(test_sha256_vector),    cmocka_unit_test(test_base64),
        cmocka_unit_test(test_time_format),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
