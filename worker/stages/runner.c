/* runner.c: the stage tables (provisioning's seven, each tenant action's own list) and the runner:
 * records a request with its action and stage list, runs its pending stages in one transaction
 * (for a billing request with no row yet, the very one that records it: one commit in all), or
 * after an error each in its own transaction together with its stage marker, classifies failures
 * (transient → RETRYING and a retry verdict, permanent → terminal state) and prepares replays.
 * Synchronous, no sleeping. */
#include "stages_int.h"
#include "tp/error.h"
#include "tp/json_text.h"
#include "tp/log.h"
#include "tp/metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *const stage_names[TP_STAGE_COUNT_] = {
    "policy", "tenant", "namespace", "partitions", "quota", "receipts", "isolation", "state",
};

const tp_stage_def tp_stage_table[TP_PROVISION_STAGES] = {
    {TP_STAGE_POLICY, "policy", tp_stage_policy_prepare, tp_stage_policy_run},
    {TP_STAGE_TENANT, "tenant", NULL, tp_stage_tenant_run},
    {TP_STAGE_NAMESPACE, "namespace", NULL, tp_stage_namespace_run},
    {TP_STAGE_PARTITIONS, "partitions", NULL, tp_stage_partitions_run},
    {TP_STAGE_QUOTA, "quota", NULL, tp_stage_quota_run},
    {TP_STAGE_RECEIPTS, "receipts", NULL, tp_stage_receipts_run},
    {TP_STAGE_ISOLATION, "isolation", NULL, tp_stage_isolation_run},
};

/* The stages of each tenant action (stage_action.c; the isolation guard of stage_isolation.c):
 * the policy decision with the state check, the state change, the quota swap of a plan change,
 * the receipts, and the guard again where the tenant's isolation can change (a plan change moves
 * partitions between dedicated and shared) or the tenant comes back (resume). */
static const tp_stage_def change_plan_stages[] = {
    {TP_STAGE_POLICY, "policy", tp_stage_action_policy_prepare, tp_stage_action_policy_run},
    {TP_STAGE_STATE, "state", NULL, tp_stage_action_state_run},
    {TP_STAGE_QUOTA, "quota", NULL, tp_stage_action_quota_run},
    {TP_STAGE_RECEIPTS, "receipts", NULL, tp_stage_action_receipts_run},
    {TP_STAGE_ISOLATION, "isolation", NULL, tp_stage_action_isolation_run},
};
static const tp_stage_def suspend_stages[] = {
    {TP_STAGE_POLICY, "policy", tp_stage_action_policy_prepare, tp_stage_action_policy_run},
    {TP_STAGE_STATE, "state", NULL, tp_stage_action_state_run},
    {TP_STAGE_RECEIPTS, "receipts", NULL, tp_stage_action_receipts_run},
};
static const tp_stage_def resume_stages[] = {
    {TP_STAGE_POLICY, "policy", tp_stage_action_policy_prepare, tp_stage_action_policy_run},
    {TP_STAGE_STATE, "state", NULL, tp_stage_action_state_run},
    {TP_STAGE_RECEIPTS, "receipts", NULL, tp_stage_action_receipts_run},
    {TP_STAGE_ISOLATION, "isolation", NULL, tp_stage_action_isolation_run},
};
/* DEPROVISION has the same list as SUSPEND (policy → state → receipts). */

#define N_OF(a) ((int)(sizeof(a) / sizeof((a)[0])))

const tp_stage_def *tp_stage_list(tp_action action, int *n) {
    switch (action) {
    case TP_ACTION_CHANGE_PLAN:
        *n = N_OF(change_plan_stages);
        return change_plan_stages;
    case TP_ACTION_SUSPEND:
    case TP_ACTION_DEPROVISION:
        *n = N_OF(suspend_stages);
        return suspend_stages;
    case TP_ACTION_RESUME:
        *n = N_OF(resume_stages);
        return resume_stages;
    default:
        *n = TP_PROVISION_STAGES;
        return tp_stage_table;
    }
}

const char *tp_stage_name(tp_stage_id id) {
    if ((unsigned)id >= TP_STAGE_COUNT_)
        return "?";
    return stage_names[id];
}

int tp_stage_parse(const char *name, tp_stage_id *out) {
    for (int i = 0; name && i < TP_STAGE_COUNT_; i++) {
        if (strcmp(stage_names[i], name) == 0) {
            *out = (tp_stage_id)i;
            return 0;
        }
    }
    return TP_EINVAL;
}

int tp_stage_quota_tier(const tp_stage_ctx *ctx, tp_plan plan, tp_quota_tier *out) {
    if (ctx->env->tiers && (unsigned)plan <= TP_PLAN_ENTERPRISE) {
        *out = ctx->env->tiers[plan];
        return 0;
    }
    return tp_quota_tiers_get(ctx->env->tiers_json, plan, out);
}

const char *tp_stage_reason_of(int err) {
    const char *n = tp_err_name(err);
    return strncmp(n, "TP_E", 4) == 0 ? n + 4 : n;
}

int64_t tp_stage_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void tp_stage_fmt(char *dst, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(dst, cap, fmt, ap);
    va_end(ap);
}

void tp_stage_set_terminal(tp_stage_ctx *ctx, int status, const char *reason, const char *fmt, ...) {
    va_list ap;
    ctx->terminal = status;
    snprintf(ctx->reason, sizeof(ctx->reason), "%s", reason);
    va_start(ap, fmt);
    vsnprintf(ctx->message, sizeof(ctx->message), fmt, ap);
    va_end(ap);
}

int tp_stage_db_error(tp_stage_ctx *ctx, int rc, const char *what) {
    snprintf(ctx->message, sizeof(ctx->message), "%s: %s (SQLSTATE %s)", what,
             tp_db_errmsg(ctx->db), tp_db_sqlstate(ctx->db));
    return rc;
}

#define STAGE_LIST_MAX 96 /* "{policy,tenant,namespace,partitions,quota,receipts,isolation}" */

