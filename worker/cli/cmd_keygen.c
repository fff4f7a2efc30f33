/* cmd_keygen.c: `tpctl keygen`: creates an Ed25519 receipt signing key, its public key file, and
 * appends the public key to the key set so that receipts signed by earlier keys keep verifying.
 * On rotation the key set gets validity windows: the keys still open close at now + overlap, the
 * new one is valid from now; a receipt signed outside its key's window does not verify. */
#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "tp/config.h"
#include "tp/error.h"
#include "tp/receipts.h"

static void keygen_usage(FILE *out) {
    fprintf(out, "usage: tpctl keygen --out-dir DIR [--force [--overlap-s N]]\n"
                 "  writes DIR/receipts.key (mode 0600) and DIR/receipts.pub, appends the public key\n"
                 "  to DIR/receipts.keyset and prints the key id. --force replaces an existing key\n"
                 "  (rotation: the old public keys stay in the key set and keep verifying what they\n"
                 "  signed; those without an end get valid-until=now+N s (default 300: restart the\n"
                 "  workers within it), the new one valid-from=now). Workers sign with the newest\n"
                 "  key (receipts.signing_key_file) from their next start.\n");
}

/* Appends line + '\n' to the key set unless its key id is already listed. */
static int keyset_append(const char *path, const char *line, const char *keyid) {
    char *buf = NULL;
    size_t len = 0, id_len = strlen(keyid);
    int fd, rc;
    rc = tp_read_file(path, 1024 * 1024, &buf, &len);
    if (rc == 0) {
        for (const char *p = buf; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
            if (strncmp(p, keyid, id_len) == 0 && p[id_len] == ' ') {
                free(buf);
                return 0;
            }
        }
        if (len > 0 && buf[len - 1] != '\n')
            len = (size_t)-1; /* marker: needs a newline first */
        free(buf);
    } else if (rc != TP_EIO) {
        return rc;
    }
    fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0)
        return TP_EIO;
    rc = 0;
    if ((len == (size_t)-1 && write(fd, "\n", 1) != 1) ||
        dprintf(fd, "%s\n", line) != (int)strlen(line) + 1 || fsync(fd) != 0)
        rc = TP_EIO;
    if (close(fd) != 0)
        rc = TP_EIO;
    return rc;
}

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Rotation: closes every open key of the key set at until_ms (rewritten atomically: temp file,
 * fsync, rename). A missing key set is left alone. */
static int keyset_close_open_keys(const char *path, int64_t until_ms) {
    char *buf = NULL, tmp[4200], ts[32];
    size_t len = 0;
    FILE *f;
    int rc = tp_read_file(path, 1024 * 1024, &buf, &len);
    if (rc == TP_EIO)
        return 0;
    if (rc != 0)
        return rc;
    if (tp_receipt_format_time(until_ms, ts, sizeof(ts)) != 0 ||
        snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof(tmp)) {
        free(buf);
        return TP_EINVAL;
    }
    f = fopen(tmp, "w");
    if (!f) {
        free(buf);
        return TP_EIO;
    }
    for (char *line = buf, *next; line && *line; line = next) {
        char *nl = strchr(line, '\n');
        next = nl ? nl + 1 : NULL;
        if (nl)
            *nl = '\0';
        bool key = line[0] && line[0] != '#' && strchr(line, ' ');
        fprintf(f, "%s%s%s\n", line, key && !strstr(line, "valid-until=") ? " valid-until=" : "",
                key && !strstr(line, "valid-until=") ? ts : "");
    }
    free(buf);
    rc = (fflush(f) == 0 && fsync(fileno(f)) == 0) ? 0 : TP_EIO;
    if (fclose(f) != 0)
        rc = TP_EIO;
    if (rc == 0 && rename(tmp, path) != 0)
        rc = TP_EIO;
    if (rc != 0)
        unlink(tmp);
    return rc;
}

int tpctl_cmd_keygen(int argc, char **argv) {
    const char *dir = NULL;
    char priv[4096], pub[4096], keyset[4096], line[256];
    tp_signer *s = NULL;
    struct stat st;
    int force = 0, rc;
    long overlap_s = 300;
    bool rotating;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--out-dir") == 0 && i + 1 < argc) {
            dir = argv[++i];
        } else if (strcmp(argv[i], "--force") == 0) {
            force = 1;
        } else if (strcmp(argv[i], "--overlap-s") == 0 && i + 1 < argc) {
            char *end = NULL;
            overlap_s = strtol(argv[++i], &end, 10);
            if (!end || *end || overlap_s < 0 || overlap_s > 86400L * 365) {
                keygen_usage(stderr);
                return 2;
            }
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            keygen_usage(stdout);
            return 0;
        } else {
            keygen_usage(stderr);
            return 2;
        }
    }
    if (!dir) {
        keygen_usage(stderr);
        return 2;
    }
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "tpctl keygen: cannot create %s: %s\n", dir, strerror(errno));
        return 2;
    }
    if (snprintf(priv, sizeof(priv), "%s/receipts.key", dir) >= (int)sizeof(priv) ||
        snprintf(pub, sizeof(pub), "%s/receipts.pub", dir) >= (int)sizeof(pub) ||
        snprintf(keyset, sizeof(keyset), "%s/receipts.keyset", dir) >= (int)sizeof(keyset)) {
        fprintf(stderr, "tpctl keygen: path too long\n");
        return 2;
    }
    if (!force && stat(priv, &st) == 0) {
        fprintf(stderr, "tpctl keygen: %s exists; use --force to rotate it\n", priv);
        return 2;
    }
    rotating = stat(keyset, &st) == 0;
    rc = tp_receipt_keygen(priv, pub);
    if (rc == 0)
        rc = tp_signer_load(priv, &s);
    if (rc == 0)
        rc = tp_signer_public_line(s, line, sizeof(line));
    if (rc == 0 && rotating) {
        int64_t now = now_ms();
        char from[32];
        size_t used = strlen(line);
        rc = keyset_close_open_keys(keyset, now + (int64_t)overlap_s * 1000);
        if (rc == 0 && tp_receipt_format_time(now, from, sizeof(from)) == 0)
            snprintf(line + used, sizeof(line) - used, " valid-from=%s", from);
    }
    if (rc == 0)
        rc = keyset_append(keyset, line, tp_signer_keyid(s));
    if (rc != 0) {
        fprintf(stderr, "tpctl keygen: %s\n", tp_strerror(rc));
        tp_signer_free(s);
        return 2;
    }
    printf("%s\n", tp_signer_keyid(s));
    tp_signer_free(s);
    return 0;
}
