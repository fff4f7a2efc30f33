-- 0001_init.sql: the tenant-provisioner schema: tenants and what they own, requests and their
-- stage conditions, policy decisions, the receipt outbox, idempotency keys and dead letters.
-- Applied by tp_store_migrate inside one transaction together with its schema_migrations row.

CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tenants (
    id                  text PRIMARY KEY,                 -- "tenant-<uuid>"
    name                text NOT NULL,
    slug                text NOT NULL UNIQUE,
    residency           text NOT NULL CHECK (residency IN ('US', 'EU')),
    region              text NOT NULL,
    plan                text NOT NULL CHECK (plan IN ('FREE', 'STARTER', 'PRO', 'ENTERPRISE')),
    environment         text NOT NULL CHECK (environment IN ('prod', 'staging', 'dev')),
    status              text NOT NULL DEFAULT 'provisioning'
                        CHECK (status IN ('provisioning', 'active', 'quarantined')),
    owner_id            text,
    created_by_request  text NOT NULL UNIQUE,
    requested_seats     integer,
    storage_estimate_bytes bigint,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tenants_owner_idx ON tenants (owner_id) WHERE owner_id IS NOT NULL;

CREATE TABLE tenant_namespaces (
    id           text PRIMARY KEY,                        -- "ns_<tenantId>"
    tenant_id    text NOT NULL REFERENCES tenants (id),
    slug         text NOT NULL UNIQUE,                    -- "<slug>-<environment>"
    environment  text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tenant_namespaces_tenant_idx ON tenant_namespaces (tenant_id);

CREATE TABLE tenant_partitions (
    id          text PRIMARY KEY,                         -- "part_<tenantId>_<name>"
    tenant_id   text NOT NULL REFERENCES tenants (id),
    name        text NOT NULL CHECK (name IN ('primary', 'analytics', 'audit')),
    type        text NOT NULL,
    region      text NOT NULL,
    isolation   text NOT NULL CHECK (isolation IN ('dedicated', 'shared')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name)
);

CREATE TABLE tenant_quotas (
    tenant_id                 text NOT NULL UNIQUE REFERENCES tenants (id),
    tier                      text NOT NULL CHECK (tier IN ('FREE', 'STARTER', 'PRO', 'ENTERPRISE')),
    requests_per_minute       bigint NOT NULL,
    requests_per_day          bigint NOT NULL,
    ingest_events_per_minute  bigint NOT NULL,
    max_tokens_per_request    bigint NOT NULL,
    storage_bytes             bigint NOT NULL,
    seat_cap                  bigint NOT NULL,
    burst_multiplier          numeric(6, 3) NOT NULL,
    created_at                timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE provisioning_requests (
    request_id           text PRIMARY KEY,
    idempotency_key      text,
    actor_id             text NOT NULL,
    actor_type           text NOT NULL,
    source               text NOT NULL CHECK (source IN ('ADMIN_API', 'SELF_SERVE_API', 'BILLING')),
    tenant_slug          text NOT NULL,
    payload              jsonb NOT NULL,
    payload_fingerprint  text NOT NULL,                   -- sha256 hex of the payload text
    state                text NOT NULL DEFAULT 'ACCEPTED'
                         CHECK (state IN ('ACCEPTED', 'RUNNING', 'SUCCEEDED', 'FAILED', 'DENIED')),
    failure_reason       text,
    failure_message      text,
    origin_topic         text,
    origin_partition     integer,
    origin_offset        bigint,
    tenant_id            text,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    finished_at          timestamptz
);
CREATE INDEX provisioning_requests_state_idx ON provisioning_requests (state);
CREATE INDEX provisioning_requests_actor_idx ON provisioning_requests (actor_id);

CREATE TABLE provisioning_stages (
    request_id   text NOT NULL REFERENCES provisioning_requests (request_id),
    stage        text NOT NULL,
    ordinal      integer NOT NULL,
    status       text NOT NULL DEFAULT 'PENDING'
                 CHECK (status IN ('PENDING', 'RUNNING', 'SUCCEEDED', 'FAILED', 'RETRYING')),
    attempts     integer NOT NULL DEFAULT 0,
    reason       text,
    message      text,
    output       jsonb,
    started_at   timestamptz,
    finished_at  timestamptz,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (request_id, stage)
);

CREATE TABLE policy_decisions (
    id               bigserial PRIMARY KEY,
    request_id       text NOT NULL REFERENCES provisioning_requests (request_id),
    decision_id      text NOT NULL DEFAULT '',
    allow            boolean NOT NULL,
    reasons          jsonb NOT NULL DEFAULT '[]',
    policy_revision  text NOT NULL DEFAULT '',
    decided_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX policy_decisions_request_idx ON policy_decisions (request_id, id);

CREATE TABLE receipt_outbox (
    receipt_id     text PRIMARY KEY,                      -- "prov_<uuid>"
    tenant_id      text NOT NULL REFERENCES tenants (id),
    request_id     text NOT NULL,
    action_type    text NOT NULL,
    sequence       bigint NOT NULL CHECK (sequence >= 1),
    previous_hash  text NOT NULL,
    hash           text NOT NULL,
    payload        bytea NOT NULL,                        -- the in-toto Statement (DSSE payload)
    envelope       jsonb NOT NULL,                        -- the signed DSSE envelope
    created_at     timestamptz NOT NULL DEFAULT now(),
    published_at   timestamptz,
    UNIQUE (request_id, action_type),
    UNIQUE (tenant_id, sequence)
);
-- The relay reads unpublished rows per tenant in sequence order.
CREATE INDEX receipt_outbox_unpublished_idx ON receipt_outbox (tenant_id, sequence)
    WHERE published_at IS NULL;
CREATE INDEX receipt_outbox_unpublished_created_idx ON receipt_outbox (created_at)
    WHERE published_at IS NULL;

CREATE TABLE idempotency_keys (
    caller            text NOT NULL,
    key               text NOT NULL,
    request_id        text NOT NULL,
    body_fingerprint  text NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (caller, key)
);

CREATE TABLE dead_letters (
    id                bigserial PRIMARY KEY,
    request_id        text,
    reason            text NOT NULL,
    message           text,
    origin_topic      text,
    origin_partition  integer,
    origin_offset     bigint,
    original          bytea,
    created_at        timestamptz NOT NULL DEFAULT now(),
    replayed_at       timestamptz
);
CREATE INDEX dead_letters_request_idx ON dead_letters (request_id);
CREATE INDEX dead_letters_pending_idx ON dead_letters (created_at) WHERE replayed_at IS NULL;

-- Operator switches read by the worker at run time (e.g. the isolation guard's kill switch).
CREATE TABLE tp_flags (
    name        text PRIMARY KEY,
    enabled     boolean NOT NULL DEFAULT false,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO tp_flags (name, enabled) VALUES ('provisioning.kill_switch', false);
