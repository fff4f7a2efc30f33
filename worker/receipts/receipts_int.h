/* receipts_int.h: declarations private to worker/receipts (base64, sodium start-up). */
#ifndef TP_RECEIPTS_INT_H
#define TP_RECEIPTS_INT_H

#include <stddef.h>

#include "tp/receipts.h"

/* Initialises libsodium once (thread-safe). Returns 0 or TP_ECRYPTO. */
int tp_receipts__init(void);

/* Standard base64 with padding. Returns a new NUL-terminated string or NULL on out of memory. */
char *tp_receipts__b64_encode(const unsigned char *bin, size_t len);
/* Decodes standard base64 with padding (untrusted, no whitespace). Returns 0 and a new buffer in
 * *out (one NUL appended after *out_len bytes), or TP_EINVAL / TP_ENOMEM. */
int tp_receipts__b64_decode(const char *b64, size_t b64_len, unsigned char **out, size_t *out_len);

/* Signs msg with the signer's key into sig (64 bytes). Returns 0 or TP_ECRYPTO. */
int tp_receipts__sign(const tp_signer *s, const unsigned char *msg, size_t len, unsigned char sig[64]);

#endif
