//! Drifted rows of one kind, a keyset-paginated page at a time.

use sqlx::PgExecutor;
use uuid::Uuid;

use crate::compiler::bind::BoundMapping;
use crate::vocabulary::DriftKind;

/// Which rows of one kind have drifted, a page at a time.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DriftRow {
    pub id: Uuid,
    pub email: Option<String>,
    pub target_ids: Option<Vec<Uuid>>,
    pub columns: Option<Vec<String>>,
}

/// Up to `limit` rows of `kind` with an id of `from` or above, in id order.
pub async fn drift_page(
    db: impl PgExecutor<'_>,
    bound: &BoundMapping,
    kind: DriftKind,
    from: Uuid,
    limit: i64,
) -> sqlx::Result<Vec<DriftRow>> {
    sqlx::query_as(&bound.sql.drift_page[&kind])
        .bind(from)
        .bind(limit)
        .fetch_all(db)
        .await
}
