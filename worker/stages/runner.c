/* runner.c: the stage table and the runner: records a request, runs each pending stage in its own
 * transaction together with its stage marker, classifies failures (transient → RETRYING and a
 * retry verdict, permanent → terminal state) and prepares replays. Synchronous, no sleeping. */
#include "stages_int.h"
#include "tp/error.h"
#include "tp/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const tp_stage_def tp_stage_table[TP_STAGE_COUNT_] = {
    {TP_STAGE_POLICY, "policy", tp_stage_policy_prepare, tp_stage_policy_run},
    {TP_STAGE_TENANT, "tenant", NULL, tp_stage_tenant_run},
    {TP_STAGE_NAMESPACE, "namespace", NULL, tp_stage_namespace_run},
    {TP_STAGE_PARTITIONS, "partitions", NULL, tp_stage_partitions_run},
    {TP_STAGE_QUOTA, "quota", NULL, tp_stage_quota_run},
    {TP_STAGE_RECEIPTS, "receipts", NULL, tp_stage_receipts_run},
    {TP_STAGE_ISOLATION, "isolation", NULL, tp_stage_isolation_run},
};

const char *tp_stage_name(tp_stage_id id) {
    if ((unsigned)id >= TP_STAGE_COUNT_)
        return "?";
    return tp_stage_table[id].name;
}

