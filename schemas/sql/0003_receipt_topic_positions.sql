-- 0003_receipt_topic_positions.sql: how far the receipts topic is known to be reconciled with the
-- outbox, per advisory-lock slot (hashtext(tenant_id) & 15) and partition: every record at an
-- offset below next_offset that carries a receipt of one of the slot's tenants is marked
-- published in receipt_outbox. Only the relay holding the slot writes its rows: with each mark
-- (as far as its delivered, unmarked records allow) and after reconciling. A relay that takes a
-- slot reads the topic from here to the high watermark and marks what it finds before it
-- publishes anything (DESIGN §7), so a crash between the broker's ack and the mark re-publishes
-- nothing. No row for a (slot, partition): read that partition from its start.

CREATE TABLE receipt_topic_positions (
    topic        text NOT NULL,
    slot         integer NOT NULL CHECK (slot BETWEEN 0 AND 15),
    partition    integer NOT NULL CHECK (partition >= 0),
    next_offset  bigint NOT NULL CHECK (next_offset >= 0),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, slot, partition)
);
