/* pgtest.h: helpers for integration tests on the local stack's PostgreSQL: read the stack's
 * variables, create and drop a scratch database per test, run one-value queries. */
#ifndef TP_PGTEST_H
#define TP_PGTEST_H

#include <stddef.h>
#include <stdint.h>

#include "tp/store.h"

/* The value of a stack variable (TP_PG_DSN, TP_OPA_URL, TP_KAFKA_BOOTSTRAP): the environment
 * first, then .stack/env of the working directory (the repo root under ctest). NULL when unset.
 * The string is static storage (environment or a private copy). */
const char *pgtest_env(const char *name);

/* Rewrites a DSN (URI or key=value form) to point at another database; 0 or -1 (too long). */
int pgtest_dsn_with_db(const char *base_dsn, const char *dbname, char *out, size_t out_size);

/* A scratch database on the server of TP_PG_DSN. */
typedef struct pgtest_db {
    char name[64];
    char dsn[1024];
} pgtest_db;

/* Creates tp_t_<random>; 0, or -1 with a message on stderr (TP_PG_DSN missing, server down). */
int pgtest_create(pgtest_db *t);
/* Creates the database and applies schemas/sql into it; 0 or -1. */
int pgtest_create_migrated(pgtest_db *t);
/* Drops it (WITH (FORCE)); 0 or -1. */
int pgtest_drop(pgtest_db *t);

/* Runs a query returning one row of one column. Return 0 or a TP_E code; *out = -1 / "" for
 * no row or NULL. */
int pgtest_query_int(tp_db *db, const char *sql, int64_t *out);
int pgtest_query_text(tp_db *db, const char *sql, char *buf, size_t buf_size);
/* Same with text parameters. */
int pgtest_query_int_p(tp_db *db, const char *sql, int nparams, const char *const *params, int64_t *out);

#endif