/* The twelve parameters that record a request (see tp_stages_accept): ten of the request, its
 * stage names as a text[] literal, its action; *own receives the payload text when this
 * serialised it (free it). Returns 0 or TP_ENOMEM. */
static int request_params(const tp_request *req, const char *payload_json_or_null,
                          const char *origin_topic, int partition, int64_t offset, char **own,
                          char pbuf[16], char obuf[32], char sbuf[STAGE_LIST_MAX],
                          const char *params[12]) {
    int n;
    const tp_stage_def *list = tp_stage_list(req->action, &n);
    size_t used = 0;
    const char *payload = payload_json_or_null;
    *own = NULL;
    if (!payload) {
        if (!(*own = tp_stages_request_json(req)))
            return TP_ENOMEM;
        payload = *own;
    }
    snprintf(pbuf, 16, "%d", partition);
    snprintf(obuf, 32, "%lld", (long long)offset);
    params[0] = req->request_id;
    params[1] = req->idempotency_key[0] ? req->idempotency_key : NULL;
    params[2] = req->actor.id;
    params[3] = req->actor.type;
    params[4] = tp_source_name(req->source);
    params[5] = req->tenant.slug;
    params[6] = payload;
    params[7] = origin_topic;
    params[8] = origin_topic ? pbuf : NULL;
    params[9] = origin_topic ? obuf : NULL;
    sbuf[used++] = '{';
    for (int i = 0; i < n; i++)
        used += (size_t)snprintf(sbuf + used, STAGE_LIST_MAX - used, "%s%s", i ? "," : "",
                                 list[i].name);
    snprintf(sbuf + used, STAGE_LIST_MAX - used, "}");
    params[10] = sbuf;
    params[11] = tp_action_name(req->action);
    return 0;
}

/* The insert of a request row (with its action) and, only when it is new, one PENDING condition
 * per stage of its list. */
#define INSERT_REQUEST_CTES(state)                                                                  \
    "WITH ins AS (INSERT INTO provisioning_requests (request_id, idempotency_key, actor_id, "      \
    "actor_type, source, tenant_slug, payload, payload_fingerprint, origin_topic, "                \
    "origin_partition, origin_offset, state, action) VALUES ($1, $2, $3, $4, $5, $6, "             \
    "$7::text::jsonb, encode(sha256(convert_to($7::text, 'UTF8')), 'hex'), $8, $9::int, "          \
    "$10::bigint, " state ", $12) ON CONFLICT (request_id) DO NOTHING RETURNING request_id), "     \
    "stg AS (INSERT INTO provisioning_stages (request_id, stage, ordinal) "                         \
    "SELECT ins.request_id, s.name, s.ord FROM ins, unnest($11::text[]) WITH ORDINALITY AS "       \
    "s(name, ord)) "

int tp_stages_accept(tp_db *db, const tp_request *req, const char *payload_json_or_null,
                     const char *origin_topic, int partition, int64_t offset) {
    char *own, pbuf[16], obuf[32], sbuf[STAGE_LIST_MAX];
    const char *params[12];
    int rc = request_params(req, payload_json_or_null, origin_topic, partition, offset, &own, pbuf,
                            obuf, sbuf, params);
    if (rc != 0)
        return rc;
    /* One statement: the request row, then one PENDING condition per stage (the stages are only
     * inserted when the request row is new). */
    rc = tp_db_exec(db, INSERT_REQUEST_CTES("'ACCEPTED'") "SELECT 1", 12, params,
                    NULL);
    free(own);
    return rc;
}

typedef struct request_row {
    bool found;
    char state[16];
    char reason[64];
    char message[512];
    char tenant_id[64];
    char action[16];                /* the action and slug the request was recorded with */
    char slug[TP_SLUG_MAX + 1];
    bool done[TP_STAGE_COUNT_];     /* per stage: SUCCEEDED */
    int attempts[TP_STAGE_COUNT_];  /* per stage: attempts so far */
} request_row;

/* Parses "stage:STATUS:attempts,..." into row->done and row->attempts. */
static void parse_stages(const char *list, request_row *row) {
    for (const char *p = list; p && *p;) {
        char name[32], status[16];
        int attempts = 0;
        tp_stage_id id;
        if (sscanf(p, "%31[^:]:%15[^:]:%d", name, status, &attempts) == 3 &&
            tp_stage_parse(name, &id) == 0) {
            row->done[id] = strcmp(status, "SUCCEEDED") == 0;
            row->attempts[id] = attempts;
        }
        p = strchr(p, ',');
        if (p)
            p++;
    }
}

static void fill_row(const tp_res *res, request_row *row) {
    row->found = true;
    snprintf(row->state, sizeof(row->state), "%s", tp_res_get(res, 0, 0));
    snprintf(row->reason, sizeof(row->reason), "%s", tp_res_get(res, 0, 1));
    snprintf(row->message, sizeof(row->message), "%s", tp_res_get(res, 0, 2));
    snprintf(row->tenant_id, sizeof(row->tenant_id), "%s", tp_res_get(res, 0, 3));
    parse_stages(tp_res_get(res, 0, 4), row);
    if (tp_res_ncols(res) > 6) {
        snprintf(row->action, sizeof(row->action), "%s", tp_res_get(res, 0, 5));
        snprintf(row->slug, sizeof(row->slug), "%s", tp_res_get(res, 0, 6));
    }
}

/* One round trip at the start of a run: records the request if it is new (straight into RUNNING),
 * moves an ACCEPTED one to RUNNING, and reads its state, tenant and stage conditions (as they
 * were before this statement: a new request has one PENDING condition per stage). */
