//! The connection pool and the usersync migrations.

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

/// Whether `error` means "the database is away" rather than "we have a bug": connection-level
/// failures (refused, reset, a proxy that hangs up mid-handshake, no free connection in time),
/// and SQLSTATE classes 08 (connection exception) and 57 (operator intervention: shutdown,
/// restart, cannot connect now). Such a failure is answered 503, and retrying it elsewhere is
/// pointless.
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(e) => e
            .code()
            .is_some_and(|code| code.starts_with("08") || code.starts_with("57")),
        _ => false,
    }
}

/// Whether the database refused a statement because of a row's data (SQLSTATE class 22, data
/// exception, or 23, integrity constraint violation): without that row it would have gone
/// through, so a set-based write may be split to find the row.
pub fn is_refused_by_data(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code.starts_with("22") || code.starts_with("23"))
}

/// A database error as usersync records and logs it (run errors, failures, dead letters, log
/// lines). A data exception's message (SQLSTATE class 22) quotes the value at fault, which may
/// be what a user wrote in their own metadata: only its SQLSTATE is kept. Other messages name
/// objects (a constraint, a column, a privilege), never values.
pub fn describe(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(e) => match e.code() {
            Some(code) if code.starts_with("22") => {
                format!("a value cannot be stored (SQLSTATE {code})")
            }
            _ => e.message().to_owned(),
        },
        other => other.to_string(),
    }
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
