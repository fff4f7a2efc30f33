/* watermark.h: per-partition offset watermark. Offsets enter in consume order and finish in any
 * order; the offset that may be stored is one past the longest finished prefix. Loop thread only. */
#ifndef TP_CONSUMER_WATERMARK_H
#define TP_CONSUMER_WATERMARK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct tp_watermark {
    int64_t *offsets; /* ring buffer of pending offsets, oldest at head */
    bool *done;
    size_t head, count, cap;
    uint32_t epoch; /* bumped by each restart: offsets of an older epoch are never stored */
} tp_watermark;

void tp_watermark_init(tp_watermark *wm);
void tp_watermark_release(tp_watermark *wm);
/* Records a consumed offset. 0, TP_EINVAL (not larger than every offset added before: see
 * tp_watermark_restart) or TP_ENOMEM. */
int tp_watermark_add(tp_watermark *wm, int64_t offset);
/* Forgets every pending offset and bumps the epoch: for offsets that went backwards (an offset
 * reset, a truncated log), after which add takes them again. Work still running on an old offset
 * must not store it: callers compare the epoch they added it in with the current one. */
void tp_watermark_restart(tp_watermark *wm);
/* Marks an offset finished. Returns true and sets *store_next (the next offset to consume, i.e.
 * what to store) when the finished prefix grew; false otherwise (also for an unknown offset). */
bool tp_watermark_finish(tp_watermark *wm, int64_t offset, int64_t *store_next);
/* Returns the number of consumed offsets not yet behind the watermark. */
size_t tp_watermark_pending(const tp_watermark *wm);

#endif
