//! The `provision` repair: the auth user an orphaned profile should have had, built from the
//! profile by running the mapping backwards. A run provisions a chunk's orphans; a Database
//! Webhook on the target table provisions one new profile at once (`heal_profile`).

use serde_json::{Map, Value};
use sqlx::PgPool;
use uuid::Uuid;

use crate::compiler::bind::BoundMapping;
use crate::compiler::mapping::{ColumnMapping, Mapping, ValueSource};
use crate::repo::repair::{self, Filed, OrphanRow};
use crate::supabase::{AdminApi, AdminApiError, NewAuthUser};
use crate::sync::engine::SyncError;
use crate::sync::heal;
use crate::sync::source::{self, Unreadable};
use crate::vocabulary::policy::{DeletedPolicy, OrphanedPolicy};
use crate::vocabulary::HealAction;
use crate::vocabulary::{AuditAction, DriftKind, SyncPath};

/// Why an orphaned profile did not get its auth user.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// The profile cannot be mapped back onto an auth user (no email and no phone).
    #[error("{0}")]
    Unmappable(String),
    #[error(transparent)]
    AdminApi(#[from] AdminApiError),
}

/// Creates the auth user of `orphan` through the admin API, and records it at once: the call
/// cannot be undone, so its event must not wait for anyone's transaction.
pub async fn provision(
    db: &PgPool,
    admin: &AdminApi,
    mapping: &Mapping,
    orphan: &OrphanRow,
    filed: impl Into<Filed<'_>>,
) -> sqlx::Result<Result<(), ProvisionError>> {
    let user = match auth_user_for(mapping, orphan.id, &orphan.row) {
        Ok(user) => user,
        Err(reason) => return Ok(Err(ProvisionError::Unmappable(reason))),
    };
    if let Err(e) = admin.create_user(&user).await {
        return Ok(Err(e.into()));
    }
    repair::record_event(
        db,
        filed,
        orphan.id,
        DriftKind::Orphaned,
        AuditAction::Provisioned,
        Some(&orphan.row),
        None,
    )
    .await?;
    Ok(Ok(()))
}

