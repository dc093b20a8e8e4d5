# demo-redis.sh: the Redis queue part of the demo. Sourced by examples/demo
# while `sluice run examples/quickstart.yaml` runs, with SLUICE_TEST_REDIS
# set and SLUICE_ENDPOINT pointing at it: LPUSHes five jobs to the "jobs"
# source's list (sluice:jobs), one of them poison, shows the four others
# handled and deleted, and the poison one redriven to sluice:dlq after
# max_receive_count (3) receives, visibility_timeout_s (2) apart.

demo_redis() {
  local r=(redis-cli --no-auth-warning -u "$SLUICE_TEST_REDIS") before i
  before=$("${r[@]}" XLEN sluice:dlq)
  echo "demo: five jobs LPUSHed to the Redis list sluice:jobs, as Sidekiq or RQ producers would"
  for i in 1 2 3 4; do
    "${r[@]}" LPUSH sluice:jobs "{\"job\":\"thumbnail\",\"n\":$i}" >/dev/null
  done
  "${r[@]}" LPUSH sluice:jobs '{"job":"thumbnail","n":5,"poison":true}' >/dev/null
  for _ in $(seq 100); do
    [ "$("${r[@]}" XLEN sluice:dlq)" -gt "$before" ] && break
    sleep 0.2
  done
  echo "demo: (sluice's log above shows the jobs handler: four done, the poison one failing three times)"
  echo "demo: left in the queue: $("${r[@]}" LLEN sluice:jobs) waiting," \
       "$("${r[@]}" ZCARD sluice:jobs:sluice:leases) leased"
  echo "demo: redriven to sluice:dlq (MaxReceiveCountExceeded, with the message and its receive count):"
  "${r[@]}" --no-raw XREVRANGE sluice:dlq + - COUNT 1 | head -4
  echo "demo: Redis source metrics"
  curl -s "$SLUICE_ENDPOINT/metrics" | grep -E '^sluice_redis_(messages_total|pending|queue_depth)\{source="jobs' || true
}

demo_redis
