/* bounds.c: walks untrusted Avro binary against the schema before avro-c decodes it, so that a
 * garbage length, block count or index is refused here instead of becoming an allocation there
 * (avro-c allocates whatever a length varint says, NOTES.md). Allocates nothing. */
#include "codec/codec_int.h"
#include "tp/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

typedef struct walker {
    const unsigned char *p, *end;
    const tp_codec_cap *caps;
    size_t n_caps;
    char path[256];
    size_t path_len;
    size_t items;
    char *errstr;
    size_t errstr_size;
} walker;

int tp_codec__fail(int rc, char *errstr, size_t errstr_size, const char *fmt, ...) {
    if (errstr && errstr_size) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(errstr, errstr_size, fmt, ap);
        va_end(ap);
    }
    return rc;
}

#define WFAIL(w, rc, ...) tp_codec__fail((rc), (w)->errstr, (w)->errstr_size, __VA_ARGS__)

bool tp_codec__utf8_valid(const unsigned char *s, size_t len) {
    size_t i = 0;
    while (i < len) {
        unsigned char c = s[i];
        size_t n;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            n = 1;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (len - i - 1 < n)
            return false;
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += n + 1;
    }
    return true;
}

/* Looks up the cap of the current path, with an optional suffix ("[]"); SIZE_MAX when none. */
static size_t cap_of(const walker *w, const char *suffix) {
    size_t sl = strlen(suffix);
    for (size_t i = 0; i < w->n_caps; i++) {
        const char *cp = w->caps[i].path;
        if (strncmp(cp, w->path, w->path_len) == 0 && strcmp(cp + w->path_len, suffix) == 0 &&
            strlen(cp) == w->path_len + sl)
            return w->caps[i].max;
    }
    return SIZE_MAX;
}

static const char *where(const walker *w) { return w->path_len ? w->path : "(record)"; }

static int read_varint(walker *w, int max_bytes, uint64_t *out) {
    uint64_t v = 0;
    for (int i = 0; i < max_bytes; i++) {
        unsigned char b;
        if (w->p == w->end)
            return WFAIL(w, TP_EDECODE_AVRO, "%s: truncated varint", where(w));
        b = *w->p++;
        if (i == max_bytes - 1 && (b & 0x80) == 0) {
            /* last allowed byte: the bits left over are 1 (long) or 4 (int) */
            if (b > (max_bytes == 10 ? 0x01 : 0x0f))
                return WFAIL(w, TP_EDECODE_AVRO, "%s: varint overflows", where(w));
        }
        v |= (uint64_t)(b & 0x7f) << (7 * i);
        if ((b & 0x80) == 0) {
            *out = v;
            return 0;
        }
    }
    return WFAIL(w, TP_EDECODE_AVRO, "%s: varint longer than %d bytes", where(w), max_bytes);
}

static int read_long(walker *w, int64_t *out) {
    uint64_t raw;
    int rc = read_varint(w, 10, &raw);
    if (rc == 0)
        *out = (int64_t)(raw >> 1) ^ -(int64_t)(raw & 1);
    return rc;
}

static int skip(walker *w, size_t n) {
    if ((size_t)(w->end - w->p) < n)
        return WFAIL(w, TP_EDECODE_AVRO, "%s: truncated", where(w));
    w->p += n;
    return 0;
}

/* Reads a length prefix, checks it against the bytes left and the cap of the path. */
static int read_length(walker *w, size_t cap, size_t *out) {
    int64_t n;
    int rc = read_long(w, &n);
    if (rc)
        return rc;
    if (n < 0)
        return WFAIL(w, TP_EDECODE_AVRO, "%s: negative length", where(w));
    if ((uint64_t)n > (uint64_t)(w->end - w->p))
        return WFAIL(w, TP_EDECODE_AVRO, "%s: length %lld past the end", where(w), (long long)n);
    if ((uint64_t)n > cap)
        return WFAIL(w, TP_EDECODE_TOO_LARGE, "%s: length %lld over its cap %zu", where(w),
                     (long long)n, cap);
    *out = (size_t)n;
    return 0;
}

static int walk(walker *w, avro_schema_t s, int depth);

static int push_path(walker *w, const char *seg, bool dotted) {
    size_t sl = strlen(seg);
    size_t need = w->path_len + sl + (dotted && w->path_len ? 1 : 0);
    if (need >= sizeof(w->path))
        return WFAIL(w, TP_EDECODE_AVRO, "schema path too long");
    if (dotted && w->path_len)
        w->path[w->path_len++] = '.';
    memcpy(w->path + w->path_len, seg, sl + 1);
    w->path_len += sl;
    return 0;
}

static void pop_path(walker *w, size_t len) {
    w->path_len = len;
    w->path[len] = '\0';
}

