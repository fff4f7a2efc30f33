/* problem.c: RFC 9457 problem details (application/problem+json) with a stable type per kind and
 * field-level errors[]; every error answer of tp-ingress is built here. */
#include "tp/error.h"
#include "tp/ingress.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct tp_problem {
    tp_problem_kind kind;
    json_t *obj;    /* the whole problem object */
    json_t *errors; /* borrowed: obj["errors"] */
    size_t n_dropped;
};

typedef struct kind_def {
    int status;
    const char *slug;
    const char *title;
} kind_def;

static const kind_def kinds[TP_PROBLEM_KIND_COUNT_] = {
    [TP_PROBLEM_VALIDATION] = {400, "validation-error", "Request validation failed"},
    [TP_PROBLEM_MALFORMED_JSON] = {400, "malformed-json", "Request body is not valid JSON"},
    [TP_PROBLEM_UNAUTHORIZED] = {401, "unauthorized", "Missing or invalid bearer token"},
    [TP_PROBLEM_FORBIDDEN] = {403, "forbidden", "Caller lacks the required role"},
    [TP_PROBLEM_POLICY_DENIED] = {403, "policy-denied", "Denied by policy"},
    [TP_PROBLEM_NOT_FOUND] = {404, "not-found", "Resource not found"},
    [TP_PROBLEM_METHOD_NOT_ALLOWED] = {405, "method-not-allowed", "Method not allowed"},
    [TP_PROBLEM_SLUG_TAKEN] = {409, "slug-taken", "Slug is owned by another tenant"},
    [TP_PROBLEM_TOO_LARGE] = {413, "payload-too-large", "Request body too large"},
    [TP_PROBLEM_UNSUPPORTED_MEDIA] = {415, "unsupported-media-type",
                                      "Content-Type must be application/json"},
    [TP_PROBLEM_IDEMPOTENCY] = {422, "idempotency-key-reused",
                                "Idempotency-Key reused with a different body"},
    [TP_PROBLEM_UNAVAILABLE] = {503, "service-unavailable", "A dependency is unavailable"},
    [TP_PROBLEM_INTERNAL] = {500, "internal-error", "Internal error"},
    [TP_PROBLEM_PROVISIONING_FAILED] = {500, "provisioning-failed", "Provisioning failed"},
    [TP_PROBLEM_INVALID_STATE] = {409, "invalid-state", "The tenant's state does not allow this action"},
};

static int set_new(json_t *obj, const char *key, json_t *v) {
    if (!v)
        return TP_ENOMEM;
    return json_object_set_new(obj, key, v) == 0 ? 0 : TP_ENOMEM;
}

tp_problem *tp_problem_new(tp_problem_kind kind, const char *detail) {
    if ((unsigned)kind >= TP_PROBLEM_KIND_COUNT_)
        kind = TP_PROBLEM_INTERNAL;
    tp_problem *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->kind = kind;
    p->obj = json_object();
    if (!p->obj)
        goto out_free;
    char type[128];
    snprintf(type, sizeof(type), "%s%s", TP_PROBLEM_TYPE_PREFIX, kinds[kind].slug);
    if (set_new(p->obj, "type", json_string(type)) != 0 ||
        set_new(p->obj, "title", json_string(kinds[kind].title)) != 0 ||
        set_new(p->obj, "status", json_integer(kinds[kind].status)) != 0 ||
        set_new(p->obj, "detail", json_string(detail ? detail : kinds[kind].title)) != 0)
        goto out_free;
    p->errors = json_array();
    if (set_new(p->obj, "errors", p->errors) != 0)
        goto out_free;
    return p;
out_free:
    tp_problem_free(p);
    return NULL;
}

void tp_problem_free(tp_problem *p) {
    if (!p)
        return;
    json_decref(p->obj);
    free(p);
}

int tp_problem_set_detail(tp_problem *p, const char *detail) {
    /* json_string rejects invalid UTF-8; fall back to the title rather than failing. */
    json_t *v = json_string(detail);
    if (!v)
        v = json_string(kinds[p->kind].title);
    return set_new(p->obj, "detail", v);
}

int tp_problem_add_error(tp_problem *p, const char *field, const char *code, const char *message) {
    if (json_array_size(p->errors) >= TP_PROBLEM_ERRORS_MAX) {
        p->n_dropped++;
        return set_new(p->obj, "errorsDropped", json_integer((json_int_t)p->n_dropped));
    }
    json_t *e = json_object();
    if (!e)
        return TP_ENOMEM;
    /* Field names come from untrusted bodies but jansson already checked their UTF-8. */
    json_t *f = json_string(field ? field : "");
    if (!f)
        f = json_string("");
    if (set_new(e, "field", f) != 0 || set_new(e, "code", json_string(code)) != 0 ||
        set_new(e, "message", json_string(message)) != 0 || json_array_append_new(p->errors, e) != 0) {
        json_decref(e);
        return TP_ENOMEM;
    }
    return 0;
}

int tp_problem_set_string(tp_problem *p, const char *key, const char *value) {
    return set_new(p->obj, key, json_string(value));
}

int tp_problem_add_reason(tp_problem *p, const char *reason) {
    json_t *arr = json_object_get(p->obj, "reasons");
    if (!arr) {
        arr = json_array();
        if (set_new(p->obj, "reasons", arr) != 0)
            return TP_ENOMEM;
    }
    json_t *s = json_string(reason);
    if (!s)
        return TP_ENOMEM;
    return json_array_append_new(arr, s) == 0 ? 0 : TP_ENOMEM;
}

int tp_problem_status(const tp_problem *p) { return kinds[p->kind].status; }
tp_problem_kind tp_problem_get_kind(const tp_problem *p) { return p->kind; }
size_t tp_problem_error_count(const tp_problem *p) { return json_array_size(p->errors); }

static const char *error_member(const tp_problem *p, size_t i, const char *key) {
    return json_string_value(json_object_get(json_array_get(p->errors, i), key));
}

const char *tp_problem_error_field(const tp_problem *p, size_t i) { return error_member(p, i, "field"); }
const char *tp_problem_error_code(const tp_problem *p, size_t i) { return error_member(p, i, "code"); }

bool tp_problem_has_error(const tp_problem *p, const char *field, const char *code) {
    for (size_t i = 0; i < tp_problem_error_count(p); i++) {
        const char *f = tp_problem_error_field(p, i), *c = tp_problem_error_code(p, i);
        if (f && strcmp(f, field) == 0 && (!code || (c && strcmp(c, code) == 0)))
            return true;
    }
    return false;
}

char *tp_problem_to_json(const tp_problem *p, size_t *len_out) {
    char *s = json_dumps(p->obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (s && len_out)
        *len_out = strlen(s);
    return s;
}
