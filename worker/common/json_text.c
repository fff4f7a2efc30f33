/* json_text.c: a jansson tree as compact JSON text, identical to jansson 2.14's json_dumps with
 * JSON_COMPACT (and JSON_SORT_KEYS); receipts are signed over these bytes, so the rules below are
 * jansson's, rule for rule. One growing buffer; runs of bytes that need no escape are copied. */
#include "tp/json_text.h"

#include <jansson.h>

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One member of an object being written in key order. */
typedef struct sorted_member {
    const char *key;
    size_t key_len;
    json_t *value;
} sorted_member;

typedef struct text_writer {
    char *data;
    size_t len, cap;
    unsigned flags;
    /* A stack of members shared by the objects being written, the innermost on top. */
    sorted_member *members;
    size_t members_used, members_cap;
} text_writer;

/* Makes room for n more bytes plus the final NUL. Returns false when out of memory. */
static bool reserve(text_writer *w, size_t n) {
    if (n < w->cap - w->len)
        return true;
    size_t cap = w->cap;
    while (n >= cap - w->len) {
        if (cap > SIZE_MAX / 2)
            return false;
        cap *= 2;
    }
    char *data = realloc(w->data, cap);
    if (!data)
        return false;
    w->data = data;
    w->cap = cap;
    return true;
}

static bool append(text_writer *w, const char *bytes, size_t n) {
    if (!reserve(w, n))
        return false;
    memcpy(w->data + w->len, bytes, n);
    w->len += n;
    return true;
}

static bool append_char(text_writer *w, char c) {
    if (!reserve(w, 1))
        return false;
    w->data[w->len++] = c;
    return true;
}

/* 1 for the bytes copied as is: printable ASCII but '"' and '\\'. */
static const unsigned char plain_byte[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
};

/* Whether none of the 8 bytes at p needs a look: each is printable ASCII but '"' and '\\'. Each
 * subtraction borrows into a byte's top bit only where that byte is below 0x20, '"' or '\\' (no
 * lower byte borrows when none is), and OR-ing x in flags the bytes at 0x80 and above. */
static inline bool word_is_plain(const unsigned char *p) {
    const uint64_t ones = 0x0101010101010101u, tops = 0x8080808080808080u;
    uint64_t x;
    memcpy(&x, p, sizeof(x));
    uint64_t quote = x ^ (ones * '"'), backslash = x ^ (ones * '\\');
    return (((x - ones * 0x20) | (quote - ones) | (backslash - ones) | x) & tops) == 0;
}

/* Returns the length (2 to 4) of the valid UTF-8 sequence at s (n bytes left, n >= 1, s[0] >=
 * 0x80), or 0 when it is not one. jansson's rules: no continuation byte first, no overlong form,
 * no surrogate, nothing above U+10FFFF. */
static size_t utf8_sequence_len(const unsigned char *s, size_t n) {
    size_t count;
    uint32_t cp;
    if (s[0] >= 0xC2 && s[0] <= 0xDF) {
        count = 2;
        cp = s[0] & 0x1Fu;
    } else if (s[0] >= 0xE0 && s[0] <= 0xEF) {
        count = 3;
        cp = s[0] & 0x0Fu;
    } else if (s[0] >= 0xF0 && s[0] <= 0xF4) {
        count = 4;
        cp = s[0] & 0x07u;
    } else {
        return 0;
    }
    if (count > n)
        return 0;
    for (size_t i = 1; i < count; i++) {
        if ((s[i] & 0xC0u) != 0x80u)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3Fu);
    }
    if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF) || (count == 3 && cp < 0x800) ||
        (count == 4 && cp < 0x10000))
        return 0;
    return count;
}

/* Returns the letter of the two-character escape jansson writes for c, or 0 when it writes
 * \u00XX instead. */
static char short_escape(unsigned char c) {
    switch (c) {
    case '"':
        return '"';
    case '\\':
        return '\\';
    case '\b':
        return 'b';
    case '\f':
        return 'f';
    case '\n':
        return 'n';
    case '\r':
        return 'r';
    case '\t':
        return 't';
    default:
        return 0;
    }
}

/* Writes the escape of byte c (a control character, '"' or '\\'): a short form, else \u00XX with
 * uppercase hex digits, as jansson does. */
