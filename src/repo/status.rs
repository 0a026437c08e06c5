//! Totals and drift counts over both tables.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use crate::compiler::bind::BoundMapping;
use crate::vocabulary::DriftKind;

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

/// When the longest-waiting missing user was created; `None` when no user is missing.
pub async fn oldest_missing(
    db: impl PgExecutor<'_>,
    bound: &BoundMapping,
) -> sqlx::Result<Option<DateTime<Utc>>> {
    sqlx::query_scalar(&bound.sql.oldest_missing)
        .fetch_one(db)
        .await
}

/// The number of rows of one kind.
pub async fn count(
    db: impl PgExecutor<'_>,
    bound: &BoundMapping,
    kind: DriftKind,
) -> sqlx::Result<i64> {
    sqlx::query_scalar(&bound.sql.count[&kind])
        .fetch_one(db)
        .await
}

/// When the last successful (applied or dry) run finished.
pub async fn last_successful_run(db: impl PgExecutor<'_>) -> sqlx::Result<Option<DateTime<Utc>>> {
    sqlx::query_scalar!("select max(finished_at) from usersync.runs where state = 'succeeded'")
        .fetch_one(db)
        .await
}

/// `(source_total, target_total)`.
pub async fn totals(db: impl PgExecutor<'_>, bound: &BoundMapping) -> sqlx::Result<(i64, i64)> {
    sqlx::query_as(&bound.sql.totals).fetch_one(db).await
}
