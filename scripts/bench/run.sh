#!/usr/bin/env bash
# The batch benchmarks of design.md, each against its bare-SQL baseline on the same database in
# the same run, in alternating rounds:
#
#   1. reconciling N missing users with `usersync reconcile --kind missing`, timed as the whole
#      CLI process (start-up, plan, chunks, exit) with its peak RSS, against the same rows
#      written by one bare `insert ... select ... on conflict do nothing` in psql (its whole
#      process too); on a freshly loaded, never vacuumed auth.users (reloaded before every
#      measurement, so that neither side finds hint bits the other set) and on a vacuumed one;
#   2. `GET /v1/status` over those users (the real service, over HTTP) against the bare
#      anti-join counts in psql.
#
# Usage:  scripts/bench/run.sh            (DATABASE_URL names the server; N=1000000, ROUNDS=2)
#         N=100000 ROUNDS=3 KEEP_DB=1 scripts/bench/run.sh
#         N=3000000 SOURCES=vacuumed STATUS=0 scripts/bench/run.sh     (the linearity check)
#
#   SOURCES   which states of auth.users to measure: "unvacuumed vacuumed" (default)
#   STATUS    0 skips benchmark 2
#   BIN       the usersync binary (default: target/release/usersync, built here)
#
# It creates (and at the end drops) the database BENCH_DB (usersync_bench_reconcile). Each side
# runs ROUNDS times from the same starting state, bare first in odd rounds and usersync first in
# even ones; the best round of each side is compared (the machine is shared: the minimum is the
# least noisy estimate). Needs psql, curl, jq and GNU time (/usr/bin/time).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

N="${N:-1000000}"
ROUNDS="${ROUNDS:-2}"
SOURCES="${SOURCES:-unvacuumed vacuumed}"
STATUS="${STATUS:-1}"
SERVER_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
BASE_URL="${SERVER_URL%/*}"
DB="${BENCH_DB:-usersync_bench_reconcile}"
BENCH_URL="$BASE_URL/$DB"
KEY="sb_secret_bench_0123456789abcdef"
PORT="${BENCH_PORT:-18080}"

# shellcheck source=scripts/bench/lib.sh
. scripts/bench/lib.sh

ensure_binary

echo "== creating $DB"
create_bench_db

# N auth users, as Supabase Auth writes them. `vacuumed`: then vacuumed and analysed, as
# autovacuum leaves a table some time after a load; `unvacuumed`: as the load leaves it.
load_source() {
  psql_bench -c "truncate auth.users cascade" >/dev/null
  auth_users_sql "gen_random_uuid()" 0 "$N" | psql_bench
  if [ "$1" = vacuumed ]; then psql_bench -c "vacuum analyze auth.users"; fi
}


reset_target() {
  psql_bench -c "truncate public.users, usersync.events, usersync.runs" -c "checkpoint"
  psql_bench -c "vacuum analyze public.users" -c "vacuum analyze usersync.events"
}

# One measurement of one side from the same state; prints "wall_ms [peak_rss_kib run_ms]": the
# CLI's run_ms is the run's own started_at .. finished_at, the figure inside the wall clock.
measure() {
  local side=$1 source=$2
  [ "$source" = unvacuumed ] && load_source unvacuumed
  reset_target
  local t0 t1
  case "$side" in
    bare)
      t0=$(now_ms); psql_bench -c "$BARE_INSERT"; t1=$(now_ms)
      echo "$((t1 - t0))" ;;
    cli)
      local out
      out=$(mktemp)
      t0=$(now_ms)
      DATABASE_URL="$BENCH_URL" USERSYNC_LOG_FORMAT=json RUST_LOG=usersync=warn \
        /usr/bin/time -f '%M' -o "$out" "$BIN" reconcile --kind missing >/dev/null
      t1=$(now_ms)
      local run_ms
      run_ms=$(psql_bench -At -c "select round(extract(epoch from finished_at - started_at) * 1000)
                                    from usersync.runs order by started_at desc limit 1")
      echo "$((t1 - t0)) $(cat "$out") $run_ms"
      rm -f "$out"
      local rows events
      rows=$(psql_bench -At -c "select count(*) from public.users")
      events=$(psql_bench -At -c "select count(*) from usersync.repairs")
      [ "$rows" = "$N" ] && [ "$events" = "$N" ] \
        || { echo "expected $N rows and events, got $rows and $events" >&2; exit 1; } ;;
  esac
}

