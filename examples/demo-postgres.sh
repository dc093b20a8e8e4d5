# demo-postgres.sh: the Postgres change-stream part of the demo. Sourced by
# examples/demo while `sluice run examples/quickstart.yaml` runs, with
# SLUICE_TEST_PG set and SLUICE_ENDPOINT pointing at it. The quickstart's
# "changes" source streams public.accounts; sluice retries its setup until
# the table exists, so this fragment may create it after sluice started.
# It waits for the slot to be streamed, inserts, updates and deletes rows,
# waits until the slot's flushed position passed those changes (every one
# handled), and shows the metrics and the slot.

demo_postgres() {
  local q=(psql -X -q -v ON_ERROR_STOP=1 "$SLUICE_TEST_PG") lsn i
  echo "demo: table public.accounts, streamed by the \"changes\" source (slot sluice_changes)"
  "${q[@]}" -c "SET client_min_messages = warning" \
    -c "CREATE TABLE IF NOT EXISTS public.accounts (id int PRIMARY KEY, owner text, balance numeric(12,2), updated_at timestamptz DEFAULT now())"
  for i in $(seq 100); do
    [ "$("${q[@]}" -tAc "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'sluice_changes' AND active")" = 1 ] && break
    sleep 0.2
  done
  echo "demo: INSERT two accounts, UPDATE one balance, DELETE the other (three transactions)"
  "${q[@]}" -c "INSERT INTO accounts (id, owner, balance) VALUES (1, 'ada', 100.00), (2, 'grace', 50.00) ON CONFLICT (id) DO UPDATE SET balance = excluded.balance"
  "${q[@]}" -c "UPDATE accounts SET balance = balance + 25.50, updated_at = now() WHERE id = 1"
  "${q[@]}" -c "DELETE FROM accounts WHERE id = 2"
  lsn=$("${q[@]}" -tAc "SELECT pg_current_wal_lsn()")
  for i in $(seq 100); do
    [ "$("${q[@]}" -tAc "SELECT confirmed_flush_lsn >= '$lsn' FROM pg_replication_slots WHERE slot_name = 'sluice_changes'")" = t ] && break
    sleep 0.2
  done
  echo "demo: (sluice's log above shows the echo handler getting the DynamoDB-Streams-shaped events:"
  echo "demo:  INSERT, INSERT, MODIFY with NewImage and OldImage, REMOVE, each with Keys {\"id\": {\"N\": ...}})"
  echo "demo: the slot, flushed past the changes once the handler succeeded:"
  "${q[@]}" -c "SELECT slot_name, active, confirmed_flush_lsn, pg_current_wal_lsn() - confirmed_flush_lsn AS lag_bytes FROM pg_replication_slots WHERE slot_name = 'sluice_changes'"
  echo "demo: Postgres source metrics"
  curl -s "$SLUICE_ENDPOINT/metrics" | grep -E '^sluice_pg_[a-z_]+\{source="changes"' || true
}

demo_postgres
