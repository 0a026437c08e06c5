//! Leadership among replicas: a session-level Postgres advisory lock held on a dedicated
//! connection.
//!
//! The lock lives exactly as long as the session: when the leader's process dies, its
//! connection closes, Postgres releases the lock, and the next standby to try takes it. No
//! lease to tune, no clock to trust. A leader checks its connection every second; if the
//! connection is gone, so is the lock, and it steps down (another replica may lead by then, and
//! for that second both may work: every heal is idempotent, so that costs nothing but a
//! repeated no-op).

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};

/// The advisory lock key: "us-lead!" in ASCII. Advisory locks are per database, so each
/// project's replicas elect their own leader. It must differ from `repo::runs::RUN_LOCK`: the
/// leader holds its lock for as long as it leads, and a shared key would refuse every run.
pub const LOCK_KEY: i64 = 0x7573_2d6c_6561_6421;

/// A connection on which this replica tries to lead.
pub struct LockConnection {
    conn: PgConnection,
}

impl LockConnection {
    /// Opens the dedicated connection (named in `pg_stat_activity`, so an operator can see who
    /// leads).
    pub async fn connect(options: &PgConnectOptions) -> sqlx::Result<Self> {
        let options = options.clone().application_name("usersync healing lock");
        Ok(Self {
            conn: PgConnection::connect_with(&options).await?,
        })
    }

    /// Takes the lock if nobody holds it; never waits.
    pub async fn try_lead(&mut self) -> sqlx::Result<bool> {
        sqlx::query_scalar!(r#"select pg_try_advisory_lock($1) as "locked!""#, LOCK_KEY)
            .fetch_one(&mut self.conn)
            .await
    }

    /// Whether the session (and so the lock) is still there.
    pub async fn is_alive(&mut self) -> bool {
        self.conn.ping().await.is_ok()
    }

    /// Releases the lock at once, so that a standby need not wait for the connection to time
    /// out (a graceful shutdown).
    pub async fn release(mut self) {
        let _ = sqlx::query_scalar!("select pg_advisory_unlock($1)", LOCK_KEY)
            .fetch_one(&mut self.conn)
            .await;
        let _ = self.conn.close().await;
    }
}
