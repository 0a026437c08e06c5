//! The trigger path: functions in the `usersync` schema and triggers on `auth.users`, rendered
//! from the mapping by the same `Renderer` that renders the service's statements, so the two
//! paths cannot map a user differently.
//!
//! Supabase Auth writes a new user in several statements of one transaction (insert with an
//! empty role, then the role, then app metadata, then the identity). The insert and update
//! triggers are therefore deferred constraint triggers: they run at commit and re-read the row,
//! seeing its final state. Every error is caught and becomes a dead letter plus a `NOTIFY`: a
//! broken target never stops a sign-up or a sign-in.
//!
//! An update queues the trigger only when a value the mapping reads changed: its `WHEN` clause
//! compares those values (and `deleted_at`), rendered from the mapping into the trigger itself.
//! So the `updated_at` and `last_sign_in_at` bump of every sign-in costs a few comparisons and
//! no function call. (A SQL function in the clause, inlined by Postgres, would have to be parsed
//! again for every statement that updates `auth.users`: a quarter more per sign-in.) The
//! trigger's name carries a digest of its clause, so that a new mapping installs a new trigger
//! and drops the old one, and an unchanged one leaves it alone.
//!
//! Only the owner of `auth.users` (Supabase Auth's role) may drop triggers on it. Hosted
//! Supabase's `postgres` may create them, and drop them only where the platform grants it
//! (supautils). `uninstall` without that right neutralises the functions (the triggers stay,
//! doing nothing) and says what the owner can run to drop them; `install` of a mapping that
//! changes the update trigger's clause says the same about the old trigger.

use crate::compiler::bind::BoundMapping;
use crate::compiler::render::email_index;
use crate::compiler::render::{Origin, Renderer};
use crate::vocabulary::policy::DeletedPolicy;
use crate::vocabulary::{AuditAction, DriftKind, SyncPath};

/// The channel the trigger notifies after recording a dead letter; the payload is the dead
/// letter's id (never user data).
pub const DEAD_LETTER_CHANNEL: &str = "usersync_dead_letters";

/// The insert and delete triggers usersync owns on `auth.users`. The update trigger's name is
/// `UPDATE_TRIGGER` and a digest of its `WHEN` clause (see `update_trigger_name`).
const TRIGGERS: [(&str, &str); 2] = [
    ("usersync_user_inserted", "insert"),
    ("usersync_user_deleted", "delete"),
];

/// The update trigger's name, before its digest.
const UPDATE_TRIGGER: &str = "usersync_user_updated";

/// Every trigger on `auth.users` that is usersync's, as a `pg_trigger` condition.
pub const OWN_TRIGGERS: &str = "tgrelid = 'auth.users'::regclass and not tgisinternal \
     and (tgname in ('usersync_user_inserted', 'usersync_user_deleted') \
          or tgname like 'usersync\\_user\\_updated%')";

/// The functions usersync owns, with their signatures (what `drop function` needs). The last
/// is the `WHEN` function of earlier versions, dropped wherever it is left.
const FUNCTIONS: [&str; 3] = [
    "usersync.sync_auth_user()",
    "usersync.record_dead_letter(uuid, text, text, text)",
    "usersync.auth_user_changed(auth.users, auth.users)",
];

/// The drift view (`Renderer::drift_view`), installed and removed with the functions.
pub const VIEW: &str = "usersync.user_drift";
/// The function whose rows the drift view shows.
const VIEW_ROWS: &str = "usersync.user_drift_rows()";

/// The update trigger's name for `clause`: `usersync_user_updated_` and 12 hex digits of its
/// SHA-256.
fn update_trigger_name(clause: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(clause.as_bytes());
    let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("{UPDATE_TRIGGER}_{hex}")
}

/// How the trigger path names itself in the audit log: the role that wrote `auth.users`
/// (`supabase_auth_admin` for Supabase Auth, `postgres` for the dashboard's SQL editor).
/// `path` is `SyncPath::Trigger` as a SQL literal.
fn trigger_origin(path: &str) -> Origin<'_> {
    Origin {
        user_id: "v_user_id",
        caller: "'db:' || session_user",
        path,
        witnessed_delete: "tg_op = 'DELETE'",
    }
}

