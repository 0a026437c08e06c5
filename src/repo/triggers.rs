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
//! calls `usersync.auth_user_changed(old, new)`, a one-expression SQL function without a fixed
//! `search_path`, which Postgres inlines into the clause. So the `updated_at` and
//! `last_sign_in_at` bump of every sign-in costs a few comparisons and no function call, and
//! the function's body follows the mapping (`create or replace`) while the trigger itself never
//! changes: refreshing the install after a mapping change never needs to drop a trigger on
//! `auth.users`, which only its owner may do.
//!
//! Only the owner of `auth.users` (Supabase Auth's role) may drop triggers on it. Hosted
//! Supabase's `postgres` may create them, and drop them only where the platform grants it;
//! `uninstall` without that right neutralises the functions (the triggers stay, doing nothing)
//! and says what the owner can run to drop them.

use sqlx::PgPool;

use crate::repo::email_index;
use crate::repo::sql::{Origin, Renderer};
use crate::sync::policy::DeletedPolicy;
use crate::sync::target::BoundMapping;

/// The channel the trigger notifies after recording a dead letter; the payload is the dead
/// letter's id (never user data).
pub const DEAD_LETTER_CHANNEL: &str = "usersync_dead_letters";

/// The triggers usersync owns on `auth.users`, and the event each fires after.
const TRIGGERS: [(&str, &str); 3] = [
    ("usersync_user_inserted", "insert"),
    ("usersync_user_updated", "update"),
    ("usersync_user_deleted", "delete"),
];

/// The functions usersync owns, with their signatures (what `drop function` needs).
const FUNCTIONS: [&str; 3] = [
    "usersync.sync_auth_user()",
    "usersync.auth_user_changed(auth.users, auth.users)",
    "usersync.record_dead_letter(uuid, text, text, text)",
];

/// How the trigger path names itself in the audit log: the role that wrote `auth.users`
/// (`supabase_auth_admin` for Supabase Auth, `postgres` for the dashboard's SQL editor).
const TRIGGER_ORIGIN: Origin<'static> = Origin {
    user_id: "v_user_id",
    caller: "'db:' || session_user",
    path: "'trigger'",
    witnessed_delete: "tg_op = 'DELETE'",
};

/// The SQL that installs the trigger path for `bound` under `policy`: one transaction,
/// idempotent, shippable as a Supabase migration (what `usersync triggers show` prints).
pub fn install_sql(bound: &BoundMapping, policy: DeletedPolicy) -> String {
    let renderer = Renderer::new(&bound.mapping, &bound.shape);
    let sync = renderer.sync_statement(TRIGGER_ORIGIN);
    let deleted = renderer.deleted_statement(TRIGGER_ORIGIN, policy);
    let changed = renderer.changed_predicate("o", "n");
    let tag = dollar_tag([sync.as_str(), deleted.as_str(), changed.as_str()]);
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

-- Whether an update of auth.users matters to the target: the update trigger's WHEN clause.
-- One SQL expression over its arguments, without a fixed search_path (every operator is named
-- in pg_catalog), so that Postgres inlines it into the clause: a sign-in, which changes nothing
-- the mapping reads, calls no function at all. (Stable, not immutable: a timestamp's text is
-- stable, and an immutable function over it would not be inlined.) It compares raw values as
-- text, never the mapping's casts, so it cannot fail inside Supabase Auth's own statement.
create or replace function usersync.auth_user_changed(o auth.users, n auth.users)
returns boolean
language sql
stable
as {tag}
    select {changed}
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
begin
    if tg_op = 'DELETE' then
        v_user_id := old.id;
    else
        v_user_id := new.id;
    end if;
    begin
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
-- A WHEN clause calls its function as the role that writes auth.users (supabase_auth_admin):
-- it needs EXECUTE. The function only compares its two arguments.
grant execute on function usersync.auth_user_changed(auth.users, auth.users) to public;

-- Created only when missing: their definitions never depend on the mapping (the functions do),
-- so re-running this leaves them untouched.
do {tag}
begin
{create_triggers}end
{tag};

commit;
",
        target = bound.mapping.target.qualified(),
        email_index = email_index_sql(bound),
        policy = policy.as_str(),
        channel = DEAD_LETTER_CHANNEL,
        changed = indent(&changed, 4),
        create_triggers = create_triggers(),
        sync = indent(&sync, 12),
        deleted = indent(&deleted, 8),
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
            // The update trigger is queued only when a mapped value changed (see the module
            // docs).
            let when = match *event {
                "update" => "\n            when (usersync.auth_user_changed(old, new))",
                _ => "",
            };
            format!(
                "    if not exists (select 1 from pg_trigger
                    where tgrelid = 'auth.users'::regclass and tgname = '{name}') then
        create constraint trigger {name}
            after {event} on auth.users
            deferrable initially deferred
            for each row{when}
            execute function usersync.sync_auth_user();
    end if;
"
            )
        })
        .collect()
}

