//! Installs and removes the trigger path that `compiler::render::triggers` renders: each script
//! runs on a connection of its own, and without the right to drop triggers on `auth.users` the
//! path is neutralised instead.

use sqlx::PgPool;

use crate::compiler::bind::BoundMapping;
use crate::compiler::render::triggers::{install_sql, neutralise_sql, uninstall_sql, OWN_TRIGGERS};
use crate::vocabulary::policy::DeletedPolicy;

/// What `uninstall` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uninstalled {
    /// The triggers and their functions are gone.
    Removed,
    /// Only `owner` may drop triggers on `auth.users`: they stay, but do nothing; `drop` is
    /// what the owner can run to drop them.
    Neutralised { owner: String, drop: String },
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
            let (owner, drop) = sqlx::query_as(&format!(
                "select pg_get_userbyid(c.relowner)::text,
                        (select string_agg(format('drop trigger %I on auth.users;', tgname), ' '
                                           order by tgname)
                           from pg_trigger where {OWN_TRIGGERS})
                   from pg_class c where c.oid = 'auth.users'::regclass"
            ))
            .fetch_one(db)
            .await?;
            Ok(Uninstalled::Neutralised { owner, drop })
        }
        Err(e) => Err(e),
    }
}

/// SQLSTATE 42501: the role lacks a privilege (here: ownership of `auth.users`).
const INSUFFICIENT_PRIVILEGE: &str = "42501";
