/* quota.c: one plan's quota vector out of the tiers JSON (config/quota-tiers.json, the same
 * document OPA receives), read through the policy component's tiers loader. */
#include "stages_int.h"
#include "tp/error.h"

#include <string.h>

int tp_stages_quota_for_plan(const char *tiers_json, tp_plan plan, tp_quota_vector *out) {
    tp_quota_tier t;
    memset(out, 0, sizeof(*out));
    if (!tiers_json || tp_quota_tiers_get(tiers_json, plan, &t) != 0)
        return TP_ECONFIG;
    out->requests_per_minute = t.requests_per_minute;
    out->requests_per_day = t.requests_per_day;
    out->ingest_events_per_minute = t.ingest_events_per_minute;
    out->max_tokens_per_request = t.max_tokens_per_request;
    out->storage_bytes = t.storage_bytes;
    out->seat_cap = t.seat_cap;
    out->burst_multiplier = t.burst_multiplier;
    return 0;
}
