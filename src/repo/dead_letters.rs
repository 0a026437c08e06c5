//! Failed trigger syncs waiting to be healed.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

/// A dead letter as admins see it: who, what failed and why, and when it is retried.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct DeadLetter {
    pub id: i64,
    pub user_id: Uuid,
    /// `insert`, `update` or `delete`.
    pub op: String,
    /// The error the trigger caught.
    pub error: String,
    pub sqlstate: Option<String>,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

/// The oldest `limit` unresolved dead letters.
pub async fn pending(db: impl PgExecutor<'_>, limit: i64) -> sqlx::Result<Vec<DeadLetter>> {
    sqlx::query_as(
        "select id, user_id, op, error, sqlstate, attempts, next_attempt_at, created_at
           from usersync.dead_letters
          where resolved_at is null
          order by created_at, id
          limit $1",
    )
    .bind(limit)
    .fetch_all(db)
    .await
}
