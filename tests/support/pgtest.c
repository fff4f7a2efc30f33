/* pgtest.c: scratch PostgreSQL databases and one-value queries for integration tests. Each test
 * gets its own database on the stack's server so parallel tests never collide. */
#include "support/pgtest.h"
#include "tp/error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char env_cache[8][2][1024];
static int env_cached;

const char *pgtest_env(const char *name) {
    const char *v = getenv(name);
    FILE *f;
    char line[1200];
    if (v && *v)
        return v;
    for (int i = 0; i < env_cached; i++)
        if (strcmp(env_cache[i][0], name) == 0)
            return env_cache[i][1];
    f = fopen(".stack/env", "r");
    if (!f)
        return NULL;
    while (fgets(line, sizeof(line), f)) {
        char *eq = strchr(line, '=');
        size_t n;
        if (!eq)
            continue;
        *eq = '\0';
        if (strncmp(line, "export ", 7) == 0)
            memmove(line, line + 7, strlen(line + 7) + 1);
        if (strcmp(line, name) != 0 || env_cached >= 8)
            continue;
        n = strlen(eq + 1);
        while (n > 0 && (eq[n] == '\n' || eq[n] == '\r'))
            eq[n--] = '\0';
        snprintf(env_cache[env_cached][0], sizeof(env_cache[0][0]), "%s", name);
        snprintf(env_cache[env_cached][1], sizeof(env_cache[0][1]), "%s", eq + 1);
        fclose(f);
        return env_cache[env_cached++][1];
    }
    fclose(f);
    return NULL;
}

int pgtest_dsn_with_db(const char *base, const char *dbname, char *out, size_t out_size) {
    int w;
    if (strncmp(base, "postgresql://", 13) == 0 || strncmp(base, "postgres://", 11) == 0) {
        const char *host = strstr(base, "://") + 3;
        const char *slash = strchr(host, '/');
        const char *query = strchr(host, '?');
        size_t hostlen;
        if (query && slash && slash > query)
            slash = NULL;
        hostlen = slash ? (size_t)(slash - base) : (query ? (size_t)(query - base) : strlen(base));
        w = snprintf(out, out_size, "%.*s/%s%s", (int)hostlen, base, dbname, query ? query : "");
    } else {
        w = snprintf(out, out_size, "%s dbname=%s", base, dbname);
    }
    return (w < 0 || (size_t)w >= out_size) ? -1 : 0;
}

static int admin_exec(const char *sql) {
    const char *base = pgtest_env("TP_PG_DSN");
    char err[512];
    tp_db *db = NULL;
    int rc;
    if (!base) {
        fprintf(stderr, "pgtest: TP_PG_DSN is not set and .stack/env has none: run scripts/stack up\n");
        return -1;
    }
    if (tp_db_connect(base, &db, err, sizeof(err)) != 0) {
        fprintf(stderr, "pgtest: %s\n", err);
        return -1;
    }
    rc = tp_db_exec(db, sql, 0, NULL, NULL);
    if (rc != 0)
        fprintf(stderr, "pgtest: %s: %s\n", sql, tp_db_errmsg(db));
    tp_db_close(db);
    return rc == 0 ? 0 : -1;
}

int pgtest_create(pgtest_db *t) {
    char sql[160];
    unsigned seed;
    const char *base = pgtest_env("TP_PG_DSN");
    FILE *r = fopen("/dev/urandom", "rb");
    if (!r || fread(&seed, sizeof(seed), 1, r) != 1)
        seed = (unsigned)time(NULL) ^ (unsigned)getpid();
    if (r)
        fclose(r);
    memset(t, 0, sizeof(*t));
    snprintf(t->name, sizeof(t->name), "tp_t_%d_%08x", (int)getpid(), seed);
    if (!base) {
        fprintf(stderr, "pgtest: TP_PG_DSN is not set and .stack/env has none: run scripts/stack up\n");
        return -1;
    }
    if (pgtest_dsn_with_db(base, t->name, t->dsn, sizeof(t->dsn)) != 0)
        return -1;
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s", t->name);
    return admin_exec(sql);
}

int pgtest_create_migrated(pgtest_db *t) {
    char err[512];
    tp_db *db = NULL;
    int rc;
    if (pgtest_create(t) != 0)
        return -1;
    if (tp_db_connect(t->dsn, &db, err, sizeof(err)) != 0) {
        fprintf(stderr, "pgtest: %s\n", err);
        return -1;
    }
    rc = tp_store_migrate(db, "schemas/sql", err, sizeof(err));
    if (rc != 0)
        fprintf(stderr, "pgtest: migrate: %s\n", err);
    tp_db_close(db);
    return rc == 0 ? 0 : -1;
}

int pgtest_drop(pgtest_db *t) {
    char sql[160];
    if (!t->name[0])
        return 0;
    snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", t->name);
    return admin_exec(sql);
}

int pgtest_query_int_p(tp_db *db, const char *sql, int nparams, const char *const *params,
                       int64_t *out) {
    tp_res *res = NULL;
    int rc = tp_db_query(db, sql, nparams, params, &res);
    *out = -1;
    if (rc != 0) {
        fprintf(stderr, "pgtest: %s: %s\n", sql, tp_db_errmsg(db));
        return rc;
    }
    if (tp_res_nrows(res) > 0 && tp_res_get_int64(res, 0, 0, out) != 0)
        *out = -1;
    tp_res_free(res);
    return 0;
}

int pgtest_query_int(tp_db *db, const char *sql, int64_t *out) {
    return pgtest_query_int_p(db, sql, 0, NULL, out);
}

int pgtest_query_text(tp_db *db, const char *sql, char *buf, size_t buf_size) {
    int rc = tp_db_query_text(db, sql, 0, NULL, buf, buf_size, NULL);
    if (rc != 0)
        fprintf(stderr, "pgtest: %s: %s\n", sql, tp_db_errmsg(db));
    return rc;
}
