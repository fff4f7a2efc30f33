/* stage_receipts.c: stage 6 and the receipt emitter: seals TENANT_PROVISIONED and
 * TENANT_QUOTA_ASSIGNED (tp_receipt_seal) and inserts them into receipt_outbox in the stage
 * transaction, continuing the tenant's hash chain under a lock of the tenant row. */
#include "stages_int.h"
#include "tp/error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ZERO_HASH "0000000000000000000000000000000000000000000000000000000000000000"

int tp_stage_emit_receipt(tp_stage_ctx *ctx, const char *action_type, const char *data_json,
                          char *receipt_id, size_t receipt_id_size) {
    const tp_request *req = ctx->req;
    tp_res *res = NULL;
    tp_sealed_receipt sealed;
    tp_receipt_fields f;
    char slug[TP_SLUG_MAX + 1], rid[64], decision_id[128], revision[128], prev_hash[TP_HASH_HEX_LEN + 1];
    char seqbuf[32];
    int64_t seq = 0;
    int rc;

    memset(&sealed, 0, sizeof(sealed));
    if (!ctx->env->signer) {
        snprintf(ctx->message, sizeof(ctx->message), "no receipt signer configured");
        return TP_ECONFIG;
    }
    const char *p1[3] = {ctx->tenant_id, req->request_id, action_type};
    /* Serialise chain extension per tenant; also mint the receipt id and read the decision. */
    rc = tp_db_query(ctx->db,
                     "SELECT t.slug, 'prov_' || gen_random_uuid(), "
                     "(SELECT receipt_id FROM receipt_outbox o WHERE o.request_id = $2 AND "
                     "o.action_type = $3), "
                     "coalesce((SELECT d.decision_id FROM policy_decisions d WHERE d.request_id = $2 "
                     "ORDER BY d.id DESC LIMIT 1), ''), "
                     "coalesce((SELECT d.policy_revision FROM policy_decisions d WHERE "
                     "d.request_id = $2 ORDER BY d.id DESC LIMIT 1), '') "
                     "FROM tenants t WHERE t.id = $1 FOR UPDATE OF t",
                     3, p1, &res);
    if (rc != 0)
        return tp_stage_db_error(ctx, rc, "lock tenant");
    if (tp_res_nrows(res) != 1) {
        tp_res_free(res);
        snprintf(ctx->message, sizeof(ctx->message), "tenant %s not found", ctx->tenant_id);
        return TP_EDB_PERMANENT;
    }
    snprintf(slug, sizeof(slug), "%s", tp_res_get(res, 0, 0));
    snprintf(rid, sizeof(rid), "%s", tp_res_get(res, 0, 1));
    snprintf(decision_id, sizeof(decision_id), "%s", tp_res_get(res, 0, 3));
    snprintf(revision, sizeof(revision), "%s", tp_res_get(res, 0, 4));
    if (!tp_res_isnull(res, 0, 2)) {
        /* Already in the outbox (committed by an earlier run of this stage): reuse. */
        snprintf(receipt_id, receipt_id_size, "%s", tp_res_get(res, 0, 2));
        tp_res_free(res);
        return 0;
    }
    tp_res_free(res);

    /* A new statement after the lock: sees chain rows committed by whoever held it before. */
    rc = tp_db_query(ctx->db,
                     "SELECT sequence, hash FROM receipt_outbox WHERE tenant_id = $1 "
                     "ORDER BY sequence DESC LIMIT 1",
                     1, p1, &res);
    if (rc != 0)
        return tp_stage_db_error(ctx, rc, "read chain head");
    if (tp_res_nrows(res) == 1) {
        tp_res_get_int64(res, 0, 0, &seq);
        snprintf(prev_hash, sizeof(prev_hash), "%s", tp_res_get(res, 0, 1));
    } else {
        snprintf(prev_hash, sizeof(prev_hash), "%s", ZERO_HASH);
    }
    tp_res_free(res);
    res = NULL;

    memset(&f, 0, sizeof(f));
    f.receipt_id = rid;
    f.action_type = action_type;
    f.tenant_id = ctx->tenant_id;
    f.tenant_slug = slug;
    f.request_id = req->request_id;
    f.correlation_id = req->correlation_id;
    f.actor_id = req->actor.id;
    f.actor_type = req->actor.type;
    f.timestamp_ms = tp_stage_now_ms();
    f.sequence = seq + 1;
    f.prev_hash_hex = prev_hash;
    f.decision_id = decision_id;
    f.policy_revision = revision;
    f.action_data_json = data_json;
    rc = tp_receipt_seal(ctx->env->signer, &f, &sealed);
    if (rc != 0) {
        snprintf(ctx->message, sizeof(ctx->message), "sealing %s failed: %s", action_type,
                 tp_strerror(rc));
        return rc;
    }
    snprintf(seqbuf, sizeof(seqbuf), "%lld", (long long)f.sequence);
    const char *p2[9] = {rid, ctx->tenant_id, req->request_id, action_type, seqbuf, prev_hash,
                         sealed.hash_hex, sealed.payload, sealed.envelope_json};
    int lengths[9] = {0, 0, 0, 0, 0, 0, 0, (int)sealed.payload_len, 0};
    int formats[9] = {0, 0, 0, 0, 0, 0, 0, 1, 0};
    rc = tp_db_query_bin(ctx->db,
                         "INSERT INTO receipt_outbox (receipt_id, tenant_id, request_id, action_type, "
                         "sequence, previous_hash, hash, payload, envelope) VALUES ($1, $2, $3, $4, "
                         "$5::bigint, $6, $7, $8::bytea, $9::jsonb)",
                         9, p2, lengths, formats, NULL);
    tp_sealed_receipt_release(&sealed);
    if (rc != 0)
        return tp_stage_db_error(ctx, rc, "insert receipt");
    snprintf(receipt_id, receipt_id_size, "%s", rid);
    return 0;
}

