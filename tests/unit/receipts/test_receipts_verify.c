/* test_receipts_verify.c: the offline verifier: a valid chain passes; tampering (flipped byte,
 * swap, removal, unknown key, outer field edits) is caught and the receipt named; re-published
 * duplicates are counted, not errors; rotated-out keys still verify. Also prints sign/verify rates. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <sodium.h>

#include "receipts_fixture.h"

#define PER_TENANT 3

typedef struct vctx {
    fx_key k1, k2;      /* k2 plays the "new key after rotation" or the "unknown key" */
    tp_keyset *ks1;     /* k1 only */
    tp_keyset *ks12;    /* k1 and k2 */
    fx_receipt a[PER_TENANT], b[PER_TENANT];
} vctx;

static int setup(void **state) {
    vctx *c = calloc(1, sizeof(*c));
    const fx_key *keys[2];
    if (!c || fx_key_new(&c->k1) != 0 || fx_key_new(&c->k2) != 0)
        return -1;
    keys[0] = &c->k1;
    keys[1] = &c->k2;
    c->ks1 = fx_keyset(keys, 1);
    c->ks12 = fx_keyset(keys, 2);
    for (int i = 0; i < PER_TENANT; i++) {
        if (fx_seal(c->k1.signer, "ten_a", i ? &c->a[i - 1] : NULL, &c->a[i]) != 0 ||
            fx_seal(c->k1.signer, "ten_b", i ? &c->b[i - 1] : NULL, &c->b[i]) != 0)
            return -1;
    }
    *state = c;
    return c->ks1 && c->ks12 ? 0 : -1;
}

static int teardown(void **state) {
    vctx *c = *state;
    for (int i = 0; i < PER_TENANT; i++) {
        fx_receipt_release(&c->a[i]);
        fx_receipt_release(&c->b[i]);
    }
    tp_keyset_free(c->ks1);
    tp_keyset_free(c->ks12);
    fx_key_release(&c->k1);
    fx_key_release(&c->k2);
    free(c);
    return 0;
}

/* Feeds views in order into a fresh verifier and returns the summary. */
static tp_verify_summary run(const tp_keyset *ks, const tp_receipt_view *views, size_t n) {
    tp_verifier *v = NULL;
    tp_verify_summary sum;
    size_t breaks = 0;
    assert_int_equal(tp_verifier_new(ks, &v), 0);
    for (size_t i = 0; i < n; i++) {
        int rc = tp_verifier_feed(v, &views[i]);
        assert_true(rc == 0 || rc == TP_EVERIFY);
        breaks += rc == TP_EVERIFY;
    }
    tp_verifier_summary(v, &sum);
    assert_int_equal(sum.errors, breaks);
    tp_verifier_free(v);
    return sum;
}

/* Interleaved topic order: a1 b1 a2 b2 a3 b3. */
static size_t interleaved(vctx *c, tp_receipt_view *out) {
    size_t n = 0;
    for (int i = 0; i < PER_TENANT; i++) {
        out[n++] = c->a[i].view;
        out[n++] = c->b[i].view;
    }
    return n;
}

static void test_valid_chain_two_tenants(void **state) {
    vctx *c = *state;
    tp_receipt_view views[2 * PER_TENANT];
    size_t n = interleaved(c, views);
    tp_verify_summary sum = run(c->ks1, views, n);
    assert_int_equal(sum.tenants, 2);
    assert_int_equal(sum.receipts, 6);
    assert_int_equal(sum.duplicates, 0);
    assert_int_equal(sum.errors, 0);
    assert_string_equal(sum.first_error, "");
    /* Same result with the larger key set. */
    sum = run(c->ks12, views, n);
    assert_int_equal(sum.errors, 0);
}

static void test_flipped_payload_byte(void **state) {
    vctx *c = *state;
    tp_receipt_view views[2 * PER_TENANT];
    size_t n = interleaved(c, views);
    tp_verify_summary sum;
    char *p = c->a[1].sealed.payload;
    size_t at = c->a[1].sealed.payload_len / 2;
    p[at] ^= 0x01;
    sum = run(c->ks1, views, n);
    p[at] ^= 0x01;
    assert_int_equal(sum.errors, 1); /* the chain resynchronises: later receipts are not blamed */
    assert_non_null(strstr(sum.first_error, "receipt prov_ten_a_2 "));
    assert_non_null(strstr(sum.first_error, "does not verify"));
    /* Restored: passes again (the test really flipped something). */
    assert_int_equal(run(c->ks1, views, n).errors, 0);
}

static void test_swapped_receipts(void **state) {
    vctx *c = *state;
    tp_receipt_view views[] = {c->a[0].view, c->b[0].view, c->a[2].view,
                               c->b[1].view, c->a[1].view, c->b[2].view};
    tp_verify_summary sum = run(c->ks1, views, 6);
    assert_true(sum.errors >= 1);
    assert_non_null(strstr(sum.first_error, "receipt prov_ten_a_3 "));
    assert_non_null(strstr(sum.first_error, "sequence break: expected 2"));
}

