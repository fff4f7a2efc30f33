/* codec.c: the tp_codec (schemas loaded from schemas/avro, their fingerprints, accepted Confluent
 * ids), the single-object and Confluent framing, and ProvisioningRequest encode/decode with avro-c. */
#include "codec/codec_int.h"
#include "tp/codec.h"
#include "tp/config.h"
#include "tp/error.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SCHEMA_FILE_MAX (256u * 1024u)

static const char *const schema_files[TP_CODEC_N_SCHEMAS] = {
    "ProvisioningRequest.avsc", "DeadLetter.avsc", "ProvenanceReceipt.avsc", "TreeCheckpoint.avsc",
    "TenantActionRequest.avsc"};

/* Caps on ProvisioningRequest fields: exactly the capacities of tp_request. */
static const tp_codec_cap request_caps[] = {
    {"requestId", TP_REQUEST_ID_MAX},
    {"idempotencyKey", TP_IDEMPOTENCY_KEY_MAX},
    {"actor.id", TP_ACTOR_ID_MAX},
    {"actor.type", TP_ACTOR_TYPE_MAX},
    {"actor.roles", TP_ROLES_MAX},
    {"actor.roles[]", TP_ROLE_MAX},
    {"tenant.name", TP_NAME_MAX},
    {"tenant.slug", TP_SLUG_MAX},
    {"tenant.region", TP_REGION_MAX},
    {"correlationId", TP_CORRELATION_ID_MAX},
};

/* Caps on TenantActionRequest fields: the capacities of tp_request. */
static const tp_codec_cap action_caps[] = {
    {"requestId", TP_REQUEST_ID_MAX},
    {"idempotencyKey", TP_IDEMPOTENCY_KEY_MAX},
    {"actor.id", TP_ACTOR_ID_MAX},
    {"actor.type", TP_ACTOR_TYPE_MAX},
    {"actor.roles", TP_ROLES_MAX},
    {"actor.roles[]", TP_ROLE_MAX},
    {"tenantSlug", TP_SLUG_MAX},
    {"reason", TP_REASON_MAX},
    {"correlationId", TP_CORRELATION_ID_MAX},
};

/* ---- loading ------------------------------------------------------------------------------- */

static int parse_confluent_ids(tp_codec *codec, const char *csv, char *errstr, size_t errstr_size) {
    const char *p = csv;
    if (!csv)
        return 0;
    while (*p) {
        char *end;
        unsigned long v;
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        if (!*p)
            break;
        if (!isdigit((unsigned char)*p))
            return tp_codec__fail(TP_ECONFIG, errstr, errstr_size,
                                  "confluent schema ids: not a number at \"%.16s\"", p);
        errno = 0;
        v = strtoul(p, &end, 10);
        if (errno || v > INT32_MAX)
            return tp_codec__fail(TP_ECONFIG, errstr, errstr_size,
                                  "confluent schema ids: %.16s out of range", p);
        if (codec->n_confluent_ids >= TP_CODEC_CONFLUENT_IDS_MAX)
            return tp_codec__fail(TP_ECONFIG, errstr, errstr_size,
                                  "confluent schema ids: more than %d", TP_CODEC_CONFLUENT_IDS_MAX);
        codec->confluent_ids[codec->n_confluent_ids++] = (uint32_t)v;
        p = end;
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p && *p != ',')
            return tp_codec__fail(TP_ECONFIG, errstr, errstr_size,
                                  "confluent schema ids: unexpected \"%.16s\"", p);
    }
    return 0;
}

static int load_schema(tp_codec_schema_slot *slot, const char *dir, const char *file, char *errstr,
                       size_t errstr_size) {
    char path[4096];
    char *json = NULL;
    size_t len;
    int rc;

    if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, file) >= sizeof(path))
        return tp_codec__fail(TP_ECONFIG, errstr, errstr_size, "schema path too long");
    rc = tp_read_file(path, SCHEMA_FILE_MAX, &json, &len);
    if (rc)
        return tp_codec__fail(rc, errstr, errstr_size, "cannot read %s: %s", path, tp_strerror(rc));
    rc = tp_codec_canonical_form(json, len, &slot->canonical, NULL, errstr, errstr_size);
    if (rc)
        goto out_free_json;
    slot->fingerprint = tp_avro_crc64(slot->canonical, strlen(slot->canonical));
    if (avro_schema_from_json_length(json, len, &slot->schema)) {
        rc = tp_codec__fail(TP_ECONFIG, errstr, errstr_size, "avro-c refused %s: %s", path,
                            avro_strerror());
        slot->schema = NULL;
        goto out_free_json;
    }
    if (avro_typeof(slot->schema) != AVRO_RECORD) {
        rc = tp_codec__fail(TP_ECONFIG, errstr, errstr_size, "%s is not a record schema", path);
        goto out_free_json;
    }
    slot->iface = avro_generic_class_from_schema(slot->schema);
    if (!slot->iface)
        rc = tp_codec__fail(TP_ECONFIG, errstr, errstr_size, "avro-c class for %s: %s", path,
                            avro_strerror());
