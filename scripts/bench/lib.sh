# What the benchmark scripts share; sourced, never run. The caller sets SERVER_URL and
# BENCH_URL before sourcing.

psql_admin() { psql "$SERVER_URL" -X -q -v ON_ERROR_STOP=1 "$@"; }
psql_bench() { psql "$BENCH_URL" -X -q -v ON_ERROR_STOP=1 "$@"; }
now_ms() { date +%s%3N; }
min() { printf '%s\n' "$@" | sort -n | head -1; }
max() { printf '%s\n' "$@" | sort -n | tail -1; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

# Every live auth user's profile under the default mapping, written by hand in one statement:
# what a person would type into psql, the baseline usersync's own writes are compared with.
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

# The release binary: BIN when given, else built here.
ensure_binary() {
  if [ -z "${BIN:-}" ]; then
    echo "== building the release binary"
    cargo build --release --quiet
    BIN=target/release/usersync
  fi
  [ -x "$BIN" ] || { echo "no usersync binary at $BIN" >&2; exit 2; }
}

# Auth users (from+1 .. to] as Supabase Auth writes an email sign-up, one in a hundred an admin;
# $1 is the id of user g (an SQL expression).
auth_users_sql() {
  local id="$1" from="$2" to="$3"
  cat <<SQL
insert into auth.users (instance_id, id, aud, role, email, encrypted_password,
    email_confirmed_at, raw_app_meta_data, raw_user_meta_data, confirmation_token,
    recovery_token, email_change_token_new, email_change, email_change_token_current,
    reauthentication_token, phone_change, phone_change_token, is_sso_user, is_anonymous,
    created_at, updated_at)
select '00000000-0000-0000-0000-000000000000', $id, 'authenticated',
       'authenticated', 'user' || g || '@example.com', '', now(),
       jsonb_build_object('provider', 'email', 'providers', jsonb_build_array('email'),
                          'role', case when g % 100 = 0 then 'admin' end),
       jsonb_build_object('full_name', 'User ' || g, 'avatar_url',
                          'https://example.com/a/' || g || '.png'),
       '', '', '', '', '', '', '', '', false, false,
       now() - (g || ' seconds')::interval, now()
  from generate_series($from + 1, $to) g;
SQL
}
