/* store.c: the libpq wrapper: one connection per tp_db, transactions, parameterised statements,
 * SQLSTATE → TP_E translation, reconnect after a broken connection, and the result API.
 * Inside a transaction, BEGIN and the statements queued with tp_db_exec_queued ride in one libpq
 * pipeline with the next statement that waits for its answer (one round trip for them all).
 * The only file set (with migrate.c) that includes <libpq-fe.h>. */
#include "tp/store.h"
#include "tp/config.h"
#include "tp/error.h"
#include "tp/log.h"
#include "store_int.h"

#include <libpq-fe.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define PREPARED_MAX 128 /* statements past it run unprepared (the product has fewer) */

/* Round trips to PostgreSQL by every connection of this process (each wait for an answer). */
static _Atomic unsigned long long round_trips;

unsigned long long tp_db_round_trips(void) { return round_trips; }

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

void tp_db_opts_default(tp_db_opts *opts) {
    opts->connect_timeout_s = 5;
    opts->statement_timeout_ms = 15000;
    opts->lock_timeout_ms = 5000;
    opts->idle_in_tx_timeout_ms = 30000;
    opts->keepalives_idle_s = 10;
    opts->keepalives_interval_s = 5;
    opts->keepalives_count = 3;
    opts->tcp_user_timeout_ms = 15000;
}

static int clamp_opt(int64_t v) { return v < 0 ? 0 : v > INT_MAX ? INT_MAX : (int)v; }

void tp_db_opts_from_config(tp_db_opts *opts, const tp_config *cfg) {
    opts->connect_timeout_s = clamp_opt(tp_config_get_int(cfg, "pg.connect_timeout_s"));
    opts->statement_timeout_ms = clamp_opt(tp_config_get_int(cfg, "pg.statement_timeout_ms"));
    opts->lock_timeout_ms = clamp_opt(tp_config_get_int(cfg, "pg.lock_timeout_ms"));
    opts->idle_in_tx_timeout_ms = clamp_opt(tp_config_get_int(cfg, "pg.idle_in_transaction_timeout_ms"));
    opts->keepalives_idle_s = clamp_opt(tp_config_get_int(cfg, "pg.keepalives_idle_s"));
    opts->keepalives_interval_s = clamp_opt(tp_config_get_int(cfg, "pg.keepalives_interval_s"));
    opts->keepalives_count = clamp_opt(tp_config_get_int(cfg, "pg.keepalives_count"));
    opts->tcp_user_timeout_ms = clamp_opt(tp_config_get_int(cfg, "pg.tcp_user_timeout_ms"));
}

/* The libpq keywords and values of one connection: our deadlines first, then the DSN expanded in
 * place of dbname (libpq lets later entries win, so whatever the DSN sets explicitly beats our
 * defaults), then `options`: our `-c` settings followed by PGOPTIONS' and the DSN's own, which the
 * server applies in order (theirs win again). Strings live in the struct. */
#define CONN_PARAMS_MAX 12
typedef struct conn_params {
    const char *keys[CONN_PARAMS_MAX + 1];
    const char *values[CONN_PARAMS_MAX + 1];
    int n;
    char num[8][16];
    char options[1024];
} conn_params;

static void param_add(conn_params *p, const char *key, const char *value) {
    p->keys[p->n] = key;
    p->values[p->n] = value;
    p->n++;
    p->keys[p->n] = NULL;
    p->values[p->n] = NULL;
}

static void param_add_int(conn_params *p, int *slot, const char *key, int value) {
    if (value <= 0)
        return; /* 0: no bound from us (libpq's or the server's default) */
    snprintf(p->num[*slot], sizeof(p->num[0]), "%d", value);
    param_add(p, key, p->num[*slot]);
    (*slot)++;
}

/* Appends " -c name=value" (no leading space on an empty buffer); TP_EINVAL when it does not fit. */
static int append_setting(char *buf, size_t cap, const char *name, int value) {
    size_t len = strlen(buf);
    int n = snprintf(buf + len, cap - len, "%s-c %s=%d", len ? " " : "", name, value);
    return (n < 0 || (size_t)n >= cap - len) ? TP_EINVAL : 0;
}

