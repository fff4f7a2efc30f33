/* backoff.h: exponential backoff with full jitter (delay drawn uniformly from [0, min(cap,
 * initial * multiplier^(attempt-1))]). Pure; any thread. */
#ifndef TP_BACKOFF_H
#define TP_BACKOFF_H

#include <stdint.h>

typedef struct tp_backoff {
    int64_t initial_ms;
    double multiplier;
    int64_t cap_ms;
} tp_backoff;

/* Returns the ceiling of the delay before attempt+1 (attempt counts from 1). */
int64_t tp_backoff_ceiling(const tp_backoff *b, int attempt);
/* Returns a delay in [0, ceiling]; rnd is a uniformly random 64-bit value. */
int64_t tp_backoff_delay(const tp_backoff *b, int attempt, uint64_t rnd);

#endif