static int start_request(tp_db *db, const tp_stage_env *env, const tp_request *req,
                         request_row *row) {
    char *own, pbuf[16], obuf[32], sbuf[STAGE_LIST_MAX];
    const char *params[12];
    tp_res *res = NULL;
    int rc = request_params(req, NULL, env->origin_topic, env->origin_partition,
                            env->origin_offset, &own, pbuf, obuf, sbuf, params);
    memset(row, 0, sizeof(*row));
    if (rc != 0)
        return rc;
    rc = tp_db_query(db,
                     INSERT_REQUEST_CTES("'RUNNING'")
                     ", upd AS (UPDATE provisioning_requests SET state = 'RUNNING', updated_at = "
                     "clock_timestamp() WHERE request_id = $1 AND state = 'ACCEPTED') "
                     "SELECT 'RUNNING', '', '', '', '', $12, $6 FROM ins UNION ALL "
                     "SELECT CASE r.state WHEN 'ACCEPTED' THEN 'RUNNING' ELSE r.state END, "
                     "coalesce(r.failure_reason, ''), coalesce(r.failure_message, ''), "
                     "coalesce(r.tenant_id, ''), coalesce((SELECT string_agg(s.stage || ':' || "
                     "s.status || ':' || s.attempts, ',') FROM provisioning_stages s WHERE "
                     "s.request_id = r.request_id), ''), r.action, r.tenant_slug "
                     "FROM provisioning_requests r WHERE r.request_id = $1",
                     12, params, &res);
    free(own);
    if (rc != 0)
        return rc;
    if (tp_res_nrows(res) == 1)
        fill_row(res, row);
    tp_res_free(res);
    return 0;
}

/* The one-commit path's first statement, inside its transaction: records a request that has no
 * row yet directly in the state a run through every stage commits (SUCCEEDED; a terminal outcome
 * rewrites it before COMMIT), without stage rows (written at the end, once, in their final
 * state). Nobody sees it before COMMIT; a second runner of the same request waits here for ours
 * and then finds the row. *claimed is false when a row exists (written by tp-ingress, an earlier
 * run, or another runner meanwhile): nothing was written. Returns 0 or TP_E*. */
static int claim_new_request(tp_db *db, const tp_stage_env *env, const tp_request *req,
                             bool *claimed) {
    char *own, pbuf[16], obuf[32], sbuf[STAGE_LIST_MAX];
    const char *params[12], *p11[11];
    int64_t affected = 0;
    int rc = request_params(req, NULL, env->origin_topic, env->origin_partition,
                            env->origin_offset, &own, pbuf, obuf, sbuf, params);
    *claimed = false;
    if (rc != 0)
        return rc;
    memcpy(p11, params, 10 * sizeof(p11[0])); /* all but the stage list ($11 here: the action) */
    p11[10] = params[11];
    rc = tp_db_exec(db,
                    "INSERT INTO provisioning_requests (request_id, idempotency_key, actor_id, "
                    "actor_type, source, tenant_slug, payload, payload_fingerprint, origin_topic, "
                    "origin_partition, origin_offset, state, action, finished_at) VALUES ($1, $2, "
                    "$3, $4, $5, $6, $7::text::jsonb, encode(sha256(convert_to($7::text, 'UTF8')), "
                    "'hex'), $8, $9::int, $10::bigint, 'SUCCEEDED', $11, clock_timestamp()) "
                    "ON CONFLICT (request_id) DO NOTHING",
                    11, p11, &affected);
    free(own);
    *claimed = rc == 0 && affected == 1;
    return rc;
}

/* Reads the request back (after the last marker of a crashed run). */
static int load_request(tp_db *db, const char *request_id, request_row *row) {
    tp_res *res = NULL;
    const char *params[1] = {request_id};
    int rc = tp_db_query(db,
                         "SELECT state, coalesce(failure_reason, ''), coalesce(failure_message, ''), "
                         "coalesce(tenant_id, ''), '' FROM provisioning_requests WHERE request_id = $1",
                         1, params, &res);
    memset(row, 0, sizeof(*row));
    if (rc != 0)
        return rc;
    if (tp_res_nrows(res) == 1)
        fill_row(res, row);
    tp_res_free(res);
    return 0;
}

/* Fills out from a terminal request row; returns true when the row is terminal. */
static bool terminal_outcome(const request_row *row, tp_run_result *out) {
    if (strcmp(row->state, "SUCCEEDED") == 0)
        out->status = TP_RUN_SUCCEEDED;
    else if (strcmp(row->state, "FAILED") == 0)
        out->status = TP_RUN_FAILED;
    else if (strcmp(row->state, "DENIED") == 0)
        out->status = TP_RUN_DENIED;
    else
        return false;
    snprintf(out->failure_reason, sizeof(out->failure_reason), "%s", row->reason);
    snprintf(out->message, sizeof(out->message), "%s", row->message);
    snprintf(out->tenant_id, sizeof(out->tenant_id), "%s", row->tenant_id);
    return true;
}

/* Records a transient failure in its own transaction; fails the request when both budgets are
 * spent: max_attempts attempts, and max_elapsed_ms since the stage's first attempt (so an outage
 * of a dependency shorter than that never ends a request, however fast the attempts come). */
