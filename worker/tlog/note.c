/* note.c: C2SP tlog-checkpoint bodies ("<origin>\n<size>\n<base64 root>\n") and C2SP signed notes
 * (body, blank line, "— <name> <base64(key hash || signature)>" lines): formatting, parsing of
 * untrusted text with bounded sizes, Ed25519 signature checks. */
#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "tp/error.h"
#include "tp/tlog.h"

#define EM_DASH "\xe2\x80\x94" /* U+2014, which opens every signature line */

static int fail(char *errstr, size_t cap, const char *msg) {
    if (errstr && cap)
        snprintf(errstr, cap, "%s", msg);
    return TP_EINVAL;
}

/* A key name: non-empty, no space, newline or '+', at most TP_TLOG_ORIGIN_MAX bytes. */
static bool valid_name(const char *s, size_t len) {
    if (len == 0 || len > TP_TLOG_ORIGIN_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if (s[i] == ' ' || s[i] == '\n' || s[i] == '+' || s[i] == '\t')
            return false;
    return true;
}

int tp_checkpoint_format(const tp_checkpoint *c, char *buf, size_t cap) {
    char root[sodium_base64_ENCODED_LEN(TP_TLOG_HASH_LEN, sodium_base64_VARIANT_ORIGINAL)];
    size_t olen = strnlen(c->origin, sizeof(c->origin));
    int n;
    if (olen == 0 || memchr(c->origin, '\n', olen) || c->size < 0)
        return -1;
    sodium_bin2base64(root, sizeof(root), c->root, TP_TLOG_HASH_LEN, sodium_base64_VARIANT_ORIGINAL);
    n = snprintf(buf, cap, "%s\n%lld\n%s\n", c->origin, (long long)c->size, root);
    if (n < 0 || (size_t)n >= cap)
        return -1;
    return n;
}

void tp_note_key_hash(const char *name, const unsigned char pk[32], unsigned char out[4]) {
    crypto_hash_sha256_state st;
    unsigned char digest[32];
    const unsigned char sep[2] = {'\n', 0x01}; /* newline, then the Ed25519 signature type */
    crypto_hash_sha256_init(&st);
    crypto_hash_sha256_update(&st, (const unsigned char *)name, strlen(name));
    crypto_hash_sha256_update(&st, sep, sizeof(sep));
    crypto_hash_sha256_update(&st, pk, 32);
    crypto_hash_sha256_final(&st, digest);
    memcpy(out, digest, 4);
}

int tp_note_format(const char *body, const char *name, const unsigned char pk[32],
                   const unsigned char sig[64], char *buf, size_t cap) {
    unsigned char blob[68];
    char b64[sodium_base64_ENCODED_LEN(68, sodium_base64_VARIANT_ORIGINAL)];
    size_t blen = strlen(body);
    int n;
    if (!valid_name(name, strlen(name)) || blen == 0 || body[blen - 1] != '\n')
        return -1;
    tp_note_key_hash(name, pk, blob);
    memcpy(blob + 4, sig, 64);
    sodium_bin2base64(b64, sizeof(b64), blob, sizeof(blob), sodium_base64_VARIANT_ORIGINAL);
    n = snprintf(buf, cap, "%s\n" EM_DASH " %s %s\n", body, name, b64);
    if (n < 0 || (size_t)n >= cap)
        return -1;
    return n;
}

/* Text rules shared by the whole note: UTF-8 (checked loosely: no bytes that never occur in
 * UTF-8) and no control characters but newline. */
static bool clean_text(const char *s, size_t len) {
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c < 0x20 && c != '\n') || c == 0x7f || c == 0xc0 || c == 0xc1 || c >= 0xf5)
            return false;
    }
    return true;
}

/* Parses one signature line (without its newline). */
static int parse_sig(const char *line, size_t len, tp_note_sig *out, char *errstr, size_t cap) {
    const char *name, *sp, *b64;
    size_t dash = sizeof(EM_DASH) - 1, name_len, b64_len, bin_len = 0;
    unsigned char blob[128];
    if (len < dash + 1 || memcmp(line, EM_DASH " ", dash + 1) != 0)
        return fail(errstr, cap, "signature line does not start with an em dash and a space");
    name = line + dash + 1;
    sp = memchr(name, ' ', len - dash - 1);
    if (!sp)
        return fail(errstr, cap, "signature line has no signature after the key name");
    name_len = (size_t)(sp - name);
    if (!valid_name(name, name_len))
        return fail(errstr, cap, "signature line has an invalid key name");
    b64 = sp + 1;
    b64_len = len - (size_t)(b64 - line);
    if (b64_len == 0 || b64_len > 172) /* 128 bytes of base64 at most */
        return fail(errstr, cap, "signature has a bad length");
    if (sodium_base642bin(blob, sizeof(blob), b64, b64_len, NULL, &bin_len, NULL,
                          sodium_base64_VARIANT_ORIGINAL) != 0 ||
        bin_len < 5)
        return fail(errstr, cap, "signature is not base64 of a key hash and a signature");
    memset(out, 0, sizeof(*out));
    memcpy(out->name, name, name_len);
    memcpy(out->key_hash, blob, 4);
    if (bin_len == 68) {
        memcpy(out->sig, blob + 4, 64);
        out->ed25519 = true;
    }
    return 0;
}

