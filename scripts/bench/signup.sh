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
#   ROUNDS    measurements of each setup, alternating; the best is compared (default 1)
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
# refresh_tokens, mfa_amr_claims, mfa_factors, one_time_tokens) are created here with the
# columns, keys and indexes GoTrue's migrations give them; the fixture has only users and
# identities.
set -euo pipefail
# SECONDS is bash's own clock: a value given in the environment arrives exported, and is read
# here before it has ticked.
if [[ "$(declare -p SECONDS 2>/dev/null)" == "declare -"*x* ]]; then DURATION="${DURATION:-$SECONDS}"; fi
DURATION="${DURATION:-20}"
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

SIZES="${SIZES:-10000 100000 1000000}"
CLIENTS="${CLIENTS:-1 16}"
ROUNDS="${ROUNDS:-1}"
WARMUP="${WARMUP:-5}"
SETTLE="${SETTLE:-3}"
SIGNUP_FLOW="${SIGNUP_FLOW:-confirm}"
SERVER_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
BASE_URL="${SERVER_URL%/*}"
DB="${BENCH_DB:-usersync_bench_signup}"
BENCH_URL="$BASE_URL/$DB"
# GoTrue's role: LOGIN, search_path = auth (tests/fixtures/supabase_auth.sql), trust on 127.0.0.1.
AUTH_URL="${AUTH_URL:-$(sed -E 's#^(postgres(ql)?://)([^@/]*@)?#\1supabase_auth_admin@#' <<<"$BENCH_URL")}"
NIL_UUID="00000000-0000-0000-0000-000000000000"

case "$SIGNUP_FLOW" in autoconfirm|confirm) ;; *) echo "SIGNUP_FLOW is autoconfirm or confirm" >&2; exit 2 ;; esac
for tool in pgbench psql; do
  command -v "$tool" >/dev/null || { echo "needs $tool (Debian: postgresql-client)" >&2; exit 2; }
done

# shellcheck source=scripts/bench/lib.sh
. scripts/bench/lib.sh
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
echo "== creating $DB"
psql_admin -c "drop database if exists $DB with (force)" -c "create database $DB"
psql_bench -f tests/fixtures/supabase_auth.sql -f tests/fixtures/public_users.sql >/dev/null
DATABASE_URL="$BENCH_URL" "$BIN" migrate >/dev/null
psql_bench <<'SQL'
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
USER_COLS='users.aud, users.banned_until, users.confirmation_sent_at, users.confirmation_token, users.confirmed_at, users.created_at, users.deleted_at, users.email, users.email_change, users.email_change_confirm_status, users.email_change_sent_at, users.email_change_token_current, users.email_change_token_new, users.email_confirmed_at, users.encrypted_password, users.id, users.instance_id, users.invited_at, users.is_anonymous, users.is_sso_user, users.last_sign_in_at, users.phone, users.phone_change, users.phone_change_sent_at, users.phone_change_token, users.phone_confirmed_at, users.raw_app_meta_data, users.raw_user_meta_data, users.reauthentication_sent_at, users.reauthentication_token, users.recovery_sent_at, users.recovery_token, users.role, users.updated_at'
IDENTITY_COLS='identities.created_at, identities.email, identities.id, identities.identity_data, identities.last_sign_in_at, identities.provider, identities.provider_id, identities.updated_at, identities.user_id'

