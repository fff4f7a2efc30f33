#!/usr/bin/env bash
# test_stack_kafka_format: `scripts/stack start kafka` must format and start a broker whatever its
# KRaft cluster id. One random id in 64 starts with '-', and `StorageTool format -t -E52...` read it
# as an option and refused ("expected one argument"): a CI run failed so. Runs the real broker
# from the bootstrap cache in a scratch copy of the stack script, on ports of its own (29192/3),
# with such an id pinned by TP_KAFKA_CLUSTER_ID. Takes about 20 seconds.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
T=$(mktemp -d)
cleanup() {
    (cd "$T" && TP_KAFKA_PORT=29192 TP_KAFKA_CONTROLLER_PORT=29193 bash scripts/stack stop kafka >/dev/null 2>&1) || true
    rm -rf "$T"
}
trap cleanup EXIT

mkdir -p "$T/scripts"
cp "$ROOT/scripts/stack" "$T/scripts/stack"
id=-E52bkFOueHmYK0uHCq3tA
if ! (cd "$T" && TP_KAFKA_PORT=29192 TP_KAFKA_CONTROLLER_PORT=29193 TP_KAFKA_CLUSTER_ID=$id \
        bash scripts/stack start kafka) >"$T/out.log" 2>&1; then
    cat "$T/out.log"; echo "FAIL: scripts/stack start kafka with cluster id $id"; exit 1
fi
grep -qx "cluster.id=$id" "$T/.stack/kafka/data/meta.properties" \
    || { cat "$T/.stack/kafka/data/meta.properties"; echo "FAIL: meta.properties lacks cluster.id=$id"; exit 1; }
kcat -b 127.0.0.1:29192 -L 2>/dev/null | grep -q 'topic "tenant.provenance.receipts.v1" with 6 partitions' \
    || { echo "FAIL: the broker does not list the receipts topic"; exit 1; }
echo "ok: formatted and started with cluster id $id"
