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
