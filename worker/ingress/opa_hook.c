/* opa_hook.c: the default OPA pre-check of tp-ingress on top of worker/policy: the same input
 * document and policy as the worker's policy stage (provisioning, and a tenant action's dry run
 * through tp_stages_action_preview), one keep-alive curl client per pool thread. */
#include "ingress/ingress_int.h"
#include "tp/error.h"
#include "tp/ingress.h"
#include "tp/policy.h"
#include "tp/stages.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct tp_ingress_opa {
    char *url;
    long timeout_ms;
    tp_quota_tier tiers[TP_QUOTA_TIERS_N]; /* quota.tiers_file parsed once */
    bool has_tiers;                         /* false: no tiers file configured */
    char *allowlist;
    char *admin_role;
    int max_tenants_per_user;
};

/* Pool threads live as long as the process; each keeps one client (never freed: LSan sees it
 * through the thread's TLS). */
static _Thread_local tp_policy_client *tl_client;
static _Thread_local char tl_url[256];

int tp_ingress_opa_new(const tp_config *cfg, tp_ingress_opa **out, char *errstr, size_t errstr_size) {
    int rc = TP_ENOMEM;
    const char *tiers_file = tp_config_get(cfg, "quota.tiers_file");
    *out = NULL;
    tp_ingress_opa *o = calloc(1, sizeof(*o));
    if (!o)
        goto out_nomem;
    o->url = strdup(tp_config_get(cfg, "opa.url"));
    o->allowlist = strdup(tp_config_get(cfg, "policy.region_allowlist"));
    o->admin_role = strdup(tp_config_get(cfg, "jwt.admin_role"));
    o->timeout_ms = (long)tp_config_get_int(cfg, "opa.timeout_ms");
    o->max_tenants_per_user = (int)tp_config_get_int(cfg, "policy.max_tenants_per_user");
    if (!o->url || !o->allowlist || !o->admin_role)
        goto out_nomem;
    if (strlen(o->url) >= sizeof(tl_url)) {
        snprintf(errstr, errstr_size, "opa.url is too long");
        rc = TP_ECONFIG;
        goto out_free;
    }
    if (*tiers_file) {
        char *text = NULL, why[256];
        rc = tp_read_file(tiers_file, 1 << 20, &text, NULL);
        if (rc != 0) {
            snprintf(errstr, errstr_size, "quota.tiers_file %s: %s", tiers_file, tp_strerror(rc));
            goto out_free;
        }
        rc = tp_quota_tiers_parse(text, o->tiers, why, sizeof(why));
        free(text);
        if (rc != 0) {
            snprintf(errstr, errstr_size, "quota.tiers_file %s: %s", tiers_file, why);
            goto out_free;
        }
        o->has_tiers = true;
    }
    *out = o;
    return 0;
out_nomem:
    snprintf(errstr, errstr_size, "out of memory");
out_free:
    tp_ingress_opa_free(o);
    return rc;
}

void tp_ingress_opa_free(tp_ingress_opa *o) {
    if (!o)
        return;
    free(o->url);
    free(o->allowlist);
    free(o->admin_role);
    free(o);
}

/* This thread's client for o's URL (made on first use). */
static tp_policy_client *thread_client(tp_ingress_opa *o) {
    if (!tl_client || strcmp(tl_url, o->url) != 0) {
        tp_policy_client_free(tl_client);
        tl_client = tp_policy_client_new(o->url, o->timeout_ms);
        if (!tl_client)
            return NULL;
        snprintf(tl_url, sizeof(tl_url), "%s", o->url);
    }
    return tl_client;
}

int tp_ingress_opa_ping(tp_ingress_opa *o) {
    tp_policy_client *pc = thread_client(o);
    return pc ? tp_policy_ping(pc) : TP_ENOMEM;
}

int tp_ingress_opa_decide(tp_ingress_opa *o, const tp_request *req, int owned_tenants,
                          tp_policy_decision *out) {
    if (!thread_client(o))
        return TP_ENOMEM;
    tp_policy_context ctx = {.owned_tenants = owned_tenants,
                             .tiers = o->has_tiers ? o->tiers : NULL,
                             .region_allowlist_csv = o->allowlist,
                             .max_tenants_per_user = o->max_tenants_per_user,
                             .admin_role = o->admin_role};
    char *input = tp_policy_build_input_ctx(req, "provision", &ctx);
    if (!input)
        return TP_ENOMEM;
    int rc = tp_policy_decide(tl_client, input, out);
    free(input);
    return rc;
}

int tp_ingress_opa_pre_check(void *opaque, const tp_request *req, tp_policy_decision *out) {
    return tp_ingress_opa_decide(opaque, req, 0, out);
}

int tp_ingress_opa_action_preview(tp_ingress_opa *o, tp_db *db, const tp_request *req,
                                  tp_action_preview *out) {
    if (!thread_client(o))
        return TP_ENOMEM;
    tp_policy_context ctx = {.tiers = o->has_tiers ? o->tiers : NULL,
                             .region_allowlist_csv = o->allowlist,
                             .max_tenants_per_user = o->max_tenants_per_user,
                             .admin_role = o->admin_role};
    return tp_stages_action_preview(db, tl_client, &ctx, req, out);
}
