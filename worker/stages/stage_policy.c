/* stage_policy.c: stage 1: asks OPA (outside any transaction) and stores the decision in the stage
 * transaction; a deny ends the request DENIED with the policy's reasons. OPA down is transient. */
#include "stages_int.h"
#include "tp/error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int tp_stage_policy_prepare(tp_stage_ctx *ctx) {
    const tp_request *req = ctx->req;
    int owned = 0, rc;
    char *input;

    if (!ctx->env->policy) {
        snprintf(ctx->message, sizeof(ctx->message), "no policy client configured");
        return TP_ECONFIG;
    }
    if (req->source == TP_SOURCE_SELF_SERVE_API &&
        (rc = tp_stages_owned_tenants(ctx->db, req, &owned)) != 0)
        return tp_stage_db_error(ctx, rc, "owned tenants");
    tp_policy_context pctx = {owned, ctx->env->tiers, ctx->env->region_allowlist,
                              ctx->env->max_tenants_per_user, ctx->env->admin_role};
    input = tp_policy_build_input_ctx(req, "provision", &pctx);
    if (!input)
        return TP_ENOMEM;
    memset(&ctx->decision, 0, sizeof(ctx->decision));
    rc = tp_policy_decide(ctx->env->policy, input, &ctx->decision);
    free(input);
    if (rc != 0) {
        snprintf(ctx->message, sizeof(ctx->message), "policy decision unavailable: %s",
                 tp_strerror(rc));
        return rc;
    }
    ctx->owned_tenants = owned; /* the output is built by the run step, with the decision */
    return 0;
}

int tp_stage_policy_run(tp_stage_ctx *ctx) {
    const tp_policy_decision *d = &ctx->decision;
    json_t *reasons = json_array();
    char *reasons_text = NULL, joined[512] = "";
    int rc;
    size_t used = 0;

    if (!reasons)
        return TP_ENOMEM;
    for (int i = 0; i < d->n_reasons && i < TP_POLICY_REASONS_MAX; i++) {
        json_array_append_new(reasons, json_string(d->reasons[i]));
        int w = snprintf(joined + used, sizeof(joined) - used, "%s%s", i ? "; " : "", d->reasons[i]);
        if (w > 0 && (size_t)w < sizeof(joined) - used)
            used += (size_t)w;
    }
    reasons_text = json_dumps(reasons, JSON_COMPACT);
    if (!reasons_text) {
        json_decref(reasons);
        return TP_ENOMEM;
    }
    const char *params[5] = {ctx->req->request_id, d->decision_id, d->allow ? "true" : "false",
                             reasons_text, d->policy_revision};
    /* Queued: nothing reads its answer; an error surfaces at the next statement or commit. */
    rc = tp_db_exec_queued(ctx->db,
                           "INSERT INTO policy_decisions (request_id, decision_id, allow, reasons, "
                           "policy_revision) VALUES ($1, $2, $3::boolean, $4::jsonb, $5)",
                           5, params, NULL, NULL);
    free(reasons_text);
    ctx->decision_in_tx = rc == 0;
    if (rc != 0) {
        json_decref(reasons);
        return tp_stage_db_error(ctx, rc, "store decision");
    }
    ctx->output = json_pack("{s:b, s:i}", "allow", d->allow, "ownedTenants", ctx->owned_tenants);
    if (ctx->output) {
        json_object_set_new(ctx->output, "reasons", reasons);
        json_object_set_new(ctx->output, "decisionId", json_string(d->decision_id));
        json_object_set_new(ctx->output, "policyRevision", json_string(d->policy_revision));
    } else {
        json_decref(reasons);
    }
    if (!d->allow)
        tp_stage_set_terminal(ctx, TP_RUN_DENIED, "POLICY_DENIED", "%s",
                              joined[0] ? joined : "denied by policy");
    return 0;
}