/// The SQL that installs the trigger path for `bound` under `policy`: one transaction,
/// idempotent, shippable as a Supabase migration (what `usersync triggers show` prints).
pub fn install_sql(bound: &BoundMapping, policy: DeletedPolicy) -> String {
    let renderer = Renderer::new(&bound.mapping, &bound.shape);
    let path = SyncPath::Trigger.sql();
    let origin = trigger_origin(&path);
    let create = renderer.create_one(origin);
    let sync = renderer.sync_statement(origin);
    let deleted = renderer.deleted_statement(origin, policy);
    let changed = renderer.changed_predicate("old", "new");
    let update_trigger = update_trigger_name(&changed);
    let tag = dollar_tag([
        create.as_str(),
        sync.as_str(),
        deleted.as_str(),
        changed.as_str(),
    ]);
    let indent = |sql: &str, by: usize| sql.replace('\n', &format!("\n{}", " ".repeat(by)));
    format!(
        "-- usersync: the trigger path, auth.users -> {target}.
--
-- Rendered by `usersync triggers show` from the mapping, against the live table: the casts
-- follow the target's column types, so render again after changing the table or the mapping.
-- Ship it as a Supabase migration, or run `usersync triggers install`. Running it again changes
-- nothing. Needs the usersync schema (`usersync migrate`). Deleted users: policy `{policy}`.
--
-- Why it is shaped this way: Supabase Auth writes a user in several statements of one
-- transaction, so the triggers are deferred to commit and re-read the final row; updates are
-- queued only when a mapped value changed (not on every sign-in); and every error is caught and
-- recorded as a dead letter, so a broken target never breaks a sign-up or a sign-in.

begin;

create schema if not exists usersync;
{email_index}
-- A failed sync, kept for the healing loop (one pending letter per user), and a NOTIFY so that
-- it is retried at once. Only the error's message and SQLSTATE are kept, never its DETAIL,
-- which can quote row values.
create or replace function usersync.record_dead_letter(
    p_user_id uuid, p_op text, p_error text, p_sqlstate text)
returns void
language plpgsql
security definer
set search_path = ''
as {tag}
declare
    v_id bigint;
begin
    insert into usersync.dead_letters as d (user_id, op, error, sqlstate)
    values (p_user_id, p_op, p_error, p_sqlstate)
    on conflict (user_id) where resolved_at is null
    do update set error = excluded.error, sqlstate = excluded.sqlstate, next_attempt_at = now()
    returning d.id into v_id;
    perform pg_notify('{channel}', v_id::text);
exception when others then
    -- Not even the dead letter could be written. The user's own write must still commit; the
    -- periodic reconciliation finds the user missing.
    raise warning 'usersync: cannot record a dead letter for user %: % (SQLSTATE %)',
        p_user_id, sqlerrm, sqlstate;
end
{tag};

-- The sync itself, at commit: re-read the auth.users row, upsert the target (only the columns
-- that follow the source, only when they differ), apply the deleted policy to a deleted user,
-- and record each write in usersync.events. The same statements as the service's own.
create or replace function usersync.sync_auth_user()
returns trigger
language plpgsql
security definer
set search_path = ''
as {tag}
declare
    v_user_id uuid;
    v_result record;
    v_after jsonb;
begin
    if tg_op = 'DELETE' then
        v_user_id := old.id;
    else
        v_user_id := new.id;
    end if;
    begin
        -- Most firings are a sign-up: a new user who needs a profile and nothing else. That
        -- takes one insert (nothing when anything stands in the way) and its audit event.
        if tg_op = 'INSERT' then
            {create}
            into v_after;
            if found then
                insert into usersync.events (user_id, caller, path, kind, action, after)
                values (v_user_id, {caller}, {path}, {missing}, {created}, v_after);
                return null;
            end if;
        end if;
        if tg_op <> 'DELETE' then
            {sync}
            into v_result;
            -- A live user is done: only a gone or soft-deleted one has a deleted policy. A value
            -- the target cannot store fails this user alone, named by its column (never the
            -- value, which anyone can set in their own metadata).
            if v_result.found and not v_result.deleted then
                if v_result.refused_column is not null and v_result.created is null then
                    perform usersync.record_dead_letter(v_user_id, lower(tg_op),
                        'column ' || v_result.refused_column
                            || ': this user''s value cannot be stored in it', null);
                end if;
                return null;
            end if;
        end if;
        {deleted}
        into v_result;
    exception when others then
        -- A data exception's message quotes the value at fault (a user's metadata, say): keep
        -- only its SQLSTATE.
        perform usersync.record_dead_letter(v_user_id, lower(tg_op),
            case when left(sqlstate, 2) = '22' then 'a value cannot be stored (SQLSTATE '
                                                    || sqlstate || ')'
                 else sqlerrm end,
            sqlstate);
    end;
    return null;
end
{tag};

revoke all on function usersync.record_dead_letter(uuid, text, text, text) from public;
revoke all on function usersync.sync_auth_user() from public;

-- Drift in SQL: one row per drifted user and kind, from the same predicates as
-- `GET /v1/status`, whose counts it equals: `select kind, count(*) from usersync.user_drift
-- group by 1`. `user_id` is the auth user's id (missing, stale, mismatched) or the profile's
-- key (orphaned, deleted); `detail` names the differing columns (stale), the profiles holding
-- the email (mismatched), or whether the auth user is soft-deleted or gone (deleted). A lookup
-- `where user_id = ...` reads indexes only. Its columns never change with the mapping; a view
-- of another shape (an earlier usersync's) cannot be replaced in place and is dropped first.
do {tag}
begin
    if to_regclass('usersync.user_drift') is not null
       and (select pg_catalog.array_agg(a.attname::text || ' '
                                        || pg_catalog.format_type(a.atttypid, a.atttypmod)
                                        order by a.attnum)
              from pg_catalog.pg_attribute a
             where a.attrelid = to_regclass('usersync.user_drift')
               and a.attnum > 0 and not a.attisdropped)
           is distinct from array['user_id uuid', 'email text', 'kind text', 'detail jsonb'] then
        drop view usersync.user_drift;
    end if;
end
{tag};

-- The rows come from a SQL function the view calls, not from the view's own query: a view
-- pins every column it reads, so Supabase Auth's upgrades and the app's migrations could no
-- longer drop or retype a column of auth.users or the profile table. A plain-SQL function
-- records no such dependency, and the planner inlines it (stable, not strict, not a security
-- definer), so a lookup by user_id still reads indexes only. Inlined, it reads the tables with
-- the caller's rights.
create or replace function usersync.user_drift_rows()
returns table (user_id uuid, email text, kind text, detail jsonb)
language sql stable
as $usersync_view$
{view}
$usersync_view$;
revoke all on function usersync.user_drift_rows() from public;

create or replace view usersync.user_drift (user_id, email, kind, detail) as
select r.user_id, r.email, r.kind, r.detail from usersync.user_drift_rows() r;

-- The view reads auth.users with its owner's rights (the role that installed it: `postgres` on
-- hosted Supabase, which the dashboard's SQL editor runs as) and shows every user's email and
-- drift: only its owner may read it. Not `public`, and never `anon` or `authenticated` (were
-- the schema ever exposed through the Data API, any visitor or signed-in user could list every
-- email), whatever default privileges the schema has.
revoke all on usersync.user_drift from public;
do {tag}
declare
    v_role name;
begin
    for v_role in select rolname from pg_catalog.pg_roles
                   where rolname in ('anon', 'authenticated')
    loop
        execute pg_catalog.format('revoke all on usersync.user_drift from %I', v_role);
    end loop;
end
{tag};

-- The triggers. The insert and delete ones never change, and are created when missing. The
-- update one is queued only when a value the mapping reads changed (not on every sign-in): its
-- clause follows the mapping, and its name a digest of that clause, so a changed mapping
-- replaces it. Only the owner of auth.users may drop the old one.
do {tag}
declare
    v_old name;
begin
{create_triggers}    for v_old in select tgname from pg_trigger
                  where tgrelid = 'auth.users'::regclass
                    and tgname like 'usersync\\_user\\_updated%' and tgname <> '{update_trigger}'
    loop
        begin
            execute pg_catalog.format('drop trigger %I on auth.users', v_old);
        exception when insufficient_privilege then
            raise exception 'usersync: the mapping changed what the update trigger compares, and only the owner of auth.users may drop the old trigger: as %, run `drop trigger % on auth.users;`, then install again',
                (select pg_catalog.pg_get_userbyid(relowner) from pg_catalog.pg_class
                  where oid = 'auth.users'::regclass), v_old
                using errcode = 'insufficient_privilege';
        end;
    end loop;
    if not exists (select 1 from pg_trigger
                    where tgrelid = 'auth.users'::regclass and tgname = '{update_trigger}') then
        create constraint trigger {update_trigger}
            after update on auth.users
            deferrable initially deferred
            for each row
            when ({changed})
            execute function usersync.sync_auth_user();
    end if;
    -- The WHEN function of earlier versions, once no trigger uses it.
    drop function if exists usersync.auth_user_changed(auth.users, auth.users);
end
{tag};

commit;
",
        target = bound.mapping.target.qualified(),
        email_index = email_index_sql(bound),
        policy = policy.as_str(),
        channel = DEAD_LETTER_CHANNEL,
        changed = indent(&changed, 18),
        create_triggers = create_triggers(),
        create = indent(&create, 12),
        caller = origin.caller,
        path = origin.path,
        missing = DriftKind::Missing.sql(),
        created = AuditAction::Created.sql(),
        sync = indent(&sync, 12),
        deleted = indent(&deleted, 8),
        view = renderer.drift_view(),
    )
}

