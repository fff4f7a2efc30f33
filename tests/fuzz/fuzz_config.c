/* fuzz_config: config file bytes → tp_config_parse; never a crash, a hang or a leak. */
#include "tp/config.h"

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[256];
    tp_config *cfg = tp_config_new();
    if (!cfg)
        return 0;
    (void)tp_config_parse(cfg, (const char *)data, size, err, sizeof(err));
    (void)tp_config_get_int(cfg, "retry.max_attempts");
    tp_config_free(cfg);
    return 0;
}
