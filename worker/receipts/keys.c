/* keys.c: Ed25519 receipt keys: key generation, the signer (private key) and the key set of public
 * keys that verify (several, so keys rotated out still verify the receipts they signed). */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "receipts/receipts_int.h"
#include "tp/config.h"
#include "tp/error.h"
#include "tp/log.h"
#include "tp/receipts.h"

#define KEYID_PREFIX "ed25519:"
#define KEYFILE_MAX 4096
#define KEYSET_MAX (1024 * 1024)

struct tp_signer {
    unsigned char sk[crypto_sign_SECRETKEYBYTES];
    unsigned char pk[crypto_sign_PUBLICKEYBYTES];
    char keyid[TP_KEYID_MAX + 1];
};

typedef struct keyset_entry {
    char keyid[TP_KEYID_MAX + 1];
    unsigned char pk[crypto_sign_PUBLICKEYBYTES];
    int64_t valid_from_ms, valid_until_ms; /* INT64_MIN / INT64_MAX: open */
} keyset_entry;

struct tp_keyset {
    keyset_entry *keys;
    size_t n, cap;
};

void tp_receipt_keyid(const unsigned char pk[32], char *out) {
    unsigned char digest[crypto_hash_sha256_BYTES];
    char hex[17];
    crypto_hash_sha256(digest, pk, crypto_sign_PUBLICKEYBYTES);
    sodium_bin2hex(hex, sizeof(hex), digest, 8);
    snprintf(out, TP_KEYID_MAX + 1, KEYID_PREFIX "%s", hex);
}

static void set_err(char *errstr, size_t errstr_size, const char *fmt, ...) TP_PRINTF(3, 4);

static void set_err(char *errstr, size_t errstr_size, const char *fmt, ...) {
    va_list ap;
    if (!errstr || errstr_size == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(errstr, errstr_size, fmt, ap);
    va_end(ap);
}

/* Splits "keyid base64" (exactly one space, no other whitespace) and decodes the 32-byte key.
 * Returns 0 or TP_ECRYPTO; key bytes go to key32. */
/* "valid-from=<time>" / "valid-until=<time>" tokens after the key (a key set line only). */
static int parse_window(const char *p, size_t len, int64_t *from, int64_t *until) {
    *from = INT64_MIN;
    *until = INT64_MAX;
    while (len > 0) {
        const char *sp = memchr(p, ' ', len);
        size_t tl = sp ? (size_t)(sp - p) : len;
        char tok[64];
        int64_t *dst = NULL;
        const char *val = NULL;
        if (tl == 0 || tl >= sizeof(tok))
            return TP_ECRYPTO;
        memcpy(tok, p, tl);
        tok[tl] = '\0';
        if (strncmp(tok, "valid-from=", 11) == 0) {
            dst = from;
            val = tok + 11;
        } else if (strncmp(tok, "valid-until=", 12) == 0) {
            dst = until;
            val = tok + 12;
        }
        if (!dst || tp_receipt_parse_time(val, dst) != 0)
            return TP_ECRYPTO;
        p += tl;
        len -= tl;
        if (len > 0) { /* the space */
            p++;
            len--;
        }
    }
    return *from <= *until ? 0 : TP_ECRYPTO;
}

static int parse_key_line(const char *line, size_t len, char keyid[TP_KEYID_MAX + 1],
                          unsigned char key32[32]) {
    const char *sp = memchr(line, ' ', len);
    unsigned char *bin = NULL;
    size_t id_len, bin_len = 0;
    int rc;
    if (!sp)
        return TP_ECRYPTO;
    id_len = (size_t)(sp - line);
    if (id_len == 0 || id_len > TP_KEYID_MAX || memchr(line, '\0', len))
        return TP_ECRYPTO;
    memcpy(keyid, line, id_len);
    keyid[id_len] = '\0';
    {
        /* the key ends at the next space (a key set line's window follows it) */
        const char *end = memchr(sp + 1, ' ', len - id_len - 1);
        if (end)
            len = (size_t)(end - line);
    }
    rc = tp_receipts__b64_decode(sp + 1, len - id_len - 1, &bin, &bin_len);
    if (rc == TP_ENOMEM)
        return rc;
    if (rc != 0 || bin_len != 32) {
        free(bin);
        return TP_ECRYPTO;
    }
    memcpy(key32, bin, 32);
    sodium_memzero(bin, bin_len);
    free(bin);
    return 0;
}

/* Writes data to path atomically (temp file + fsync + rename) with the given mode. */
static int write_file_atomic(const char *path, const char *data, size_t len, mode_t mode) {
    char tmp[4096];
    size_t off = 0;
    int fd, n, rc = TP_EIO;
    n = snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid());
    if (n < 0 || (size_t)n >= sizeof(tmp))
        return TP_EINVAL;
    (void)unlink(tmp);
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0)
        return TP_EIO;
    if (fchmod(fd, mode) != 0) /* umask must not widen or narrow what we asked for */
        goto out_close;
    while (off < len) {
        ssize_t w = write(fd, data + off, len - off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            goto out_close;
        }
        off += (size_t)w;
    }
    if (fsync(fd) != 0)
        goto out_close;
    rc = 0;
