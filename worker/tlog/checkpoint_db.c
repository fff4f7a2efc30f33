/* checkpoint_db.c: signed checkpoints of the transparency log: after extending the stored tree,
 * the relay signs (origin, size, root) as a C2SP signed note at the largest size whose receipts
 * are all on the topic, and keeps it in tlog_checkpoints; tp-ingress serves the latest. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "tp/error.h"
#include "tp/tlog_db.h"

/* The largest size a checkpoint may name: the tree's, cut at the first unpublished leaf. */
static int publishable_size(tp_db *db, int64_t tree_size, int64_t *out) {
    char tb[32], buf[32];
    bool found = false;
    int64_t v = 0;
    snprintf(tb, sizeof(tb), "%lld", (long long)tree_size);
    const char *p[1] = {tb};
    int rc = tp_db_query_text(db,
                              "SELECT least($1::bigint, coalesce((SELECT min(leaf_index) FROM "
                              "receipt_outbox WHERE published_at IS NULL AND leaf_index IS NOT NULL), "
                              "$1::bigint))",
                              1, p, buf, sizeof(buf), &found);
    if (rc != 0)
        return rc;
    if (!found || sscanf(buf, "%lld", (long long *)&v) != 1)
        return TP_EDB_PERMANENT;
    *out = v;
    return 0;
}

int tp_tlog_db_checkpoint(tp_db *db, const tp_signer *s, const char *origin, char **note,
                          tp_checkpoint *cp) {
    char body[TP_TLOG_ORIGIN_MAX + 128], text[TP_TLOG_NOTE_MAX], sb[32], rhex[65], last_buf[32];
    unsigned char sig[64], pk[32];
    int64_t tree_size = 0, size = 0, last = -1;
    int64_t inserted = 0;
    bool found = false;
    int rc, bl, tl;
    *note = NULL;
    memset(cp, 0, sizeof(*cp));
    if (!origin || !*origin || strlen(origin) > TP_TLOG_ORIGIN_MAX)
        return TP_EINVAL;
    if ((rc = tp_tlog_db_extend(db, 0, &tree_size, NULL)) != 0)
        return rc;
    if ((rc = publishable_size(db, tree_size, &size)) != 0)
        return rc;
    rc = tp_db_query_text(db, "SELECT max(size) FROM tlog_checkpoints", 0, NULL, last_buf,
                          sizeof(last_buf), &found);
    if (rc != 0)
        return rc;
    if (found)
        sscanf(last_buf, "%lld", (long long *)&last);
    if (size == 0 || size <= last)
        return 0; /* nothing new to sign */
    snprintf(cp->origin, sizeof(cp->origin), "%s", origin);
    cp->size = size;
    if ((rc = tp_tlog_root(tp_tlog_db_read, db, size, cp->root)) != 0)
        return rc;
    bl = tp_checkpoint_format(cp, body, sizeof(body));
    if (bl < 0)
        return TP_EINVAL;
    if ((rc = tp_signer_sign(s, body, (size_t)bl, sig)) != 0)
        return rc;
    tp_signer_public_key(s, pk);
    tl = tp_note_format(body, origin, pk, sig, text, sizeof(text));
    if (tl < 0)
        return TP_EINVAL;
    snprintf(sb, sizeof(sb), "%lld", (long long)size);
    sodium_bin2hex(rhex, sizeof(rhex), cp->root, TP_TLOG_HASH_LEN);
    const char *p[3] = {sb, rhex, text};
    rc = tp_db_exec(db,
                    "INSERT INTO tlog_checkpoints (size, root, note) VALUES ($1::bigint, "
                    "decode($2, 'hex'), $3) ON CONFLICT (size) DO NOTHING",
                    3, p, &inserted);
    if (rc != 0)
        return rc;
    if (inserted != 1)
        return 0; /* another relay signed this size first; it publishes it */
    *note = strdup(text);
    return *note ? 0 : TP_ENOMEM;
}

int tp_tlog_db_latest(tp_db *db, char **note, tp_checkpoint *cp) {
    tp_res *res = NULL;
    tp_note parsed;
    const char *text;
    int rc;
    *note = NULL;
    rc = tp_db_query(db, "SELECT note FROM tlog_checkpoints ORDER BY size DESC LIMIT 1", 0, NULL, &res);
    if (rc != 0)
        return rc;
    if (tp_res_nrows(res) != 1) {
        tp_res_free(res);
        return TP_ENOT_FOUND;
    }
    text = tp_res_get(res, 0, 0);
    if (tp_note_parse(text, strlen(text), &parsed, NULL, 0) != 0 ||
        tp_checkpoint_parse(text, parsed.body_len, cp, NULL, 0) != 0) {
        tp_res_free(res);
        return TP_EDB_PERMANENT;
    }
    *note = strdup(text);
    tp_res_free(res);
    return *note ? 0 : TP_ENOMEM;
}