static bool append_escape(text_writer *w, unsigned char c) {
    static const char hex[] = "0123456789ABCDEF";
    char seq[6] = {'\\', short_escape(c), '0', '0', hex[c >> 4], hex[c & 0xF]};
    if (seq[1])
        return append(w, seq, 2);
    seq[1] = 'u';
    return append(w, seq, 6);
}

/* Writes s (len bytes, NULs allowed) as a JSON string. Returns false on invalid UTF-8 (jansson
 * fails there too) or out of memory. '/' and non-ASCII characters are copied unescaped.
 * There is always room for the rest of s copied as is and the closing quote: reserved up front,
 * and again by each escape for itself and what follows it. */
static bool append_string(text_writer *w, const char *s, size_t len) {
    const unsigned char *p = (const unsigned char *)s, *end = p + len;
    if (!reserve(w, len + 2))
        return false;
    w->data[w->len++] = '"';
    while (p < end) {
        const unsigned char *run = p;
        for (;;) {
            while (end - p >= 8 && word_is_plain(p))
                p += 8;
            /* The last few bytes of a long string: one overlapping word. */
            if (p < end && end - p < 8 && end - (const unsigned char *)s >= 8 &&
                word_is_plain(end - 8))
                p = end;
            while (p < end && plain_byte[*p])
                p++;
            if (p == end || *p < 0x80)
                break;
            size_t n = utf8_sequence_len(p, (size_t)(end - p));
            if (n == 0)
                return false;
            p += n;
        }
        memcpy(w->data + w->len, run, (size_t)(p - run));
        w->len += (size_t)(p - run);
        if (p < end && (!reserve(w, 6 + (size_t)(end - p)) || !append_escape(w, *p++)))
            return false;
    }
    w->data[w->len++] = '"';
    return true;
}

static bool append_integer(text_writer *w, json_int_t v) {
    char digits[24];
    size_t i = sizeof(digits);
    /* The magnitude in unsigned arithmetic, so INT64_MIN needs no special case. */
    unsigned long long mag = v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;
    do {
        digits[--i] = (char)('0' + mag % 10);
        mag /= 10;
    } while (mag);
    if (v < 0)
        digits[--i] = '-';
    return append(w, digits + i, sizeof(digits) - i);
}

/* jansson's real: "%.17g"; the decimal point (whatever the locale prints) becomes '.'; ".0" when
 * there is neither '.' nor 'e'; the exponent loses its '+' and its leading zeros. */
static bool append_real(text_writer *w, double v) {
    char printed[64], out[72];
    size_t n = 0;
    if (!isfinite(v))
        return false; /* json_real refuses these; jansson would write "inf.0" */
    int len = snprintf(printed, sizeof(printed), "%.17g", v);
    if (len < 0 || (size_t)len >= sizeof(printed))
        return false;
    bool has_point = false, has_exp = false;
    for (int i = 0; i < len; i++) {
        char c = printed[i];
        if ((c >= '0' && c <= '9') || c == '-' || c == '+' || c == 'e') {
            out[n++] = c;
            has_exp |= c == 'e';
        } else if (!has_point && !has_exp) {
            /* The locale's decimal point, one byte or several. */
            out[n++] = '.';
            has_point = true;
            while (i + 1 < len && !(printed[i + 1] >= '0' && printed[i + 1] <= '9'))
                i++;
        } else {
            return false; /* not what %g prints */
        }
    }
    if (!has_point && !has_exp) {
        out[n++] = '.';
        out[n++] = '0';
    }
    char *e = memchr(out, 'e', n);
    if (e) {
        char *digits = e + 1, *from = e + 2;
        if (*digits == '-')
            digits++;
        while (from < out + n && *from == '0')
            from++;
        if (from != digits) {
            memmove(digits, from, (size_t)(out + n - from));
            n -= (size_t)(from - digits);
        }
    }
    return append(w, out, n);
}

static int compare_members(const void *a, const void *b) {
    const sorted_member *x = a, *y = b;
    int c = memcmp(x->key, y->key, x->key_len < y->key_len ? x->key_len : y->key_len);
    if (c)
        return c;
    return x->key_len < y->key_len ? -1 : x->key_len > y->key_len;
}