/// The index on the target's `lower(email)` that keeps the sync's email lookup an index probe
/// (see `repo::email_index`), when the target has no such index yet. Inside the transaction it
/// cannot be built `concurrently`, and it holds off writes to the target while it builds:
/// `usersync triggers install` builds it concurrently first (as does `usersync migrate`), and
/// then this is a no-op.
fn email_index_sql(bound: &BoundMapping) -> String {
    let has_one = bound
        .mapping
        .email_column()
        .is_some_and(|e| bound.shape.lower_indexed.iter().any(|c| c == e.as_str()));
    match email_index::create_sql(&bound.mapping, false) {
        Some(create) if !has_one => format!(
            "
-- Per-user lookups by email (is this user's email held by a profile without an auth user?)
-- need an index on the target's lower(email): without one, every sign-up reads the whole
-- target. Built under a lock that holds off writes to the target; on a large table run
-- `usersync migrate` first, which builds it concurrently, and this does nothing.
{create};
"
        ),
        _ => String::new(),
    }
}

/// The statements (for a `do` block) that create each of `TRIGGERS` that does not exist yet.
fn create_triggers() -> String {
    TRIGGERS
        .iter()
        .map(|(name, event)| {
            format!(
                "    if not exists (select 1 from pg_trigger
                    where tgrelid = 'auth.users'::regclass and tgname = '{name}') then
        create constraint trigger {name}
            after {event} on auth.users
            deferrable initially deferred
            for each row
            execute function usersync.sync_auth_user();
    end if;
"
            )
        })
        .collect()
}

