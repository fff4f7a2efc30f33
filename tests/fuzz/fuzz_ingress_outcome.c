/* fuzz_ingress_outcome.c: libFuzzer driver for the other untrusted text tp-ingress reads: the
 * Prefer header (tp_ingress_parse_prefer_wait) and a status view turned into a POST's answer
 * (tp_ingress_outcome); checks the invariants of both. */
#include "tp/error.h"
#include "tp/ingress.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int w = tp_ingress_parse_prefer_wait((const char *)data, size);
    if (w < -1 || w > TP_INGRESS_WAIT_MAX_S)
        abort();
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    int status = -1;
    char *body = NULL;
    bool problem = false;
    int rc = tp_ingress_outcome(text, &status, &body, &problem);
    if (rc == 0) {
        /* Not terminal: nothing; terminal: one of the documented answers with a JSON body. */
        if (status == 0 ? body != NULL
                        : (!body || body[0] != '{' ||
                           (status != 201 && status != 403 && status != 409 && status != 500) ||
                           problem != (status != 201)))
            abort();
    } else if (rc != TP_EINVAL && rc != TP_ENOMEM) {
        abort();
    } else if (status != 0 || body) {
        abort();
    }
    free(body);
    free(text);
    return 0;
}
