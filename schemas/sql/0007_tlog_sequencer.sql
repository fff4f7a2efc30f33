-- 0007_tlog_sequencer.sql: receipts are committed unnumbered (leaf_index NULL) and numbered as log
-- leaves afterwards by the relay's round (worker/outbox/relay_db.c, with the sequencer's statements
-- of include/tp/tlog_db.h) under the tlog_counter row lock, in the transaction that also marks
-- delivered receipts published, so a provisioning's transaction no longer waits for that lock.
-- The sequencer reads the committed, unnumbered, unpublished receipts in (tenant, sequence)
-- order: this index holds exactly those, so it stays as small as the backlog.
CREATE INDEX receipt_outbox_unnumbered_idx ON receipt_outbox (tenant_id, sequence)
    WHERE leaf_index IS NULL AND published_at IS NULL;