int tp_note_parse(const char *text, size_t len, tp_note *out, char *errstr, size_t errstr_size) {
    size_t split = 0, pos;
    bool found = false;
    memset(out, 0, sizeof(*out));
    if (len == 0 || len > TP_TLOG_NOTE_MAX)
        return fail(errstr, errstr_size, "note is empty or too large");
    if (!clean_text(text, len))
        return fail(errstr, errstr_size, "note has control characters or bytes that are not UTF-8");
    if (text[len - 1] != '\n')
        return fail(errstr, errstr_size, "note does not end with a newline");
    /* The signatures follow the last blank line. */
    for (size_t i = len - 1; i > 0; i--)
        if (text[i] == '\n' && text[i - 1] == '\n') {
            split = i;
            found = true;
            break;
        }
    if (!found)
        return fail(errstr, errstr_size, "note has no blank line before its signatures");
    out->body_len = split; /* the body keeps its final newline */
    pos = split + 1;
    if (pos >= len)
        return fail(errstr, errstr_size, "note has no signatures");
    while (pos < len) {
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t line_len = (size_t)(nl - (text + pos));
        int rc;
        if (out->n_sigs == TP_NOTE_MAX_SIGS)
            return fail(errstr, errstr_size, "note has too many signatures");
        rc = parse_sig(text + pos, line_len, &out->sigs[out->n_sigs], errstr, errstr_size);
        if (rc != 0)
            return rc;
        out->n_sigs++;
        pos += line_len + 1;
    }
    return 0;
}

int tp_checkpoint_parse(const char *body, size_t len, tp_checkpoint *out, char *errstr,
                        size_t errstr_size) {
    const char *p = body, *end = body + len, *nl;
    size_t bin_len = 0;
    int64_t size = 0;
    memset(out, 0, sizeof(*out));
    if (len == 0 || body[len - 1] != '\n')
        return fail(errstr, errstr_size, "checkpoint does not end with a newline");
    /* origin */
    nl = memchr(p, '\n', (size_t)(end - p));
    if (nl == p || (size_t)(nl - p) > TP_TLOG_ORIGIN_MAX)
        return fail(errstr, errstr_size, "checkpoint origin is empty or too long");
    memcpy(out->origin, p, (size_t)(nl - p));
    p = nl + 1;
    /* size: decimal, no sign, no leading zero */
    nl = p < end ? memchr(p, '\n', (size_t)(end - p)) : NULL;
    if (!nl || nl == p || (nl - p > 1 && *p == '0') || nl - p > 19)
        return fail(errstr, errstr_size, "checkpoint size is missing or malformed");
    for (const char *q = p; q < nl; q++) {
        if (*q < '0' || *q > '9')
            return fail(errstr, errstr_size, "checkpoint size is not a decimal number");
        if (size > (INT64_MAX - (*q - '0')) / 10)
            return fail(errstr, errstr_size, "checkpoint size is too large");
        size = size * 10 + (*q - '0');
    }
    out->size = size;
    p = nl + 1;
    /* root hash */
    nl = p < end ? memchr(p, '\n', (size_t)(end - p)) : NULL;
    if (!nl || nl - p != 44 ||
        sodium_base642bin(out->root, sizeof(out->root), p, 44, NULL, &bin_len, NULL,
                          sodium_base64_VARIANT_ORIGINAL) != 0 ||
        bin_len != TP_TLOG_HASH_LEN)
        return fail(errstr, errstr_size, "checkpoint root hash is not base64 of 32 bytes");
    p = nl + 1;
    /* extension lines: each non-empty; ignored */
    while (p < end) {
        nl = memchr(p, '\n', (size_t)(end - p));
        if (nl == p)
            return fail(errstr, errstr_size, "checkpoint has an empty extension line");
        p = nl + 1;
    }
    return 0;
}

bool tp_note_sig_verify(const tp_note_sig *sig, const char *name, const unsigned char pk[32],
                        const char *body, size_t body_len) {
    unsigned char kh[4];
    if (sodium_init() < 0 || !sig->ed25519 || strcmp(sig->name, name) != 0)
        return false;
    tp_note_key_hash(name, pk, kh);
    if (memcmp(kh, sig->key_hash, 4) != 0)
        return false;
    return crypto_sign_verify_detached(sig->sig, (const unsigned char *)body, body_len, pk) == 0;
}
