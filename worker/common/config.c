/* config.c: the configuration table (name, type, default, description), the `key = value`
 * parser and the TP_* environment overrides. */
#include "tp/config.h"
#include "tp/error.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum key_type { KT_STRING, KT_INT, KT_DOUBLE } key_type;

typedef struct key_def {
    const char *name;
    key_type type;
    const char *def;
    const char *doc;
} key_def;

static const key_def key_table[] = {
    {"kafka.bootstrap.servers", KT_STRING, "127.0.0.1:19092", "Kafka bootstrap servers"},
    {"pg.dsn", KT_STRING, "host=127.0.0.1 port=15432 dbname=tp user=tp", "libpq connection string"},
    {"pg.connect_timeout_s", KT_INT, "5", "bound on opening a PostgreSQL connection (0: none)"},
    {"pg.statement_timeout_ms", KT_INT, "15000", "server-side bound on one statement (0: none)"},
    {"pg.lock_timeout_ms", KT_INT, "5000", "bound on waiting for a lock (0: none)"},
    {"pg.idle_in_transaction_timeout_ms", KT_INT, "30000",
     "the server ends a session idle inside a transaction this long (0: never)"},
    {"pg.keepalives_idle_s", KT_INT, "10", "TCP keepalive: idle seconds before the first probe"},
    {"pg.keepalives_interval_s", KT_INT, "5", "TCP keepalive: seconds between probes"},
    {"pg.keepalives_count", KT_INT, "3", "TCP keepalive: lost probes before the connection is dead"},
    {"pg.tcp_user_timeout_ms", KT_INT, "15000", "bound on unacknowledged data on the socket (0: none)"},
    {"opa.url", KT_STRING, "http://127.0.0.1:18181", "OPA server base URL"},
    {"opa.timeout_ms", KT_INT, "2000", "total timeout of one OPA decision call"},
    {"topic.requests", KT_STRING, "tenant.provisioning.requests.v1", "requests topic"},
    {"topic.receipts", KT_STRING, "tenant.provenance.receipts.v1", "receipts topic"},
    {"topic.dlq", KT_STRING, "tenant.provisioning.dlq.v1", "dead-letter topic"},
    {"topic.checkpoints", KT_STRING, "tenant.provenance.checkpoints.v1",
     "signed checkpoints of the transparency log over all receipts"},
    {"tlog.origin", KT_STRING, "tenant-provisioner.dev/receipts",
     "the log's origin line and the checkpoint signature's key name (one per deployment)"},
    {"tlog.checkpoint_interval_ms", KT_INT, "1000",
     "the relay signs a checkpoint after publishing receipts, at most once per this long"},
    {"worker.group_id", KT_STRING, "tp-worker", "consumer group of tp-worker"},
    {"worker.inflight_max", KT_INT, "512", "requests in flight before partitions are paused"},
    {"worker.db_pool_size", KT_INT, "4", "PostgreSQL connections of the stage runner"},
    {"worker.shutdown_grace_ms", KT_INT, "20000", "SIGTERM drain budget"},
    {"worker.http_listen", KT_STRING, "127.0.0.1:9464",
     "ip:port ([v6]:port) of tp-worker's GET /metrics, /healthz, /readyz (port 0: any; empty: off)"},
    {"worker.probe_timeout_ms", KT_INT, "1000",
     "bound on each /healthz and /readyz check (loop ping, Kafka, PostgreSQL, OPA)"},
    {"worker.revoke_timeout_ms", KT_INT, "10000",
     "bound on a revoke's wait for the partitions' running work; past it that work is abandoned "
     "(its offsets never stored, its records redelivered to the next owner) (0: no bound)"},
    {"outbox.retry_max_ms", KT_INT, "5000",
     "largest delay before the outbox relay retries after a failure (it has no polling tick)"},
    {"outbox.claim_check_ms", KT_INT, "10000",
     "a relay holding fewer than all outbox slots looks for freed ones this often (0: never)"},
    {"outbox.mark_delay_ms", KT_INT, "0",
     "tests only: the relay marks a delivered receipt this long after its ack (0 in service)"},
    {"retry.initial_ms", KT_INT, "200", "first backoff of a transient stage failure"},
    {"retry.multiplier", KT_DOUBLE, "2.0", "backoff growth per attempt"},
    {"retry.cap_ms", KT_INT, "5000", "largest backoff"},
    {"retry.max_attempts", KT_INT, "8", "attempts per stage before the request fails"},
    {"retry.max_elapsed_ms", KT_INT, "120000",
     "and time since the stage's first attempt before it fails (0: attempts alone)"},
    {"store.migrations_dir", KT_STRING, "schemas/sql", "SQL migrations applied at start"},
    {"codec.schema_dir", KT_STRING, "schemas/avro", "Avro schemas (.avsc)"},
    {"quota.tiers_file", KT_STRING, "config/quota-tiers.json", "quota tiers (also given to OPA)"},
    {"policy.region_allowlist", KT_STRING, "us-east-1,us-west-2,eu-central-1,eu-west-1",
     "regions a tenant may be placed in"},
    {"policy.max_tenants_per_user", KT_INT, "3", "tenants one user may own through self-serve"},
    {"codec.confluent_schema_ids", KT_STRING, "",
     "Confluent schema ids accepted for ProvisioningRequest, comma separated"},
    {"receipts.signing_key_file", KT_STRING, ".stack/keys/receipts.key", "Ed25519 private key"},
    {"receipts.keyset_file", KT_STRING, ".stack/keys/receipts.keyset", "public keys that verify"},
    {"ingress.listen_host", KT_STRING, "127.0.0.1",
     "IPv4 address tp-ingress listens on (0.0.0.0 in a container)"},
    {"ingress.listen_port", KT_INT, "8080", "HTTP port of tp-ingress"},
    {"ingress.body_limit", KT_INT, "65536", "largest accepted request body in bytes"},
    {"ingress.inflight_max", KT_INT, "256", "requests handled at once; past it 503 + Retry-After"},
    {"ingress.produce_timeout_ms", KT_INT, "3000", "bound on waiting for a delivery report (503 after it)"},
    {"jwt.alg", KT_STRING, "HS256", "HS256, RS256 or ES256"},
    {"jwt.key_file", KT_STRING, ".stack/keys/jwt.secret", "HS256 secret or RS256/ES256 public key"},
    {"jwt.issuer", KT_STRING, "tp-dev", "required iss (empty: not checked)"},
    {"jwt.audience", KT_STRING, "tenant-provisioner", "required aud (empty: not checked)"},
    {"jwt.roles_claim", KT_STRING, "roles", "claim holding the caller's roles"},
    {"jwt.admin_role", KT_STRING, "admin", "role that may use the admin endpoint"},
    {"jwt.leeway_s", KT_INT, "30", "clock leeway for exp and nbf"},
};
#define N_KEYS (sizeof(key_table) / sizeof(key_table[0]))

