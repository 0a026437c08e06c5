//! Totals and drift counts over both tables.

use sqlx::PgExecutor;

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
