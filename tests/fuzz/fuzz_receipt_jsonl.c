/* fuzz_receipt_jsonl: libFuzzer driver for the receipt JSON-lines parser and the verifier: each
 * input is split into lines, every line is parsed (tp_receipt_doc_parse), parsed receipts are fed
 * in order to one verifier and printed back (tp_receipt_to_jsonl), which must parse again. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "tp/error.h"
#include "tp/receipts.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The key the seed corpus is signed with: seed 32 x 0x42 (generated once, public knowledge). */
static tp_keyset *fuzz_keyset(void) {
    static tp_keyset *ks;
    unsigned char seed[32], pk[32], sk[64];
    char keyid[TP_KEYID_MAX + 1], b64[64], line[160];
    if (ks)
        return ks;
    if (sodium_init() < 0)
        abort();
    memset(seed, 0x42, sizeof(seed));
    crypto_sign_seed_keypair(pk, sk, seed);
    tp_receipt_keyid(pk, keyid);
    sodium_bin2base64(b64, sizeof(b64), pk, sizeof(pk), sodium_base64_VARIANT_ORIGINAL);
    snprintf(line, sizeof(line), "# fuzz key\n%s %s\n", keyid, b64);
    if (tp_keyset_parse(line, strlen(line), &ks, NULL, 0) != 0)
        abort();
    return ks;
}

static void check_line(tp_verifier *v, const char *line, size_t len) {
    tp_receipt_doc *d = NULL, *again = NULL;
    char errstr[256], *printed = NULL;
    int rc = tp_receipt_doc_parse(line, len, &d, errstr, sizeof(errstr));
    if (rc != 0) {
        if (rc != TP_EINVAL && rc != TP_ENOMEM)
            abort();
        tp_receipt_doc_free(d);
        return;
    }
    rc = tp_verifier_feed(v, tp_receipt_doc_view(d));
    if (rc != 0 && rc != TP_EVERIFY && rc != TP_ENOMEM)
        abort();
    /* What tail prints must read back (the statement is informative and may be dropped). */
    rc = tp_receipt_to_jsonl(tp_receipt_doc_view(d), &printed);
    if (rc == 0) {
        if (tp_receipt_doc_parse(printed, strlen(printed), &again, errstr, sizeof(errstr)) != 0)
            abort();
        const tp_receipt_view *a = tp_receipt_doc_view(d), *b = tp_receipt_doc_view(again);
        if (a->sequence != b->sequence || a->payload_len != b->payload_len || a->n_sigs != b->n_sigs ||
            (a->payload_len && memcmp(a->payload, b->payload, a->payload_len) != 0))
            abort();
    } else if (rc != TP_EINVAL && rc != TP_ENOMEM) {
        abort();
    }
    free(printed);
    tp_receipt_doc_free(again);
    tp_receipt_doc_free(d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    tp_verifier *v = NULL;
    tp_verify_summary sum;
    size_t start = 0;
    if (size > 256 * 1024)
        return 0;
    if (tp_verifier_new(fuzz_keyset(), &v) != 0)
        return 0;
    for (size_t i = 0; i <= size; i++) {
        if (i == size || data[i] == '\n') {
            if (i > start)
                check_line(v, (const char *)data + start, i - start);
            start = i + 1;
        }
    }
    tp_verifier_summary(v, &sum);
    if (sum.errors > sum.receipts || sum.duplicates > sum.receipts || sum.tenants > sum.receipts)
        abort();
    if ((sum.errors == 0) != (sum.first_error[0] == '\0'))
        abort();
    tp_verifier_free(v);
    return 0;
}
