#!/usr/bin/env bash
# What a sign-up and a sign-in cost with the trigger path (design.md, "Performance targets"),
# each next to its baselines on the same database in the same run:
#
#   sign-up: GoTrue's own sign-up transaction (POST /signup, email), replayed by
#            pgbench as supabase_auth_admin, with (a) no trigger on auth.users, (b) the Supabase
#            docs' recipe (`public.handle_new_user()`, after insert, security definer) and
#            (c) usersync's triggers (`usersync triggers install`);
#   sign-in: GoTrue's password-grant transaction (audit row, session, refresh token, the
#            `last_sign_in_at` update, the AMR claim) for a random existing user, with (a) and (c).
#
# Targets: sign-up usersync >= 0.85x none and within 10% of the recipe; sign-in >= 0.95x none.
#
# Usage:  scripts/bench/signup.sh       (DATABASE_URL names the server; a superuser, as run.sh)
#         SIZES=10000 SECONDS=5 scripts/bench/signup.sh
#         SIZES="10000 100000" CLIENTS=16 ROUNDS=2 KEEP_DB=1 BIN=/tmp/wt/target/release/usersync \
#           scripts/bench/signup.sh
#
#   SIZES     existing users, each with a profile and an identity (default "10000 100000 1000000")
#   CLIENTS   pgbench clients (default "1 16")
#   SECONDS   seconds per measurement (default 20; DURATION works too)
#   ROUNDS    rounds, each measuring every setup once in an order that turns each round
#             (default 3); the table gives the medians, and each ratio is the median of the
#             rounds' own ratios (setups measured minutes apart, not a quarter of an hour), so
#             that a slow minute of a shared machine moves one round, not the verdict
#   WARMUP    seconds of an unrecorded no-trigger sign-up run before each size (default 5)
#   SETTLE    seconds of the same workload and setup, unrecorded, before each measurement
#             (default 3): each starts from shared buffers its own workload filled, not from
#             what the previous setup's writes left there (at a million users the tables and
#             indexes no longer fit in the default 128 MB)
#   SIGNUP_FLOW  confirm (default: GoTrue's and hosted Supabase's default, "Confirm email" on:
#             the transaction ends with the confirmation token and its one-time-token row; the
#             mail sent inside it is not replayed) or autoconfirm (GOTRUE_MAILER_AUTOCONFIRM, the
#             Supabase CLI's local default: it ends with user.Confirm instead)
#   BIN       the usersync binary (default: target/release/usersync, built here)
#
# It creates (and at the end drops) the database BENCH_DB (usersync_bench_signup). The sizes are
# seeded in increasing order into the same database (generate_series, then one profile and one
# identity per user, then vacuum analyze). Before every measurement the state is the same: the
# rows the previous one added (its users, their profiles and identities, every session, audit row
# and usersync event) are deleted, the tables vacuumed, a checkpoint taken, and auth.users,
# public.users and auth.identities must hold the size within 1%. During a measurement the tables
# grow by the sign-ups it makes (printed as "+k users", the settling run's included): at a small
# size and a high tps that is more than 1%, for every setup alike.
#
# What pgbench replays, and how (GoTrue: supabase/auth, internal/api/signup.go, token.go,
# internal/models, internal/tokens/service.go; SQL as gobuffalo/pop v6.1.1 renders it):
#   - every statement GoTrue's transaction sends, in order, with pop's text (sorted column lists,
#     `"users" AS users`, the unqualified names that supabase_auth_admin's search_path = auth
#     resolves), including the lookups GoTrue makes on the pool just before it (duplicate email /
#     the user by email, with pop's eager loads);
#   - `-M prepared`: GoTrue's pop runs on pgx v4's database/sql driver, which prepares every
#     statement and caches it per connection (its default), and pop prepares its INSERTs itself;
#   - the values GoTrue makes in Go (uuid v4 ids, time.Now(), the JSON it marshals) come from one
#     `select ... \gset` before the transaction: a round trip GoTrue does not make, the same in
#     every setup. Values GoTrue binds that never vary (uuid.Nil, '', false, NULL) are literals.
#   - not replayed: bcrypt and the JWT (Go, no database), the confirmation mail (sent inside
#     GoTrue's transaction, so a real sign-up holds it open longer), and the separate transaction
#     that issues an autoconfirmed user's first session after the sign-up commits.
# GoTrue's other auth tables that these statements touch (audit_log_entries, sessions,
# refresh_tokens, mfa_amr_claims, mfa_factors, one_time_tokens) are created with the columns,
# keys and indexes GoTrue's migrations give them; the fixture has only users and identities. The
# tables and the sign-up script are lib.sh's (gotrue_tables_sql, signup_sql), shared with the
# soak's held load (benches/soak.rs); the sign-in script is here.
set -euo pipefail
# SECONDS is bash's own clock: a value given in the environment arrives exported, and is read
# here before it has ticked.
if [[ "$(declare -p SECONDS 2>/dev/null)" == "declare -"*x* ]]; then DURATION="${DURATION:-$SECONDS}"; fi
DURATION="${DURATION:-20}"
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

