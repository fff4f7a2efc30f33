/* test_json_text: tp_json_text writes the very bytes of jansson's json_dumps(JSON_COMPACT [|
 * JSON_SORT_KEYS]) on escapes, UTF-8, key order, numbers, empty and deep containers and random
 * documents, and refuses what jansson refuses. A few outputs are also pinned as literals. */
#include <float.h>
#include <locale.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "tp/json_text.h"

/* Checks ours against jansson's with the given tp flags; returns ours (to free) for more checks. */
static char *check_same(const json_t *v, unsigned flags) {
    size_t jflags = JSON_COMPACT;
    if (flags & TP_JSON_SORT_KEYS)
        jflags |= JSON_SORT_KEYS;
    if (flags & TP_JSON_ANY_ROOT)
        jflags |= JSON_ENCODE_ANY;
    char *theirs = json_dumps(v, jflags);
    size_t len = 12345;
    char *ours = tp_json_text(v, flags, &len);
    if (!theirs) {
        if (ours)
            fail_msg("jansson refused, we wrote: %s", ours);
        assert_int_equal(len, 0);
        return NULL;
    }
    if (!ours)
        fail_msg("we refused, jansson wrote: %s", theirs);
    if (strcmp(ours, theirs) != 0)
        fail_msg("flags %u:\n ours:    %s\n jansson: %s", flags, ours, theirs);
    assert_int_equal(len, strlen(theirs));
    free(theirs);
    return ours;
}

/* Both flag sets must match jansson. */
static void check_both(const json_t *v) {
    free(check_same(v, 0));
    free(check_same(v, TP_JSON_SORT_KEYS));
}

/* Checks ours against jansson's and against the text expected, with the given flags. */
static void check_text(const json_t *v, unsigned flags, const char *expected) {
    char *ours = check_same(v, flags);
    assert_non_null(ours);
    assert_string_equal(ours, expected);
    free(ours);
}

static void test_string_escapes(void **state) {
    (void)state;
    char all[0x80];
    for (int c = 0; c < 0x80; c++)
        all[c] = (char)c;
    json_t *a = json_array();
    json_array_append_new(a, json_stringn(all, sizeof(all)));
    for (int c = 0; c < 0x20; c++) {
        char s[3] = {'x', (char)c, 'y'};
        json_array_append_new(a, json_stringn(s, sizeof(s)));
        json_array_append_new(a, json_stringn(s + 1, 1));
    }
    json_array_append_new(a, json_string("quote\" backslash\\ slash/ del\x7f"));
    json_array_append_new(a, json_string("\\\\\"\"//"));
    json_array_append_new(a, json_string(""));
    check_both(a);
    json_decref(a);

    json_t *pinned = json_pack("[s, s, s%]", "a\"b\\c/d", "\b\f\n\r\t\x01\x1f\x7f", "x\0y", (size_t)3);
    check_text(pinned, 0, "[\"a\\\"b\\\\c/d\",\"\\b\\f\\n\\r\\t\\u0001\\u001F\x7f\",\"x\\u0000y\"]");
    json_decref(pinned);
}

/* Each byte that needs a look, at each offset of a string longer than three 8-byte words: the
 * word-at-a-time scan must stop for it wherever it sits. */
static void test_special_byte_at_every_offset(void **state) {
    (void)state;
    static const char *specials[] = {"\x00", "\x01", "\x1f", "\"", "\\", "\x7f", " ", "/",
                                     "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80", "\xa2",
                                     "\xdc", "\x80", "\xff", "\xc3"};
    for (size_t k = 0; k < sizeof(specials) / sizeof(specials[0]); k++) {
        size_t n = k == 0 ? 1 : strlen(specials[k]);
        for (size_t at = 0; at < 26; at++) {
            char s[40];
            memset(s, 'a', sizeof(s));
            memcpy(s + at, specials[k], n);
            json_t *a = json_array();
            json_array_append_new(a, json_stringn_nocheck(s, 30));
            check_both(a);
            json_decref(a);
        }
    }
}

static void test_utf8(void **state) {
    (void)state;
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s}", "plain", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9d\x84\x9e",
                          "\xc3\xa9", "two-byte key", "\xf0\x9f\x98\x80", "four-byte key", "mixed",
                          "\xc3\xa9\"\n\xe2\x82\xac\t\xf4\x8f\xbf\xbf\x01", "z", "ascii after");
    json_object_set_new(o, "\xef\xbf\xbf", json_string("\xed\x9f\xbf\xee\x80\x80\xc2\x80\xdf\xbf"));
    check_both(o);
    check_text(json_object_get(o, "mixed"), TP_JSON_ANY_ROOT,
               "\"\xc3\xa9\\\"\\n\xe2\x82\xac\\t\xf4\x8f\xbf\xbf\\u0001\"");
    json_decref(o);
}

