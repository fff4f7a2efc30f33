/* sequence_db.c: the log's sequencer on its own: numbers committed, unnumbered receipts as
 * leaves in transactions of its own (tests, tools). Receipts are committed with leaf_index NULL;
 * the one tlog_counter row hands out the indexes, so sequencers take turns on its lock. The
 * relay numbers with the same statements (tp/tlog_db.h) inside its round's one transaction. */
#include <stdio.h>
#include <string.h>

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
    rc = tp_db_exec(db, TP_TLOG_SEQUENCE_LOCK_SQL, 0, NULL, NULL);
    if (rc != 0)
        goto out_fail;
    /* A tenant's receipts commit in chain order (each transaction extends its chain under the
     * tenant row's lock, held to COMMIT), so numbering in (tenant, sequence) order, a prefix at a
     * time, gives a tenant's leaves in its chain order. Receipts published before the log existed
     * (published, unnumbered) stay out of it. */
    snprintf(lim, sizeof(lim), "%d", batch);
    const char *p[1] = {lim};
    rc = tp_db_query_text(db, "WITH " TP_TLOG_SEQUENCE_CTES("$1") " SELECT count(*) FROM u",
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

int tp_tlog_db_sequence_pending(tp_db *db, bool *pending) {
    char one[8];
    bool found = false;
    int rc = tp_db_query_text(db, "SELECT " TP_TLOG_SEQUENCE_PENDING_SQL, 0, NULL, one, sizeof(one), &found);
    *pending = rc == 0 && found && strcmp(one, "t") == 0;
    return rc;
}

int tp_tlog_db_sequence(tp_db *db, int batch, int max_batches, int64_t *numbered, bool *more) {
    int64_t total = 0, n = 0;
    bool pending = false;
    int rc = 0;
    if (batch <= 0 || max_batches <= 0)
        return TP_EINVAL;
    *more = false;
    if (numbered)
        *numbered = 0;
    /* Nothing to number (another sequencer was first, or no commit since): no transaction, so no
     * commit to flush. A receipt committed after this look is the next round's (its commit wakes
     * the relay). */
    if ((rc = tp_tlog_db_sequence_pending(db, &pending)) != 0 || !pending)
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
