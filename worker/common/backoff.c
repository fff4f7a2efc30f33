/* backoff.c: exponential backoff with full jitter for transient stage failures. */
#include "tp/backoff.h"

int64_t tp_backoff_ceiling(const tp_backoff *b, int attempt) {
    double ceil = (double)(b->initial_ms > 0 ? b->initial_ms : 1);
    double mult = b->multiplier >= 1.0 ? b->multiplier : 1.0;
    for (int i = 1; i < attempt && ceil < (double)b->cap_ms; i++)
        ceil *= mult;
    if (ceil > (double)b->cap_ms)
        ceil = (double)b->cap_ms;
    return (int64_t)ceil;
}

int64_t tp_backoff_delay(const tp_backoff *b, int attempt, uint64_t rnd) {
    int64_t ceil = tp_backoff_ceiling(b, attempt);
    if (ceil <= 0)
        return 0;
    return (int64_t)(rnd % (uint64_t)(ceil + 1));
}
