/* plan.c: the outbox relay's pure rules: which settled rows to mark published (only a tenant's
 * delivered prefix) and how many advisory-lock slots a relay should hold. */
#include "outbox/outbox_int.h"

void tp_outbox_verdicts(const tp_outbox_state *state, size_t n, tp_outbox_verdict *out) {
    size_t failed = n, i;
    bool prefix = true, reported = true;
    for (i = 0; i < n; i++) {
        if (state[i] == TP_OUTBOX_FAILED) {
            failed = i;
            break;
        }
    }
    for (i = failed; i < n; i++)
        if (state[i] == TP_OUTBOX_SENT)
            reported = false;
    for (i = 0; i < n; i++) {
        if (i >= failed) {
            out[i] = reported ? TP_OUTBOX_DROP : TP_OUTBOX_WAIT;
            continue;
        }
        prefix = prefix && state[i] == TP_OUTBOX_DELIVERED;
        out[i] = prefix ? TP_OUTBOX_MARK : TP_OUTBOX_WAIT;
    }
}

int tp_outbox_slot_target(int n_relays) {
    if (n_relays < 1)
        n_relays = 1;
    return (TP_OUTBOX_SLOTS + n_relays - 1) / n_relays;
}

int64_t tp_outbox_position(int64_t frontier, int64_t first_unmarked) {
    return first_unmarked < frontier ? first_unmarked : frontier;
}

bool tp_outbox_position_due(int64_t stored, int64_t next, bool marked_here) {
    if (next <= stored)
        return false;
    return marked_here || next - stored >= TP_OUTBOX_POSITION_STEP;
}