typedef struct kv {
    char *key;
    char *value;
} kv;

struct tp_config {
    kv *items;
    size_t n, cap;
};

static const key_def *find_def(const char *key) {
    for (size_t i = 0; i < N_KEYS; i++)
        if (strcmp(key_table[i].name, key) == 0)
            return &key_table[i];
    return NULL;
}

static kv *find_kv(const tp_config *cfg, const char *key) {
    for (size_t i = 0; i < cfg->n; i++)
        if (strcmp(cfg->items[i].key, key) == 0)
            return &cfg->items[i];
    return NULL;
}

static int put(tp_config *cfg, const char *key, const char *value) {
    kv *item = find_kv(cfg, key);
    char *v = strdup(value);
    if (!v)
        return TP_ENOMEM;
    if (item) {
        free(item->value);
        item->value = v;
        return 0;
    }
    if (cfg->n == cfg->cap) {
        size_t ncap = cfg->cap ? cfg->cap * 2 : 64;
        kv *nitems = realloc(cfg->items, ncap * sizeof(*nitems));
        if (!nitems) {
            free(v);
            return TP_ENOMEM;
        }
        cfg->items = nitems;
        cfg->cap = ncap;
    }
    cfg->items[cfg->n].key = strdup(key);
    if (!cfg->items[cfg->n].key) {
        free(v);
        return TP_ENOMEM;
    }
    cfg->items[cfg->n].value = v;
    cfg->n++;
    return 0;
}

