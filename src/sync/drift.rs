//! The five ways the two tables disagree, and the listing of drifted rows. Their SQL
//! definitions live in `repo::sql`.

use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use crate::repo::drift;
use crate::sync::source::{self, ReadError};
use crate::sync::target::BoundMapping;

/// A kind of drift between `auth.users` (source) and the target table.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    clap::ValueEnum,
    sqlx::Type,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum DriftKind {
    /// A live source row with no target row of its id (and not mismatched).
    Missing,
    /// Source and target share the id, and an `always` column differs.
    Stale,
    /// The same person under two ids: a target row holds a live user's email under an id that
    /// no source row has.
    Mismatched,
    /// A target row whose id is in no source row (and that is not mismatched).
    Orphaned,
    /// A target row whose auth user was deleted: soft-deleted (`deleted_at` set), or gone from
    /// `auth.users` after usersync had synced it (its audit trail says the user existed).
    Deleted,
}

impl DriftKind {
    pub const ALL: [DriftKind; 5] = [
        DriftKind::Missing,
        DriftKind::Stale,
        DriftKind::Mismatched,
        DriftKind::Orphaned,
        DriftKind::Deleted,
    ];

    /// The name used on the wire, in the audit log and in SQL.
    pub fn as_str(self) -> &'static str {
        match self {
            DriftKind::Missing => "missing",
            DriftKind::Stale => "stale",
            DriftKind::Mismatched => "mismatched",
            DriftKind::Orphaned => "orphaned",
            DriftKind::Deleted => "deleted",
        }
    }
}

impl std::fmt::Display for DriftKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

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
