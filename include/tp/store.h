/* store.h: PostgreSQL access for every component without exposing libpq: one connection per
 * tp_db, transactions, parameterised statements, a small result API and migrations.
 * SQLSTATEs are translated here: transient (connection lost, 40001, 40P01, 57P01...) → TP_EDB,
 * everything else → TP_EDB_PERMANENT; tp_db_sqlstate() tells which one it was. */
#ifndef TP_STORE_H
#define TP_STORE_H

#include "tp/config.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct tp_db tp_db;
typedef struct tp_res tp_res;

/* The deadlines of one connection (DESIGN §9: every wait has a setting). 0 leaves a bound out.
 * Applied at connect and kept across reconnects: connect_timeout, TCP keepalives and
 * tcp_user_timeout as libpq parameters; statement_timeout, lock_timeout and
 * idle_in_transaction_session_timeout as session settings (`options=-c ...`). A statement stopped
 * by them fails with 57014 or 55P03: TP_EDB, transient. Anything the DSN (or PGOPTIONS) sets
 * explicitly wins over these. */
typedef struct tp_db_opts {
    int connect_timeout_s;     /* pg.connect_timeout_s (5) */
    int statement_timeout_ms;  /* pg.statement_timeout_ms (15000) */
    int lock_timeout_ms;       /* pg.lock_timeout_ms (5000) */
    int idle_in_tx_timeout_ms; /* pg.idle_in_transaction_timeout_ms (30000) */
    int keepalives_idle_s;     /* pg.keepalives_idle_s (10) */
    int keepalives_interval_s; /* pg.keepalives_interval_s (5) */
    int keepalives_count;      /* pg.keepalives_count (3) */
    int tcp_user_timeout_ms;   /* pg.tcp_user_timeout_ms (15000) */
} tp_db_opts;

/* Fills opts with the defaults of the config table. */
void tp_db_opts_default(tp_db_opts *opts);
/* Fills opts from the pg.* keys of cfg (negative values count as 0). */
void tp_db_opts_from_config(tp_db_opts *opts, const tp_config *cfg);

/* Opens one connection (libpq DSN, URI or database name) with the deadlines of opts (NULL: the
 * defaults). A tp_db belongs to one thread at a time; different tp_db may be used from different
 * threads concurrently. Returns 0 with *out set, or TP_EDB (unreachable) / TP_ENOMEM / TP_ECONFIG
 * (unparsable DSN) with errstr filled. */
int tp_db_connect_opts(const char *dsn, const tp_db_opts *opts, tp_db **out, char *errstr,
                       size_t errstr_size);
/* As tp_db_connect_opts with pg.dsn and the pg.* deadlines of cfg: what daemons and tpctl call. */
int tp_db_connect_cfg(const tp_config *cfg, tp_db **out, char *errstr, size_t errstr_size);
/* As tp_db_connect_opts with the default deadlines. */
int tp_db_connect(const char *dsn, tp_db **out, char *errstr, size_t errstr_size);
/* Closes the connection and frees the handle; NULL is allowed. */
void tp_db_close(tp_db *db);

/* Checks the connection with a trivial query, reconnecting once when it is broken.
 * Returns 0 or TP_EDB. */
int tp_db_ping(tp_db *db);
/* As tp_db_ping with a client-side deadline of timeout_ms for the answer (a frozen server never
 * lets statement_timeout fire); for readiness probes. On timeout the connection is dropped (the
 * next call reconnects). Returns 0, TP_EDB, or TP_EINVAL inside a transaction. */
int tp_db_ping_within(tp_db *db, int timeout_ms);

/* Transactions. begin fails with TP_EINVAL when one is already open. rollback is always safe
 * (a no-op without an open transaction or on a lost connection). BEGIN costs no round trip of
 * its own: it is sent with the transaction's first statement (libpq pipeline mode), and a
 * transaction that sent nothing commits or rolls back without one. */
int tp_db_begin(tp_db *db);
int tp_db_commit(tp_db *db);
int tp_db_rollback(tp_db *db);
bool tp_db_in_tx(const tp_db *db);

/* Runs one parameterised statement (text parameters, NULL entries are SQL NULL).
 * affected (may be NULL) receives PQcmdTuples ("1" for a new row of INSERT ... ON CONFLICT DO
 * NOTHING, "0" for a duplicate). Returns 0, TP_EDB (transient) or TP_EDB_PERMANENT. */
int tp_db_exec(tp_db *db, const char *sql, int nparams, const char *const *params, int64_t *affected);

/* Runs one parameterised statement returning rows; *out is a new result owned by the caller
 * (tp_res_free). Returns 0, TP_EDB, TP_EDB_PERMANENT or TP_ENOMEM. */
int tp_db_query(tp_db *db, const char *sql, int nparams, const char *const *params, tp_res **out);

/* As tp_db_query with binary parameters: lengths[i] and formats[i] (1 = binary, e.g. bytea) as in
 * PQexecParams; lengths/formats may be NULL for all-text. out may be NULL (rows discarded). */
