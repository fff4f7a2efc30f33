-- 0008_receipt_outbox_slim.sql: a receipt row written once and updated twice (numbered by the
-- relay's sequencer, then marked published) cost ~8 KB of WAL (scripts/bench, issue 8): the
-- envelope repeated the payload in base64, and every update logged the whole ~2 KB row again.
--
-- From this version on, `envelope` holds the DSSE envelope WITHOUT its payload
-- ({"payloadType", "signatures"}); the payload bytes live once, in `payload`. Readers that need
-- the whole envelope put the payload back (tpctl tenant history does). Rows written before keep
-- their full envelope, which stays valid: a reader keeps an envelope's own payload when it has one.
COMMENT ON COLUMN receipt_outbox.envelope IS
    'DSSE envelope without its payload (payloadType, signatures) since 0008; the payload column '
    'holds the signed bytes. Older rows may still carry a payload copy, equal to the column.';

-- Half of each new page stays free, so a row's two updates usually land on its own page. An
-- update on the same page logs only the bytes that changed (its leaf index, its published_at),
-- not the row (the space of dead versions is reused in place). Rows past ~2 KB
-- (TENANT_PROVISIONED) are also toasted down to ~256 bytes. Both apply to new pages and rows.
-- In a replay of 9,000 receipts of the real sizes (WAL per receipt, before -> after this file
-- and the slim envelope): insert 4.3 -> 2.5 KB, numbering 2.0 -> 0.7 KB, published mark
-- 1.8 -> 0.5 KB; 8.0 -> 3.7 KB in all, and 3,000 heap pages instead of 4,500.
ALTER TABLE receipt_outbox SET (fillfactor = 50, toast_tuple_target = 256);

-- Unnumbered rows need no entry in the unique leaf index (NULLs never conflict): a partial
-- index skips them, one index insert fewer per receipt. Built before the old one goes, so the
-- uniqueness is never unguarded (no code names either index).
CREATE UNIQUE INDEX receipt_outbox_leaf_numbered_idx ON receipt_outbox (leaf_index)
    WHERE leaf_index IS NOT NULL;
DROP INDEX receipt_outbox_leaf_idx;