/// Why a signal about one profile could not be acted on.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error(transparent)]
    Sync(#[from] SyncError),
    /// Every profile would look orphaned to a role that cannot see `auth.users`.
    #[error(transparent)]
    Unreadable(#[from] Unreadable),
    #[error("the orphaned policy is `provision`, but no Supabase admin API is configured")]
    NoAdminApi,
    #[error(transparent)]
    Provision(#[from] ProvisionError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Brings the profile of key `id` in step after a signal about it (a Database Webhook on the
/// target table), which names the row and is never trusted for its content: the row is read
/// again. An orphaned profile gets its auth user under the `provision` policy (with a run's
/// guard: a source that the role cannot fully see is refused first), and is only reported
/// under any other, a webhook being no occasion to delete the profile an app just wrote. A
/// profile that is not orphaned is its user's: that user is healed.
pub async fn heal_profile(
    db: &PgPool,
    bound: &BoundMapping,
    orphaned: OrphanedPolicy,
    admin: Option<&AdminApi>,
    deleted: DeletedPolicy,
    id: Uuid,
    caller: &str,
) -> Result<HealAction, ProfileError> {
    let path = SyncPath::Hook;
    source::check_access(db).await??;
    let Some(orphan) = repair::orphan_one(db, bound, id).await? else {
        return Ok(heal::heal_user(db, bound, deleted, id, caller, path).await?);
    };
    if orphaned != OrphanedPolicy::Provision {
        return Ok(HealAction::OrphanReported);
    }
    let admin = admin.ok_or(ProfileError::NoAdminApi)?;
    let filed = Filed {
        run_id: None,
        caller,
        path,
    };
    provision(db, admin, &bound.mapping, &orphan, filed).await??;
    Ok(HealAction::Provisioned)
}

/// The admin API body for the orphaned row `row` (its mapped columns, as `Renderer::mapped_json`
/// gives them). A column read from `email` or `phone` becomes that field; one read from
/// metadata goes back to the first path it is read from, so that syncing the new user gives
/// the profile its own values back. Defaults and values outside `allow` are not sent: the
/// mapping would produce them anyway.
pub fn auth_user_for(mapping: &Mapping, id: Uuid, row: &Value) -> Result<NewAuthUser, String> {
    let mut user = NewAuthUser {
        id,
        email: None,
        phone: None,
        email_confirm: true,
        phone_confirm: true,
        user_metadata: Map::new(),
        app_metadata: Map::new(),
    };
    for column in &mapping.columns {
        let value = match row.get(column.name.as_str()) {
            Some(v) if !v.is_null() && !is_default(column, v) => v.clone(),
            _ => continue,
        };
        match &column.source {
            ValueSource::Column(c) if c.as_str() == "email" => {
                user.email = value.as_str().map(str::to_owned)
            }
            ValueSource::Column(c) if c.as_str() == "phone" => {
                user.phone = value.as_str().map(str::to_owned)
            }
            ValueSource::UserMetadata(paths) => {
                insert_at(&mut user.user_metadata, paths[0].segments(), value)
            }
            ValueSource::AppMetadata(paths) => {
                insert_at(&mut user.app_metadata, paths[0].segments(), value)
            }
            _ => {}
        }
    }
    if user.email.is_none() && user.phone.is_none() {
        return Err(
            "the profile has neither an email nor a phone to create an auth user with".into(),
        );
    }
    user.phone_confirm = user.phone.is_some();
    user.email_confirm = user.email.is_some();
    Ok(user)
}

/// The mapping would give this value without being told (its default, or anything outside
/// `allow`, which falls back to the default).
fn is_default(column: &ColumnMapping, value: &Value) -> bool {
    let text = value.as_str();
    let defaulted = column.default.is_some() && column.default.as_deref() == text;
    let disallowed = column
        .allow
        .as_ref()
        .is_some_and(|allow| !text.is_some_and(|t| allow.iter().any(|a| a == t)));
    defaulted || disallowed
}

fn insert_at(object: &mut Map<String, Value>, path: &[String], value: Value) {
    let (last, parents) = path.split_last().expect("a metadata path has a segment");
    let mut cursor = object;
    for segment in parents {
        let entry = cursor
            .entry(segment.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        cursor = entry.as_object_mut().expect("just made an object");
    }
    cursor.insert(last.clone(), value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_profile_maps_back_onto_an_auth_user() {
        let m = Mapping::default_mapping();
        let id = Uuid::new_v4();
        let row = json!({"email": "ada@example.com", "full_name": "Ada", "avatar_url": null,
                         "role": "admin", "created_at": "2024-01-01T00:00:00Z",
                         "updated_at": "2024-01-01T00:00:00Z"});
        let user = auth_user_for(&m, id, &row).unwrap();
        assert_eq!(user.email.as_deref(), Some("ada@example.com"));
        assert!(user.email_confirm && !user.phone_confirm);
        assert_eq!(json!(user.user_metadata), json!({"full_name": "Ada"}));
        assert_eq!(json!(user.app_metadata), json!({"role": "admin"}));
    }

    #[test]
    fn the_default_role_is_not_written_into_app_metadata() {
        let m = Mapping::default_mapping();
        let row = json!({"email": "x@example.com", "role": "user"});
        let user = auth_user_for(&m, Uuid::new_v4(), &row).unwrap();
        assert!(user.app_metadata.is_empty());
    }

    #[test]
    fn a_profile_without_email_or_phone_cannot_be_provisioned() {
        let m = Mapping::default_mapping();
        let err = auth_user_for(&m, Uuid::new_v4(), &json!({"full_name": "Nobody"})).unwrap_err();
        assert!(err.contains("neither an email nor a phone"), "{err}");
    }
}
