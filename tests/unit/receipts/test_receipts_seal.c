/* test_receipts_seal.c: the sealed receipt: in-toto Statement v1 content, deterministic bytes,
 * the DSSE envelope, the Ed25519 signature over PAE and the chain hash; bad inputs refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>
#include <sodium.h>

#include "receipts/receipts_int.h"
#include "receipts_fixture.h"

typedef struct seal_ctx {
    fx_key key;
    tp_keyset *ks;
} seal_ctx;

static int setup(void **state) {
    seal_ctx *c = calloc(1, sizeof(*c));
    const fx_key *keys[1];
    if (!c || fx_key_new(&c->key) != 0)
        return -1;
    keys[0] = &c->key;
    c->ks = fx_keyset(keys, 1);
    *state = c;
    return c->ks ? 0 : -1;
}

static int teardown(void **state) {
    seal_ctx *c = *state;
    tp_keyset_free(c->ks);
    fx_key_release(&c->key);
    free(c);
    return 0;
}

/* The action facts of base_fields (set up once by main). */
static json_t *g_data;

static tp_receipt_fields base_fields(void) {
    return (tp_receipt_fields){
        .receipt_id = "prov_11111111-2222-3333-4444-555555555555",
        .action_type = "TENANT_PROVISIONED",
        .tenant_id = "ten_1",
        .tenant_slug = "acme",
        .request_id = "req_1",
        .correlation_id = "corr_1",
        .actor_id = "admin-7",
        .actor_type = "ADMIN",
        .timestamp_ms = 1700000000123LL,
        .sequence = 1,
        .prev_hash_hex = TP_RECEIPT_ZERO_HASH,
        .decision_id = "dec_9",
        .policy_revision = "rev_3",
        .action_data = g_data,
    };
}

static void test_statement_content(void **state) {
    seal_ctx *c = *state;
    tp_receipt_fields f = base_fields();
    tp_sealed_receipt r;
    json_t *st, *pred, *subj;
    char digest[TP_HASH_HEX_LEN + 1];
    assert_int_equal(tp_receipt_seal(c->key.signer, &f, &r), 0);
    st = json_loadb(r.payload, r.payload_len, 0, NULL);
    assert_non_null(st);
    assert_string_equal(json_string_value(json_object_get(st, "_type")), "https://in-toto.io/Statement/v1");
    assert_string_equal(json_string_value(json_object_get(st, "predicateType")),
                        TP_RECEIPT_PREDICATE_TYPE);
    subj = json_object_get(st, "subject");
    assert_int_equal(json_array_size(subj), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(subj, 0), "name")), "tenant/ten_1");
    tp_sha256_hex("ten_1", 5, digest);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(json_array_get(subj, 0), "digest"), "sha256")),
        digest);
    assert_string_equal(json_string_value(json_object_get(json_array_get(subj, 1), "name")), "request/req_1");
    tp_sha256_hex("req_1", 5, digest);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(json_array_get(subj, 1), "digest"), "sha256")),
        digest);
    pred = json_object_get(st, "predicate");
    assert_string_equal(json_string_value(json_object_get(pred, "actionType")), "TENANT_PROVISIONED");
    assert_string_equal(json_string_value(json_object_get(pred, "receiptId")), f.receipt_id);
    assert_string_equal(json_string_value(json_object_get(pred, "tenantId")), "ten_1");
    assert_string_equal(json_string_value(json_object_get(pred, "requestId")), "req_1");
    assert_string_equal(json_string_value(json_object_get(pred, "correlationId")), "corr_1");
    assert_string_equal(json_string_value(json_object_get(json_object_get(pred, "actor"), "id")), "admin-7");
    assert_string_equal(json_string_value(json_object_get(json_object_get(pred, "actor"), "type")), "ADMIN");
    assert_string_equal(json_string_value(json_object_get(pred, "timestamp")), "2023-11-14T22:13:20.123Z");
    assert_int_equal(json_integer_value(json_object_get(pred, "sequence")), 1);
    assert_string_equal(json_string_value(json_object_get(pred, "previousHash")), TP_RECEIPT_ZERO_HASH);
    assert_string_equal(json_string_value(json_object_get(json_object_get(pred, "policy"), "decisionId")), "dec_9");
    assert_string_equal(json_string_value(json_object_get(json_object_get(pred, "policy"), "revision")), "rev_3");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(pred, "data"), "seats")), 10);
    assert_int_equal(json_array_size(json_object_get(json_object_get(pred, "data"), "partitions")), 2);
    json_decref(st);
    /* Sorted keys, compact: the text starts with the first key in byte order. */
    assert_memory_equal(r.payload, "{\"_type\":", 9);
    assert_null(strchr(r.payload, '\n'));
    tp_sealed_receipt_release(&r);
}