/* Arrays and maps: blocks of (count, [byte size,] items) ended by a zero count. */
static int walk_blocks(walker *w, avro_schema_t inner, bool is_map, int depth) {
    size_t cap = cap_of(w, ""), total = 0, saved = w->path_len;
    int rc = 0;
    for (;;) {
        int64_t count;
        const unsigned char *block_start = NULL;
        int64_t block_size = -1;
        rc = read_long(w, &count);
        if (rc)
            return rc;
        if (count == 0)
            return 0;
        if (count < 0) {
            if (count == INT64_MIN)
                return WFAIL(w, TP_EDECODE_AVRO, "%s: bad block count", where(w));
            count = -count;
            rc = read_long(w, &block_size);
            if (rc)
                return rc;
            if (block_size < 0 || (uint64_t)block_size > (uint64_t)(w->end - w->p))
                return WFAIL(w, TP_EDECODE_AVRO, "%s: bad block size", where(w));
            block_start = w->p;
        }
        if ((uint64_t)count > (uint64_t)(w->end - w->p) && count > TP_CODEC_WALK_MAX_ITEMS)
            return WFAIL(w, TP_EDECODE_AVRO, "%s: block count past the end", where(w));
        if ((uint64_t)count > cap - total)
            return WFAIL(w, TP_EDECODE_TOO_LARGE, "%s: more than %zu items", where(w), cap);
        if ((uint64_t)count > TP_CODEC_WALK_MAX_ITEMS - w->items)
            return WFAIL(w, TP_EDECODE_TOO_LARGE, "%s: more than %d items in the record",
                         where(w), TP_CODEC_WALK_MAX_ITEMS);
        total += (size_t)count;
        w->items += (size_t)count;
        rc = push_path(w, is_map ? "{}" : "[]", false);
        if (rc)
            return rc;
        for (int64_t i = 0; i < count; i++) {
            if (is_map) {
                size_t klen;
                rc = read_length(w, SIZE_MAX, &klen);
                if (rc == 0 && (memchr(w->p, 0, klen) || !tp_codec__utf8_valid(w->p, klen)))
                    rc = WFAIL(w, TP_EDECODE_AVRO, "%s: map key not UTF-8", where(w));
                if (rc)
                    return rc;
                w->p += klen;
            }
            rc = walk(w, inner, depth + 1);
            if (rc)
                return rc;
        }
        pop_path(w, saved);
        if (block_start && w->p - block_start != block_size)
            return WFAIL(w, TP_EDECODE_AVRO, "%s: block size does not match", where(w));
    }
}

static int walk(walker *w, avro_schema_t s, int depth) {
    int rc = 0;
    if (depth > TP_CODEC_WALK_MAX_DEPTH)
        return WFAIL(w, TP_EDECODE_AVRO, "%s: nested too deep", where(w));
    switch (avro_typeof(s)) {
    case AVRO_NULL:
        return 0;
    case AVRO_BOOLEAN:
        if (w->p == w->end || *w->p > 1)
            return WFAIL(w, TP_EDECODE_AVRO, "%s: bad boolean", where(w));
        w->p++;
        return 0;
    case AVRO_INT32: {
        uint64_t raw;
        return read_varint(w, 5, &raw);
    }
    case AVRO_INT64: {
        int64_t v;
        return read_long(w, &v);
    }
    case AVRO_FLOAT:
        return skip(w, 4);
    case AVRO_DOUBLE:
        return skip(w, 8);
    case AVRO_FIXED:
        return skip(w, (size_t)avro_schema_fixed_size(s));
    case AVRO_STRING:
    case AVRO_BYTES: {
        size_t n;
        rc = read_length(w, cap_of(w, ""), &n);
        if (rc)
            return rc;
        if (avro_typeof(s) == AVRO_STRING && (memchr(w->p, 0, n) || !tp_codec__utf8_valid(w->p, n)))
            return WFAIL(w, TP_EDECODE_AVRO, "%s: string not UTF-8 or holds NUL", where(w));
        w->p += n;
        return 0;
    }
    case AVRO_ENUM: {
        int64_t idx;
        rc = read_long(w, &idx);
        if (rc)
            return rc;
        if (idx < 0 || idx >= avro_schema_enum_number_of_symbols(s))
            return WFAIL(w, TP_EDECODE_AVRO, "%s: enum index %lld out of range", where(w),
                         (long long)idx);
        return 0;
    }
    case AVRO_UNION: {
        int64_t idx;
        rc = read_long(w, &idx);
        if (rc)
            return rc;
        if (idx < 0 || (uint64_t)idx >= avro_schema_union_size(s))
            return WFAIL(w, TP_EDECODE_AVRO, "%s: union branch %lld out of range", where(w),
                         (long long)idx);
        return walk(w, avro_schema_union_branch(s, (int)idx), depth + 1);
    }
    case AVRO_RECORD: {
        size_t n = avro_schema_record_size(s), saved = w->path_len;
        for (size_t i = 0; i < n; i++) {
            rc = push_path(w, avro_schema_record_field_name(s, (int)i), true);
            if (rc)
                return rc;
            rc = walk(w, avro_schema_record_field_get_by_index(s, (int)i), depth + 1);
            if (rc)
                return rc;
            pop_path(w, saved);
        }
        return 0;
    }
    case AVRO_ARRAY:
        return walk_blocks(w, avro_schema_array_items(s), false, depth);
    case AVRO_MAP:
        return walk_blocks(w, avro_schema_map_values(s), true, depth);
    case AVRO_LINK:
        return walk(w, avro_schema_link_target(s), depth + 1);
    }
    return WFAIL(w, TP_EDECODE_AVRO, "%s: unsupported schema type", where(w));
}

int tp_codec__walk(avro_schema_t schema, const unsigned char *buf, size_t len,
                   const tp_codec_cap *caps, size_t n_caps, char *errstr, size_t errstr_size) {
    walker w;
    int rc;
    memset(&w, 0, sizeof(w));
    w.p = buf;
    w.end = buf + len;
    w.caps = caps;
    w.n_caps = n_caps;
    w.errstr = errstr;
    w.errstr_size = errstr_size;
    rc = walk(&w, schema, 0);
    if (rc)
        return rc;
    if (w.p != w.end)
        return WFAIL(&w, TP_EDECODE_AVRO, "%zu trailing bytes after the record",
                     (size_t)(w.end - w.p));
    return 0;
}
