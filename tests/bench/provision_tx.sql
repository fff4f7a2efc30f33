-- provision_tx.sql: the pgbench baseline of scripts/bench: the rows that ONE real provisioning
-- writes (request, 7 stage rows, policy decision, tenant, namespace, 3 partitions, quota, 3 outbox
-- receipts), in the state its transaction commits them, as ONE transaction.
--
-- The rows are the product's, not filler: ids shaped like the worker's (a request UUID,
-- "tenant-<uuid>", "prov_<uuid>"; random within a run), each stage's output JSON, and as each
-- receipt's payload the in-toto Statement text the worker signs (same keys in the same order,
-- compact; ~1,890, ~1,180 and ~1,320 bytes), so PostgreSQL compresses it as much as a real one
-- (TENANT_PROVISIONED to ~55%; the two smaller rows stay under the TOAST threshold and are stored
-- as they are). The envelope is the stored DSSE envelope without its payload copy
-- (schemas/sql/0008) with a random 88-character signature. Receipts are committed unpublished and
-- unnumbered (published_at and leaf_index NULL, signed_at_ms set), so each pays the partial
-- indexes WHERE published_at IS NULL as a real insert does; numbering and publishing are the
-- relay's later transactions (worker/outbox/relay_db.c), which the baseline does not model.
-- tests/integration/test_bench_baseline.c checks all of this against a real provisioning: the
-- tables and row counts, each table's row bytes, each stage output's size, and per receipt the
-- payload's length and stored (compressed) size, the envelope's size and the row's state.
--
-- The first statement computes the transaction's ids, hashes and signatures once and hands them
-- to the others (RETURNING ... \gset), as the worker has them in memory: the others send them as
-- parameters, and the database does not hash per row what the worker computes itself.
-- pgbench reads ":name" as a variable even inside a string literal, so a colon before a letter in
-- the JSON templates is written \072 (E'' strings).
-- Usage: pgbench -n -M prepared -f tests/bench/provision_tx.sql -c 4 -T 20 DSN (schema: schemas/sql).
-- -M prepared (or extended) is needed: -M simple pastes the \gset values into the SQL unquoted.
\set id :client_id * 1000000000000 + random(1, 999999999999)
BEGIN;
INSERT INTO provisioning_requests (request_id, actor_id, actor_type, source, tenant_slug, payload,
    payload_fingerprint, state, origin_topic, origin_partition, origin_offset, tenant_id, finished_at)
SELECT k.req, 'billing-bench', 'system', 'BILLING', k.slug,
       jsonb_build_object('plan', 'PRO', 'actor', jsonb_build_object('id', 'billing-bench', 'type', 'system', 'roles', '[]'::jsonb),
           'source', 'BILLING', 'tenant', jsonb_build_object('name', 'Tenant ' || k.slug, 'slug', k.slug, 'residency', 'US'),
           'requestId', k.req, 'environment', 'prod', 'submittedAt', (extract(epoch FROM now()) * 1000)::bigint),
       md5('f' || k.i) || md5('F' || k.i), 'SUCCEEDED', 'tenant.provisioning.requests.v1', 0, k.i::bigint, k.tenant, now()
FROM (SELECT i, md5('r' || i)::uuid::text AS req, 'tenant-' || md5('t' || i)::uuid AS tenant, 'slug-' || i AS slug
      FROM (VALUES (:id::bigint::text)) v(i)) k
RETURNING request_id AS req, tenant_id AS tenant, tenant_slug AS slug,
    md5('d' || request_id)::uuid::text AS decision,
    'prov_' || md5('p1' || request_id)::uuid AS rid1,
    'prov_' || md5('p2' || request_id)::uuid AS rid2,
    'prov_' || md5('p3' || request_id)::uuid AS rid3,
    md5('h1' || request_id) || md5('H1' || request_id) AS hash1,
    md5('h2' || request_id) || md5('H2' || request_id) AS hash2,
    md5('h3' || request_id) || md5('H3' || request_id) AS hash3,
    md5('s' || tenant_id) || md5('S' || tenant_id) AS tenant_digest,
    md5('s' || request_id) || md5('S' || request_id) AS request_digest,
    translate(encode(decode(replace(gen_random_uuid()::text || gen_random_uuid()::text || gen_random_uuid()::text
        || gen_random_uuid()::text, '-', ''), 'hex'), 'base64'), E'\n', '') AS sig1,
    translate(encode(decode(replace(gen_random_uuid()::text || gen_random_uuid()::text || gen_random_uuid()::text
        || gen_random_uuid()::text, '-', ''), 'hex'), 'base64'), E'\n', '') AS sig2,
    translate(encode(decode(replace(gen_random_uuid()::text || gen_random_uuid()::text || gen_random_uuid()::text
        || gen_random_uuid()::text, '-', ''), 'hex'), 'base64'), E'\n', '') AS sig3,
    to_char(now() AT TIME ZONE 'UTC', E'YYYY-MM-DD"T"HH24\072MI\072SS.MS"Z"') AS signed_at,
    (extract(epoch FROM now()) * 1000)::bigint AS signed_at_ms \gset
