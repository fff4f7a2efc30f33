/* outcome.c: what a POST answers once its request is terminal: the `Prefer: wait=N` header
 * (RFC 7240) and the mapping of a status view to 201 (the seed's response body), 403, 409 or 500.
 * Pure functions over untrusted text; any thread. */
#include "tp/error.h"
#include "tp/ingress.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static bool is_space(char c) { return c == ' ' || c == '\t'; }

int tp_ingress_parse_prefer_wait(const char *v, size_t len) {
    size_t i = 0;
    if (!v)
        return -1;
    while (i < len) {
        /* One preference: token [= value] *( ; param ), up to the next ',' outside quotes. */
        while (i < len && (is_space(v[i]) || v[i] == ','))
            i++;
        size_t name = i;
        while (i < len && v[i] != '=' && v[i] != ',' && v[i] != ';' && !is_space(v[i]))
            i++;
        size_t name_len = i - name;
        while (i < len && is_space(v[i]))
            i++;
        bool is_wait = name_len == 4 && strncasecmp(v + name, "wait", 4) == 0;
        long n = -1;
        if (i < len && v[i] == '=') {
            i++;
            while (i < len && is_space(v[i]))
                i++;
            bool quoted = i < len && v[i] == '"';
            if (quoted)
                i++;
            size_t digits = i;
            long acc = 0;
            while (i < len && v[i] >= '0' && v[i] <= '9') {
                if (acc < 1000000)
                    acc = acc * 10 + (v[i] - '0');
                i++;
            }
            bool ok = i > digits;
            if (quoted) {
                ok = ok && i < len && v[i] == '"';
                if (i < len && v[i] == '"')
                    i++;
            }
            while (i < len && is_space(v[i]))
                i++;
            ok = ok && (i == len || v[i] == ',' || v[i] == ';');
            if (ok)
                n = acc;
        }
        /* Skip parameters and anything malformed up to the next preference. */
        bool in_quotes = false;
        while (i < len && (in_quotes || v[i] != ',')) {
            if (v[i] == '"')
                in_quotes = !in_quotes;
            i++;
        }
        if (is_wait && n >= 0)
            return n > TP_INGRESS_WAIT_MAX_S ? TP_INGRESS_WAIT_MAX_S : (int)n;
    }
    return -1;
}

bool tp_ingress_state_is_terminal(const char *state) {
    return state && (strcmp(state, "SUCCEEDED") == 0 || strcmp(state, "FAILED") == 0 ||
                     strcmp(state, "DENIED") == 0);
}

static const char *str_at(json_t *o, const char *key) {
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

/* Copies o[key] into dst when present (null stays null). */
static int copy_member(json_t *dst, json_t *o, const char *key) {
    json_t *v = json_object_get(o, key);
    return json_object_set_new(dst, key, v ? json_incref(v) : json_null()) == 0 ? 0 : TP_ENOMEM;
}

static json_t *pick(json_t *o, const char *const *keys, size_t n) {
    json_t *out = json_object();
    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (copy_member(out, o, keys[i]) != 0) {
            json_decref(out);
            return NULL;
        }
    }
    return out;
}

#define PICK(o, ...)                                                                               \
    pick((o), (const char *const[]){__VA_ARGS__},                                                  \
         sizeof((const char *const[]){__VA_ARGS__}) / sizeof(const char *))

static json_t *success_body(json_t *st) {
    json_t *data = json_object(), *parts = json_array(), *receipts = json_object(), *body = NULL;
    json_t *src_parts = json_object_get(st, "partitions");
    json_t *src_receipts = json_object_get(st, "receipts");
    json_t *opa = json_object_get(json_object_get(st, "policy"), "opa");
    size_t i;
    json_t *p;
    if (!data || !parts || !receipts)
        goto out_free;
    json_object_set_new(data, "tenant", PICK(json_object_get(st, "tenant"), "id", "name", "slug"));
    json_object_set_new(data, "namespace",
                        PICK(json_object_get(st, "namespace"), "id", "slug", "environment"));
    json_array_foreach(src_parts, i, p) json_array_append_new(parts, PICK(p, "id", "name", "type"));
    json_object_set_new(data, "partitions", parts);
    parts = NULL;
    json_object_set_new(data, "quota",
                        PICK(json_object_get(st, "quota"), "tier", "requestsPerMinute",
                             "requestsPerDay", "ingestEventsPerMinute", "maxTokensPerRequest",
                             "storageBytes", "seatCap", "burstMultiplier"));
    json_object_set_new(receipts, "provisioning",
                        PICK(json_object_get(src_receipts, "provisioning"), "id", "actionType"));
    json_object_set_new(receipts, "quotaAssignment",
                        PICK(json_object_get(src_receipts, "quotaAssignment"), "id", "actionType"));
    body = json_pack("{s:b, s:o, s:o, s:{s:{s:b, s:s}}}", "success", 1, "data", data, "receipts",
                     receipts, "policy", "opa", "allow", json_is_true(json_object_get(opa, "allow")),
                     "decisionId", str_at(opa, "decisionId"));
    return body; /* json_pack stole data and receipts (also on failure) */
out_free:
    json_decref(data);
    json_decref(parts);
    json_decref(receipts);
    return NULL;
}