static int record_retry(tp_stage_ctx *ctx, const tp_stage_def *def, int err, tp_run_result *out) {
    tp_db *db = ctx->db;
    tp_res *res = NULL;
    char maxbuf[16], elapsedbuf[32];
    int max = ctx->env->max_attempts > 0 ? ctx->env->max_attempts : 8, rc;
    int64_t attempts = 0;
    bool exhausted = false;
    snprintf(maxbuf, sizeof(maxbuf), "%d", max);
    snprintf(elapsedbuf, sizeof(elapsedbuf), "%lld",
             (long long)(ctx->env->max_elapsed_ms > 0 ? ctx->env->max_elapsed_ms : 0));
    const char *params[6] = {ctx->req->request_id, def->name, tp_stage_reason_of(err),
                             ctx->message[0] ? ctx->message : tp_strerror(err), maxbuf, elapsedbuf};
    if ((rc = tp_db_begin(db)) != 0)
        goto out_err;
    rc = tp_db_query(db,
                     "WITH s AS (SELECT attempts + 1 >= $5::int AND clock_timestamp() - "
                     "coalesce(started_at, now()) >= $6::bigint * interval '1 millisecond' AS done "
                     "FROM provisioning_stages WHERE request_id = $1 AND stage = $2) "
                     "UPDATE provisioning_stages SET attempts = attempts + 1, "
                     "status = CASE WHEN s.done THEN 'FAILED' ELSE 'RETRYING' END, "
                     "reason = $3, message = $4, started_at = coalesce(started_at, now()), "
                     "finished_at = CASE WHEN s.done THEN clock_timestamp() END, "
                     "updated_at = clock_timestamp() FROM s "
                     "WHERE request_id = $1 AND stage = $2 AND status <> 'SUCCEEDED' "
                     "RETURNING attempts, s.done",
                     6, params, &res);
    if (rc != 0)
        goto out_err;
    if (tp_res_nrows(res) == 1) {
        tp_res_get_int64(res, 0, 0, &attempts);
        exhausted = strcmp(tp_res_get(res, 0, 1), "t") == 0;
    }
    tp_res_free(res);
    res = NULL;
    out->stage = def->id;
    out->attempts = (int)attempts;
    out->err = err;
    snprintf(out->message, sizeof(out->message), "%s", params[3]);
    if (exhausted) {
        char msg[700];
        snprintf(msg, sizeof(msg), "stage %s failed %lld times; last error %s: %s", def->name,
                 (long long)attempts, params[2], params[3]);
        const char *fparams[2] = {ctx->req->request_id, msg};
        rc = tp_db_exec(db,
                        "UPDATE provisioning_requests SET state = 'FAILED', failure_reason = "
                        "'RETRIES_EXHAUSTED', failure_message = $2, finished_at = clock_timestamp(), "
                        "updated_at = clock_timestamp() WHERE request_id = $1",
                        2, fparams, NULL);
        if (rc != 0)
            goto out_err;
        out->status = TP_RUN_FAILED;
        snprintf(out->failure_reason, sizeof(out->failure_reason), "RETRIES_EXHAUSTED");
        tp_stage_fmt(out->message, sizeof(out->message), "%s", msg);
    } else {
        out->status = TP_RUN_RETRY;
    }
    if ((rc = tp_db_commit(db)) != 0)
        goto out_err;
    return 0;
out_err:
    tp_res_free(res);
    tp_db_rollback(db);
    return rc;
}

/* Records a permanent failure (request FAILED with the error's reason) in its own transaction. */
static int record_failure(tp_stage_ctx *ctx, const tp_stage_def *def, int err, tp_run_result *out) {
    tp_db *db = ctx->db;
    const char *reason = tp_stage_reason_of(err);
    const char *msg = ctx->message[0] ? ctx->message : tp_strerror(err);
    const char *params[4] = {ctx->req->request_id, def->name, reason, msg};
    int rc;
    if ((rc = tp_db_begin(db)) != 0)
        goto out_err;
    rc = tp_db_exec(db,
                    "UPDATE provisioning_stages SET attempts = attempts + 1, status = 'FAILED', "
                    "reason = $3, message = $4, started_at = coalesce(started_at, now()), "
                    "finished_at = clock_timestamp(), updated_at = clock_timestamp() "
                    "WHERE request_id = $1 AND stage = $2",
                    4, params, NULL);
    if (rc != 0)
        goto out_err;
    rc = tp_db_exec(db,
                    "UPDATE provisioning_requests SET state = 'FAILED', failure_reason = $3, "
                    "failure_message = $2 || ': ' || $4, finished_at = clock_timestamp(), "
                    "updated_at = clock_timestamp() WHERE request_id = $1",
                    4, params, NULL);
    if (rc != 0)
        goto out_err;
    if ((rc = tp_db_commit(db)) != 0)
        goto out_err;
    out->status = TP_RUN_FAILED;
    out->stage = def->id;
    out->err = err;
    snprintf(out->failure_reason, sizeof(out->failure_reason), "%s", reason);
    tp_stage_fmt(out->message, sizeof(out->message), "%s: %s", def->name, msg);
    return 0;
out_err:
    tp_db_rollback(db);
    return rc;
}

enum { STAGE_DONE = 0, STAGE_STOP = 1 };

/* What an action's state stage left for the receipts stage, once its transaction rolled back. */
static void forget_action_state(tp_stage_ctx *ctx) {
    json_decref(ctx->action_state);
    ctx->action_state = NULL;
    json_decref(ctx->action_quota);
    ctx->action_quota = NULL;
}

/* Forgets what the last stage run left on ctx (output, terminal outcome, messages). */
static void clear_outcome(tp_stage_ctx *ctx) {
    json_decref(ctx->output);
    ctx->output = NULL;
    ctx->terminal = 0;
    ctx->reason[0] = ctx->message[0] = '\0';
}

/* Runs def's prepare step (network calls, outside any transaction) once per run: the one-
 * transaction path and the per-stage path after it share the result, so OPA is asked once. A
 * failure keeps its message for the per-stage path to record. */
static int prepare_stage(tp_stage_ctx *ctx, const tp_stage_def *def) {
    if (!def->prepare)
        return 0;
    if (!ctx->prepared) {
        ctx->prepare_rc = def->prepare(ctx);
        ctx->prepared = true;
        snprintf(ctx->prepare_message, sizeof(ctx->prepare_message), "%s", ctx->message);
    } else if (ctx->prepare_rc != 0) {
        snprintf(ctx->message, sizeof(ctx->message), "%s", ctx->prepare_message);
    }
    return ctx->prepare_rc;
}

/* Writes the stage marker (and a terminal request state, or SUCCEEDED after the last stage of
 * the request's list) in the open transaction. */