static void test_invalid_utf8_refused(void **state) {
    (void)state;
    /* Only the *_nocheck setters make these; jansson's dump fails on them, and so do we. */
    static const char *bad[] = {"\x80", "\xc0\xaf", "\xc1\xbf", "\xe0\x80\xaf", "\xed\xa0\x80",
                                "\xf4\x90\x80\x80", "\xf5\x80\x80\x80", "\xff", "ok\xc3", "\xe2\x82",
                                "\xf0\x9f\x98"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_t *a = json_array();
        json_array_append_new(a, json_stringn_nocheck(bad[i], strlen(bad[i])));
        assert_null(check_same(a, 0));
        assert_null(check_same(a, TP_JSON_SORT_KEYS));
        json_decref(a);
    }
}

static void test_key_order(void **state) {
    (void)state;
    static const char *keys[] = {"b", "a", "ab", "abc", "aa", "B", "_", "", "A", "a b", "a-b",
                                 "prefix_shared_long_x", "prefix_shared_long_", "prefix_shared_long_y",
                                 "prefix_shared_long_\xc3\xa9", "\xc3\xa9", "\xc3\xa8", "z", "~",
                                 "\xf0\x9f\x98\x80", "0", "9", "10"};
    json_t *o = json_object();
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        json_object_set_new(o, keys[i], json_integer((json_int_t)i));
    /* Keys with NULs in them: byte order, a shorter key first when one is a prefix. */
    json_object_setn_new(o, "a\0b", 3, json_true());
    json_object_setn_new(o, "a\0", 2, json_false());
    json_object_setn_new(o, "\0", 1, json_null());
    assert_true(json_object_size(o) > 16); /* the qsort path */
    check_both(o);

    json_t *few = json_pack("{s:i, s:i, s:i, s:i}", "b", 1, "a\xc3\xa9", 2, "aa", 3, "a", 4);
    check_text(few, TP_JSON_SORT_KEYS, "{\"a\":4,\"aa\":3,\"a\xc3\xa9\":2,\"b\":1}");
    check_text(few, 0, "{\"b\":1,\"a\xc3\xa9\":2,\"aa\":3,\"a\":4}");
    json_decref(few);

    /* Exactly 16 and 17 keys: both sorting paths. */
    for (int n = 15; n <= 18; n++) {
        json_t *m = json_object();
        for (int i = n; i > 0; i--) {
            char k[16];
            snprintf(k, sizeof(k), "k%d", (i * 7) % 23);
            json_object_set_new(m, k, json_integer(i));
        }
        check_both(m);
        json_decref(m);
    }
    json_decref(o);
}

static void test_empty_and_nested(void **state) {
    (void)state;
    json_t *o = json_pack("{s:{}, s:[], s:[[]], s:[{}], s:{s:{s:[[], {}]}}, s:[[[[]]]]}", "a", "b",
                          "c", "d", "e", "f", "g", "h");
    check_both(o);
    check_text(o, TP_JSON_SORT_KEYS, "{\"a\":{},\"b\":[],\"c\":[[]],\"d\":[{}],\"e\":{\"f\":{\"g\":[[],{}]}},"
                                     "\"h\":[[[[]]]]}");
    json_decref(o);
    json_t *empty_o = json_object(), *empty_a = json_array();
    check_text(empty_o, 0, "{}");
    check_text(empty_o, TP_JSON_SORT_KEYS, "{}");
    check_text(empty_a, 0, "[]");
    json_decref(empty_o);
    json_decref(empty_a);
}

static void test_integers_and_literals(void **state) {
    (void)state;
    json_t *a = json_pack("[I, I, I, I, I, I, I, b, b, n]", (json_int_t)INT64_MIN, (json_int_t)INT64_MAX,
                          (json_int_t)0, (json_int_t)-1, (json_int_t)1, (json_int_t)10,
                          (json_int_t)-9223372036854775807LL, 1, 0);
    check_text(a, 0,
               "[-9223372036854775808,9223372036854775807,0,-1,1,10,-9223372036854775807,true,false,"
               "null]");
    json_decref(a);
}

