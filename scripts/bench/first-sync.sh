#!/usr/bin/env bash
# The first sync of new users through the API at a small and a large table (design.md,
# "Performance targets": the trigger path's companion, for projects without the triggers): each
# of NEW auth users without a profile calls `POST /v1/users/me/sync` once, with its own token,
# against the release binary, and every request's latency is measured (wrk, CONNECTIONS at once).
# The same at each size of SIZES existing users with profiles; the largest size's p50 and p99
# are compared with the smallest's (target: within 1.2x).
#
# Usage:  scripts/bench/first-sync.sh          (DATABASE_URL names the server; a superuser)
#         SIZES="1000 100000" NEW=5000 KEEP_DB=1 BIN=/tmp/wt/target/release/usersync \
#           scripts/bench/first-sync.sh
#
#   SIZES        existing users, each with a profile (default "1000 1000000"); increasing
#   NEW          new users (auth user, no profile) synced once each per size (default 20000)
#   WARM         more new users synced first, not counted: warms the service's pool, the plans
#                and the caches (default 1000)
#   CONNECTIONS  concurrent callers (default 16)
#   BIN          the usersync binary (default: target/release/usersync, built here)
#
# It creates (and at the end drops) the database BENCH_DB (usersync_bench_first_sync). The
# sizes are seeded in increasing order into the same database (generate_series, profiles by one
# bare insert, vacuum analyze); each size's new users, their profiles and the events are deleted
# before the next. Tokens are HS256 user tokens as Supabase Auth issues them (sub, aud and role
# `authenticated`, iat, exp), signed with python3's standard library. Needs wrk (installed from
# Debian's packages when missing), python3, curl, jq and psql.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

SIZES="${SIZES:-1000 1000000}"
NEW="${NEW:-20000}"
WARM="${WARM:-1000}"
CONNECTIONS="${CONNECTIONS:-16}"
SERVER_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
BASE_URL="${SERVER_URL%/*}"
DB="${BENCH_DB:-usersync_bench_first_sync}"
BENCH_URL="$BASE_URL/$DB"
KEY="sb_secret_bench_0123456789abcdef"
JWT_SECRET="bench-jwt-secret-0123456789abcdef0123456789"
PORT="${BENCH_PORT:-18082}"

if ! command -v wrk >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
fi
for tool in wrk python3 curl jq psql; do
  command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 2; }
done

# shellcheck source=scripts/bench/lib.sh
. scripts/bench/lib.sh
verdict() { awk -v r="$1" -v t="$2" 'BEGIN { print (r <= t ? "met" : "MISSED") }'; }

ensure_binary

