/* config.h: the one configuration table of tenant-provisioner.
 * A file of `key = value` lines; every known key has a type, a default and a description (the table
 * in worker/common/config.c is the documentation); `kafka.*` keys go to librdkafka unchanged.
 * Each key can be overridden by the environment: TP_ + upper-case key with '.' as '_'
 * (pg.dsn -> TP_PG_DSN), plus TP_KAFKA_BOOTSTRAP for kafka.bootstrap.servers. */
#ifndef TP_CONFIG_H
#define TP_CONFIG_H

#include <stddef.h>
#include <stdint.h>

typedef struct tp_config tp_config;

/* Returns a new config holding every default; NULL on out of memory. */
tp_config *tp_config_new(void);
void tp_config_free(tp_config *cfg);

/* Parses `key = value` lines from buf (untrusted). Unknown keys, bad values and malformed lines
 * are errors naming the line. Returns 0 or TP_ECONFIG with errstr filled. */
int tp_config_parse(tp_config *cfg, const char *buf, size_t len, char *errstr, size_t errstr_size);
/* Reads and parses a file; returns 0, TP_EIO or TP_ECONFIG (errstr filled). */
int tp_config_load_file(tp_config *cfg, const char *path, char *errstr, size_t errstr_size);
/* Applies TP_* environment overrides; returns 0 or TP_ECONFIG. */
int tp_config_apply_env(tp_config *cfg, char *errstr, size_t errstr_size);
/* Sets one key after checking its type; returns 0 or TP_ECONFIG. */
int tp_config_set(tp_config *cfg, const char *key, const char *value, char *errstr, size_t errstr_size);

/* Returns the value of a key ("" when unset); the string lives as long as the config. */
const char *tp_config_get(const tp_config *cfg, const char *key);
int64_t tp_config_get_int(const tp_config *cfg, const char *key);
double tp_config_get_double(const tp_config *cfg, const char *key);

/* Calls fn for every set key that starts with prefix (e.g. "kafka."). */
void tp_config_foreach(const tp_config *cfg, const char *prefix,
                       void (*fn)(const char *key, const char *value, void *opaque), void *opaque);

/* Prints the table of known keys (name, default, description) to stdout. */
void tp_config_print_help(void);

/* Reads a whole file (secrets, key files) into a new NUL-terminated buffer, at most max bytes.
 * Returns 0, TP_EIO or TP_EDECODE_TOO_LARGE; the caller frees *out. */
int tp_read_file(const char *path, size_t max, char **out, size_t *out_len);

#endif
