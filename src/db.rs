//! The connection pool and the usersync migrations, and what the pool is made from: the
//! database URL and the pool's settings (`config` parses them). What an error of theirs means
//! is `sqlstate`'s.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgPool};

/// The usersync schema's migrations, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The port of Supabase's transaction-mode pooler (Supavisor), which does not support the
/// prepared statements sqlx relies on.
pub const TRANSACTION_POOLER_PORT: u16 = 6543;

/// A parsed Postgres URL. The original string is kept secret: it usually holds a password.
#[derive(Clone)]
pub struct DatabaseUrl {
    pub options: PgConnectOptions,
    raw: SecretString,
}

impl DatabaseUrl {
    /// The URL `raw`, already parsed into `options` (`config` parses and checks it).
    pub fn new(raw: &str, options: PgConnectOptions) -> DatabaseUrl {
        DatabaseUrl {
            options,
            raw: SecretString::from(raw.to_owned()),
        }
    }

    pub fn expose(&self) -> &str {
        self.raw.expose_secret()
    }

    /// Whether the URL names Supabase's transaction-mode pooler port.
    pub fn through_transaction_pooler(&self) -> bool {
        self.options.get_port() == TRANSACTION_POOLER_PORT
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DatabaseUrl([redacted])")
    }
}

/// The pool: where it connects, how many connections it holds, and how long a request waits
/// for one.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub url: DatabaseUrl,
    pub size: u32,
    pub acquire_timeout: Duration,
}

/// Opens the pool. Connections are made lazily, so that the service starts (and answers
/// `/healthz`, and `/readyz` with 503) while the database is still coming up.
pub fn pool(config: &PoolSettings) -> PgPool {
    PgPoolOptions::new()
        .max_connections(config.size)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_never_show_their_password() {
        let raw = "postgres://u:hunter2-secret@localhost/db";
        let url = DatabaseUrl::new(raw, raw.parse().unwrap());
        assert!(!format!("{url:?}").contains("hunter2"));
    }
}