static void test_reals(void **state) {
    (void)state;
    static const double values[] = {1.2, 0.1, 1e300, -0.0, 0.0, 5e-324, 100.0, 1.1, 1e-5, 1e-4,
                                    1e16, 1e17, 1e21, 123456789012345678.0, DBL_MAX, -DBL_MAX,
                                    DBL_MIN, -1e-300, 2.5, -3.0, 1.0 / 3.0, 9007199254740993.0,
                                    4.35, 0.30000000000000004, 1e100, 1.5e-7};
    json_t *a = json_array();
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++)
        json_array_append_new(a, json_real(values[i]));
    check_both(a);
    json_decref(a);
    json_t *pinned = json_pack("[f, f, f, f, f, f, f]", 1.2, 1e300, -0.0, 5e-324, 100.0, 1e-5, 1e17);
    check_text(pinned, 0,
               "[1.2,1.0000000000000001e300,-0.0,4.9406564584124654e-324,100.0,"
               "1.0000000000000001e-5,1e17]");
    json_decref(pinned);
}

/* jansson writes '.' whatever LC_NUMERIC says; so do we (snprintf's point replaced). */
static void test_reals_in_another_locale(void **state) {
    (void)state;
    static const char *locales[] = {"de_DE.UTF-8", "de_DE.utf8", "fr_FR.UTF-8", "ru_RU.UTF-8"};
    const char *set = NULL;
    for (size_t i = 0; i < sizeof(locales) / sizeof(locales[0]) && !set; i++)
        set = setlocale(LC_NUMERIC, locales[i]);
    if (!set)
        skip(); /* only C locales here */
    json_t *a = json_pack("[f, f, f]", 1.2, 1e300, 100.0);
    check_text(a, 0, "[1.2,1.0000000000000001e300,100.0]");
    json_decref(a);
    setlocale(LC_NUMERIC, "C");
}

static void test_roots(void **state) {
    (void)state;
    json_t *scalars[] = {json_string("s\n"), json_integer(-7), json_real(0.5), json_true(),
                         json_false(), json_null()};
    for (size_t i = 0; i < sizeof(scalars) / sizeof(scalars[0]); i++) {
        size_t len = 99;
        assert_null(tp_json_text(scalars[i], 0, &len)); /* json_dumps refuses too */
        assert_int_equal(len, 0);
        assert_null(check_same(scalars[i], TP_JSON_SORT_KEYS));
        free(check_same(scalars[i], TP_JSON_ANY_ROOT));
        free(check_same(scalars[i], TP_JSON_ANY_ROOT | TP_JSON_SORT_KEYS));
        json_decref(scalars[i]);
    }
    assert_null(tp_json_text(NULL, TP_JSON_ANY_ROOT, NULL));
    json_t *o = json_object();
    char *text = tp_json_text(o, 0, NULL); /* len_out may be NULL */
    assert_string_equal(text, "{}");
    free(text);
    json_decref(o);
}

/* Nests n containers, arrays and objects by turns (object keys make it sort). */
static json_t *nest(int n) {
    json_t *v = json_string("leaf");
    for (int i = 0; i < n; i++) {
        json_t *c;
        if (i % 2) {
            c = json_object();
            json_object_set_new(c, "z", json_integer(i));
            json_object_set_new(c, "a", v);
        } else {
            c = json_array();
            json_array_append_new(c, v);
            json_array_append_new(c, json_integer(i));
        }
        v = c;
    }
    return v;
}

static void test_depth(void **state) {
    (void)state;
    json_t *deep = nest(TP_JSON_TEXT_MAX_DEPTH); /* as deep as jansson's parser reads */
    check_both(deep);
    json_decref(deep);
    /* One deeper: jansson writes it, we refuse (documented in tp/json_text.h). */
    json_t *deeper = nest(TP_JSON_TEXT_MAX_DEPTH + 1);
    char *theirs = json_dumps(deeper, JSON_COMPACT);
    assert_non_null(theirs);
    free(theirs);
    assert_null(tp_json_text(deeper, 0, NULL));
    assert_null(tp_json_text(deeper, TP_JSON_SORT_KEYS, NULL));
    json_decref(deeper);

    /* A cycle: both refuse. */
    json_t *a = json_array(), *b = json_object();
    json_array_append(a, b);
    json_object_set(b, "back", a);
    assert_null(check_same(a, 0));
    assert_null(check_same(a, TP_JSON_SORT_KEYS));
    json_object_clear(b);
    json_decref(b);
    json_decref(a);

    /* A shared (acyclic) subtree is fine. */
    json_t *shared = json_pack("{s:[i, s]}", "x", 1, "y");
    json_t *dag = json_pack("[O, O, {s:O}]", shared, shared, "again", shared);
    check_both(dag);
    json_decref(dag);
    json_decref(shared);
}