out_free_json:
    free(json);
    return rc;
}

tp_codec *tp_codec_new(const char *schema_dir, const char *confluent_ids_csv, char *errstr,
                       size_t errstr_size) {
    tp_codec *codec = calloc(1, sizeof(*codec));
    if (!codec) {
        tp_codec__fail(TP_ENOMEM, errstr, errstr_size, "out of memory");
        return NULL;
    }
    if (parse_confluent_ids(codec, confluent_ids_csv, errstr, errstr_size))
        goto out_free;
    for (int i = 0; i < TP_CODEC_N_SCHEMAS; i++)
        if (load_schema(&codec->slots[i], schema_dir, schema_files[i], errstr, errstr_size))
            goto out_free;
    /* A schema file that does not match the C structs fails here, at start, not on a message. */
    if (tp_codec__self_test(codec, errstr, errstr_size))
        goto out_free;
    return codec;
out_free:
    tp_codec_free(codec);
    return NULL;
}

void tp_codec_free(tp_codec *codec) {
    if (!codec)
        return;
    for (int i = 0; i < TP_CODEC_N_SCHEMAS; i++) {
        tp_codec_schema_slot *slot = &codec->slots[i];
        if (slot->iface)
            avro_value_iface_decref(slot->iface);
        if (slot->schema)
            avro_schema_decref(slot->schema);
        free(slot->canonical);
    }
    free(codec);
}

uint64_t tp_codec_schema_fingerprint(const tp_codec *codec, tp_codec_schema which) {
    if ((unsigned)which >= TP_CODEC_N_SCHEMAS)
        return 0;
    return codec->slots[which].fingerprint;
}

const char *tp_codec_schema_canonical(const tp_codec *codec, tp_codec_schema which) {
    if ((unsigned)which >= TP_CODEC_N_SCHEMAS)
        return "";
    return codec->slots[which].canonical;
}

/* ---- framing and the generic encode/decode steps ------------------------------------------- */

int tp_codec__unframe(const tp_codec *codec, tp_codec_schema which, bool allow_confluent,
                      size_t max, const unsigned char *buf, size_t len,
                      const unsigned char **body, size_t *body_len, char *errstr,
                      size_t errstr_size) {
    if (!buf || len < 2)
        return tp_codec__fail(TP_EDECODE_FRAMING, errstr, errstr_size, "record of %zu bytes", len);
    if (len > max)
        return tp_codec__fail(TP_EDECODE_TOO_LARGE, errstr, errstr_size,
                              "record of %zu bytes, limit %zu", len, max);
    if (buf[0] == 0xc3 && buf[1] == 0x01) {
        uint64_t fp = 0;
        if (len < TP_CODEC_SINGLE_OBJECT_HEADER)
            return tp_codec__fail(TP_EDECODE_FRAMING, errstr, errstr_size,
                                  "single object of %zu bytes has no fingerprint", len);
        for (int i = 7; i >= 0; i--)
            fp = (fp << 8) | buf[2 + i];
        if (fp != codec->slots[which].fingerprint)
            return tp_codec__fail(TP_EDECODE_FINGERPRINT, errstr, errstr_size,
                                  "fingerprint %016llx is not %s (%016llx)", (unsigned long long)fp,
                                  schema_files[which], (unsigned long long)codec->slots[which].fingerprint);
        *body = buf + TP_CODEC_SINGLE_OBJECT_HEADER;
        *body_len = len - TP_CODEC_SINGLE_OBJECT_HEADER;
        return 0;
    }
    if (allow_confluent && buf[0] == 0x00) {
        uint32_t id;
        if (len < 5)
            return tp_codec__fail(TP_EDECODE_FRAMING, errstr, errstr_size,
                                  "confluent record of %zu bytes has no schema id", len);
        id = (uint32_t)buf[1] << 24 | (uint32_t)buf[2] << 16 | (uint32_t)buf[3] << 8 | buf[4];
        for (size_t i = 0; i < codec->n_confluent_ids; i++) {
            if (codec->confluent_ids[i] == id) {
                *body = buf + 5;
                *body_len = len - 5;
                return 0;
            }
        }
        return tp_codec__fail(TP_EDECODE_SCHEMA_ID, errstr, errstr_size,
                              "confluent schema id %u is not configured", id);
    }
    return tp_codec__fail(TP_EDECODE_FRAMING, errstr, errstr_size,
                          "unknown framing (first bytes %02x %02x)", buf[0], buf[1]);
}

