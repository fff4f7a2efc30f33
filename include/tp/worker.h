/* worker.h: tp-worker's service: the librdkafka consumer group on a libuv loop, per-key ordering,
 * offset watermark, pause/resume, stage runs on the libuv thread pool, retries with backoff, DLQ,
 * the receipts relay, and a SIGTERM drain. */
#ifndef TP_WORKER_H
#define TP_WORKER_H

#include "tp/config.h"

/* Runs the worker until SIGTERM/SIGINT (then drains within worker.shutdown_grace_ms).
 * Returns the process exit status: 0 after a clean drain, 1 on a start-up failure. Loop thread. */
int tp_worker_run(const tp_config *cfg);

#endif