static void test_removed_receipt(void **state) {
    vctx *c = *state;
    tp_receipt_view views[] = {c->a[0].view, c->b[0].view, c->b[1].view, c->a[2].view, c->b[2].view};
    tp_verify_summary sum = run(c->ks1, views, 5);
    assert_int_equal(sum.errors, 1);
    assert_int_equal(sum.receipts, 5);
    assert_non_null(strstr(sum.first_error, "receipt prov_ten_a_3 "));
    assert_non_null(strstr(sum.first_error, "expected 2"));
}

static void test_first_receipt_removed(void **state) {
    vctx *c = *state;
    tp_receipt_view views[] = {c->a[1].view, c->a[2].view};
    tp_verify_summary sum = run(c->ks1, views, 2);
    assert_int_equal(sum.errors, 1);
    assert_non_null(strstr(sum.first_error, "receipt prov_ten_a_2 "));
}

static void test_unknown_key(void **state) {
    vctx *c = *state;
    fx_receipt forged;
    tp_receipt_view views[2 * PER_TENANT];
    size_t n = interleaved(c, views);
    tp_verify_summary sum;
    /* The same receipt (same fields, so same hash) signed by a key outside the key set. */
    assert_int_equal(fx_seal(c->k2.signer, "ten_a", &c->a[0], &forged), 0);
    assert_string_equal(forged.sealed.hash_hex, c->a[1].sealed.hash_hex);
    views[2] = forged.view;
    sum = run(c->ks1, views, n);
    assert_int_equal(sum.errors, 1);
    assert_non_null(strstr(sum.first_error, "receipt prov_ten_a_2 "));
    assert_non_null(strstr(sum.first_error, "unknown key id"));
    assert_non_null(strstr(sum.first_error, tp_signer_keyid(c->k2.signer)));
    /* Once the key is in the key set, it verifies. */
    assert_int_equal(run(c->ks12, views, n).errors, 0);
    fx_receipt_release(&forged);
}

static void test_duplicates_are_not_errors(void **state) {
    vctx *c = *state;
    /* A relay crash re-publishes a2, a3 after a3 was already out; b1 re-published at once. */
    tp_receipt_view views[] = {c->a[0].view, c->a[1].view, c->b[0].view, c->b[0].view, c->a[2].view,
                               c->a[1].view, c->a[2].view, c->b[1].view, c->b[2].view};
    tp_verify_summary sum = run(c->ks1, views, 9);
    assert_int_equal(sum.errors, 0);
    assert_int_equal(sum.duplicates, 3);
    assert_int_equal(sum.receipts, 9);
    assert_int_equal(sum.tenants, 2);
}

static void test_same_id_other_hash_is_error(void **state) {
    vctx *c = *state;
    tp_receipt_view views[] = {c->a[0].view, c->a[1].view, c->a[2].view, c->a[2].view};
    tp_verify_summary sum;
    tp_sealed_receipt other;
    tp_receipt_fields f = {.receipt_id = c->a[2].receipt_id, .action_type = c->a[2].action,
                           .tenant_id = "ten_a", .request_id = c->a[2].request_id,
                           .timestamp_ms = c->a[2].ts, .sequence = 3,
                           .prev_hash_hex = c->a[1].sealed.hash_hex, .policy_revision = "rev-other"};
    assert_int_equal(tp_receipt_seal(c->k1.signer, &f, &other), 0);
    tp_receipt_sig sig = {.keyid = other.keyid, .sig = other.sig, .sig_len = 64};
    /* Validly signed, but a3's id re-used for other content: not a duplicate. */
    views[3].hash_hex = other.hash_hex;
    views[3].payload = (const unsigned char *)other.payload;
    views[3].payload_len = other.payload_len;
    views[3].sigs = &sig;
    sum = run(c->ks1, views, 4);
    assert_int_equal(sum.errors, 1);
    assert_int_equal(sum.duplicates, 0);
    assert_non_null(strstr(sum.first_error, "receipt prov_ten_a_3 "));
    assert_non_null(strstr(sum.first_error, "already seen with another hash"));
    tp_sealed_receipt_release(&other);
}

/* Relabelling another receipt's signed content under a different id is caught. */
static void test_relabelled_receipt(void **state) {
    vctx *c = *state;
    tp_receipt_view views[] = {c->a[0].view, c->a[1].view, c->b[2].view};
    tp_verify_summary sum;
    views[2].receipt_id = c->a[2].receipt_id;
    views[2].tenant_id = "ten_a";
    sum = run(c->ks1, views, 3);
    assert_int_equal(sum.errors, 1);
    assert_non_null(strstr(sum.first_error, "receipt prov_ten_a_3 "));
    assert_non_null(strstr(sum.first_error, "receiptId"));
}

