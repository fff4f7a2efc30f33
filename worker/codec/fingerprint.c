/* fingerprint.c: CRC-64-AVRO (the Rabin fingerprint of the Avro specification) and the schema's
 * Parsing Canonical Form (PRIMITIVES, FULLNAMES, STRIP, ORDER, STRINGS, INTEGERS, WHITESPACE),
 * computed from the JSON with jansson because avro-c has neither. */
#include "codec/codec_int.h"
#include "tp/codec.h"
#include "tp/error.h"

#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PCF_MAX_DEPTH 64
#define PCF_MAX_NAMES 1024

static uint64_t crc_table[256];
static pthread_once_t crc_table_once = PTHREAD_ONCE_INIT;

static void init_crc_table(void) {
    for (int i = 0; i < 256; i++) {
        uint64_t fp = (uint64_t)i;
        for (int j = 0; j < 8; j++)
            fp = (fp >> 1) ^ (TP_AVRO_CRC64_EMPTY & (0 - (fp & 1)));
        crc_table[i] = fp;
    }
}

uint64_t tp_avro_crc64(const void *buf, size_t len) {
    const unsigned char *p = buf;
    uint64_t fp = TP_AVRO_CRC64_EMPTY;
    pthread_once(&crc_table_once, init_crc_table);
    for (size_t i = 0; i < len; i++)
        fp = (fp >> 8) ^ crc_table[(fp ^ p[i]) & 0xff];
    return fp;
}

/* ---- a growable output buffer -------------------------------------------------------------- */

typedef struct sbuf {
    char *p;
    size_t len, cap;
    int err;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->err)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (b->len + n + 1 > cap)
            cap *= 2;
        char *np = realloc(b->p, cap);
        if (!np) {
            b->err = TP_ENOMEM;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_puts(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

/* Writes a JSON string literal: UTF-8 as is ([STRINGS]), only what JSON requires escaped. */
static void sb_put_json_string(sbuf *b, const char *s) {
    sb_put(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            sb_put(b, esc, 2);
        } else if (c < 0x20) {
            snprintf(esc, sizeof(esc), "\\u%04x", c);
            sb_put(b, esc, 6);
        } else {
            sb_put(b, (const char *)&c, 1);
        }
    }
    sb_put(b, "\"", 1);
}

/* ---- Parsing Canonical Form ------------------------------------------------------------------- */

typedef struct pcf_ctx {
    sbuf out;
    char *names[PCF_MAX_NAMES]; /* fullnames of the named types defined so far */
    size_t n_names;
    char *errstr;
    size_t errstr_size;
} pcf_ctx;

__attribute__((format(printf, 2, 3))) static int pcf_fail(pcf_ctx *c, const char *fmt, ...) {
    if (c->errstr && c->errstr_size) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->errstr, c->errstr_size, fmt, ap);
        va_end(ap);
    }
    return TP_EINVAL;
}

static const char *const primitives[] = {"null", "boolean", "int",   "long",
                                         "float", "double", "bytes", "string"};

static bool is_primitive(const char *s) {
    for (size_t i = 0; i < sizeof(primitives) / sizeof(primitives[0]); i++)
        if (strcmp(s, primitives[i]) == 0)
            return true;
    return false;
}

static bool name_defined(const pcf_ctx *c, const char *full) {
    for (size_t i = 0; i < c->n_names; i++)
        if (strcmp(c->names[i], full) == 0)
            return true;
    return false;
}

/* Joins namespace and name into a new string ("" namespace: the name alone). */
static char *join_name(const char *ns, const char *name) {
    size_t nl = ns ? strlen(ns) : 0, ml = strlen(name);
    char *full = malloc(nl + ml + 2);
    if (!full)
        return NULL;
    if (nl) {
        memcpy(full, ns, nl);
        full[nl] = '.';
        memcpy(full + nl + 1, name, ml + 1);
    } else {
        memcpy(full, name, ml + 1);
    }
    return full;
}

/* Emits a reference to a named type, resolved like the Java parser does: a dotted name is a
 * fullname; otherwise the enclosing namespace is tried, then the null namespace. */
static int emit_reference(pcf_ctx *c, const char *ref, const char *ns) {
    if (strchr(ref, '.') == NULL && ns && *ns) {
        char *full = join_name(ns, ref);
        if (!full)
            return TP_ENOMEM;
        if (name_defined(c, full)) {
            sb_put_json_string(&c->out, full);
            free(full);
            return 0;
        }
        free(full);
    }
    if (!name_defined(c, ref))
        return pcf_fail(c, "undefined name: %s", ref);
    sb_put_json_string(&c->out, ref);
    return 0;
}