out_close:
    if (close(fd) != 0)
        rc = TP_EIO;
    if (rc == 0 && rename(tmp, path) != 0)
        rc = TP_EIO;
    if (rc != 0)
        (void)unlink(tmp);
    return rc;
}

int tp_receipt_keygen(const char *priv_path, const char *pub_path) {
    unsigned char seed[crypto_sign_SEEDBYTES], pk[crypto_sign_PUBLICKEYBYTES],
        sk[crypto_sign_SECRETKEYBYTES];
    char keyid[TP_KEYID_MAX + 1], line[256];
    char *b64 = NULL;
    int n, rc;
    if (!priv_path || !pub_path)
        return TP_EINVAL;
    if (tp_receipts__init() != 0)
        return TP_ECRYPTO;
    randombytes_buf(seed, sizeof(seed));
    if (crypto_sign_seed_keypair(pk, sk, seed) != 0) {
        rc = TP_ECRYPTO;
        goto out_wipe;
    }
    tp_receipt_keyid(pk, keyid);

    b64 = tp_receipts__b64_encode(seed, sizeof(seed));
    if (!b64) {
        rc = TP_ENOMEM;
        goto out_wipe;
    }
    n = snprintf(line, sizeof(line), "%s %s\n", keyid, b64);
    sodium_memzero(b64, strlen(b64));
    free(b64);
    if (n < 0 || (size_t)n >= sizeof(line)) {
        rc = TP_EINVAL;
        goto out_wipe;
    }
    rc = write_file_atomic(priv_path, line, (size_t)n, 0600);
    if (rc != 0)
        goto out_wipe;

    b64 = tp_receipts__b64_encode(pk, sizeof(pk));
    if (!b64) {
        rc = TP_ENOMEM;
        goto out_wipe;
    }
    n = snprintf(line, sizeof(line), "%s %s\n", keyid, b64);
    free(b64);
    if (n < 0 || (size_t)n >= sizeof(line)) {
        rc = TP_EINVAL;
        goto out_wipe;
    }
    rc = write_file_atomic(pub_path, line, (size_t)n, 0644);
out_wipe:
    sodium_memzero(seed, sizeof(seed));
    sodium_memzero(sk, sizeof(sk));
    sodium_memzero(line, sizeof(line));
    return rc;
}