static int build_params(conn_params *p, const char *dsn, const tp_db_opts *o, char *errstr,
                        size_t errstr_size) {
    PQconninfoOption *parsed = NULL, *opt;
    const char *dsn_options = NULL, *env_options = getenv("PGOPTIONS");
    char *perr = NULL;
    int slot = 0, rc = 0;
    memset(p, 0, sizeof(*p));
    param_add_int(p, &slot, "connect_timeout", o->connect_timeout_s);
    if (o->keepalives_idle_s > 0 || o->keepalives_interval_s > 0 || o->keepalives_count > 0)
        param_add(p, "keepalives", "1");
    param_add_int(p, &slot, "keepalives_idle", o->keepalives_idle_s);
    param_add_int(p, &slot, "keepalives_interval", o->keepalives_interval_s);
    param_add_int(p, &slot, "keepalives_count", o->keepalives_count);
    param_add_int(p, &slot, "tcp_user_timeout", o->tcp_user_timeout_ms);
    param_add(p, "dbname", dsn);

    /* -c name=value in milliseconds (the unit of these settings); 0 adds nothing. */
    if ((o->statement_timeout_ms > 0 &&
         append_setting(p->options, sizeof(p->options), "statement_timeout", o->statement_timeout_ms)) ||
        (o->lock_timeout_ms > 0 &&
         append_setting(p->options, sizeof(p->options), "lock_timeout", o->lock_timeout_ms)) ||
        (o->idle_in_tx_timeout_ms > 0 &&
         append_setting(p->options, sizeof(p->options), "idle_in_transaction_session_timeout",
                        o->idle_in_tx_timeout_ms)))
        rc = TP_EINVAL;
    /* A conninfo string or URI: its own options come after ours. A plain database name has none. */
    if (rc == 0 && (strchr(dsn, '=') || strncmp(dsn, "postgres", 8) == 0)) {
        parsed = PQconninfoParse(dsn, &perr);
        if (!parsed) {
            snprintf(errstr, errstr_size, "bad DSN: %s", perr ? perr : "out of memory");
            size_t n = strlen(errstr);
            while (n > 0 && errstr[n - 1] == '\n')
                errstr[--n] = '\0';
            PQfreemem(perr);
            return TP_ECONFIG;
        }
        for (opt = parsed; opt->keyword; opt++)
            if (strcmp(opt->keyword, "options") == 0 && opt->val && *opt->val)
                dsn_options = opt->val;
    }
    for (int i = 0; rc == 0 && i < 2; i++) {
        const char *extra = i == 0 ? env_options : dsn_options;
        size_t len = strlen(p->options);
        if (!extra || !*extra)
            continue;
        int n = snprintf(p->options + len, sizeof(p->options) - len, "%s%s", len ? " " : "", extra);
        if (n < 0 || (size_t)n >= sizeof(p->options) - len)
            rc = TP_EINVAL;
    }
    if (parsed)
        PQconninfoFree(parsed);
    if (rc != 0) {
        snprintf(errstr, errstr_size, "connection options longer than %zu bytes", sizeof(p->options) - 1);
        return TP_ECONFIG;
    }
    if (p->options[0])
        param_add(p, "options", p->options);
    return 0;
}

