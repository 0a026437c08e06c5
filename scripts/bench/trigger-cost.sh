#!/usr/bin/env bash
# What the sign-up trigger itself costs, apart from the rest of a sign-up and from a shared
# machine's noise (design.md, "Performance targets"; signup.sh measures the whole transaction).
#
# One backend, as supabase_auth_admin (the role GoTrue connects as), inserts a user into
# auth.users and commits, N times in a loop (a DO block with COMMIT: each commit fires the
# deferred triggers, as GoTrue's own commit does), with `synchronous_commit = off` so that no
# fsync is timed. The time per commit is taken for the three setups of signup.sh (no trigger, the
# Supabase docs' recipe, usersync's triggers), in rounds whose order turns by one each round, on
# one database of SIZE users with profiles. One backend on one core is timed by its own clock, so
# pgbench's scheduling and the other clients' waits are not in the figure; what is left of the
# noise shows in the spread column.
#
# Usage:  scripts/bench/trigger-cost.sh         (DATABASE_URL names the server; a superuser)
#         SIZE=1000000 N=5000 ROUNDS=5 scripts/bench/trigger-cost.sh
#
#   SIZE    existing users, each with a profile (default 100000)
#   N       sign-ups timed per measurement, after 200 untimed ones (default 3000)
#   ROUNDS  rounds, each measuring every setup once (default 5)
#   BIN     the usersync binary (default: target/release/usersync, built here)
#
# It creates (and at the end drops) the database BENCH_DB (usersync_bench_trigger).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

SIZE="${SIZE:-100000}"
N="${N:-3000}"
ROUNDS="${ROUNDS:-5}"
SERVER_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
BASE_URL="${SERVER_URL%/*}"
DB="${BENCH_DB:-usersync_bench_trigger}"
BENCH_URL="$BASE_URL/$DB"
SETUPS=(none recipe usersync)

command -v psql >/dev/null || { echo "needs psql (Debian: postgresql-client)" >&2; exit 2; }
# shellcheck source=scripts/bench/lib.sh
. scripts/bench/lib.sh
AUTH_URL="$(auth_admin_url "$BENCH_URL")"
ensure_binary

cleanup() {
  [ -n "${KEEP_DB:-}" ] || psql_admin -c "drop database if exists $DB with (force)" >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== creating $DB with $SIZE users and their profiles"
create_bench_db
auth_users_sql "md5('user' || g)::uuid" 0 "$SIZE" | psql_bench
psql_bench -c "$BARE_INSERT" -c "vacuum analyze auth.users" -c "vacuum analyze public.users"

# The loop: GoTrue's sign-up insert (the columns its ORM writes that the mapping or the triggers
# read: an empty role, provider-only app metadata, the name in user metadata), then a commit.
# Prints the microseconds per insert and commit of the last N.
loop_sql() {
  cat <<SQL
set synchronous_commit = off;
do \$loop\$
declare
    v_started timestamptz;
    v_id uuid;
begin
    for i in 1 .. $N + 200 loop
        if i = 201 then v_started := clock_timestamp(); end if;
        v_id := gen_random_uuid();
        insert into auth.users (instance_id, id, aud, role, email, encrypted_password,
            raw_app_meta_data, raw_user_meta_data, confirmation_token, recovery_token,
            email_change_token_new, email_change, email_change_token_current,
            reauthentication_token, phone_change, phone_change_token, is_sso_user, is_anonymous,
            created_at, updated_at)
        values ('$NIL_UUID', v_id, 'authenticated', '', 'loop-' || v_id || '@example.com', '',
            jsonb_build_object('provider', 'email', 'providers', jsonb_build_array('email')),
            jsonb_build_object('full_name', 'Loop ' || left(v_id::text, 8)),
            '', '', '', '', '', '', '', '', false, false, now(), now());
        commit;
    end loop;
    raise notice 'per_commit_us %',
        round(extract(epoch from clock_timestamp() - v_started) * 1000000 / $N);
end
\$loop\$;
SQL
}

# Back to SIZE users and profiles, the audit log and dead letters empty.
reset_state() {
  psql_bench -c "delete from auth.users where email like 'loop-%'" \
    -c "delete from public.users where email like 'loop-%'" \
    -c "truncate usersync.events, usersync.dead_letters" \
    -c "vacuum analyze auth.users" -c "vacuum analyze public.users" >/dev/null
}

declare -A times=()
for round in $(seq 1 "$ROUNDS"); do
  turn=$(( (round - 1) % 3 ))
  order=("${SETUPS[@]:$turn}" "${SETUPS[@]:0:$turn}")
  line="   round $round:"
  for setup in "${order[@]}"; do
    setup_trigger install "$setup"
    us=$(loop_sql | psql "$AUTH_URL" -X -q -v ON_ERROR_STOP=1 2>&1 | awk '/per_commit_us/ { print $NF }')
    setup_trigger uninstall "$setup"
    [ -n "$us" ] || { echo "the loop printed no time ($setup)" >&2; exit 1; }
    read -r added profiles <<<"$(psql_bench -At -F ' ' -c "select
        (select count(*) from auth.users where email like 'loop-%'),
        (select count(*) from public.users where email like 'loop-%')")"
    if [ "$setup" != none ] && [ "$profiles" != "$added" ]; then
      echo "$setup made $profiles profiles for $added sign-ups" >&2
      exit 1
    fi
    times[$setup]="${times[$setup]:-} $us"
    line="$line $setup $us µs,"
    reset_state
  done
  echo "${line%,}"
done

# shellcheck disable=SC2086 # the lists are words on purpose
none=$(median ${times[none]})
echo
echo "One backend, $N sign-up inserts and commits per measurement, $SIZE users with profiles, $ROUNDS rounds (medians):"
echo
echo "| setup | µs per sign-up (insert + commit) | the trigger's own cost (over none) | spread |"
echo "|---|---:|---:|---:|"
for setup in "${SETUPS[@]}"; do
  # shellcheck disable=SC2086
  m=$(median ${times[$setup]})
  # shellcheck disable=SC2086
  echo "| $setup | $m | $(awk -v m="$m" -v n="$none" 'BEGIN { printf "%d µs", m - n }') | $(spread ${times[$setup]}) |"
done
