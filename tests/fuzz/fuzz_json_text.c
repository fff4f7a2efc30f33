/* fuzz_json_text.c: libFuzzer differential target for tp_json_text against jansson's json_dumps:
 * whatever json_loadb reads (any root, NULs in strings), both write with JSON_COMPACT, with and
 * without JSON_SORT_KEYS, with and without JSON_ENCODE_ANY, and the bytes (or the refusal) must be
 * the same. Receipts are signed over these bytes. Seeds: tests/fuzz/corpus/json_text/. */
#include "tp/json_text.h"

#include <jansson.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void compare(const json_t *v, unsigned flags) {
    size_t jflags = JSON_COMPACT;
    if (flags & TP_JSON_SORT_KEYS)
        jflags |= JSON_SORT_KEYS;
    if (flags & TP_JSON_ANY_ROOT)
        jflags |= JSON_ENCODE_ANY;
    char *theirs = json_dumps(v, jflags);
    size_t len = 0;
    char *ours = tp_json_text(v, flags, &len);
    if (!theirs != !ours)
        abort();
    if (theirs && (len != strlen(theirs) || memcmp(ours, theirs, len + 1) != 0))
        abort();
    free(theirs);
    free(ours);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    json_t *v = json_loadb((const char *)data, size, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    if (!v)
        return 0;
    compare(v, 0);
    compare(v, TP_JSON_SORT_KEYS);
    compare(v, TP_JSON_ANY_ROOT);
    compare(v, TP_JSON_ANY_ROOT | TP_JSON_SORT_KEYS);
    json_decref(v);
    return 0;
}