int tp_stage_parse(const char *name, tp_stage_id *out) {
    for (int i = 0; name && i < TP_STAGE_COUNT_; i++) {
        if (strcmp(tp_stage_table[i].name, name) == 0) {
            *out = (tp_stage_id)i;
            return 0;
        }
    }
    return TP_EINVAL;
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

int tp_stages_accept(tp_db *db, const tp_request *req, const char *payload_json_or_null,
                     const char *origin_topic, int partition, int64_t offset) {
    char *own = NULL, pbuf[16], obuf[32];
    const char *payload = payload_json_or_null;
    int rc;
    if (!payload) {
        own = tp_stages_request_json(req);
        if (!own)
            return TP_ENOMEM;
        payload = own;
    }
    snprintf(pbuf, sizeof(pbuf), "%d", partition);
    snprintf(obuf, sizeof(obuf), "%lld", (long long)offset);
    const char *params[10] = {
        req->request_id,
        req->idempotency_key[0] ? req->idempotency_key : NULL,
        req->actor.id,
        req->actor.type,
        tp_source_name(req->source),
        req->tenant.slug,
        payload,
        origin_topic,
        origin_topic ? pbuf : NULL,
        origin_topic ? obuf : NULL,
    };
    /* One statement: the request row, then one PENDING condition per stage (the stages are only
     * inserted when the request row is new). */
    rc = tp_db_exec(db,
                    "WITH r AS (INSERT INTO provisioning_requests (request_id, idempotency_key, "
                    "actor_id, actor_type, source, tenant_slug, payload, payload_fingerprint, "
                    "origin_topic, origin_partition, origin_offset) VALUES ($1, $2, $3, $4, $5, $6, "
                    "$7::text::jsonb, encode(sha256(convert_to($7::text, 'UTF8')), 'hex'), $8, $9::int, "
                    "$10::bigint) ON CONFLICT (request_id) DO NOTHING RETURNING request_id) "
                    "INSERT INTO provisioning_stages (request_id, stage, ordinal) "
                    "SELECT r.request_id, s.name, s.ord FROM r, unnest(ARRAY['policy','tenant',"
                    "'namespace','partitions','quota','receipts','isolation']) WITH ORDINALITY "
                    "AS s(name, ord)",
                    10, params, NULL);
    free(own);
    return rc;
}

typedef struct request_row {
    bool found;
    char state[16];
    char reason[64];
    char message[512];
    char tenant_id[64];
} request_row;

static int load_request(tp_db *db, const char *request_id, request_row *row) {
    tp_res *res = NULL;
    const char *params[1] = {request_id};
    int rc = tp_db_query(db,
                         "SELECT state, coalesce(failure_reason, ''), coalesce(failure_message, ''), "
                         "coalesce(tenant_id, '') FROM provisioning_requests WHERE request_id = $1",
                         1, params, &res);
    memset(row, 0, sizeof(*row));
    if (rc != 0)
        return rc;
    if (tp_res_nrows(res) == 1) {
        row->found = true;
        snprintf(row->state, sizeof(row->state), "%s", tp_res_get(res, 0, 0));
        snprintf(row->reason, sizeof(row->reason), "%s", tp_res_get(res, 0, 1));
        snprintf(row->message, sizeof(row->message), "%s", tp_res_get(res, 0, 2));
        snprintf(row->tenant_id, sizeof(row->tenant_id), "%s", tp_res_get(res, 0, 3));
    }
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

/* Records a transient failure in its own transaction; fails the request when attempts run out. */
static int record_retry(tp_stage_ctx *ctx, const tp_stage_def *def, int err, tp_run_result *out) {
    tp_db *db = ctx->db;
    tp_res *res = NULL;
    char maxbuf[16];
    int max = ctx->env->max_attempts > 0 ? ctx->env->max_attempts : 8, rc;
    int64_t attempts = 0;
    snprintf(maxbuf, sizeof(maxbuf), "%d", max);
    const char *params[5] = {ctx->req->request_id, def->name, tp_stage_reason_of(err),
                             ctx->message[0] ? ctx->message : tp_strerror(err), maxbuf};
    if ((rc = tp_db_begin(db)) != 0)
        goto out_err;
    rc = tp_db_query(db,
                     "UPDATE provisioning_stages SET attempts = attempts + 1, "
                     "status = CASE WHEN attempts + 1 >= $5::int THEN 'FAILED' ELSE 'RETRYING' END, "
                     "reason = $3, message = $4, started_at = coalesce(started_at, now()), "
                     "finished_at = CASE WHEN attempts + 1 >= $5::int THEN clock_timestamp() END, "
                     "updated_at = clock_timestamp() "
                     "WHERE request_id = $1 AND stage = $2 AND status <> 'SUCCEEDED' RETURNING attempts",
                     5, params, &res);
    if (rc != 0)
        goto out_err;
    if (tp_res_nrows(res) == 1)
        tp_res_get_int64(res, 0, 0, &attempts);
    tp_res_free(res);
    res = NULL;
    out->stage = def->id;
    out->attempts = (int)attempts;
    out->err = err;
    snprintf(out->message, sizeof(out->message), "%s", params[3]);
    if (attempts >= max) {
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

/* Writes the stage marker (and a terminal request state or the final SUCCEEDED) in the open
 * transaction. */
static int write_marker(tp_stage_ctx *ctx, const tp_stage_def *def, int attempt) {
    char abuf[16];
    char *output = ctx->output ? json_dumps(ctx->output, JSON_COMPACT) : NULL;
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
    } else if (def->id == TP_STAGE_ISOLATION) {
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

/* Runs one stage; returns STAGE_DONE (go on), STAGE_STOP (out filled) or a negative code when
 * even the failure could not be recorded (out filled with a RETRY verdict). */
static int run_stage(tp_stage_ctx *ctx, const tp_stage_def *def, int prev_attempts,
                     tp_run_result *out) {
    tp_db *db = ctx->db;
    tp_res *res = NULL;
    tp_log_ctx lctx = {ctx->req->request_id, def->name, prev_attempts + 1, ctx->req->traceparent};
    int rc, attempt = prev_attempts + 1;
    const char *params[2] = {ctx->req->request_id, def->name};

    json_decref(ctx->output);
    ctx->output = NULL;
    ctx->terminal = 0;
    ctx->reason[0] = ctx->message[0] = '\0';

    if (def->prepare && (rc = def->prepare(ctx)) != 0)
        goto out_fail;
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
    if ((rc = def->run(ctx)) != 0)
        goto out_fail;
    if ((rc = write_marker(ctx, def, attempt)) != 0)
        goto out_fail;
    if ((rc = tp_db_commit(db)) != 0) {
        tp_stage_db_error(ctx, rc, "commit");
        goto out_fail;
    }
    if (ctx->terminal) {
        out->status = (tp_run_status)ctx->terminal;
        out->stage = def->id;
        out->attempts = attempt;
        out->err = ctx->terminal == TP_RUN_DENIED ? TP_EPOLICY_DENIED : 0;
        snprintf(out->failure_reason, sizeof(out->failure_reason), "%s", ctx->reason);
        snprintf(out->message, sizeof(out->message), "%s", ctx->message);
        tp_log(TP_LOG_WARN, "stages", &lctx, "request %s: %s", ctx->terminal == TP_RUN_DENIED ?
               "DENIED" : "FAILED", ctx->reason);
        return STAGE_STOP;
    }
    tp_log(TP_LOG_DEBUG, "stages", &lctx, "stage succeeded");
    return STAGE_DONE;

out_fail:
    tp_res_free(res);
    tp_db_rollback(db);
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
        return tp_err_is_transient(rrc) ? rrc : TP_EDB;
    }
    return STAGE_STOP;
}

int tp_stages_run(tp_stage_env *env, const tp_request *req, tp_run_result *out) {
    tp_db *db = env->db;
    tp_stage_ctx ctx;
    request_row row;
    tp_res *res = NULL;
    int rc, attempts[TP_STAGE_COUNT_] = {0};
    bool done[TP_STAGE_COUNT_] = {false};
    const char *params[1] = {req->request_id};

    memset(out, 0, sizeof(*out));
    out->status = TP_RUN_RETRY;
    memset(&ctx, 0, sizeof(ctx));
    ctx.env = env;
    ctx.db = db;
    ctx.req = req;
    snprintf(ctx.region, sizeof(ctx.region), "%s",
             req->tenant.region[0] ? req->tenant.region : tp_default_region(req->tenant.residency));

    if ((rc = load_request(db, req->request_id, &row)) != 0)
        goto out_db;
    if (!row.found) {
        if ((rc = tp_stages_accept(db, req, NULL, NULL, 0, 0)) != 0)
            goto out_db;
        if ((rc = load_request(db, req->request_id, &row)) != 0)
            goto out_db;
        if (!row.found) {
            rc = TP_EDB;
            goto out_db;
        }
    }
    if (terminal_outcome(&row, out))
        return 0;
    out->status = TP_RUN_RETRY;
    if (strcmp(row.state, "ACCEPTED") == 0) {
        rc = tp_db_exec(db, "UPDATE provisioning_requests SET state = 'RUNNING', updated_at = "
                            "clock_timestamp() WHERE request_id = $1 AND state = 'ACCEPTED'",
                        1, params, NULL);
        if (rc != 0)
            goto out_db;
    }
    snprintf(ctx.tenant_id, sizeof(ctx.tenant_id), "%s", row.tenant_id);

    rc = tp_db_query(db, "SELECT stage, status, attempts FROM provisioning_stages WHERE "
                         "request_id = $1",
                     1, params, &res);
    if (rc != 0)
        goto out_db;
    for (int r = 0; r < tp_res_nrows(res); r++) {
        tp_stage_id id;
        int64_t a = 0;
        if (tp_stage_parse(tp_res_get(res, r, 0), &id) != 0)
            continue;
        done[id] = strcmp(tp_res_get(res, r, 1), "SUCCEEDED") == 0;
        tp_res_get_int64(res, r, 2, &a);
        attempts[id] = (int)a;
    }
    tp_res_free(res);
    res = NULL;

    for (int i = 0; i < TP_STAGE_COUNT_; i++) {
        if (done[i])
            continue;
        rc = run_stage(&ctx, &tp_stage_table[i], attempts[i], out);
        if (rc == STAGE_DONE)
            continue;
        json_decref(ctx.output);
        snprintf(out->tenant_id, sizeof(out->tenant_id), "%s", ctx.tenant_id);
        return rc == STAGE_STOP ? 0 : rc;
    }
    json_decref(ctx.output);

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
    tp_res_free(res);
    out->status = TP_RUN_RETRY;
    out->err = rc;
    snprintf(out->message, sizeof(out->message), "%s", tp_db_errmsg(db));
    return tp_err_is_transient(rc) ? rc : TP_EDB;
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
