//! Healing: bring one user back in step. Used by the healing loop (a dead letter) and by the
//! database webhook; every drifted user at once is a reconciliation run's work.
//!
//! Every heal re-reads `auth.users`: a dead letter, a webhook payload or a notification says
//! *which* user to look at, never what the user looks like, so a late or replayed signal can
//! never roll a row back.

use sqlx::PgPool;
use uuid::Uuid;

use crate::compiler::bind::BoundMapping;
use crate::repo::users;
use crate::sync::engine::{self, SyncError};
use crate::vocabulary::policy::DeletedPolicy;
use crate::vocabulary::{HealAction, SyncPath};

/// Syncs a live user; applies the deleted policy to a user who is gone or soft-deleted.
pub async fn heal_user(
    db: &PgPool,
    bound: &BoundMapping,
    policy: DeletedPolicy,
    user_id: Uuid,
    caller: &str,
    path: SyncPath,
) -> Result<HealAction, SyncError> {
    // The connection goes back before `apply_deleted` takes one: a pool of one must not wait
    // on itself.
    let synced = {
        let mut conn = db.acquire().await?;
        engine::sync_one(&mut conn, bound, user_id, caller, path).await
    };
    match synced {
        Ok(outcome) => Ok(outcome.action.into()),
        Err(SyncError::UserNotFound | SyncError::UserDeleted) => {
            apply_deleted(db, bound, policy, user_id, caller, path).await
        }
        Err(other) => Err(other),
    }
}

/// Applies the deleted policy to a user who is gone or soft-deleted; a user who is live (again)
/// is left alone and reported `unchanged`.
pub async fn apply_deleted(
    db: &PgPool,
    bound: &BoundMapping,
    policy: DeletedPolicy,
    user_id: Uuid,
    caller: &str,
    path: SyncPath,
) -> Result<HealAction, SyncError> {
    let row = users::apply_deleted(db, bound, policy, user_id, caller, path).await?;
    Ok(HealAction::of_deleted_policy(row.gone, row.removed))
}
