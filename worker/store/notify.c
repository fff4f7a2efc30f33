/* notify.c: LISTEN/NOTIFY on a tp_db for event-driven callers (the outbox relay): the socket to
 * watch, LISTEN, and a non-blocking read of the notifications that arrived. */
#include "tp/store.h"
#include "tp/error.h"
#include "store_int.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <string.h>

static PGconn *conn_of(const tp_db *db) { return db ? db->conn : NULL; }

int tp_db_socket(const tp_db *db) {
    PGconn *conn = conn_of(db);
    if (!conn || PQstatus(conn) != CONNECTION_OK)
        return -1;
    return PQsocket(conn);
}

int tp_db_listen(tp_db *db, const char *channel) {
    PGconn *conn = conn_of(db);
    char sql[256];
    char *ident;
    int rc;
    if (!conn)
        return TP_EDB;
    ident = PQescapeIdentifier(conn, channel, strlen(channel));
    if (!ident)
        return TP_EDB;
    if ((size_t)snprintf(sql, sizeof(sql), "LISTEN %s", ident) >= sizeof(sql)) {
        PQfreemem(ident);
        return TP_EINVAL;
    }
    PQfreemem(ident);
    rc = tp_db_exec(db, sql, 0, NULL, NULL);
    return rc;
}

int tp_db_consume_notifies(tp_db *db, int *count) {
    PGconn *conn = conn_of(db);
    PGnotify *n;
    *count = 0;
    if (!conn || PQstatus(conn) != CONNECTION_OK)
        return TP_EDB;
    /* libpq keeps its socket non-blocking: this reads what has arrived and never waits. */
    if (!PQconsumeInput(conn))
        return TP_EDB;
    while ((n = PQnotifies(conn)) != NULL) {
        if (n->be_pid != PQbackendPID(conn)) /* our own NOTIFYs come back too: not news */
            (*count)++;
        PQfreemem(n);
    }
    return 0;
}
