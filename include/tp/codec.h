/* codec.h: the Avro contract of tenant-provisioner (the .avsc files in schemas/avro) as C sees it.
 * Single-object encoding (C3 01 + CRC-64-AVRO fingerprint of the Parsing Canonical Form, little
 * endian) for every record; Confluent framing (00 + big-endian schema id) accepted for requests.
 * Decoding of untrusted bytes is bounded: the Avro binary is walked against the schema before
 * avro-c sees it, so a garbage length never becomes a large allocation. Only worker/codec uses avro.h. */
#ifndef TP_CODEC_H
#define TP_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tp/request.h"

/* The empty fingerprint of CRC-64-AVRO (the Rabin fingerprint of the Avro specification). */
#define TP_AVRO_CRC64_EMPTY UINT64_C(0xc15d213aa4d7a795)
/* Single-object header: 2 magic bytes + 8 fingerprint bytes. */
#define TP_CODEC_SINGLE_OBJECT_HEADER 10
/* Largest record each decoder accepts (whole framed message); larger is TP_EDECODE_TOO_LARGE. */
#define TP_CODEC_REQUEST_MAX (64u * 1024u)
#define TP_CODEC_DEAD_LETTER_MAX (4u * 1024u * 1024u)
#define TP_CODEC_RECEIPT_MAX (1024u * 1024u)
#define TP_CODEC_CHECKPOINT_MAX (64u * 1024u)
/* Confluent schema ids a codec accepts for ProvisioningRequest. */
#define TP_CODEC_CONFLUENT_IDS_MAX 32

typedef struct tp_codec tp_codec;

/* ---- fingerprints (pure functions, any thread) ----------------------------------------------- */

/* Returns the CRC-64-AVRO fingerprint of len bytes (TP_AVRO_CRC64_EMPTY for none). */
uint64_t tp_avro_crc64(const void *buf, size_t len);

/* Computes the Parsing Canonical Form of a schema given as JSON text (untrusted). On success *out
 * is a new NUL-terminated string the caller frees, *out_len its length (out_len may be NULL).
 * Returns 0, TP_EINVAL (not a valid schema, errstr filled) or TP_ENOMEM. */
int tp_codec_canonical_form(const char *schema_json, size_t len, char **out, size_t *out_len,
                            char *errstr, size_t errstr_size);

/* Computes the CRC-64-AVRO fingerprint of the schema's Parsing Canonical Form.
 * Returns 0 or the error of tp_codec_canonical_form. */
int tp_codec_fingerprint(const char *schema_json, size_t len, uint64_t *out, char *errstr,
                         size_t errstr_size);

/* ---- the codec ---------------------------------------------------------------------------------- */

/* Loads ProvisioningRequest.avsc, DeadLetter.avsc, ProvenanceReceipt.avsc and TreeCheckpoint.avsc
 * from schema_dir,
 * computes their fingerprints and checks each with an encode/decode round trip.
 * confluent_ids_csv lists Confluent schema ids ("12, 40") accepted as ProvisioningRequest; NULL or
 * "" accepts none. Returns a new codec (free with tp_codec_free) or NULL with errstr filled.
 * A codec holds no mutable state: any thread may use it concurrently once created. */
tp_codec *tp_codec_new(const char *schema_dir, const char *confluent_ids_csv, char *errstr,
                       size_t errstr_size);
void tp_codec_free(tp_codec *codec);

/* Schemas a codec knows. */
typedef enum tp_codec_schema {
    TP_CODEC_SCHEMA_REQUEST = 0,
    TP_CODEC_SCHEMA_DEAD_LETTER,
    TP_CODEC_SCHEMA_RECEIPT,
    TP_CODEC_SCHEMA_CHECKPOINT,
    TP_CODEC_SCHEMA_ACTION, /* TenantActionRequest: the requests topic's second record type */
} tp_codec_schema;

/* Returns the fingerprint of a loaded schema (0 for an unknown enum value). */
uint64_t tp_codec_schema_fingerprint(const tp_codec *codec, tp_codec_schema which);
/* Returns the canonical form of a loaded schema; it lives as long as the codec ("" when unknown). */
const char *tp_codec_schema_canonical(const tp_codec *codec, tp_codec_schema which);

/* ---- ProvisioningRequest -------------------------------------------------------------------- */

/* Encodes req as a single object: a ProvisioningRequest when req->action is TP_ACTION_PROVISION,
 * a TenantActionRequest otherwise (tenant.slug, the action's fields; name, residency, region and
 * environment are not written). On success *out is a new buffer the caller frees (free()).
 * Returns 0, TP_EINVAL (an enum out of range, a string longer than its field, n_roles out of
 * range), TP_ENOMEM or TP_EDECODE_AVRO (avro-c refused). */
int tp_codec_encode_request(tp_codec *codec, const tp_request *req, unsigned char **out,
                            size_t *out_len);

/* Decodes an untrusted Kafka value into *out (overwritten, fixed fields; nothing to release).
 * Accepts single-object encoding with the ProvisioningRequest fingerprint (out->action is then
 * TP_ACTION_PROVISION) or the TenantActionRequest fingerprint (out->action from the record,
 * out->tenant.slug from tenantSlug), and Confluent framing with a configured schema id (always a
 * ProvisioningRequest). Returns 0 or, with errstr filled:
 *   TP_EDECODE_FRAMING      neither framing, or shorter than its header;
 *   TP_EDECODE_FINGERPRINT  single object of neither schema;
 *   TP_EDECODE_SCHEMA_ID    Confluent framing with an id not configured;
 *   TP_EDECODE_TOO_LARGE    message over TP_CODEC_REQUEST_MAX, or a field over its tp_request cap;
 *   TP_EDECODE_AVRO         malformed Avro binary (truncated, bad varint, bad union or enum index,
 *                           string not UTF-8 or holding NUL, trailing bytes);
 *   TP_ENOMEM. */