WORK="$(mktemp -d)"
SERVICE_PID=""
WRK_PID=""
stop_pid() { [ -z "$1" ] || { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }; }
cleanup() {
  stop_pid "$WRK_PID"
  stop_pid "$SERVICE_PID"
  rm -rf "$WORK"
  # KEEP_DB=1 leaves the database for a closer look.
  [ -n "${KEEP_DB:-}" ] || psql_admin -c "drop database if exists $DB with (force)" >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== creating $DB"
create_bench_db

# Users (from+1 .. to] with profiles; ids md5('user' || g), as in signup.sh.
seed() {
  local from="$1" to="$2"
  auth_users_sql "md5('user' || g)::uuid" "$from" "$to" | psql_bench
  psql_bench -c "$BARE_INSERT"
}

# The new users: auth users without profiles, as GoTrue leaves them after a sign-up.
add_new_users() {
  psql_bench <<SQL
insert into auth.users (instance_id, id, aud, role, email, encrypted_password,
    email_confirmed_at, raw_app_meta_data, raw_user_meta_data, confirmation_token,
    recovery_token, email_change_token_new, email_change, email_change_token_current,
    reauthentication_token, phone_change, phone_change_token, is_sso_user, is_anonymous,
    created_at, updated_at)
select '00000000-0000-0000-0000-000000000000', md5('new' || g)::uuid, 'authenticated',
       'authenticated', 'new' || g || '@example.com', '', now(),
       jsonb_build_object('provider', 'email', 'providers', jsonb_build_array('email')),
       jsonb_build_object('full_name', 'New ' || g, 'email_verified', true),
       '', '', '', '', '', '', '', '', false, false, now(), now()
  from generate_series(1, $((NEW + WARM))) g;
SQL
}

remove_new_users() {
  psql_bench <<SQL
delete from public.users where email like 'new%@example.com';
delete from auth.users where email like 'new%@example.com';
truncate usersync.events, usersync.dead_letters;
SQL
}

# HS256 tokens, one a line, for the ids on stdin.
mint_tokens() {
  python3 -c '
import base64, hashlib, hmac, json, sys, time
secret = sys.argv[1].encode()
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=")
header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
now = int(time.time())
for line in sys.stdin:
    sub = line.strip()
    if not sub:
        continue
    claims = {"sub": sub, "aud": "authenticated", "role": "authenticated", "iat": now,
              "exp": now + 3600}
    body = header + b"." + b64(json.dumps(claims, separators=(",", ":")).encode())
    sig = b64(hmac.new(secret, body, hashlib.sha256).digest())
    print((body + b"." + sig).decode())
' "$JWT_SECRET"
}

start_service() {
  DATABASE_URL="$BENCH_URL" USERSYNC_SERVICE_KEYS="$KEY" USERSYNC_LISTEN="127.0.0.1:$PORT" \
    USERSYNC_JWT_SECRET="$JWT_SECRET" USERSYNC_RATE_LIMIT_PER_MINUTE=0 \
    USERSYNC_RECONCILE_INTERVAL=0 USERSYNC_LOG_FORMAT=json RUST_LOG="usersync=warn,sqlx=error" \
    "$BIN" serve &
  SERVICE_PID=$!
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "the service did not become ready" >&2
  exit 1
}
stop_service() { stop_pid "$SERVICE_PID"; SERVICE_PID=""; }

# Each wrk thread has one connection and its own share of the tokens, each used once; a thread
# stops after its last answer and leaves a file in DONE_DIR. wrk's main thread sleeps out its
# duration whatever its threads do, so it is interrupted (SIGINT: it then prints its summary)
# once every thread is done. The Lua counts the answers that say "created" and any request
# beyond a thread's share (the run fails unless every new user was created exactly once), and
# writes each request's own latency (sent, answered: CLOCK_MONOTONIC) to its thread's file: the
# percentiles reported are of those. wrk's own percentiles are corrected for coordinated omission
# (it adds the requests a stalled connection did not send), so one stall moves its p99 a lot;
# its p99 is printed beside them.
cat >"$WORK/first_sync.lua" <<'LUA'
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local function now_us()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000000 + tonumber(ts.tv_nsec) / 1000
end

local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local nthreads = tonumber(os.getenv("WRK_THREADS"))
  mine = {}
  local i = 0
  for line in io.lines(os.getenv("TOKENS")) do
    if i % nthreads == id then mine[#mine + 1] = line end
    i = i + 1
  end
  next_token, answered, created, other, extra = 1, 0, 0, 0, 0
  sent_at, latencies = 0, {}
  -- wrk calls thread 0's request() once before it starts, to check the request: not sent.
  verify_call = (id == 0)
end

function request()
  if verify_call then
    verify_call = false
    return wrk.format("POST", "/v1/users/me/sync", {}, "")
  end
  local token = mine[next_token]
  if token == nil then
    extra = extra + 1
    token = mine[#mine]
  end
  next_token = next_token + 1
  sent_at = now_us()
  return wrk.format("POST", "/v1/users/me/sync", { ["Authorization"] = "Bearer " .. token }, "")
end

function response(status, headers, body)
  latencies[#latencies + 1] = string.format("%d %d", sent_at, now_us() - sent_at)
  answered = answered + 1
  if status == 200 and string.find(body, '"action":"created"', 1, true) then
    created = created + 1
  else
    other = other + 1
  end
  if answered >= #mine then
    local f = io.open(os.getenv("DONE_DIR") .. "/" .. id, "w")
    f:write(table.concat(latencies, "\n"), "\n")
    f:close()
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local c, o, x = 0, 0, 0
  for _, t in ipairs(threads) do
    c, o, x = c + t:get("created"), o + t:get("other"), x + t:get("extra")
  end
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d created=%d other=%d extra=%d errors=%d p50=%.2f p90=%.2f p99=%.2f max=%.2f\n",
    summary.requests, c, o, x, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000))
end
LUA

# run_wrk TOKENS_FILE: sets RESULT, wrk's RESULT line with the wall time appended (elapsed_ms=).
run_wrk() {
  local tokens="$1" done_dir t0 t1 n
  n=$(wc -l <"$tokens")
  done_dir="$(mktemp -d -p "$WORK")"
  t0=$(date +%s%3N)
  TOKENS="$tokens" DONE_DIR="$done_dir" WRK_THREADS="$CONNECTIONS" \
    wrk -t "$CONNECTIONS" -c "$CONNECTIONS" -d 3600s --timeout 30s -s "$WORK/first_sync.lua" \
    "http://127.0.0.1:$PORT" >"$WORK/wrk.out" 2>&1 &
  WRK_PID=$!
  while [ "$(find "$done_dir" -type f | wc -l)" -lt "$CONNECTIONS" ]; do
    kill -0 "$WRK_PID" 2>/dev/null || break
    sleep 0.05
  done
  t1=$(date +%s%3N)
  kill -INT "$WRK_PID" 2>/dev/null || true
  wait "$WRK_PID" || true
  WRK_PID=""
  grep -q '^RESULT' "$WORK/wrk.out" || { echo "wrk failed:" >&2; cat "$WORK/wrk.out" >&2; exit 1; }
  # Each request's latency in ms, sorted; then the percentiles of those (nearest rank).
  cat "$done_dir"/* | awk 'NF == 2 { printf "%.3f\n", $2 / 1000 }' | sort -g >"$WORK/latencies.txt"
  RESULT="$(grep '^RESULT' "$WORK/wrk.out") elapsed_ms=$((t1 - t0)) tokens=$n $(awk '
    { v[NR] = $1 }
    function pct(p,  r) { r = int(p / 100 * NR + 0.999999); if (r < 1) r = 1; return v[r] }
    END { printf "raw_n=%d raw_p50=%s raw_p90=%s raw_p99=%s raw_max=%s", NR, pct(50), pct(90), pct(99), v[NR] }
  ' "$WORK/latencies.txt")"
  # The slowest requests, with when they were sent (s after the first): stalls show as a cluster.
  cat "$done_dir"/* | awk 'NF == 2' | sort -n | awk 'NR == 1 { t0 = $1 } { printf "%.3f %.1f\n", ($1 - t0) / 1e6, $2 / 1000 }' \
    | sort -k2 -g -r | awk 'NR <= 20' >"$WORK/slowest.txt"
}
field() { sed -E "s/.* $1=([^ ]+).*/\1/" <<<"$2"; }

ROWS=(); P50=(); P99=(); FIRST_SIZE=""
seeded=0
for size in $SIZES; do
  [ "$size" -gt "$seeded" ] || { echo "SIZES must increase: $SIZES" >&2; exit 2; }
  echo "== $size users with profiles, $NEW new users (+$WARM to warm up)"
  seed "$seeded" "$size"
  seeded=$size
  add_new_users
  psql_bench -c "vacuum analyze auth.users" -c "vacuum analyze public.users" -c "checkpoint"
  # The order of the inserts: the first WARM new users warm up, the rest are measured.
  psql_bench -At -c "select md5('new' || g)::uuid from generate_series(1, $WARM) g" | mint_tokens >"$WORK/warm.txt"
  psql_bench -At -c "select md5('new' || g)::uuid from generate_series($WARM + 1, $((NEW + WARM))) g" | mint_tokens >"$WORK/tokens.txt"
  start_service
  probe=$(curl -s -X POST "http://127.0.0.1:$PORT/v1/users/me/sync" \
            -H "Authorization: Bearer $(head -1 "$WORK/warm.txt")")
  [ "$(jq -r .action <<<"$probe")" = created ] || { echo "sync-me refused the bench token: $probe" >&2; exit 1; }
  sed -i 1d "$WORK/warm.txt"
  if [ -s "$WORK/warm.txt" ]; then run_wrk "$WORK/warm.txt"; fi
  run_wrk "$WORK/tokens.txt"
  result="$RESULT"
  stop_service
  echo "   $result"
  created=$(field created "$result"); errors=$(field errors "$result")
  other=$(field other "$result"); extra=$(field extra "$result")
  if [ "$created" != "$NEW" ] || [ "$errors" != 0 ] || [ "$other" != 0 ] || [ "$extra" != 0 ]; then
    echo "expected $NEW first syncs (created), got: $result" >&2
    exit 1
  fi
  profiles=$(psql_bench -At -c "select count(*) from public.users")
  [ "$profiles" = "$((size + NEW + WARM))" ] || { echo "expected $((size + NEW + WARM)) profiles, got $profiles" >&2; exit 1; }
  [ "$(field raw_n "$result")" = "$NEW" ] || { echo "expected $NEW latencies: $result" >&2; exit 1; }
  echo "   slowest requests (s into the run, ms):" $(awk '{ printf "%s:%s ", $1, $2 }' "$WORK/slowest.txt" | cut -d' ' -f1-10)
  p50=$(field raw_p50 "$result"); p99=$(field raw_p99 "$result")
  rps=$(awk -v n="$NEW" -v ms="$(field elapsed_ms "$result")" 'BEGIN { printf "%d", n * 1000 / ms }')
  [ -n "$FIRST_SIZE" ] || { FIRST_SIZE=$size; P50_FIRST=$p50; P99_FIRST=$p99; }
  r50=$(ratio "$p50" "$P50_FIRST"); r99=$(ratio "$p99" "$P99_FIRST")
  ROWS+=("| $size | $NEW | $rps | $p50 ms | $(field raw_p90 "$result") ms | $p99 ms | $(field raw_max "$result") ms | $(field p99 "$result") ms | ${r50}x ($(verdict "$r50" 1.2)) | ${r99}x ($(verdict "$r99" 1.2)) |")
  remove_new_users
done

echo
echo "First sync of new users, POST /v1/users/me/sync once per user, $CONNECTIONS connections (wrk), release build:"
echo
echo "| existing profiles | first syncs | req/s | p50 | p90 | p99 | max | wrk's p99 (CO-corrected) | p50 / at $FIRST_SIZE (<= 1.2) | p99 / at $FIRST_SIZE (<= 1.2) |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
printf '%s\n' "${ROWS[@]}"
