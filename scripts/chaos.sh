#!/usr/bin/env bash
# The chaos proof (issue 15, item 6): usersync keeps auth.users and public.users in step while
# everything around it fails, and nothing is lost or done twice.
#
#   CHAOS_SECONDS=60 scripts/chaos.sh        # CI
#   scripts/chaos.sh                         # ten minutes (CHAOS_SECONDS defaults to 600)
#
# Setup (all under one `mktemp -d` directory, removed on exit with everything it started):
#   - a throwaway PostgreSQL cluster (initdb from the machine's binaries, as the postgres user
#     when run as root) that the script can restart, on a free port;
#   - the database built as tests/api/helpers.rs builds one: tests/fixtures/supabase_auth.sql and
#     tests/fixtures/hosted_role.sql by the superuser, the database given to hosted_postgres
#     (hosted Supabase's non-superuser `postgres`), then as hosted_postgres
#     tests/fixtures/public_users.sql and `usersync migrate`;
#   - CHAOS_SEED_USERS auth users (scripts/bench/lib.sh's seed rows), three quarters of them
#     reconciled into profiles by `usersync reconcile`, the last quarter left missing for the
#     killed reconciliation and the healing loop to repair;
#   - `usersync triggers install` with USERSYNC_POLICY_DELETED=delete (the stronger policy: a
#     deleted user must lose its profile), and three `usersync serve` replicas connected as
#     hosted_postgres, healing on, with a fast retry schedule and sweep.
#
# Traffic, for CHAOS_SECONDS, as fast as the machine allows:
#   - GoTrue's writes replayed by pgbench (-M prepared, as supabase_auth_admin, CHAOS_CLIENTS
#     clients), statement by statement as tests/api/gotrue.rs transcribes them from supabase/auth
#     `bc32168e`: sign-ups by email (confirmation mail, and autoconfirm with its first session),
#     phone, OAuth (GitHub) and anonymous; password and OAuth sign-ins; metadata, role
#     (app_metadata) and secure email changes; soft and hard deletes. Statements gotrue.rs skips
#     (sessions, refresh tokens, audit log, one-time tokens: tables the fixture has not) are
#     skipped here too. The values GoTrue makes in Go (ids, the clock, the JSON it marshals, a
#     random user to act on) come from one `select ... \gset` before each flow, a round trip
#     GoTrue does not make. pgbench ends a client at the first error (a fault cuts every
#     connection), so it runs in short rounds, restarted until the time is up;
#   - clients over HTTP, to random replicas: `POST /v1/users/me/sync` with the user's own HS256
#     token (recent sign-ups, as a frontend calls it right after signUp, and random users), and
#     Supabase Database Webhook payloads on `POST /v1/hooks/database` (INSERT, UPDATE, and
#     replayed DELETEs of users that still exist: usersync must re-read, never trust them).
#
# Faults, one every CHAOS_FAULT_EVERY seconds (default: a sixth of the run, at most 20 s), in a
# cycle through all five kinds, so a 60 s run meets each once:
#   reconcile  `usersync reconcile` (CLI, chunks of 100 rows) SIGKILLed once it has committed a
#              chunk;
#   leader     the replica that leads healing (GET /readyz) SIGKILLed, then started again;
#   target     a CHECK constraint (NOT VALID) that a quarter of the ids break added to
#              public.users for a few seconds, then dropped: their syncs fail into dead letters,
#              which healing must drain;
#   postgres   the cluster restarted (pg_ctl restart -m immediate: a crash and recovery);
#   cut        every connection of the service's role terminated (pg_terminate_backend).
#
# At the end: faults and traffic stop, healing gets at most CHAOS_SETTLE_SECONDS (default 120)
# to bring drift and pending dead letters to zero, and then every invariant is checked against
# what committed in auth.users:
#   - lost: live auth users without exactly one profile equal to their mapping (email, role,
#     created_at; name and avatar are on_create columns and may differ after a metadata change);
#   - deletes as the policy says (delete): no soft-deleted or hard-deleted user keeps a profile;
#   - no profile for a user usersync never saw (no auth user and no `create` event);
#   - exactly one `create` event per user with a profile, never two for anyone (usersync.repairs
#     reads single-user and per-chunk audit rows alike);
#   - duplicated: users with more than one `create` event, and one email under two profiles;
#   - no dead letter pending; drift (the sum of GET /v1/status drift counts) zero;
#   - no replica panicked.
# The time to heal of each fault is from its end to the first moment (sampled every second)
# when GET /v1/status shows no drift and no pending dead letter; the longest is printed.
# The last line is
#   chaos: <N> users, <W> writes, <F> faults, lost <L>, duplicated <D>, drift <X>
# (N: rows of auth.users at the end; W: GoTrue flows pgbench completed, each one or more
# committed transactions), and the exit status is non-zero on any violation.
#
# Settings: CHAOS_SECONDS (600), CHAOS_SETTLE_SECONDS (120), CHAOS_FAULT_EVERY, CHAOS_CLIENTS (4),
# CHAOS_SEED_USERS (10000), CHAOS_RECONCILE_INTERVAL (30s, the healing leader's periodic run),
# BIN (the usersync binary; default target/release/usersync, built here), PG_BIN (the
# PostgreSQL server binaries; default the newest under /usr/lib/postgresql), CHAOS_KEEP=1 (leave
# the directory, logs included, for a closer look; nothing is left running).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DURATION="${CHAOS_SECONDS:-600}"
SETTLE="${CHAOS_SETTLE_SECONDS:-120}"
CLIENTS="${CHAOS_CLIENTS:-4}"
SEED_USERS="${CHAOS_SEED_USERS:-10000}"
RECONCILE_INTERVAL="${CHAOS_RECONCILE_INTERVAL:-30s}"
if [ -z "${CHAOS_FAULT_EVERY:-}" ]; then
  CHAOS_FAULT_EVERY=$((DURATION / 6))
  [ "$CHAOS_FAULT_EVERY" -le 20 ] || CHAOS_FAULT_EVERY=20
  [ "$CHAOS_FAULT_EVERY" -ge 5 ] || CHAOS_FAULT_EVERY=5
fi
FAULT_EVERY="$CHAOS_FAULT_EVERY"
REPLICAS=3
NIL_UUID="00000000-0000-0000-0000-000000000000"
JWT_SECRET="chaos-jwt-secret-with-at-least-32-characters"
SERVICE_KEY="sb_secret_chaos_0123456789abcdef"
WEBHOOK_SECRET="chaos-webhook-secret-with-at-least-32-chars"

for tool in pgbench psql curl openssl; do
  command -v "$tool" >/dev/null || { echo "chaos: needs $tool" >&2; exit 2; }
done
if [ -z "${PG_BIN:-}" ]; then
  PG_BIN="/usr/lib/postgresql/$({ ls /usr/lib/postgresql 2>/dev/null || true; } | sort -n | tail -1)/bin"
fi
[ -x "$PG_BIN/initdb" ] || { echo "chaos: no initdb under $PG_BIN (set PG_BIN)" >&2; exit 2; }

# scripts/bench/lib.sh: ensure_binary, now_ms, auth_users_sql (its psql helpers read these).
export SERVER_URL="" BENCH_URL=""
# shellcheck source=scripts/bench/lib.sh
. scripts/bench/lib.sh
ensure_binary
BIN="$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")"

# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------
WORK="$(mktemp -d "${TMPDIR:-/tmp}/usersync-chaos.XXXXXX")"
chmod 755 "$WORK"
PGDIR="$WORK/pg"
PGDATA="$PGDIR/data"
PGLOG="$PGDIR/postgres.log"
START_MS=$(now_ms)

# The cluster's own user: initdb and postgres refuse root.
if [ "$(id -u)" -eq 0 ]; then
  as_pg() { runuser -u postgres -- "$@"; }
else
  as_pg() { "$@"; }
fi