int tp_codec__read_value(const tp_codec *codec, tp_codec_schema which, const unsigned char *body,
                         size_t body_len, const tp_codec_cap *caps, size_t n_caps,
                         avro_value_t *value, char *errstr, size_t errstr_size) {
    const tp_codec_schema_slot *slot = &codec->slots[which];
    avro_reader_t reader;
    int rc = tp_codec__walk(slot->schema, body, body_len, caps, n_caps, errstr, errstr_size);
    if (rc)
        return rc;
    if (avro_generic_value_new(slot->iface, value))
        return tp_codec__fail(TP_ENOMEM, errstr, errstr_size, "avro value: %s", avro_strerror());
    reader = avro_reader_memory((const char *)body, (int64_t)body_len);
    if (!reader) {
        avro_value_decref(value);
        return tp_codec__fail(TP_ENOMEM, errstr, errstr_size, "avro reader: out of memory");
    }
    if (avro_value_read(reader, value)) {
        rc = tp_codec__fail(TP_EDECODE_AVRO, errstr, errstr_size, "avro-c: %s", avro_strerror());
        avro_value_decref(value);
    }
    avro_reader_free(reader);
    return rc;
}

int tp_codec__open(const tp_codec *codec, tp_codec_schema which, size_t max, const tp_codec_cap *caps,
                   size_t n_caps, const unsigned char *buf, size_t len, avro_value_t *value,
                   char *errstr, size_t errstr_size) {
    const unsigned char *body;
    size_t body_len;
    int rc = tp_codec__unframe(codec, which, false, max, buf, len, &body, &body_len, errstr,
                               errstr_size);
    if (rc)
        return rc;
    return tp_codec__read_value(codec, which, body, body_len, caps, n_caps, value, errstr,
                                errstr_size);
}

int tp_codec__write_value(const tp_codec *codec, tp_codec_schema which, avro_value_t *value,
                          unsigned char **out, size_t *out_len) {
    uint64_t fp = codec->slots[which].fingerprint;
    size_t size = 0;
    unsigned char *buf;
    avro_writer_t writer;

    if (avro_value_sizeof(value, &size))
        return TP_EDECODE_AVRO;
    buf = malloc(TP_CODEC_SINGLE_OBJECT_HEADER + size);
    if (!buf)
        return TP_ENOMEM;
    buf[0] = 0xc3;
    buf[1] = 0x01;
    for (int i = 0; i < 8; i++)
        buf[2 + i] = (unsigned char)(fp >> (8 * i));
    writer = avro_writer_memory((char *)buf + TP_CODEC_SINGLE_OBJECT_HEADER, (int64_t)size);
    if (!writer) {
        free(buf);
        return TP_ENOMEM;
    }
    if (avro_value_write(writer, value)) {
        avro_writer_free(writer);
        free(buf);
        return TP_EDECODE_AVRO;
    }
    avro_writer_free(writer);
    *out = buf;
    *out_len = TP_CODEC_SINGLE_OBJECT_HEADER + size;
    return 0;
}

/* ---- field helpers shared by the record codecs -------------------------------------------------- */

int tp_codec__field(avro_value_t *rec, const char *name, avro_value_t *out) {
    return avro_value_get_by_name(rec, name, out, NULL) ? TP_EDECODE_AVRO : 0;
}

