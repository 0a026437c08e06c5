//! Sync one user, and tell one user's drift: the domain decisions over `repo::users`.

use std::sync::Arc;

use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::compiler::bind::BoundMapping;
use crate::repo::users::{self, DriftRow, SyncRow};
use crate::vocabulary::{DriftKind, SyncAction, SyncPath};

/// The result of a successful sync: the action and the target row as it now stands.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(example = json!({
    "action": "created",
    "user": {
        "id": "00000000-0000-4000-8000-000000000001",
        "email": "ada@example.com",
        "full_name": "Ada Lovelace",
        "avatar_url": null,
        "role": "user",
        "created_at": "2026-11-20T09:30:00Z",
        "updated_at": "2026-11-21T10:00:00Z"
    }
}))]
pub struct SyncOutcome {
    pub action: SyncAction,
    /// The target row (every column of the application's table), or null when skipped.
    #[schema(value_type = Option<Object>)]
    pub user: Option<serde_json::Value>,
}

/// Why a user could not be synced.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// No `auth.users` row has this id (a token outlives its user).
    #[error("no auth user has this id")]
    UserNotFound,
    /// The auth user is soft-deleted.
    #[error("the auth user is deleted")]
    UserDeleted,
    /// Another profile holds this user's email: the same person under another id, or a unique
    /// index on the target.
    #[error("another profile holds this email")]
    EmailConflict,
    /// The user's value for this column cannot be stored in it (metadata that does not cast,
    /// or null into a NOT NULL column): the user is not synced until the value changes.
    #[error("this user's value for column `{column}` cannot be stored in it")]
    RefusedValue { column: String },
    /// The row was created and deleted again between two attempts; a retry will settle it.
    #[error("the profile changed under two attempts in a row")]
    Contended,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// The statement of a coalesced sync failed short of the data (no connection, the pool
    /// exhausted): every request it carried gets the same error.
    #[error(transparent)]
    Shared(Arc<sqlx::Error>),
}

/// Syncs one user in a single statement that reads the `auth.users` row and upserts the target.
///
/// The one retry covers a race the statement cannot see: a concurrent call created the row
/// after this statement's snapshot was taken and wrote exactly what this one would, so the
/// upsert did nothing and the snapshot shows no row. A second statement sees it as `unchanged`.
pub async fn sync_one(
    conn: &mut PgConnection,
    bound: &BoundMapping,
    user_id: Uuid,
    caller: &str,
    path: SyncPath,
) -> Result<SyncOutcome, SyncError> {
    for _ in 0..2 {
        let row = users::sync_one(&mut *conn, bound, user_id, caller, path)
            .await
            .map_err(|e| unique_violation_to_conflict(e, bound))?;
        if let Some(outcome) = decide(row)? {
            return Ok(outcome);
        }
    }
    Err(SyncError::Contended)
}

/// Turns the statement's flags into an outcome; `None` means "retry" (see `sync_one`).
pub(crate) fn decide(row: SyncRow) -> Result<Option<SyncOutcome>, SyncError> {
    if !row.found {
        return Err(SyncError::UserNotFound);
    }
    if row.deleted {
        return Err(SyncError::UserDeleted);
    }
    let action = match (row.created, &row.row) {
        (Some(true), _) => SyncAction::Created,
        (Some(false), _) => SyncAction::Updated,
        (None, _) if row.mismatched => return Err(SyncError::EmailConflict),
        (None, _) if row.skipped => SyncAction::Skipped,
        (None, _) if row.refused_column.is_some() => {
            return Err(SyncError::RefusedValue {
                column: row.refused_column.unwrap_or_default(),
            })
        }
        (None, Some(_)) => SyncAction::Unchanged,
        (None, None) => return Ok(None),
    };
    Ok(Some(SyncOutcome {
        action,
        user: row.row,
    }))
}

/// A unique violation on an index over the email column (plain or an expression such as
/// `lower(email)`) means another profile holds this user's email.
fn unique_violation_to_conflict(error: sqlx::Error, bound: &BoundMapping) -> SyncError {
    if let (sqlx::Error::Database(db_err), Some(email)) = (&error, bound.mapping.email_column()) {
        let on_email = db_err.is_unique_violation()
            && bound.shape.unique_indexes.iter().any(|idx| {
                Some(idx.name.as_str()) == db_err.constraint()
                    && (idx.columns.is_empty() || idx.columns.iter().any(|c| c == email.as_str()))
            });
        if on_email {
            return SyncError::EmailConflict;
        }
    }
    SyncError::Database(error)
}

/// The profile that stands in the way of syncing `user_id` when the sync is an
/// `EmailConflict`: the other half of the mismatched pair, for the answer to name it.
pub async fn conflicting_profile(
    db: &PgPool,
    bound: &BoundMapping,
    user_id: Uuid,
) -> Result<Option<Uuid>, SyncError> {
    Ok(users::namesake_of(db, bound, user_id).await?)
}

/// One id's drift, as `GET /v1/users/{id}/drift` reports it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"in_sync": false, "drift": ["stale"]}))]
pub struct UserDrift {
    pub in_sync: bool,
    pub drift: Vec<DriftKind>,
}

/// The drift kinds that apply to one id; `UserNotFound` when neither table knows it.
pub async fn drift_of(
    db: &PgPool,
    bound: &BoundMapping,
    user_id: Uuid,
) -> Result<UserDrift, SyncError> {
    let row: DriftRow = users::drift_one(db, bound, user_id).await?;
    if !row.in_source && !row.in_target {
        return Err(SyncError::UserNotFound);
    }
    let drift: Vec<DriftKind> = DriftKind::ALL
        .into_iter()
        .filter(|kind| row.has(*kind))
        .collect();
    Ok(UserDrift {
        in_sync: drift.is_empty(),
        drift,
    })
}