/* A document shaped like a TENANT_PROVISIONED receipt statement (tests/bench/provision_tx.sql). */
static void test_receipt_statement(void **state) {
    (void)state;
    const char *text =
        "{\"_type\":\"https://in-toto.io/Statement/v1\",\"subject\":[{\"name\":\"tenant/ten_1\","
        "\"digest\":{\"sha256\":\"6b86b273ff34fce19d6b804eff5a3f5747ada4eaa22f1d49c01e52ddb7875b4b\"}}],"
        "\"predicateType\":\"https://tenant-provisioner.dev/receipt/v1\",\"predicate\":{\"actionType\":"
        "\"TENANT_PROVISIONED\",\"sequence\":1,\"timestamp\":\"2023-11-14T22:13:20.123Z\",\"data\":{"
        "\"environment\":\"prod\",\"namespace\":{\"environment\":\"prod\",\"id\":\"ns_1\",\"slug\":"
        "\"acme-prod\"},\"partitions\":[{\"id\":\"part_1_primary\",\"isolation\":\"shared\",\"name\":"
        "\"primary\",\"region\":\"us-east-1\",\"type\":\"primary\"}],\"quota\":{\"burstMultiplier\":1.2,"
        "\"ingestEventsPerMinute\":5000,\"maxTokensPerRequest\":16000},\"checks\":[{\"check\":"
        "\"kill_switch_off\",\"passed\":true}],\"name\":\"Acme \\u00e9 \\ud83d\\ude00 \\\"q\\\"\"}}}";
    json_error_t err;
    json_t *doc = json_loads(text, 0, &err);
    assert_non_null(doc);
    check_both(doc);
    json_decref(doc);
}

/* Random documents from a fixed seed: strings from an alphabet of troublesome pieces. */
static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next_random(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static json_t *random_string(void) {
    static const char *pieces[] = {"a", "Z", "\"", "\\", "/", "\n", "\x01", "\x1f", "\x7f", " ",
                                   "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80", "key", "\t", "0"};
    char buf[64];
    size_t len = 0, n = next_random() % 8;
    for (size_t i = 0; i < n; i++) {
        const char *p = pieces[next_random() % (sizeof(pieces) / sizeof(pieces[0]))];
        memcpy(buf + len, p, strlen(p));
        len += strlen(p);
    }
    if (next_random() % 16 == 0)
        buf[len++] = '\0'; /* a NUL inside */
    return json_stringn(buf, len);
}

static json_t *random_value(int depth) {
    switch (next_random() % (depth > 4 ? 6 : 8)) {
    case 0:
        return json_integer((json_int_t)next_random());
    case 1:
        return json_real((double)(int64_t)next_random() / (double)(1ull << (next_random() % 64)));
    case 2:
        return random_string();
    case 3:
        return json_boolean(next_random() % 2);
    case 4:
        return json_null();
    case 5:
        return json_integer((json_int_t)(next_random() % 1000) - 500);
    case 6: {
        json_t *a = json_array();
        for (size_t i = 0, n = next_random() % 6; i < n; i++)
            json_array_append_new(a, random_value(depth + 1));
        return a;
    }
    default: {
        json_t *o = json_object();
        for (size_t i = 0, n = next_random() % 24; i < n; i++) {
            json_t *k = random_string();
            json_object_setn_new(o, json_string_value(k), json_string_length(k), random_value(depth + 1));
            json_decref(k);
        }
        return o;
    }
    }
}

static void test_random_documents(void **state) {
    (void)state;
    for (int i = 0; i < 2000; i++) {
        json_t *v = random_value(0);
        free(check_same(v, TP_JSON_ANY_ROOT));
        free(check_same(v, TP_JSON_ANY_ROOT | TP_JSON_SORT_KEYS));
        check_both(v);
        json_decref(v);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_string_escapes),     cmocka_unit_test(test_special_byte_at_every_offset),
        cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_invalid_utf8_refused), cmocka_unit_test(test_key_order),
        cmocka_unit_test(test_empty_and_nested),   cmocka_unit_test(test_integers_and_literals),
        cmocka_unit_test(test_reals),              cmocka_unit_test(test_reals_in_another_locale),
        cmocka_unit_test(test_roots),              cmocka_unit_test(test_depth),
        cmocka_unit_test(test_receipt_statement),  cmocka_unit_test(test_random_documents),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
