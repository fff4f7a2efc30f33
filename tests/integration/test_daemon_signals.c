/* test_daemon_signals.c: tp-worker and tp-ingress ignore SIGPIPE from their first instruction
 * (issue 9 item 7): writing to a pipe nobody reads gives EPIPE instead of killing the daemon.
 * No stack needed: `--help` writes to a stdout whose reader is gone. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "support/e2e.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Runs `name --help` with stdout on a pipe whose read end is closed; returns the wait status. */
static int run_with_closed_stdout(const char *name) {
    char exe[1024];
    int fds[2], status = 0;
    assert_int_equal(e2e_bin_path(name, exe, sizeof(exe)), 0);
    assert_int_equal(pipe(fds), 0);
    close(fds[0]); /* nobody will read: the first write raises SIGPIPE */
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        signal(SIGPIPE, SIG_DFL); /* what a shell or supervisor hands a daemon */
        dup2(fds[1], STDOUT_FILENO);
        close(fds[1]);
        execl(exe, name, "--help", (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return status;
}

static void check(const char *name) {
    int status = run_with_closed_stdout(name);
    if (WIFSIGNALED(status))
        print_error("%s was killed by signal %d\n", name, WTERMSIG(status));
    assert_false(WIFSIGNALED(status));
    assert_true(WIFEXITED(status));
    assert_int_not_equal(WEXITSTATUS(status), 127);
}

static void test_worker_ignores_sigpipe(void **state) {
    (void)state;
    check("tp-worker");
}

static void test_ingress_ignores_sigpipe(void **state) {
    (void)state;
    check("tp-ingress");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_worker_ignores_sigpipe),
        cmocka_unit_test(test_ingress_ignores_sigpipe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