int tp_codec__set_string(avro_value_t *rec, const char *name, const char *s, size_t cap) {
    avro_value_t f;
    size_t len;
    if (!s || tp_codec__field(rec, name, &f))
        return TP_EINVAL;
    len = strnlen(s, cap + 1);
    if (len > cap || !tp_codec__utf8_valid((const unsigned char *)s, len))
        return TP_EINVAL;
    return avro_value_set_string_len(&f, s, len + 1) ? TP_EDECODE_AVRO : 0;
}

/* Picks the branch of a ["null", T] union: the null branch when !present, else the other one. */
static int set_union_branch(avro_value_t *rec, const char *name, bool present, avro_value_t *branch) {
    avro_value_t f;
    avro_schema_t us;
    if (tp_codec__field(rec, name, &f))
        return TP_EINVAL;
    us = avro_value_get_schema(&f);
    if (avro_typeof(us) != AVRO_UNION)
        return TP_EDECODE_AVRO;
    for (size_t i = 0; i < avro_schema_union_size(us); i++) {
        bool is_null = avro_typeof(avro_schema_union_branch(us, (int)i)) == AVRO_NULL;
        if (is_null == !present)
            return avro_value_set_branch(&f, (int)i, branch) ? TP_EDECODE_AVRO : 0;
    }
    return TP_EDECODE_AVRO;
}

int tp_codec__set_opt_string(avro_value_t *rec, const char *name, const char *s, size_t cap) {
    avro_value_t b;
    size_t len;
    bool present = s && *s;
    int rc;
    if (present) {
        len = strnlen(s, cap + 1);
        if (len > cap || !tp_codec__utf8_valid((const unsigned char *)s, len))
            return TP_EINVAL;
    }
    rc = set_union_branch(rec, name, present, &b);
    if (rc || !present)
        return rc ? rc : (avro_value_set_null(&b) ? TP_EDECODE_AVRO : 0);
    return avro_value_set_string_len(&b, s, len + 1) ? TP_EDECODE_AVRO : 0;
}

int tp_codec__set_opt_bytes(avro_value_t *rec, const char *name, bool present,
                            const unsigned char *p, size_t len) {
    avro_value_t b;
    int rc = set_union_branch(rec, name, present, &b);
    if (rc)
        return rc;
    if (!present)
        return avro_value_set_null(&b) ? TP_EDECODE_AVRO : 0;
    return avro_value_set_bytes(&b, (void *)(p ? p : (const unsigned char *)""), len)
               ? TP_EDECODE_AVRO
               : 0;
}

int tp_codec__set_bytes(avro_value_t *rec, const char *name, const unsigned char *p, size_t len) {
    avro_value_t f;
    if (tp_codec__field(rec, name, &f))
        return TP_EINVAL;
    if (!p && len)
        return TP_EINVAL;
    return avro_value_set_bytes(&f, (void *)(p ? p : (const unsigned char *)""), len)
               ? TP_EDECODE_AVRO
               : 0;
}

int tp_codec__set_enum(avro_value_t *rec, const char *name, const char *symbol) {
    avro_value_t f;
    int idx;
    if (tp_codec__field(rec, name, &f))
        return TP_EINVAL;
    idx = avro_schema_enum_get_by_name(avro_value_get_schema(&f), symbol);
    if (idx < 0)
        return TP_EINVAL;
    return avro_value_set_enum(&f, idx) ? TP_EDECODE_AVRO : 0;
}

int tp_codec__set_long(avro_value_t *rec, const char *name, int64_t v) {
    avro_value_t f;
    if (tp_codec__field(rec, name, &f))
        return TP_EINVAL;
    return avro_value_set_long(&f, v) ? TP_EDECODE_AVRO : 0;
}

int tp_codec__set_int(avro_value_t *rec, const char *name, int32_t v) {
    avro_value_t f;
    if (tp_codec__field(rec, name, &f))
        return TP_EINVAL;
    return avro_value_set_int(&f, v) ? TP_EDECODE_AVRO : 0;
}

int tp_codec__get_string(avro_value_t *rec, const char *name, const char **s, size_t *len) {
    avro_value_t f;
    size_t size = 0;
    if (tp_codec__field(rec, name, &f) || avro_value_get_string(&f, s, &size) || size == 0)
        return TP_EDECODE_AVRO;
    *len = size - 1; /* avro-c counts the NUL */
    return 0;
}

