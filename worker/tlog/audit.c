/* audit.c: the offline audit of the transparency log that `tpctl receipts verify` runs: leaves
 * from the receipts topic (leaf-index header + leaf hash), verified checkpoints from the
 * checkpoints topic; rebuilds the tree in leaf order with a compact stack of subtree roots and
 * compares every checkpoint's root, reporting duplicates, dropped leaves (tails), forks and
 * checkpoints that do not extend the earlier ones. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tp/error.h"
#include "tp/tlog.h"

typedef struct audit_leaf {
    int64_t index;
    unsigned char hash[TP_TLOG_HASH_LEN];
    char receipt_id[96];
    char where[96];
} audit_leaf;

typedef struct audit_cp {
    tp_checkpoint cp;
    char where[96];
    size_t order; /* as fed */
} audit_cp;

struct tp_tlog_audit {
    audit_leaf *leaves;
    size_t n_leaves, cap_leaves;
    audit_cp *cps;
    size_t n_cps, cap_cps;
};

int tp_tlog_audit_new(tp_tlog_audit **out) {
    *out = calloc(1, sizeof(**out));
    return *out ? 0 : TP_ENOMEM;
}

void tp_tlog_audit_free(tp_tlog_audit *a) {
    if (!a)
        return;
    free(a->leaves);
    free(a->cps);
    free(a);
}

static int grow(void **p, size_t *cap, size_t n, size_t size) {
    if (n < *cap)
        return 0;
    size_t nc = *cap ? *cap * 2 : 64;
    void *np = realloc(*p, nc * size);
    if (!np)
        return TP_ENOMEM;
    *p = np;
    *cap = nc;
    return 0;
}

int tp_tlog_audit_leaf(tp_tlog_audit *a, int64_t index, const unsigned char leaf_hash[TP_TLOG_HASH_LEN],
                       const char *receipt_id, const char *where) {
    if (grow((void **)&a->leaves, &a->cap_leaves, a->n_leaves, sizeof(*a->leaves)) != 0)
        return TP_ENOMEM;
    audit_leaf *l = &a->leaves[a->n_leaves++];
    l->index = index;
    memcpy(l->hash, leaf_hash, TP_TLOG_HASH_LEN);
    snprintf(l->receipt_id, sizeof(l->receipt_id), "%s", receipt_id ? receipt_id : "?");
    snprintf(l->where, sizeof(l->where), "%s", where ? where : "?");
    return 0;
}

int tp_tlog_audit_checkpoint(tp_tlog_audit *a, const tp_checkpoint *cp, const char *where) {
    if (grow((void **)&a->cps, &a->cap_cps, a->n_cps, sizeof(*a->cps)) != 0)
        return TP_ENOMEM;
    audit_cp *c = &a->cps[a->n_cps];
    c->cp = *cp;
    snprintf(c->where, sizeof(c->where), "%s", where ? where : "?");
    c->order = a->n_cps++;
    return 0;
}

static int by_index(const void *x, const void *y) {
    const audit_leaf *a = x, *b = y;
    return a->index < b->index ? -1 : a->index > b->index ? 1 : 0;
}

static int by_size(const void *x, const void *y) {
    const audit_cp *a = x, *b = y;
    if (a->cp.size != b->cp.size)
        return a->cp.size < b->cp.size ? -1 : 1;
    return a->order < b->order ? -1 : a->order > b->order ? 1 : 0;
}

typedef struct report {
    tp_tlog_audit_error_fn fn;
    void *arg;
    size_t errors;
} report;

