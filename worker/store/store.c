/* store.c: the libpq wrapper: one connection per tp_db, transactions, parameterised statements,
 * SQLSTATE → TP_E translation, reconnect after a broken connection, and the result API.
 * The only file set (with migrate.c) that includes <libpq-fe.h>. */
#include "tp/store.h"
#include "tp/error.h"
#include "tp/log.h"
#include "store_int.h"

#include <libpq-fe.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A statement prepared on this connection, found again by its text. */
typedef struct prepared {
    char *sql;
    uint64_t hash;
    char name[16];
} prepared;

#define PREPARED_MAX 128 /* statements past it run unprepared (the product has fewer) */

struct tp_db {
    PGconn *conn;
    prepared *stmts; /* named statements of this session; lost with it on a reset */
    int n_stmts;
    bool in_tx;
    bool tx_failed;
    char sqlstate[6];
    char errmsg[512];
};

struct tp_res {
    PGresult *res;
};

static void notice_processor(void *arg, const char *message) {
    (void)arg;
    size_t n = strlen(message);
    while (n > 0 && (message[n - 1] == '\n' || message[n - 1] == ' '))
        n--;
    tp_log(TP_LOG_DEBUG, "store", NULL, "postgres notice: %.*s", (int)n, message);
}

static void clear_error(tp_db *db) {
    db->sqlstate[0] = '\0';
    db->errmsg[0] = '\0';
}

static void set_error(tp_db *db, const char *sqlstate, const char *msg) {
    snprintf(db->sqlstate, sizeof(db->sqlstate), "%s", sqlstate ? sqlstate : "");
    snprintf(db->errmsg, sizeof(db->errmsg), "%s", msg ? msg : "");
    size_t n = strlen(db->errmsg);
    while (n > 0 && (db->errmsg[n - 1] == '\n' || db->errmsg[n - 1] == ' '))
        db->errmsg[--n] = '\0';
}

int tp_store_sqlstate_to_err(const char *s) {
    if (!s || !*s)
        return TP_EDB; /* no server answer: connection lost or never made */
    if (strcmp(s, "00000") == 0)
        return 0;
    if (strncmp(s, "08", 2) == 0)          /* connection exception */
        return TP_EDB;
    if (strcmp(s, "40001") == 0 || strcmp(s, "40P01") == 0) /* serialization, deadlock */
        return TP_EDB;
    if (strncmp(s, "53", 2) == 0)          /* insufficient resources (too many connections...) */
        return TP_EDB;
    if (strcmp(s, "57P01") == 0 || strcmp(s, "57P02") == 0 || strcmp(s, "57P03") == 0 ||
        strcmp(s, "57014") == 0)           /* admin/crash shutdown, cannot connect now, canceled */
        return TP_EDB;
    if (strcmp(s, "55P03") == 0)           /* lock not available */
        return TP_EDB;
    return TP_EDB_PERMANENT;
}

bool tp_store_is_unique_violation(const char *sqlstate) {
    return sqlstate && strcmp(sqlstate, "23505") == 0;
}

int tp_db_connect(const char *dsn, tp_db **out, char *errstr, size_t errstr_size) {
    tp_db *db;
    *out = NULL;
    if (!dsn) {
        snprintf(errstr, errstr_size, "no DSN");
        return TP_EINVAL;
    }
    db = calloc(1, sizeof(*db));
    if (!db) {
        snprintf(errstr, errstr_size, "out of memory");
        return TP_ENOMEM;
    }
    db->conn = PQconnectdb(dsn);
    if (!db->conn) {
        free(db);
        snprintf(errstr, errstr_size, "out of memory");
        return TP_ENOMEM;
    }
    if (PQstatus(db->conn) != CONNECTION_OK) {
        snprintf(errstr, errstr_size, "connect: %s", PQerrorMessage(db->conn));
        size_t n = strlen(errstr);
        while (n > 0 && errstr[n - 1] == '\n')
            errstr[--n] = '\0';
        PQfinish(db->conn);
        free(db);
        return TP_EDB;
    }
    PQsetNoticeProcessor(db->conn, notice_processor, NULL);
    *out = db;
    return 0;
}

static void forget_prepared(tp_db *db) {
    for (int i = 0; i < db->n_stmts; i++)
        free(db->stmts[i].sql);
    free(db->stmts);
    db->stmts = NULL;
    db->n_stmts = 0;
}

void tp_db_close(tp_db *db) {
    if (!db)
        return;
    if (db->conn)
        PQfinish(db->conn);
    forget_prepared(db);
    free(db);
}

/* Makes sure the connection is usable. A reset inside a transaction loses the transaction: the
 * caller gets TP_EDB and must start over (stages are idempotent). */
