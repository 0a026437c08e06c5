# What the benchmark scripts share; sourced, never run. The caller sets SERVER_URL and
# BENCH_URL before sourcing.

psql_admin() { psql "$SERVER_URL" -X -q -v ON_ERROR_STOP=1 "$@"; }
psql_bench() { psql "$BENCH_URL" -X -q -v ON_ERROR_STOP=1 "$@"; }
now_ms() { date +%s%3N; }
min() { printf '%s\n' "$@" | sort -n | head -1; }
max() { printf '%s\n' "$@" | sort -n | tail -1; }
# The middle value (the mean of the two middle ones for an even count), to two decimals when
# the values have decimals.
median() {
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
    m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    if (m == int(m) && index(v[1], ".") == 0) printf "%d", m; else printf "%.2f", m }'
}
# (largest - smallest) / median, as a percentage: how far one setup's rounds disagree.
spread() {
  local m; m=$(median "$@")
  printf '%s\n' "$@" | sort -g | awk -v m="$m" 'NR == 1 { lo = $1 } { hi = $1 }
    END { printf "%d%%", (hi - lo) * 100 / m }'
}
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

# The database server's own CPU time, for a figure that scheduling noise moves far less than
# throughput: on a shared machine a measurement's tps swings with what else runs, while the CPU
# the server spends per transaction stays close to what the work costs. Needs the server on this
# machine and its processes readable (the postmaster's pid from its data directory); otherwise
# SERVER_CPU stays empty and the figures are left out.
find_postmaster() {
  local dir pid
  dir=$(psql_admin -At -c "show data_directory" 2>/dev/null) || return 0
  pid=$(head -1 "$dir/postmaster.pid" 2>/dev/null) || return 0
  [ -r "/proc/$pid/stat" ] && POSTMASTER_PID=$pid
  return 0
}
# Clock ticks the server has used so far: its exited backends (the postmaster's reaped children)
# and every process still running. Waits first for the backends of ROLE (a pgbench that just
# ended) to exit, so that their time is counted.
server_cpu_ticks() {
  local role="$1" ticks pid tries=0
  [ -n "${POSTMASTER_PID:-}" ] || return 0
  while pgrep -P "$POSTMASTER_PID" -f "^postgres: $role " >/dev/null && [ $tries -lt 100 ]; do
    sleep 0.05; tries=$((tries + 1))
  done
  ticks=$(awk '{ print $16 + $17 + $14 + $15 }' "/proc/$POSTMASTER_PID/stat")
  for pid in $(pgrep -P "$POSTMASTER_PID"); do
    ticks=$((ticks + $(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null || echo 0)))
  done
  echo "$ticks"
}
# Microseconds of server CPU per transaction, from two server_cpu_ticks readings.
cpu_per_txn() {
  awk -v a="$1" -v b="$2" -v n="$3" -v hz="$(getconf CLK_TCK)" \
    'BEGIN { printf "%d", (b - a) * 1000000 / hz / n }'
}

# The bench database DB, new: Supabase Auth's tables as the fixture has them, the default
# mapping's profile table, and usersync's schema (`migrate`, which also builds usersync's index on
# the target's lower(email)).
create_bench_db() {
  psql_admin -c "drop database if exists $DB with (force)" -c "create database $DB"
  psql_bench -f tests/fixtures/supabase_auth.sql -f tests/fixtures/public_users.sql >/dev/null
  DATABASE_URL="$BENCH_URL" "$BIN" migrate >/dev/null
}

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

# ------------------------------------------------------------------------------------------------
# Supabase Auth (GoTrue) replayed by pgbench as supabase_auth_admin: what signup.sh measures, and
# the sign-up stream that the soak's held load (benches/soak.rs) runs beside its HTTP load. What
# is replayed, and how: signup.sh's header.
# ------------------------------------------------------------------------------------------------
NIL_UUID="00000000-0000-0000-0000-000000000000"

# The URL of GoTrue's role on the database of URL $1: supabase_auth_admin (LOGIN, search_path =
# auth, tests/fixtures/supabase_auth.sql), trust on 127.0.0.1.
auth_admin_url() { sed -E 's#^(postgres(ql)?://)([^@/]*@)?#\1supabase_auth_admin@#' <<<"$1"; }