static void test_rotated_key_still_verifies(void **state) {
    vctx *c = *state;
    fx_receipt r[4];
    tp_receipt_view views[4];
    tp_verify_summary sum;
    const fx_key *only_new[1] = {&c->k2};
    tp_keyset *ks_new = fx_keyset(only_new, 1);
    /* Receipts 1, 2 signed by k1; after rotation 3, 4 by k2; one chain. */
    for (int i = 0; i < 4; i++) {
        assert_int_equal(fx_seal(i < 2 ? c->k1.signer : c->k2.signer, "ten_r", i ? &r[i - 1] : NULL, &r[i]), 0);
        views[i] = r[i].view;
    }
    sum = run(c->ks12, views, 4);
    assert_int_equal(sum.errors, 0);
    assert_int_equal(sum.receipts, 4);
    /* Without the rotated-out key, the old receipts fail and are named. */
    sum = run(ks_new, views, 4);
    assert_int_equal(sum.errors, 2);
    assert_non_null(strstr(sum.first_error, "receipt prov_ten_r_1 "));
    assert_non_null(strstr(sum.first_error, "unknown key id"));
    tp_keyset_free(ks_new);
    for (int i = 0; i < 4; i++)
        fx_receipt_release(&r[i]);
}

/* Outer fields that disagree with what is signed. */
static void test_outer_field_tampering(void **state) {
    vctx *c = *state;
    tp_receipt_view views[PER_TENANT];
    tp_verify_summary sum;
    char hash[TP_HASH_HEX_LEN + 1];
    tp_receipt_sig sig2[2];
    unsigned char short_sig[10] = {0};
    for (int i = 0; i < PER_TENANT; i++)
        views[i] = c->a[i].view;
#define EXPECT_BREAK(mutation, needle)                                                             \
    do {                                                                                           \
        tp_receipt_view saved = views[1];                                                          \
        mutation;                                                                                  \
        sum = run(c->ks1, views, PER_TENANT);                                                      \
        views[1] = saved;                                                                          \
        assert_true(sum.errors >= 1);                                                              \
        assert_non_null(strstr(sum.first_error, "prov_ten_a_2"));                                  \
        assert_non_null(strstr(sum.first_error, needle));                                          \
    } while (0)
    EXPECT_BREAK(views[1].action_type = "TENANT_QUOTA_ASSIGNED_X", "actionType");
    EXPECT_BREAK(views[1].sequence = 7, "sequence");
    EXPECT_BREAK(views[1].tenant_id = "ten_b", "tenantId");
    EXPECT_BREAK(views[1].request_id = "req_other", "requestId");
    EXPECT_BREAK(views[1].timestamp_ms = 1, "timestamp");
    EXPECT_BREAK(views[1].prev_hash_hex = c->b[0].sealed.hash_hex, "previousHash");
    EXPECT_BREAK(views[1].payload_type = "application/json", "payload type");
    EXPECT_BREAK(views[1].payload_type = NULL, "payload type");
    memcpy(hash, c->a[1].sealed.hash_hex, sizeof(hash));
    hash[0] = hash[0] == 'a' ? 'b' : 'a';
    EXPECT_BREAK(views[1].hash_hex = hash, "not the SHA-256");
    EXPECT_BREAK(views[1].hash_hex = "XYZ", "64 lowercase hex");
    EXPECT_BREAK(views[1].n_sigs = 0, "no signature");
    sig2[0] = (tp_receipt_sig){.keyid = c->a[1].sig.keyid, .sig = short_sig, .sig_len = sizeof(short_sig)};
    EXPECT_BREAK(views[1].sigs = sig2; views[1].n_sigs = 1, "does not verify");
    EXPECT_BREAK(views[1].payload_len -= 1, "does not verify");
    /* Two signatures, one unknown and one good: accepted. */
    sig2[0] = (tp_receipt_sig){.keyid = "ed25519:0000000000000000", .sig = short_sig, .sig_len = 10};
    sig2[1] = c->a[1].sig;
    views[1].sigs = sig2;
    views[1].n_sigs = 2;
    assert_int_equal(run(c->ks1, views, PER_TENANT).errors, 0);
    views[1] = c->a[1].view;
#undef EXPECT_BREAK
}

