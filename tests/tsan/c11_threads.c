/* c11_threads.c: linked into every executable of the ThreadSanitizer build only (-DTP_TSAN=ON).
 * librdkafka uses glibc's C11 threads (thrd_create, mtx_*, cnd_*, call_once), which the
 * ThreadSanitizer runtimes of GCC 12 and clang 14 do not intercept: its threads start without
 * TSan state (they crash in TSan's allocator at their first malloc) and its locks are invisible
 * (every hand-over through a librdkafka queue would be reported as a race). These definitions in
 * the executable take precedence over glibc's and map each call onto the pthread function TSan
 * does intercept; glibc implements them the same way, on the same types. */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <threads.h>

_Static_assert(sizeof(mtx_t) == sizeof(pthread_mutex_t), "glibc: mtx_t is a pthread mutex");
_Static_assert(sizeof(cnd_t) == sizeof(pthread_cond_t), "glibc: cnd_t is a pthread condition");
_Static_assert(sizeof(thrd_t) == sizeof(pthread_t), "glibc: thrd_t is a pthread_t");
_Static_assert(sizeof(once_flag) == sizeof(pthread_once_t), "glibc: once_flag is a pthread_once_t");

static int to_thrd(int rc) {
    return rc == 0 ? thrd_success : rc == ENOMEM ? thrd_nomem : rc == ETIMEDOUT ? thrd_timedout
                                  : rc == EBUSY ? thrd_busy : thrd_error;
}

typedef struct thrd_start {
    thrd_start_t fn;
    void *arg;
} thrd_start;

static void *thrd_trampoline(void *p) {
    thrd_start s = *(thrd_start *)p;
    free(p);
    return (void *)(intptr_t)s.fn(s.arg); /* thrd_join reads the int back, as glibc's does */
}

int thrd_create(thrd_t *thr, thrd_start_t func, void *arg) {
    thrd_start *s = malloc(sizeof(*s));
    int rc;
    if (!s)
        return thrd_nomem;
    s->fn = func;
    s->arg = arg;
    rc = pthread_create((pthread_t *)thr, NULL, thrd_trampoline, s);
    if (rc != 0)
        free(s);
    return to_thrd(rc);
}

int thrd_join(thrd_t thr, int *res) {
    void *ret = NULL;
    int rc = pthread_join((pthread_t)thr, &ret);
    if (rc == 0 && res)
        *res = (int)(intptr_t)ret;
    return to_thrd(rc);
}

int mtx_init(mtx_t *mtx, int type) {
    pthread_mutexattr_t attr;
    int rc;
    pthread_mutexattr_init(&attr);
    if (type & mtx_recursive)
        pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
    rc = pthread_mutex_init((pthread_mutex_t *)mtx, &attr);
    pthread_mutexattr_destroy(&attr);
    return to_thrd(rc);
}

int mtx_lock(mtx_t *mtx) { return to_thrd(pthread_mutex_lock((pthread_mutex_t *)mtx)); }
int mtx_unlock(mtx_t *mtx) { return to_thrd(pthread_mutex_unlock((pthread_mutex_t *)mtx)); }
void mtx_destroy(mtx_t *mtx) { pthread_mutex_destroy((pthread_mutex_t *)mtx); }

int cnd_init(cnd_t *cond) { return to_thrd(pthread_cond_init((pthread_cond_t *)cond, NULL)); }
int cnd_signal(cnd_t *cond) { return to_thrd(pthread_cond_signal((pthread_cond_t *)cond)); }
int cnd_broadcast(cnd_t *cond) { return to_thrd(pthread_cond_broadcast((pthread_cond_t *)cond)); }
int cnd_wait(cnd_t *cond, mtx_t *mtx) {
    return to_thrd(pthread_cond_wait((pthread_cond_t *)cond, (pthread_mutex_t *)mtx));
}
int cnd_timedwait(cnd_t *restrict cond, mtx_t *restrict mtx, const struct timespec *restrict ts) {
    return to_thrd(pthread_cond_timedwait((pthread_cond_t *)cond, (pthread_mutex_t *)mtx, ts));
}
void cnd_destroy(cnd_t *cond) { pthread_cond_destroy((pthread_cond_t *)cond); }

void call_once(once_flag *flag, void (*func)(void)) { pthread_once((pthread_once_t *)flag, func); }