static tp_problem *failure_problem(json_t *st, const char *state, bool action) {
    const char *reason = str_at(st, "failureReason");
    const char *message = str_at(st, "failureMessage");
    tp_problem *p;
    if (strcmp(state, "DENIED") == 0) {
        json_t *opa = json_object_get(json_object_get(st, "policy"), "opa");
        json_t *reasons = json_object_get(opa, "reasons"), *r;
        size_t i;
        p = tp_problem_new(TP_PROBLEM_POLICY_DENIED, action ? "the tenant action policy denied this request"
                                                            : "the provisioning policy denied this request");
        json_array_foreach(reasons, i, r) if (p && json_is_string(r))
            tp_problem_add_reason(p, json_string_value(r));
        if (p && *str_at(opa, "decisionId"))
            tp_problem_set_string(p, "decisionId", str_at(opa, "decisionId"));
    } else if (action && (strcmp(reason, "INVALID_STATE") == 0 || strcmp(reason, "TENANT_CHANGED") == 0)) {
        /* TENANT_CHANGED: another action changed the tenant under the decision (a conflict too). */
        p = tp_problem_new(TP_PROBLEM_INVALID_STATE, *message ? message : "the tenant's state does not allow this action");
    } else if (action && strcmp(reason, "TENANT_NOT_FOUND") == 0) {
        p = tp_problem_new(TP_PROBLEM_NOT_FOUND, "no such tenant");
    } else if (!action && strcmp(reason, "SLUG_TAKEN") == 0) {
        p = tp_problem_new(TP_PROBLEM_SLUG_TAKEN, *message ? message : "the slug is owned by another tenant");
    } else {
        char detail[640];
        snprintf(detail, sizeof(detail), "%s failed: %s%s%s", action ? "the action" : "provisioning",
                 *reason ? reason : "UNKNOWN", *message ? ": " : "", message);
        p = tp_problem_new(TP_PROBLEM_PROVISIONING_FAILED, detail);
    }
    if (p && *reason)
        tp_problem_set_string(p, "failureReason", reason);
    if (p && *str_at(st, "requestId"))
        tp_problem_set_string(p, "requestId", str_at(st, "requestId"));
    return p;
}

static int outcome(const char *status_json, bool action, int *http_status, char **body_out,
                   bool *problem_out) {
    json_error_t jerr;
    json_t *st = status_json ? json_loads(status_json, 0, &jerr) : NULL;
    const char *state = json_string_value(json_object_get(st, "state"));
    int rc = 0;
    *http_status = 0;
    *body_out = NULL;
    *problem_out = false;
    if (!json_is_object(st) || !state) {
        json_decref(st);
        return TP_EINVAL;
    }
    if (!tp_ingress_state_is_terminal(state))
        goto out;
    if (strcmp(state, "SUCCEEDED") == 0 && action) {
        *body_out = json_dumps(st, JSON_COMPACT | JSON_PRESERVE_ORDER);
        *http_status = 200;
    } else if (strcmp(state, "SUCCEEDED") == 0) {
        json_t *body = success_body(st);
        *body_out = body ? json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
        json_decref(body);
        *http_status = 201;
    } else {
        tp_problem *p = failure_problem(st, state, action);
        *body_out = p ? tp_problem_to_json(p, NULL) : NULL;
        *http_status = p ? tp_problem_status(p) : 500;
        *problem_out = true;
        tp_problem_free(p);
    }
    if (!*body_out) {
        *http_status = 0;
        rc = TP_ENOMEM;
    }
out:
    json_decref(st);
    return rc;
}

int tp_ingress_outcome(const char *status_json, int *http_status, char **body_out,
                       bool *problem_out) {
    return outcome(status_json, false, http_status, body_out, problem_out);
}

int tp_ingress_action_outcome(const char *status_json, int *http_status, char **body_out,
                              bool *problem_out) {
    return outcome(status_json, true, http_status, body_out, problem_out);
}