int tp_codec_decode_request(tp_codec *codec, const unsigned char *buf, size_t len, tp_request *out,
                            char *errstr, size_t errstr_size);

/* ---- DeadLetter ----------------------------------------------------------------------------------- */

#define TP_DLQ_REASON_CODE_MAX 63
#define TP_DLQ_REASON_MESSAGE_MAX 1023
#define TP_DLQ_TOPIC_MAX 249 /* Kafka's limit on topic names */
#define TP_DLQ_STAGE_MAX 31

typedef struct tp_dead_letter {
    unsigned char *original;       /* owned after decode; borrowed by encode; may be NULL if len 0 */
    size_t original_len;
    char reason_code[TP_DLQ_REASON_CODE_MAX + 1];
    char reason_message[TP_DLQ_REASON_MESSAGE_MAX + 1];
    char origin_topic[TP_DLQ_TOPIC_MAX + 1];
    int32_t origin_partition;
    int64_t origin_offset;
    char failed_stage[TP_DLQ_STAGE_MAX + 1];     /* "" when absent (null) */
    char request_id[TP_REQUEST_ID_MAX + 1];      /* "" when absent (null) */
    int64_t timestamp_ms;
    bool has_original_key;
    unsigned char *original_key;   /* owned after decode; borrowed by encode */
    size_t original_key_len;
} tp_dead_letter;

/* Encodes dl as a single object; *out is a new buffer the caller frees. Returns 0, TP_EINVAL,
 * TP_ENOMEM or TP_EDECODE_AVRO. dl's buffers are borrowed. */
int tp_codec_encode_dead_letter(tp_codec *codec, const tp_dead_letter *dl, unsigned char **out,
                                size_t *out_len);
/* Decodes a single-object DeadLetter (untrusted, at most TP_CODEC_DEAD_LETTER_MAX bytes) into *out,
 * which then owns its buffers: release with tp_dead_letter_release (also safe after a failure).
 * Returns 0 or a TP_EDECODE_* code / TP_ENOMEM as tp_codec_decode_request does. */
int tp_codec_decode_dead_letter(tp_codec *codec, const unsigned char *buf, size_t len,
                                tp_dead_letter *out, char *errstr, size_t errstr_size);
/* Frees the buffers a decode gave *dl and zeroes it. */
void tp_dead_letter_release(tp_dead_letter *dl);

/* ---- ProvenanceReceipt --------------------------------------------------------------------------- */

#define TP_RECEIPT_SIGNATURES_MAX 16

typedef struct tp_receipt_signature {
    char *keyid;
    unsigned char *sig; /* raw signature bytes (64 for Ed25519) */
    size_t sig_len;
} tp_receipt_signature;

typedef struct tp_receipt_record {
    char *receipt_id;
    char *action_type;
    char *tenant_id;
    char *request_id;
    int64_t sequence;
    char *previous_hash;
    char *hash;
    int64_t timestamp_ms;
    char *payload_type;            /* DSSE envelope */
    unsigned char *payload;
    size_t payload_len;
    size_t n_signatures;           /* at most TP_RECEIPT_SIGNATURES_MAX */
    tp_receipt_signature *signatures;
} tp_receipt_record;

/* Encodes r as a single object; *out is a new buffer the caller frees. Every string must be
 * non-NULL. r is borrowed. Returns 0, TP_EINVAL, TP_ENOMEM or TP_EDECODE_AVRO. */
int tp_codec_encode_receipt(tp_codec *codec, const tp_receipt_record *r, unsigned char **out,
                            size_t *out_len);
/* Decodes a single-object ProvenanceReceipt (untrusted, at most TP_CODEC_RECEIPT_MAX bytes) into
 * *out, which then owns every string and buffer: release with tp_receipt_record_release (also safe
 * after a failure). Returns 0 or a TP_EDECODE_* code / TP_ENOMEM. */
int tp_codec_decode_receipt(tp_codec *codec, const unsigned char *buf, size_t len,
                            tp_receipt_record *out, char *errstr, size_t errstr_size);
/* Frees everything a decode gave *r and zeroes it. */
void tp_receipt_record_release(tp_receipt_record *r);

/* ---- TreeCheckpoint ------------------------------------------------------------------------------ */

typedef struct tp_checkpoint_record {
    char *origin;
    int64_t tree_size;
    unsigned char *root_hash;
    size_t root_hash_len;
    char *note;                    /* the signed note text */
} tp_checkpoint_record;

/* Encodes c as a single object; *out is a new buffer the caller frees. Returns 0, TP_EINVAL,
 * TP_ENOMEM or TP_EDECODE_AVRO. */
int tp_codec_encode_checkpoint(tp_codec *codec, const tp_checkpoint_record *c, unsigned char **out,
                               size_t *out_len);
/* Decodes a single-object TreeCheckpoint (untrusted, at most TP_CODEC_CHECKPOINT_MAX bytes) into
 * *out, which then owns its buffers: release with tp_checkpoint_record_release. */
int tp_codec_decode_checkpoint(tp_codec *codec, const unsigned char *buf, size_t len,
                               tp_checkpoint_record *out, char *errstr, size_t errstr_size);
void tp_checkpoint_record_release(tp_checkpoint_record *c);

#endif
