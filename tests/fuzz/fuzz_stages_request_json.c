/* fuzz_stages_request_json.c: libFuzzer target for tp_stages_request_from_json, the reader of a
 * request's stored payload (provisioning_requests.payload: what `tpctl dlq replay` and `tpctl
 * submit --from-status` send again), a ProvisioningRequest or a TenantActionRequest as JSON.
 * Invariants: never crash or leak; whatever reads back writes (tp_stages_request_json) and reads
 * again to the same request. Seeds: tests/fuzz/corpus/stages_request_json/. */
#include "tp/error.h"
#include "tp/stages.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    tp_request a, b;
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    int rc = tp_stages_request_from_json(text, &a);
    free(text);
    if (rc != 0) {
        if (rc != TP_EINVAL && rc != TP_EDECODE_TOO_LARGE && rc != TP_ENOMEM)
            abort();
        return 0;
    }
    char *again = tp_stages_request_json(&a);
    if (!again)
        return 0; /* out of memory */
    rc = tp_stages_request_from_json(again, &b);
    free(again);
    if (rc != 0 || memcmp(&a, &b, sizeof(a)) != 0)
        abort();
    return 0;
}
