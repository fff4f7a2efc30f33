/* pgproxy.h: a loopback TCP proxy in front of the stack's PostgreSQL that a test can freeze:
 * while frozen it forwards nothing in either direction (connections stay open, the kernel still
 * acknowledges), which is what a SIGSTOPped or hung server looks like to a client, without
 * touching the shared server. */
#ifndef TP_PGPROXY_H
#define TP_PGPROXY_H

#include <stdbool.h>
#include <stddef.h>

typedef struct pgproxy pgproxy;

/* Starts a proxy to the server of dsn (URI or key=value; loopback) on a free port and writes into
 * out a copy of dsn pointing at the proxy. Returns NULL on failure (message on stderr). */
pgproxy *pgproxy_start(const char *dsn, char *out, size_t out_size);
/* Freezes (true) or thaws (false) every connection, present and future. */
void pgproxy_freeze(pgproxy *p, bool frozen);
/* Stops the thread, closes every connection and frees the proxy; NULL is allowed. */
void pgproxy_stop(pgproxy *p);

#endif
