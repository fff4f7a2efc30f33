/* watermark.c: the contiguous-finished-offset tracker behind at-least-once offset storing. */
#include "consumer/watermark.h"
#include "tp/error.h"

#include <stdlib.h>
#include <string.h>

void tp_watermark_init(tp_watermark *wm) { memset(wm, 0, sizeof(*wm)); }

void tp_watermark_release(tp_watermark *wm) {
    free(wm->offsets);
    free(wm->done);
    memset(wm, 0, sizeof(*wm));
}

static size_t slot(const tp_watermark *wm, size_t i) { return (wm->head + i) % wm->cap; }

static int grow(tp_watermark *wm) {
    size_t ncap = wm->cap ? wm->cap * 2 : 64;
    int64_t *noff = malloc(ncap * sizeof(*noff));
    bool *ndone = malloc(ncap * sizeof(*ndone));
    if (!noff || !ndone) {
        free(noff);
        free(ndone);
        return TP_ENOMEM;
    }
    for (size_t i = 0; i < wm->count; i++) {
        noff[i] = wm->offsets[slot(wm, i)];
        ndone[i] = wm->done[slot(wm, i)];
    }
    free(wm->offsets);
    free(wm->done);
    wm->offsets = noff;
    wm->done = ndone;
    wm->cap = ncap;
    wm->head = 0;
    return 0;
}

int tp_watermark_add(tp_watermark *wm, int64_t offset) {
    size_t s;
    if (wm->count && offset <= wm->offsets[slot(wm, wm->count - 1)])
        return TP_EINVAL;
    if (wm->count == wm->cap && grow(wm) != 0)
        return TP_ENOMEM;
    s = slot(wm, wm->count);
    wm->offsets[s] = offset;
    wm->done[s] = false;
    wm->count++;
    return 0;
}

bool tp_watermark_finish(tp_watermark *wm, int64_t offset, int64_t *store_next) {
    size_t lo = 0, hi = wm->count;
    bool advanced = false;
    /* Binary search: offsets are increasing from head. */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (wm->offsets[slot(wm, mid)] < offset)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == wm->count || wm->offsets[slot(wm, lo)] != offset)
        return false;
    wm->done[slot(wm, lo)] = true;
    while (wm->count && wm->done[wm->head]) {
        *store_next = wm->offsets[wm->head] + 1;
        wm->head = (wm->head + 1) % wm->cap;
        wm->count--;
        advanced = true;
    }
    return advanced;
}

void tp_watermark_restart(tp_watermark *wm) {
    wm->head = 0;
    wm->count = 0;
    wm->epoch++;
}

size_t tp_watermark_pending(const tp_watermark *wm) { return wm->count; }