static int write_marker(tp_stage_ctx *ctx, const tp_stage_def *def, int attempt, bool last) {
    char abuf[16];
    char *output = ctx->output ? tp_json_text(ctx->output, 0, NULL) : NULL;
    const char *state = ctx->terminal == TP_RUN_DENIED ? "DENIED" : "FAILED";
    int rc;
    snprintf(abuf, sizeof(abuf), "%d", attempt);
    const char *params[7] = {ctx->req->request_id, def->name, abuf, output,
                             ctx->terminal ? "FAILED" : "SUCCEEDED",
                             ctx->terminal ? ctx->reason : NULL,
                             ctx->terminal ? ctx->message : NULL};
    rc = tp_db_exec(ctx->db,
                    "UPDATE provisioning_stages SET status = $5, attempts = $3::int, output = $4::jsonb, "
                    "reason = $6, message = $7, started_at = coalesce(started_at, now()), "
                    "finished_at = clock_timestamp(), updated_at = clock_timestamp() "
                    "WHERE request_id = $1 AND stage = $2",
                    7, params, NULL);
    free(output);
    if (rc != 0)
        return tp_stage_db_error(ctx, rc, "stage marker");
    if (ctx->terminal) {
        const char *rp[4] = {ctx->req->request_id, state, ctx->reason, ctx->message};
        rc = tp_db_exec(ctx->db,
                        "UPDATE provisioning_requests SET state = $2, failure_reason = $3, "
                        "failure_message = $4, finished_at = clock_timestamp(), "
                        "updated_at = clock_timestamp() WHERE request_id = $1",
                        4, rp, NULL);
    } else if (last) {
        const char *rp[1] = {ctx->req->request_id};
        rc = tp_db_exec(ctx->db,
                        "UPDATE provisioning_requests SET state = 'SUCCEEDED', failure_reason = NULL, "
                        "failure_message = NULL, finished_at = clock_timestamp(), "
                        "updated_at = clock_timestamp() WHERE request_id = $1",
                        1, rp, NULL);
    }
    if (rc != 0)
        return tp_stage_db_error(ctx, rc, "request state");
    return 0;
}

/* Fills out with the terminal outcome a stage committed (FAILED or DENIED) and logs it. */
static void report_terminal(const tp_stage_ctx *ctx, const tp_stage_def *def, int attempt,
                            tp_run_result *out) {
    tp_log_ctx lctx = {ctx->req->request_id, def->name, attempt, ctx->req->traceparent};
    out->status = (tp_run_status)ctx->terminal;
    out->stage = def->id;
    out->attempts = attempt;
    out->err = ctx->terminal == TP_RUN_DENIED ? TP_EPOLICY_DENIED : 0;
    snprintf(out->failure_reason, sizeof(out->failure_reason), "%s", ctx->reason);
    snprintf(out->message, sizeof(out->message), "%s", ctx->message);
    tp_log(TP_LOG_WARN, "stages", &lctx, "request %s: %s",
           ctx->terminal == TP_RUN_DENIED ? "DENIED" : "FAILED", ctx->reason);
}

/* Runs one stage; returns STAGE_DONE (go on), STAGE_STOP (out filled) or a negative code when
 * even the failure could not be recorded (out filled with a RETRY verdict). */
static int run_stage(tp_stage_ctx *ctx, const tp_stage_def *def, int prev_attempts, bool last,
                     tp_run_result *out) {
    tp_db *db = ctx->db;
    tp_res *res = NULL;
    tp_log_ctx lctx = {ctx->req->request_id, def->name, prev_attempts + 1, ctx->req->traceparent};
    int rc, attempt = prev_attempts + 1;
    const char *params[2] = {ctx->req->request_id, def->name};

    clear_outcome(ctx);

    if ((rc = prepare_stage(ctx, def)) != 0)
        goto out_fail;
    ctx->chain_known = false; /* a new transaction: the tenant lock is taken again */
    if ((rc = tp_db_begin(db)) != 0)
        goto out_fail;
    /* The stage row lock serialises two runners of one request (a redelivery after a rebalance):
     * the second one finds the marker and does nothing. */
    rc = tp_db_query(db,
                     "SELECT status, attempts FROM provisioning_stages WHERE request_id = $1 "
                     "AND stage = $2 FOR UPDATE",
                     2, params, &res);
    if (rc != 0) {
        tp_stage_db_error(ctx, rc, "stage lock");
        goto out_fail;
    }
    if (tp_res_nrows(res) != 1) {
        snprintf(ctx->message, sizeof(ctx->message), "no condition row for stage %s", def->name);
        rc = TP_EDB_PERMANENT;
        goto out_fail;
    }
    if (strcmp(tp_res_get(res, 0, 0), "SUCCEEDED") == 0) {
        tp_res_free(res);
        tp_db_rollback(db);
        return STAGE_DONE;
    }
    {
        int64_t a = 0;
        tp_res_get_int64(res, 0, 1, &a);
        attempt = (int)a + 1;
        lctx.attempt = attempt;
    }
    tp_res_free(res);
    res = NULL;
    if (!ctx->tenant_id[0] && def->id > TP_STAGE_TENANT) {
        /* Another runner of this request did the tenant stage after we loaded the request. */
        rc = tp_db_query_text(db, "SELECT tenant_id FROM provisioning_requests WHERE request_id = $1",
                              1, params, ctx->tenant_id, sizeof(ctx->tenant_id), NULL);
        if (rc != 0) {
            tp_stage_db_error(ctx, rc, "read tenant id");
            goto out_fail;
        }
    }
    uint64_t t0 = tp_metrics_now_ns();
    rc = def->run(ctx);
    tp_metrics_stage_observe(def->id, def->name, tp_metrics_now_ns() - t0);
    if (rc != 0)
        goto out_fail;
    if ((rc = write_marker(ctx, def, attempt, last)) != 0)
        goto out_fail;
    if ((rc = tp_db_commit(db)) != 0) {
        tp_stage_db_error(ctx, rc, "commit");
        goto out_fail;
    }
    if (ctx->terminal) {
        report_terminal(ctx, def, attempt, out);
        return STAGE_STOP;
    }
    tp_log(TP_LOG_DEBUG, "stages", &lctx, "stage succeeded");
    return STAGE_DONE;

out_fail:
    tp_res_free(res);
    tp_db_rollback(db);
    forget_action_state(ctx); /* rolled back with the transaction */
    if (!ctx->message[0])
        snprintf(ctx->message, sizeof(ctx->message), "%s", tp_strerror(rc));
    tp_log(tp_err_is_transient(rc) ? TP_LOG_WARN : TP_LOG_ERROR, "stages", &lctx,
           "stage failed: %s: %s", tp_err_name(rc), ctx->message);
    int rrc = tp_err_is_transient(rc) ? record_retry(ctx, def, rc, out)
                                      : record_failure(ctx, def, rc, out);
    if (rrc != 0) {
        /* The database itself is failing: report a retry without a recorded attempt. */
        out->status = TP_RUN_RETRY;
        out->stage = def->id;
        out->attempts = attempt;
        out->err = rrc;
        tp_stage_fmt(out->message, sizeof(out->message), "%s (could not record: %s)", ctx->message,
                 tp_db_errmsg(db));
        return rrc; /* a permanent one is the caller's to dead-letter, not to retry forever */
    }
    return STAGE_STOP;
}