tp_config *tp_config_new(void) {
    tp_config *cfg = calloc(1, sizeof(*cfg));
    if (!cfg)
        return NULL;
    for (size_t i = 0; i < N_KEYS; i++) {
        if (put(cfg, key_table[i].name, key_table[i].def) != 0) {
            tp_config_free(cfg);
            return NULL;
        }
    }
    return cfg;
}

void tp_config_free(tp_config *cfg) {
    if (!cfg)
        return;
    for (size_t i = 0; i < cfg->n; i++) {
        free(cfg->items[i].key);
        free(cfg->items[i].value);
    }
    free(cfg->items);
    free(cfg);
}

static bool parse_int(const char *s, int64_t *out) {
    char *end;
    long long v;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno || end == s || *end != '\0')
        return false;
    *out = v;
    return true;
}

static bool parse_double(const char *s, double *out) {
    char *end;
    double v;
    errno = 0;
    v = strtod(s, &end);
    if (errno || end == s || *end != '\0')
        return false;
    *out = v;
    return true;
}

int tp_config_set(tp_config *cfg, const char *key, const char *value, char *errstr, size_t errstr_size) {
    const key_def *def = find_def(key);
    int64_t iv;
    double dv;
    if (!def && strncmp(key, "kafka.", 6) != 0) {
        snprintf(errstr, errstr_size, "unknown configuration key \"%s\"", key);
        return TP_ECONFIG;
    }
    if (def && def->type == KT_INT && !parse_int(value, &iv)) {
        snprintf(errstr, errstr_size, "%s: \"%s\" is not an integer", key, value);
        return TP_ECONFIG;
    }
    if (def && def->type == KT_DOUBLE && !parse_double(value, &dv)) {
        snprintf(errstr, errstr_size, "%s: \"%s\" is not a number", key, value);
        return TP_ECONFIG;
    }
    if (put(cfg, key, value) != 0) {
        snprintf(errstr, errstr_size, "out of memory");
        return TP_ENOMEM;
    }
    return 0;
}

static char *trim(char *s) {
    char *end;
    while (isspace((unsigned char)*s))
        s++;
    end = s + strlen(s);
    while (end > s && isspace((unsigned char)end[-1]))
        *--end = '\0';
    return s;
}

int tp_config_parse(tp_config *cfg, const char *buf, size_t len, char *errstr, size_t errstr_size) {
    size_t pos = 0;
    int lineno = 0;
    while (pos < len) {
        char line[4096], *eq, *key, *value;
        size_t start = pos, n;
        while (pos < len && buf[pos] != '\n')
            pos++;
        n = pos - start;
        pos++; /* past '\n' */
        lineno++;
        if (n >= sizeof(line)) {
            snprintf(errstr, errstr_size, "line %d: longer than %zu bytes", lineno, sizeof(line) - 1);
            return TP_ECONFIG;
        }
        memcpy(line, buf + start, n);
        line[n] = '\0';
        if (memchr(line, '\0', n)) {
            snprintf(errstr, errstr_size, "line %d: contains a NUL byte", lineno);
            return TP_ECONFIG;
        }
        key = trim(line);
        if (*key == '\0' || *key == '#')
            continue;
        eq = strchr(key, '=');
        if (!eq) {
            snprintf(errstr, errstr_size, "line %d: expected `key = value`", lineno);
            return TP_ECONFIG;
        }
        *eq = '\0';
        value = trim(eq + 1);
        key = trim(key);
        if (*key == '\0') {
            snprintf(errstr, errstr_size, "line %d: empty key", lineno);
            return TP_ECONFIG;
        }
        if (tp_config_set(cfg, key, value, errstr, errstr_size) != 0) {
            char tmp[256];
            snprintf(tmp, sizeof(tmp), "%s", errstr);
            snprintf(errstr, errstr_size, "line %d: %s", lineno, tmp);
            return TP_ECONFIG;
        }
    }
    return 0;
}

