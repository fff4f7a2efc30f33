/* policy.h: the OPA client (libcurl) and the pure mapping from OPA's JSON answer to a decision.
 * Contract between worker/policy (implements) and worker/stages, worker/ingress (call). */
#ifndef TP_POLICY_H
#define TP_POLICY_H

#include <stddef.h>
#include <stdbool.h>
#include "tp/request.h"

#define TP_POLICY_REASONS_MAX 16
#define TP_POLICY_REASON_LEN 255

typedef struct tp_policy_decision {
    bool allow;
    int n_reasons;
    char reasons[TP_POLICY_REASONS_MAX][TP_POLICY_REASON_LEN + 1];
    char decision_id[128];     /* OPA's decision_id, "" when the server has none */
    char policy_revision[128]; /* bundle revision or the policy file's sha256, "" when unknown */
} tp_policy_decision;

/* Maps the body of POST /v1/data/tenants/provision (untrusted) to a decision. A missing or
 * non-object "result" means deny. Returns 0 (decision filled) or TP_EOPA_BAD_RESPONSE. */
int tp_policy_parse_response(const char *body, size_t len, tp_policy_decision *out);

/* Builds the OPA input document for a request; context: owned tenant count and the quota tiers
 * JSON text (may be NULL). Returns a new malloc'd JSON string or NULL. */
char *tp_policy_build_input(const tp_request *req, const char *action, int owned_tenants,
                            const char *tiers_json, const char *region_allowlist_csv);

typedef struct tp_policy_client tp_policy_client;

/* One client per thread (one curl easy handle, keep-alive). base_url like http://127.0.0.1:8181. */
tp_policy_client *tp_policy_client_new(const char *base_url, long timeout_ms);
void tp_policy_client_free(tp_policy_client *pc);

/* Asks OPA. Fail-closed: unreachable/timeout → TP_EOPA_UNAVAILABLE, garbage → TP_EOPA_BAD_RESPONSE
 * (both transient: never an allow). Returns 0 with out filled (allow or deny). */
int tp_policy_decide(tp_policy_client *pc, const char *input_json, tp_policy_decision *out);

#endif