int tp_db_connect_opts(const char *dsn, const tp_db_opts *opts, tp_db **out, char *errstr,
                       size_t errstr_size) {
    tp_db *db;
    tp_db_opts defaults;
    conn_params params;
    int rc;
    *out = NULL;
    if (!dsn) {
        snprintf(errstr, errstr_size, "no DSN");
        return TP_EINVAL;
    }
    if (!opts) {
        tp_db_opts_default(&defaults);
        opts = &defaults;
    }
    if ((rc = build_params(&params, dsn, opts, errstr, errstr_size)) != 0)
        return rc;
    db = calloc(1, sizeof(*db));
    if (!db) {
        snprintf(errstr, errstr_size, "out of memory");
        return TP_ENOMEM;
    }
    db->conn = PQconnectdbParams(params.keys, params.values, 1);
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

int tp_db_connect(const char *dsn, tp_db **out, char *errstr, size_t errstr_size) {
    return tp_db_connect_opts(dsn, NULL, out, errstr, errstr_size);
}

int tp_db_connect_cfg(const tp_config *cfg, tp_db **out, char *errstr, size_t errstr_size) {
    tp_db_opts opts;
    tp_db_opts_from_config(&opts, cfg);
    return tp_db_connect_opts(tp_config_get(cfg, "pg.dsn"), &opts, out, errstr, errstr_size);
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
    /* A transaction that has sent nothing yet (BEGIN pending) survives a reconnect. */
    bool was_in_tx = db->in_tx && (!db->begin_pending || db->n_owed > 0);
    bool keep_tx = db->in_tx && !was_in_tx;
    db->in_tx = keep_tx;
    db->begin_pending = keep_tx;
    db->tx_failed = false;
    db->n_owed = 0;
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

/* The index in db->stmts of sql when this session has it prepared, else -1. */
static int find_prepared(const tp_db *db, const char *sql) {
    uint64_t h = sql_hash(sql);
    for (int i = 0; i < db->n_stmts; i++)
        if (db->stmts[i].sql && db->stmts[i].hash == h && strcmp(db->stmts[i].sql, sql) == 0)
            return i;
    return -1;
}

/* Takes a new slot (and a new name) for sql; -1 when the table is full or memory is short: the
 * caller then runs it unprepared. */
static int add_prepared(tp_db *db, const char *sql) {
    prepared *p;
    if (db->n_stmts >= PREPARED_MAX)
        return -1;
    if (!db->stmts && !(db->stmts = calloc(PREPARED_MAX, sizeof(*db->stmts))))
        return -1;
    p = &db->stmts[db->n_stmts];
    if (!(p->sql = strdup(sql)))
        return -1;
    p->hash = sql_hash(sql);
    snprintf(p->name, sizeof(p->name), "tp%d", db->n_stmts);
    return db->n_stmts++;
}

/* A prepare that failed: the slot is never matched again (its name is not reused). */
static void drop_prepared(tp_db *db, int i) {
    free(db->stmts[i].sql);
    db->stmts[i].sql = NULL;
}

/* The name of sql prepared on this session, preparing it on first use (one extra round trip per
 * statement and connection: later runs skip PostgreSQL's parse and, once cached, its planning).
 * NULL when it cannot be cached (table full, out of memory): the caller runs it unprepared. A
 * failed prepare returns NULL with *rc set. */
static const char *prepared_name(tp_db *db, const char *sql, int nparams, int *rc) {
    PGresult *res;
    int i = find_prepared(db, sql);
    *rc = 0;
    if (i >= 0)
        return db->stmts[i].name;
    if ((i = add_prepared(db, sql)) < 0)
        return NULL;
    round_trips++;
    res = PQprepare(db->conn, db->stmts[i].name, sql, nparams, NULL);
    *rc = check_result(db, res);
    PQclear(res);
    if (*rc != 0) {
        drop_prepared(db, i);
        return NULL;
    }
    return db->stmts[i].name;
}

/* --- pipeline ------------------------------------------------------------------------------
 * Statements are sent without waiting; one Sync then collects every owed result in send order.
 * Per command libpq yields its result then NULL; after an error the rest of the pipeline comes
 * back PGRES_PIPELINE_ABORTED, then PGRES_PIPELINE_SYNC closes it. */
enum { OWED_STATEMENT = -1, OWED_BEGIN = -2 };

static int pipe_fail(tp_db *db, const char *what) {
    const char *m = PQerrorMessage(db->conn);
    set_error(db, "", m && *m ? m : what);
    if (db->in_tx)
        db->tx_failed = true;
    return TP_EDB;
}

/* Gives up a pipeline that cannot be sent or read (a broken connection, libpq out of memory):
 * the session is reset, so its transaction is lost and the caller gets TP_EDB. */
static void pipe_abandon(tp_db *db) {
    char state[6], msg[512];
    memcpy(state, db->sqlstate, sizeof(state));
    memcpy(msg, db->errmsg, sizeof(msg));
    db->n_owed = 0;
    db->begin_pending = false;
    db->in_tx = false;
    db->tx_failed = false;
    PQreset(db->conn);
    forget_prepared(db);
    if (PQstatus(db->conn) == CONNECTION_OK)
        PQsetNoticeProcessor(db->conn, notice_processor, NULL);
    set_error(db, *state ? state : "08006", *msg ? msg : "pipeline abandoned");
}

/* Queues sql (prepared when it can be: PQsendPrepare then PQsendQueryPrepared) behind a
 * pending BEGIN. Needs room for three owed results. */
static int pipe_send(tp_db *db, const char *sql, int nparams, const char *const *params,
                     const int *lengths, const int *formats, bool prepare) {
    int i = -1, ok;
    if (PQpipelineStatus(db->conn) == PQ_PIPELINE_OFF && !PQenterPipelineMode(db->conn))
        return pipe_fail(db, "cannot enter pipeline mode");
    if (db->begin_pending) {
        if (!PQsendQueryParams(db->conn, "BEGIN", 0, NULL, NULL, NULL, NULL, 0))
            return pipe_fail(db, "cannot send BEGIN");
        db->begin_pending = false;
        db->owed[db->n_owed++] = OWED_BEGIN;
    }
    if (!sql)
        return 0;
    if (prepare && (i = find_prepared(db, sql)) < 0 && (i = add_prepared(db, sql)) >= 0) {
        if (!PQsendPrepare(db->conn, db->stmts[i].name, sql, nparams, NULL)) {
            drop_prepared(db, i);
            return pipe_fail(db, "cannot send a prepare");
        }
        db->owed[db->n_owed++] = i;
    }
    ok = i >= 0 ? PQsendQueryPrepared(db->conn, db->stmts[i].name, nparams, params, lengths,
                                      formats, 0)
                : PQsendQueryParams(db->conn, sql, nparams, NULL, params, lengths, formats, 0);
    if (!ok)
        return pipe_fail(db, "cannot send a statement");
    db->owed[db->n_owed++] = OWED_STATEMENT;
    return 0;
}

/* Syncs and reads every owed result, then leaves pipeline mode. *last (when asked for) gets
 * the last command's result, or the first failure before it: the error the caller reports.
 * Returns TP_EDB (pipeline abandoned) when the answers cannot be read, else 0. */
static int pipe_collect(tp_db *db, PGresult **last) {
    PGresult *first_err = NULL, *tail = NULL, *r;
    int n = db->n_owed;
    bool broken = !PQpipelineSync(db->conn);
    db->n_owed = 0;
    round_trips++;
    for (int i = 0; i < n && !broken; i++) {
        PGresult *mine = NULL;
        while ((r = PQgetResult(db->conn)) != NULL) {
            if (!mine)
                mine = r;
            else
                PQclear(r);
        }
        if (!mine) {
            broken = true;
            break;
        }
        ExecStatusType st = PQresultStatus(mine);
        bool ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_EMPTY_QUERY;
        if (!ok && db->owed[i] >= 0)
            drop_prepared(db, db->owed[i]);
        if (!ok && !first_err && st != PGRES_PIPELINE_ABORTED)
            first_err = mine;
        else if (i == n - 1 && last)
            tail = mine;
        else
            PQclear(mine);
    }
    if (!broken) {
        r = PQgetResult(db->conn);
        broken = !r || PQresultStatus(r) != PGRES_PIPELINE_SYNC;
        PQclear(r);
    }
    if (broken || !PQexitPipelineMode(db->conn)) {
        PQclear(first_err);
        PQclear(tail);
        pipe_fail(db, "pipeline answers lost");
        pipe_abandon(db);
        if (last)
            *last = NULL;
        return TP_EDB;
    }
    if (last) {
        *last = first_err ? first_err : tail;
        if (first_err)
            PQclear(tail);
    } else if (first_err) {
        check_result(db, first_err);
        PQclear(first_err);
    }
    return 0;
}

/* Sends a pending BEGIN and the queued statements and reads their answers; 0 or their first
 * error. */
static int pipe_flush(tp_db *db) {
    int rc;
    if (!db->begin_pending && db->n_owed == 0)
        return 0;
    if ((rc = pipe_send(db, NULL, 0, NULL, NULL, NULL, false)) != 0) {
        pipe_abandon(db);
        return rc;
    }
    if ((rc = pipe_collect(db, NULL)) != 0)
        return rc;
    return db->tx_failed ? tp_store_sqlstate_to_err(db->sqlstate) : 0;
}

/* One statement that waits for its answer, with whatever the pipeline holds before it. */
static PGresult *pipe_run(tp_db *db, const char *sql, int nparams, const char *const *params,
                          const int *lengths, const int *formats, bool prepare, int *rc) {
    PGresult *res = NULL;
    if ((*rc = pipe_send(db, sql, nparams, params, lengths, formats, prepare)) != 0) {
        pipe_abandon(db);
        return NULL;
    }
    *rc = pipe_collect(db, &res);
    return res;
}

/* Runs one parameterised statement, prepared when possible. NULL result only on out of memory
 * or a failed prepare (*rc set); check_result classifies every other outcome. */
static PGresult *run_params(tp_db *db, const char *sql, int nparams, const char *const *params,
                            const int *lengths, const int *formats, int *rc) {
    if (db->begin_pending || db->n_owed > 0)
        return pipe_run(db, sql, nparams, params, lengths, formats, true, rc);
    const char *name = prepared_name(db, sql, nparams, rc);
    if (*rc != 0)
        return NULL;
    round_trips++;
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

int tp_db_exec_queued(tp_db *db, const char *sql, int nparams, const char *const *params,
                      const int *lengths, const int *formats) {
    int rc;
    if (!db->in_tx) /* autocommit: nothing to ride along with */
        return tp_db_query_bin(db, sql, nparams, params, lengths, formats, NULL);
    if (db->tx_failed)
        return tp_store_sqlstate_to_err(*db->sqlstate ? db->sqlstate : "25P02");
    clear_error(db);
    if ((rc = ensure_conn(db)) != 0)
        return rc;
    if (db->n_owed + 3 > TP_DB_OWED_MAX && (rc = pipe_flush(db)) != 0)
        return rc;
    if ((rc = pipe_send(db, sql, nparams, params, lengths, formats, true)) != 0)
        pipe_abandon(db);
    return rc;
}

int tp_db_exec_script(tp_db *db, const char *sql) {
    PGresult *res;
    int rc;
    clear_error(db);
    if ((rc = ensure_conn(db)) != 0)
        return rc;
    if ((rc = pipe_flush(db)) != 0)
        return rc;
    round_trips++;
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
    if (db->in_tx) {
        set_error(db, "25001", "transaction already open");
        return TP_EINVAL;
    }
    clear_error(db);
    db->in_tx = true;
    db->tx_failed = false;
    db->begin_pending = true; /* sent with the first statement */
    return 0;
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
    if (db->begin_pending && db->n_owed == 0) {
        db->in_tx = db->begin_pending = false; /* nothing was sent: nothing to commit */
        return 0;
    }
    if (PQstatus(db->conn) != CONNECTION_OK) {
        rc = ensure_conn(db);
        return rc ? rc : TP_EDB;
    }
    if (db->n_owed > 0) {
        /* The queued statements and COMMIT in one round trip. */
        res = pipe_run(db, "COMMIT", 0, NULL, NULL, NULL, false, &rc);
        if (!db->in_tx)
            return rc ? rc : TP_EDB; /* pipeline abandoned: the transaction is gone */
    } else {
        round_trips++;
        res = PQexec(db->conn, "COMMIT");
    }
    rc = check_result(db, res);
    if (rc == 0 && strcmp(PQcmdStatus(res), "COMMIT") != 0) {
        set_error(db, "25P02", "transaction was rolled back");
        rc = TP_EDB_PERMANENT;
    }
    PQclear(res);
    if (rc != 0 && db->tx_failed && PQstatus(db->conn) == CONNECTION_OK) {
        /* A queued statement failed and COMMIT never ran: end the aborted transaction. */
        char state[6], msg[512];
        memcpy(state, db->sqlstate, sizeof(state));
        memcpy(msg, db->errmsg, sizeof(msg));
        PQclear(PQexec(db->conn, "ROLLBACK"));
        set_error(db, state, msg);
    }
    db->in_tx = false;
    db->tx_failed = false;
    return rc;
}

int tp_db_rollback(tp_db *db) {
    bool sent = !db->begin_pending || db->n_owed > 0;
    if (!db->in_tx)
        return 0;
    db->begin_pending = false;
    if (PQstatus(db->conn) != CONNECTION_OK) {
        db->in_tx = db->tx_failed = false;
        db->n_owed = 0;
        return 0; /* the server rolls back by itself */
    }
    if (sent) {
        /* The caller reads the error that made it roll back: keep it. */
        char state[6], msg[512];
        memcpy(state, db->sqlstate, sizeof(state));
        memcpy(msg, db->errmsg, sizeof(msg));
        if (db->n_owed > 0)
            pipe_collect(db, NULL); /* their answers no longer matter */
        if (PQstatus(db->conn) == CONNECTION_OK) {
            round_trips++;
            PQclear(PQexec(db->conn, "ROLLBACK"));
        }
        set_error(db, state, msg);
    }
    db->in_tx = false;
    db->tx_failed = false;
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

/* 1 + the value of each hex digit; 0 for any other byte. */
static const unsigned char hex_digit[256] = {
    ['0'] = 1,  ['1'] = 2,  ['2'] = 3,  ['3'] = 4,  ['4'] = 5,  ['5'] = 6,  ['6'] = 7,  ['7'] = 8,
    ['8'] = 9,  ['9'] = 10, ['a'] = 11, ['b'] = 12, ['c'] = 13, ['d'] = 14, ['e'] = 15, ['f'] = 16,
    ['A'] = 11, ['B'] = 12, ['C'] = 13, ['D'] = 14, ['E'] = 15, ['F'] = 16,
};

/* bytea's hex output ("\\x" + pairs) into a new buffer, a table lookup per digit: libpq's
 * PQunescapeBytea took ~20 instructions per digit (callgrind). NULL when not plain hex (or out
 * of memory). */
static unsigned char *hex_bytea(const char *s, size_t slen, size_t *n) {
    unsigned char *out;
    if (slen < 2 || s[0] != '\\' || s[1] != 'x' || (slen - 2) % 2 != 0)
        return NULL;
    *n = (slen - 2) / 2;
    if (!(out = malloc(*n + 1)))
        return NULL;
    for (size_t i = 0; i < *n; i++) {
        unsigned hi = hex_digit[(unsigned char)s[2 + 2 * i]], lo = hex_digit[(unsigned char)s[3 + 2 * i]];
        if (!hi || !lo) {
            free(out);
            return NULL;
        }
        out[i] = (unsigned char)((hi - 1) << 4 | (lo - 1));
    }
    out[*n] = '\0';
    return out;
}

int tp_res_get_bytea(const tp_res *res, int row, int col, unsigned char **out, size_t *len) {
    unsigned char *raw;
    size_t n = 0;
    *out = NULL;
    *len = 0;
    if (tp_res_isnull(res, row, col))
        return TP_EINVAL;
    if ((*out = hex_bytea(PQgetvalue(res->res, row, col), (size_t)PQgetlength(res->res, row, col), &n))) {
        *len = n;
        return 0;
    }
    /* The escape form (bytea_output = escape), or out of memory: libpq's general decoder. */
    raw = PQunescapeBytea((const unsigned char *)PQgetvalue(res->res, row, col), &n);
    if (!raw)
        return TP_ENOMEM;
    *out = malloc(n + 1);
    if (*out) {
        memcpy(*out, raw, n);
        (*out)[n] = '\0';
        *len = n;
    }
    PQfreemem(raw);
    return *out ? 0 : TP_ENOMEM;
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

/* A client-side deadline for readiness probes: statement_timeout cannot fire on a server that
 * is frozen (SIGSTOP, a hung host) while the kernel still acknowledges our packets. On timeout
 * the socket is shut down, so the handle reports a lost connection and reconnects on next use. */
int tp_db_ping_within(tp_db *db, int timeout_ms) {
    PGresult *res;
    int rc = 0, sock;
    struct timespec now;
    int64_t deadline_ms;
    clear_error(db);
    if (db->in_tx) {
        set_error(db, "25001", "ping inside a transaction");
        return TP_EINVAL;
    }
    if ((rc = ensure_conn(db)) != 0)
        return rc;
    if (!PQsendQuery(db->conn, "SELECT 1")) {
        set_error(db, "", PQerrorMessage(db->conn));
        return TP_EDB;
    }
    clock_gettime(CLOCK_MONOTONIC, &now);
    deadline_ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000 + timeout_ms;
    sock = PQsocket(db->conn);
    for (;;) {
        if (!PQconsumeInput(db->conn))
            break; /* connection lost: PQgetResult below reports it */
        if (!PQisBusy(db->conn))
            break;
        clock_gettime(CLOCK_MONOTONIC, &now);
        int64_t left = deadline_ms - ((int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000);
        if (left <= 0) {
            shutdown(sock, SHUT_RDWR);
            (void)PQconsumeInput(db->conn); /* sees EOF: the connection becomes CONNECTION_BAD */
            while ((res = PQgetResult(db->conn)) != NULL)
                PQclear(res);
            set_error(db, "", "no answer from PostgreSQL within the ping deadline");
            return TP_EDB;
        }
        struct pollfd pfd = {.fd = sock, .events = POLLIN};
        (void)poll(&pfd, 1, (int)left);
    }
    rc = 0;
    while ((res = PQgetResult(db->conn)) != NULL) {
        int r = check_result(db, res);
        if (r != 0 && rc == 0)
            rc = r;
        PQclear(res);
    }
    return rc == 0 ? 0 : TP_EDB;
}