INSERT INTO provisioning_stages (request_id, stage, ordinal, status, attempts, output, started_at, finished_at)
SELECT :req::text, s.stage, s.ord, 'SUCCEEDED', 1, s.output, now(), now()
FROM (VALUES
  (1, 'policy', jsonb_build_object('allow', true, 'reasons', '[]'::jsonb, 'decisionId', :decision::text,
                                   'ownedTenants', 0, 'policyRevision', 'tenants.provision/2025-06.1')),
  (2, 'tenant', jsonb_build_object('slug', :slug::text, 'created', true, 'tenantId', :tenant::text)),
  (3, 'namespace', jsonb_build_object('id', 'ns_' || :tenant::text, 'slug', :slug::text || '-prod', 'environment', 'prod')),
  (4, 'partitions', jsonb_build_object('partitions', jsonb_build_array(
       jsonb_build_object('id', 'part_' || :tenant::text || '_primary', 'name', 'primary', 'type', 'primary',
                          'region', 'us-east-1', 'isolation', 'shared'),
       jsonb_build_object('id', 'part_' || :tenant::text || '_analytics', 'name', 'analytics', 'type', 'analytics',
                          'region', 'us-east-1', 'isolation', 'shared'),
       jsonb_build_object('id', 'part_' || :tenant::text || '_audit', 'name', 'audit', 'type', 'audit',
                          'region', 'us-east-1', 'isolation', 'shared')))),
  (5, 'quota', jsonb_build_object('tier', 'PRO', 'seatCap', 150, 'storageBytes', 250000000000, 'requestsPerDay', 1000000,
                                  'burstMultiplier', 1.2, 'requestsPerMinute', 1000, 'maxTokensPerRequest', 16000,
                                  'ingestEventsPerMinute', 5000)),
  (6, 'receipts', jsonb_build_object('provisioning', :rid1::text, 'quotaAssignment', :rid2::text)),
  (7, 'isolation', jsonb_build_object('checks', jsonb_build_array(
       jsonb_build_object('check', 'namespace_owned_by_tenant', 'passed', true),
       jsonb_build_object('check', 'partitions_owned_by_tenant', 'passed', true),
       jsonb_build_object('check', 'regions_match_residency', 'passed', true),
       jsonb_build_object('check', 'quota_matches_plan', 'passed', true),
       jsonb_build_object('check', 'kill_switch_off', 'passed', true)),
     'receiptId', :rid3::text, 'tenantStatus', 'active'))
) AS s(ord, stage, output);
INSERT INTO policy_decisions (request_id, decision_id, allow, reasons, policy_revision)
VALUES (:req, :decision, true, '[]', 'tenants.provision/2025-06.1');
INSERT INTO tenants (id, name, slug, residency, region, plan, environment, status, created_by_request)
VALUES (:tenant, 'Tenant ' || :slug::text, :slug, 'US', 'us-east-1', 'PRO', 'prod', 'active', :req);
INSERT INTO tenant_namespaces (id, tenant_id, slug, environment)
VALUES ('ns_' || :tenant::text, :tenant, :slug::text || '-prod', 'prod');
INSERT INTO tenant_partitions (id, tenant_id, name, type, region, isolation)
SELECT 'part_' || :tenant::text || '_' || p, :tenant::text, p, p, 'us-east-1', 'shared'
FROM unnest(ARRAY['primary','analytics','audit']) AS p;
INSERT INTO tenant_quotas (tenant_id, tier, requests_per_minute, requests_per_day, ingest_events_per_minute,
    max_tokens_per_request, storage_bytes, seat_cap, burst_multiplier)
