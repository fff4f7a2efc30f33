/* quota.c: reads one plan's quota vector out of the tiers JSON (config/quota-tiers.json), the same
 * document OPA receives, and formats it for SQL and receipts. */
#include "stages_int.h"
#include "tp/error.h"

#include <string.h>

static int get_int(json_t *tier, const char *key, int64_t *out) {
    json_t *v = json_object_get(tier, key);
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return TP_ECONFIG;
    *out = (int64_t)json_integer_value(v);
    return 0;
}

int tp_stages_quota_for_plan(const char *tiers_json, tp_plan plan, tp_quota_vector *out) {
    json_error_t jerr;
    json_t *root, *tier, *burst;
    int rc = TP_ECONFIG;

    memset(out, 0, sizeof(*out));
    if (!tiers_json)
        return TP_ECONFIG;
    root = json_loads(tiers_json, 0, &jerr);
    if (!root)
        return TP_ECONFIG;
    tier = json_object_get(root, tp_plan_name(plan));
    if (!json_is_object(tier))
        goto out_free;
    if (get_int(tier, "requestsPerMinute", &out->requests_per_minute) ||
        get_int(tier, "requestsPerDay", &out->requests_per_day) ||
        get_int(tier, "ingestEventsPerMinute", &out->ingest_events_per_minute) ||
        get_int(tier, "maxTokensPerRequest", &out->max_tokens_per_request) ||
        get_int(tier, "storageBytes", &out->storage_bytes) ||
        get_int(tier, "seatCap", &out->seat_cap))
        goto out_free;
    burst = json_object_get(tier, "burstMultiplier");
    if (!json_is_number(burst) || json_number_value(burst) <= 0 || json_number_value(burst) > 1000)
        goto out_free;
    out->burst_multiplier = json_number_value(burst);
    rc = 0;
out_free:
    json_decref(root);
    return rc;
}
