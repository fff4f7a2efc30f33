/* inflight.c: the outbox relay's rows in flight, per tenant in sequence order: appended when
 * sent, settled by delivery reports (only a tenant's delivered prefix is marked, failed rows
 * are dropped to go out again), collected into mark sets, and the (slot, partition) positions
 * the marks let the relay store. Loop thread; no libuv, no I/O. */
#include "outbox/outbox_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static unsigned bucket_of(const char *id) {
    unsigned h = 2166136261u;
    for (; *id; id++)
        h = (h ^ (unsigned char)*id) * 16777619u;
    return h % TP_OUTBOX_TENANT_BUCKETS;
}

tp_outbox_tenant *tp_outbox_tenant_find(tp_outbox_inflight *f, const char *id) {
    for (tp_outbox_tenant *t = f->buckets[bucket_of(id)]; t; t = t->next)
        if (strcmp(t->id, id) == 0)
            return t;
    return NULL;
}

tp_outbox_tenant *tp_outbox_tenant_get(tp_outbox_inflight *f, const char *id, int slot) {
    tp_outbox_tenant *t = tp_outbox_tenant_find(f, id);
    unsigned b;
    if (t)
        return t;
    t = calloc(1, sizeof(*t));
    if (!t || !(t->id = strdup(id))) {
        free(t);
        return NULL;
    }
    t->slot = slot;
    b = bucket_of(id);
    t->next = f->buckets[b];
    f->buckets[b] = t;
    return t;
}

void tp_outbox_tenant_drop_if_empty(tp_outbox_inflight *f, tp_outbox_tenant *t) {
    tp_outbox_tenant **pp;
    if (t->head)
        return;
    for (pp = &f->buckets[bucket_of(t->id)]; *pp; pp = &(*pp)->next)
        if (*pp == t) {
            *pp = t->next;
            break;
        }
    free(t->id);
    free(t);
}

bool tp_outbox_tenant_has_failed(const tp_outbox_tenant *t) {
    for (const tp_outbox_sent *x = t->head; x; x = x->next)
        if (x->state == TP_OUTBOX_FAILED)
            return true;
    return false;
}

void tp_outbox_sent_free(tp_outbox_sent *rw) {
    tp_receipt_record_release(&rw->rec);
    free(rw);
}

void tp_outbox_append(tp_outbox_inflight *f, tp_outbox_tenant *t, tp_outbox_sent *rw) {
    rw->t = t;
    rw->next = NULL;
    if (t->tail)
        t->tail->next = rw;
    else
        t->head = rw;
    t->tail = rw;
    t->n++;
    f->n_rows++;
    f->slot_rows[t->slot]++;
}

/* Unlinks rw (in t's chain) and frees it. */
static void chain_remove(tp_outbox_inflight *f, tp_outbox_tenant *t, tp_outbox_sent *rw) {
    tp_outbox_sent **pp, *prev = NULL;
    for (pp = &t->head; *pp; prev = *pp, pp = &(*pp)->next)
        if (*pp == rw) {
            *pp = rw->next;
            if (t->tail == rw)
                t->tail = prev;
            break;
        }
    t->n--;
    f->n_rows--;
    f->slot_rows[t->slot]--;
    tp_outbox_sent_free(rw);
}

bool tp_outbox_settle(tp_outbox_inflight *f, tp_outbox_tenant *t, bool *dropped) {
    tp_outbox_state st[64], *states = st;
    tp_outbox_verdict vd[64], *verdicts = vd;
    size_t i = 0;
    bool mark = false;
    tp_outbox_sent *rw, *next;
    if (t->n > 64) {
        states = malloc(t->n * sizeof(*states));
        verdicts = malloc(t->n * sizeof(*verdicts));
        if (!states || !verdicts) {
            if (states != st)
                free(states);
            if (verdicts != vd)
                free(verdicts);
            return false; /* settled on the next report */
        }
    }
    for (rw = t->head; rw; rw = rw->next)
        states[i++] = rw->state;
    tp_outbox_verdicts(states, t->n, verdicts);
    for (i = 0, rw = t->head; rw; rw = next, i++) {
        next = rw->next;
        rw->markable = verdicts[i] == TP_OUTBOX_MARK;
        if (rw->markable && !rw->marking)
            mark = true;
        else if (verdicts[i] == TP_OUTBOX_DROP && !rw->marking) {
            chain_remove(f, t, rw);
            *dropped = true;
        }
    }
    if (states != st)
        free(states);
    if (verdicts != vd)
        free(verdicts);
    return mark;
}