/* Keys are unique within an object, so any sort gives jansson's order. */
static void sort_members(sorted_member *m, size_t n) {
    if (n > 16) {
        qsort(m, n, sizeof(*m), compare_members);
        return;
    }
    for (size_t i = 1; i < n; i++) {
        sorted_member cur = m[i];
        size_t j = i;
        for (; j > 0 && compare_members(&m[j - 1], &cur) > 0; j--)
            m[j] = m[j - 1];
        m[j] = cur;
    }
}

static bool append_value(text_writer *w, const json_t *v, int depth);

static bool append_member(text_writer *w, const char *key, size_t key_len, const json_t *value,
                          bool first, int depth) {
    if (!first && !append_char(w, ','))
        return false;
    return append_string(w, key, key_len) && append_char(w, ':') && append_value(w, value, depth);
}

static bool append_object_sorted(text_writer *w, json_t *obj, int depth) {
    size_t n = json_object_size(obj), base = w->members_used;
    if (n == 0)
        return true;
    if (n > w->members_cap - base) {
        size_t cap = w->members_cap ? w->members_cap : 32;
        while (n > cap - base)
            cap *= 2;
        sorted_member *m = realloc(w->members, cap * sizeof(*m));
        if (!m)
            return false;
        w->members = m;
        w->members_cap = cap;
    }
    size_t i = 0;
    for (void *it = json_object_iter(obj); it && i < n; it = json_object_iter_next(obj, it), i++) {
        w->members[base + i] = (sorted_member){json_object_iter_key(it),
                                               json_object_iter_key_len(it),
                                               json_object_iter_value(it)};
    }
    sort_members(w->members + base, i);
    w->members_used = base + i;
    bool ok = true;
    for (size_t k = 0; ok && k < i; k++) {
        /* Re-read each time: a nested object may have moved the stack. */
        sorted_member m = w->members[base + k];
        ok = append_member(w, m.key, m.key_len, m.value, k == 0, depth);
    }
    w->members_used = base;
    return ok;
}

static bool append_value(text_writer *w, const json_t *v, int depth) {
    switch (json_typeof(v)) {
    case JSON_NULL:
        return append(w, "null", 4);
    case JSON_TRUE:
        return append(w, "true", 4);
    case JSON_FALSE:
        return append(w, "false", 5);
    case JSON_INTEGER:
        return append_integer(w, json_integer_value(v));
    case JSON_REAL:
        return append_real(w, json_real_value(v));
    case JSON_STRING:
        return append_string(w, json_string_value(v), json_string_length(v));
    case JSON_ARRAY: {
        if (depth >= TP_JSON_TEXT_MAX_DEPTH || !append_char(w, '['))
            return false;
        size_t n = json_array_size(v);
        for (size_t i = 0; i < n; i++) {
            if (i > 0 && !append_char(w, ','))
                return false;
            if (!append_value(w, json_array_get(v, i), depth + 1))
                return false;
        }
        return append_char(w, ']');
    }
    case JSON_OBJECT: {
        json_t *obj = (json_t *)v; /* jansson's iterators take a non-const object */
        if (depth >= TP_JSON_TEXT_MAX_DEPTH || !append_char(w, '{'))
            return false;
        if (w->flags & TP_JSON_SORT_KEYS) {
            if (!append_object_sorted(w, obj, depth + 1))
                return false;
        } else {
            bool first = true;
            for (void *it = json_object_iter(obj); it; it = json_object_iter_next(obj, it)) {
                if (!append_member(w, json_object_iter_key(it), json_object_iter_key_len(it),
                                   json_object_iter_value(it), first, depth + 1))
                    return false;
                first = false;
            }
        }
        return append_char(w, '}');
    }
    }
    return false;
}

char *tp_json_text(const struct json_t *value, unsigned flags, size_t *len_out) {
    text_writer w = {.flags = flags, .cap = 1024};
    if (len_out)
        *len_out = 0;
    if (!value || (!(flags & TP_JSON_ANY_ROOT) && !json_is_object(value) && !json_is_array(value)))
        return NULL;
    if (!(w.data = malloc(w.cap)))
        return NULL;
    bool ok = append_value(&w, value, 0);
    free(w.members);
    if (!ok) {
        free(w.data);
        return NULL;
    }
    w.data[w.len] = '\0';
    if (len_out)
        *len_out = w.len;
    return w.data;
}
