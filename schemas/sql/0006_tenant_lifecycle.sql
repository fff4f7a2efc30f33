-- 0006_tenant_lifecycle.sql: a tenant's life after provisioning (issue 11): the states
-- suspended and deprovisioned, the suspension reason, the soft delete's purge-after timestamps
-- (rows are kept; the slug stays taken while the row exists), and the action a request carries.
-- ADD COLUMN with a constant default rewrites nothing (PostgreSQL 11+).

ALTER TABLE tenants DROP CONSTRAINT tenants_status_check;
ALTER TABLE tenants ADD CONSTRAINT tenants_status_check
    CHECK (status IN ('provisioning', 'active', 'suspended', 'deprovisioned', 'quarantined'));
ALTER TABLE tenants
    ADD COLUMN suspended_reason  text,
    ADD COLUMN deprovisioned_at  timestamptz,
    ADD COLUMN purge_after       timestamptz;
-- GET /api/admin/tenants filters by state and plan and pages by slug.
CREATE INDEX tenants_status_slug_idx ON tenants (status, slug);

ALTER TABLE tenant_partitions ADD COLUMN purge_after timestamptz;

ALTER TABLE tenant_quotas ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();

ALTER TABLE provisioning_requests
    ADD COLUMN action text NOT NULL DEFAULT 'PROVISION'
        CHECK (action IN ('PROVISION', 'CHANGE_PLAN', 'SUSPEND', 'RESUME', 'DEPROVISION'));
