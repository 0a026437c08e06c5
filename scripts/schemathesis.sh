#!/usr/bin/env bash
# Fuzzes the running service against its own OpenAPI document with schemathesis.
#
# Builds usersync (debug: the test step has already built it), creates a throwaway database on
# the server DATABASE_URL names, loads the Supabase-compatible auth fixture, the demo target
# table and the demo users, migrates, serves on a free local port, and runs schemathesis with
# every check (no server errors; statuses, content types, headers and bodies as documented;
# bad input refused; auth enforced) twice: as the service (a service_role token minted with
# `usersync token`) and as a user. Half the generated user ids are the demo users' (see
# scripts/schemathesis.toml), so requests reach real rows; the rate limit is raised so that
# most requests reach the handlers (429 is still documented and can still occur). Exits non-zero
# on any failure, or if the service died or logged an error; the database and the server go
# away either way.
#
#   DATABASE_URL                 a server where the role may create databases (required)
#   SCHEMATHESIS_MAX_EXAMPLES    test cases per operation and phase (default 300)
#   SCHEMATHESIS_SEED            the seed, fixed so that CI runs are repeatable (default 5)
#   SCHEMATHESIS_VENV            where schemathesis is installed (default target/schemathesis-venv)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

: "${DATABASE_URL:?set DATABASE_URL to a PostgreSQL server where the role may create databases}"
MAX_EXAMPLES="${SCHEMATHESIS_MAX_EXAMPLES:-300}"
SEED="${SCHEMATHESIS_SEED:-5}"
VENV="${SCHEMATHESIS_VENV:-target/schemathesis-venv}"
SCHEMATHESIS_VERSION="4.32.5"
JWT_SECRET="schemathesis-jwt-secret-with-at-least-32-characters"
SERVICE_KEY="sb_secret_schemathesis_0123456789"
# Ada, from tests/fixtures/demo_users.sql.
DEMO_USER="00000000-0000-4000-8000-000000000001"

step() { printf '\n==> %s\n' "$*"; }

step "schemathesis $SCHEMATHESIS_VERSION"
if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -qF "$SCHEMATHESIS_VERSION"; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi
"$VENV/bin/schemathesis" --version

step "building usersync"
cargo build --locked --quiet
BIN="$PWD/target/debug/usersync"

# The same server, another database: swap the path of the URL.
db_name="usersync_schemathesis_$$"
db_url="$(python3 -c 'import sys, urllib.parse as u
p = u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/" + sys.argv[2])))' \
  "$DATABASE_URL" "$db_name")"

server_pid=""
workdir="$(mktemp -d)"
cleanup() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  psql "$DATABASE_URL" -q -v ON_ERROR_STOP=1 \
    -c "drop database if exists $db_name with (force)" >/dev/null 2>&1 || true
  rm -rf "$workdir"
}
trap cleanup EXIT

step "seeding $db_name"
psql "$DATABASE_URL" -q -v ON_ERROR_STOP=1 -c "create database $db_name"
psql "$db_url" -q -v ON_ERROR_STOP=1 \
  -f tests/fixtures/supabase_auth.sql \
  -f tests/fixtures/public_users.sql \
  -f tests/fixtures/demo_users.sql >/dev/null
# A soft-deleted user, so that sync answers 410 too.
psql "$db_url" -q -v ON_ERROR_STOP=1 \
  -c "update auth.users set deleted_at = now() where id = '00000000-0000-4000-8000-000000000005'"
DATABASE_URL="$db_url" "$BIN" migrate

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:$port"

step "serving on $base"
env DATABASE_URL="$db_url" \
  USERSYNC_LISTEN="127.0.0.1:$port" \
  USERSYNC_JWT_SECRET="$JWT_SECRET" \
  USERSYNC_SERVICE_KEYS="$SERVICE_KEY" \
  USERSYNC_LOG_FORMAT=json \
  USERSYNC_RATE_LIMIT_PER_MINUTE=6000 \
  USERSYNC_RATE_LIMIT_BURST=50 \
  RUST_LOG=warn \
  "$BIN" serve >"$workdir/server.log" 2>&1 &
server_pid=$!
python3 - "$base/readyz" <<'EOF'
import sys, time, urllib.request
deadline = time.time() + 60
while True:
    try:
        if urllib.request.urlopen(sys.argv[1], timeout=2).status == 200:
            break
    except Exception:
        pass
    if time.time() > deadline:
        sys.exit("the service did not become ready")
    time.sleep(0.2)
EOF

service_token="$("$BIN" token --service --jwt-secret "$JWT_SECRET")"
user_token="$("$BIN" token --sub "$DEMO_USER" --jwt-secret "$JWT_SECRET")"

status=0
for who in service user; do
  if [ "$who" = service ]; then token="$service_token"; else token="$user_token"; fi
  step "schemathesis as the $who ($MAX_EXAMPLES examples per operation)"
  # One worker: with two, hypothesis's ast.parse raced itself under CPython 3.11 ("AST
  # constructor recursion depth mismatch"), an error of the fuzzer's, not the service's.
  "$VENV/bin/schemathesis" --config-file scripts/schemathesis.toml \
    run "$base/openapi.json" \
    --checks all \
    --max-examples "$MAX_EXAMPLES" \
    --seed "$SEED" \
    --workers 1 \
    --header "Authorization: Bearer $token" \
    --no-color \
    --report junit --report-dir "$workdir/report-$who" \
    || status=$?
done

if ! kill -0 "$server_pid" 2>/dev/null; then
  echo "error: the service died during the run" >&2
  status=1
fi
if grep -q '"level":"ERROR"' "$workdir/server.log"; then
  echo "error: the service logged errors:" >&2
  grep '"level":"ERROR"' "$workdir/server.log" >&2
  status=1
fi
exit "$status"
