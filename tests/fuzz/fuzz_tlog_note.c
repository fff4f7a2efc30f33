/* fuzz_tlog_note: libFuzzer driver for the signed-note and checkpoint parsers: every input is
 * parsed as a note; a parsed note's body as a checkpoint, whose formatted text must parse back to
 * the same values; every signature is checked against a fixed key (never valid by chance). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "tp/tlog.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static unsigned char pk[32];
    tp_note note;
    tp_checkpoint cp, back;
    char err[128], body[TP_TLOG_ORIGIN_MAX + 128];
    const char *text = (const char *)data;
    if (tp_note_parse(text, size, &note, err, sizeof(err)) != 0)
        return 0;
    if (note.body_len > size || note.n_sigs == 0 || note.n_sigs > TP_NOTE_MAX_SIGS)
        abort();
    for (size_t i = 0; i < note.n_sigs; i++)
        if (tp_note_sig_verify(&note.sigs[i], note.sigs[i].name, pk, text, note.body_len))
            abort(); /* the all-zero key signs nothing */
    if (tp_checkpoint_parse(text, note.body_len, &cp, err, sizeof(err)) != 0)
        return 0;
    int n = tp_checkpoint_format(&cp, body, sizeof(body));
    if (n <= 0 || tp_checkpoint_parse(body, (size_t)n, &back, err, sizeof(err)) != 0 ||
        strcmp(back.origin, cp.origin) != 0 || back.size != cp.size ||
        memcmp(back.root, cp.root, sizeof(cp.root)) != 0)
        abort();
    return 0;
}