int tp_signer_load(const char *path, tp_signer **out) {
    char *buf = NULL;
    size_t len = 0;
    unsigned char seed[crypto_sign_SEEDBYTES];
    char keyid[TP_KEYID_MAX + 1];
    tp_signer *s = NULL;
    int rc;
    if (!path || !out)
        return TP_EINVAL;
    *out = NULL;
    if (tp_receipts__init() != 0)
        return TP_ECRYPTO;
    rc = tp_read_file(path, KEYFILE_MAX, &buf, &len);
    if (rc != 0)
        return rc == TP_EDECODE_TOO_LARGE ? TP_ECRYPTO : rc;
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
        len--;
    {
        const char *sp = memchr(buf, ' ', len); /* exactly "<keyid> <seed>" */
        rc = sp && memchr(sp + 1, ' ', len - (size_t)(sp + 1 - buf)) ? TP_ECRYPTO
                                                                        : parse_key_line(buf, len, keyid, seed);
    }
    if (rc != 0)
        goto out_free;
    s = malloc(sizeof(*s));
    if (!s) {
        rc = TP_ENOMEM;
        goto out_free;
    }
    if (crypto_sign_seed_keypair(s->pk, s->sk, seed) != 0) {
        rc = TP_ECRYPTO;
        goto out_free;
    }
    tp_receipt_keyid(s->pk, s->keyid);
    if (strcmp(s->keyid, keyid) != 0) { /* the file's key id must be the key's own */
        rc = TP_ECRYPTO;
        goto out_free;
    }
    *out = s;
    s = NULL;
out_free:
    sodium_memzero(seed, sizeof(seed));
    sodium_memzero(buf, len);
    free(buf);
    tp_signer_free(s);
    return rc;
}

void tp_signer_free(tp_signer *s) {
    if (!s)
        return;
    sodium_memzero(s, sizeof(*s));
    free(s);
}

const char *tp_signer_keyid(const tp_signer *s) {
    return s ? s->keyid : NULL;
}

int tp_signer_public_line(const tp_signer *s, char *buf, size_t cap) {
    char *b64;
    int n;
    if (!s || !buf)
        return TP_EINVAL;
    b64 = tp_receipts__b64_encode(s->pk, sizeof(s->pk));
    if (!b64)
        return TP_ENOMEM;
    n = snprintf(buf, cap, "%s %s", s->keyid, b64);
    free(b64);
    return (n < 0 || (size_t)n >= cap) ? TP_EINVAL : 0;
}

int tp_receipts__sign(const tp_signer *s, const unsigned char *msg, size_t len, unsigned char sig[64]) {
    return crypto_sign_detached(sig, NULL, msg, len, s->sk) == 0 ? 0 : TP_ECRYPTO;
}

int tp_signer_sign(const tp_signer *s, const void *msg, size_t len, unsigned char sig[64]) {
    return tp_receipts__sign(s, msg, len, sig);
}

void tp_signer_public_key(const tp_signer *s, unsigned char pk[32]) {
    memcpy(pk, s->pk, 32);
}

