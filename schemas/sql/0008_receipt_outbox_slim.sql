-- 0008_receipt_outbox_slim.sql: a receipt row written once and updated twice (numbered by the
-- relay's sequencer, then marked published) cost ~8.2 KB of WAL (scripts/bench, issue 8): the
-- envelope repeated the payload in base64, and every non-HOT update copied the ~2 KB row.
--
-- From this version on, `envelope` holds the DSSE envelope WITHOUT its payload
-- ({"payloadType", "signatures"}); the payload bytes live once, in `payload`. Readers that need
-- the whole envelope put the payload back (tpctl tenant history does). Rows written before keep
-- their full envelope, which stays valid: a reader keeps an envelope's own payload when it has one.
COMMENT ON COLUMN receipt_outbox.envelope IS
    'DSSE envelope without its payload (payloadType, signatures) since 0008; the payload column '
    'holds the signed bytes. Older rows may still carry a payload copy, equal to the column.';

-- Values past 256 bytes move to the TOAST table, so the heap row is ~200 bytes and the two
-- updates copy a small row and a TOAST pointer instead of the payload (applies to new rows).
ALTER TABLE receipt_outbox SET (toast_tuple_target = 256);

-- Unnumbered rows need no entry in the unique leaf index (NULLs never conflict): a partial
-- index skips them, one index insert fewer per receipt. Built before the old one goes, so the
-- uniqueness is never unguarded (no code names either index).
CREATE UNIQUE INDEX receipt_outbox_leaf_numbered_idx ON receipt_outbox (leaf_index)
    WHERE leaf_index IS NOT NULL;
DROP INDEX receipt_outbox_leaf_idx;