# GoTrue's other auth tables that its sign-up and sign-in write (the fixture has only users and
# identities), owned by supabase_auth_admin; run as a superuser.
gotrue_tables_sql() {
  cat <<'SQL'
-- As GoTrue's migrations leave them (00_init_auth_schema, 20210927181326, 20220614074223,
-- 20220811173540, 20221003041349, 20221003041400, 20221011041400, 20221020193600,
-- 20221021073300, 20221114143122, 20221114143410, 20230411005111, 20230508135423,
-- 20231027141322, 20231114161723, 20240427152123, 20250904133000, 20251007112900,
-- 20251111201300). mfa_factors keeps only the columns pop reads, with text for its enums, and
-- sessions has no foreign key to oauth_clients: both stay empty.
create type auth.aal_level as enum ('aal1', 'aal2', 'aal3');
create type auth.one_time_token_type as enum ('confirmation_token', 'reauthentication_token',
  'recovery_token', 'email_change_token_new', 'email_change_token_current', 'phone_change_token');

create table auth.audit_log_entries (
  instance_id uuid null,
  id          uuid not null,
  payload     json null,
  created_at  timestamptz null,
  ip_address  varchar(64) not null default '',
  constraint audit_log_entries_pkey primary key (id)
);
create index audit_logs_instance_id_idx on auth.audit_log_entries using btree (instance_id);

create table auth.sessions (
  id                     uuid not null,
  user_id                uuid not null,
  created_at             timestamptz null,
  updated_at             timestamptz null,
  factor_id              uuid null,
  aal                    auth.aal_level null,
  not_after              timestamptz null,
  refreshed_at           timestamp null,
  user_agent             text null,
  ip                     inet null,
  tag                    text null,
  oauth_client_id        uuid null,
  refresh_token_hmac_key text null,
  refresh_token_counter  bigint null,
  scopes                 text null,
  constraint sessions_pkey primary key (id),
  constraint sessions_user_id_fkey foreign key (user_id) references auth.users (id) on delete cascade,
  constraint sessions_scopes_length check (char_length(scopes) <= 4096)
);
create index user_id_created_at_idx on auth.sessions (user_id, created_at);
create index sessions_user_id_idx on auth.sessions (user_id);
create index sessions_not_after_idx on auth.sessions (not_after desc);
create index sessions_oauth_client_id_idx on auth.sessions (oauth_client_id);

create table auth.refresh_tokens (
  instance_id uuid null,
  id          bigserial not null,
  "token"     varchar(255) null,
  user_id     varchar(255) null,
  revoked     bool null,
  created_at  timestamptz null,
  updated_at  timestamptz null,
  parent      varchar(255) null,
  session_id  uuid null,
  constraint refresh_tokens_pkey primary key (id),
  constraint refresh_tokens_token_unique unique ("token"),
  constraint refresh_tokens_session_id_fkey foreign key (session_id) references auth.sessions (id) on delete cascade
);
create index refresh_tokens_instance_id_idx on auth.refresh_tokens using btree (instance_id);
create index refresh_tokens_instance_id_user_id_idx on auth.refresh_tokens using btree (instance_id, user_id);
create index refresh_tokens_parent_idx on auth.refresh_tokens using btree (parent);
create index refresh_tokens_session_id_revoked_idx on auth.refresh_tokens (session_id, revoked);
create index refresh_tokens_updated_at_idx on auth.refresh_tokens (updated_at desc);

create table auth.mfa_amr_claims (
  session_id            uuid not null,
  created_at            timestamptz not null,
  updated_at            timestamptz not null,
  authentication_method text not null,
  id                    uuid not null,
  constraint amr_id_pk primary key (id),
  constraint mfa_amr_claims_session_id_authentication_method_pkey unique (session_id, authentication_method),
  constraint mfa_amr_claims_session_id_fkey foreign key (session_id) references auth.sessions (id) on delete cascade
);

create table auth.mfa_factors (
  id                           uuid not null,
  user_id                      uuid not null,
  friendly_name                text null,
  factor_type                  text not null,
  status                       text not null,
  created_at                   timestamptz not null,
  updated_at                   timestamptz not null,
  secret                       text null,
  phone                        text null,
  last_challenged_at           timestamptz null,
  web_authn_credential         jsonb null,
  web_authn_aaguid             uuid null,
  last_webauthn_challenge_data jsonb null,
  constraint mfa_factors_pkey primary key (id),
  constraint mfa_factors_user_id_fkey foreign key (user_id) references auth.users (id) on delete cascade
);
create index factor_id_created_at_idx on auth.mfa_factors (user_id, created_at);

create table auth.one_time_tokens (
  id         uuid primary key,
  user_id    uuid not null references auth.users on delete cascade,
  token_type auth.one_time_token_type not null,
  token_hash text not null,
  relates_to text not null,
  created_at timestamp without time zone not null default now(),
  updated_at timestamp without time zone not null default now(),
  check (char_length(token_hash) > 0)
);
create index one_time_tokens_token_hash_hash_idx on auth.one_time_tokens using hash (token_hash);
create index one_time_tokens_relates_to_hash_idx on auth.one_time_tokens using hash (relates_to);
create unique index one_time_tokens_user_id_token_type_key on auth.one_time_tokens (user_id, token_type);

