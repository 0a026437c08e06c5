//! What the connecting role may do: catalog reads about its privileges on `auth.users`, the
//! database, the target and the tables that reference it, and whether row level security
//! hides rows of `auth.users` from it.

use sqlx::PgExecutor;

/// The connecting role's view of `auth.users`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SourceAccess {
    pub role: String,
    /// USAGE on schema `auth`.
    pub usage: bool,
    pub select: bool,
    /// TRIGGER on `auth.users` (`usersync triggers install`).
    pub trigger: bool,
    /// Row level security is enabled on `auth.users` and applies to the role: no superuser, no
    /// BYPASSRLS, and not the owner (or the table forces it on its owner too).
    pub row_security: bool,
}

/// `None` when there is no `auth.users`. Found by name in the catalog, never through a
/// `regclass`: resolving `auth.users` needs USAGE on `auth`, which is one of the things asked.
pub async fn source_access(db: impl PgExecutor<'_>) -> sqlx::Result<Option<SourceAccess>> {
    sqlx::query_as(
        "select current_user::text as role,
                has_schema_privilege(current_user, 'auth', 'usage') as usage,
                has_table_privilege(current_user, c.oid, 'select') as select,
                has_table_privilege(current_user, c.oid, 'trigger') as trigger,
                c.relrowsecurity and not (r.rolsuper or r.rolbypassrls)
                    and (c.relforcerowsecurity
                         or not pg_has_role(current_user, c.relowner, 'usage')) as row_security
           from pg_class c
           join pg_namespace n on n.oid = c.relnamespace
           join pg_roles r on r.rolname = current_user
          where n.nspname = 'auth' and c.relname = 'users' and c.relkind in ('r', 'p')",
    )
    .fetch_optional(db)
    .await
}

/// One privilege usersync needs, and whether the connecting role has it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Privilege {
    /// What it is for, for people: `read auth.users`, `re-key`.
    pub purpose: String,
    /// The privilege, as GRANT spells it: `select`, `create`.
    pub privilege: String,
    /// The object, as GRANT names it: `table auth.users`, `database postgres`.
    pub object: String,
    pub held: bool,
}

/// Every privilege usersync needs of the connecting role: on `auth.users` (read it, install the
/// triggers), on the database (`usersync migrate` creates the usersync schema), on the target
/// (`target`, `schema.table`; write it), and on each table whose foreign key references the
/// target (a re-key moves those references).
pub async fn privileges(db: impl PgExecutor<'_>, target: &str) -> sqlx::Result<Vec<Privilege>> {
    sqlx::query_as(
        "with tables as (
             select c.oid, n.nspname || '.' || c.relname as name
               from pg_class c join pg_namespace n on n.oid = c.relnamespace
         ),
         wanted (purpose, privilege, kind, object, relid, ord) as (
             values ('read auth.users', 'usage', 'schema', 'auth', null::oid, 1)
             union all
             select 'read auth.users', 'select', 'table', name, oid, 2
               from tables where name = 'auth.users'
             union all
             select 'install the triggers', 'trigger', 'table', name, oid, 3
               from tables where name = 'auth.users'
             union all
             select 'create the usersync schema', 'create', 'database', current_database(), null, 4
             union all
             select 'write the target', p, 'table', t.name, t.oid, 5
               from tables t, unnest(array['select', 'insert', 'update', 'delete']) p
              where t.name = $1
             union all
             select distinct 're-key', 'update', 'table', r.name, r.oid, 6
               from pg_constraint c
               join tables r on r.oid = c.conrelid
               join tables t on t.oid = c.confrelid
              where c.contype = 'f' and t.name = $1 and c.conrelid <> c.confrelid
         )
         select purpose, privilege, kind || ' ' || object as object,
                case kind
                    when 'schema' then has_schema_privilege(object, privilege)
                    when 'database' then has_database_privilege(object, privilege)
                    else has_table_privilege(relid, privilege)
                end as held
           from wanted
          order by ord, object, privilege",
    )
    .bind(target)
    .fetch_all(db)
    .await
}

/// The source and target totals the most recent run other than `run` planned with, if any.
pub async fn last_planned_totals(
    db: impl PgExecutor<'_>,
    run: uuid::Uuid,
) -> sqlx::Result<Option<(i64, i64)>> {
    sqlx::query_as(
        "select (plan ->> 'source_total')::bigint, (plan ->> 'target_total')::bigint
           from usersync.runs
          where plan is not null and id <> $1
          order by started_at desc
          limit 1",
    )
    .bind(run)
    .fetch_optional(db)
    .await
}
