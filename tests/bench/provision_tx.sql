-- provision_tx.sql: the pgbench baseline of scripts/bench: exactly the rows that ONE real
-- provisioning writes (request, 7 stage rows, policy decision, tenant, namespace, 3 partitions,
-- quota, 3 outbox receipts), written in their final state as ONE transaction. Row sizes follow the
-- worker's (measured: stage output ~220 B, receipt payload ~1,480 B, DSSE envelope ~2,190 B).
-- tests/integration/test_bench_baseline.c checks the tables and counts against a real
-- provisioning, so the baseline cannot drift.
-- Usage: pgbench -n -M prepared -f tests/bench/provision_tx.sql -c 4 -T 20 DSN (schema: schemas/sql).
\set id :client_id * 1000000000000 + random(1, 999999999999)
BEGIN;
INSERT INTO provisioning_requests (request_id, actor_id, actor_type, source, tenant_slug, payload,
    payload_fingerprint, state, origin_topic, origin_partition, origin_offset, tenant_id, finished_at)
VALUES ('req-' || :id::bigint, 'billing-bench', 'system', 'BILLING', 'slug-' || :id::bigint,
    jsonb_build_object('requestId', 'req-' || :id::bigint, 'source', 'BILLING',
        'actor', jsonb_build_object('id', 'billing-bench', 'type', 'system', 'roles', '[]'::jsonb),
        'tenant', jsonb_build_object('name', 'Bench ' || :id::bigint, 'slug', 'slug-' || :id::bigint,
                                     'residency', 'US', 'region', 'us-east-1'),
        'plan', 'PRO', 'environment', 'prod', 'submittedAt', 1700000000000),
    md5(:id::bigint::text) || md5(:id::bigint::text), 'SUCCEEDED', 'tenant.provisioning.requests.v1', 0, :id,
    'tenant-' || :id::bigint, now());
INSERT INTO provisioning_stages (request_id, stage, ordinal, status, attempts, output, started_at, finished_at)
SELECT 'req-' || :id::bigint, s.name, s.ord, 'SUCCEEDED', 1,
       jsonb_build_object('stage', s.name, 'tenantId', 'tenant-' || :id::bigint, 'detail', repeat('x', 150)),
       now(), now()
FROM unnest(ARRAY['policy','tenant','namespace','partitions','quota','receipts','isolation'])
     WITH ORDINALITY AS s(name, ord);
INSERT INTO policy_decisions (request_id, decision_id, allow, reasons, policy_revision)
VALUES ('req-' || :id::bigint, md5(:id::bigint::text), true, '[]', 'rev-' || md5('policy'));
INSERT INTO tenants (id, name, slug, residency, region, plan, environment, status, created_by_request)
VALUES ('tenant-' || :id::bigint, 'Bench ' || :id::bigint, 'slug-' || :id::bigint, 'US', 'us-east-1', 'PRO', 'prod',
        'active', 'req-' || :id::bigint);
INSERT INTO tenant_namespaces (id, tenant_id, slug, environment)
VALUES ('ns_tenant-' || :id::bigint, 'tenant-' || :id::bigint, 'slug-' || :id::bigint || '-prod', 'prod');
INSERT INTO tenant_partitions (id, tenant_id, name, type, region, isolation)
SELECT 'part_tenant-' || :id::bigint || '_' || p, 'tenant-' || :id::bigint, p, p, 'us-east-1', 'shared'
FROM unnest(ARRAY['primary','analytics','audit']) AS p;
INSERT INTO tenant_quotas (tenant_id, tier, requests_per_minute, requests_per_day, ingest_events_per_minute,
    max_tokens_per_request, storage_bytes, seat_cap, burst_multiplier)
VALUES ('tenant-' || :id::bigint, 'PRO', 1000, 1000000, 5000, 16000, 250000000000, 150, 1.2);
INSERT INTO receipt_outbox (receipt_id, tenant_id, request_id, action_type, sequence, previous_hash,
    hash, payload, envelope, signed_at_ms, published_at)
SELECT 'prov_' || :id::bigint || '_' || a.ord, 'tenant-' || :id::bigint, 'req-' || :id::bigint, a.name, a.ord,
       repeat('0', 64), md5(a.name || :id::bigint) || md5(:id::bigint || a.name),
       convert_to(repeat('p', 1480), 'UTF8'),
       jsonb_build_object('payloadType', 'application/vnd.in-toto+json', 'payload', repeat('e', 1970),
                          'signatures', jsonb_build_array(jsonb_build_object('keyid', 'dev', 'sig', repeat('s', 88)))),
       1796160000000 + :id::bigint, now()
FROM unnest(ARRAY['TENANT_PROVISIONED','TENANT_QUOTA_ASSIGNED','TENANT_ISOLATION_VERIFIED'])
     WITH ORDINALITY AS a(name, ord);
-- No leaf indexes: a provisioning commits its receipts unnumbered (the relay's sequencer numbers
-- them later, in transactions of its own, worker/tlog/sequence_db.c).
COMMIT;