int tp_codec__get_fixed_string(avro_value_t *rec, const char *name, char *dst, size_t cap) {
    const char *s;
    size_t len;
    int rc = tp_codec__get_string(rec, name, &s, &len);
    return rc ? rc : tp_copy_field(dst, cap, s, len);
}

/* Returns the non-null branch of a ["null", T] union field via *branch, or *present = false. */
int tp_codec__get_opt(avro_value_t *rec, const char *name, bool *present, avro_value_t *branch) {
    avro_value_t f;
    if (tp_codec__field(rec, name, &f) || avro_value_get_current_branch(&f, branch))
        return TP_EDECODE_AVRO;
    *present = avro_value_get_type(branch) != AVRO_NULL;
    return 0;
}

int tp_codec__get_opt_fixed_string(avro_value_t *rec, const char *name, char *dst, size_t cap) {
    avro_value_t b;
    bool present;
    const char *s;
    size_t size = 0;
    int rc = tp_codec__get_opt(rec, name, &present, &b);
    if (rc)
        return rc;
    if (!present) {
        dst[0] = '\0';
        return 0;
    }
    if (avro_value_get_string(&b, &s, &size) || size == 0)
        return TP_EDECODE_AVRO;
    return tp_copy_field(dst, cap, s, size - 1);
}

int tp_codec__get_enum_symbol(avro_value_t *rec, const char *name, const char **symbol) {
    avro_value_t f;
    int idx;
    if (tp_codec__field(rec, name, &f) || avro_value_get_enum(&f, &idx))
        return TP_EDECODE_AVRO;
    *symbol = avro_schema_enum_get(avro_value_get_schema(&f), idx);
    return *symbol ? 0 : TP_EDECODE_AVRO;
}

int tp_codec__get_long(avro_value_t *rec, const char *name, int64_t *v) {
    avro_value_t f;
    return (tp_codec__field(rec, name, &f) || avro_value_get_long(&f, v)) ? TP_EDECODE_AVRO : 0;
}

int tp_codec__get_int(avro_value_t *rec, const char *name, int32_t *v) {
    avro_value_t f;
    return (tp_codec__field(rec, name, &f) || avro_value_get_int(&f, v)) ? TP_EDECODE_AVRO : 0;
}

/* ---- ProvisioningRequest and TenantActionRequest -------------------------------------------- */

/* requestId, idempotencyKey, source and actor: the fields both request records share. */
static int fill_common(avro_value_t *v, const tp_request *req) {
    avro_value_t actor, roles;
    int rc;

    if (req->actor.n_roles < 0 || req->actor.n_roles > TP_ROLES_MAX)
        return TP_EINVAL;
    if ((unsigned)req->source > TP_SOURCE_BILLING)
        return TP_EINVAL;
    if ((rc = tp_codec__set_string(v, "requestId", req->request_id, TP_REQUEST_ID_MAX)) ||
        (rc = tp_codec__set_opt_string(v, "idempotencyKey", req->idempotency_key,
                                       TP_IDEMPOTENCY_KEY_MAX)) ||
        (rc = tp_codec__set_enum(v, "source", tp_source_name(req->source))))
        return rc;
    if (tp_codec__field(v, "actor", &actor))
        return TP_EDECODE_AVRO;
    if ((rc = tp_codec__set_string(&actor, "id", req->actor.id, TP_ACTOR_ID_MAX)) ||
        (rc = tp_codec__set_string(&actor, "type", req->actor.type, TP_ACTOR_TYPE_MAX)))
        return rc;
    if (tp_codec__field(&actor, "roles", &roles))
        return TP_EDECODE_AVRO;
    for (int i = 0; i < req->actor.n_roles; i++) {
        avro_value_t item;
        const char *role = req->actor.roles[i];
        size_t len = strnlen(role, TP_ROLE_MAX + 1);
        if (len > TP_ROLE_MAX || !tp_codec__utf8_valid((const unsigned char *)role, len))
            return TP_EINVAL;
        if (avro_value_append(&roles, &item, NULL) || avro_value_set_string_len(&item, role, len + 1))
            return TP_EDECODE_AVRO;
    }
    return 0;
}

