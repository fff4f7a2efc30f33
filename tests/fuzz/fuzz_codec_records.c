/* fuzz_codec_records.c: libFuzzer target for the DeadLetter and ProvenanceReceipt decoders (tpctl
 * reads both from topics). Every input goes to both; decoded buffers must be released cleanly.
 * Seeds: tests/fuzz/corpus/codec_records/. */
#include "tp/codec.h"
#include "tp/error.h"

#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

static tp_codec *codec;

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    tp_dead_letter dl;
    tp_receipt_record r;
    char err[256];
    if (!codec) {
        codec = tp_codec_new(TP_SOURCE_DIR "/schemas/avro", NULL, err, sizeof(err));
        if (!codec) {
            fprintf(stderr, "fuzz_codec_records: %s\n", err);
            abort();
        }
    }
    if (tp_codec_decode_dead_letter(codec, data, size, &dl, err, sizeof(err)) == 0) {
        unsigned char *buf = NULL;
        size_t len = 0;
        if (tp_codec_encode_dead_letter(codec, &dl, &buf, &len) != 0)
            abort();
        free(buf);
    }
    tp_dead_letter_release(&dl);
    if (tp_codec_decode_receipt(codec, data, size, &r, err, sizeof(err)) == 0) {
        unsigned char *buf = NULL;
        size_t len = 0;
        if (tp_codec_encode_receipt(codec, &r, &buf, &len) != 0)
            abort();
        free(buf);
    }
    tp_receipt_record_release(&r);
    return 0;
}
