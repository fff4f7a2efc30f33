/* pgproxy.c: the freezable loopback proxy of pgproxy.h: one thread, poll() over the listener and
 * every client/upstream pair. */
#include "support/pgproxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define PAIRS_MAX 32

struct pgproxy {
    int listen_fd;
    int upstream_port;
    int pairs[PAIRS_MAX][2]; /* client, upstream; -1 when free */
    atomic_bool frozen, stop;
    pthread_t thread;
};

/* The port of a DSN: URI host[:port] after the last '@' (or "://"), else "port=" (5432 if none).
 * *at/*len give where it is written (len 0: not written). */
static int dsn_port(const char *dsn, size_t *at, size_t *len) {
    const char *p, *q;
    *at = 0;
    *len = 0;
    if ((p = strstr(dsn, "://")) != NULL) {
        const char *host = strrchr(dsn, '@') ? strrchr(dsn, '@') + 1 : p + 3;
        const char *end = host + strcspn(host, "/?");
        for (q = host; q < end && *q != ':'; q++)
            ;
        if (q < end) {
            *at = (size_t)(q + 1 - dsn);
            *len = (size_t)(end - q - 1);
            return atoi(q + 1);
        }
        *at = (size_t)(end - dsn);
        return 5432;
    }
    if ((p = strstr(dsn, "port=")) != NULL) {
        *at = (size_t)(p + 5 - dsn);
        *len = strspn(p + 5, "0123456789");
        return atoi(p + 5);
    }
    *at = strlen(dsn);
    return 5432;
}

static void pair_close(pgproxy *p, int i) {
    for (int k = 0; k < 2; k++)
        if (p->pairs[i][k] >= 0)
            close(p->pairs[i][k]);
    p->pairs[i][0] = p->pairs[i][1] = -1;
}

static void accept_one(pgproxy *p) {
    int c = accept(p->listen_fd, NULL, NULL), u;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)p->upstream_port)};
    if (c < 0)
        return;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    u = socket(AF_INET, SOCK_STREAM, 0);
    if (u < 0 || connect(u, (struct sockaddr *)&a, sizeof(a)) != 0) {
        close(c);
        if (u >= 0)
            close(u);
        return;
    }
    for (int i = 0; i < PAIRS_MAX; i++) {
        if (p->pairs[i][0] < 0) {
            p->pairs[i][0] = c;
            p->pairs[i][1] = u;
            return;
        }
    }
    close(c);
    close(u);
}

static void *proxy_main(void *arg) {
    pgproxy *p = arg;
    while (!atomic_load(&p->stop)) {
        struct pollfd fds[1 + 2 * PAIRS_MAX];
        int map[1 + 2 * PAIRS_MAX], n = 0;
        bool frozen = atomic_load(&p->frozen);
        fds[n] = (struct pollfd){.fd = p->listen_fd, .events = POLLIN};
        map[n++] = -1;
        for (int i = 0; !frozen && i < PAIRS_MAX; i++) {
            if (p->pairs[i][0] < 0)
                continue;
            for (int k = 0; k < 2; k++) {
                fds[n] = (struct pollfd){.fd = p->pairs[i][k], .events = POLLIN};
                map[n++] = i * 2 + k;
            }
        }
        if (poll(fds, (nfds_t)n, 50) <= 0)
            continue;
        if (fds[0].revents & POLLIN)
            accept_one(p);
        for (int j = 1; j < n; j++) {
            int i = map[j] / 2, k = map[j] % 2;
            char buf[16384];
            ssize_t r;
            if (!fds[j].revents || p->pairs[i][0] < 0)
                continue;
            r = read(p->pairs[i][k], buf, sizeof(buf));
            if (r <= 0 || write(p->pairs[i][1 - k], buf, (size_t)r) != r)
                pair_close(p, i);
        }
    }
    return NULL;
}

pgproxy *pgproxy_start(const char *dsn, char *out, size_t out_size) {
    size_t at, len;
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t alen = sizeof(a);
    pgproxy *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    for (int i = 0; i < PAIRS_MAX; i++)
        p->pairs[i][0] = p->pairs[i][1] = -1;
    p->upstream_port = dsn_port(dsn, &at, &len);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    p->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    if (p->listen_fd < 0 || bind(p->listen_fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        listen(p->listen_fd, 64) != 0 ||
        getsockname(p->listen_fd, (struct sockaddr *)&a, &alen) != 0) {
        fprintf(stderr, "pgproxy: cannot listen\n");
        goto out_free;
    }
    {
        int port = ntohs(a.sin_port), w;
        bool uri = strstr(dsn, "://") != NULL;
        if (len == 0 && !strstr(dsn, "port=") && !uri)
            w = snprintf(out, out_size, "%s port=%d", dsn, port);
        else
            w = snprintf(out, out_size, "%.*s%s%d%s", (int)at, dsn, (uri && len == 0) ? ":" : "",
                         port, dsn + at + len);
        if (w < 0 || (size_t)w >= out_size) {
            fprintf(stderr, "pgproxy: DSN too long\n");
            goto out_free;
        }
    }
    if (pthread_create(&p->thread, NULL, proxy_main, p) != 0)
        goto out_free;
    return p;
out_free:
    if (p->listen_fd >= 0)
        close(p->listen_fd);
    free(p);
    return NULL;
}

void pgproxy_freeze(pgproxy *p, bool frozen) { atomic_store(&p->frozen, frozen); }

void pgproxy_stop(pgproxy *p) {
    if (!p)
        return;
    atomic_store(&p->stop, true);
    pthread_join(p->thread, NULL);
    for (int i = 0; i < PAIRS_MAX; i++)
        pair_close(p, i);
    close(p->listen_fd);
    free(p);
}