int tp_keyset_parse(const char *buf, size_t len, tp_keyset **out, char *errstr, size_t errstr_size) {
    tp_keyset *ks;
    size_t pos = 0;
    int lineno = 0, rc = 0;
    if (!buf || !out)
        return TP_EINVAL;
    *out = NULL;
    if (tp_receipts__init() != 0)
        return TP_ECRYPTO;
    ks = calloc(1, sizeof(*ks));
    if (!ks)
        return TP_ENOMEM;
    while (pos < len) {
        size_t start = pos, end;
        char keyid[TP_KEYID_MAX + 1], derived[TP_KEYID_MAX + 1];
        unsigned char pk[32];
        while (pos < len && buf[pos] != '\n')
            pos++;
        end = pos;
        pos++;
        lineno++;
        while (end > start && (buf[end - 1] == '\r' || buf[end - 1] == ' ' || buf[end - 1] == '\t'))
            end--;
        while (start < end && (buf[start] == ' ' || buf[start] == '\t'))
            start++;
        if (start == end || buf[start] == '#')
            continue;
        int64_t from = INT64_MIN, until = INT64_MAX;
        rc = parse_key_line(buf + start, end - start, keyid, pk);
        if (rc == TP_ENOMEM)
            goto out_fail;
        if (rc == 0) {
            /* what follows the key: its validity window */
            const char *k = memchr(buf + start, ' ', end - start);
            const char *w = k ? memchr(k + 1, ' ', (size_t)(buf + end - (k + 1))) : NULL;
            if (w)
                rc = parse_window(w + 1, (size_t)(buf + end - (w + 1)), &from, &until);
        }
        if (rc != 0) {
            set_err(errstr, errstr_size, "key set line %d: expected \"<keyid> <base64 public key>"
                    " [valid-from=<RFC 3339>] [valid-until=<RFC 3339>]\"", lineno);
            goto out_fail;
        }
        tp_receipt_keyid(pk, derived);
        if (strcmp(derived, keyid) != 0) {
            set_err(errstr, errstr_size, "key set line %d: key id %s does not match its key (%s)",
                    lineno, keyid, derived);
            rc = TP_ECRYPTO;
            goto out_fail;
        }
        if (tp_keyset_lookup(ks, keyid))
            continue; /* listed twice: harmless */
        if (ks->n == ks->cap) {
            size_t ncap = ks->cap ? ks->cap * 2 : 4;
            keyset_entry *k = realloc(ks->keys, ncap * sizeof(*k));
            if (!k) {
                rc = TP_ENOMEM;
                goto out_fail;
            }
            ks->keys = k;
            ks->cap = ncap;
        }
        memcpy(ks->keys[ks->n].keyid, keyid, sizeof(keyid));
        memcpy(ks->keys[ks->n].pk, pk, sizeof(pk));
        ks->keys[ks->n].valid_from_ms = from;
        ks->keys[ks->n].valid_until_ms = until;
        ks->n++;
    }
    if (ks->n == 0) {
        set_err(errstr, errstr_size, "key set holds no keys");
        rc = TP_ECRYPTO;
        goto out_fail;
    }
    *out = ks;
    return 0;
out_fail:
    tp_keyset_free(ks);
    return rc;
}

int tp_keyset_load(const char *path, tp_keyset **out, char *errstr, size_t errstr_size) {
    char *buf = NULL;
    size_t len = 0;
    int rc;
    if (!path || !out)
        return TP_EINVAL;
    rc = tp_read_file(path, KEYSET_MAX, &buf, &len);
    if (rc != 0) {
        set_err(errstr, errstr_size, "%s: cannot read key set (%s)", path, tp_strerror(rc));
        return rc == TP_EDECODE_TOO_LARGE ? TP_ECRYPTO : rc;
    }
    rc = tp_keyset_parse(buf, len, out, errstr, errstr_size);
    free(buf);
    return rc;
}

void tp_keyset_free(tp_keyset *ks) {
    if (!ks)
        return;
    free(ks->keys);
    free(ks);
}

size_t tp_keyset_count(const tp_keyset *ks) {
    return ks ? ks->n : 0;
}

int tp_keyset_window(const tp_keyset *ks, const char *keyid, int64_t *from_ms, int64_t *until_ms) {
    for (size_t i = 0; ks && keyid && i < ks->n; i++)
        if (strcmp(ks->keys[i].keyid, keyid) == 0) {
            *from_ms = ks->keys[i].valid_from_ms;
            *until_ms = ks->keys[i].valid_until_ms;
            return 0;
        }
    return TP_ENOT_FOUND;
}

void tp_keyset_get(const tp_keyset *ks, size_t i, const char **keyid, const unsigned char **pk) {
    *keyid = ks->keys[i].keyid;
    *pk = ks->keys[i].pk;
}

const unsigned char *tp_keyset_lookup(const tp_keyset *ks, const char *keyid) {
    if (!ks || !keyid)
        return NULL;
    for (size_t i = 0; i < ks->n; i++)
        if (strcmp(ks->keys[i].keyid, keyid) == 0)
            return ks->keys[i].pk;
    return NULL;
}
