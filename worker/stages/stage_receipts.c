/* stage_receipts.c: stage 6 and the receipt emitter: seals TENANT_PROVISIONED and
 * TENANT_QUOTA_ASSIGNED (tp_receipt_seal) and inserts them into receipt_outbox in the stage
 * transaction, continuing the tenant's hash chain under a lock of the tenant row. Receipts are
 * committed unnumbered: the relay's sequencer (tlog/sequence_db.c) makes them log leaves. */
#include "stages_int.h"
#include "tp/error.h"
#include "tp/ids.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ZERO_HASH "0000000000000000000000000000000000000000000000000000000000000000"

/* Takes the tenant row lock and reads what every receipt of this transaction needs: the slug,
 * the receipts this request already has, its policy decision and the chain head. */
static int chain_lock(tp_stage_ctx *ctx) {
    const tp_request *req = ctx->req;
    tp_res *res = NULL;
    const char *p1[2] = {ctx->tenant_id, req->request_id};
    int64_t seq = 0;
    int rc;

    rc = tp_db_query(ctx->db,
                     "SELECT t.slug, coalesce((SELECT string_agg(o.action_type || '=' || "
                     "o.receipt_id, ',') FROM receipt_outbox o WHERE o.request_id = $2), ''), "
                     "coalesce((SELECT d.decision_id FROM policy_decisions d WHERE d.request_id = $2 "
                     "ORDER BY d.id DESC LIMIT 1), ''), "
                     "coalesce((SELECT d.policy_revision FROM policy_decisions d WHERE "
                     "d.request_id = $2 ORDER BY d.id DESC LIMIT 1), '') "
                     "FROM tenants t WHERE t.id = $1 FOR UPDATE OF t",
                     2, p1, &res);
    if (rc != 0)
        return tp_stage_db_error(ctx, rc, "lock tenant");
    if (tp_res_nrows(res) != 1) {
        tp_res_free(res);
        snprintf(ctx->message, sizeof(ctx->message), "tenant %s not found", ctx->tenant_id);
        return TP_EDB_PERMANENT;
    }
    snprintf(ctx->chain_slug, sizeof(ctx->chain_slug), "%s", tp_res_get(res, 0, 0));
    snprintf(ctx->chain_existing, sizeof(ctx->chain_existing), "%s", tp_res_get(res, 0, 1));
    snprintf(ctx->chain_decision_id, sizeof(ctx->chain_decision_id), "%s", tp_res_get(res, 0, 2));
    snprintf(ctx->chain_revision, sizeof(ctx->chain_revision), "%s", tp_res_get(res, 0, 3));
    tp_res_free(res);
    res = NULL;

    /* A new statement after the lock: sees chain rows committed by whoever held it before. */
    rc = tp_db_query(ctx->db,
                     "SELECT sequence, hash FROM receipt_outbox WHERE tenant_id = $1 "
                     "ORDER BY sequence DESC LIMIT 1",
                     1, p1, &res);
    if (rc != 0)
        return tp_stage_db_error(ctx, rc, "read chain head");
    if (tp_res_nrows(res) == 1) {
        tp_res_get_int64(res, 0, 0, &seq);
        snprintf(ctx->chain_hash, sizeof(ctx->chain_hash), "%s", tp_res_get(res, 0, 1));
    } else {
        snprintf(ctx->chain_hash, sizeof(ctx->chain_hash), "%s", ZERO_HASH);
    }
    tp_res_free(res);
    ctx->chain_seq = seq;
    ctx->chain_known = true;
    return 0;
}

/* The chain of a tenant inserted by this very transaction, whose policy decision was stored in it
 * too (stages_int.h): no receipt yet, nobody else can see the row to lock it, the slug and the
 * decision are the request's. What chain_lock would read, without the two round trips. */
static void chain_start_new(tp_stage_ctx *ctx) {
    snprintf(ctx->chain_slug, sizeof(ctx->chain_slug), "%s", ctx->req->tenant.slug);
    ctx->chain_existing[0] = '\0';
    snprintf(ctx->chain_decision_id, sizeof(ctx->chain_decision_id), "%s", ctx->decision.decision_id);
    snprintf(ctx->chain_revision, sizeof(ctx->chain_revision), "%s", ctx->decision.policy_revision);
    snprintf(ctx->chain_hash, sizeof(ctx->chain_hash), "%s", ZERO_HASH);
    ctx->chain_seq = 0;
    ctx->chain_known = true;
}

/* Copies the receipt id of action_type from "ACTION=id,..." into out; false when absent. */
static bool existing_receipt(const char *list, const char *action_type, char *out, size_t cap) {
    size_t n = strlen(action_type);
    for (const char *p = list; p && *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len > n && strncmp(p, action_type, n) == 0 && p[n] == '=') {
            snprintf(out, cap, "%.*s", (int)(len - n - 1), p + n + 1);
            return true;
        }
        p = end ? end + 1 : NULL;
    }
    return false;
}