/// The SQL that removes everything `install_sql` creates (the usersync schema and its tables
/// stay: they belong to the migrations). A trigger is dropped only where it exists: `drop
/// trigger if exists` asks for ownership of `auth.users` even when there is nothing to drop.
pub fn uninstall_sql() -> String {
    let mut sql = String::from("begin;\ndo $usersync$\nbegin\n");
    for (trigger, _) in TRIGGERS {
        sql.push_str(&format!(
            "    if exists (select 1 from pg_trigger
                where tgrelid = 'auth.users'::regclass and tgname = '{trigger}') then
        drop trigger {trigger} on auth.users;
    end if;
"
        ));
    }
    sql.push_str("end\n$usersync$;\n");
    for function in FUNCTIONS {
        sql.push_str(&format!("drop function if exists {function};\n"));
    }
    sql.push_str("commit;\n");
    sql
}

/// What the owner of `auth.users` runs to drop usersync's triggers.
pub fn drop_triggers_sql() -> String {
    TRIGGERS
        .iter()
        .map(|(trigger, _)| format!("drop trigger if exists {trigger} on auth.users;"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The SQL that turns the trigger path into no-ops without touching the triggers: the update
/// trigger's `WHEN` is always false, and the sync function returns at once (catching every
/// error, so that `doctor` rightly finds nothing unsafe in it).
fn neutralise_sql() -> String {
    "begin;
create or replace function usersync.auth_user_changed(o auth.users, n auth.users)
returns boolean language sql stable as $usersync$ select false $usersync$;
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
commit;
"
    .to_owned()
}

/// What `uninstall` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uninstalled {
    /// The triggers and their functions are gone.
    Removed,
    /// Only `owner` may drop triggers on `auth.users`: they stay, but do nothing (see
    /// `drop_triggers_sql`).
    Neutralised { owner: String },
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

/// Runs a script that manages its own transaction (`begin; ... commit;`) on a dedicated
/// connection, so that a failure halfway never hands an aborted transaction back to the pool.
pub async fn run_script(db: &PgPool, sql: &str) -> sqlx::Result<()> {
    let mut conn = db.acquire().await?;
    let result = sqlx::raw_sql(sql).execute(&mut *conn).await.map(|_| ());
    if result.is_err() {
        let _ = sqlx::raw_sql("rollback").execute(&mut *conn).await;
    }
    result
}

/// Installs (or refreshes) the trigger path.
pub async fn install(db: &PgPool, bound: &BoundMapping, policy: DeletedPolicy) -> sqlx::Result<()> {
    run_script(db, &install_sql(bound, policy)).await
}

/// Removes the trigger path; without the right to drop triggers on `auth.users`, neutralises it.
pub async fn uninstall(db: &PgPool) -> sqlx::Result<Uninstalled> {
    match run_script(db, &uninstall_sql()).await {
        Ok(()) => Ok(Uninstalled::Removed),
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some(INSUFFICIENT_PRIVILEGE) => {
            run_script(db, &neutralise_sql()).await?;
            let owner = sqlx::query_scalar(
                "select pg_get_userbyid(relowner)::text from pg_class
                  where oid = 'auth.users'::regclass",
            )
            .fetch_one(db)
            .await?;
            Ok(Uninstalled::Neutralised { owner })
        }
        Err(e) => Err(e),
    }
}

/// SQLSTATE 42501: the role lacks a privilege (here: ownership of `auth.users`).
const INSUFFICIENT_PRIVILEGE: &str = "42501";
