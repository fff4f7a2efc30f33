/* store_int.h: declarations private to worker/store (and its unit tests). */
#ifndef TP_STORE_INT_H
#define TP_STORE_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A statement prepared on this connection, found again by its text. */
typedef struct prepared {
    char *sql;
    uint64_t hash;
    char name[16];
} prepared;

/* One connection (store.c; notify.c reads conn). struct pg_conn is libpq's PGconn: declared here
 * without libpq-fe.h so that the unit tests of this folder need no libpq headers. */
#define TP_DB_OWED_MAX 32 /* results a pipeline may owe before the next round trip collects them */

struct tp_db {
    struct pg_conn *conn;
    prepared *stmts; /* named statements of this session; lost with it on a reset */
    int n_stmts;
    bool in_tx;
    bool tx_failed;
    /* Pipeline (store.c): BEGIN not sent yet (it goes out with the transaction's first
     * statement), and the results the server owes for statements sent without waiting, in send
     * order: OWED_STATEMENT, OWED_BEGIN, or the index in stmts of a statement being prepared. */
    bool begin_pending;
    int n_owed;
    int owed[TP_DB_OWED_MAX];
    char sqlstate[6];
    char errmsg[512];
};

#define TP_MIGRATIONS_MAX 256
#define TP_MIGRATION_NAME_MAX 128

typedef struct tp_migration_file {
    int version;
    char name[TP_MIGRATION_NAME_MAX]; /* file name, e.g. "0001_init.sql" */
} tp_migration_file;

/* Parses "<digits>_<rest>.sql": 0 with *version set, TP_EINVAL for any other name. */
int tp_store_parse_migration_name(const char *fname, int *version);

/* Lists the migration files of dir sorted by version (other files ignored). Returns 0,
 * TP_EIO (unreadable dir) or TP_ECONFIG (duplicate version, too many files) with errstr filled. */
int tp_store_list_migrations(const char *dir, tp_migration_file *files, int cap, int *n,
                             char *errstr, size_t errstr_size);

#endif