int tp_stage_emit_receipt(tp_stage_ctx *ctx, const char *action_type, const json_t *data,
                          char *receipt_id, size_t receipt_id_size) {
    const tp_request *req = ctx->req;
    tp_sealed_receipt sealed;
    tp_receipt_fields f;
    char rid[64], uuid[TP_UUID_LEN + 1], seqbuf[32], tsbuf[32];
    int rc;

    memset(&sealed, 0, sizeof(sealed));
    if (!ctx->env->signer) {
        snprintf(ctx->message, sizeof(ctx->message), "no receipt signer configured");
        return TP_ECONFIG;
    }
    /* Serialise chain extension per tenant (once per transaction). */
    if (!ctx->chain_known && ctx->tenant_new && ctx->decision_in_tx)
        chain_start_new(ctx);
    if (!ctx->chain_known && (rc = chain_lock(ctx)) != 0)
        return rc;
    if (existing_receipt(ctx->chain_existing, action_type, receipt_id, receipt_id_size))
        return 0; /* already in the outbox (committed by an earlier run of this stage): reuse */
    if ((rc = tp_uuid_v4(uuid)) != 0)
        return rc;
    snprintf(rid, sizeof(rid), "prov_%s", uuid);

    memset(&f, 0, sizeof(f));
    f.receipt_id = rid;
    f.action_type = action_type;
    f.tenant_id = ctx->tenant_id;
    f.tenant_slug = ctx->chain_slug;
    f.request_id = req->request_id;
    f.correlation_id = req->correlation_id;
    f.actor_id = req->actor.id;
    f.actor_type = req->actor.type;
    f.timestamp_ms = tp_stage_now_ms();
    f.sequence = ctx->chain_seq + 1;
    f.prev_hash_hex = ctx->chain_hash;
    f.decision_id = ctx->chain_decision_id;
    f.policy_revision = ctx->chain_revision;
    f.action_data = data;
    rc = tp_receipt_seal(ctx->env->signer, &f, &sealed);
    if (rc != 0) {
        snprintf(ctx->message, sizeof(ctx->message), "sealing %s failed: %s", action_type,
                 tp_strerror(rc));
        return rc;
    }
    snprintf(seqbuf, sizeof(seqbuf), "%lld", (long long)f.sequence);
    snprintf(tsbuf, sizeof(tsbuf), "%lld", (long long)f.timestamp_ms);
    const char *p2[10] = {rid, ctx->tenant_id, req->request_id, action_type, seqbuf,
                          ctx->chain_hash, sealed.hash_hex, sealed.payload, sealed.envelope_json,
                          tsbuf};
    int lengths[10] = {0, 0, 0, 0, 0, 0, 0, (int)sealed.payload_len, 0, 0};
    int formats[10] = {0, 0, 0, 0, 0, 0, 0, 1, 0, 0};
    /* Queued (pipeline): the receipts of a transaction travel with its next statement; the
     * chain is computed here, so no insert waits for the one before. */
    rc = tp_db_exec_queued(ctx->db,
                           "INSERT INTO receipt_outbox (receipt_id, tenant_id, request_id, "
                           "action_type, sequence, previous_hash, hash, payload, envelope, "
                           "signed_at_ms) VALUES ($1, $2, $3, $4, $5::bigint, $6, $7, $8::bytea, "
                           "$9::jsonb, $10::bigint)",
                           10, p2, lengths, formats);
    if (rc == 0) {
        /* The chain now ends here, for the next receipt of this transaction. */
        size_t used = strlen(ctx->chain_existing);
        ctx->chain_seq = f.sequence;
        snprintf(ctx->chain_hash, sizeof(ctx->chain_hash), "%s", sealed.hash_hex);
        snprintf(ctx->chain_existing + used, sizeof(ctx->chain_existing) - used, "%s%s=%s",
                 used ? "," : "", action_type, rid);
    }
    tp_sealed_receipt_release(&sealed);
    if (rc != 0)
        return tp_stage_db_error(ctx, rc, "insert receipt");
    snprintf(receipt_id, receipt_id_size, "%s", rid);
    return 0;
}

int tp_stage_receipts_run(tp_stage_ctx *ctx) {
    const tp_request *req = ctx->req;
    json_t *view = NULL, *prov = NULL, *quota_data = NULL, *quota;
    char prov_id[64], quota_id[64];
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
    if (!prov || !quota_data) {
        rc = TP_ENOMEM;
        goto out;
    }
    if ((rc = tp_stage_emit_receipt(ctx, "TENANT_PROVISIONED", prov, prov_id, sizeof(prov_id))))
        goto out;
    if ((rc = tp_stage_emit_receipt(ctx, "TENANT_QUOTA_ASSIGNED", quota_data, quota_id,
                                    sizeof(quota_id))))
        goto out;
    ctx->output = json_pack("{s:s, s:s}", "provisioning", prov_id, "quotaAssignment", quota_id);
    rc = ctx->output ? 0 : TP_ENOMEM;
out:
    json_decref(prov);
    json_decref(quota_data);
    json_decref(view);
    return rc;
}
