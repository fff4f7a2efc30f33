/* contract_env: the live system scripts/contract points schemathesis at: the e2e harness's
 * scratch database and topics, a tp-worker and a tp-ingress (from this build) on a free loopback
 * port. Prints `port=N`, `token=<admin JWT>`, `log=<ingress log>` and `ready`, then waits for its
 * standard input to close and tears everything down; exits non-zero when a child did not stop
 * cleanly (a sanitizer report makes the exit status non-zero). */
#include "support/e2e.h"
#include "support/ingress.h"
#include "tp/ingress.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <unistd.h>

int main(void) {
    e2e e = {0};
    char err[256], *token = NULL, buf[256];
    int rc = 1;
    ingress_proc ingress = {0};
    signal(SIGPIPE, SIG_IGN);
    /* A shared lock on the stack's fault lock: fault tests (which stop Kafka or OPA holding it
     * exclusively) wait until the contract run is over. */
    int lock_fd = open("/tmp/tp-stack-faults.lock", O_RDWR | O_CREAT, 0666);
    if (lock_fd < 0 || flock(lock_fd, LOCK_SH) != 0) {
        fprintf(stderr, "contract_env: cannot lock /tmp/tp-stack-faults.lock\n");
        return 1;
    }
    if (e2e_setup(&e, "contract", NULL) != 0 || e2e_worker_start(&e, 0) != 0 ||
        ingress_start(&e, &ingress, "contract", NULL) != 0)
        goto out;
    if (tp_auth_mint_dev(e.cfg, NULL, "contract-admin", "admin", 900, &token, err, sizeof(err)) != 0) {
        fprintf(stderr, "contract_env: mint: %s\n", err);
        goto out;
    }
    printf("port=%d\ntoken=%s\nlog=%s\nworker_log=%s\nready\n", ingress.port, token, ingress.log_path,
           e.log_path[0]);
    fflush(stdout);
    while (fread(buf, 1, sizeof(buf), stdin) > 0) /* until the script closes our stdin */
        ;
    rc = 0;
out:
    if (ingress.pid > 0 && ingress_stop(&ingress) != 0) /* it says why, with its log */
        rc = 1;
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