elapsed() { echo $(( ($(now_ms) - START_MS) / 1000 )); }
say() { printf '[%4ss] %s\n' "$(elapsed)" "$*"; }

# A TCP port nothing listens on (and that this script has not handed out yet).
TAKEN_PORTS=" "
free_port() {
  local port
  while :; do
    port=$(( 20000 + RANDOM % 30000 ))
    case "$TAKEN_PORTS" in *" $port "*) continue ;; esac
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      TAKEN_PORTS="$TAKEN_PORTS$port "
      echo "$port"
      return
    fi
  done
}

# Kills a process and everything it started, by id, deepest first.
kill_tree() {
  local pid="$1" sig="${2:-TERM}" child
  for child in $(pgrep -P "$pid" 2>/dev/null || true); do kill_tree "$child" "$sig"; done
  kill "-$sig" "$pid" 2>/dev/null || true
}

BG_PIDS=()           # traffic loops, the fault loop, the monitor
REPLICA_PID=()
REPLICA_PORT=()
RECONCILE_PID=""
cleanup() {
  local status=$? pid
  trap - EXIT INT TERM
  touch "$WORK/stop" 2>/dev/null || true
  for pid in "${BG_PIDS[@]}"; do kill_tree "$pid" KILL; done
  [ -z "$RECONCILE_PID" ] || kill -KILL "$RECONCILE_PID" 2>/dev/null || true
  for pid in "${REPLICA_PID[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  for pid in "${BG_PIDS[@]}" "${REPLICA_PID[@]}" $RECONCILE_PID; do wait "$pid" 2>/dev/null || true; done
  if [ -f "$PGDATA/postmaster.pid" ]; then
    as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  if [ -n "${CHAOS_KEEP:-}" ]; then
    echo "chaos: kept $WORK" >&2
  else
    rm -rf "$WORK"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------------------------------------
# The cluster and the database
# ------------------------------------------------------------------------------------------------
PGPORT=$(free_port)
mkdir -p "$PGDIR"
[ "$(id -u)" -ne 0 ] || chown postgres "$PGDIR"
say "initdb: a throwaway cluster on 127.0.0.1:$PGPORT under $WORK"
as_pg "$PG_BIN/initdb" -D "$PGDATA" -U postgres --auth=trust -E UTF8 --no-sync >"$WORK/initdb.log" 2>&1 \
  || { cat "$WORK/initdb.log" >&2; exit 1; }
# fsync off: a process crash (the restarts below) loses nothing the OS already holds, and the
# run does not wait on the disk. synchronous_commit stays on: a commit pgbench counted is in the
# WAL the server hands to the OS before it answers.
as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$PGLOG" -w -t 60 \
  -o "-p $PGPORT -k $PGDIR -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off -c full_page_writes=off" \
  start >/dev/null

BASE="postgres://%s@127.0.0.1:$PGPORT/%s"
# shellcheck disable=SC2059
SUPER_URL=$(printf "$BASE" postgres chaos)
# shellcheck disable=SC2059
APP_URL=$(printf "$BASE" hosted_postgres chaos)
# shellcheck disable=SC2059
AUTH_URL=$(printf "$BASE" supabase_auth_admin chaos)
psql_super() { psql "$SUPER_URL" -X -q -v ON_ERROR_STOP=1 "$@"; }
psql_app() { psql "$APP_URL" -X -q -v ON_ERROR_STOP=1 "$@"; }
# One value, or nothing when the server is away (a fault is on).
sql_value() { psql "$SUPER_URL" -X -qAt -c "$1" 2>/dev/null || true; }

say "database: fixtures, hosted_postgres, usersync migrate"
# shellcheck disable=SC2059
psql "$(printf "$BASE" postgres postgres)" -X -q -v ON_ERROR_STOP=1 -c "create database chaos"
psql_super -f tests/fixtures/supabase_auth.sql -f tests/fixtures/hosted_role.sql \
  -c "alter database chaos owner to hosted_postgres" >/dev/null
psql_app -f tests/fixtures/public_users.sql >/dev/null

export DATABASE_URL="$APP_URL"
export USERSYNC_JWT_SECRET="$JWT_SECRET" USERSYNC_SERVICE_KEYS="$SERVICE_KEY"
export USERSYNC_WEBHOOK_SECRET="$WEBHOOK_SECRET" USERSYNC_POLICY_DELETED=delete
export USERSYNC_RATE_LIMIT_PER_MINUTE=0 USERSYNC_LOG_FORMAT=json RUST_LOG="${RUST_LOG:-warn}"
"$BIN" migrate >"$WORK/migrate.log" 2>&1 || { cat "$WORK/migrate.log" >&2; exit 1; }

# Seed users as Supabase Auth writes an email sign-up (scripts/bench/lib.sh), three quarters
# reconciled into profiles by usersync (so each has its `create` event), then the last quarter,
# left missing, then the triggers.
reconciled=$(( SEED_USERS * 3 / 4 ))
say "seeding $SEED_USERS auth users ($reconciled reconciled, $((SEED_USERS - reconciled)) left missing)"
psql "$AUTH_URL" -X -q -v ON_ERROR_STOP=1 \
  -c "$(auth_users_sql "gen_random_uuid()" 0 "$reconciled")" >/dev/null
"$BIN" reconcile >"$WORK/seed-reconcile.log" 2>&1 || { cat "$WORK/seed-reconcile.log" >&2; exit 1; }
psql "$AUTH_URL" -X -q -v ON_ERROR_STOP=1 \
  -c "$(auth_users_sql "gen_random_uuid()" "$reconciled" "$SEED_USERS")" >/dev/null
psql_super -c "vacuum analyze auth.users" -c "vacuum analyze public.users"
"$BIN" triggers install >"$WORK/triggers.log" 2>&1 || { cat "$WORK/triggers.log" >&2; exit 1; }

# ------------------------------------------------------------------------------------------------
# The replicas
# ------------------------------------------------------------------------------------------------
start_replica() {
  local i="$1"
  USERSYNC_LISTEN="127.0.0.1:${REPLICA_PORT[$i]}" \
  USERSYNC_HEALING=on \
  USERSYNC_HEALING_RETRY_SCHEDULE=200ms,500ms,1s,2s \
  USERSYNC_HEALING_SWEEP_INTERVAL=1s \
  USERSYNC_RECONCILE_INTERVAL="$RECONCILE_INTERVAL" \
  USERSYNC_DB_POOL_SIZE=8 \
  USERSYNC_RECONCILE_CHUNK_SIZE=2000 \
    "$BIN" serve >>"$WORK/replica$i.log" 2>&1 &
  REPLICA_PID[i]=$!
}

# GET /readyz of replica i: its healing part (leader, standby), or nothing.
healing_of() {
  curl -s -m 2 "http://127.0.0.1:${REPLICA_PORT[$1]}/readyz" 2>/dev/null \
    | grep -o '"healing":"[a-z]*"' | cut -d'"' -f4 || true
}

wait_ready() {
  local i="$1" n
  for n in $(seq 1 100); do
    if curl -sf -m 2 -o /dev/null "http://127.0.0.1:${REPLICA_PORT[$i]}/readyz"; then return 0; fi
    kill -0 "${REPLICA_PID[$i]}" 2>/dev/null || { tail -5 "$WORK/replica$i.log" >&2; return 1; }
    sleep 0.1
    : "$n"
  done
  return 1
}

for i in $(seq 1 $REPLICAS); do
  REPLICA_PORT[i]=$(free_port)
  start_replica "$i"
done
for i in $(seq 1 $REPLICAS); do
  wait_ready "$i" || { echo "chaos: replica $i did not become ready" >&2; exit 1; }
done
say "replicas: $(for i in $(seq 1 $REPLICAS); do printf '%s (pid %s, %s) ' "${REPLICA_PORT[$i]}" "${REPLICA_PID[$i]}" "$(healing_of "$i")"; done)"
printf '%s\n' "${REPLICA_PORT[@]}" >"$WORK/ports"

# ------------------------------------------------------------------------------------------------
# GoTrue's flows, transcribed from tests/api/gotrue.rs (function named above each)
# ------------------------------------------------------------------------------------------------
FLOWS="$WORK/flows"
mkdir -p "$FLOWS"
# shellcheck disable=SC2016 # a bcrypt hash, not an expansion
PW='$2a$10$abcdefghijklmnopqrstuuJ0rV0yqQ6m8m8m8m8m8m8m8m8m8m8m8'
# pop's `tx.Create(&user)` (gotrue.rs insert_user): every column but confirmed_at and
# is_super_admin, sorted; role '' until SetRole.
INSERT_USER='INSERT INTO "users" ("aud", "banned_until", "confirmation_sent_at", "confirmation_token", "created_at", "deleted_at", "email", "email_change", "email_change_confirm_status", "email_change_sent_at", "email_change_token_current", "email_change_token_new", "email_confirmed_at", "encrypted_password", "id", "instance_id", "invited_at", "is_anonymous", "is_sso_user", "last_sign_in_at", "phone", "phone_change", "phone_change_sent_at", "phone_change_token", "phone_confirmed_at", "raw_app_meta_data", "raw_user_meta_data", "reauthentication_sent_at", "reauthentication_token", "recovery_sent_at", "recovery_token", "role", "updated_at") VALUES'
# gotrue.rs set_role (User.SetRole).
SET_ROLE='UPDATE "users" AS users SET "role" = '"'authenticated'"', "updated_at" = :ts WHERE users.id = :uid;'
# gotrue.rs insert_identity (models.NewIdentity + tx.Create).
INSERT_IDENTITY='INSERT INTO "identities" ("created_at", "id", "identity_data", "last_sign_in_at", "provider", "provider_id", "updated_at", "user_id") VALUES'
# gotrue.rs update_app_meta_data_providers (User.UpdateAppMetaDataProviders).
PROVIDERS='SELECT provider FROM "identities" AS identities WHERE user_id = :uid ORDER BY created_at asc;
UPDATE "users" AS users SET "raw_app_meta_data" = :app_meta, "updated_at" = :ts WHERE users.id = :uid;'
# gotrue.rs issue_refresh_token: the user's only write (sessions, refresh tokens, AMR skipped).
SESSION='UPDATE "users" AS users SET "last_sign_in_at" = :ts, "updated_at" = :ts WHERE users.id = :uid;'
# gotrue.rs load_user / load_user_outside (models.FindUserByID).
LOAD_USER="SELECT id, email, phone, email_change, phone_change, email_change_token_current, email_change_token_new, email_change_confirm_status, email_confirmed_at, banned_until, raw_app_meta_data, raw_user_meta_data, is_anonymous FROM \"users\" AS users WHERE instance_id = '$NIL_UUID' and id = :uid LIMIT 1;"
# A random existing user for a flow to act on ($1: the condition): the first id at or after a
# random one, through the primary key; `found` is false (and the flow skipped) past the last.
pick() {
  cat <<SQL
SELECT (p.id IS NOT NULL) AS found, coalesce(p.id, '$NIL_UUID') AS uid, clock_timestamp() AS ts$2
  FROM (SELECT 1) one LEFT JOIN LATERAL (
    SELECT u.* FROM users u WHERE u.id >= gen_random_uuid() AND $1 ORDER BY u.id LIMIT 1) p ON true
\gset
SQL
}

# sign_up (POST /signup, email, confirmation mail): one transaction.
cat >"$FLOWS/signup_email.sql" <<SQL
SELECT g.u AS uid, gen_random_uuid() AS identity_id, clock_timestamp() AS ts,
       'chaos-' || g.u || '@example.com' AS email, substr(md5(random()::text) || md5(random()::text), 1, 56) AS token,
       jsonb_build_object('full_name', 'Chaos ' || left(g.u::text, 8)) AS user_meta,
       jsonb_build_object('provider', 'email', 'providers', jsonb_build_array('email')) AS app_meta,
       jsonb_build_object('sub', g.u, 'email', 'chaos-' || g.u || '@example.com', 'email_verified', false,
                          'phone_verified', false, 'full_name', 'Chaos ' || left(g.u::text, 8)) AS identity_data
  FROM (SELECT gen_random_uuid() AS u) g
\gset
BEGIN;
$INSERT_USER ('authenticated', NULL, NULL, '', :ts, NULL, :email, '', 0, NULL, '', '', NULL, '$PW', :uid, '$NIL_UUID', NULL, false, false, NULL, NULL, '', NULL, '', NULL, :app_meta, :user_meta, NULL, '', NULL, '', '', :ts);
$SET_ROLE
$INSERT_IDENTITY (:ts, :identity_id, :identity_data, :ts, 'email', :uid, :ts, :uid);
UPDATE "users" AS users SET "raw_user_meta_data" = :identity_data, "updated_at" = :ts WHERE users.id = :uid;
$PROVIDERS
UPDATE "users" AS users SET "confirmation_sent_at" = :ts, "confirmation_token" = :token, "updated_at" = :ts WHERE users.id = :uid;
END;
SQL

# sign_up with confirm (GOTRUE_MAILER_AUTOCONFIRM): User.Confirm instead of the mail, then the
# first session in a second transaction.
cat >"$FLOWS/signup_autoconfirm.sql" <<SQL
SELECT g.u AS uid, gen_random_uuid() AS identity_id, clock_timestamp() AS ts,
       'chaos-' || g.u || '@example.com' AS email,
       jsonb_build_object('full_name', 'Chaos ' || left(g.u::text, 8), 'avatar_url', 'https://example.com/' || g.u || '.png') AS user_meta,
       jsonb_build_object('provider', 'email', 'providers', jsonb_build_array('email')) AS app_meta,
       jsonb_build_object('sub', g.u, 'email', 'chaos-' || g.u || '@example.com', 'email_verified', false,
                          'phone_verified', false, 'full_name', 'Chaos ' || left(g.u::text, 8),
                          'avatar_url', 'https://example.com/' || g.u || '.png') AS identity_data,
       jsonb_build_object('sub', g.u, 'email', 'chaos-' || g.u || '@example.com', 'email_verified', true,
                          'phone_verified', false, 'full_name', 'Chaos ' || left(g.u::text, 8),
                          'avatar_url', 'https://example.com/' || g.u || '.png') AS verified_data
  FROM (SELECT gen_random_uuid() AS u) g
\gset
BEGIN;
$INSERT_USER ('authenticated', NULL, NULL, '', :ts, NULL, :email, '', 0, NULL, '', '', NULL, '$PW', :uid, '$NIL_UUID', NULL, false, false, NULL, NULL, '', NULL, '', NULL, :app_meta, :user_meta, NULL, '', NULL, '', '', :ts);
$SET_ROLE
$INSERT_IDENTITY (:ts, :identity_id, :identity_data, :ts, 'email', :uid, :ts, :uid);
UPDATE "users" AS users SET "raw_user_meta_data" = :identity_data, "updated_at" = :ts WHERE users.id = :uid;
$PROVIDERS
UPDATE "users" AS users SET "confirmation_token" = '', "email_confirmed_at" = :ts, "updated_at" = :ts WHERE users.id = :uid;
UPDATE "users" AS users SET "raw_user_meta_data" = :verified_data, "updated_at" = :ts WHERE users.id = :uid;
END;
BEGIN;
$SESSION
END;
SQL

# sign_up_phone (POST /signup, phone, SMS confirmation): one transaction.
cat >"$FLOWS/signup_phone.sql" <<SQL
SELECT g.u AS uid, gen_random_uuid() AS identity_id, clock_timestamp() AS ts,
       '1' || lpad(((('x' || substr(md5(g.u::text), 1, 15))::bit(60)::bigint) % 10000000000000)::text, 13, '0') AS phone,
       substr(md5(random()::text) || md5(random()::text), 1, 56) AS token,
       jsonb_build_object('full_name', 'Phone ' || left(g.u::text, 8)) AS user_meta,
       jsonb_build_object('provider', 'phone', 'providers', jsonb_build_array('phone')) AS app_meta,
       jsonb_build_object('sub', g.u, 'email_verified', false, 'phone_verified', false,
                          'full_name', 'Phone ' || left(g.u::text, 8)) AS identity_data
  FROM (SELECT gen_random_uuid() AS u) g
\gset
BEGIN;
$INSERT_USER ('authenticated', NULL, NULL, '', :ts, NULL, NULL, '', 0, NULL, '', '', NULL, '$PW', :uid, '$NIL_UUID', NULL, false, false, NULL, :phone, '', NULL, '', NULL, :app_meta, :user_meta, NULL, '', NULL, '', '', :ts);
$SET_ROLE
$INSERT_IDENTITY (:ts, :identity_id, :identity_data, :ts, 'phone', :uid, :ts, :uid);
UPDATE "users" AS users SET "raw_user_meta_data" = :identity_data, "updated_at" = :ts WHERE users.id = :uid;
$PROVIDERS
UPDATE "users" AS users SET "confirmation_sent_at" = :ts, "confirmation_token" = :token, "updated_at" = :ts WHERE users.id = :uid;
END;
SQL

# sign_up_anonymous (signInAnonymously): insert, role, session; no identity.
cat >"$FLOWS/signup_anonymous.sql" <<SQL
SELECT gen_random_uuid() AS uid, clock_timestamp() AS ts,
       jsonb_build_object('theme', 'dark') AS user_meta
\gset
BEGIN;
$INSERT_USER ('authenticated', NULL, NULL, '', :ts, NULL, NULL, '', 0, NULL, '', '', NULL, '', :uid, '$NIL_UUID', NULL, true, false, NULL, NULL, '', NULL, '', NULL, '{}', :user_meta, NULL, '', NULL, '', '', :ts);
$SET_ROLE
$SESSION
END;
SQL

# oauth_callback, CreateAccount: a GitHub identity nobody has, with a verified email.
# One transaction: DetermineAccountLinking's reads, the new user, the identity,
# RemoveUnconfirmedIdentities (no password, the claims as metadata, the providers), Confirm,
# the session.
cat >"$FLOWS/oauth_signup.sql" <<SQL
SELECT g.u AS uid, gen_random_uuid() AS identity_id, clock_timestamp() AS ts, g.gh AS sub,
       'gh-' || g.u || '@example.com' AS email, '{gh-' || g.u || '@example.com}' AS emails,
       jsonb_build_object('provider', 'github', 'providers', jsonb_build_array('github')) AS app_meta,
       jsonb_build_object('iss', 'https://api.github.com', 'sub', g.gh, 'name', 'Octo ' || g.gh,
                          'preferred_username', 'octo' || g.gh,
                          'avatar_url', 'https://avatars.githubusercontent.com/u/' || g.gh || '?v=4',
                          'full_name', 'Octo ' || g.gh, 'provider_id', g.gh, 'user_name', 'octo' || g.gh,
                          'email', 'gh-' || g.u || '@example.com', 'email_verified', true,
                          'phone_verified', false) AS claims
  FROM (SELECT u, (('x' || substr(md5(u::text), 1, 12))::bit(48)::bigint)::text AS gh
          FROM (SELECT gen_random_uuid() AS u) r) g
\gset
BEGIN;
SELECT identities.id, identities.user_id, identities.identity_data, identities.email, identities.last_sign_in_at, identities.created_at FROM "identities" AS identities WHERE provider_id = :sub AND provider = 'github' LIMIT 1;
SELECT identities.user_id, identities.provider FROM "identities" AS identities WHERE email = any (:emails);
SELECT users.id FROM "users" AS users WHERE email = any (:emails) and is_sso_user = false;
$INSERT_USER ('authenticated', NULL, NULL, '', :ts, NULL, :email, '', 0, NULL, '', '', NULL, '', :uid, '$NIL_UUID', NULL, false, false, NULL, NULL, '', NULL, '', NULL, :app_meta, :claims, NULL, '', NULL, '', '', :ts);
$SET_ROLE
$INSERT_IDENTITY (:ts, :identity_id, :claims, :ts, 'github', :sub, :ts, :uid);
UPDATE "users" AS users SET "encrypted_password" = NULL, "updated_at" = :ts WHERE users.id = :uid;
UPDATE "users" AS users SET "raw_user_meta_data" = :claims, "updated_at" = :ts WHERE users.id = :uid;
$PROVIDERS
UPDATE "users" AS users SET "confirmation_token" = '', "email_confirmed_at" = :ts, "updated_at" = :ts WHERE users.id = :uid;
UPDATE "users" AS users SET "raw_user_meta_data" = :claims, "updated_at" = :ts WHERE users.id = :uid;
$SESSION
END;
SQL

# oauth_callback, AccountExists: a GitHub sign-in of a user who has the identity; its data
# replaced (the provider's name changed) and merged into raw_user_meta_data, the providers, the
# session. One transaction.
cat >"$FLOWS/oauth_signin.sql" <<SQL
SELECT (p.id IS NOT NULL) AS found, coalesce(p.user_id, '$NIL_UUID') AS uid,
       coalesce(p.id, '$NIL_UUID') AS identity_id, coalesce(p.provider_id, '') AS sub,
       clock_timestamp() AS ts, coalesce(p.last_sign_in_at, now()) AS identity_last_sign_in_at,
       coalesce(p.identity_data || jsonb_build_object('name', 'Octo ' || p.provider_id || ' ' || left(md5(random()::text), 4)), '{}') AS claims,
       coalesce(p.raw_user_meta_data, '{}') || coalesce(p.identity_data || jsonb_build_object('name', 'Octo ' || p.provider_id), '{}') AS user_meta,
       coalesce(p.raw_app_meta_data, '{}') || jsonb_build_object('provider', 'github', 'providers', jsonb_build_array('github')) AS app_meta
  FROM (SELECT 1) one LEFT JOIN LATERAL (
    SELECT i.*, u.raw_user_meta_data, u.raw_app_meta_data FROM identities i
      JOIN users u ON u.id = i.user_id AND u.deleted_at IS NULL
     WHERE i.id >= gen_random_uuid() AND i.provider = 'github' ORDER BY i.id LIMIT 1) p ON true
\gset
\if :found
BEGIN;
SELECT identities.id, identities.user_id, identities.identity_data, identities.email, identities.last_sign_in_at, identities.created_at FROM "identities" AS identities WHERE provider_id = :sub AND provider = 'github' LIMIT 1;
$LOAD_USER
SELECT identities.id, identities.user_id, identities.identity_data, identities.email, identities.last_sign_in_at, identities.created_at FROM "identities" AS identities WHERE user_id = :uid;
UPDATE "identities" AS identities SET "identity_data" = :claims, "last_sign_in_at" = :identity_last_sign_in_at, "updated_at" = :ts WHERE identities.id = :identity_id;
UPDATE "users" AS users SET "raw_user_meta_data" = :user_meta, "updated_at" = :ts WHERE users.id = :uid;
$PROVIDERS
$SESSION
END;
\endif
SQL

# sign_in_with_password (POST /token?grant_type=password) of a confirmed user with a password:
# the lookup on the pool, then one transaction whose only users write is the session's.
cat >"$FLOWS/signin_password.sql" <<SQL
$(pick "u.email_confirmed_at IS NOT NULL AND u.encrypted_password <> '' AND u.deleted_at IS NULL AND u.email IS NOT NULL" ", coalesce(p.email, '') AS email")
\if :found
SELECT users.id, users.encrypted_password, users.email_confirmed_at, users.banned_until FROM "users" AS users WHERE instance_id = '$NIL_UUID' and LOWER(email) = :email and aud = 'authenticated' and is_sso_user = false LIMIT 1;
BEGIN;
$SESSION
END;
\endif
SQL

# update_user_metadata (updateUser({ data })): merged in Go, written whole. One transaction.
cat >"$FLOWS/update_metadata.sql" <<SQL
$(pick "u.deleted_at IS NULL" ", coalesce(p.raw_user_meta_data, '{}') || jsonb_build_object('full_name', 'Renamed ' || left(md5(random()::text), 6), 'avatar_url', 'https://example.com/r/' || left(md5(random()::text), 6) || '.png') AS user_meta")
\if :found
$LOAD_USER
BEGIN;
UPDATE "users" AS users SET "raw_user_meta_data" = :user_meta, "updated_at" = :ts WHERE users.id = :uid;
END;
\endif
SQL

# set_app_metadata (auth.admin.updateUserById({ app_metadata: { role } })): a role set, changed
# or removed (null), merged in Go, written whole. One transaction.
cat >"$FLOWS/update_role.sql" <<SQL
$(pick "u.deleted_at IS NULL" ", CASE floor(random() * 4)::int WHEN 0 THEN coalesce(p.raw_app_meta_data, '{}') - 'role' ELSE coalesce(p.raw_app_meta_data, '{}') || jsonb_build_object('role', (ARRAY['admin', 'editor', 'support'])[1 + floor(random() * 3)::int]) END AS app_meta")
\if :found
$LOAD_USER
BEGIN;
UPDATE "users" AS users SET "raw_app_meta_data" = :app_meta, "updated_at" = :ts WHERE users.id = :uid;
END;
\endif
SQL

# request_email_change + confirm_email_change (updateUser({ email }), secure email change):
# the request, the current address's link, the new address's link: three transactions. Only
# the last one changes `email`; usersync must not sync the pending `email_change` before it.
cat >"$FLOWS/change_email.sql" <<SQL
SELECT (p.id IS NOT NULL) AS found, coalesce(p.id, '$NIL_UUID') AS uid, clock_timestamp() AS ts,
       'moved-' || gen_random_uuid() || '@example.com' AS new_email,
       substr(md5(random()::text) || md5(random()::text), 1, 56) AS token_current,
       substr(md5(random()::text) || md5(random()::text), 1, 56) AS token_new,
       coalesce(p.identity_id, '$NIL_UUID') AS identity_id, coalesce(p.identity_data, '{}') AS identity_data,
       coalesce(p.raw_app_meta_data, '{}') AS app_meta
  FROM (SELECT 1) one LEFT JOIN LATERAL (
    SELECT u.id, u.raw_app_meta_data, i.id AS identity_id, i.identity_data FROM users u
      JOIN identities i ON i.user_id = u.id AND i.provider = 'email' AND i.provider_id = u.id::text
     WHERE u.id >= gen_random_uuid() AND u.deleted_at IS NULL AND u.email_confirmed_at IS NOT NULL
       AND u.email IS NOT NULL AND u.email_change = ''
     ORDER BY u.id LIMIT 1) p ON true
\gset
\if :found
$LOAD_USER
BEGIN;
UPDATE "users" AS users SET "email_change" = :new_email, "email_change_confirm_status" = 0, "email_change_sent_at" = :ts, "email_change_token_current" = :token_current, "email_change_token_new" = :token_new, "updated_at" = :ts WHERE users.id = :uid;
END;
$LOAD_USER
BEGIN;
$LOAD_USER
UPDATE "users" AS users SET "email_change_confirm_status" = 1, "email_change_token_current" = '', "email_change_token_new" = :token_new, "updated_at" = :ts WHERE users.id = :uid;
END;
SELECT :identity_data::jsonb || jsonb_build_object('email', :new_email::text, 'email_verified', true) AS new_identity_data
\gset
BEGIN;
$LOAD_USER
SELECT identities.id, identities.user_id, identities.identity_data, identities.email, identities.last_sign_in_at, identities.created_at FROM "identities" AS identities WHERE provider_id = :uid AND provider = 'email' LIMIT 1;
update identities set identity_data = :new_identity_data where id = :identity_id;
UPDATE "users" AS users SET "email" = :new_email, "email_change" = '', "email_change_confirm_status" = 0, "email_change_token_current" = '', "email_change_token_new" = '', "updated_at" = :ts WHERE users.id = :uid;
SELECT identities.id, identities.user_id, identities.identity_data, identities.email, identities.last_sign_in_at, identities.created_at FROM "identities" AS identities WHERE provider_id = :uid AND provider = 'email' LIMIT 1;
UPDATE "identities" AS identities SET "identity_data" = :new_identity_data, "updated_at" = :ts WHERE identities.id = :identity_id;
$PROVIDERS
$SESSION
END;
\endif
SQL

# soft_delete_user (auth.admin.deleteUser(id, true)): GoTrue's read (the obfuscations computed
# by Postgres, as gotrue.rs does), then one transaction: SoftDeleteUser's update, the two
# metadata updates, SoftDeleteUserIdentities' two raw updates per identity (a user here has at
# most one).
cat >"$FLOWS/soft_delete.sql" <<SQL
$(pick "u.deleted_at IS NULL" ",
       rtrim(translate(encode(sha256(convert_to(coalesce(p.id::text, '') || coalesce(p.email, ''), 'UTF8')), 'base64'), '+/', '-_'), '=') AS email_obf,
       left(rtrim(translate(encode(sha256(convert_to(coalesce(p.id::text, '') || coalesce(p.phone, ''), 'UTF8')), 'base64'), '+/', '-_'), '='), 15) AS phone_obf,
       rtrim(translate(encode(sha256(convert_to(coalesce(p.id::text, '') || coalesce(p.email_change, ''), 'UTF8')), 'base64'), '+/', '-_'), '=') AS email_change_obf,
       left(rtrim(translate(encode(sha256(convert_to(coalesce(p.id::text, '') || coalesce(p.phone_change, ''), 'UTF8')), 'base64'), '+/', '-_'), '='), 15) AS phone_change_obf")
\if :found
BEGIN;
UPDATE "users" AS users SET "confirmation_token" = '', "deleted_at" = :ts, "email" = :email_obf, "email_change" = :email_change_obf, "email_change_token_current" = '', "email_change_token_new" = '', "encrypted_password" = NULL, "phone" = :phone_obf, "phone_change" = :phone_change_obf, "phone_change_token" = '', "recovery_token" = '', "updated_at" = :ts WHERE users.id = :uid;
UPDATE "users" AS users SET "raw_user_meta_data" = '{}', "updated_at" = :ts WHERE users.id = :uid;
UPDATE "users" AS users SET "raw_app_meta_data" = '{}', "updated_at" = :ts WHERE users.id = :uid;
SELECT count(*) AS identities, coalesce(min(identities.id::text), '$NIL_UUID') AS identity_id,
       coalesce(min(rtrim(translate(encode(sha256(convert_to(user_id::text || provider || ':' || provider_id, 'UTF8')), 'base64'), '+/', '-_'), '=')), '') AS provider_id_obf
  FROM "identities" AS identities WHERE user_id = :uid
\gset
\if :identities > 0
update identities set identity_data = '{}' where id = :identity_id;
update identities set provider_id = :provider_id_obf where id = :identity_id;
\endif
END;
\endif
SQL

# delete_user (auth.admin.deleteUser(id)): loadUser, then one DELETE (identities cascade).
# Soft-deleted users are picked too.
cat >"$FLOWS/hard_delete.sql" <<SQL
$(pick "true" "")
\if :found
$LOAD_USER
BEGIN;
DELETE FROM "users" AS users WHERE users.id = :uid;
END;
\endif
SQL

# Weights: sign-ups first (the table grows), deletes rare (the mass-delete guard stays quiet).
PGBENCH_FLOWS=(
  -f "$FLOWS/signup_email.sql@16" -f "$FLOWS/signup_autoconfirm.sql@14"
  -f "$FLOWS/signup_phone.sql@6" -f "$FLOWS/signup_anonymous.sql@6"
  -f "$FLOWS/oauth_signup.sql@8" -f "$FLOWS/oauth_signin.sql@8"
  -f "$FLOWS/signin_password.sql@14" -f "$FLOWS/update_metadata.sql@8"
  -f "$FLOWS/update_role.sql@8" -f "$FLOWS/change_email.sql@6"
  -f "$FLOWS/soft_delete.sql@3" -f "$FLOWS/hard_delete.sql@3"
)
# Every flow parses and runs once before the clock starts (a typo fails here, not as a fault).
for flow in "$FLOWS"/*.sql; do
  pgbench -n -M prepared -c 1 -t 1 -f "$flow" "$AUTH_URL" >"$WORK/check.out" 2>&1 \
    || { echo "chaos: the flow $flow does not run:" >&2; cat "$WORK/check.out" >&2; exit 1; }
done

# ------------------------------------------------------------------------------------------------
# Traffic
# ------------------------------------------------------------------------------------------------
END_MS=$(( $(now_ms) + DURATION * 1000 ))
remaining() { echo $(( (END_MS - $(now_ms)) / 1000 )); }

# pgbench rounds until the time is up; each round's report is kept for the counts.
gotrue_traffic() {
  local round=0 left
  while left=$(remaining); [ "$left" -gt 0 ] && [ ! -e "$WORK/stop" ]; do
    round=$((round + 1))
    [ "$left" -le 15 ] || left=15
    pgbench -n -M prepared -c "$CLIENTS" -j "$CLIENTS" -T "$left" "${PGBENCH_FLOWS[@]}" \
      "$AUTH_URL" >"$WORK/pgbench.$round.out" 2>&1 || sleep 0.2
  done
}

b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
# An access token as GoTrue signs one (HS256, the project's secret as raw bytes).
user_token() {
  local now header payload sig
  now=$(date +%s)
  header=$(printf '{"alg":"HS256","typ":"JWT"}' | b64url)
  payload=$(printf '{"aud":"authenticated","exp":%d,"iat":%d,"sub":"%s","email":"","phone":"","role":"authenticated","aal":"aal1","session_id":"%s","is_anonymous":false}' \
    $((now + 3600)) "$now" "$1" "$(cat /proc/sys/kernel/random/uuid)" | b64url)
  sig=$(printf '%s.%s' "$header" "$payload" | openssl dgst -sha256 -hmac "$JWT_SECRET" -binary | b64url)
  printf '%s.%s.%s' "$header" "$payload" "$sig"
}
random_port() { echo "${REPLICA_PORT[$(( 1 + RANDOM % REPLICAS ))]}"; }

# Ids for the HTTP clients: the newest sign-ups (a frontend syncs right after signUp) and
# random users. Nothing when the server is away.
client_ids() {
  sql_value "(select id from auth.users order by created_at desc limit $1)
             union all (select id from auth.users where id >= gen_random_uuid() order by id limit $1)"
}

# Sends the requests of curl config $1, 8 at a time, each answer's code to http.codes (a pause
# instead when there was nobody to send them for).
send_batch() {
  if [ -s "$1" ]; then
    curl -sS --parallel --parallel-max 8 -K "$1" >>"$WORK/http.codes" 2>>"$WORK/curl.err" || true
  else
    sleep 0.2
  fi
}

# One batch of sync-one calls, each with the user's own token, in one curl (8 at a time).
sync_traffic() {
  local n="$1" cfg="$WORK/sync.$1.cfg" id
  while [ "$(remaining)" -gt 0 ] && [ ! -e "$WORK/stop" ]; do
    : >"$cfg"
    for id in $(client_ids 12); do
      [ ! -s "$cfg" ] || echo next >>"$cfg"
      printf 'url = "http://127.0.0.1:%s/v1/users/me/sync"\nrequest = "POST"\nheader = "Authorization: Bearer %s"\noutput = "/dev/null"\nmax-time = 15\nwrite-out = "sync %%{http_code}\\n"\n' \
        "$(random_port)" "$(user_token "$id")" >>"$cfg"
    done
    send_batch "$cfg"
  done
}

# Supabase Database Webhook payloads for auth.users, with the shared secret: INSERT and UPDATE
# of users, and DELETE payloads for users that still exist (a late or forged signal).
hook_traffic() {
  local cfg="$WORK/hook.cfg" id kind body
  while [ "$(remaining)" -gt 0 ] && [ ! -e "$WORK/stop" ]; do
    : >"$cfg"
    for id in $(client_ids 10); do
      case $(( RANDOM % 5 )) in
        0|1) kind=INSERT ;;
        2|3) kind=UPDATE ;;
        *) kind=DELETE ;;
      esac
      # shellcheck disable=SC2016 # a bcrypt hash, not an expansion
      if [ "$kind" = DELETE ]; then
        body=$(printf '{"type":"DELETE","table":"users","schema":"auth","record":null,"old_record":{"id":"%s","email":"x@example.com","encrypted_password":"$2a$10$secret"}}' "$id")
      else
        body=$(printf '{"type":"%s","table":"users","schema":"auth","record":{"id":"%s","email":"x@example.com","encrypted_password":"$2a$10$secret"},"old_record":null}' "$kind" "$id")
      fi
      [ ! -s "$cfg" ] || echo next >>"$cfg"
      printf 'url = "http://127.0.0.1:%s/v1/hooks/database"\nheader = "Content-Type: application/json"\nheader = "x-usersync-webhook-secret: %s"\ndata = "%s"\noutput = "/dev/null"\nmax-time = 15\nwrite-out = "hook-%s %%{http_code}\\n"\n' \
        "$(random_port)" "$WEBHOOK_SECRET" "${body//\"/\\\"}" "$kind" >>"$cfg"
    done
    send_batch "$cfg"
  done
}

# GET /v1/status from the first replica that answers: "<drift sum> <dead letters pending>".
status_sample() {
  local port body drift pending
  for port in "${REPLICA_PORT[@]}"; do
    body=$(curl -sf -m 5 -H "apikey: $SERVICE_KEY" "http://127.0.0.1:$port/v1/status" 2>/dev/null) || continue
    drift=$(grep -o '"drift":{[^}]*}' <<<"$body" | grep -o ':[0-9]*' | tr -d ':' | awk '{ s += $1 } END { print s + 0 }')
    pending=$(grep -o '"dead_letters_pending":[0-9]*' <<<"$body" | cut -d: -f2)
    echo "$drift ${pending:-0}"
    return 0
  done
  return 1
}

# Every second: "<ms since start> <drift> <pending>" (or "<ms> down").
monitor() {
  local sample
  while [ ! -e "$WORK/stop-monitor" ]; do
    if sample=$(status_sample); then
      echo "$(( $(now_ms) - START_MS )) $sample" >>"$WORK/samples"
    else
      echo "$(( $(now_ms) - START_MS )) down" >>"$WORK/samples"
    fi
    sleep 1
  done
}

# ------------------------------------------------------------------------------------------------
# Faults
# ------------------------------------------------------------------------------------------------
FAULT_KINDS=(reconcile leader target postgres cut)

# A fault is recorded as "<n> <kind> <ms at its start> <ms at its end>" in $WORK/faults once it
# really happened.
record_fault() { echo "$1 $2 $3 $(( $(now_ms) - START_MS ))" >>"$WORK/faults"; }

leader_index() {
  local i
  for i in $(seq 1 $REPLICAS); do
    [ "$(healing_of "$i")" = leader ] && { echo "$i"; return 0; }
  done
  return 1
}

fault_leader() {
  local i=0 n t0 j
  for n in $(seq 1 50); do i=$(leader_index) && break; sleep 0.2; : "$n"; done
  if [ -z "$i" ] || [ "$i" -eq 0 ]; then say "fault: no replica leads healing; skipped"; return 1; fi
  kill -KILL "${REPLICA_PID[$i]}"
  wait "${REPLICA_PID[$i]}" 2>/dev/null || true
  t0=$(now_ms)
  start_replica "$i"
  echo "$i ${REPLICA_PID[$i]}" >>"$WORK/replica-pids"
  for n in $(seq 1 200); do
    for j in $(seq 1 $REPLICAS); do
      if [ "$j" != "$i" ] && [ "$(healing_of "$j")" = leader ]; then
        say "fault: leader (replica $i) SIGKILLed and restarted; replica $j led after $(( $(now_ms) - t0 )) ms"
        wait_ready "$i" || true
        return 0
      fi
    done
    [ "$(healing_of "$i")" = leader ] && { say "fault: leader (replica $i) SIGKILLed; the restarted replica $i leads again after $(( $(now_ms) - t0 )) ms"; return 0; }
    sleep 0.05
    : "$n"
  done
  say "fault: leader (replica $i) SIGKILLed; no new leader within 10 s"
}

fault_postgres() {
  local t0
  t0=$(now_ms)
  as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$PGLOG" -m immediate -w -t 60 restart >/dev/null 2>&1
  say "fault: PostgreSQL crashed and restarted (pg_ctl restart -m immediate) in $(( $(now_ms) - t0 )) ms"
}

fault_target() {
  local hold=$(( FAULT_EVERY / 3 )) n t0 broken
  [ "$hold" -ge 2 ] || hold=2
  [ "$hold" -le 6 ] || hold=6
  # ALTER TABLE waits for every transaction on the table, and every newcomer waits behind it:
  # short lock timeouts, retried, keep the traffic moving.
  for n in $(seq 1 20); do
    psql_super -c "set lock_timeout = '1s'" -c "alter table public.users add constraint chaos_broken
      check (left(id::text, 1) not in ('0', '1', '2', '3')) not valid" >/dev/null 2>&1 && break
    [ "$n" -lt 20 ] || { say "fault: could not break the target (no lock within 20 tries); skipped"; return 1; }
    sleep 0.2
  done
  sleep "$hold"
  broken=$(sql_value "select count(*) from usersync.dead_letters where resolved_at is null")
  t0=$(now_ms)
  # The repair must happen, however long the table's lock takes (a run splitting a refused
  # chunk holds it); the traffic goes on meanwhile.
  local holder=""
  until psql_super -c "set lock_timeout = '1s'" \
      -c "alter table public.users drop constraint if exists chaos_broken" >/dev/null 2>&1; do
    # Who keeps the table: the oldest transaction of the service's role that touches it.
    [ -n "$holder" ] || holder=$(sql_value "select a.application_name || ' ' || a.state || ' for '
          || round(extract(epoch from now() - a.xact_start)) || ' s: ' || left(regexp_replace(a.query, '\s+', ' ', 'g'), 60)
        from pg_stat_activity a join pg_locks l on l.pid = a.pid and l.relation = 'public.users'::regclass and l.granted
       where a.usename = 'hosted_postgres' order by a.xact_start limit 1")
    if [ $(( $(now_ms) - t0 )) -gt 300000 ]; then
      say "fault: the target could not be repaired within 300 s"
      touch "$WORK/unrepaired"
      return 1
    fi
    sleep 0.2
  done
  say "fault: target broken for ${hold}s by a CHECK a quarter of the ids fail ($broken dead letters pending), repaired in $(( $(now_ms) - t0 )) ms${holder:+ (the table was held by: $holder)}"
}

fault_cut() {
  local cut n
  # After a restart the replicas reconnect as they need: give them a moment to hold some.
  for n in $(seq 1 50); do
    [ "$(sql_value "select count(*) from pg_stat_activity where datname = 'chaos' and usename = 'hosted_postgres'")" -lt 3 ] || break
    sleep 0.1
    : "$n"
  done
  cut=$(sql_value "select count(pg_terminate_backend(pid)) from pg_stat_activity
                    where datname = 'chaos' and usename = 'hosted_postgres' and pid <> pg_backend_pid()")
  say "fault: cut ${cut:-0} connections of the service's role"
}

fault_reconcile() {
  local run started n
  # The CLI refuses to start while the healing leader's periodic run holds the run lock: try
  # again every second, within the fault's slot.
  local tries=$(( FAULT_EVERY - 3 )) deadline
  [ "$tries" -ge 3 ] || tries=3
  deadline=$(( $(now_ms) + tries * 1000 ))
  while [ "$(now_ms)" -lt "$deadline" ]; do
    started=$(sql_value "select now()")
    [ -n "$started" ] || { sleep 1; continue; }
    USERSYNC_RECONCILE_CHUNK_SIZE=100 "$BIN" reconcile >>"$WORK/reconcile-cli.log" 2>&1 &
    RECONCILE_PID=$!
    run=""
    for n in $(seq 1 400); do
      kill -0 "$RECONCILE_PID" 2>/dev/null || break
      run=$(sql_value "select id || ' ' || (counts->>'walked') from usersync.runs
                        where caller = 'cli' and state = 'running' and started_at >= '$started'
                          and coalesce((counts->>'walked')::bigint, 0) > 0 limit 1")
      [ -z "$run" ] || break
      sleep 0.02
      : "$n"
    done
    if [ -n "$run" ] && kill -KILL "$RECONCILE_PID" 2>/dev/null; then
      wait "$RECONCILE_PID" 2>/dev/null || true
      RECONCILE_PID=""
      say "fault: reconciliation run ${run%% *} SIGKILLed midway (${run#* } rows walked)"
      return 0
    fi
    wait "$RECONCILE_PID" 2>/dev/null || true
    RECONCILE_PID=""
    sleep 1
  done
  say "fault: no reconciliation run could be killed midway (other runs held the lock for ${tries} s)"
  return 1
}

fault_loop() {
  local n=0 next kind started
  next=$(( START_TRAFFIC_MS + 5000 ))
  while :; do
    [ ! -e "$WORK/stop" ] || return 0
    # A fault starts only if it can end (and heal a little) before the traffic stops.
    [ $(( next + 5000 )) -lt "$END_MS" ] || return 0
    while [ "$(now_ms)" -lt "$next" ]; do sleep 0.2; done
    kind=${FAULT_KINDS[$(( n % ${#FAULT_KINDS[@]} ))]}
    n=$((n + 1))
    started=$(( $(now_ms) - START_MS ))
    if "fault_$kind"; then record_fault "$n" "$kind" "$started"; fi
    next=$(( next + FAULT_EVERY * 1000 ))
    # A fault that overran its slot leaves the next one at least 3 s of traffic.
    [ "$next" -ge $(( $(now_ms) + 3000 )) ] || next=$(( $(now_ms) + 3000 ))
  done
}

# ------------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------------
START_TRAFFIC_MS=$(now_ms)
END_MS=$(( START_TRAFFIC_MS + DURATION * 1000 ))
: >"$WORK/faults"
: >"$WORK/samples"
: >"$WORK/http.codes"
: >"$WORK/replica-pids"
say "traffic for ${DURATION}s: pgbench ($CLIENTS clients, GoTrue's flows), 2 sync-one clients, 1 webhook client; a fault every ${FAULT_EVERY}s"
monitor & BG_PIDS+=($!)
gotrue_traffic & BG_PIDS+=($!)
sync_traffic 1 & BG_PIDS+=($!)
sync_traffic 2 & BG_PIDS+=($!)
hook_traffic & BG_PIDS+=($!)
# The fault loop runs here, in the foreground: replica pids it restarts stay known to cleanup.
fault_loop
while [ "$(remaining)" -gt 0 ]; do sleep 0.5; done
touch "$WORK/stop"
for pid in "${BG_PIDS[@]:1}"; do wait "$pid" 2>/dev/null || true; done
FAULTS=$(wc -l <"$WORK/faults")
TRAFFIC_END_MS=$(( $(now_ms) - START_MS ))
say "traffic stopped; $FAULTS faults; letting healing settle (at most ${SETTLE}s)"

# Every replica must be up for the checks (a fault may have left none leading).
for i in $(seq 1 $REPLICAS); do
  if ! kill -0 "${REPLICA_PID[$i]}" 2>/dev/null; then start_replica "$i"; fi
  wait_ready "$i" || echo "chaos: replica $i is not ready" >&2
done

settled=""
settle_deadline=$(( $(now_ms) + SETTLE * 1000 ))
while [ "$(now_ms)" -lt "$settle_deadline" ]; do
  if sample=$(status_sample) && [ "$sample" = "0 0" ]; then
    # Twice in a row, a second apart: nothing still in flight.
    sleep 1
    if sample=$(status_sample) && [ "$sample" = "0 0" ]; then settled=yes; break; fi
  fi
  sleep 1
done
touch "$WORK/stop-monitor"
wait "${BG_PIDS[0]}" 2>/dev/null || true
SETTLED_MS=$(( $(now_ms) - START_MS ))
if [ -n "$settled" ]; then
  say "settled $(( (SETTLED_MS - TRAFFIC_END_MS) / 1000 ))s after the traffic stopped"
else
  say "NOT settled within ${SETTLE}s: $(status_sample || echo 'status unavailable') (drift, pending)"
fi

# ------------------------------------------------------------------------------------------------
# The invariants
# ------------------------------------------------------------------------------------------------
# Writes: the GoTrue flows pgbench completed, per flow.
WRITES=0
declare -A PER_FLOW=()
for out in "$WORK"/pgbench.*.out; do
  [ -e "$out" ] || continue
  while read -r flow count; do
    PER_FLOW[$flow]=$(( ${PER_FLOW[$flow]:-0} + count ))
    WRITES=$(( WRITES + count ))
  done < <(awk '/^SQL script [0-9]+:/ { n = split($4, p, "/"); f = p[n]; sub(/\.sql$/, "", f) }
                /^ - [0-9]+ transactions/ && f != "" { print f, $2; f = "" }' "$out")
done

read -r N_USERS LIVE SOFT LOST SOFT_KEPT HARD_KEPT INVENTED DUP_CREATED NO_CREATED SHARED_EMAIL PENDING RUNNING <<<"$(psql_super -At -F ' ' <<'SQL'
with created as (
  select user_id, count(*) as n from usersync.repairs where action = 'created' group by user_id
), live as (
  select id, email, created_at, coalesce(nullif(raw_app_meta_data ->> 'role', ''), 'user') as role
    from auth.users where deleted_at is null
)
select
  (select count(*) from auth.users),
  (select count(*) from live),
  (select count(*) from auth.users where deleted_at is not null),
  -- lost: a live user without its profile, or with one whose mapped columns differ
  (select count(*) from live l left join public.users p on p.id = l.id
    where p.id is null or p.email is distinct from l.email or p.role is distinct from l.role
       or p.created_at is distinct from l.created_at),
  -- the deleted policy (delete): soft-deleted users keep no profile ...
  (select count(*) from public.users p join auth.users s on s.id = p.id where s.deleted_at is not null),
  -- ... nor do hard-deleted ones (no auth user, but usersync created the profile)
  (select count(*) from public.users p
    where not exists (select 1 from auth.users s where s.id = p.id)
      and exists (select 1 from created c where c.user_id = p.id)),
  -- invented: a profile for a user usersync never saw
  (select count(*) from public.users p
    where not exists (select 1 from auth.users s where s.id = p.id)
      and not exists (select 1 from created c where c.user_id = p.id)),
  -- more than one `create` for a user
  (select count(*) from created where n > 1),
  -- a profile of a live user without its `create`
  (select count(*) from live l join public.users p on p.id = l.id
    where not exists (select 1 from created c where c.user_id = l.id)),
  -- one email under two profiles
  (select count(*) from (select lower(email) from public.users where email is not null
                          group by 1 having count(*) > 1) e),
  (select count(*) from usersync.dead_letters where resolved_at is null),
  (select count(*) from usersync.runs where state in ('planning', 'running'));
SQL
)"
DRIFT_SAMPLE=$(status_sample || echo "unknown unknown")
DRIFT=${DRIFT_SAMPLE%% *}
PANICS=$(cat "$WORK"/replica*.log "$WORK/reconcile-cli.log" 2>/dev/null | grep -c 'panicked' || true)
DUPLICATED=$(( DUP_CREATED + SHARED_EMAIL ))

# Time to heal: from each fault's end to the first sample with no drift and nothing pending,
# before the next fault starts ("overlapped" when there was none: the next fault met drift);
# the last fault's window runs to the end of the settle.
HEAL=$(awk -v settled_ms="$SETTLED_MS" '
  FNR == NR { t[FNR] = $1; ok[FNR] = ($2 == "0" && $3 == "0"); n = FNR; next }
  { kind[FNR] = $2; start[FNR] = $3; end[FNR] = $4; m = FNR }
  END {
    for (k = 1; k <= m; k++) {
      limit = (k < m) ? start[k + 1] : settled_ms; healed = -1
      for (i = 1; i <= n; i++) if (t[i] >= end[k] && t[i] <= limit && ok[i]) { healed = t[i] - end[k]; break }
      if (healed < 0) printf "%s overlapped\n", kind[k]; else printf "%s %d\n", kind[k], healed
    }
  }' "$WORK/samples" "$WORK/faults")
LONGEST=$(grep -v overlapped <<<"$HEAL" | sort -k2 -n | tail -1 || true)
OVERLAPPED=$(grep -c overlapped <<<"$HEAL" || true)

echo
echo "flows completed: $(for f in "${!PER_FLOW[@]}"; do printf '%s %s, ' "$f" "${PER_FLOW[$f]}"; done | sed 's/, $//')"
echo "http: $(awk '{ c[$1 " " $2]++ } END { for (k in c) printf "%s: %d, ", k, c[k] }' "$WORK/http.codes" | sed 's/, $//')"
echo "users: $N_USERS in auth.users ($LIVE live, $SOFT soft-deleted), $(sql_value 'select count(*) from public.users') profiles"
echo "faults: $(cut -d' ' -f2 "$WORK/faults" | sort | uniq -c | awk '{ printf "%s %s, ", $2, $1 }' | sed 's/, $//')"
echo "heal (ms from each fault's end to no drift and nothing pending): $(awk '{ printf "%s %s, ", $1, $2 }' <<<"$HEAL" | sed 's/, $//')"
violations=0
check() { # name value
  if [ "$2" != 0 ]; then echo "VIOLATION: $1: $2"; violations=$((violations + 1)); fi
}
check "live users without their mapped profile (lost)" "$LOST"
check "soft-deleted users with a profile (policy delete)" "$SOFT_KEPT"
check "hard-deleted users with a profile (policy delete)" "$HARD_KEPT"
check "profiles of users usersync never saw" "$INVENTED"
check "users with more than one create event" "$DUP_CREATED"
check "live users' profiles without a create event" "$NO_CREATED"
check "emails under two profiles" "$SHARED_EMAIL"
check "dead letters pending" "$PENDING"
check "drift (GET /v1/status)" "$DRIFT"
check "replica or CLI panics" "$PANICS"
check "the broken target could not be repaired" "$([ -e "$WORK/unrepaired" ] && echo 1 || echo 0)"
check "healing did not settle within ${SETTLE}s" "$([ -n "$settled" ] && echo 0 || echo 1)"
[ "$RUNNING" = 0 ] || echo "note: $RUNNING reconciliation run(s) still planning or running"
if [ -n "$LONGEST" ]; then
  echo "longest time to heal: ${LONGEST#* } ms (${LONGEST%% *}); $OVERLAPPED of $FAULTS faults met the next one before drift was zero"
else
  echo "longest time to heal: none healed before the next fault; settled $(( (SETTLED_MS - TRAFFIC_END_MS) / 1000 ))s after the traffic stopped"
fi
echo "chaos: $N_USERS users, $WRITES writes, $FAULTS faults, lost $LOST, duplicated $DUPLICATED, drift $DRIFT"
[ "$violations" -eq 0 ]
