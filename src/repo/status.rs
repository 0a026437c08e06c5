//! Totals and drift counts over both tables, and the last reconciliation run.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::sync::target::BoundMapping;

#[derive(Debug, sqlx::FromRow)]
pub struct CountsRow {
    pub source_total: i64,
    pub target_total: i64,
    pub missing: i64,
    pub stale: i64,
    pub mismatched: i64,
    pub orphaned: i64,
    pub deleted: i64,
    pub dead_letters_pending: i64,
}

#[tracing::instrument(skip_all)]
pub async fn counts(db: impl PgExecutor<'_>, bound: &BoundMapping) -> sqlx::Result<CountsRow> {
    sqlx::query_as(&bound.sql.status).fetch_one(db).await
}

#[derive(Debug, sqlx::FromRow)]
pub struct LastRunRow {
    pub id: Uuid,
    pub state: String,
    pub dry_run: bool,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

pub async fn last_run(db: impl PgExecutor<'_>) -> sqlx::Result<Option<LastRunRow>> {
    sqlx::query_as(
        "select id, state, dry_run, started_at, finished_at
           from usersync.runs order by started_at desc limit 1",
    )
    .fetch_optional(db)
    .await
}

/// When the longest-waiting missing user was created; `None` when no user is missing.
pub async fn oldest_missing(
    db: impl PgExecutor<'_>,
    bound: &BoundMapping,
) -> sqlx::Result<Option<DateTime<Utc>>> {
    sqlx::query_scalar(&bound.sql.oldest_missing)
        .fetch_one(db)
        .await
}

/// When the last successful (applied or dry) run finished.
pub async fn last_successful_run(db: impl PgExecutor<'_>) -> sqlx::Result<Option<DateTime<Utc>>> {
    sqlx::query_scalar("select max(finished_at) from usersync.runs where state = 'succeeded'")
        .fetch_one(db)
        .await
}
