/* fuzz_codec_decode.c: libFuzzer target for tp_codec_decode_request, the parser of untrusted Kafka
 * values on the requests topic. Invariants: never crash, leak or allocate wildly; whatever decodes
 * re-encodes and decodes to the same request. Seeds: tests/fuzz/corpus/codec_decode/. */
#include "tp/codec.h"
#include "tp/error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

static tp_codec *codec;

static tp_codec *get_codec(void) {
    if (!codec) {
        char err[512];
        codec = tp_codec_new(TP_SOURCE_DIR "/schemas/avro", "7", err, sizeof(err));
        if (!codec) {
            fprintf(stderr, "fuzz_codec_decode: %s\n", err);
            abort();
        }
    }
    return codec;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    tp_codec *c = get_codec();
    tp_request req, again;
    unsigned char *buf = NULL;
    size_t len = 0;
    char err[256];
    int rc = tp_codec_decode_request(c, data, size, &req, err, sizeof(err));
    if (rc == 0) {
        /* what we accept we can write back, and read again to the same thing */
        if (tp_codec_encode_request(c, &req, &buf, &len) != 0)
            abort();
        if (tp_codec_decode_request(c, buf, len, &again, err, sizeof(err)) != 0)
            abort();
        if (memcmp(&req, &again, sizeof(req)) != 0)
            abort();
        free(buf);
    } else if (rc < TP_EDECODE_FRAMING || rc > TP_EDECODE_AVRO) {
        if (rc != TP_ENOMEM)
            abort(); /* only the documented codes */
    }
    return 0;
}