/* An optional int/long field: the value's branch when present, null otherwise. */
static int set_opt_int(avro_value_t *v, const char *name, bool present, int32_t x) {
    avro_value_t b;
    int rc = set_union_branch(v, name, present, &b);
    if (rc)
        return rc;
    return (present ? avro_value_set_int(&b, x) : avro_value_set_null(&b)) ? TP_EDECODE_AVRO : 0;
}

static int set_opt_long(avro_value_t *v, const char *name, bool present, int64_t x) {
    avro_value_t b;
    int rc = set_union_branch(v, name, present, &b);
    if (rc)
        return rc;
    return (present ? avro_value_set_long(&b, x) : avro_value_set_null(&b)) ? TP_EDECODE_AVRO : 0;
}

/* requestedSeats, storageEstimateBytes, correlationId and submittedAt (both records). */
static int fill_tail(avro_value_t *v, const tp_request *req) {
    int rc;
    if ((rc = set_opt_int(v, "requestedSeats", req->has_requested_seats, req->requested_seats)) ||
        (rc = set_opt_long(v, "storageEstimateBytes", req->has_storage_estimate,
                           req->storage_estimate_bytes)) ||
        (rc = tp_codec__set_opt_string(v, "correlationId", req->correlation_id,
                                       TP_CORRELATION_ID_MAX)) ||
        (rc = tp_codec__set_long(v, "submittedAt", req->submitted_at_ms)))
        return rc;
    return 0;
}

static int fill_request(avro_value_t *v, const tp_request *req) {
    avro_value_t tenant;
    int rc;

    if ((unsigned)req->plan > TP_PLAN_ENTERPRISE || (unsigned)req->environment > TP_ENV_DEV ||
        (unsigned)req->tenant.residency > TP_RESIDENCY_EU)
        return TP_EINVAL;
    if ((rc = fill_common(v, req)))
        return rc;
    if (tp_codec__field(v, "tenant", &tenant))
        return TP_EDECODE_AVRO;
    if ((rc = tp_codec__set_string(&tenant, "name", req->tenant.name, TP_NAME_MAX)) ||
        (rc = tp_codec__set_string(&tenant, "slug", req->tenant.slug, TP_SLUG_MAX)) ||
        (rc = tp_codec__set_enum(&tenant, "residency", tp_residency_name(req->tenant.residency))) ||
        (rc = tp_codec__set_opt_string(&tenant, "region", req->tenant.region, TP_REGION_MAX)) ||
        (rc = tp_codec__set_enum(v, "plan", tp_plan_name(req->plan))) ||
        (rc = tp_codec__set_enum(v, "environment", tp_environment_name(req->environment))))
        return rc;
    return fill_tail(v, req);
}

static int fill_action(avro_value_t *v, const tp_request *req) {
    avro_value_t b;
    int rc;

    if ((unsigned)req->action > TP_ACTION_DEPROVISION ||
        (req->has_plan && (unsigned)req->plan > TP_PLAN_ENTERPRISE))
        return TP_EINVAL;
    if ((rc = fill_common(v, req)) ||
        (rc = tp_codec__set_string(v, "tenantSlug", req->tenant.slug, TP_SLUG_MAX)) ||
        (rc = tp_codec__set_enum(v, "action", tp_action_name(req->action))))
        return rc;
    if ((rc = set_union_branch(v, "plan", req->has_plan, &b)))
        return rc;
    if (req->has_plan ? avro_value_set_enum(&b, (int)req->plan) : avro_value_set_null(&b))
        return TP_EDECODE_AVRO;
    if ((rc = tp_codec__set_opt_string(v, "reason", req->reason, TP_REASON_MAX)) ||
        (rc = set_opt_int(v, "retentionDays", req->has_retention_days, req->retention_days)))
        return rc;
    return fill_tail(v, req);
}

int tp_codec_encode_request(tp_codec *codec, const tp_request *req, unsigned char **out,
                            size_t *out_len) {
    tp_codec_schema which;
    avro_value_t v;
    int rc;
    if (!codec || !req || !out || !out_len)
        return TP_EINVAL;
    which = req->action == TP_ACTION_PROVISION ? TP_CODEC_SCHEMA_REQUEST : TP_CODEC_SCHEMA_ACTION;
    if (avro_generic_value_new(codec->slots[which].iface, &v))
        return TP_ENOMEM;
    rc = which == TP_CODEC_SCHEMA_REQUEST ? fill_request(&v, req) : fill_action(&v, req);
    if (rc == 0)
        rc = tp_codec__write_value(codec, which, &v, out, out_len);
    avro_value_decref(&v);
    return rc;
}

