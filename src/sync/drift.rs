//! The five ways the two tables disagree. Their SQL definitions live in `repo::sql`.

use serde::{Deserialize, Serialize};

/// A kind of drift between `auth.users` (source) and the target table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
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
    /// A soft-deleted source row whose target row still exists.
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
}