int tp_stage_receipts_run(tp_stage_ctx *ctx) {
    const tp_request *req = ctx->req;
    json_t *view = NULL, *prov = NULL, *quota_data = NULL, *quota;
    char *prov_text = NULL, *quota_text = NULL, prov_id[64], quota_id[64];
    int rc;

    if (!ctx->tenant_id[0]) {
        snprintf(ctx->message, sizeof(ctx->message), "no tenant recorded for the request");
        return TP_EDB_PERMANENT;
    }
    if ((rc = tp_stages_tenant_view(ctx->db, ctx->tenant_id, &view)) != 0)
        return tp_stage_db_error(ctx, rc, "read tenant");
    quota = json_object_get(view, "quota");
    if (!json_is_object(quota)) {
        snprintf(ctx->message, sizeof(ctx->message), "tenant has no quota row");
        rc = TP_EDB_PERMANENT;
        goto out;
    }
    json_t *tenant = json_object_get(view, "tenant");
    prov = json_pack("{s:O, s:O, s:O, s:s, s:s, s:O, s:O}", "tenant", tenant, "namespace",
                     json_object_get(view, "namespace"), "partitions",
                     json_object_get(view, "partitions"), "plan", tp_plan_name(req->plan),
                     "environment", tp_environment_name(req->environment), "seats",
                     json_object_get(tenant, "requestedSeats"), "storageEstimateBytes",
                     json_object_get(tenant, "storageEstimateBytes"));
    quota_data = json_pack("{s:O, s:O}", "tier", json_object_get(quota, "tier"), "quota", quota);
    prov_text = prov ? json_dumps(prov, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    quota_text = quota_data ? json_dumps(quota_data, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    if (!prov_text || !quota_text) {
        rc = TP_ENOMEM;
        goto out;
    }
    if ((rc = tp_stage_emit_receipt(ctx, "TENANT_PROVISIONED", prov_text, prov_id, sizeof(prov_id))))
        goto out;
    if ((rc = tp_stage_emit_receipt(ctx, "TENANT_QUOTA_ASSIGNED", quota_text, quota_id,
                                    sizeof(quota_id))))
        goto out;
    ctx->output = json_pack("{s:s, s:s}", "provisioning", prov_id, "quotaAssignment", quota_id);
    rc = ctx->output ? 0 : TP_ENOMEM;
out:
    free(prov_text);
    free(quota_text);
    json_decref(prov);
    json_decref(quota_data);
    json_decref(view);
    return rc;
}