static int ensure_conn(tp_db *db) {
    if (PQstatus(db->conn) == CONNECTION_OK)
        return 0;
    bool was_in_tx = db->in_tx;
    db->in_tx = false;
    db->tx_failed = false;
    PQreset(db->conn);
    forget_prepared(db); /* a new session knows none of them */
    if (PQstatus(db->conn) != CONNECTION_OK) {
        set_error(db, "", PQerrorMessage(db->conn));
        return TP_EDB;
    }
    PQsetNoticeProcessor(db->conn, notice_processor, NULL);
    tp_log_warn("store", "reconnected to PostgreSQL");
    if (was_in_tx) {
        set_error(db, "08006", "connection lost inside a transaction");
        return TP_EDB;
    }
    return 0;
}

/* Classifies a finished PGresult; returns 0 for success. */
static int check_result(tp_db *db, PGresult *res) {
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_EMPTY_QUERY)
        return 0;
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = res ? PQresultErrorMessage(res) : NULL;
    if (!msg || !*msg)
        msg = PQerrorMessage(db->conn);
    set_error(db, state, msg);
    if (db->in_tx)
        db->tx_failed = true;
    if (PQstatus(db->conn) != CONNECTION_OK)
        return TP_EDB;
    return tp_store_sqlstate_to_err(state);
}

static uint64_t sql_hash(const char *sql) {
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *sql; sql++)
        h = (h ^ (unsigned char)*sql) * 1099511628211ULL;
    return h;
}

/* The name of sql prepared on this session, preparing it on first use (one extra round trip per
 * statement and connection: later runs skip PostgreSQL's parse and, once cached, its planning).
 * NULL when it cannot be cached (table full, out of memory): the caller runs it unprepared. A
 * failed prepare returns NULL with *rc set. */
static const char *prepared_name(tp_db *db, const char *sql, int nparams, int *rc) {
    uint64_t h = sql_hash(sql);
    prepared *p;
    PGresult *res;
    *rc = 0;
    for (int i = 0; i < db->n_stmts; i++)
        if (db->stmts[i].hash == h && strcmp(db->stmts[i].sql, sql) == 0)
            return db->stmts[i].name;
    if (db->n_stmts >= PREPARED_MAX)
        return NULL;
    if (!db->stmts && !(db->stmts = calloc(PREPARED_MAX, sizeof(*db->stmts))))
        return NULL;
    p = &db->stmts[db->n_stmts];
    if (!(p->sql = strdup(sql)))
        return NULL;
    p->hash = h;
    snprintf(p->name, sizeof(p->name), "tp%d", db->n_stmts);
    res = PQprepare(db->conn, p->name, sql, nparams, NULL);
    *rc = check_result(db, res);
    PQclear(res);
    if (*rc != 0) {
        free(p->sql);
        p->sql = NULL;
        return NULL;
    }
    db->n_stmts++;
    return p->name;
}

/* Runs one parameterised statement, prepared when possible. NULL result only on out of memory
 * or a failed prepare (*rc set); check_result classifies every other outcome. */
static PGresult *run_params(tp_db *db, const char *sql, int nparams, const char *const *params,
                            const int *lengths, const int *formats, int *rc) {
    const char *name = prepared_name(db, sql, nparams, rc);
    if (*rc != 0)
        return NULL;
    if (name)
        return PQexecPrepared(db->conn, name, nparams, params, lengths, formats, 0);
    return PQexecParams(db->conn, sql, nparams, NULL, params, lengths, formats, 0);
}

int tp_db_query_bin(tp_db *db, const char *sql, int nparams, const char *const *params,
                    const int *lengths, const int *formats, tp_res **out) {
    PGresult *res;
    int rc;
    if (out)
        *out = NULL;
    clear_error(db);
    if ((rc = ensure_conn(db)) != 0)
        return rc;
    res = run_params(db, sql, nparams, params, lengths, formats, &rc);
    if (rc != 0)
        return rc;
    rc = check_result(db, res);
    if (rc != 0 || !out) {
        PQclear(res);
        return rc;
    }
    *out = malloc(sizeof(**out));
    if (!*out) {
        PQclear(res);
        return TP_ENOMEM;
    }
    (*out)->res = res;
    return 0;
}

int tp_db_query(tp_db *db, const char *sql, int nparams, const char *const *params, tp_res **out) {
    return tp_db_query_bin(db, sql, nparams, params, NULL, NULL, out);
}

int tp_db_exec(tp_db *db, const char *sql, int nparams, const char *const *params,
               int64_t *affected) {
    PGresult *res;
    int rc;
    if (affected)
        *affected = 0;
    clear_error(db);
    if ((rc = ensure_conn(db)) != 0)
        return rc;
    res = run_params(db, sql, nparams, params, NULL, NULL, &rc);
    if (rc != 0)
        return rc;
    rc = check_result(db, res);
    if (rc == 0 && affected) {
        const char *t = PQcmdTuples(res);
        *affected = (t && *t) ? strtoll(t, NULL, 10) : 0;
    }
    PQclear(res);
    return rc;
}