int tp_read_file(const char *path, size_t max, char **out, size_t *out_len) {
    FILE *f = fopen(path, "rb");
    char *buf;
    size_t n;
    if (!f)
        return TP_EIO;
    buf = malloc(max + 1);
    if (!buf) {
        fclose(f);
        return TP_ENOMEM;
    }
    n = fread(buf, 1, max + 1, f);
    if (ferror(f)) {
        fclose(f);
        free(buf);
        return TP_EIO;
    }
    fclose(f);
    if (n > max) {
        free(buf);
        return TP_EDECODE_TOO_LARGE;
    }
    buf[n] = '\0';
    *out = buf;
    if (out_len)
        *out_len = n;
    return 0;
}

int tp_config_load_file(tp_config *cfg, const char *path, char *errstr, size_t errstr_size) {
    char *buf;
    size_t len;
    int rc = tp_read_file(path, 1 << 20, &buf, &len);
    if (rc != 0) {
        snprintf(errstr, errstr_size, "%s: cannot read (%s)", path, tp_strerror(rc));
        return rc;
    }
    rc = tp_config_parse(cfg, buf, len, errstr, errstr_size);
    free(buf);
    return rc;
}

static void env_name(const char *key, char *out, size_t cap) {
    size_t o = snprintf(out, cap, "TP_");
    for (; *key && o + 1 < cap; key++)
        out[o++] = (*key == '.') ? '_' : (char)toupper((unsigned char)*key);
    out[o] = '\0';
}

int tp_config_apply_env(tp_config *cfg, char *errstr, size_t errstr_size) {
    const char *v = getenv("TP_KAFKA_BOOTSTRAP");
    if (v && *v && tp_config_set(cfg, "kafka.bootstrap.servers", v, errstr, errstr_size) != 0)
        return TP_ECONFIG;
    for (size_t i = 0; i < N_KEYS; i++) {
        char name[128];
        env_name(key_table[i].name, name, sizeof(name));
        v = getenv(name);
        if (v && tp_config_set(cfg, key_table[i].name, v, errstr, errstr_size) != 0)
            return TP_ECONFIG;
    }
    return 0;
}

const char *tp_config_get(const tp_config *cfg, const char *key) {
    kv *item = find_kv(cfg, key);
    return item ? item->value : "";
}

int64_t tp_config_get_int(const tp_config *cfg, const char *key) {
    int64_t v = 0;
    (void)parse_int(tp_config_get(cfg, key), &v);
    return v;
}

double tp_config_get_double(const tp_config *cfg, const char *key) {
    double v = 0;
    (void)parse_double(tp_config_get(cfg, key), &v);
    return v;
}

void tp_config_foreach(const tp_config *cfg, const char *prefix,
                       void (*fn)(const char *key, const char *value, void *opaque), void *opaque) {
    size_t plen = strlen(prefix);
    for (size_t i = 0; i < cfg->n; i++)
        if (strncmp(cfg->items[i].key, prefix, plen) == 0)
            fn(cfg->items[i].key, cfg->items[i].value, opaque);
}

void tp_config_print_help(void) {
    for (size_t i = 0; i < N_KEYS; i++) {
        char name[128];
        env_name(key_table[i].name, name, sizeof(name));
        printf("  %-28s %-32s %s (default \"%s\")\n", key_table[i].name, name, key_table[i].doc,
               key_table[i].def);
    }
}