do $$
declare t text;
begin
  foreach t in array array['audit_log_entries', 'sessions', 'refresh_tokens', 'mfa_amr_claims',
                           'mfa_factors', 'one_time_tokens'] loop
    execute format('alter table auth.%I owner to supabase_auth_admin', t);
  end loop;
end $$;
alter type auth.aal_level owner to supabase_auth_admin;
alter type auth.one_time_token_type owner to supabase_auth_admin;
SQL
}

USER_COLS='users.aud, users.banned_until, users.confirmation_sent_at, users.confirmation_token, users.confirmed_at, users.created_at, users.deleted_at, users.email, users.email_change, users.email_change_confirm_status, users.email_change_sent_at, users.email_change_token_current, users.email_change_token_new, users.email_confirmed_at, users.encrypted_password, users.id, users.instance_id, users.invited_at, users.is_anonymous, users.is_sso_user, users.last_sign_in_at, users.phone, users.phone_change, users.phone_change_sent_at, users.phone_change_token, users.phone_confirmed_at, users.raw_app_meta_data, users.raw_user_meta_data, users.reauthentication_sent_at, users.reauthentication_token, users.recovery_sent_at, users.recovery_token, users.role, users.updated_at'
IDENTITY_COLS='identities.created_at, identities.email, identities.id, identities.identity_data, identities.last_sign_in_at, identities.provider, identities.provider_id, identities.updated_at, identities.user_id'

