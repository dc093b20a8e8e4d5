# examples/demo-kafka.sh: the Kafka part of the demo, sourced by
# examples/demo while `sluice run examples/quickstart.yaml` runs with
# $SLUICE_TEST_KAFKA and $SLUICE_TEST_REDIS set. Creates the `orders`
# topic, produces 300 orders and then one poison order, shows the orders
# processed and the poison one in the Redis dead-letter stream sluice:dlq.

# Records of source `orders` that succeeded so far (0 before any).
kafka_demo_succeeded() {
    local v
    v=$(curl -s "http://127.0.0.1:${SLUICE_PORT:-9001}/metrics" |
        sed -n 's/^sluice_source_records_total{source="orders",outcome="succeeded"} //p')
    echo "${v:-0}"
}

kafka_demo() {
    local here before ok0 i
    here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    echo "== kafka: topic orders (2 partitions), 300 orders"
    "$here/tests/services" kafka-topic orders 2 || return 1
    before=$(redis-cli --no-auth-warning -u "$SLUICE_TEST_REDIS" XLEN sluice:dlq)
    ok0=$(kafka_demo_succeeded)
    for i in $(seq 1 300); do
        printf 'customer-%d:{"type":"order","id":%d,"total":%d}\n' $((i % 7)) "$i" $((i * 3))
    done | kcat -P -b "$SLUICE_TEST_KAFKA" -t orders -K: || return 1
    # a record the filter skips: not an order
    printf 'audit:{"type":"audit","id":0}\n' | kcat -P -b "$SLUICE_TEST_KAFKA" -t orders -K:
    for i in $(seq 1 60); do
        [ "$(kafka_demo_succeeded)" -ge $((ok0 + 300)) ] && break
        sleep 1
    done
    curl -s "http://127.0.0.1:${SLUICE_PORT:-9001}/metrics" | grep -E '^sluice_(source_records_total\{source="orders|kafka_)'
    echo "== kafka: one poison order (the handler raises on it)"
    printf 'customer-1:{"type":"order","id":301,"poison":true}\n' |
        kcat -P -b "$SLUICE_TEST_KAFKA" -t orders -K:
    for i in $(seq 1 60); do
        [ "$(redis-cli --no-auth-warning -u "$SLUICE_TEST_REDIS" XLEN sluice:dlq)" -gt "$before" ] && break
        sleep 1
    done
    echo "== kafka: the dead letter (payload included)"
    redis-cli --no-auth-warning -u "$SLUICE_TEST_REDIS" --raw XREVRANGE sluice:dlq + - COUNT 1 | grep '^{' | head -1 |
        python3 -c 'import json,sys; e=json.load(sys.stdin); print(json.dumps({"requestContext": e["requestContext"], "KafkaBatchInfo": e["KafkaBatchInfo"]}), "\n records:", [r["offset"] for p in e["payload"]["records"].values() for r in p])'
}

kafka_demo
