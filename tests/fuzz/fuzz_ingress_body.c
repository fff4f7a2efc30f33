/* fuzz_ingress_body.c: libFuzzer driver for HTTP body -> tp_request (tp_ingress_parse_body) on
 * both endpoints' defaults; checks invariants of the result and of the problem it returns. */
#include "tp/error.h"
#include "tp/ingress.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const tp_source sources[] = {TP_SOURCE_ADMIN_API, TP_SOURCE_SELF_SERVE_API};
    for (size_t i = 0; i < 2; i++) {
        tp_request req;
        tp_problem *p = NULL;
        int rc = tp_ingress_parse_body((const char *)data, size, sources[i],
                                       "us-east-1,us-west-2,eu-central-1,eu-west-1", &req, &p);
        if (rc == 0) {
            /* Accepted: every invariant of DESIGN §4 holds. */
            size_t slug = strlen(req.tenant.slug);
            size_t cps = tp_ingress_utf8_len(req.tenant.name, strlen(req.tenant.name));
            if (p || slug < 3 || slug > 50 || cps < 2 || cps > 100 || !req.tenant.region[0] ||
                (req.has_requested_seats && (req.requested_seats < 1 || req.requested_seats > 10000)) ||
                (req.has_storage_estimate && req.storage_estimate_bytes < 0))
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