/// The SQL that removes everything `install_sql` creates, the drift view included (the usersync
/// schema and its tables stay: they belong to the migrations). Only usersync's triggers are dropped, and only those
/// that exist: `drop trigger if exists` asks for ownership of `auth.users` even when there is
/// nothing to drop.
pub fn uninstall_sql() -> String {
    let mut sql = format!(
        "begin;
do $usersync$
declare
    v_trigger name;
begin
    for v_trigger in select tgname from pg_trigger where {OWN_TRIGGERS} loop
        execute pg_catalog.format('drop trigger %I on auth.users', v_trigger);
    end loop;
end
$usersync$;
"
    );
    sql.push_str(&format!("drop view if exists {VIEW};\n"));
    sql.push_str(&format!("drop function if exists {VIEW_ROWS};\n"));
    for function in FUNCTIONS {
        sql.push_str(&format!("drop function if exists {function};\n"));
    }
    sql.push_str("commit;\n");
    sql
}

/// The SQL that turns the trigger path into no-ops without touching the triggers: the sync
/// function returns at once (catching every error, so that `doctor` rightly finds nothing
/// unsafe in it). The drift view is usersync's own, in its schema: it goes.
pub fn neutralise_sql() -> String {
    "begin;
create or replace function usersync.sync_auth_user()
returns trigger language plpgsql security definer set search_path = ''
as $usersync$
begin
    -- Neutralised by `usersync triggers uninstall`: the triggers on auth.users stay until
    -- their owner drops them, and do nothing.
    return null;
exception when others then
    return null;
end
$usersync$;
drop function if exists usersync.record_dead_letter(uuid, text, text, text);
drop view if exists usersync.user_drift;
drop function if exists usersync.user_drift_rows();
commit;
"
    .to_owned()
}

/// A dollar-quote tag that occurs in none of `bodies` (a mapping constant could contain one).
fn dollar_tag<const N: usize>(bodies: [&str; N]) -> String {
    (0..)
        .map(|n| match n {
            0 => "$usersync$".to_owned(),
            n => format!("$usersync{n}$"),
        })
        .find(|tag| bodies.iter().all(|b| !b.contains(tag.as_str())))
        .expect("some tag is free")
}
