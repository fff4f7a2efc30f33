/* validate.c: HTTP JSON body -> tp_request under the rules of DESIGN §4. Every failing field
 * becomes one errors[] entry (JSON pointer, stable code, message); all are collected. */
#include "tp/error.h"
#include "tp/ingress.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define NAME_MIN 2
#define NAME_MAX 100
#define SLUG_MIN 3
#define SLUG_MAX 50
#define SEATS_MIN 1
#define SEATS_MAX 10000

static const char *const known_fields[] = {"name", "slug", "residency", "region", "plan",
                                           "environment", "requestedSeats",
                                           "storageEstimateBytes"};
#define N_KNOWN (sizeof(known_fields) / sizeof(known_fields[0]))

size_t tp_ingress_utf8_len(const char *s, size_t len) {
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80)
            n++;
    return n;
}

/* Writes "/" + key as a JSON pointer token (RFC 6901: ~ -> ~0, / -> ~1), truncated to cap. */
static void json_pointer(char *dst, size_t cap, const char *key) {
    size_t o = 0;
    if (cap < 2)
        return;
    dst[o++] = '/';
    for (const char *k = key; *k && o + 3 < cap; k++) {
        if (*k == '~' || *k == '/') {
            dst[o++] = '~';
            dst[o++] = *k == '~' ? '0' : '1';
        } else {
            dst[o++] = *k;
        }
    }
    /* Never cut a UTF-8 sequence in half: back up over a dangling lead/continuation run. */
    if (o + 3 >= cap) {
        size_t j = o;
        while (j > 1 && ((unsigned char)dst[j - 1] & 0xC0) == 0x80)
            j--;
        if (j > 1 && ((unsigned char)dst[j - 1] & 0x80))
            o = j - 1;
    }
    dst[o] = '\0';
}

static bool is_known(const char *key) {
    for (size_t i = 0; i < N_KNOWN; i++)
        if (strcmp(key, known_fields[i]) == 0)
            return true;
    return false;
}

typedef struct vctx {
    tp_problem *problem;
    int rc; /* TP_ENOMEM sticks */
} vctx;

__attribute__((format(printf, 4, 5)))
static void fail(vctx *v, const char *field, const char *code, const char *fmt, ...) {
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (!v->problem) {
        v->problem = tp_problem_new(TP_PROBLEM_VALIDATION, NULL);
        if (!v->problem) {
            v->rc = TP_ENOMEM;
            return;
        }
    }
    if (tp_problem_add_error(v->problem, field, code, msg) != 0)
        v->rc = TP_ENOMEM;
}

/* Returns the string member or NULL; records "required"/"type" failures. */
static const char *get_string(vctx *v, json_t *obj, const char *key, bool required, size_t *len) {
    char field[64];
    json_t *j = json_object_get(obj, key);
    snprintf(field, sizeof(field), "/%s", key);
    if (!j) {
        if (required)
            fail(v, field, "required", "%s is required", key);
        return NULL;
    }
    if (!json_is_string(j)) {
        fail(v, field, "type", "%s must be a string", key);
        return NULL;
    }
    *len = json_string_length(j);
    return json_string_value(j);
}

static void check_name(vctx *v, json_t *obj, tp_request *out) {
    size_t len = 0;
    const char *s = get_string(v, obj, "name", true, &len);
    if (!s)
        return;
    if (memchr(s, '\0', len)) {
        fail(v, "/name", "pattern", "name must not contain NUL characters");
        return;
    }
    size_t cp = tp_ingress_utf8_len(s, len);
    if (cp < NAME_MIN)
        fail(v, "/name", "too_short", "name must be at least %d characters (got %zu)", NAME_MIN, cp);
    else if (cp > NAME_MAX || tp_copy_field(out->tenant.name, sizeof(out->tenant.name), s, len) != 0)
        fail(v, "/name", "too_long", "name must be at most %d characters (got %zu)", NAME_MAX, cp);
}

static void check_slug(vctx *v, json_t *obj, tp_request *out) {
    size_t len = 0;
    const char *s = get_string(v, obj, "slug", true, &len);
    if (!s)
        return;
    if (len < SLUG_MIN) {
        fail(v, "/slug", "too_short", "slug must be at least %d characters (got %zu)", SLUG_MIN, len);
        return;
    }
    if (len > SLUG_MAX) {
        fail(v, "/slug", "too_long", "slug must be at most %d characters (got %zu)", SLUG_MAX, len);
        return;
    }
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) {
            fail(v, "/slug", "pattern", "slug must match ^[a-z0-9-]+$");
            return;
        }
    }
    tp_copy_field(out->tenant.slug, sizeof(out->tenant.slug), s, len);
}

