#!/usr/bin/env bash
# The performance benchmarks of design.md, each against its bare-SQL baseline on the same
# database in the same run:
#
#   1. reconciling N missing users (POST /v1/reconciliations, the real service, release build)
#      vs the same rows written by one bare `insert ... select ... on conflict do nothing` in
#      psql; plus the service's peak RSS (VmHWM) while it ran;
#   2. GET /v1/status over N users vs the bare anti-join counts in psql.
#
# Usage:  scripts/bench/run.sh            (DATABASE_URL names the server; N=1000000, ROUNDS=2)
#         N=100000 ROUNDS=3 KEEP_DB=1 scripts/bench/run.sh
#
# It creates (and at the end drops) the database BENCH_DB (usersync_bench_reconcile) on that server. Each side
# runs ROUNDS times, alternating, from the same starting state; the best round of each side is
# compared (the machine is shared, so the minimum is the least noisy estimate).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

N="${N:-1000000}"
ROUNDS="${ROUNDS:-2}"
SERVER_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
BASE_URL="${SERVER_URL%/*}"
DB="${BENCH_DB:-usersync_bench_reconcile}"
BENCH_URL="$BASE_URL/$DB"
KEY="sb_secret_bench_0123456789abcdef"
PORT="${BENCH_PORT:-18080}"