/* The shared fields into *out (zeroed first). */
static int extract_common(avro_value_t *v, tp_request *out) {
    avro_value_t actor, roles;
    const char *sym;
    size_t n_roles = 0;
    int rc;

    memset(out, 0, sizeof(*out));
    if ((rc = tp_codec__get_fixed_string(v, "requestId", out->request_id, sizeof(out->request_id))) ||
        (rc = tp_codec__get_opt_fixed_string(v, "idempotencyKey", out->idempotency_key,
                                             sizeof(out->idempotency_key))))
        return rc;
    if ((rc = tp_codec__get_enum_symbol(v, "source", &sym)) || tp_source_parse(sym, &out->source))
        return rc ? rc : TP_EDECODE_AVRO;
    if (tp_codec__field(v, "actor", &actor) || tp_codec__field(&actor, "roles", &roles) ||
        avro_value_get_size(&roles, &n_roles))
        return TP_EDECODE_AVRO;
    if ((rc = tp_codec__get_fixed_string(&actor, "id", out->actor.id, sizeof(out->actor.id))) ||
        (rc = tp_codec__get_fixed_string(&actor, "type", out->actor.type, sizeof(out->actor.type))))
        return rc;
    if (n_roles > TP_ROLES_MAX)
        return TP_EDECODE_TOO_LARGE;
    for (size_t i = 0; i < n_roles; i++) {
        avro_value_t item;
        const char *s;
        size_t size = 0;
        if (avro_value_get_by_index(&roles, i, &item, NULL) ||
            avro_value_get_string(&item, &s, &size) || size == 0)
            return TP_EDECODE_AVRO;
        if ((rc = tp_copy_field(out->actor.roles[i], sizeof(out->actor.roles[i]), s, size - 1)))
            return rc;
    }
    out->actor.n_roles = (int)n_roles;
    return 0;
}

static int extract_tail(avro_value_t *v, tp_request *out) {
    avro_value_t b;
    bool present;
    int rc;
    if ((rc = tp_codec__get_opt(v, "requestedSeats", &present, &b)))
        return rc;
    if (present && avro_value_get_int(&b, &out->requested_seats))
        return TP_EDECODE_AVRO;
    out->has_requested_seats = present;
    if ((rc = tp_codec__get_opt(v, "storageEstimateBytes", &present, &b)))
        return rc;
    if (present && avro_value_get_long(&b, &out->storage_estimate_bytes))
        return TP_EDECODE_AVRO;
    out->has_storage_estimate = present;
    if ((rc = tp_codec__get_opt_fixed_string(v, "correlationId", out->correlation_id,
                                             sizeof(out->correlation_id))) ||
        (rc = tp_codec__get_long(v, "submittedAt", &out->submitted_at_ms)))
        return rc;
    return 0;
}

static int extract_request(avro_value_t *v, tp_request *out) {
    avro_value_t tenant;
    const char *sym;
    int rc;

    if ((rc = extract_common(v, out)))
        return rc;
    out->action = TP_ACTION_PROVISION;
    if (tp_codec__field(v, "tenant", &tenant))
        return TP_EDECODE_AVRO;
    if ((rc = tp_codec__get_fixed_string(&tenant, "name", out->tenant.name, sizeof(out->tenant.name))) ||
        (rc = tp_codec__get_fixed_string(&tenant, "slug", out->tenant.slug, sizeof(out->tenant.slug))) ||
        (rc = tp_codec__get_opt_fixed_string(&tenant, "region", out->tenant.region,
                                             sizeof(out->tenant.region))))
        return rc;
    if ((rc = tp_codec__get_enum_symbol(&tenant, "residency", &sym)) ||
        tp_residency_parse(sym, &out->tenant.residency))
        return rc ? rc : TP_EDECODE_AVRO;
    if ((rc = tp_codec__get_enum_symbol(v, "plan", &sym)) || tp_plan_parse(sym, &out->plan))
        return rc ? rc : TP_EDECODE_AVRO;
    if ((rc = tp_codec__get_enum_symbol(v, "environment", &sym)) ||
        tp_environment_parse(sym, &out->environment))
        return rc ? rc : TP_EDECODE_AVRO;
    return extract_tail(v, out);
}

