//! Catalog reads for `usersync doctor`. Names come out schema-qualified whatever the
//! connection's search_path (`regclass`/`regprocedure` text would drop a visible schema).

use sqlx::PgExecutor;

/// Schemas that belong to Postgres or to the Supabase platform: their functions are not the
/// project's to fix, so only those behind a trigger on `auth.users` are inspected there.
const MANAGED_SCHEMAS: &[&str] = &[
    "pg_catalog",
    "information_schema",
    "pg_toast",
    "auth",
    "storage",
    "realtime",
    "_realtime",
    "extensions",
    "graphql",
    "graphql_public",
    "net",
    "pgbouncer",
    "pgsodium",
    "pgsodium_masks",
    "vault",
    "supabase_functions",
    "supabase_migrations",
    "cron",
    "pgtle",
    "_analytics",
    // usersync's own: rendered by usersync, each pins `search_path = ''` or, where Postgres
    // must inline it (the update trigger's WHEN), names every operator and type in pg_catalog.
    "usersync",
];

/// A trigger on `auth.users` and what its function is made of.
#[derive(Debug, sqlx::FromRow)]
pub struct AuthTrigger {
    pub trigger: String,
    /// `schema.name(args)`.
    pub function: String,
    pub language: String,
    /// The body has an `exception when` handler.
    pub catches: bool,
}

/// Every user-defined trigger on `auth.users`.
pub async fn auth_triggers(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<AuthTrigger>> {
    sqlx::query_as(
        r"select t.tgname::text as trigger, format('%I.%I(%s)', pn.nspname, p.proname, pg_get_function_identity_arguments(p.oid)) as function,
                 l.lanname::text as language,
                 p.prosrc ~* '\mexception\s+when\M' as catches
            from pg_trigger t
            join pg_proc p on p.oid = t.tgfoid
            join pg_namespace pn on pn.oid = p.pronamespace
            join pg_language l on l.oid = p.prolang
           where t.tgrelid = to_regclass('auth.users') and not t.tgisinternal
           order by 1",
    )
    .fetch_all(db)
    .await
}

/// A function whose `search_path` is whatever its caller's is.
#[derive(Debug, sqlx::FromRow)]
pub struct LooseFunction {
    pub function: String,
    pub security_definer: bool,
    /// A trigger on `auth.users` runs it (as `supabase_auth_admin`, whose search_path is `auth`).
    pub behind_auth_trigger: bool,
}

/// Functions without a fixed `search_path`: the project's own (outside the managed schemas and
/// extensions), and any behind a trigger on `auth.users`.
pub async fn functions_without_search_path(
    db: impl PgExecutor<'_>,
) -> sqlx::Result<Vec<LooseFunction>> {
    sqlx::query_as(
        r"with auth_trigger_functions as (
              select tgfoid from pg_trigger
               where tgrelid = to_regclass('auth.users') and not tgisinternal
          )
          select format('%I.%I(%s)', pn.nspname, p.proname, pg_get_function_identity_arguments(p.oid)) as function,
                 p.prosecdef as security_definer,
                 p.oid in (select tgfoid from auth_trigger_functions) as behind_auth_trigger
            from pg_proc p
            join pg_namespace pn on pn.oid = p.pronamespace
            join pg_language l on l.oid = p.prolang
           where p.prokind in ('f', 'p')
             and not exists (select 1 from unnest(coalesce(p.proconfig, '{}')) c
                              where c like 'search_path=%')
             and l.lanname not in ('internal', 'c')
             and (p.oid in (select tgfoid from auth_trigger_functions)
                  or (pn.nspname <> all($1) and pn.nspname not like 'pg\_%'
                      and not exists (select 1 from pg_depend d
                                       where d.classid = 'pg_proc'::regclass
                                         and d.objid = p.oid and d.deptype = 'e')))
           order by 1",
    )
    .bind(MANAGED_SCHEMAS)
    .fetch_all(db)
    .await
}

/// A foreign key that stops a referenced row from being deleted.
#[derive(Debug, sqlx::FromRow)]
pub struct BlockingForeignKey {
    /// The constraint's name.
    pub constraint: String,
    /// The referencing table.
    pub table: String,
    /// The referenced table: `auth.users` or the target.
    pub references: String,
    /// `no action` or `restrict`.
    pub on_delete: String,
}

/// Foreign keys to `auth.users` or to `target` (a regclass name) without `on delete cascade`,
/// `set null` or `set default`.
pub async fn blocking_foreign_keys(
    db: impl PgExecutor<'_>,
    target: &str,
) -> sqlx::Result<Vec<BlockingForeignKey>> {
    sqlx::query_as(
        "select c.conname::text as constraint,
                format('%I.%I', tn.nspname, t.relname) as table,
                format('%I.%I', rn.nspname, r.relname) as references,
                case c.confdeltype when 'r' then 'restrict' else 'no action' end as on_delete
           from pg_constraint c
           join pg_class t on t.oid = c.conrelid
           join pg_namespace tn on tn.oid = t.relnamespace
           join pg_class r on r.oid = c.confrelid
           join pg_namespace rn on rn.oid = r.relnamespace
          where c.contype = 'f' and c.confdeltype in ('a', 'r')
            and c.confrelid in (to_regclass('auth.users'), to_regclass($1))
          order by 3, 2, 1",
    )
    .bind(target)
    .fetch_all(db)
    .await
}

/// Row level security on the target as it applies to the connecting role.
#[derive(Debug, sqlx::FromRow)]
pub struct TargetRls {
    pub role: String,
    pub enabled: bool,
    pub forced: bool,
    /// Superuser or BYPASSRLS: policies never apply.
    pub bypasses: bool,
    /// Owns the table (directly or through a role it inherits): policies apply only if forced.
    pub owns: bool,
}

/// `None` when the target table does not exist.
pub async fn target_rls(db: impl PgExecutor<'_>, target: &str) -> sqlx::Result<Option<TargetRls>> {
    sqlx::query_as(
        "select current_user::text as role, c.relrowsecurity as enabled,
                c.relforcerowsecurity as forced, r.rolsuper or r.rolbypassrls as bypasses,
                pg_has_role(current_user, c.relowner, 'USAGE') as owns
           from pg_class c, pg_roles r
          where c.oid = to_regclass($1) and r.rolname = current_user",
    )
    .bind(target)
    .fetch_optional(db)
    .await
}