int tp_db_exec_script(tp_db *db, const char *sql) {
    PGresult *res;
    int rc;
    clear_error(db);
    if ((rc = ensure_conn(db)) != 0)
        return rc;
    res = PQexec(db->conn, sql);
    rc = check_result(db, res);
    PQclear(res);
    return rc;
}

int tp_db_ping(tp_db *db) {
    int rc = tp_db_exec(db, "SELECT 1", 0, NULL, NULL);
    if (rc != 0 && !db->in_tx)
        rc = tp_db_exec(db, "SELECT 1", 0, NULL, NULL); /* one reconnect attempt */
    return rc == 0 ? 0 : TP_EDB;
}

int tp_db_begin(tp_db *db) {
    int rc;
    if (db->in_tx) {
        set_error(db, "25001", "transaction already open");
        return TP_EINVAL;
    }
    rc = tp_db_exec_script(db, "BEGIN");
    if (rc == 0) {
        db->in_tx = true;
        db->tx_failed = false;
    }
    return rc;
}

int tp_db_commit(tp_db *db) {
    PGresult *res;
    int rc;
    if (!db->in_tx) {
        set_error(db, "25P01", "no transaction open");
        return TP_EINVAL;
    }
    if (db->tx_failed) {
        /* COMMIT of an aborted transaction answers ROLLBACK without an error: say it failed. */
        char state[6], msg[512];
        memcpy(state, db->sqlstate, sizeof(state));
        memcpy(msg, db->errmsg, sizeof(msg));
        tp_db_rollback(db);
        set_error(db, *state ? state : "25P02", *msg ? msg : "transaction aborted");
        return tp_store_sqlstate_to_err(db->sqlstate);
    }
    clear_error(db);
    if (PQstatus(db->conn) != CONNECTION_OK) {
        rc = ensure_conn(db);
        return rc ? rc : TP_EDB;
    }
    res = PQexec(db->conn, "COMMIT");
    rc = check_result(db, res);
    if (rc == 0 && strcmp(PQcmdStatus(res), "COMMIT") != 0) {
        set_error(db, "25P02", "transaction was rolled back");
        rc = TP_EDB_PERMANENT;
    }
    PQclear(res);
    db->in_tx = false;
    db->tx_failed = false;
    return rc;
}

int tp_db_rollback(tp_db *db) {
    if (!db->in_tx)
        return 0;
    db->in_tx = false;
    db->tx_failed = false;
    if (PQstatus(db->conn) != CONNECTION_OK)
        return 0; /* the server rolls back by itself */
    PGresult *res = PQexec(db->conn, "ROLLBACK");
    PQclear(res);
    return 0;
}

bool tp_db_in_tx(const tp_db *db) { return db->in_tx; }

const char *tp_db_sqlstate(const tp_db *db) { return db->sqlstate; }
const char *tp_db_errmsg(const tp_db *db) { return db->errmsg; }

int tp_res_nrows(const tp_res *res) { return res ? PQntuples(res->res) : 0; }
int tp_res_ncols(const tp_res *res) { return res ? PQnfields(res->res) : 0; }

static bool in_range(const tp_res *res, int row, int col) {
    return res && row >= 0 && col >= 0 && row < PQntuples(res->res) && col < PQnfields(res->res);
}

const char *tp_res_get(const tp_res *res, int row, int col) {
    if (!in_range(res, row, col))
        return NULL;
    return PQgetvalue(res->res, row, col);
}

int tp_res_len(const tp_res *res, int row, int col) {
    if (!in_range(res, row, col))
        return 0;
    return PQgetlength(res->res, row, col);
}

bool tp_res_isnull(const tp_res *res, int row, int col) {
    if (!in_range(res, row, col))
        return true;
    return PQgetisnull(res->res, row, col) != 0;
}

int tp_res_get_int64(const tp_res *res, int row, int col, int64_t *out) {
    const char *s;
    char *end;
    long long v;
    if (tp_res_isnull(res, row, col))
        return TP_EINVAL;
    s = PQgetvalue(res->res, row, col);
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0')
        return TP_EINVAL;
    *out = (int64_t)v;
    return 0;
}

void tp_res_free(tp_res *res) {
    if (!res)
        return;
    PQclear(res->res);
    free(res);
}

int tp_db_query_text(tp_db *db, const char *sql, int nparams, const char *const *params,
                     char *buf, size_t buf_size, bool *found) {
    tp_res *res = NULL;
    int rc = tp_db_query(db, sql, nparams, params, &res);
    if (found)
        *found = false;
    if (buf_size)
        buf[0] = '\0';
    if (rc != 0)
        return rc;
    if (tp_res_nrows(res) > 0 && !tp_res_isnull(res, 0, 0)) {
        if (buf_size)
            snprintf(buf, buf_size, "%s", tp_res_get(res, 0, 0));
        if (found)
            *found = true;
    }
    tp_res_free(res);
    return 0;
}