cleanup() {
  rm -f "${RESULT:-}"
  [ -n "${SERVICE_PID:-}" ] && { kill "$SERVICE_PID" 2>/dev/null || true; wait "$SERVICE_PID" 2>/dev/null || true; }
  # KEEP_DB=1 leaves the database for a closer look (EXPLAIN ANALYZE, say).
  [ -n "${KEEP_DB:-}" ] || psql_admin -c "drop database if exists $DB with (force)" >/dev/null 2>&1 || true
}
trap cleanup EXIT
RESULT=$(mktemp)

declare -A TABLE
for source in $SOURCES; do
  echo "== benchmark 1: reconcile $N missing users, $source auth.users ($ROUNDS rounds each)"
  [ "$source" = vacuumed ] && load_source vacuumed
  bare=(); cli=(); rss=(); inside=()
  for round in $(seq 1 "$ROUNDS"); do
    if [ $((round % 2)) -eq 1 ]; then order="bare cli"; else order="cli bare"; fi
    for side in $order; do
      # In this shell, not a process substitution: the row check must finish before the next
      # measurement truncates the table, and its failure must end the script.
      measure "$side" "$source" >"$RESULT"
      read -r ms kib run_ms < <(tail -1 "$RESULT")
      if [ "$side" = bare ]; then bare+=("$ms"); else cli+=("$ms"); rss+=("$kib"); inside+=("$run_ms"); fi
    done
    echo "   round $round: bare ${bare[-1]} ms, usersync reconcile ${cli[-1]} ms (the run itself ${inside[-1]} ms; peak RSS ${rss[-1]} KiB)"
  done
  b=$(min "${bare[@]}"); c=$(min "${cli[@]}"); i=$(min "${inside[@]}"); r=$(max "${rss[@]}")
  TABLE[$source]="| reconcile $N missing users, $source auth.users | ${b} ms | ${c} ms (run ${i} ms) | $(ratio "$c" "$b")x | <= 1.0x | $((r / 1024)) MiB (< 64) |"
done

if [ "$STATUS" != 0 ]; then
  echo "== benchmark 2: GET /v1/status over $N users ($((ROUNDS + 1)) rounds each)"
  load_source vacuumed
  reset_target
  psql_bench -c "$BARE_INSERT"
  # Some drift of every source-side kind, so that the counts count something.
  psql_bench <<'SQL'
update auth.users set email = 'changed-' || email where email like 'user%7@example.com';
delete from public.users where email like 'user%3@example.com';
update auth.users set deleted_at = now() where email like 'user%11@example.com';
vacuum analyze auth.users;
vacuum analyze public.users;
SQL
  # The periodic reconciliation is off: it would start at once and compete with the counts.
  DATABASE_URL="$BENCH_URL" USERSYNC_SERVICE_KEYS="$KEY" USERSYNC_LISTEN="127.0.0.1:$PORT" \
    USERSYNC_RECONCILE_INTERVAL=0 USERSYNC_LOG_FORMAT=json RUST_LOG="usersync=warn" "$BIN" serve &
  SERVICE_PID=$!
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
    sleep 0.1
  done
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
  bq=$(min "${bare_status[@]}"); sq=$(min "${service_status[@]}")
  TABLE[status]="| GET /v1/status over $N users | ${bq} ms | ${sq} ms | $(ratio "$sq" "$bq")x | <= 1.0x | |"
fi

echo
echo "| benchmark | bare SQL | usersync | ratio | target | peak RSS |"
echo "|---|---:|---:|---:|---:|---:|"
for key in $SOURCES status; do
  [ -n "${TABLE[$key]:-}" ] && echo "${TABLE[$key]}"
done