int tp_db_query_bin(tp_db *db, const char *sql, int nparams, const char *const *params,
                    const int *lengths, const int *formats, tp_res **out);

/* Sends one parameterised statement inside a transaction without waiting for its answer
 * (pipeline mode): it travels with the next statement, commit or rollback, and its error, if
 * any, is that call's error (the transaction is then aborted: roll back). For statements whose
 * result nobody reads (inserts of the happy path). Outside a transaction it runs at once, as
 * tp_db_query_bin. Returns 0, or TP_EDB when it cannot be sent (the transaction is lost). */
int tp_db_exec_queued(tp_db *db, const char *sql, int nparams, const char *const *params,
                      const int *lengths, const int *formats);

/* Round trips to PostgreSQL so far by all connections of this process (each wait for an
 * answer: a statement, a prepare, a pipeline sync); scripts/bench divides it by requests. */
unsigned long long tp_db_round_trips(void);

/* Runs a script of several statements without parameters (simple query protocol). */
int tp_db_exec_script(tp_db *db, const char *sql);

/* The SQLSTATE ("23505") and message of the last failed call on this handle; "" when none.
 * Valid until the next call on db. */
const char *tp_db_sqlstate(const tp_db *db);
const char *tp_db_errmsg(const tp_db *db);

/* Pure mapping used by the wrapper: NULL or "" (no server answer) and transient classes →
 * TP_EDB; every other SQLSTATE → TP_EDB_PERMANENT; "00000" → 0. */
int tp_store_sqlstate_to_err(const char *sqlstate);
/* True when the SQLSTATE is a unique_violation (23505). */
bool tp_store_is_unique_violation(const char *sqlstate);

/* Result access. Rows and columns count from 0. get returns the text value ("" for NULL) that
 * lives as long as res; out-of-range cells give NULL. */
int tp_res_nrows(const tp_res *res);
int tp_res_ncols(const tp_res *res);
const char *tp_res_get(const tp_res *res, int row, int col);
/* Length in bytes of a cell (for binary results and bytea as hex text). */
int tp_res_len(const tp_res *res, int row, int col);
bool tp_res_isnull(const tp_res *res, int row, int col);
/* Parses a cell as an integer; returns 0 or TP_EINVAL (NULL, out of range, not a number). */
int tp_res_get_int64(const tp_res *res, int row, int col, int64_t *out);
/* A bytea cell in text form (hex or escape output) as its bytes: *out a new buffer (free; a NUL
 * after the *len bytes). Returns 0, TP_EINVAL (NULL or out of range) or TP_ENOMEM. Fetch bytea
 * this way rather than as encode(..., 'base64'): libsodium's constant-time base64 decoder was a
 * fifth of tp-worker's instructions (callgrind) when the relay read its payloads so. */
int tp_res_get_bytea(const tp_res *res, int row, int col, unsigned char **out, size_t *len);
void tp_res_free(tp_res *res);

/* Convenience: a query returning one row of one column. Copies the text into buf (truncating),
 * *found tells whether there was a row with a non-NULL value. */
int tp_db_query_text(tp_db *db, const char *sql, int nparams, const char *const *params,
                     char *buf, size_t buf_size, bool *found);

/* Migrations: files <version>_<name>.sql in sql_dir (version = leading decimal number), applied in
 * order under pg_advisory_lock, each in its own transaction with its schema_migrations row.
 * Returns 0; TP_EDB_SCHEMA_NEWER when the database holds a version with no file here;
 * TP_EIO/TP_ECONFIG for an unreadable directory or a bad file name; TP_EDB*; errstr filled. */
int tp_store_migrate(tp_db *db, const char *sql_dir, char *errstr, size_t errstr_size);
/* Checks without applying: 0 when every file's version is applied and none is unknown;
 * TP_EDB_SCHEMA_NEWER, or TP_ECONFLICT when migrations are missing. */
int tp_store_check_schema(tp_db *db, const char *sql_dir, char *errstr, size_t errstr_size);
/* Highest applied version (0 when none or no migrations table). */
int tp_store_schema_version(tp_db *db, int *version);

/* LISTEN/NOTIFY (worker/store/notify.c), for callers that wait on a loop instead of a thread.
 * The socket of db's connection to watch for readability, or -1 when it is not connected. It
 * changes when the connection is re-established: watch it again after any failed call. */
int tp_db_socket(const tp_db *db);
/* LISTEN on channel (quoted as an identifier). Returns 0 or TP_EDB*. Blocking. */
int tp_db_listen(tp_db *db, const char *channel);
/* Reads what has arrived on the socket without blocking and drains the notifications received so
 * far (also those that arrived during earlier statements); *count gets how many came from other
 * sessions (this session's own NOTIFYs are not counted). Returns 0, or
 * TP_EDB when the connection is broken (close it and connect again). */
int tp_db_consume_notifies(tp_db *db, int *count);

#endif
