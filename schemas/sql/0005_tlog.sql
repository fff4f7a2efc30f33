-- 0005_tlog.sql: the transparency log over all receipts (DESIGN §7, worker/tlog): every receipt
-- is leaf number leaf_index of one append-only RFC 9162 Merkle tree per deployment.
--
-- Leaf indexes are handed out by the one tlog_counter row, updated by the last statement of each
-- transaction that inserted receipts (stages/stage_receipts.c, tp_stage_assign_leaves): its row
-- lock serialises those transactions only from that statement to their COMMIT, so indexes are
-- dense (no gaps: a rolled-back transaction's update is rolled back too), never reused (unique
-- index), and a committed next_leaf = N means every leaf below N is committed.
--
-- tlog_nodes holds the hash of every complete subtree (level, idx) of the leaves hashed so far
-- (tlog_tree.size of them): a proof reads O(log^2 n) rows, never every leaf. tlog_checkpoints
-- keeps each signed checkpoint (C2SP tlog-checkpoint in a signed note) the relay made.

-- Receipts written before this migration stay out of the log (leaf_index NULL): they were
-- published without a leaf-index header, and `tpctl receipts verify` counts such records as made
-- before the log rather than guessing their place.
ALTER TABLE receipt_outbox ADD COLUMN leaf_index bigint;
CREATE UNIQUE INDEX receipt_outbox_leaf_idx ON receipt_outbox (leaf_index);

CREATE TABLE tlog_counter (
    id         integer PRIMARY KEY CHECK (id = 1),
    next_leaf  bigint NOT NULL CHECK (next_leaf >= 0)
);
INSERT INTO tlog_counter (id, next_leaf) VALUES (1, 0);

CREATE TABLE tlog_nodes (
    level  smallint NOT NULL CHECK (level BETWEEN 0 AND 63),
    idx    bigint NOT NULL CHECK (idx >= 0),
    hash   bytea NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (level, idx)
);

-- How many leaves tlog_nodes covers, and the root of that tree. Extended under this row's lock.
CREATE TABLE tlog_tree (
    id          integer PRIMARY KEY CHECK (id = 1),
    size        bigint NOT NULL CHECK (size >= 0),
    root        bytea NOT NULL CHECK (length(root) = 32),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO tlog_tree (id, size, root)
    VALUES (1, 0, decode('e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855', 'hex'));

CREATE TABLE tlog_checkpoints (
    size        bigint PRIMARY KEY CHECK (size >= 0),
    root        bytea NOT NULL CHECK (length(root) = 32),
    note        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- A checkpoint names only leaves already on the receipts topic: the first unpublished leaf.
CREATE INDEX receipt_outbox_unpublished_leaf_idx ON receipt_outbox (leaf_index)
    WHERE published_at IS NULL;