static void test_signature_hash_envelope(void **state) {
    seal_ctx *c = *state;
    tp_receipt_fields f = base_fields();
    tp_sealed_receipt r, r2;
    unsigned char *pae = NULL, *sig = NULL;
    size_t pae_len = 0, sig_len = 0;
    char hash[TP_HASH_HEX_LEN + 1];
    json_t *env, *sig0;
    const unsigned char *pk;
    assert_int_equal(tp_receipt_seal(c->key.signer, &f, &r), 0);
    assert_string_equal(r.keyid, tp_signer_keyid(c->key.signer));
    assert_int_equal(tp_dsse_pae(TP_RECEIPT_PAYLOAD_TYPE, (unsigned char *)r.payload, r.payload_len, &pae,
                                 &pae_len),
                     0);
    tp_sha256_hex(pae, pae_len, hash);
    assert_string_equal(hash, r.hash_hex);
    pk = tp_keyset_lookup(c->ks, r.keyid);
    assert_non_null(pk);
    assert_int_equal(crypto_sign_verify_detached(r.sig, pae, pae_len, pk), 0);
    /* The signature is over PAE, not the bare payload. */
    assert_int_not_equal(crypto_sign_verify_detached(r.sig, (unsigned char *)r.payload, r.payload_len, pk), 0);

    env = json_loads(r.envelope_json, 0, NULL);
    assert_non_null(env);
    assert_string_equal(json_string_value(json_object_get(env, "payloadType")), TP_RECEIPT_PAYLOAD_TYPE);
    /* Stored without its payload (the payload column holds it once): payloadType and
     * signatures only. */
    assert_null(json_object_get(env, "payload"));
    assert_int_equal(json_object_size(env), 2);
    assert_int_equal(json_array_size(json_object_get(env, "signatures")), 1);
    sig0 = json_array_get(json_object_get(env, "signatures"), 0);
    assert_string_equal(json_string_value(json_object_get(sig0, "keyid")), r.keyid);
    const char *s64 = json_string_value(json_object_get(sig0, "sig"));
    assert_int_equal(tp_receipts__b64_decode(s64, strlen(s64), &sig, &sig_len), 0);
    assert_int_equal(sig_len, 64);
    assert_memory_equal(sig, r.sig, 64);
    json_decref(env);

    /* Deterministic: the same fields give the same bytes, signature and hash. */
    assert_int_equal(tp_receipt_seal(c->key.signer, &f, &r2), 0);
    assert_int_equal(r2.payload_len, r.payload_len);
    assert_memory_equal(r2.payload, r.payload, r.payload_len);
    assert_string_equal(r2.hash_hex, r.hash_hex);
    assert_memory_equal(r2.sig, r.sig, 64);
    tp_sealed_receipt_release(&r2);
    /* Any field change changes the hash. */
    f.policy_revision = "rev_4";
    assert_int_equal(tp_receipt_seal(c->key.signer, &f, &r2), 0);
    assert_string_not_equal(r2.hash_hex, r.hash_hex);
    tp_sealed_receipt_release(&r2);

    free(pae);
    free(sig);
    tp_sealed_receipt_release(&r);
}

static void test_optional_fields_null(void **state) {
    seal_ctx *c = *state;
    tp_receipt_fields f = base_fields();
    tp_sealed_receipt r;
    json_t *st, *pred;
    f.correlation_id = NULL;
    f.decision_id = NULL;
    f.actor_id = NULL;
    f.action_data = NULL;
    assert_int_equal(tp_receipt_seal(c->key.signer, &f, &r), 0);
    st = json_loadb(r.payload, r.payload_len, 0, NULL);
    pred = json_object_get(st, "predicate");
    assert_true(json_is_null(json_object_get(pred, "correlationId")));
    assert_true(json_is_null(json_object_get(json_object_get(pred, "policy"), "decisionId")));
    assert_true(json_is_object(json_object_get(pred, "data")));
    assert_int_equal(json_object_size(json_object_get(pred, "data")), 0);
    json_decref(st);
    tp_sealed_receipt_release(&r);
}

static void test_bad_inputs(void **state) {
    seal_ctx *c = *state;
    tp_receipt_fields f;
    tp_sealed_receipt r;
#define EXPECT_INVAL(mutation)                                                                     \
    do {                                                                                           \
        f = base_fields();                                                                         \
        mutation;                                                                                  \
        assert_int_equal(tp_receipt_seal(c->key.signer, &f, &r), TP_EINVAL);                       \
        assert_null(r.payload);                                                                    \
        assert_null(r.envelope_json);                                                              \
    } while (0)
    EXPECT_INVAL(f.receipt_id = NULL);
    EXPECT_INVAL(f.tenant_id = NULL);
    EXPECT_INVAL(f.sequence = 0);
    EXPECT_INVAL(f.prev_hash_hex = "abc");
    EXPECT_INVAL(f.prev_hash_hex = "ABCDEF0000000000000000000000000000000000000000000000000000000000");
    EXPECT_INVAL(f.prev_hash_hex = "1111111111111111111111111111111111111111111111111111111111111111");
    json_t *not_object = json_pack("[i, i]", 1, 2);
    EXPECT_INVAL(f.action_data = not_object);
    json_decref(not_object);
    EXPECT_INVAL(f.action_type = "\xff\xfe");
    EXPECT_INVAL(f.tenant_id = "\xc3");
    EXPECT_INVAL(f.timestamp_ms = INT64_MAX);
#undef EXPECT_INVAL
    assert_int_equal(tp_receipt_seal(NULL, &f, &r), TP_EINVAL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_statement_content),
        cmocka_unit_test(test_signature_hash_envelope),
        cmocka_unit_test(test_optional_fields_null),
        cmocka_unit_test(test_bad_inputs),
    };
    g_data = json_loads("{\"plan\":\"PRO\",\"partitions\":[\"p1\",\"p2\"],\"seats\":10}", 0, NULL);
    if (!g_data)
        return 1;
    int failed = cmocka_run_group_tests(tests, setup, teardown);
    json_decref(g_data);
    return failed;
}