VALUES (:tenant, 'PRO', 1000, 1000000, 5000, 16000, 250000000000, 150, 1.2);
-- The receipts: the tenant's chain starts at 64 zeros and each receipt names the previous one's
-- hash. The Statement is the head, the action's data, the tail, filled in by format():
-- %1$s action, %2$s tenant id, %3$s request id, %4$s decision id, %5$s previous hash,
-- %6$s receipt id, %7$s sequence, %8$s slug, %9$s signed time, %10$s/%11$s subject digests.
INSERT INTO receipt_outbox (receipt_id, tenant_id, request_id, action_type, sequence, previous_hash,
    hash, payload, envelope, signed_at_ms)
SELECT a.receipt_id, :tenant::text, :req::text, a.action, a.seq, a.previous_hash, a.hash,
       convert_to(format(
           '{"_type":"https://in-toto.io/Statement/v1","predicate":{"actionType":"%1$s","actor":{"id":"billing-bench",'
           '"type":"system"},"correlationId":"","data":' || a.data || ',"policy":{"decisionId":"%4$s",'
           '"revision":"tenants.provision/2025-06.1"},"previousHash":"%5$s","receiptId":"%6$s","requestId":"%3$s",'
           '"sequence":%7$s,"tenantId":"%2$s","tenantSlug":"%8$s","timestamp":"%9$s"},'
           '"predicateType":"https://tenant-provisioner.dev/provenance/v1","subject":[{"digest":{"sha256":"%10$s"},'
           '"name":"tenant/%2$s"},{"digest":{"sha256":"%11$s"},"name":"request/%3$s"}]}',
           a.action, :tenant::text, :req::text, :decision::text, a.previous_hash, a.receipt_id, a.seq, :slug::text,
           :signed_at::text, :tenant_digest::text, :request_digest::text), 'UTF8'),
       jsonb_build_object('payloadType', 'application/vnd.in-toto+json', 'signatures',
           jsonb_build_array(jsonb_build_object('keyid', 'ed25519:5e1f0c2a9b7d4e63', 'sig', a.sig))),
       :signed_at_ms::bigint
FROM (VALUES
  (1, 'TENANT_PROVISIONED', :rid1::text, repeat('0', 64), :hash1::text, :sig1::text,
   E'{"environment":"prod","namespace":{"environment":"prod","id":"ns_%2$s","slug":"%8$s-prod"},"partitions":['
   '{"id":"part_%2$s_primary","isolation":"shared","name":"primary","region":"us-east-1","type":"primary"},'
   '{"id":"part_%2$s_analytics","isolation":"shared","name":"analytics","region":"us-east-1","type":"analytics"},'
   '{"id":"part_%2$s_audit","isolation":"shared","name":"audit","region":"us-east-1","type":"audit"}],'
   '"plan":"PRO","seats"\072null,"storageEstimateBytes"\072null,"tenant":{"environment":"prod","id":"%2$s",'
   '"name":"Tenant %8$s","ownerId"\072null,"plan":"PRO","region":"us-east-1","requestedSeats"\072null,'
   '"residency":"US","slug":"%8$s","status":"provisioning","storageEstimateBytes"\072null}}'),
  (2, 'TENANT_QUOTA_ASSIGNED', :rid2::text, :hash1::text, :hash2::text, :sig2::text,
   '{"quota":{"burstMultiplier":1.2,"ingestEventsPerMinute":5000,"maxTokensPerRequest":16000,'
   '"requestsPerDay":1000000,"requestsPerMinute":1000,"seatCap":150,"storageBytes":250000000000,"tier":"PRO"},'
   '"tier":"PRO"}'),
  (3, 'TENANT_ISOLATION_VERIFIED', :rid3::text, :hash2::text, :hash3::text, :sig3::text,
   E'{"checks":[{"check":"namespace_owned_by_tenant","passed"\072true},'
   '{"check":"partitions_owned_by_tenant","passed"\072true},{"check":"regions_match_residency","passed"\072true},'
   '{"check":"quota_matches_plan","passed"\072true},{"check":"kill_switch_off","passed"\072true}],'
   '"region":"us-east-1","residency":"US","tenantId":"%2$s"}')
) AS a(seq, action, receipt_id, previous_hash, hash, sig, data);
COMMIT;