# POST /signup {email, password, data: {full_name}}: Signup -> IsDuplicatedEmail (pool), then one
# transaction: signupNewUser (tx.Create, SetRole, Reload), FindIdentityByIdAndProvider,
# createNewIdentity, RemoveUnconfirmedIdentities (UpdateUserMetaData, FindProvidersByUser,
# UpdateAppMetaData), then the flow's tail (below).
cat >"$WORK/signup.sql" <<SQL
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
       json_build_object('action', '$([ "$SIGNUP_FLOW" = autoconfirm ] && echo user_signedup || echo user_confirmation_requested)',
                         'actor_id', u, 'actor_name', 'Signup ' || left(u::text, 8),
                         'actor_username', 'signup-' || u || '@example.com',
                         'actor_via_sso', false,
                         'log_type', '$([ "$SIGNUP_FLOW" = autoconfirm ] && echo team || echo user)',
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
if [ "$SIGNUP_FLOW" = autoconfirm ]; then
  # Mailer autoconfirm: user.Confirm (UpdateOnly confirmation_token, email_confirmed_at;
  # UpdateUserMetaData email_verified; ClearAllOneTimeTokensForUser).
  cat >>"$WORK/signup.sql" <<SQL
UPDATE "users" AS users SET "confirmation_token" = '', "email_confirmed_at" = :ts, "updated_at" = :ts WHERE users.id = :uid;
UPDATE "users" AS users SET "raw_user_meta_data" = :identity_data_verified, "updated_at" = :ts WHERE users.id = :uid;
DELETE FROM one_time_tokens AS one_time_tokens WHERE user_id = :uid;
END;
SQL
else
  # Confirmation mail: sendConfirmation (UpdateOnly confirmation_token, confirmation_sent_at;
  # CreateOneTimeToken: ClearOneTimeTokenForUser, Create). The mail itself is not replayed.
  cat >>"$WORK/signup.sql" <<SQL
UPDATE "users" AS users SET "confirmation_sent_at" = :ts, "confirmation_token" = :confirmation_token, "updated_at" = :ts WHERE users.id = :uid;
DELETE FROM one_time_tokens AS one_time_tokens WHERE token_type = 'confirmation_token' and user_id = :uid;
INSERT INTO "one_time_tokens" ("created_at", "id", "relates_to", "token_hash", "token_type", "updated_at", "user_id") VALUES (:ts, :ott_id, :email, :confirmation_token, 'confirmation_token', :ts, :uid);
END;
SQL
fi

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
# (b) The recipe of https://supabase.com/docs/guides/auth/managing-user-data, on this table.
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

install() {
  case "$1" in
    none) ;;
    recipe) psql_bench -c "$RECIPE_INSTALL" ;;
    usersync) DATABASE_URL="$BENCH_URL" "$BIN" triggers install >/dev/null ;;
  esac
}
uninstall() {
  case "$1" in
    none) ;;
    recipe) psql_bench -c "$RECIPE_UNINSTALL" ;;
    usersync) DATABASE_URL="$BENCH_URL" "$BIN" triggers uninstall >/dev/null ;;
  esac
}

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

# One pgbench run; sets TPS. Any failed transaction or aborted client is an error.
pgbench_tps() {
  local script="$1" clients="$2" seconds="$3" size="$4" out threads
  threads=$(( clients < $(nproc) ? clients : $(nproc) ))
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
}

# measure SETUP WORKLOAD CLIENTS SIZE: from the seeded state, with SETUP installed; sets TPS.
measure() {
  local setup="$1" workload="$2" clients="$3" size="$4" added profiles
  install "$setup"
  [ "$SETTLE" -gt 0 ] && pgbench_tps "$WORK/$workload.sql" "$clients" "$SETTLE" "$size"
  pgbench_tps "$WORK/$workload.sql" "$clients" "$DURATION" "$size"
  uninstall "$setup"
  read -r added profiles <<<"$(psql_bench -At -F ' ' -c "select
      (select count(*) from auth.users where created_at > '$SEED_END'),
      (select count(*) from public.users where created_at > '$SEED_END')")"
  # Both profile-making setups must have made one profile per sign-up, at commit.
  if [ "$workload" = signup ] && [ "$setup" != none ] && [ "$profiles" != "$added" ]; then
    echo "$setup made $profiles profiles for $added sign-ups" >&2
    exit 1
  fi
  echo "   $size users, $clients clients, $workload, $setup: $TPS tps (+$added users)"
  reset_state "$size"
}

# ------------------------------------------------------------------------------------------------
# The run.
# ------------------------------------------------------------------------------------------------
echo "== flow: sign-up $SIGNUP_FLOW; ${DURATION}s per measurement; clients: $CLIENTS; rounds: $ROUNDS"
ROWS=()
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
    for round in $(seq 1 "$ROUNDS"); do
      measure none signup "$clients" "$size"; up_none+=("$TPS")
      measure none signin "$clients" "$size"; in_none+=("$TPS")
      measure recipe signup "$clients" "$size"; up_recipe+=("$TPS")
      measure usersync signup "$clients" "$size"; up_usersync+=("$TPS")
      measure usersync signin "$clients" "$size"; in_usersync+=("$TPS")
    done
    un=$(max "${up_none[@]}"); ur=$(max "${up_recipe[@]}"); uu=$(max "${up_usersync[@]}")
    inn=$(max "${in_none[@]}"); inu=$(max "${in_usersync[@]}")
    r_none=$(ratio "$uu" "$un"); r_recipe=$(ratio "$uu" "$ur"); r_in=$(ratio "$inu" "$inn")
    ROWS+=("| $size | $clients | $un | $ur | $uu | ${r_none}x ($(verdict "$r_none" 0.85)) | ${r_recipe}x ($(verdict "$r_recipe" 0.90)) | $inn | $inu | ${r_in}x ($(verdict "$r_in" 0.95)) |")
  done
done

echo
echo "Sign-up ($SIGNUP_FLOW) and sign-in, GoTrue's transactions by pgbench -M prepared as supabase_auth_admin, ${DURATION}s each, best of $ROUNDS (tps):"
echo
echo "| users | clients | sign-up none | sign-up recipe | sign-up usersync | usersync / none (>= 0.85) | usersync / recipe (>= 0.90) | sign-in none | sign-in usersync | usersync / none (>= 0.95) |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
printf '%s\n' "${ROWS[@]}"
