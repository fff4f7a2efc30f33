/* dsse.c: DSSE pre-authentication encoding, SHA-256 hex, base64 and time formatting shared by
 * receipt sealing and verification. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "receipts/receipts_int.h"
#include "tp/error.h"
#include "tp/receipts.h"

int tp_receipts__init(void) {
    /* sodium_init is idempotent and thread-safe; 1 means "already initialised". */
    return sodium_init() < 0 ? TP_ECRYPTO : 0;
}

char *tp_receipts__b64_encode(const unsigned char *bin, size_t len) {
    size_t cap = sodium_base64_ENCODED_LEN(len, sodium_base64_VARIANT_ORIGINAL);
    char *out = malloc(cap);
    if (!out)
        return NULL;
    sodium_bin2base64(out, cap, bin, len, sodium_base64_VARIANT_ORIGINAL);
    return out;
}

int tp_receipts__b64_decode(const char *b64, size_t b64_len, unsigned char **out, size_t *out_len) {
    size_t cap = b64_len / 4 * 3 + 1, bin_len = 0;
    const char *end = NULL;
    unsigned char *bin;
    if (tp_receipts__init() != 0)
        return TP_ECRYPTO;
    bin = malloc(cap);
    if (!bin)
        return TP_ENOMEM;
    if (sodium_base642bin(bin, cap, b64, b64_len, NULL, &bin_len, &end,
                          sodium_base64_VARIANT_ORIGINAL) != 0 ||
        end != b64 + b64_len || bin_len >= cap) {
        free(bin);
        return TP_EINVAL;
    }
    bin[bin_len] = '\0';
    *out = bin;
    *out_len = bin_len;
    return 0;
}

int tp_dsse_pae(const char *type, const unsigned char *body, size_t body_len, unsigned char **out,
                size_t *out_len) {
    size_t type_len, head_len, total;
    char head[64];
    unsigned char *buf;
    int n;
    if (!type || (!body && body_len) || !out || !out_len)
        return TP_EINVAL;
    type_len = strlen(type);
    n = snprintf(head, sizeof(head), "DSSEv1 %zu ", type_len);
    if (n < 0 || (size_t)n >= sizeof(head))
        return TP_EINVAL;
    head_len = (size_t)n;
    n = snprintf(NULL, 0, " %zu ", body_len);
    if (n < 0)
        return TP_EINVAL;
    total = head_len + type_len + (size_t)n + body_len;
    buf = malloc(total + 1);
    if (!buf)
        return TP_ENOMEM;
    memcpy(buf, head, head_len);
    memcpy(buf + head_len, type, type_len);
    snprintf((char *)buf + head_len + type_len, (size_t)n + 1, " %zu ", body_len);
    if (body_len)
        memcpy(buf + head_len + type_len + (size_t)n, body, body_len);
    buf[total] = '\0';
    *out = buf;
    *out_len = total;
    return 0;
}

void tp_sha256_hex(const void *buf, size_t len, char out[TP_HASH_HEX_LEN + 1]) {
    unsigned char digest[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(digest, buf, len);
    sodium_bin2hex(out, TP_HASH_HEX_LEN + 1, digest, sizeof(digest));
}

int tp_receipt_parse_time(const char *s, int64_t *ms) {
    int y, mo, d, h, mi, sec, frac = 0, n = 0, len = s ? (int)strlen(s) : 0;
    struct tm tm;
    if (!s || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &sec, &n) != 6 || n != 19)
        return TP_EINVAL;
    if (len == 24 && s[19] == '.' && s[23] == 'Z') {
        for (int i = 20; i < 23; i++) {
            if (s[i] < '0' || s[i] > '9')
                return TP_EINVAL;
            frac = frac * 10 + (s[i] - '0');
        }
    } else if (!(len == 20 && s[19] == 'Z')) {
        return TP_EINVAL;
    }
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60 || y < 0)
        return TP_EINVAL;
    memset(&tm, 0, sizeof(tm));
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = sec;
    *ms = (int64_t)timegm(&tm) * 1000 + frac;
    return 0;
}

int tp_receipt_format_time(int64_t ms, char *out, size_t cap) {
    time_t secs;
    struct tm tm;
    int64_t rem;
    int n;
    /* Years 0000..9999 only, so the text has a fixed width. */
    if (ms < -62167219200000LL || ms > 253402300799999LL || cap < 25)
        return TP_EINVAL;
    rem = ms % 1000;
    if (rem < 0)
        rem += 1000;
    secs = (time_t)((ms - rem) / 1000);
    if (!gmtime_r(&secs, &tm))
        return TP_EINVAL;
    n = snprintf(out, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03" PRId64 "Z", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, rem);
    return (n < 0 || (size_t)n >= cap) ? TP_EINVAL : 0;
}