static int emit_schema(pcf_ctx *c, json_t *s, const char *ns, int depth);

/* Defines a named type (record, enum, fixed): returns its fullname (owned by c) via *full and its
 * namespace (a new string the caller frees) via *space. */
static int define_name(pcf_ctx *c, json_t *s, const char *ns, const char **full, char **space) {
    json_t *jname = json_object_get(s, "name");
    json_t *jns = json_object_get(s, "namespace");
    const char *name, *dot;
    char *fn;

    if (!json_is_string(jname) || json_string_length(jname) == 0)
        return pcf_fail(c, "named type without a name");
    name = json_string_value(jname);
    if (strlen(name) != json_string_length(jname))
        return pcf_fail(c, "name holds NUL");
    dot = strrchr(name, '.');
    if (dot) {
        fn = strdup(name);
        *space = strndup(name, (size_t)(dot - name));
    } else {
        const char *space_src = ns;
        if (jns && !json_is_null(jns)) {
            if (!json_is_string(jns))
                return pcf_fail(c, "namespace of %s is not a string", name);
            space_src = json_string_value(jns);
        }
        fn = join_name(space_src, name);
        *space = strdup(space_src ? space_src : "");
    }
    if (!fn || !*space) {
        free(fn);
        free(*space);
        *space = NULL;
        return TP_ENOMEM;
    }
    if (name_defined(c, fn) || is_primitive(fn) || c->n_names >= PCF_MAX_NAMES) {
        int rc = pcf_fail(c, "cannot define name %s", fn);
        free(fn);
        free(*space);
        *space = NULL;
        return rc;
    }
    c->names[c->n_names++] = fn;
    *full = fn;
    return 0;
}

static int emit_record(pcf_ctx *c, json_t *s, const char *ns, int depth) {
    const char *full;
    char *space = NULL;
    json_t *fields = json_object_get(s, "fields");
    size_t i;
    json_t *f;
    int rc = define_name(c, s, ns, &full, &space);
    if (rc)
        return rc;
    if (!json_is_array(fields)) {
        rc = pcf_fail(c, "record %s has no fields array", full);
        goto out_free_space;
    }
    sb_puts(&c->out, "{\"name\":");
    sb_put_json_string(&c->out, full);
    sb_puts(&c->out, ",\"type\":\"record\",\"fields\":[");
    json_array_foreach(fields, i, f) {
        json_t *fname = json_object_get(f, "name");
        json_t *ftype = json_object_get(f, "type");
        if (!json_is_object(f) || !json_is_string(fname) || !ftype) {
            rc = pcf_fail(c, "record %s: field %zu needs a name and a type", full, i);
            goto out_free_space;
        }
        if (i)
            sb_put(&c->out, ",", 1);
        sb_puts(&c->out, "{\"name\":");
        sb_put_json_string(&c->out, json_string_value(fname));
        sb_puts(&c->out, ",\"type\":");
        rc = emit_schema(c, ftype, space, depth + 1);
        if (rc)
            goto out_free_space;
        sb_put(&c->out, "}", 1);
    }
    sb_puts(&c->out, "]}");
out_free_space:
    free(space);
    return rc;
}

static int emit_enum(pcf_ctx *c, json_t *s, const char *ns) {
    const char *full;
    char *space = NULL;
    json_t *symbols = json_object_get(s, "symbols");
    size_t i;
    json_t *sym;
    int rc = define_name(c, s, ns, &full, &space);
    if (rc)
        return rc;
    free(space);
    if (!json_is_array(symbols))
        return pcf_fail(c, "enum %s has no symbols array", full);
    sb_puts(&c->out, "{\"name\":");
    sb_put_json_string(&c->out, full);
    sb_puts(&c->out, ",\"type\":\"enum\",\"symbols\":[");
    json_array_foreach(symbols, i, sym) {
        if (!json_is_string(sym))
            return pcf_fail(c, "enum %s: symbol %zu is not a string", full, i);
        if (i)
            sb_put(&c->out, ",", 1);
        sb_put_json_string(&c->out, json_string_value(sym));
    }
    sb_puts(&c->out, "]}");
    return 0;
}