/* In the one-transaction path's open transaction: locks the request's stage rows (in order) and
 * reads their statuses and attempts into done[] and attempts[], and the request's tenant into
 * ctx->tenant_id when ctx has none. Returns 0, or -1 (the caller rolls back and falls back). */
static int lock_stage_rows(tp_stage_ctx *ctx, int n, bool done[TP_STAGE_COUNT_],
                           int attempts[TP_STAGE_COUNT_]) {
    tp_res *res = NULL;
    const char *params[1] = {ctx->req->request_id};
    /* The stage rows locked in order serialise two runners of one request (a redelivery after a
     * rebalance), as the per-stage path's one-row lock does; their statuses are read again under
     * the lock, with the tenant another runner may have created. */
    int rc = tp_db_query(ctx->db,
                         "SELECT s.stage, s.status, s.attempts, coalesce((SELECT r.tenant_id FROM "
                         "provisioning_requests r WHERE r.request_id = $1), '') FROM "
                         "provisioning_stages s WHERE s.request_id = $1 ORDER BY s.ordinal FOR UPDATE",
                         1, params, &res);
    if (rc != 0 || tp_res_nrows(res) != n)
        goto out_fail;
    for (int r = 0; r < n; r++) {
        tp_stage_id id;
        int64_t a = 0;
        if (tp_stage_parse(tp_res_get(res, r, 0), &id) != 0)
            goto out_fail;
        done[id] = strcmp(tp_res_get(res, r, 1), "SUCCEEDED") == 0;
        tp_res_get_int64(res, r, 2, &a);
        attempts[id] = (int)a;
    }
    if (!ctx->tenant_id[0])
        snprintf(ctx->tenant_id, sizeof(ctx->tenant_id), "%s", tp_res_get(res, 0, 3));
    tp_res_free(res);
    return 0;
out_fail:
    tp_res_free(res);
    return -1;
}

/* The end of the one-transaction path (params: request id, the markers as a JSON array of
 * {stage, ordinal, attempts, output, status, reason, message}, the request's new state or NULL
 * to leave it, its failure reason and message): the stage rows updated to their markers ... */
#define REQUEST_OUTCOME_SQL                                                                         \
    "UPDATE provisioning_requests SET state = $3, failure_reason = $4, failure_message = $5, "     \
    "finished_at = clock_timestamp(), updated_at = clock_timestamp() WHERE request_id = $1 AND "   \
    "$3::text IS NOT NULL"
#define UPDATE_MARKERS_SQL                                                                          \
    "WITH m AS (UPDATE provisioning_stages s SET status = v.status, attempts = v.attempts, "       \
    "output = nullif(v.output, 'null'), reason = v.reason, message = v.message, started_at = "      \
    "coalesce(s.started_at, now()), finished_at = clock_timestamp(), updated_at = "                 \
    "clock_timestamp() FROM jsonb_to_recordset($2::jsonb) AS v(stage text, attempts int, output "   \
    "jsonb, status text, reason text, message text) WHERE s.request_id = $1 AND s.stage = "         \
    "v.stage) " REQUEST_OUTCOME_SQL
/* ... or, for a fresh request, inserted (every stage of its list: one a run did not reach is
 * PENDING with no times, as tp_stages_accept would have left it). */
#define INSERT_FINAL_STAGES_SQL                                                                     \
    "WITH m AS (INSERT INTO provisioning_stages (request_id, stage, ordinal, status, attempts, "   \
    "output, reason, message, started_at, finished_at, updated_at) SELECT $1, v.stage, "            \
    "v.ordinal, v.status, v.attempts, nullif(v.output, 'null'), v.reason, v.message, CASE WHEN "    \
    "v.attempts > 0 THEN now() END, CASE WHEN v.attempts > 0 THEN clock_timestamp() END, "          \
    "clock_timestamp() FROM jsonb_to_recordset($2::jsonb) AS v(stage text, ordinal int, attempts "  \
    "int, output jsonb, status text, reason text, message text)) " REQUEST_OUTCOME_SQL

/* The happy path in one transaction: every stage that has not SUCCEEDED runs in ONE transaction
 * (the policy decision is asked before it, outside), its markers and the request's new state are
 * written by one statement at the end, and one COMMIT makes it all durable. fresh (a request
 * with no row yet, see run_request): the transaction's first statement records the request
 * (claim_new_request) instead of locking stage rows, and its last one inserts the stage rows in
 * their final state instead of updating them, so the run costs one COMMIT in all and writes
 * each of those rows once. Returns STAGE_STOP with out filled when committed; STAGE_DONE when
 * nothing was written (any error, or fresh and the row exists: rolled back), and the caller then
 * takes the next path, which records retries and failures exactly as before. */
