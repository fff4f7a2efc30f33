/* receipts_fixture.h: helpers shared by the receipts unit tests: temp key directories and
 * receipt chains sealed with real keys. Header-only (static) so each test stays one executable. */
#ifndef TP_TEST_RECEIPTS_FIXTURE_H
#define TP_TEST_RECEIPTS_FIXTURE_H

#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "tp/error.h"
#include "tp/receipts.h"

typedef struct fx_key {
    char dir[256];
    char priv[300], pub[300];
    tp_signer *signer;
    char pub_line[256];
} fx_key;

/* Creates a temp dir with a fresh key pair; returns 0 on success. */
static inline int fx_key_new(fx_key *k) {
    memset(k, 0, sizeof(*k));
    snprintf(k->dir, sizeof(k->dir), "/tmp/tp_receipts_test_XXXXXX");
    if (!mkdtemp(k->dir))
        return -1;
    snprintf(k->priv, sizeof(k->priv), "%s/receipts.key", k->dir);
    snprintf(k->pub, sizeof(k->pub), "%s/receipts.pub", k->dir);
    if (tp_receipt_keygen(k->priv, k->pub) != 0)
        return -1;
    if (tp_signer_load(k->priv, &k->signer) != 0)
        return -1;
    return tp_signer_public_line(k->signer, k->pub_line, sizeof(k->pub_line));
}

static inline void fx_rmdir(const char *dir) {
    DIR *d = opendir(dir);
    struct dirent *e;
    char path[600];
    if (!d)
        return;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

static inline void fx_key_release(fx_key *k) {
    tp_signer_free(k->signer);
    fx_rmdir(k->dir);
    memset(k, 0, sizeof(*k));
}

/* Builds a key set from the given keys' public lines. */
static inline tp_keyset *fx_keyset(const fx_key *const *keys, size_t n) {
    char buf[4096] = "# test key set\n";
    tp_keyset *ks = NULL;
    for (size_t i = 0; i < n; i++) {
        strcat(buf, keys[i]->pub_line);
        strcat(buf, "\n");
    }
    if (tp_keyset_parse(buf, strlen(buf), &ks, NULL, 0) != 0)
        return NULL;
    return ks;
}

/* One sealed receipt plus the view a consumer would see. */
typedef struct fx_receipt {
    tp_sealed_receipt sealed;
    char receipt_id[64], tenant_id[64], request_id[64], action[64];
    char prev[TP_HASH_HEX_LEN + 1];
    int64_t seq, ts;
    tp_receipt_sig sig;
    tp_receipt_view view;
} fx_receipt;

static const char *const fx_actions[] = {"TENANT_PROVISIONED", "TENANT_QUOTA_ASSIGNED",
                                         "TENANT_ISOLATION_VERIFIED"};

/* Seals the next receipt of a tenant after prev (NULL for the first), signed at ts_ms (0: a fixed
 * time in 2023). Returns 0 or TP_E*. */
static inline int fx_seal_at(const tp_signer *s, const char *tenant, const fx_receipt *prev, int64_t ts_ms,
                             fx_receipt *r) {
    tp_receipt_fields f;
    char data[256];
    json_t *data_obj;
    int rc;
    memset(r, 0, sizeof(*r));
    r->seq = prev ? prev->seq + 1 : 1;
    snprintf(r->receipt_id, sizeof(r->receipt_id), "prov_%s_%" PRId64, tenant, r->seq);
    snprintf(r->tenant_id, sizeof(r->tenant_id), "%s", tenant);
    snprintf(r->request_id, sizeof(r->request_id), "req_%s", tenant);
    snprintf(r->action, sizeof(r->action), "%s", fx_actions[(r->seq - 1) % 3]);
    snprintf(r->prev, sizeof(r->prev), "%s", prev ? prev->sealed.hash_hex : TP_RECEIPT_ZERO_HASH);
    r->ts = ts_ms ? ts_ms : 1700000000123LL + r->seq;
    snprintf(data, sizeof(data), "{\"plan\":\"PRO\",\"seq\":%" PRId64 ",\"tenant\":\"%s\"}", r->seq,
             tenant);
    f = (tp_receipt_fields){
        .receipt_id = r->receipt_id,
        .action_type = r->action,
        .tenant_id = r->tenant_id,
        .tenant_slug = "acme",
        .request_id = r->request_id,
        .correlation_id = "corr-1",
        .actor_id = "user-1",
        .actor_type = "USER",
        .timestamp_ms = r->ts,
        .sequence = r->seq,
        .prev_hash_hex = r->prev,
        .decision_id = "dec-1",
        .policy_revision = "rev-7",
        .action_data = data_obj = json_loads(data, 0, NULL),
    };
    rc = data_obj ? tp_receipt_seal(s, &f, &r->sealed) : TP_ENOMEM;
    json_decref(data_obj);
    if (rc != 0)
        return rc;
    r->sig = (tp_receipt_sig){.keyid = r->sealed.keyid, .sig = r->sealed.sig, .sig_len = 64};
    r->view = (tp_receipt_view){
        .receipt_id = r->receipt_id,
        .action_type = r->action,
        .tenant_id = r->tenant_id,
        .request_id = r->request_id,
        .sequence = r->seq,
        .prev_hash_hex = r->prev,
        .hash_hex = r->sealed.hash_hex,
        .timestamp_ms = r->ts,
        .payload_type = TP_RECEIPT_PAYLOAD_TYPE,
        .payload = (const unsigned char *)r->sealed.payload,
        .payload_len = r->sealed.payload_len,
        .sigs = &r->sig,
        .n_sigs = 1,
    };
    return 0;
}

static inline int fx_seal(const tp_signer *s, const char *tenant, const fx_receipt *prev, fx_receipt *r) {
    return fx_seal_at(s, tenant, prev, 0, r);
}

static inline void fx_receipt_release(fx_receipt *r) {
    tp_sealed_receipt_release(&r->sealed);
}

#endif