SIZES="${SIZES:-10000 100000 1000000}"
CLIENTS="${CLIENTS:-1 16}"
ROUNDS="${ROUNDS:-3}"
WARMUP="${WARMUP:-5}"
SETTLE="${SETTLE:-3}"
SIGNUP_FLOW="${SIGNUP_FLOW:-confirm}"
SERVER_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
BASE_URL="${SERVER_URL%/*}"
DB="${BENCH_DB:-usersync_bench_signup}"
BENCH_URL="$BASE_URL/$DB"

case "$SIGNUP_FLOW" in autoconfirm|confirm) ;; *) echo "SIGNUP_FLOW is autoconfirm or confirm" >&2; exit 2 ;; esac
for tool in pgbench psql; do
  command -v "$tool" >/dev/null || { echo "needs $tool (Debian: postgresql-client)" >&2; exit 2; }
done

# shellcheck source=scripts/bench/lib.sh
. scripts/bench/lib.sh
AUTH_URL="${AUTH_URL:-$(auth_admin_url "$BENCH_URL")}"
verdict() { awk -v r="$1" -v t="$2" 'BEGIN { print (r >= t ? "met" : "MISSED") }'; }

ensure_binary

WORK="$(mktemp -d)"
PGBENCH_PID=""
cleanup() {
  # Only what this script started: a pgbench still running (the script was interrupted).
  if [ -n "$PGBENCH_PID" ]; then kill "$PGBENCH_PID" 2>/dev/null || true; wait "$PGBENCH_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
  # KEEP_DB=1 leaves the database for a closer look (EXPLAIN ANALYZE, say).
  [ -n "${KEEP_DB:-}" ] || psql_admin -c "drop database if exists $DB with (force)" >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------------------------------------
# The database: the fixtures, usersync's schema, and GoTrue's other tables the flows write.
# ------------------------------------------------------------------------------------------------
find_postmaster
echo "== creating $DB"
create_bench_db
gotrue_tables_sql | psql_bench
# The trigger functions' own time per call, inside GoTrue's transaction (pg_stat_user_functions).
psql_admin -c "alter database $DB set track_functions = 'pl'" >/dev/null
psql "$AUTH_URL" -X -q -At -c "select 1 from users limit 0" >/dev/null \
  || { echo "cannot run SQL as supabase_auth_admin at $AUTH_URL" >&2; exit 1; }

# Seeds users (from+1 .. to]: the auth user, GoTrue's identity for it, and its profile (the
# default mapping's values, written by hand as run.sh does). Ids are md5('user' || g), so that a
# sign-in can name user g without a lookup of its own.
seed() {
  local from="$1" to="$2"
  psql_bench <<SQL
insert into auth.users (instance_id, id, aud, role, email, encrypted_password,
    email_confirmed_at, raw_app_meta_data, raw_user_meta_data, confirmation_token,
    recovery_token, email_change_token_new, email_change, email_change_token_current,
    reauthentication_token, phone_change, phone_change_token, is_sso_user, is_anonymous,
    last_sign_in_at, created_at, updated_at)
select '$NIL_UUID', md5('user' || g)::uuid, 'authenticated', 'authenticated',
       'user' || g || '@example.com',
       '\$2a\$10\$benchbenchbenchbenchbeuJ5pQe3FqQm0uJ8cZf6Y1aXJ0vJ7M1Hy',
       now() - (g || ' seconds')::interval,
       jsonb_build_object('provider', 'email', 'providers', jsonb_build_array('email'),
                          'role', case when g % 100 = 0 then 'admin' end),
       jsonb_build_object('sub', md5('user' || g)::uuid, 'email', 'user' || g || '@example.com',
                          'email_verified', true, 'phone_verified', false,
                          'full_name', 'User ' || g,
                          'avatar_url', 'https://example.com/a/' || g || '.png'),
       '', '', '', '', '', '', '', '', false, false,
       now() - (g || ' seconds')::interval, now() - (g || ' seconds')::interval,
       now() - (g || ' seconds')::interval
  from generate_series($from + 1, $to) g;
insert into auth.identities (provider_id, user_id, identity_data, provider, last_sign_in_at,
    created_at, updated_at)
select md5('user' || g)::uuid::text, md5('user' || g)::uuid,
       jsonb_build_object('sub', md5('user' || g)::uuid, 'email', 'user' || g || '@example.com',
                          'email_verified', true, 'phone_verified', false),
       'email', now() - (g || ' seconds')::interval, now() - (g || ' seconds')::interval,
       now() - (g || ' seconds')::interval
  from generate_series($from + 1, $to) g;
$BARE_INSERT;
vacuum analyze auth.users;
vacuum analyze auth.identities;
vacuum analyze public.users;
SQL
}

# ------------------------------------------------------------------------------------------------
# The pgbench scripts.
# ------------------------------------------------------------------------------------------------
signup_sql "$SIGNUP_FLOW" >"$WORK/signup.sql"

# POST /token?grant_type=password for a random existing user: FindUserByEmailAndAudience (pool,
# eager: factors, identities), then one transaction: the login audit row, IssueRefreshToken
# (refresh token algorithm 0, GoTrue's default: a session, a refresh token, UpdateLastSignInAt),
# AddClaimToSession, and GenerateAccessToken's FindSessionByID (eager: the AMR claims).
cat >"$WORK/signin.sql" <<SQL
\set g random(1, :size)
-- Values GoTrue makes in Go; the user's id is the seed's md5('user' || g).
SELECT 'user' || g || '@example.com' AS email, md5('user' || g)::uuid AS uid,
       gen_random_uuid() AS session_id, gen_random_uuid() AS audit_id,
       gen_random_uuid() AS amr_id, clock_timestamp() AS ts,
       substr(md5(random()::text), 1, 12) AS refresh_token,
       json_build_object('action', 'login', 'actor_id', md5('user' || g)::uuid,
                         'actor_name', 'User ' || g, 'actor_username', 'user' || g || '@example.com',
                         'actor_via_sso', false, 'log_type', 'account',
                         'traits', json_build_object('provider', 'email')) AS audit_payload
  FROM (SELECT (:g)::bigint AS g) v
\gset
SELECT $USER_COLS FROM users AS users WHERE instance_id = '$NIL_UUID' and LOWER(email) = :email and aud = 'authenticated' and is_sso_user = false LIMIT 1;
SELECT mfa_factors.created_at, mfa_factors.factor_type, mfa_factors.friendly_name, mfa_factors.id, mfa_factors.last_challenged_at, mfa_factors.last_webauthn_challenge_data, mfa_factors.phone, mfa_factors.secret, mfa_factors.status, mfa_factors.updated_at, mfa_factors.user_id, mfa_factors.web_authn_aaguid, mfa_factors.web_authn_credential FROM mfa_factors AS mfa_factors WHERE user_id = :uid;
SELECT $IDENTITY_COLS FROM identities AS identities WHERE user_id = :uid;
BEGIN;
INSERT INTO "audit_log_entries" ("created_at", "id", "instance_id", "ip_address", "payload") VALUES (:ts, :audit_id, '$NIL_UUID', '', :audit_payload);
INSERT INTO "sessions" ("aal", "created_at", "factor_id", "id", "ip", "not_after", "oauth_client_id", "refresh_token_counter", "refresh_token_hmac_key", "refreshed_at", "scopes", "tag", "updated_at", "user_agent", "user_id") VALUES ('aal1', :ts, NULL, :session_id, '127.0.0.1', NULL, NULL, NULL, NULL, NULL, NULL, NULL, :ts, 'pgbench', :uid);
INSERT INTO "refresh_tokens" ("created_at", "instance_id", "parent", "revoked", "session_id", "token", "updated_at", "user_id") VALUES (:ts, '$NIL_UUID', NULL, false, :session_id, :refresh_token, :ts, :uid) returning id;
UPDATE "users" AS users SET "last_sign_in_at" = :ts, "updated_at" = :ts WHERE users.id = :uid;
INSERT INTO mfa_amr_claims(id, session_id, created_at, updated_at, authentication_method) values (:amr_id, :session_id, :ts, :ts, 'password') ON CONFLICT ON CONSTRAINT mfa_amr_claims_session_id_authentication_method_pkey DO UPDATE SET updated_at = :ts;
SELECT sessions.aal, sessions.created_at, sessions.factor_id, sessions.id, sessions.ip, sessions.not_after, sessions.oauth_client_id, sessions.refresh_token_counter, sessions.refresh_token_hmac_key, sessions.refreshed_at, sessions.scopes, sessions.tag, sessions.updated_at, sessions.user_agent, sessions.user_id FROM sessions AS sessions WHERE id = :session_id LIMIT 1;
SELECT mfa_amr_claims.authentication_method, mfa_amr_claims.created_at, mfa_amr_claims.id, mfa_amr_claims.session_id, mfa_amr_claims.updated_at FROM mfa_amr_claims AS mfa_amr_claims WHERE session_id = :session_id;
END;
SQL

# ------------------------------------------------------------------------------------------------
# The setups and the measurement.
# ------------------------------------------------------------------------------------------------
# Back to the seeded state (no trigger is installed when it runs, so deleting the new users fires
# nothing): the users created since seeding, with their identities and one-time tokens (cascade),
# their profiles, every session and audit row, usersync's events and dead letters.
reset_state() {
  local size="$1" counts
  psql_bench <<SQL
delete from auth.users where created_at > '$SEED_END';
delete from public.users where created_at > '$SEED_END';
truncate auth.audit_log_entries, auth.sessions, auth.refresh_tokens, auth.mfa_amr_claims,
         auth.one_time_tokens, usersync.events, usersync.dead_letters;
vacuum analyze auth.users;
vacuum analyze auth.identities;
vacuum analyze public.users;
checkpoint;
SQL
  counts=$(psql_bench -At -F ' ' -c "select (select count(*) from auth.users),
      (select count(*) from public.users), (select count(*) from auth.identities)")
  read -r n_auth n_profiles n_identities <<<"$counts"
  for n in $n_auth $n_profiles $n_identities; do
    if [ $((n * 100)) -lt $((size * 99)) ] || [ $((n * 100)) -gt $((size * 101)) ]; then
      echo "the tables drifted from $size rows: auth.users $n_auth, public.users $n_profiles," \
           "auth.identities $n_identities" >&2
      exit 1
    fi
  done
}

# One pgbench run; sets TPS, and CPU (the server's CPU microseconds per transaction) when the
# server's processes can be read. Any failed transaction or aborted client is an error.
pgbench_tps() {
  local script="$1" clients="$2" seconds="$3" size="$4" out threads ticks_before ticks_after txns
  threads=$(( clients < $(nproc) ? clients : $(nproc) ))
  ticks_before=$(server_cpu_ticks supabase_auth_admin)
  pgbench -n -M prepared -c "$clients" -j "$threads" -T "$seconds" -D size="$size" \
    -f "$script" "$AUTH_URL" >"$WORK/pgbench.out" 2>&1 &
  PGBENCH_PID=$!
  if ! wait "$PGBENCH_PID"; then
    PGBENCH_PID=""
    echo "pgbench failed ($script, $clients clients):" >&2
    cat "$WORK/pgbench.out" >&2
    exit 1
  fi
  PGBENCH_PID=""
  out="$(cat "$WORK/pgbench.out")"
  if grep -q 'number of failed transactions: [1-9]' <<<"$out" || ! grep -q '^tps = ' <<<"$out"; then
    echo "pgbench reported errors ($script, $clients clients):" >&2
    echo "$out" >&2
    exit 1
  fi
  TPS=$(awk '/^tps = / { printf "%d", $3 }' <<<"$out")
  CPU=""
  if [ -n "$ticks_before" ]; then
    ticks_after=$(server_cpu_ticks supabase_auth_admin)
    txns=$(awk '/number of transactions actually processed/ { split($NF, n, "/"); print n[1] }' <<<"$out")
    CPU=$(cpu_per_txn "$ticks_before" "$ticks_after" "$txns")
  fi
}

# measure SETUP WORKLOAD CLIENTS SIZE: from the seeded state, with SETUP installed; sets TPS.
measure() {
  local setup="$1" workload="$2" clients="$3" size="$4" added profiles
  setup_trigger install "$setup"
  [ "$SETTLE" -gt 0 ] && pgbench_tps "$WORK/$workload.sql" "$clients" "$SETTLE" "$size"
  psql_bench -c "select pg_stat_reset()" >/dev/null
  pgbench_tps "$WORK/$workload.sql" "$clients" "$DURATION" "$size"
  # Read once the backends have exited (pgbench_tps waits for them), which flushes their counts.
  FN=$(psql_bench -At -c "select round(sum(total_time)::numeric * 1000 / sum(calls))
                            from pg_stat_user_functions
                           where funcname in ('sync_auth_user', 'handle_new_user')")
  setup_trigger uninstall "$setup"
  read -r added profiles <<<"$(psql_bench -At -F ' ' -c "select
      (select count(*) from auth.users where created_at > '$SEED_END'),
      (select count(*) from public.users where created_at > '$SEED_END')")"
  # Both profile-making setups must have made one profile per sign-up, at commit.
  if [ "$workload" = signup ] && [ "$setup" != none ] && [ "$profiles" != "$added" ]; then
    echo "$setup made $profiles profiles for $added sign-ups" >&2
    exit 1
  fi
  echo "   $size users, $clients clients, $workload, $setup: $TPS tps${CPU:+, $CPU µs server CPU each}${FN:+, trigger function $FN µs per call} (+$added users)"
  reset_state "$size"
}

# ------------------------------------------------------------------------------------------------
# The run.
# ------------------------------------------------------------------------------------------------
echo "== flow: sign-up $SIGNUP_FLOW; ${DURATION}s per measurement; clients: $CLIENTS; rounds: $ROUNDS"
ROWS=(); CPU_ROWS=()
seeded=0
for size in $SIZES; do
  [ "$size" -gt "$seeded" ] || { echo "SIZES must increase: $SIZES" >&2; exit 2; }
  echo "== seeding $size users with profiles and identities"
  seed "$seeded" "$size"
  seeded=$size
  SEED_END=$(psql_bench -At -c "select now()")
  reset_state "$size"
  if [ "$WARMUP" -gt 0 ]; then
    echo "   warm-up: ${WARMUP}s of sign-ups, no trigger, not counted"
    pgbench_tps "$WORK/signup.sql" "$(max $CLIENTS)" "$WARMUP" "$size"
    reset_state "$size"
  fi
  for clients in $CLIENTS; do
    up_none=(); up_recipe=(); up_usersync=(); in_none=(); in_usersync=()
    vs_none=(); vs_recipe=(); in_vs_none=()
    cpu_up_none=(); cpu_up_recipe=(); cpu_up_usersync=(); cpu_in_none=(); cpu_in_usersync=()
    cpu_vs_none=(); cpu_vs_recipe=(); cpu_in_vs_none=(); fn_recipe=(); fn_usersync=()
    for round in $(seq 1 "$ROUNDS"); do
      # Each round measures every setup once, in an order that turns by one each round, so that
      # no setup always runs first (or right after the same other one) at a size.
      order=(none recipe usersync)
      turn=$(( (round - 1) % 3 ))
      order=("${order[@]:$turn}" "${order[@]:0:$turn}")
      declare -A up=() signin=() cpu_up=() cpu_in=() fn_up=()
      for setup in "${order[@]}"; do
        measure "$setup" signup "$clients" "$size"; up[$setup]=$TPS; cpu_up[$setup]=$CPU
        [ "$setup" = none ] || fn_up[$setup]=$FN
        if [ "$setup" != recipe ]; then
          measure "$setup" signin "$clients" "$size"; signin[$setup]=$TPS; cpu_in[$setup]=$CPU
        fi
      done
      if [ -n "${cpu_up[none]}" ]; then
        # By CPU, a ratio is the inverse of the CPU per transaction: what the throughput ratio
        # is where the server's CPU decides it (16 clients on 2 cores), without the scheduling
        # noise of a shared machine.
        cpu_up_none+=("${cpu_up[none]}"); cpu_up_recipe+=("${cpu_up[recipe]}")
        cpu_up_usersync+=("${cpu_up[usersync]}")
        cpu_in_none+=("${cpu_in[none]}"); cpu_in_usersync+=("${cpu_in[usersync]}")
        cpu_vs_none+=("$(ratio "${cpu_up[none]}" "${cpu_up[usersync]}")")
        cpu_vs_recipe+=("$(ratio "${cpu_up[recipe]}" "${cpu_up[usersync]}")")
        cpu_in_vs_none+=("$(ratio "${cpu_in[none]}" "${cpu_in[usersync]}")")
      fi
      up_none+=("${up[none]}"); up_recipe+=("${up[recipe]}"); up_usersync+=("${up[usersync]}")
      in_none+=("${signin[none]}"); in_usersync+=("${signin[usersync]}")
      vs_none+=("$(ratio "${up[usersync]}" "${up[none]}")")
      vs_recipe+=("$(ratio "${up[usersync]}" "${up[recipe]}")")
      in_vs_none+=("$(ratio "${signin[usersync]}" "${signin[none]}")")
      by_cpu=""
      [ "${#cpu_vs_none[@]}" -gt 0 ] && by_cpu=" (by CPU ${cpu_vs_none[-1]}x, ${cpu_vs_recipe[-1]}x; ${cpu_in_vs_none[-1]}x)"
      echo "   round $round: usersync / none ${vs_none[-1]}x, / recipe ${vs_recipe[-1]}x; sign-in ${in_vs_none[-1]}x$by_cpu"
      fn_recipe+=("${fn_up[recipe]}"); fn_usersync+=("${fn_up[usersync]}")
      unset up signin cpu_up cpu_in fn_up
    done
    un=$(median "${up_none[@]}"); ur=$(median "${up_recipe[@]}"); uu=$(median "${up_usersync[@]}")
    inn=$(median "${in_none[@]}"); inu=$(median "${in_usersync[@]}")
    r_none=$(median "${vs_none[@]}"); r_recipe=$(median "${vs_recipe[@]}"); r_in=$(median "${in_vs_none[@]}")
    if [ "${#cpu_vs_none[@]}" -gt 0 ]; then
      c_none=$(median "${cpu_vs_none[@]}"); c_recipe=$(median "${cpu_vs_recipe[@]}")
      c_in=$(median "${cpu_in_vs_none[@]}")
      CPU_ROWS+=("| $size | $clients | $(median "${cpu_up_none[@]}") | $(median "${cpu_up_recipe[@]}") | $(median "${cpu_up_usersync[@]}") | ${c_none}x ($(verdict "$c_none" 0.85)) | ${c_recipe}x ($(verdict "$c_recipe" 0.90)) | $(median "${cpu_in_none[@]}") | $(median "${cpu_in_usersync[@]}") | ${c_in}x ($(verdict "$c_in" 0.95)) | $(spread "${cpu_up_none[@]}") / $(spread "${cpu_up_usersync[@]}") | $(median "${fn_recipe[@]}") / $(median "${fn_usersync[@]}") |")
    fi
    ROWS+=("| $size | $clients | $un | $ur | $uu | ${r_none}x ($(verdict "$r_none" 0.85)) | ${r_recipe}x ($(verdict "$r_recipe" 0.90)) | $inn | $inu | ${r_in}x ($(verdict "$r_in" 0.95)) | $(spread "${up_none[@]}") / $(spread "${up_usersync[@]}") |")
  done
done

echo
echo "Sign-up ($SIGNUP_FLOW) and sign-in, GoTrue's transactions by pgbench -M prepared as supabase_auth_admin, ${DURATION}s each, $ROUNDS rounds:"
echo "tps are the medians of the rounds; a ratio is the median of the rounds' ratios, each between setups measured minutes apart in one round;"
echo "spread is (slowest - fastest) / median of one setup's sign-up rounds (none / usersync)."
echo
echo "| users | clients | sign-up none | sign-up recipe | sign-up usersync | usersync / none (>= 0.85) | usersync / recipe (>= 0.90) | sign-in none | sign-in usersync | usersync / none (>= 0.95) | spread |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
printf '%s\n' "${ROWS[@]}"
if [ "${#CPU_ROWS[@]}" -gt 0 ]; then
  echo
  echo "The same measurements by the server's CPU: microseconds of CPU per transaction (every server process,"
  echo "exited backends included; pgbench's own not), medians of the rounds; a ratio is the median of the rounds'"
  echo "none (or recipe) CPU / usersync CPU, which is the throughput ratio wherever CPU decides throughput."
  echo
  echo "The last column is the trigger function's own time per call inside the transaction (pg_stat_user_functions):"
  echo "the recipe's handle_new_user() / usersync's sync_auth_user(), medians of the rounds."
  echo
  echo "| users | clients | sign-up CPU µs none | recipe | usersync | usersync / none by CPU (>= 0.85) | usersync / recipe by CPU (>= 0.90) | sign-in CPU µs none | usersync | usersync / none by CPU (>= 0.95) | spread | function µs per call (recipe / usersync) |"
  echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  printf '%s\n' "${CPU_ROWS[@]}"
fi
