/* cli.h: tpctl subcommands, each a plain function the dispatch table in tpctl_main.c calls with
 * argv[0] = the subcommand name. They return the process exit code (0 ok, 1 check failed,
 * 2 usage or I/O error). */
#ifndef TP_CLI_H
#define TP_CLI_H

#include <stddef.h>
#include <stdio.h>

#include "tp/codec.h"
#include "tp/receipts.h"

/* tpctl keygen --out-dir DIR [--force]: writes DIR/receipts.key (0600), DIR/receipts.pub and
 * appends the public key to DIR/receipts.keyset; prints the key id. */
int tpctl_cmd_keygen(int argc, char **argv);

/* tpctl receipts verify (--file F) [--keyset K] [--quiet]
 * tpctl receipts tail (--file F) */
int tpctl_cmd_receipts(int argc, char **argv);

/* Hooks taking already-decoded records, so that the Kafka reader can feed them.
 * TODO(kafka): when include/tp/codec.h lands, `verify`/`tail` without --file read the receipts
 * topic from the beginning, decode every record (tp_receipt_record), map it to a tp_receipt_view
 * and call these per batch. */
/* Maps a decoded Avro receipt onto a view borrowing rec's buffers; sigs (capacity sigs_cap) holds the
 * signature entries. Returns 0, or TP_EINVAL when rec has more signatures than sigs_cap. */
int tpctl_receipts_view_from_record(const tp_receipt_record *rec, tp_receipt_view *view,
                                    tp_receipt_sig *sigs, size_t sigs_cap);
/* Feeds n decoded records to v in order (the hook the Kafka reader calls per batch).
 * Returns 0, TP_EVERIFY (some break; see the summary) or TP_ENOMEM. */
int tpctl_receipts_verify_records(tp_verifier *v, const tp_receipt_record *recs, size_t n);
/* Feeds n views to v in order. Returns 0, TP_EVERIFY (some break; see the summary) or TP_ENOMEM. */
int tpctl_receipts_verify_views(tp_verifier *v, const tp_receipt_view *views, size_t n);
/* Prints n views as JSON lines. Returns 0 or a TP_E* code. */
int tpctl_receipts_tail_views(FILE *out, const tp_receipt_view *views, size_t n);
/* Prints a verification summary (key: value lines, then "result: OK" or "result: BROKEN"). */
void tpctl_receipts_print_summary(FILE *out, const tp_verify_summary *sum);

#endif
