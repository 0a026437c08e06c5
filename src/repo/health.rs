//! What readiness asks of the database.

use sqlx::{PgExecutor, PgPool};

/// The database answers.
pub async fn ping(db: impl PgExecutor<'_>) -> sqlx::Result<()> {
    sqlx::query("select 1").execute(db).await.map(|_| ())
}

/// Versions of the usersync migrations applied successfully (empty before the first
/// `usersync migrate`).
pub async fn applied_migrations(db: &PgPool) -> sqlx::Result<Vec<i64>> {
    let exists = sqlx::query_scalar!(
        r#"select to_regclass('usersync._sqlx_migrations') is not null as "exists!""#
    )
    .fetch_one(db)
    .await?;
    if !exists {
        return Ok(Vec::new());
    }
    sqlx::query_scalar!("select version from usersync._sqlx_migrations where success order by 1")
        .fetch_all(db)
        .await
}