/* Parses an enum member; returns true when present and valid (value in *out). */
static bool check_enum(vctx *v, json_t *obj, const char *key, bool required, const char *allowed,
                       int (*parse)(const char *, void *), void *out) {
    size_t len = 0;
    const char *s = get_string(v, obj, key, required, &len);
    char field[64];
    if (!s)
        return false;
    snprintf(field, sizeof(field), "/%s", key);
    if (strlen(s) != len || parse(s, out) != 0) {
        fail(v, field, "enum", "%s must be one of %s", key, allowed);
        return false;
    }
    return true;
}

static int parse_residency(const char *s, void *o) { return tp_residency_parse(s, o); }
static int parse_plan(const char *s, void *o) { return tp_plan_parse(s, o); }
static int parse_env(const char *s, void *o) { return tp_environment_parse(s, o); }

static void check_region(vctx *v, json_t *obj, bool has_residency, const char *allowlist,
                         tp_request *out) {
    size_t len = 0;
    bool present = json_object_get(obj, "region") != NULL;
    const char *s = get_string(v, obj, "region", false, &len);
    if (present && !s)
        return; /* type error recorded */
    if (!s) {
        if (!has_residency)
            return;
        s = tp_default_region(out->tenant.residency);
        len = strlen(s);
    } else if (len == 0 || strlen(s) != len) {
        fail(v, "/region", "too_short", "region must not be empty");
        return;
    } else if (len > TP_REGION_MAX) {
        fail(v, "/region", "too_long", "region must be at most %d characters", TP_REGION_MAX);
        return;
    }
    bool ok = true;
    if (has_residency) {
        const char *prefix = out->tenant.residency == TP_RESIDENCY_EU ? "eu-" : "us-";
        if (strncmp(s, prefix, 3) != 0) {
            fail(v, "/region", "residency_mismatch", "region must start with \"%s\" for residency %s",
                 prefix, tp_residency_name(out->tenant.residency));
            ok = false;
        }
    }
    if (!tp_region_in_list(allowlist, s)) {
        fail(v, "/region", "not_allowed", "region %s%.63s is not in the allowed list",
             present ? "" : "(default) ", s);
        ok = false;
    }
    if (ok)
        tp_copy_field(out->tenant.region, sizeof(out->tenant.region), s, len);
}

/* Returns true when present and an integer in [lo, hi]. */
static bool check_int(vctx *v, json_t *obj, const char *key, json_int_t lo, json_int_t hi,
                      json_int_t *out) {
    char field[64];
    json_t *j = json_object_get(obj, key);
    if (!j)
        return false;
    snprintf(field, sizeof(field), "/%s", key);
    if (!json_is_integer(j)) {
        fail(v, field, "type", "%s must be an integer", key);
        return false;
    }
    json_int_t x = json_integer_value(j);
    if (x < lo || x > hi) {
        if (hi == INT64_MAX)
            fail(v, field, "out_of_range", "%s must be >= %lld", key, (long long)lo);
        else
            fail(v, field, "out_of_range", "%s must be between %lld and %lld", key, (long long)lo,
                 (long long)hi);
        return false;
    }
    *out = x;
    return true;
}

static tp_problem *malformed(const json_error_t *jerr) {
    char detail[256];
    snprintf(detail, sizeof(detail), "line %d, column %d: %s", jerr->line, jerr->column, jerr->text);
    tp_problem *p = tp_problem_new(TP_PROBLEM_MALFORMED_JSON, NULL);
    if (!p)
        return NULL;
    if (tp_problem_set_detail(p, detail) != 0 ||
        tp_problem_add_error(p, "", "malformed_json", detail) != 0) {
        tp_problem_free(p);
        return NULL;
    }
    return p;
}