char *tp_outbox_collect_marks(tp_outbox_inflight *f, int64_t now_ms, int64_t delay_ms, int64_t *next_due_ms) {
    size_t cap = 256, len = 1, n = 0;
    char *arr = malloc(cap);
    *next_due_ms = 0;
    if (!arr)
        return NULL;
    arr[0] = '{';
    for (int b = 0; b < TP_OUTBOX_TENANT_BUCKETS; b++)
        for (tp_outbox_tenant *t = f->buckets[b]; t; t = t->next)
            for (tp_outbox_sent *rw = t->head; rw && rw->markable; rw = rw->next) {
                size_t need = strlen(rw->rec.receipt_id) + 4;
                if (rw->marking)
                    continue;
                if (delay_ms > 0 && now_ms < rw->delivered_ms + delay_ms) {
                    if (*next_due_ms == 0 || rw->delivered_ms + delay_ms < *next_due_ms)
                        *next_due_ms = rw->delivered_ms + delay_ms;
                    break; /* the tenant's later rows wait behind it */
                }
                if (len + need + 2 > cap) {
                    char *bigger;
                    while (len + need + 2 > cap)
                        cap *= 2;
                    bigger = realloc(arr, cap);
                    if (!bigger)
                        goto out; /* what is collected so far is marked */
                    arr = bigger;
                }
                /* receipt ids are prov_<uuid>: no quotes or commas to escape */
                len += (size_t)snprintf(arr + len, cap - len, "%s\"%s\"", n ? "," : "", rw->rec.receipt_id);
                rw->marking = true;
                n++;
            }
out:
    if (n == 0) {
        free(arr);
        return NULL;
    }
    arr[len++] = '}';
    arr[len] = '\0';
    return arr;
}

size_t tp_outbox_settle_marked(tp_outbox_inflight *f, bool *dropped) {
    size_t removed = 0;
    for (int b = 0; b < TP_OUTBOX_TENANT_BUCKETS; b++) {
        tp_outbox_tenant *t = f->buckets[b], *next;
        for (; t; t = next) {
            next = t->next;
            while (t->head && t->head->marking) {
                removed++;
                chain_remove(f, t, t->head);
            }
            tp_outbox_settle(f, t, dropped);
            tp_outbox_tenant_drop_if_empty(f, t);
        }
    }
    return removed;
}

void tp_outbox_unflag_marks(tp_outbox_inflight *f) {
    for (int b = 0; b < TP_OUTBOX_TENANT_BUCKETS; b++)
        for (tp_outbox_tenant *t = f->buckets[b]; t; t = t->next)
            for (tp_outbox_sent *rw = t->head; rw; rw = rw->next)
                rw->marking = false;
}

void tp_outbox_forget_all(tp_outbox_inflight *f) {
    for (int b = 0; b < TP_OUTBOX_TENANT_BUCKETS; b++) {
        tp_outbox_tenant *t = f->buckets[b], *next;
        for (; t; t = next) {
            next = t->next;
            while (t->head) {
                tp_outbox_sent *rw = t->head;
                t->head = rw->next;
                tp_outbox_sent_free(rw);
            }
            free(t->id);
            free(t);
        }
        f->buckets[b] = NULL;
    }
    f->n_rows = 0;
    memset(f->slot_rows, 0, sizeof(f->slot_rows));
}

size_t tp_outbox_collect_positions(const tp_outbox_inflight *f, const bool *slots, const int64_t *frontier,
                                   int n_parts, int64_t (*stored)[TP_OUTBOX_PARTITIONS_MAX],
                                   tp_outbox_pos *out) {
    /* Per (slot, partition): the first delivered offset that stays unmarked, and whether rows
     * are marked now; a pair without rows in flight is bounded by the frontier alone. */
    int64_t first[TP_OUTBOX_SLOTS][TP_OUTBOX_PARTITIONS_MAX]; /* 32 KiB on the loop's stack */
    bool marked[TP_OUTBOX_SLOTS][TP_OUTBOX_PARTITIONS_MAX];
    size_t n = 0;
    for (int s = 0; s < TP_OUTBOX_SLOTS; s++)
        for (int p = 0; p < n_parts; p++) {
            first[s][p] = INT64_MAX;
            marked[s][p] = false;
        }
    for (int b = 0; b < TP_OUTBOX_TENANT_BUCKETS; b++)
        for (const tp_outbox_tenant *t = f->buckets[b]; t; t = t->next)
            for (const tp_outbox_sent *rw = t->head; rw; rw = rw->next) {
                if (rw->state != TP_OUTBOX_DELIVERED || rw->partition < 0 || rw->partition >= n_parts)
                    continue;
                if (rw->marking)
                    marked[t->slot][rw->partition] = true;
                else if (rw->offset < first[t->slot][rw->partition])
                    first[t->slot][rw->partition] = rw->offset;
            }
    for (int s = 0; s < TP_OUTBOX_SLOTS; s++) {
        if (!slots[s])
            continue;
        for (int p = 0; p < n_parts; p++) {
            int64_t next = tp_outbox_position(frontier[p], first[s][p]);
            if (frontier[p] <= 0 || !tp_outbox_position_due(stored[s][p], next, marked[s][p]))
                continue;
            out[n++] = (tp_outbox_pos){s, p, next};
        }
    }
    return n;
}
