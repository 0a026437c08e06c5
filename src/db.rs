//! The connection pool and the usersync migrations. What an error of theirs means is
//! `sqlstate`'s.

use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgPool};

use crate::config::DatabaseConfig;

/// The usersync schema's migrations, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Opens the pool. Connections are made lazily, so that the service starts (and answers
/// `/healthz`, and `/readyz` with 503) while the database is still coming up.
pub fn pool(config: &DatabaseConfig) -> PgPool {
    PgPoolOptions::new()
        .max_connections(config.pool_size)
        .acquire_timeout(config.acquire_timeout)
        // No ping before every checkout: it doubles the round trips of a sync-one. A pooled
        // connection that died (a database restart) fails one request with a 503 and is
        // dropped; the next checkout opens a fresh one.
        .test_before_acquire(false)
        .connect_lazy_with(config.url.options.clone().application_name("usersync"))
}

/// Applies the migrations; safe to run any number of times, from any number of replicas (sqlx
/// takes an advisory lock).
///
/// sqlx keeps its bookkeeping table in the first schema of the `search_path`; pinning that to
/// `usersync` keeps it out of `public`, which Supabase exposes through its data API.
pub async fn migrate(db: &PgPool) -> anyhow::Result<()> {
    let mut conn = db.acquire().await?;
    sqlx::raw_sql("create schema if not exists usersync; set search_path to usersync")
        .execute(&mut *conn)
        .await?;
    let result = MIGRATOR.run(&mut *conn).await;
    // The connection goes back to the pool: give it back its normal search_path.
    sqlx::query("reset search_path").execute(&mut *conn).await?;
    result?;
    Ok(())
}

/// Checks the database answers, for commands that need it right away.
pub async fn check_reachable(db: &PgPool) -> anyhow::Result<()> {
    let mut conn = db.acquire().await?;
    conn.ping().await?;
    Ok(())
}
