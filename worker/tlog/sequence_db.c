/* sequence_db.c: the log's sequencer: numbers committed, unnumbered receipts as leaves, in
 * transactions of its own, off the request path (the relay runs it before each fetch). Receipts
 * are committed with leaf_index NULL; the one tlog_counter row hands out the indexes, so two
 * sequencers (two relays) take turns on its lock. */
#include <stdio.h>

#include "tp/error.h"
#include "tp/tlog_db.h"

/* One transaction: up to batch receipts. *n gets how many it numbered. */
static int sequence_once(tp_db *db, int batch, int64_t *n) {
    char lim[16], nb[32];
    bool found = false;
    int rc;
    *n = 0;
    if ((rc = tp_db_begin(db)) != 0)
        return rc;
    /* The lock first, as a statement of its own: the next statement's snapshot is taken once it
     * is granted, so it sees every receipt committed before and none that another sequencer
     * numbered while this one waited. */
    rc = tp_db_exec(db, "SELECT next_leaf FROM tlog_counter WHERE id = 1 FOR UPDATE", 0, NULL, NULL);
    if (rc != 0)
        goto out_fail;
    /* A tenant's receipts commit in chain order (each transaction extends its chain under the
     * tenant row's lock, held to COMMIT), so numbering in (tenant, sequence) order, a prefix at a
     * time, gives a tenant's leaves in its chain order. Receipts published before the log existed
     * (published, unnumbered) stay out of it. */
    snprintf(lim, sizeof(lim), "%d", batch);
    const char *p[1] = {lim};
    rc = tp_db_query_text(db,
                          "WITH n AS (SELECT receipt_id, row_number() OVER (ORDER BY tenant_id, "
                          "sequence) AS k FROM (SELECT receipt_id, tenant_id, sequence FROM "
                          "receipt_outbox WHERE leaf_index IS NULL AND published_at IS NULL ORDER BY "
                          "tenant_id, sequence LIMIT $1::int) s), "
                          "c AS (UPDATE tlog_counter SET next_leaf = next_leaf + (SELECT count(*) FROM n) "
                          "WHERE id = 1 AND EXISTS (SELECT 1 FROM n) RETURNING next_leaf), "
                          "u AS (UPDATE receipt_outbox o SET leaf_index = c.next_leaf - (SELECT count(*) "
                          "FROM n) + n.k - 1 FROM n, c WHERE o.receipt_id = n.receipt_id RETURNING 1) "
                          "SELECT count(*) FROM u",
                          1, p, nb, sizeof(nb), &found);
    if (rc != 0)
        goto out_fail;
    if (!found || sscanf(nb, "%lld", (long long *)n) != 1) {
        rc = TP_EDB_PERMANENT;
        goto out_fail;
    }
    if ((rc = tp_db_commit(db)) != 0) {
        *n = 0;
        return rc;
    }
    return 0;
out_fail:
    *n = 0;
    tp_db_rollback(db);
    return rc;
}

int tp_tlog_db_sequence(tp_db *db, int batch, int max_batches, int64_t *numbered, bool *more) {
    int64_t total = 0, n = 0;
    char one[8];
    bool found = false;
    int rc = 0;
    if (batch <= 0 || max_batches <= 0)
        return TP_EINVAL;
    *more = false;
    if (numbered)
        *numbered = 0;
    /* Nothing to number (another sequencer was first, or no commit since): no transaction, so no
     * commit to flush. A receipt committed after this look is the next round's (its commit wakes
     * the relay). */
    rc = tp_db_query_text(db, "SELECT 1 FROM receipt_outbox WHERE leaf_index IS NULL AND "
                          "published_at IS NULL LIMIT 1", 0, NULL, one, sizeof(one), &found);
    if (rc != 0 || !found)
        return rc;
    for (int i = 0; i < max_batches; i++) {
        if ((rc = sequence_once(db, batch, &n)) != 0)
            break;
        total += n;
        *more = n == batch; /* a full batch: there may be more */
        if (!*more)
            break;
    }
    if (numbered)
        *numbered = total;
    return rc;
}