static int extract_action(avro_value_t *v, tp_request *out) {
    avro_value_t b;
    const char *sym;
    bool present;
    int rc;

    if ((rc = extract_common(v, out)))
        return rc;
    if ((rc = tp_codec__get_fixed_string(v, "tenantSlug", out->tenant.slug, sizeof(out->tenant.slug))))
        return rc;
    if ((rc = tp_codec__get_enum_symbol(v, "action", &sym)) || tp_action_parse(sym, &out->action) ||
        out->action == TP_ACTION_PROVISION)
        return rc ? rc : TP_EDECODE_AVRO;
    if ((rc = tp_codec__get_opt(v, "plan", &present, &b)))
        return rc;
    if (present) {
        int sym_index;
        if (avro_value_get_enum(&b, &sym_index) || sym_index < 0 || sym_index > TP_PLAN_ENTERPRISE)
            return TP_EDECODE_AVRO;
        out->plan = (tp_plan)sym_index;
    }
    out->has_plan = present;
    if ((rc = tp_codec__get_opt_fixed_string(v, "reason", out->reason, sizeof(out->reason))))
        return rc;
    if ((rc = tp_codec__get_opt(v, "retentionDays", &present, &b)))
        return rc;
    if (present && avro_value_get_int(&b, &out->retention_days))
        return TP_EDECODE_AVRO;
    out->has_retention_days = present;
    return extract_tail(v, out);
}

/* Which request record a single object holds: its fingerprint read from the header. Anything that
 * is not a single object with the TenantActionRequest fingerprint goes the ProvisioningRequest
 * way, whose framing checks name what is wrong. */
static tp_codec_schema request_schema_of(const tp_codec *codec, const unsigned char *buf, size_t len) {
    uint64_t fp = 0;
    if (!buf || len < TP_CODEC_SINGLE_OBJECT_HEADER || buf[0] != 0xc3 || buf[1] != 0x01)
        return TP_CODEC_SCHEMA_REQUEST;
    for (int i = 7; i >= 0; i--)
        fp = (fp << 8) | buf[2 + i];
    return fp == codec->slots[TP_CODEC_SCHEMA_ACTION].fingerprint ? TP_CODEC_SCHEMA_ACTION
                                                                  : TP_CODEC_SCHEMA_REQUEST;
}

int tp_codec_decode_request(tp_codec *codec, const unsigned char *buf, size_t len, tp_request *out,
                            char *errstr, size_t errstr_size) {
    const unsigned char *body;
    size_t body_len;
    tp_codec_schema which;
    avro_value_t v;
    int rc;

    if (errstr && errstr_size)
        errstr[0] = '\0';
    if (!codec || !out)
        return TP_EINVAL;
    which = request_schema_of(codec, buf, len);
    rc = tp_codec__unframe(codec, which, which == TP_CODEC_SCHEMA_REQUEST, TP_CODEC_REQUEST_MAX, buf,
                           len, &body, &body_len, errstr, errstr_size);
    if (rc == TP_EDECODE_FINGERPRINT && errstr && errstr_size)
        snprintf(errstr + strlen(errstr), errstr_size - strlen(errstr),
                 " nor TenantActionRequest.avsc (%016llx)",
                 (unsigned long long)codec->slots[TP_CODEC_SCHEMA_ACTION].fingerprint);
    if (rc)
        return rc;
    if (which == TP_CODEC_SCHEMA_REQUEST)
        rc = tp_codec__read_value(codec, which, body, body_len, request_caps,
                                  sizeof(request_caps) / sizeof(request_caps[0]), &v, errstr,
                                  errstr_size);
    else
        rc = tp_codec__read_value(codec, which, body, body_len, action_caps,
                                  sizeof(action_caps) / sizeof(action_caps[0]), &v, errstr,
                                  errstr_size);
    if (rc)
        return rc;
    rc = which == TP_CODEC_SCHEMA_REQUEST ? extract_request(&v, out) : extract_action(&v, out);
    avro_value_decref(&v);
    if (rc)
        tp_codec__fail(rc, errstr, errstr_size, "%s: %s",
                       which == TP_CODEC_SCHEMA_REQUEST ? "ProvisioningRequest" : "TenantActionRequest",
                       tp_strerror(rc));
    return rc;
}
