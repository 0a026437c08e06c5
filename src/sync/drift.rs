//! The five ways the two tables disagree, and the listing of drifted rows. Their SQL
//! definitions live in `compiler::render`.

use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::compiler::bind::BoundMapping;
use crate::repo::drift;
use crate::sync::source::{self, ReadError};
use crate::vocabulary::DriftKind;

/// One drifted row.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DriftItem {
    /// The source id (missing, stale, mismatched) or the target id (orphaned, deleted).
    pub id: Uuid,
    pub email: Option<String>,
    /// Mismatched only: the target rows holding this user's email under another id (more than
    /// one makes the pair ambiguous).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_ids: Option<Vec<Uuid>>,
    /// Stale only: the `always` columns that differ.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<String>>,
}

/// A page of drifted rows of one kind, in id order.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DriftPage {
    pub kind: DriftKind,
    pub items: Vec<DriftItem>,
    /// Pass as `after` for the next page; null on the last page.
    pub next: Option<Uuid>,
}

/// The id right after `id` in uuid order, if any. Postgres compares uuids as 16 big-endian
/// bytes, which is the order of `Uuid::as_u128`.
fn successor(id: Uuid) -> Option<Uuid> {
    id.as_u128().checked_add(1).map(Uuid::from_u128)
}

/// Up to `limit` rows of `kind` whose id sorts after `after`.
pub async fn page(
    db: &PgPool,
    bound: &BoundMapping,
    kind: DriftKind,
    after: Option<Uuid>,
    limit: i64,
) -> Result<DriftPage, ReadError> {
    source::check_access(db).await??;
    let from = match after {
        None => Uuid::nil(),
        Some(id) => match successor(id) {
            Some(next) => next,
            None => {
                return Ok(DriftPage {
                    kind,
                    items: Vec::new(),
                    next: None,
                })
            }
        },
    };
    // One row more than asked says whether there is a next page.
    let mut rows = drift::drift_page(db, bound, kind, from, limit + 1).await?;
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let more = rows.len() > limit;
    rows.truncate(limit);
    let items: Vec<DriftItem> = rows
        .into_iter()
        .map(|r| DriftItem {
            id: r.id,
            email: r.email,
            target_ids: r.target_ids,
            columns: r.columns,
        })
        .collect();
    let next = if more {
        items.last().map(|i| i.id)
    } else {
        None
    };
    Ok(DriftPage { kind, items, next })
}
