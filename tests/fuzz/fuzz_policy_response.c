/* fuzz_policy_response.c: libFuzzer driver for tp_policy_parse_response (OPA's answer is
 * untrusted). Checks the decision's invariants: never an allow alongside an error or reasons,
 * bounded and NUL-terminated fields. */
#include "tp/error.h"
#include "tp/policy.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    tp_policy_decision d;
    int rc = tp_policy_parse_response((const char *)data, size, &d);
    if (rc != 0 && rc != TP_EOPA_BAD_RESPONSE)
        abort();
    if (rc != 0 && d.allow)
        abort();
    if (d.allow && d.n_reasons != 0)
        abort();
    if (d.n_reasons < 0 || d.n_reasons > TP_POLICY_REASONS_MAX)
        abort();
    for (int i = 0; i < d.n_reasons; i++)
        if (memchr(d.reasons[i], '\0', sizeof(d.reasons[i])) == NULL)
            abort();
    if (memchr(d.decision_id, '\0', sizeof(d.decision_id)) == NULL ||
        memchr(d.policy_revision, '\0', sizeof(d.policy_revision)) == NULL)
        abort();
    return 0;
}