psql_admin() { psql "$SERVER_URL" -X -q -v ON_ERROR_STOP=1 "$@"; }
psql_bench() { psql "$BENCH_URL" -X -q -v ON_ERROR_STOP=1 "$@"; }
now_ms() { date +%s%3N; }
min() { printf '%s\n' "$@" | sort -n | head -1; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

echo "== building the release binary"
cargo build --release --quiet
BIN=target/release/usersync

echo "== creating $DB with $N auth users"
psql_admin -c "drop database if exists $DB with (force)" -c "create database $DB"
psql_bench -f tests/fixtures/supabase_auth.sql -f tests/fixtures/public_users.sql >/dev/null
DATABASE_URL="$BENCH_URL" "$BIN" migrate >/dev/null
psql_bench <<SQL
insert into auth.users (instance_id, id, aud, role, email, encrypted_password,
    email_confirmed_at, raw_app_meta_data, raw_user_meta_data, confirmation_token,
    recovery_token, email_change_token_new, email_change, email_change_token_current,
    reauthentication_token, phone_change, phone_change_token, is_sso_user, is_anonymous,
    created_at, updated_at)
select '00000000-0000-0000-0000-000000000000', gen_random_uuid(), 'authenticated',
       'authenticated', 'user' || g || '@example.com', '', now(),
       jsonb_build_object('provider', 'email', 'providers', jsonb_build_array('email'),
                          'role', case when g % 100 = 0 then 'admin' end),
       jsonb_build_object('full_name', 'User ' || g, 'avatar_url',
                          'https://example.com/a/' || g || '.png'),
       '', '', '', '', '', '', '', '', false, false,
       now() - (g || ' seconds')::interval, now()
  from generate_series(1, $N) g;
vacuum analyze auth.users;
SQL

# The default mapping's values, written by hand: what a person would type into psql.
BARE_INSERT="insert into public.users (id, email, full_name, avatar_url, role, created_at, updated_at)
select s.id, s.email,
       coalesce(nullif(s.raw_user_meta_data #>> '{full_name}', ''),
                nullif(s.raw_user_meta_data #>> '{name}', ''),
                nullif(s.raw_user_meta_data #>> '{user_name}', ''),
                nullif(s.raw_user_meta_data #>> '{username}', '')),
       coalesce(nullif(s.raw_user_meta_data #>> '{avatar_url}', ''),
                nullif(s.raw_user_meta_data #>> '{picture}', '')),
       coalesce(nullif(s.raw_app_meta_data #>> '{role}', ''), 'user'),
       s.created_at, now()
  from auth.users s
 where s.deleted_at is null
on conflict do nothing"

reset_target() {
  psql_bench -c "truncate public.users, usersync.events, usersync.runs" -c "checkpoint"
  psql_bench -c "vacuum analyze public.users" -c "vacuum analyze usersync.events"
}

# The periodic reconciliation is off: its first run would start at once and hold the run lock
# (and do the benchmark's work) before the benchmark asks for its own run.
start_service() {
  DATABASE_URL="$BENCH_URL" USERSYNC_SERVICE_KEYS="$KEY" USERSYNC_LISTEN="127.0.0.1:$PORT" \
    USERSYNC_RECONCILE_INTERVAL=0 USERSYNC_LOG_FORMAT=json RUST_LOG="usersync=warn,sqlx=error" "$BIN" serve &
  SERVICE_PID=$!
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "the service did not become ready" >&2
  exit 1
}

stop_service() {
  kill "$SERVICE_PID" 2>/dev/null || true
  wait "$SERVICE_PID" 2>/dev/null || true
}
cleanup() {
  stop_service
  # KEEP_DB=1 leaves the database for a closer look (EXPLAIN ANALYZE, say).
  [ -n "${KEEP_DB:-}" ] || psql_admin -c "drop database if exists $DB with (force)" >/dev/null 2>&1 || true
}
trap cleanup EXIT

# One reconciliation through the API; prints its duration in ms (the run's own timestamps).
service_reconcile() {
  local id state body
  body=$(curl -s -X POST "http://127.0.0.1:$PORT/v1/reconciliations" -H "apikey: $KEY" \
           -H 'content-type: application/json' -d '{"dry_run": false, "kinds": ["missing"]}')
  id=$(jq -r '.id // empty' <<<"$body")
  [ -n "$id" ] || { echo "the service refused the run: $body" >&2; exit 1; }
  while :; do
    state=$(curl -sf "http://127.0.0.1:$PORT/v1/reconciliations/$id" -H "apikey: $KEY" | jq -r .state)
    case "$state" in planning|running) sleep 0.1 ;; *) break ;; esac
  done
  [ "$state" = succeeded ] || { echo "run $id ended $state" >&2; exit 1; }
  psql_bench -At -c "select round(extract(epoch from finished_at - started_at) * 1000)
                       from usersync.runs where id = '$id'"
}

echo "== benchmark 1: reconcile $N missing users ($ROUNDS rounds each)"
bare_sync=(); service_sync=()
start_service
for round in $(seq 1 "$ROUNDS"); do
  reset_target
  t0=$(now_ms); psql_bench -c "$BARE_INSERT"; t1=$(now_ms)
  bare_sync+=($((t1 - t0)))
  reset_target
  service_sync+=("$(service_reconcile)")
  echo "   round $round: bare ${bare_sync[-1]} ms, service ${service_sync[-1]} ms"
done
rows=$(psql_bench -At -c "select count(*) from public.users")
events=$(psql_bench -At -c "select count(*) from usersync.repairs")
[ "$rows" = "$N" ] && [ "$events" = "$N" ] || { echo "expected $N rows and events, got $rows and $events" >&2; exit 1; }
rss_kib=$(awk '/VmHWM/ { print $2 }' "/proc/$SERVICE_PID/status")

echo "== benchmark 2: GET /v1/status over $N users ($((ROUNDS + 1)) rounds each)"
# Some drift of every source-side kind, so that the counts count something.
psql_bench <<'SQL'
update auth.users set email = 'changed-' || email where email like 'user%7@example.com';
delete from public.users where email like 'user%3@example.com';
update auth.users set deleted_at = now() where email like 'user%11@example.com';
vacuum analyze auth.users;
vacuum analyze public.users;
SQL
BARE_STATUS="select (select count(*) from auth.users) as source_total,
       (select count(*) from public.users) as target_total,
       (select count(*) from auth.users s where s.deleted_at is null
           and not exists (select 1 from public.users t where t.id = s.id)) as missing,
       (select count(*) from auth.users s join public.users t on t.id = s.id
         where s.deleted_at is null
           and (t.email, t.role) is distinct from
               (s.email::text, coalesce(nullif(s.raw_app_meta_data #>> '{role}', ''), 'user')))
           as stale,
       (select count(*) from public.users t
         where not exists (select 1 from auth.users s where s.id = t.id)) as orphaned,
       (select count(*) from auth.users s join public.users t on t.id = s.id
         where s.deleted_at is not null) as deleted"
bare_status=(); service_status=()
for round in $(seq 0 "$ROUNDS"); do
  t0=$(now_ms); psql_bench -At -c "$BARE_STATUS" >/dev/null; t1=$(now_ms)
  s=$(curl -sf -o /dev/null -w '%{time_total}' "http://127.0.0.1:$PORT/v1/status" -H "apikey: $KEY")
  # Round 0 warms the caches for both sides and is not counted.
  if [ "$round" -gt 0 ]; then
    bare_status+=($((t1 - t0)))
    service_status+=("$(awk -v s="$s" 'BEGIN { printf "%d", s * 1000 }')")
    echo "   round $round: bare ${bare_status[-1]} ms, service ${service_status[-1]} ms"
  fi
done
echo "   service says: $(curl -sf "http://127.0.0.1:$PORT/v1/status" -H "apikey: $KEY" | jq -c .drift)"
echo "   bare says:    $(psql_bench -At -F ' ' -c "$BARE_STATUS")"
stop_service

bs=$(min "${bare_sync[@]}"); ss=$(min "${service_sync[@]}")
bq=$(min "${bare_status[@]}"); sq=$(min "${service_status[@]}")
echo
echo "| benchmark ($N users) | bare SQL | usersync | ratio | target | peak RSS |"
echo "|---|---:|---:|---:|---:|---:|"
echo "| reconcile missing users | ${bs} ms | ${ss} ms | $(ratio "$ss" "$bs")x | <= 1.25x | $((rss_kib / 1024)) MiB (< 64) |"
echo "| GET /v1/status | ${bq} ms | ${sq} ms | $(ratio "$sq" "$bq")x | <= 1.25x | |"
