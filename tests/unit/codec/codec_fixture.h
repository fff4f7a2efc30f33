/* codec_fixture.h: helpers of the codec unit tests: the codec loaded from the repo's schemas, a
 * sample request, and a tiny independent Avro binary writer used to craft valid and hostile input. */
#ifndef TP_TEST_CODEC_FIXTURE_H
#define TP_TEST_CODEC_FIXTURE_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tp/codec.h"
#include "tp/error.h"

#define FX_SCHEMA_DIR TP_SOURCE_DIR "/schemas/avro"

/* Fingerprints computed independently with fastavro 1.13.1 (to_parsing_canonical_form + fingerprint
 * "CRC-64-AVRO", which prints the 8 bytes in little-endian order: 150265ae4374bf3b for the request)
 * from the .avsc files as committed. A schema change must update these on purpose. */
#define FX_FP_REQUEST UINT64_C(0x3bbf7443ae650215)
#define FX_FP_DEAD_LETTER UINT64_C(0x12e0ffc88c0404a2)
#define FX_FP_RECEIPT UINT64_C(0x0d325aafbab9ebe6)
#define FX_FP_CHECKPOINT UINT64_C(0x284c3efc42512e13)
#define FX_FP_ACTION UINT64_C(0xce126831c7054be7) /* fastavro printed e74b05c7316812ce */

static inline tp_codec *fx_codec(const char *ids) {
    char err[512] = "";
    tp_codec *c = tp_codec_new(FX_SCHEMA_DIR, ids, err, sizeof(err));
    if (!c)
        fail_msg("tp_codec_new: %s", err);
    return c;
}

static inline void fx_request(tp_request *r) {
    memset(r, 0, sizeof(*r));
    strcpy(r->request_id, "0b6c7a52-3a0e-4c8e-9f7e-2a7a1f1d6c01");
    strcpy(r->idempotency_key, "idem-1");
    r->source = TP_SOURCE_SELF_SERVE_API;
    strcpy(r->actor.id, "user-17");
    strcpy(r->actor.type, "user");
    r->actor.n_roles = 2;
    strcpy(r->actor.roles[0], "member");
    strcpy(r->actor.roles[1], "billing-viewer");
    strcpy(r->tenant.name, "Acme Corp");
    strcpy(r->tenant.slug, "acme-corp");
    r->tenant.residency = TP_RESIDENCY_US;
    strcpy(r->tenant.region, "us-west-2");
    r->plan = TP_PLAN_STARTER;
    r->environment = TP_ENV_STAGING;
    r->has_requested_seats = true;
    r->requested_seats = 12;
    r->has_storage_estimate = true;
    r->storage_estimate_bytes = INT64_C(49999999999);
    strcpy(r->correlation_id, "corr-abc");
    r->submitted_at_ms = INT64_C(1718000000123);
}

/* ---- an independent Avro binary writer (zig-zag varints, length-prefixed strings) ------------ */

typedef struct hbuf {
    unsigned char b[80 * 1024];
    size_t n;
} hbuf;

static inline void h_raw(hbuf *h, const void *p, size_t n) {
    if (n == 0)
        return;
    assert_true(h->n + n <= sizeof(h->b));
    memcpy(h->b + h->n, p, n);
    h->n += n;
}

static inline void h_long(hbuf *h, int64_t v) {
    uint64_t z = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
    do {
        unsigned char c = (unsigned char)(z & 0x7f);
        z >>= 7;
        if (z)
            c |= 0x80;
        h_raw(h, &c, 1);
    } while (z);
}

static inline void h_strn(hbuf *h, const char *s, size_t n) {
    h_long(h, (int64_t)n);
    h_raw(h, s, n);
}

static inline void h_str(hbuf *h, const char *s) { h_strn(h, s, strlen(s)); }

/* ["null", "string"]: NULL writes the null branch. */
static inline void h_opt_str(hbuf *h, const char *s) {
    if (!s) {
        h_long(h, 0);
    } else {
        h_long(h, 1);
        h_str(h, s);
    }
}

static inline void h_single_object(hbuf *h, uint64_t fp) {
    unsigned char hdr[10] = {0xc3, 0x01};
    for (int i = 0; i < 8; i++)
        hdr[2 + i] = (unsigned char)(fp >> (8 * i));
    h->n = 0;
    h_raw(h, hdr, sizeof(hdr));
}

/* A ProvisioningRequest as loose strings, so that tests can write values tp_request cannot hold. */
typedef struct hreq {
    const char *request_id, *idempotency_key, *actor_id, *actor_type;
    int n_roles;
    const char *roles[40];
    const char *name, *slug, *region, *correlation_id;
    int64_t source, residency, plan, environment;
    int has_seats;
    int64_t seats;
    int has_storage;
    int64_t storage;
    int64_t submitted_at;
} hreq;

static inline void fx_hreq(hreq *q, const tp_request *r) {
    memset(q, 0, sizeof(*q));
    q->request_id = r->request_id;
    q->idempotency_key = r->idempotency_key[0] ? r->idempotency_key : NULL;
    q->actor_id = r->actor.id;
    q->actor_type = r->actor.type;
    q->n_roles = r->actor.n_roles;
    for (int i = 0; i < r->actor.n_roles; i++)
        q->roles[i] = r->actor.roles[i];
    q->name = r->tenant.name;
    q->slug = r->tenant.slug;
    q->region = r->tenant.region[0] ? r->tenant.region : NULL;
    q->correlation_id = r->correlation_id[0] ? r->correlation_id : NULL;
    q->source = r->source;
    q->residency = r->tenant.residency;
    q->plan = r->plan;
    q->environment = r->environment;
    q->has_seats = r->has_requested_seats;
    q->seats = r->requested_seats;
    q->has_storage = r->has_storage_estimate;
    q->storage = r->storage_estimate_bytes;
    q->submitted_at = r->submitted_at_ms;
}

/* Appends the Avro binary of q (field order of ProvisioningRequest.avsc). */
static inline void h_request_body(hbuf *h, const hreq *q) {
    h_str(h, q->request_id);
    h_opt_str(h, q->idempotency_key);
    h_long(h, q->source);
    h_str(h, q->actor_id);
    h_str(h, q->actor_type);
    if (q->n_roles) {
        h_long(h, q->n_roles);
        for (int i = 0; i < q->n_roles; i++)
            h_str(h, q->roles[i]);
    }
    h_long(h, 0);
    h_str(h, q->name);
    h_str(h, q->slug);
    h_long(h, q->residency);
    h_opt_str(h, q->region);
    h_long(h, q->plan);
    h_long(h, q->environment);
    h_long(h, q->has_seats ? 1 : 0);
    if (q->has_seats)
        h_long(h, q->seats);
    h_long(h, q->has_storage ? 1 : 0);
    if (q->has_storage)
        h_long(h, q->storage);
    h_opt_str(h, q->correlation_id);
    h_long(h, q->submitted_at);
}

static inline void h_request(hbuf *h, const hreq *q) {
    h_single_object(h, FX_FP_REQUEST);
    h_request_body(h, q);
}

static inline char *fx_repeat(char c, size_t n) {
    char *s = malloc(n + 1);
    assert_non_null(s);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

#endif
