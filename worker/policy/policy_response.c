/* policy_response.c: the pure mapping from OPA's answer (untrusted bytes) to a tp_policy_decision.
 * Fail-closed: anything short of a well-formed allow is a deny, and nothing is copied unbounded. */
#include "tp/policy.h"
#include "tp/error.h"

#include <jansson.h>
#include <string.h>

/* Copies at most cap - 1 bytes of src, cut back to a UTF-8 character boundary. */
static void copy_bounded(char *dst, size_t cap, const char *src, size_t len) {
    if (len >= cap) {
        len = cap - 1;
        while (len > 0 && ((unsigned char)src[len] & 0xC0) == 0x80)
            len--; /* src[len] would start the cut: never leave half a character */
    }
    memcpy(dst, src, len);
    dst[len] = '\0';
}

static void add_reason(tp_policy_decision *out, const char *reason, size_t len) {
    if (out->n_reasons >= TP_POLICY_REASONS_MAX)
        return;
    copy_bounded(out->reasons[out->n_reasons++], sizeof(out->reasons[0]), reason, len);
}

static void add_code(tp_policy_decision *out, const char *code) { add_reason(out, code, strlen(code)); }

/* Copies an optional string field that must fit whole (an id cut short would be a wrong id). */
static void copy_id(char *dst, size_t cap, json_t *val) {
    dst[0] = '\0';
    if (json_is_string(val) && json_string_length(val) < cap)
        memcpy(dst, json_string_value(val), json_string_length(val) + 1);
}

/* Keeps the string reasons in order; when more than fit, the last slot says so. */
static void copy_reasons(tp_policy_decision *out, json_t *reasons) {
    size_t i, total = 0, keep;
    json_t *item;
    json_array_foreach(reasons, i, item) total += json_is_string(item);
    keep = total > TP_POLICY_REASONS_MAX ? TP_POLICY_REASONS_MAX - 1 : total;
    json_array_foreach(reasons, i, item) {
        if ((size_t)out->n_reasons >= keep)
            break;
        if (json_is_string(item))
            add_reason(out, json_string_value(item), json_string_length(item));
    }
    if (total > TP_POLICY_REASONS_MAX)
        add_code(out, "REASONS_TRUNCATED");
}

int tp_policy_parse_response(const char *body, size_t len, tp_policy_decision *out) {
    json_t *root, *result, *allow, *reasons;
    json_error_t jerr;
    memset(out, 0, sizeof(*out));
    if (!body)
        return TP_EOPA_BAD_RESPONSE;
    root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(root)) {
        json_decref(root);
        return TP_EOPA_BAD_RESPONSE;
    }
    copy_id(out->decision_id, sizeof(out->decision_id), json_object_get(root, "decision_id"));
    result = json_object_get(root, "result");
    if (!json_is_object(result)) {
        add_code(out, "NO_RESULT");
        goto out;
    }
    copy_id(out->policy_revision, sizeof(out->policy_revision), json_object_get(result, "revision"));
    allow = json_object_get(result, "allow");
    reasons = json_object_get(result, "reasons");
    if (!json_is_boolean(allow) || (reasons && !json_is_array(reasons))) {
        add_code(out, "MALFORMED_RESULT");
        goto out;
    }
    copy_reasons(out, reasons);
    if (json_is_true(allow)) {
        if (json_array_size(reasons) == 0) {
            out->allow = true;
            goto out;
        }
        /* allow with reasons contradicts itself: keep the reasons, deny. */
        if (out->n_reasons < TP_POLICY_REASONS_MAX)
            add_code(out, "MALFORMED_RESULT");
    }
out:
    json_decref(root);
    return 0;
}
