/* quota_tiers.c: loads and checks config/quota-tiers.json, the one table of quota tiers that is
 * handed to OPA (input.context.tiers) and read by the quota stage. */
#include "tp/policy.h"
#include "tp/config.h"
#include "tp/error.h"
#include "tp/log.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TIERS_FILE_MAX (64 * 1024)

typedef struct int_field {
    const char *key;
    size_t offset;
} int_field;

static const int_field int_fields[] = {
    {"requestsPerMinute", offsetof(tp_quota_tier, requests_per_minute)},
    {"requestsPerDay", offsetof(tp_quota_tier, requests_per_day)},
    {"ingestEventsPerMinute", offsetof(tp_quota_tier, ingest_events_per_minute)},
    {"maxTokensPerRequest", offsetof(tp_quota_tier, max_tokens_per_request)},
    {"storageBytes", offsetof(tp_quota_tier, storage_bytes)},
    {"seatCap", offsetof(tp_quota_tier, seat_cap)},
};
#define N_INT_FIELDS (sizeof(int_fields) / sizeof(int_fields[0]))
#define N_PLANS 4

/* Checks one plan's object and fills out when given. */
static int read_tier(json_t *obj, const char *plan, tp_quota_tier *out, char *errstr, size_t errstr_size) {
    json_t *val;
    if (!json_is_object(obj)) {
        snprintf(errstr, errstr_size, "tier %s: not an object", plan);
        return TP_ECONFIG;
    }
    for (size_t i = 0; i < N_INT_FIELDS; i++) {
        val = json_object_get(obj, int_fields[i].key);
        if (!json_is_integer(val) || json_integer_value(val) < 0) {
            snprintf(errstr, errstr_size, "tier %s: %s must be a non-negative integer", plan,
                     int_fields[i].key);
            return TP_ECONFIG;
        }
        if (out)
            *(int64_t *)(void *)((char *)out + int_fields[i].offset) = (int64_t)json_integer_value(val);
    }
    val = json_object_get(obj, "burstMultiplier");
    if (!json_is_number(val) || !(json_number_value(val) >= 1.0)) {
        snprintf(errstr, errstr_size, "tier %s: burstMultiplier must be a number >= 1", plan);
        return TP_ECONFIG;
    }
    if (out) {
        out->burst_multiplier = json_number_value(val);
        snprintf(out->tier, sizeof(out->tier), "%s", plan);
    }
    return 0;
}

/* Parses and checks the whole document; returns it (a new reference) or NULL with errstr set. */
static json_t *load_checked(const char *tiers_json, char *errstr, size_t errstr_size) {
    json_error_t jerr;
    json_t *root;
    const char *key;
    json_t *val;
    if (!tiers_json) {
        snprintf(errstr, errstr_size, "no tiers document");
        return NULL;
    }
    root = json_loads(tiers_json, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        snprintf(errstr, errstr_size, "not JSON (line %d: %s)", jerr.line, jerr.text);
        return NULL;
    }
    if (!json_is_object(root)) {
        snprintf(errstr, errstr_size, "not a JSON object");
        goto out_fail;
    }
    json_object_foreach(root, key, val) {
        tp_plan plan;
        if (tp_plan_parse(key, &plan) != 0) {
            snprintf(errstr, errstr_size, "unknown plan \"%.40s\"", key);
            goto out_fail;
        }
    }
    for (int p = 0; p < N_PLANS; p++) {
        const char *name = tp_plan_name((tp_plan)p);
        val = json_object_get(root, name);
        if (!val) {
            snprintf(errstr, errstr_size, "tier %s missing", name);
            goto out_fail;
        }
        if (read_tier(val, name, NULL, errstr, errstr_size) != 0)
            goto out_fail;
    }
    return root;
out_fail:
    json_decref(root);
    return NULL;
}

int tp_quota_tiers_validate(const char *tiers_json, char *errstr, size_t errstr_size) {
    json_t *root = load_checked(tiers_json, errstr, errstr_size);
    if (!root)
        return TP_ECONFIG;
    json_decref(root);
    return 0;
}

int tp_quota_tiers_get(const char *tiers_json, tp_plan plan, tp_quota_tier *out) {
    char errstr[256];
    json_t *root;
    int rc;
    if (!out || (unsigned)plan >= N_PLANS)
        return TP_EINVAL;
    root = load_checked(tiers_json, errstr, sizeof(errstr));
    if (!root)
        return TP_ECONFIG;
    memset(out, 0, sizeof(*out));
    rc = read_tier(json_object_get(root, tp_plan_name(plan)), tp_plan_name(plan), out, errstr,
                   sizeof(errstr));
    json_decref(root);
    return rc;
}

int tp_quota_tiers_parse(const char *tiers_json, tp_quota_tier out[TP_QUOTA_TIERS_N], char *errstr,
                         size_t errstr_size) {
    json_t *root = load_checked(tiers_json, errstr, errstr_size);
    if (!root)
        return TP_ECONFIG;
    memset(out, 0, sizeof(tp_quota_tier) * TP_QUOTA_TIERS_N);
    for (int p = 0; p < N_PLANS; p++) {
        const char *name = tp_plan_name((tp_plan)p);
        if (read_tier(json_object_get(root, name), name, &out[p], errstr, errstr_size) != 0) {
            json_decref(root);
            return TP_ECONFIG;
        }
    }
    json_decref(root);
    return 0;
}

char *tp_policy_load_tiers(const char *path) {
    char *text = NULL, errstr[256];
    int rc;
    if (!path)
        return NULL;
    rc = tp_read_file(path, TIERS_FILE_MAX, &text, NULL);
    if (rc != 0) {
        tp_log_error("policy", "cannot read quota tiers %s: %s", path, tp_strerror(rc));
        return NULL;
    }
    if (tp_quota_tiers_validate(text, errstr, sizeof(errstr)) != 0) {
        tp_log_error("policy", "quota tiers %s: %s", path, errstr);
        free(text);
        return NULL;
    }
    return text;
}
