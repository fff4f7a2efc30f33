-- 0004_receipt_signed_at.sql: the signed timestamp of each receipt (milliseconds since the epoch,
-- the in-toto statement's predicate.timestamp) as a column, written with the row, so the relay
-- no longer parses every payload's JSON in each fetch to find the record timestamp (a third of
-- the relay's database time). Rows written before this migration keep NULL; the relay reads
-- their payload as before.

ALTER TABLE receipt_outbox ADD COLUMN signed_at_ms bigint;
