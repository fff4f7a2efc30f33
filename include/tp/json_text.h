/* json_text.h: compact JSON text of a jansson tree, byte for byte what jansson 2.14's
 * json_dumps(v, JSON_COMPACT [| JSON_SORT_KEYS]) writes, in a fraction of its instructions (no
 * loop-detection table, no per-character UTF-8 decoding, one growing buffer). Pure; any thread. */
#ifndef TP_JSON_TEXT_H
#define TP_JSON_TEXT_H

#include <stddef.h>

/* jansson's node type, declared only: include/tp/ carries no vendor headers. */
struct json_t;

/* Object members in byte order of their keys (JSON_SORT_KEYS); without it, in insertion order,
 * as jansson 2.14 keeps them. */
#define TP_JSON_SORT_KEYS 0x1u
/* Any value may be the root (JSON_ENCODE_ANY); without it, a root that is neither an object nor
 * an array gives NULL, as json_dumps does. */
#define TP_JSON_ANY_ROOT 0x2u

/* Containers nested deeper than this give NULL (jansson's parser refuses deeper documents, so
 * every parsed tree fits; a tree built with a cycle in it fails here instead of looping). */
#define TP_JSON_TEXT_MAX_DEPTH 2048

/* Returns the compact JSON text of value, malloc'd and NUL-terminated (the caller frees it with
 * free()), and stores its length in *len_out when len_out is not NULL. Returns NULL (and stores 0)
 * when value is NULL, when the root is not an object or array and TP_JSON_ANY_ROOT is not set,
 * on a string or key that is not valid UTF-8 (only jansson's *_nocheck setters make one; jansson
 * fails there too, except for a key with JSON_SORT_KEYS, where it writes broken text), a real
 * that is not finite (json_real refuses those), nesting deeper than TP_JSON_TEXT_MAX_DEPTH, or
 * out of memory.
 * Where jansson succeeds and this does too, the bytes are identical; reals are written with a '.'
 * whatever the locale (jansson agrees in every locale whose decimal point is one byte). value is
 * borrowed and must not change while this runs. */
char *tp_json_text(const struct json_t *value, unsigned flags, size_t *len_out);

#endif
