/* fuzz_ingress_action.c: libFuzzer driver for a tenant action's HTTP body -> tp_request
 * (tp_ingress_parse_action_body) for every action; checks the result against the action rules
 * (tp_request_validate) and the shape of the problem it returns. */
#include "tp/error.h"
#include "tp/ingress.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const tp_action actions[] = {TP_ACTION_CHANGE_PLAN, TP_ACTION_SUSPEND, TP_ACTION_RESUME};
    for (size_t i = 0; i < sizeof(actions) / sizeof(actions[0]); i++) {
        tp_request req;
        tp_problem *p = NULL;
        char field[64], msg[256];
        memset(&req, 0, sizeof(req));
        req.action = actions[i];
        req.source = TP_SOURCE_ADMIN_API;
        strcpy(req.request_id, "fuzz");
        strcpy(req.actor.id, "fuzzer");
        strcpy(req.tenant.slug, "fuzz-tenant");
        int rc = tp_ingress_parse_action_body((const char *)data, size, actions[i], &req, &p);
        if (rc == 0) {
            /* Accepted bodies pass the worker's rules for the action. */
            if (p || tp_request_validate(&req, NULL, field, sizeof(field), msg, sizeof(msg)) != 0 ||
                strlen(req.reason) > TP_REASON_MAX)
                abort();
        } else if (rc == TP_EVALIDATION) {
            if (!p || tp_problem_status(p) != 400 || tp_problem_error_count(p) == 0)
                abort();
            char *js = tp_problem_to_json(p, NULL);
            if (!js)
                abort();
            free(js);
            tp_problem_free(p);
        } else if (rc != TP_ENOMEM) {
            abort();
        }
    }
    return 0;
}