static int emit_fixed(pcf_ctx *c, json_t *s, const char *ns) {
    const char *full;
    char *space = NULL;
    json_t *size = json_object_get(s, "size");
    json_int_t n = -1;
    char num[32];
    int rc = define_name(c, s, ns, &full, &space);
    if (rc)
        return rc;
    free(space);
    if (json_is_integer(size)) {
        n = json_integer_value(size);
    } else if (json_is_string(size)) { /* [INTEGERS]: drop quotes and leading zeros */
        const char *p = json_string_value(size);
        if (*p == '\0' || strlen(p) > 18 || strspn(p, "0123456789") != strlen(p))
            return pcf_fail(c, "fixed %s: bad size", full);
        n = strtoll(p, NULL, 10);
    }
    if (n < 0)
        return pcf_fail(c, "fixed %s: bad size", full);
    snprintf(num, sizeof(num), "%lld", (long long)n);
    sb_puts(&c->out, "{\"name\":");
    sb_put_json_string(&c->out, full);
    sb_puts(&c->out, ",\"type\":\"fixed\",\"size\":");
    sb_puts(&c->out, num);
    sb_put(&c->out, "}", 1);
    return 0;
}

static int emit_schema(pcf_ctx *c, json_t *s, const char *ns, int depth) {
    if (depth > PCF_MAX_DEPTH)
        return pcf_fail(c, "schema nested deeper than %d", PCF_MAX_DEPTH);
    if (json_is_string(s)) {
        const char *t = json_string_value(s);
        if (is_primitive(t)) {
            sb_put_json_string(&c->out, t);
            return 0;
        }
        return emit_reference(c, t, ns);
    }
    if (json_is_array(s)) { /* a union */
        size_t i;
        json_t *branch;
        sb_put(&c->out, "[", 1);
        json_array_foreach(s, i, branch) {
            int rc;
            if (i)
                sb_put(&c->out, ",", 1);
            rc = emit_schema(c, branch, ns, depth + 1);
            if (rc)
                return rc;
        }
        sb_put(&c->out, "]", 1);
        return 0;
    }
    if (json_is_object(s)) {
        json_t *jt = json_object_get(s, "type");
        const char *t;
        if (!json_is_string(jt))
            return pcf_fail(c, "schema object without a string type");
        t = json_string_value(jt);
        if (is_primitive(t)) { /* [PRIMITIVES] + [STRIP]: logicalType and friends go */
            sb_put_json_string(&c->out, t);
            return 0;
        }
        if (strcmp(t, "record") == 0 || strcmp(t, "error") == 0)
            return emit_record(c, s, ns, depth);
        if (strcmp(t, "enum") == 0)
            return emit_enum(c, s, ns);
        if (strcmp(t, "fixed") == 0)
            return emit_fixed(c, s, ns);
        if (strcmp(t, "array") == 0 || strcmp(t, "map") == 0) {
            bool is_array = t[0] == 'a';
            json_t *inner = json_object_get(s, is_array ? "items" : "values");
            int rc;
            if (!inner)
                return pcf_fail(c, "%s without %s", t, is_array ? "items" : "values");
            sb_puts(&c->out, is_array ? "{\"type\":\"array\",\"items\":" : "{\"type\":\"map\",\"values\":");
            rc = emit_schema(c, inner, ns, depth + 1);
            if (rc)
                return rc;
            sb_put(&c->out, "}", 1);
            return 0;
        }
        return emit_reference(c, t, ns);
    }
    return pcf_fail(c, "not a schema: expected a string, array or object");
}

int tp_codec_canonical_form(const char *schema_json, size_t len, char **out, size_t *out_len,
                            char *errstr, size_t errstr_size) {
    pcf_ctx c;
    json_error_t jerr;
    json_t *root;
    int rc;

    memset(&c, 0, sizeof(c));
    c.errstr = errstr;
    c.errstr_size = errstr_size;
    *out = NULL;
    root = json_loadb(schema_json, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return pcf_fail(&c, "schema is not JSON: %s (line %d)", jerr.text, jerr.line);
    rc = emit_schema(&c, root, "", 0);
    if (rc == 0 && c.out.err)
        rc = c.out.err;
    if (rc == 0 && !c.out.p)
        rc = TP_ENOMEM;
    json_decref(root);
    for (size_t i = 0; i < c.n_names; i++)
        free(c.names[i]);
    if (rc) {
        free(c.out.p);
        return rc;
    }
    *out = c.out.p;
    if (out_len)
        *out_len = c.out.len;
    return 0;
}

int tp_codec_fingerprint(const char *schema_json, size_t len, uint64_t *out, char *errstr,
                         size_t errstr_size) {
    char *pcf;
    size_t pcf_len;
    int rc = tp_codec_canonical_form(schema_json, len, &pcf, &pcf_len, errstr, errstr_size);
    if (rc)
        return rc;
    *out = tp_avro_crc64(pcf, pcf_len);
    free(pcf);
    return 0;
}