static int run_single_tx(tp_stage_ctx *ctx, const tp_stage_def *list, int n, bool need_policy,
                         bool fresh, tp_run_result *out) {
    tp_db *db = ctx->db;
    json_t *markers = json_array();
    char *markers_text = NULL, tenant_before[64];
    const tp_stage_def *last = NULL;
    int rc, attempts[TP_STAGE_COUNT_] = {0};
    bool done[TP_STAGE_COUNT_] = {false};

    snprintf(tenant_before, sizeof(tenant_before), "%s", ctx->tenant_id);
    if (!markers)
        return STAGE_DONE;
    if (need_policy && prepare_stage(ctx, &list[0]) != 0)
        goto out_fallback; /* OPA unavailable: the per-stage path records the retry */
    ctx->chain_known = false;
    ctx->one_tx = true;
    if (tp_db_begin(db) != 0)
        goto out_fallback;
    if (fresh) {
        bool claimed = false;
        if (claim_new_request(db, ctx->env, ctx->req, &claimed) != 0 || !claimed)
            goto out_fallback; /* a row exists (or an error): today's path takes it from here */
    } else if (lock_stage_rows(ctx, n, done, attempts) != 0) {
        goto out_fallback;
    }

    for (int i = 0; i < n; i++) {
        const tp_stage_def *def = &list[i];
        tp_log_ctx lctx = {ctx->req->request_id, def->name, attempts[def->id] + 1, ctx->req->traceparent};
        if (done[def->id])
            continue;
        clear_outcome(ctx);
        uint64_t t0 = tp_metrics_now_ns();
        rc = def->run(ctx);
        tp_metrics_stage_observe(def->id, def->name, tp_metrics_now_ns() - t0);
        if (rc != 0) {
            tp_log(TP_LOG_DEBUG, "stages", &lctx, "%s path: %s (%s); %s now",
                   fresh ? "one-commit" : "one-transaction", tp_err_name(rc), ctx->message,
                   fresh ? "the request recorded first" : "per stage");
            goto out_fallback;
        }
        if (json_array_append_new(markers, json_pack("{s:s, s:i, s:i, s:O?, s:s, s:s?, s:s?}",
                                                     "stage", def->name, "ordinal", i + 1,
                                                     "attempts", attempts[def->id] + 1,
                                                     "output", ctx->output, "status",
                                                     ctx->terminal ? "FAILED" : "SUCCEEDED",
                                                     "reason", ctx->terminal ? ctx->reason : NULL,
                                                     "message", ctx->terminal ? ctx->message : NULL)) != 0)
            goto out_fallback;
        last = def;
        if (ctx->terminal)
            break;
    }
    if (!last)
        goto out_fallback; /* another runner finished every stage meanwhile */
    for (int i = (int)(last - list) + 1; fresh && i < n; i++) {
        /* Stages after a terminal outcome stay PENDING, as the rows recorded up front would. */
        if (json_array_append_new(markers, json_pack("{s:s, s:i, s:i, s:s}", "stage", list[i].name,
                                                     "ordinal", i + 1, "attempts", 0, "status",
                                                     "PENDING")) != 0)
            goto out_fallback;
    }
    markers_text = tp_json_text(markers, 0, NULL);
    if (!markers_text)
        goto out_fallback;
    {
        /* Every marker, then the request's outcome: terminal, SUCCEEDED after the last stage of
         * the list, or (when it did not run) unchanged. A fresh request's row already says
         * SUCCEEDED (claim_new_request): only a terminal outcome rewrites it. */
        const char *state = ctx->terminal == TP_RUN_DENIED ? "DENIED"
                            : ctx->terminal              ? "FAILED"
                            : last == &list[n - 1]       ? "SUCCEEDED" : NULL;
        const char *mp5[5] = {ctx->req->request_id, markers_text,
                              fresh && !ctx->terminal ? NULL : state,
                              ctx->terminal ? ctx->reason : NULL,
                              ctx->terminal ? ctx->message : NULL};
        /* Queued: it travels with the COMMIT, one round trip for both. */
        rc = tp_db_exec_queued(db, fresh ? INSERT_FINAL_STAGES_SQL : UPDATE_MARKERS_SQL, 5, mp5,
                               NULL, NULL);
        if (rc != 0)
            goto out_fallback;
        if ((rc = tp_db_commit(db)) != 0)
            goto out_fallback; /* its answer was lost: it may or may not have happened; the
                                 * per-stage path finds out, each stage under its lock */
        free(markers_text);
        json_decref(markers);
        ctx->chain_known = false;
        ctx->one_tx = ctx->tenant_new = ctx->decision_in_tx = false;
        if (ctx->terminal) {
            report_terminal(ctx, last, attempts[last->id] + 1, out);
        } else {
            out->status = state ? TP_RUN_SUCCEEDED : TP_RUN_RETRY;
            out->stage = last->id;
        }
        return STAGE_STOP;
    }

out_fallback:
    tp_db_rollback(db);
    free(markers_text);
    json_decref(markers);
    clear_outcome(ctx);
    forget_action_state(ctx);
    ctx->chain_known = false;
    ctx->one_tx = ctx->tenant_new = ctx->decision_in_tx = false;
    snprintf(ctx->tenant_id, sizeof(ctx->tenant_id), "%s", tenant_before);
    return STAGE_DONE;
}