# POST /signup {email, password, data: {full_name}}: Signup -> IsDuplicatedEmail (pool), then one
# transaction: signupNewUser (tx.Create, SetRole, Reload), FindIdentityByIdAndProvider,
# createNewIdentity, RemoveUnconfirmedIdentities (UpdateUserMetaData, FindProvidersByUser,
# UpdateAppMetaData), then the flow's tail (below). Prints the pgbench script; $1 is the tail:
# confirm or autoconfirm (signup.sh's SIGNUP_FLOW).
signup_sql() {
  local flow="$1"
  cat <<SQL
-- Values GoTrue makes in Go: uuid.NewV4() ids, time.Now(), the JSON it marshals.
SELECT u AS uid, gen_random_uuid() AS identity_id, gen_random_uuid() AS audit_id,
       gen_random_uuid() AS ott_id, clock_timestamp() AS ts,
       'signup-' || u || '@example.com' AS email,
       encode(sha224(convert_to(u::text, 'UTF8')), 'hex') AS confirmation_token,
       '\$2a\$10\$benchbenchbenchbenchbeuJ5pQe3FqQm0uJ8cZf6Y1aXJ0vJ7M1Hy' AS password_hash,
       jsonb_build_object('provider', 'email', 'providers', jsonb_build_array('email')) AS app_meta,
       jsonb_build_object('full_name', 'Signup ' || left(u::text, 8)) AS user_meta,
       jsonb_build_object('email', 'signup-' || u || '@example.com', 'email_verified', false,
                          'full_name', 'Signup ' || left(u::text, 8), 'phone_verified', false,
                          'sub', u) AS identity_data,
       jsonb_build_object('email', 'signup-' || u || '@example.com', 'email_verified', true,
                          'full_name', 'Signup ' || left(u::text, 8), 'phone_verified', false,
                          'sub', u) AS identity_data_verified,
       json_build_object('action', '$([ "$flow" = autoconfirm ] && echo user_signedup || echo user_confirmation_requested)',
                         'actor_id', u, 'actor_name', 'Signup ' || left(u::text, 8),
                         'actor_username', 'signup-' || u || '@example.com',
                         'actor_via_sso', false,
                         'log_type', '$([ "$flow" = autoconfirm ] && echo team || echo user)',
                         'traits', json_build_object('provider', 'email')) AS audit_payload
  FROM (SELECT gen_random_uuid() AS u) g
\gset
-- IsDuplicatedEmail, on the pool: identities by email, then the user by email (none found).
SELECT $IDENTITY_COLS FROM identities AS identities WHERE email = :email;
SELECT $USER_COLS FROM users AS users WHERE instance_id = '$NIL_UUID' and LOWER(email) = :email and aud = 'authenticated' and is_sso_user = false LIMIT 1;
BEGIN;
INSERT INTO "users" ("aud", "banned_until", "confirmation_sent_at", "confirmation_token", "created_at", "deleted_at", "email", "email_change", "email_change_confirm_status", "email_change_sent_at", "email_change_token_current", "email_change_token_new", "email_confirmed_at", "encrypted_password", "id", "instance_id", "invited_at", "is_anonymous", "is_sso_user", "last_sign_in_at", "phone", "phone_change", "phone_change_sent_at", "phone_change_token", "phone_confirmed_at", "raw_app_meta_data", "raw_user_meta_data", "reauthentication_sent_at", "reauthentication_token", "recovery_sent_at", "recovery_token", "role", "updated_at") VALUES ('authenticated', NULL, NULL, '', :ts, NULL, :email, '', 0, NULL, '', '', NULL, :password_hash, :uid, '$NIL_UUID', NULL, false, false, NULL, NULL, '', NULL, '', NULL, :app_meta, :user_meta, NULL, '', NULL, '', '', :ts);
UPDATE "users" AS users SET "role" = 'authenticated', "updated_at" = :ts WHERE users.id = :uid;
SELECT $USER_COLS FROM users AS users WHERE users.id = :uid LIMIT 1;
SELECT $IDENTITY_COLS FROM identities AS identities WHERE provider_id = :uid AND provider = 'email' LIMIT 1;
INSERT INTO "identities" ("created_at", "id", "identity_data", "last_sign_in_at", "provider", "provider_id", "updated_at", "user_id") VALUES (:ts, :identity_id, :identity_data, :ts, 'email', :uid, :ts, :uid);
UPDATE "users" AS users SET "raw_user_meta_data" = :identity_data, "updated_at" = :ts WHERE users.id = :uid;
SELECT provider FROM identities AS identities WHERE user_id = :uid ORDER BY created_at asc;
UPDATE "users" AS users SET "raw_app_meta_data" = :app_meta, "updated_at" = :ts WHERE users.id = :uid;
INSERT INTO "audit_log_entries" ("created_at", "id", "instance_id", "ip_address", "payload") VALUES (:ts, :audit_id, '$NIL_UUID', '', :audit_payload);
SQL
  if [ "$flow" = autoconfirm ]; then
    # Mailer autoconfirm: user.Confirm (UpdateOnly confirmation_token, email_confirmed_at;
    # UpdateUserMetaData email_verified; ClearAllOneTimeTokensForUser).
    cat <<SQL
UPDATE "users" AS users SET "confirmation_token" = '', "email_confirmed_at" = :ts, "updated_at" = :ts WHERE users.id = :uid;
UPDATE "users" AS users SET "raw_user_meta_data" = :identity_data_verified, "updated_at" = :ts WHERE users.id = :uid;
DELETE FROM one_time_tokens AS one_time_tokens WHERE user_id = :uid;
END;
SQL
  else
    # Confirmation mail: sendConfirmation (UpdateOnly confirmation_token, confirmation_sent_at;
    # CreateOneTimeToken: ClearOneTimeTokenForUser, Create). The mail itself is not replayed.
    cat <<SQL
UPDATE "users" AS users SET "confirmation_sent_at" = :ts, "confirmation_token" = :confirmation_token, "updated_at" = :ts WHERE users.id = :uid;
DELETE FROM one_time_tokens AS one_time_tokens WHERE token_type = 'confirmation_token' and user_id = :uid;
INSERT INTO "one_time_tokens" ("created_at", "id", "relates_to", "token_hash", "token_type", "updated_at", "user_id") VALUES (:ts, :ott_id, :email, :confirmation_token, 'confirmation_token', :ts, :uid);
END;
SQL
  fi
}

# The three setups a sign-up is measured with (signup.sh, trigger-cost.sh): none, the Supabase
# docs' recipe (https://supabase.com/docs/guides/auth/managing-user-data, on this table) and
# usersync's triggers (BIN's `triggers install`). Installed on BENCH_URL's database.
RECIPE_INSTALL="create function public.handle_new_user()
returns trigger
language plpgsql
security definer set search_path = ''
as \$\$
begin
  insert into public.users (id, email, full_name)
  values (new.id, new.email, new.raw_user_meta_data ->> 'full_name');
  return new;
end;
\$\$;
create trigger on_auth_user_created
  after insert on auth.users
  for each row execute procedure public.handle_new_user();"
RECIPE_UNINSTALL="drop trigger if exists on_auth_user_created on auth.users;
drop function if exists public.handle_new_user();"

# setup_trigger install|uninstall SETUP
setup_trigger() {
  local verb="$1" setup="$2" recipe_sql
  case "$setup" in
    none) ;;
    recipe)
      if [ "$verb" = install ]; then recipe_sql=$RECIPE_INSTALL; else recipe_sql=$RECIPE_UNINSTALL; fi
      psql_bench -c "$recipe_sql" ;;
    usersync) DATABASE_URL="$BENCH_URL" "$BIN" triggers "$verb" >/dev/null ;;
  esac
}