static void say(report *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(report *r, const char *fmt, ...) {
    char text[640];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    r->errors++;
    if (r->fn)
        r->fn(r->arg, text);
}

/* Leaves first .. last (below the latest checkpoint's size) are not on the topic. */
static void report_gap(report *r, int64_t first, int64_t last, int64_t latest, bool gapless) {
    char range[96];
    if (last > first)
        snprintf(range, sizeof(range), "leaves %lld..%lld of the log are", (long long)first, (long long)last);
    else
        snprintf(range, sizeof(range), "leaf %lld of the log is", (long long)first);
    say(r, "%s: %s in the checkpoint of size %lld but not on the receipts topic%s",
        gapless ? "dropped tail" : "missing receipts", range, (long long)latest,
        gapless ? ", and no tenant's chain there shows a gap: the last receipt(s) of a tenant were "
                  "removed" : "");
}

/* The compact range of the leaves appended so far: roots of perfect subtrees, largest first. */
typedef struct compact {
    unsigned char h[64][TP_TLOG_HASH_LEN];
    int level[64];
    int n;
} compact;

static void compact_push(compact *c, const unsigned char leaf[TP_TLOG_HASH_LEN]) {
    memcpy(c->h[c->n], leaf, TP_TLOG_HASH_LEN);
    c->level[c->n++] = 0;
    while (c->n >= 2 && c->level[c->n - 1] == c->level[c->n - 2]) {
        tp_tlog_node_hash(c->h[c->n - 2], c->h[c->n - 1], c->h[c->n - 2]);
        c->level[c->n - 2]++;
        c->n--;
    }
}

static void compact_root(const compact *c, unsigned char out[TP_TLOG_HASH_LEN]) {
    if (c->n == 0) {
        tp_tlog_empty_root(out);
        return;
    }
    memcpy(out, c->h[c->n - 1], TP_TLOG_HASH_LEN);
    for (int i = c->n - 2; i >= 0; i--)
        tp_tlog_node_hash(c->h[i], out, out);
}

int tp_tlog_audit_finish(tp_tlog_audit *a, bool chains_gapless, tp_tlog_audit_error_fn fn, void *arg,
                         tp_tlog_audit_summary *sum) {
    report r = {fn, arg, 0};
    compact *c = calloc(1, sizeof(*c));
    int64_t next = 0, contiguous, distinct = 0, latest = 0;
    const audit_cp *good = NULL; /* the largest checkpoint whose root matched so far */
    size_t k = 0;
    if (!c)
        return TP_ENOMEM;
    memset(sum, 0, sizeof(*sum));
    if (a->n_leaves) /* qsort must not see NULL, even for nothing to sort */
        qsort(a->leaves, a->n_leaves, sizeof(*a->leaves), by_index);
    if (a->n_cps)
        qsort(a->cps, a->n_cps, sizeof(*a->cps), by_size);
    if (a->n_cps)
        latest = a->cps[a->n_cps - 1].cp.size;

    /* One origin for the whole log. */
    for (size_t i = 1; i < a->n_cps; i++)
        if (strcmp(a->cps[i].cp.origin, a->cps[0].cp.origin) != 0) {
            say(&r, "checkpoint at %s names origin %s, others %s: two logs mixed", a->cps[i].where,
                a->cps[i].cp.origin, a->cps[0].cp.origin);
            break;
        }
    /* Forks: one size, two roots. */
    for (size_t i = 1; i < a->n_cps; i++)
        if (a->cps[i].cp.size == a->cps[i - 1].cp.size &&
            memcmp(a->cps[i].cp.root, a->cps[i - 1].cp.root, TP_TLOG_HASH_LEN) != 0)
            say(&r, "forked log: the checkpoints at %s and %s both have size %lld but different root "
                "hashes", a->cps[i - 1].where, a->cps[i].where, (long long)a->cps[i].cp.size);

    /* Leaves in index order: duplicates (re-publishes) must agree; gaps are missing leaves. */
    for (size_t i = 0; i < a->n_leaves;) {
        const audit_leaf *l = &a->leaves[i];
        size_t j = i + 1;
        for (; j < a->n_leaves && a->leaves[j].index == l->index; j++)
            if (memcmp(a->leaves[j].hash, l->hash, TP_TLOG_HASH_LEN) != 0)
                say(&r, "leaf %lld is claimed by receipt %s (at %s) and by receipt %s (at %s) with "
                    "different contents", (long long)l->index, l->receipt_id, l->where,
                    a->leaves[j].receipt_id, a->leaves[j].where);
        if (l->index < 0) {
            say(&r, "receipt %s (at %s) has no valid leaf-index header", l->receipt_id, l->where);
            i = j;
            continue;
        }
        if (l->index > next && next < latest)
            report_gap(&r, next, (l->index < latest ? l->index : latest) - 1, latest, chains_gapless);
        if (l->index >= next) {
            distinct++;
            next = l->index + 1;
        }
        i = j;
    }
    if (next < latest)
        report_gap(&r, next, latest - 1, latest, chains_gapless);

    /* The tree over the leaves 0 .. contiguous-1, and each checkpoint within it. */
    contiguous = 0;
    for (size_t i = 0; i <= a->n_leaves; i++) {
        while (k < a->n_cps && a->cps[k].cp.size <= contiguous) {
            const audit_cp *cp = &a->cps[k++];
            unsigned char root[TP_TLOG_HASH_LEN];
            if (cp->cp.size != contiguous)
                continue; /* a size below the first leaf fed: compared below */
            compact_root(c, root);
            if (memcmp(root, cp->cp.root, TP_TLOG_HASH_LEN) == 0) {
                good = cp;
            } else if (good && good->cp.size == cp->cp.size) {
                continue; /* a fork, reported above */
            } else if (good) {
                say(&r, "checkpoint of size %lld (at %s) is not an extension of the checkpoint of "
                    "size %lld (at %s): its root is not the root of the receipts' first %lld leaves",
                    (long long)cp->cp.size, cp->where, (long long)good->cp.size, good->where,
                    (long long)cp->cp.size);
            } else {
                say(&r, "checkpoint of size %lld (at %s): its root is not the root of the receipts' "
                    "first %lld leaves", (long long)cp->cp.size, cp->where, (long long)cp->cp.size);
            }
        }
        if (i == a->n_leaves)
            break;
        if (a->leaves[i].index != contiguous) {
            if (a->leaves[i].index < contiguous)
                continue; /* a duplicate (reported above when different) */
            break;        /* a gap (reported above) */
        }
        compact_push(c, a->leaves[i].hash);
        contiguous++;
    }
    free(c);
    sum->leaves = distinct;
    sum->checkpoints = a->n_cps;
    sum->latest_size = latest;
    sum->not_yet = next > latest ? next - latest : 0;
    sum->errors = r.errors;
    return r.errors ? TP_EVERIFY : 0;
}