/* The run of one request with its ctx (tp_stages_run frees what ctx holds afterwards). */
static int run_request(tp_stage_ctx *ctx, const tp_request *req, tp_run_result *out) {
    tp_stage_env *env = ctx->env;
    tp_db *db = env->db;
    request_row row;
    int rc, n;
    const char *params[1] = {req->request_id};
    const tp_stage_def *list = tp_stage_list(req->action, &n);

    /* One commit for a request that has no row yet: records straight from billing (tp-ingress
     * records its requests ACCEPTED before producing them, so theirs would only find the row).
     * OPA is asked first, outside any transaction and before PostgreSQL is touched; then one
     * transaction records the request, runs every stage and writes the stage rows once, in their
     * final state. A row that exists after all (a redelivery, a retry, a replay, another runner,
     * or another request's id), OPA failing, or any error: rolled back, and the path below runs
     * as it always did, with the answer just asked kept for its policy stage (prepare_stage).
     * That answer is only used where this path would ask OPA itself, the policy stage not having
     * SUCCEEDED: same request, same input, a moment earlier. A decision already stored keeps
     * being the one used (the policy stage is done, so its prepare step is never consulted), so
     * a redelivery after success costs one unused OPA call instead of a read before every new
     * request. Tenant actions from billing take this path too (their stage lists are written
     * the same way). */
    if (req->source == TP_SOURCE_BILLING && !env->per_stage_tx &&
        run_single_tx(ctx, list, n, true, true, out) == STAGE_STOP) {
        snprintf(out->tenant_id, sizeof(out->tenant_id), "%s", ctx->tenant_id);
        json_decref(ctx->output);
        return 0;
    }

    if ((rc = start_request(db, env, req, &row)) != 0)
        goto out_db;
    if (!row.found) {
        rc = TP_EDB;
        goto out_db;
    }
    if (strcmp(row.action, tp_action_name(req->action)) != 0 || strcmp(row.slug, req->tenant.slug) != 0) {
        /* Another request has this id: running its stage list with this record's body (or
         * answering with its outcome) would mix two requests. Nothing of it is touched; the
         * worker dead-letters this record (a permanent error). */
        out->status = TP_RUN_RETRY;
        out->err = TP_ECONFLICT;
        snprintf(out->message, sizeof(out->message),
                 "request id %s is already the %s request for tenant %s (this record: %s for %s)",
                 req->request_id, row.action, row.slug, tp_action_name(req->action), req->tenant.slug);
        return TP_ECONFLICT;
    }
    if (terminal_outcome(&row, out))
        return 0;
    out->status = TP_RUN_RETRY;
    snprintf(ctx->tenant_id, sizeof(ctx->tenant_id), "%s", row.tenant_id);

    bool all_done = true;
    for (int i = 0; i < n; i++)
        all_done = all_done && row.done[list[i].id];
    if (!all_done && !env->per_stage_tx &&
        run_single_tx(ctx, list, n, !row.done[list[0].id], false, out) == STAGE_STOP) {
        snprintf(out->tenant_id, sizeof(out->tenant_id), "%s", ctx->tenant_id);
        json_decref(ctx->output);
        if (out->status != TP_RUN_RETRY)
            return 0;
        /* Committed without reaching the end (cannot happen with today's tables): go on. */
        memset(out, 0, sizeof(*out));
        out->status = TP_RUN_RETRY;
        ctx->output = NULL;
    }

    for (int i = 0; i < n; i++) {
        if (row.done[list[i].id])
            continue;
        rc = run_stage(ctx, &list[i], row.attempts[list[i].id], i == n - 1, out);
        if (rc == STAGE_DONE)
            continue;
        json_decref(ctx->output);
        snprintf(out->tenant_id, sizeof(out->tenant_id), "%s", ctx->tenant_id);
        return rc == STAGE_STOP ? 0 : rc;
    }
    json_decref(ctx->output);

    /* Every stage was already done (a crash after the last marker): make the state say so. */
    rc = tp_db_exec(db, "UPDATE provisioning_requests SET state = 'SUCCEEDED', finished_at = "
                        "coalesce(finished_at, clock_timestamp()), updated_at = clock_timestamp() "
                        "WHERE request_id = $1 AND state IN ('ACCEPTED', 'RUNNING')",
                    1, params, NULL);
    if (rc != 0)
        goto out_db;
    if ((rc = load_request(db, req->request_id, &row)) != 0)
        goto out_db;
    if (!terminal_outcome(&row, out))
        out->status = TP_RUN_SUCCEEDED;
    return 0;

out_db:
    out->status = TP_RUN_RETRY;
    out->err = rc;
    snprintf(out->message, sizeof(out->message), "%s", tp_db_errmsg(db));
    return rc;
}

int tp_stages_run(tp_stage_env *env, const tp_request *req, tp_run_result *out) {
    tp_stage_ctx ctx;
    int rc;
    memset(out, 0, sizeof(*out));
    out->status = TP_RUN_RETRY;
    memset(&ctx, 0, sizeof(ctx));
    ctx.env = env;
    ctx.db = env->db;
    ctx.req = req;
    snprintf(ctx.region, sizeof(ctx.region), "%s",
             req->tenant.region[0] ? req->tenant.region : tp_default_region(req->tenant.residency));
    rc = run_request(&ctx, req, out);
    json_decref(ctx.action_state);
    json_decref(ctx.action_quota);
    tp_action_preview_release(&ctx.action_eval);
    return rc;
}

int tp_stages_prepare_replay(tp_db *db, const char *request_id) {
    char state[16];
    bool found = false;
    const char *params[1] = {request_id};
    int rc;
    if ((rc = tp_db_begin(db)) != 0)
        return rc;
    rc = tp_db_query_text(db, "SELECT state FROM provisioning_requests WHERE request_id = $1 "
                              "FOR UPDATE",
                          1, params, state, sizeof(state), &found);
    if (rc != 0)
        goto out_rollback;
    if (!found) {
        rc = TP_ENOT_FOUND;
        goto out_rollback;
    }
    if (strcmp(state, "FAILED") != 0) {
        rc = TP_ECONFLICT;
        goto out_rollback;
    }
    rc = tp_db_exec(db,
                    "UPDATE provisioning_stages SET status = 'PENDING', attempts = 0, reason = NULL, "
                    "message = NULL, output = NULL, started_at = NULL, finished_at = NULL, "
                    "updated_at = clock_timestamp() WHERE request_id = $1 AND "
                    "(status <> 'SUCCEEDED' OR stage = 'policy')",
                    1, params, NULL);
    if (rc != 0)
        goto out_rollback;
    rc = tp_db_exec(db,
                    "UPDATE provisioning_requests SET state = 'ACCEPTED', failure_reason = NULL, "
                    "failure_message = NULL, finished_at = NULL, updated_at = clock_timestamp() "
                    "WHERE request_id = $1",
                    1, params, NULL);
    if (rc != 0)
        goto out_rollback;
    return tp_db_commit(db);
out_rollback:
    tp_db_rollback(db);
    return rc;
}
