/* contract_env: the live system scripts/contract points schemathesis at: the e2e harness's
 * scratch database and topics, a tp-worker and a tp-ingress (from this build) on a free loopback
 * port. Prints `port=N`, `token=<admin JWT>`, `log=<ingress log>` and `ready`, then waits for its
 * standard input to close and tears everything down; exits non-zero when a child did not stop
 * cleanly (a sanitizer report makes the exit status non-zero). */
#include "support/e2e.h"
#include "tp/ingress.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* Forks tp-ingress (next to this executable) with the worker's config plus the port. */
static pid_t ingress_start(e2e *e, int port, const char *conf, const char *log_path) {
    char exe[1024], line[1024];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    FILE *in = fopen(e->config_path, "r"), *out = fopen(conf, "w");
    if (n <= 0 || !in || !out) {
        if (in)
            fclose(in);
        if (out)
            fclose(out);
        return -1;
    }
    exe[n] = '\0';
    snprintf(strrchr(exe, '/') + 1, sizeof(exe) - (size_t)(strrchr(exe, '/') + 1 - exe), "tp-ingress");
    while (fgets(line, sizeof(line), in))
        fputs(line, out);
    fprintf(out, "\ningress.listen_port = %d\n", port);
    fclose(in);
    fclose(out);
    pid_t pid = fork();
    if (pid == 0) {
        FILE *log = freopen(log_path, "a", stderr);
        (void)log;
        dup2(STDERR_FILENO, STDOUT_FILENO);
        e2e_child_env_clear();
        execl(exe, "tp-ingress", "--config", conf, (char *)NULL);
        _exit(127);
    }
    return pid;
}

/* SIGTERM, then up to 20 s; returns the exit status (128+signal when killed, -1 on a timeout). */
static int stop_child(pid_t pid) {
    int status = 0;
    kill(pid, SIGTERM);
    for (int i = 0; i < 400; i++) {
        if (waitpid(pid, &status, WNOHANG) == pid)
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        usleep(50000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return -1;
}

int main(void) {
    e2e e = {0};
    char conf[300], log_path[300], err[256], *token = NULL, buf[256];
    int rc = 1, port = e2e_free_port();
    pid_t ingress = -1;
    signal(SIGPIPE, SIG_IGN);
    /* A shared lock on the stack's fault lock: fault tests (which stop Kafka or OPA holding it
     * exclusively) wait until the contract run is over. */
    int lock_fd = open("/tmp/tp-stack-faults.lock", O_RDWR | O_CREAT, 0666);
    if (lock_fd < 0 || flock(lock_fd, LOCK_SH) != 0) {
        fprintf(stderr, "contract_env: cannot lock /tmp/tp-stack-faults.lock\n");
        return 1;
    }
    if (port <= 0 || e2e_setup(&e, "contract", NULL) != 0 || e2e_worker_start(&e, 0) != 0)
        goto out;
    snprintf(conf, sizeof(conf), "/tmp/tp-contract-%s.ingress.conf", e.suffix);
    snprintf(log_path, sizeof(log_path), "/tmp/tp-contract-%s.ingress.log", e.suffix);
    ingress = ingress_start(&e, port, conf, log_path);
    if (ingress <= 0)
        goto out;
    if (tp_auth_mint_dev(e.cfg, NULL, "contract-admin", "admin", 900, &token, err, sizeof(err)) != 0) {
        fprintf(stderr, "contract_env: mint: %s\n", err);
        goto out;
    }
    printf("port=%d\ntoken=%s\nlog=%s\nworker_log=%s\nready\n", port, token, log_path, e.log_path[0]);
    fflush(stdout);
    while (fread(buf, 1, sizeof(buf), stdin) > 0) /* until the script closes our stdin */
        ;
    rc = 0;
out:
    if (ingress > 0) {
        int st = stop_child(ingress);
        if (st != 0) {
            fprintf(stderr, "contract_env: tp-ingress exit status %d (log %s)\n", st, log_path);
            rc = 1;
        }
        unlink(conf);
    }
    if (e.workers[0] > 0) {
        int st = e2e_worker_stop(&e, 0, SIGTERM, 20000, NULL);
        if (st != 0) {
            fprintf(stderr, "contract_env: tp-worker exit status %d (log %s)\n", st, e.log_path[0]);
            rc = 1;
        }
    }
    e2e_teardown(&e);
    free(token);
    close(lock_fd); /* releases the shared lock */
    return rc;
}