int tp_ingress_parse_body(const char *body, size_t len, tp_source source,
                          const char *region_allowlist_csv, tp_request *out,
                          tp_problem **problem_out) {
    vctx v = {0};
    json_error_t jerr;
    *problem_out = NULL;
    memset(out, 0, sizeof(*out));
    out->source = source;

    json_t *root = json_loadb(body ? body : "", body ? len : 0,
                              JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (!root) {
        *problem_out = malformed(&jerr);
        return *problem_out ? TP_EVALIDATION : TP_ENOMEM;
    }
    if (!json_is_object(root)) {
        fail(&v, "", "type", "the body must be a JSON object");
        goto out_done;
    }

    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (!is_known(key)) {
            char field[128];
            json_pointer(field, sizeof(field), key);
            fail(&v, field, "unknown_field", "unknown field (allowed: name, slug, residency, region, "
                                             "plan, environment, requestedSeats, storageEstimateBytes)");
        }
    }

    check_name(&v, root, out);
    check_slug(&v, root, out);
    bool has_res = check_enum(&v, root, "residency", true, "US, EU", parse_residency,
                              &out->tenant.residency);
    check_region(&v, root, has_res, region_allowlist_csv, out);

    out->plan = source == TP_SOURCE_SELF_SERVE_API ? TP_PLAN_STARTER : TP_PLAN_ENTERPRISE;
    check_enum(&v, root, "plan", false, "FREE, STARTER, PRO, ENTERPRISE", parse_plan, &out->plan);
    out->environment = TP_ENV_PROD;
    check_enum(&v, root, "environment", false, "prod, staging, dev", parse_env, &out->environment);

    json_int_t x;
    if (check_int(&v, root, "requestedSeats", SEATS_MIN, SEATS_MAX, &x)) {
        out->has_requested_seats = true;
        out->requested_seats = (int32_t)x;
    }
    if (check_int(&v, root, "storageEstimateBytes", 0, INT64_MAX, &x)) {
        out->has_storage_estimate = true;
        out->storage_estimate_bytes = (int64_t)x;
    }

out_done:
    json_decref(root);
    if (v.rc != 0) {
        tp_problem_free(v.problem);
        return v.rc;
    }
    if (v.problem) {
        char detail[96];
        snprintf(detail, sizeof(detail), "%zu field error(s); see errors[]",
                 tp_problem_error_count(v.problem));
        if (tp_problem_set_detail(v.problem, detail) != 0) {
            tp_problem_free(v.problem);
            return TP_ENOMEM;
        }
        *problem_out = v.problem;
        return TP_EVALIDATION;
    }
    return 0;
}

/* ---- tenant action bodies --------------------------------------------------------------------- */

int tp_ingress_parse_action_body(const char *body, size_t len, tp_action action, tp_request *out,
                                 tp_problem **problem_out) {
    vctx v = {0};
    json_error_t jerr;
    json_t *root = NULL;
    const char *key;
    json_t *val;
    bool change_plan = action == TP_ACTION_CHANGE_PLAN;
    *problem_out = NULL;
    /* An empty body is an empty object (resume takes none). */
    if (!body || len == 0) {
        root = json_object();
        if (!root)
            return TP_ENOMEM;
    } else {
        root = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
        if (!root) {
            *problem_out = malformed(&jerr);
            return *problem_out ? TP_EVALIDATION : TP_ENOMEM;
        }
    }
    if (!json_is_object(root)) {
        fail(&v, "", "type", "the body must be a JSON object");
        goto out_done;
    }
    json_object_foreach(root, key, val) {
        bool known = strcmp(key, "reason") == 0 ||
                     (change_plan && (strcmp(key, "plan") == 0 || strcmp(key, "requestedSeats") == 0 ||
                                      strcmp(key, "storageEstimateBytes") == 0));
        if (!known) {
            char field[128];
            json_pointer(field, sizeof(field), key);
            fail(&v, field, "unknown_field", "unknown field (allowed: %s)",
                 change_plan ? "plan, requestedSeats, storageEstimateBytes, reason" : "reason");
        }
    }
    if (change_plan) {
        json_int_t x;
        out->has_plan = check_enum(&v, root, "plan", true, "FREE, STARTER, PRO, ENTERPRISE",
                                   parse_plan, &out->plan);
        if (check_int(&v, root, "requestedSeats", SEATS_MIN, SEATS_MAX, &x)) {
            out->has_requested_seats = true;
            out->requested_seats = (int32_t)x;
        }
        if (check_int(&v, root, "storageEstimateBytes", 0, INT64_MAX, &x)) {
            out->has_storage_estimate = true;
            out->storage_estimate_bytes = (int64_t)x;
        }
    }
    {
        size_t rlen = 0;
        const char *r = get_string(&v, root, "reason", action == TP_ACTION_SUSPEND, &rlen);
        if (r && (rlen == 0 || strlen(r) != rlen))
            fail(&v, "/reason", "too_short", "reason must be 1..%d bytes without NUL", TP_REASON_MAX);
        else if (r && tp_copy_field(out->reason, sizeof(out->reason), r, rlen) != 0)
            fail(&v, "/reason", "too_long", "reason must be at most %d bytes", TP_REASON_MAX);
    }
out_done:
    json_decref(root);
    if (v.rc != 0) {
        tp_problem_free(v.problem);
        return v.rc;
    }
    if (v.problem) {
        char detail[96];
        snprintf(detail, sizeof(detail), "%zu field error(s); see errors[]",
                 tp_problem_error_count(v.problem));
        if (tp_problem_set_detail(v.problem, detail) != 0) {
            tp_problem_free(v.problem);
            return TP_ENOMEM;
        }
        *problem_out = v.problem;
        return TP_EVALIDATION;
    }
    return 0;
}
