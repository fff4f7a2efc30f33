/* codec_int.h: declarations private to worker/codec (the only component that includes avro.h). */
#ifndef TP_CODEC_INT_H
#define TP_CODEC_INT_H

#include <avro.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A bound on one field of a record, named by its dotted path ("tenant.slug"); for an array,
 * "actor.roles" bounds the number of items and "actor.roles[]" the length of each item. */
typedef struct tp_codec_cap {
    const char *path;
    size_t max;
} tp_codec_cap;

/* Items allowed in all arrays and maps of one record together. */
#define TP_CODEC_WALK_MAX_ITEMS 4096
/* Nesting allowed while walking (records, unions, arrays, links). */
#define TP_CODEC_WALK_MAX_DEPTH 32

/* Walks one Avro binary datum of `schema` that must fill buf[0..len) exactly, without allocating:
 * varints of at most 5 (int) or 10 (long) bytes, every length within the bytes left and within
 * its cap, block counts bounded, union and enum indexes in range, strings UTF-8 without NUL,
 * nothing left over. Returns 0, TP_EDECODE_AVRO or TP_EDECODE_TOO_LARGE with errstr filled. */
int tp_codec__walk(avro_schema_t schema, const unsigned char *buf, size_t len,
                   const tp_codec_cap *caps, size_t n_caps, char *errstr, size_t errstr_size);

/* Returns true when s[0..len) is well-formed UTF-8 (no overlongs, surrogates or > U+10FFFF). */
bool tp_codec__utf8_valid(const unsigned char *s, size_t len);

/* Writes a formatted message into errstr when it has room; returns rc. */
int tp_codec__fail(int rc, char *errstr, size_t errstr_size, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* ---- the codec object and the steps shared by the record codecs ------------------------------ */

#include "tp/codec.h"

#define TP_CODEC_N_SCHEMAS 5

typedef struct tp_codec_schema_slot {
    avro_schema_t schema;
    avro_value_iface_t *iface;
    uint64_t fingerprint;
    char *canonical;
} tp_codec_schema_slot;

struct tp_codec {
    tp_codec_schema_slot slots[TP_CODEC_N_SCHEMAS];
    uint32_t confluent_ids[TP_CODEC_CONFLUENT_IDS_MAX];
    size_t n_confluent_ids;
};

/* Checks the framing of buf against schema `which` (and the Confluent ids when allowed) and the
 * size limit max; points *body at the Avro binary. Returns 0 or TP_EDECODE_FRAMING,
 * TP_EDECODE_FINGERPRINT, TP_EDECODE_SCHEMA_ID, TP_EDECODE_TOO_LARGE. */
int tp_codec__unframe(const tp_codec *codec, tp_codec_schema which, bool allow_confluent,
                      size_t max, const unsigned char *buf, size_t len,
                      const unsigned char **body, size_t *body_len, char *errstr,
                      size_t errstr_size);
/* Walks the body with tp_codec__walk, then decodes it with avro-c into a new generic *value the
 * caller releases with avro_value_decref (only on success). */
int tp_codec__read_value(const tp_codec *codec, tp_codec_schema which, const unsigned char *body,
                         size_t body_len, const tp_codec_cap *caps, size_t n_caps,
                         avro_value_t *value, char *errstr, size_t errstr_size);
/* The first steps of every decoder: clears errstr, checks the framing (tp_codec__unframe, no
 * Confluent framing) and reads the body (tp_codec__read_value) into a new generic *value the caller
 * releases with avro_value_decref (only on success). */
int tp_codec__open(const tp_codec *codec, tp_codec_schema which, size_t max, const tp_codec_cap *caps,
                   size_t n_caps, const unsigned char *buf, size_t len, avro_value_t *value,
                   char *errstr, size_t errstr_size);
/* Writes value as a single object of schema `which` into a new buffer (*out, caller frees). */
int tp_codec__write_value(const tp_codec *codec, tp_codec_schema which, avro_value_t *value,
                          unsigned char **out, size_t *out_len);
/* Encodes and decodes one sample of every record; returns 0 or TP_ECONFIG with errstr filled. */
int tp_codec__self_test(tp_codec *codec, char *errstr, size_t errstr_size);

/* Field helpers: setters return 0, TP_EINVAL (bad input, over cap, not UTF-8) or TP_EDECODE_AVRO;
 * getters return 0, TP_EDECODE_AVRO or TP_EDECODE_TOO_LARGE (over the destination's capacity). */
int tp_codec__field(avro_value_t *rec, const char *name, avro_value_t *out);
int tp_codec__set_string(avro_value_t *rec, const char *name, const char *s, size_t cap);
int tp_codec__set_opt_string(avro_value_t *rec, const char *name, const char *s, size_t cap);
int tp_codec__set_bytes(avro_value_t *rec, const char *name, const unsigned char *p, size_t len);
int tp_codec__set_opt_bytes(avro_value_t *rec, const char *name, bool present,
                            const unsigned char *p, size_t len);
int tp_codec__set_enum(avro_value_t *rec, const char *name, const char *symbol);
int tp_codec__set_long(avro_value_t *rec, const char *name, int64_t v);
int tp_codec__set_int(avro_value_t *rec, const char *name, int32_t v);
int tp_codec__get_string(avro_value_t *rec, const char *name, const char **s, size_t *len);
int tp_codec__get_fixed_string(avro_value_t *rec, const char *name, char *dst, size_t cap);
int tp_codec__get_opt(avro_value_t *rec, const char *name, bool *present, avro_value_t *branch);
int tp_codec__get_opt_fixed_string(avro_value_t *rec, const char *name, char *dst, size_t cap);
int tp_codec__get_enum_symbol(avro_value_t *rec, const char *name, const char **symbol);
int tp_codec__get_long(avro_value_t *rec, const char *name, int64_t *v);
int tp_codec__get_int(avro_value_t *rec, const char *name, int32_t *v);

#endif
