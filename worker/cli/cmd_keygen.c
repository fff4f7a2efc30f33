/* cmd_keygen.c: `tpctl keygen`: creates an Ed25519 receipt signing key, its public key file, and
 * appends the public key to the key set so that receipts signed by earlier keys keep verifying. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "tp/config.h"
#include "tp/error.h"
#include "tp/receipts.h"

static void keygen_usage(FILE *out) {
    fprintf(out, "usage: tpctl keygen --out-dir DIR [--force]\n"
                 "  writes DIR/receipts.key (mode 0600) and DIR/receipts.pub, appends the public key\n"
                 "  to DIR/receipts.keyset and prints the key id. --force replaces an existing key\n"
                 "  (rotation: the old public key stays in the key set).\n");
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

int tpctl_cmd_keygen(int argc, char **argv) {
    const char *dir = NULL;
    char priv[4096], pub[4096], keyset[4096], line[256];
    tp_signer *s = NULL;
    struct stat st;
    int force = 0, rc;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--out-dir") == 0 && i + 1 < argc) {
            dir = argv[++i];
        } else if (strcmp(argv[i], "--force") == 0) {
            force = 1;
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
    rc = tp_receipt_keygen(priv, pub);
    if (rc == 0)
        rc = tp_signer_load(priv, &s);
    if (rc == 0)
        rc = tp_signer_public_line(s, line, sizeof(line));
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