/* Signed by a trusted key but not a valid chain link or not a statement: still caught. */
static void test_validly_signed_garbage(void **state) {
    vctx *c = *state;
    fx_receipt r1;
    tp_receipt_fields f;
    tp_sealed_receipt odd;
    tp_receipt_view views[2];
    tp_verify_summary sum;
    assert_int_equal(fx_seal(c->k1.signer, "ten_g", NULL, &r1), 0);
    /* r2 claims to follow r1 but links to the wrong hash (signed, so only the chain catches it). */
    f = (tp_receipt_fields){.receipt_id = "prov_g2", .action_type = "TENANT_QUOTA_ASSIGNED",
                            .tenant_id = "ten_g", .request_id = "req_g", .timestamp_ms = 5, .sequence = 2,
                            .prev_hash_hex = c->a[0].sealed.hash_hex};
    assert_int_equal(tp_receipt_seal(c->k1.signer, &f, &odd), 0);
    tp_receipt_sig odd_sig = {.keyid = odd.keyid, .sig = odd.sig, .sig_len = 64};
    views[0] = r1.view;
    views[1] = (tp_receipt_view){.receipt_id = "prov_g2", .action_type = "TENANT_QUOTA_ASSIGNED",
                                 .tenant_id = "ten_g", .request_id = "req_g", .sequence = 2,
                                 .prev_hash_hex = c->a[0].sealed.hash_hex, .hash_hex = odd.hash_hex,
                                 .payload_type = TP_RECEIPT_PAYLOAD_TYPE,
                                 .payload = (unsigned char *)odd.payload, .payload_len = odd.payload_len,
                                 .sigs = &odd_sig, .n_sigs = 1};
    sum = run(c->ks1, views, 2);
    assert_int_equal(sum.errors, 1);
    assert_non_null(strstr(sum.first_error, "receipt prov_g2 "));
    assert_non_null(strstr(sum.first_error, "chain break"));
    tp_sealed_receipt_release(&odd);
    fx_receipt_release(&r1);
}

static void count_error(void *arg, const char *receipt_id, const char *text) {
    (void)text;
    assert_non_null(receipt_id);
    (*(int *)arg)++;
}

static void test_error_callback_and_nulls(void **state) {
    vctx *c = *state;
    tp_verifier *v = NULL;
    int calls = 0;
    tp_receipt_view empty = {0};
    assert_int_equal(tp_verifier_new(c->ks1, &v), 0);
    tp_verifier_set_error_cb(v, count_error, &calls);
    assert_int_equal(tp_verifier_feed(v, &empty), TP_EVERIFY);
    assert_int_equal(tp_verifier_feed(v, &c->a[1].view), TP_EVERIFY);
    assert_int_equal(tp_verifier_feed(v, &c->a[2].view), 0);
    assert_int_equal(calls, 2);
    assert_int_equal(tp_verifier_feed(v, NULL), TP_EINVAL);
    tp_verifier_free(v);
    assert_int_equal(tp_verifier_new(NULL, &v), TP_EINVAL);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts); /* CPU time: the box is shared */
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Not an assertion on speed: prints the rates so the report can quote them. */
static void test_bench_sign_verify(void **state) {
    vctx *c = *state;
    enum { N = 2000 };
    fx_receipt *r = calloc(N, sizeof(*r));
    tp_verifier *v = NULL;
    tp_verify_summary sum;
    double t0, t1, t2;
    assert_non_null(r);
    t0 = now_s();
    for (int i = 0; i < N; i++)
        assert_int_equal(fx_seal(c->k1.signer, "ten_bench", i ? &r[i - 1] : NULL, &r[i]), 0);
    t1 = now_s();
    assert_int_equal(tp_verifier_new(c->ks12, &v), 0);
    for (int i = 0; i < N; i++)
        assert_int_equal(tp_verifier_feed(v, &r[i].view), 0);
    t2 = now_s();
    tp_verifier_summary(v, &sum);
    assert_int_equal(sum.errors, 0);
    assert_int_equal(sum.receipts, N);
    print_message("bench: seal %.0f receipts/s, verify %.0f receipts/s (%d receipts, per CPU-second of one thread)\n",
                  N / (t1 - t0), N / (t2 - t1), N);
    tp_verifier_free(v);
    for (int i = 0; i < N; i++)
        fx_receipt_release(&r[i]);
    free(r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_chain_two_tenants),
        cmocka_unit_test(test_flipped_payload_byte),
        cmocka_unit_test(test_swapped_receipts),
        cmocka_unit_test(test_removed_receipt),
        cmocka_unit_test(test_first_receipt_removed),
        cmocka_unit_test(test_unknown_key),
        cmocka_unit_test(test_duplicates_are_not_errors),
        cmocka_unit_test(test_same_id_other_hash_is_error),
        cmocka_unit_test(test_relabelled_receipt),
        cmocka_unit_test(test_rotated_key_still_verifies),
        cmocka_unit_test(test_outer_field_tampering),
        cmocka_unit_test(test_validly_signed_garbage),
        cmocka_unit_test(test_error_callback_and_nulls),
        cmocka_unit_test(test_bench_sign_verify),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
