//! One user as usersync knows them: both sides, drift, a pending dead letter and the latest
//! repairs. It answers an admin's first question ("alice says her profile is wrong: what do
//! you know about her?") with one request instead of four tables.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use crate::compiler::bind::BoundMapping;
use crate::repo::dead_letters::{self, DeadLetter};
use crate::repo::events::{self, UserEvent};
use crate::repo::users;
use crate::sync::engine::{self, SyncError};
use crate::vocabulary::DriftKind;

/// The latest repairs shown with a user; the rest are a page of `GET /v1/users/{id}/events`.
const LATEST_REPAIRS: i64 = 10;
/// Most users one email search returns: an email names one person, or a handful when drifted.
const MOST_MATCHES: usize = 20;

/// The auth side of a user: what tells an admin why a profile is wrong, and nothing that
/// authenticates (no password hash, no token) or that the mapping does not read.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuthSide {
    pub email: Option<String>,
    pub phone: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub last_sign_in_at: Option<DateTime<Utc>>,
    /// Set when Supabase Auth soft-deleted the user.
    pub deleted_at: Option<DateTime<Utc>>,
    pub is_anonymous: Option<bool>,
    pub is_sso_user: Option<bool>,
    /// The sign-in providers Supabase Auth lists in the app metadata.
    pub providers: Vec<String>,
    /// The app metadata's `role`, if the project sets one.
    pub role: Option<String>,
    /// The values the mapping would write for the compared columns, by column: set side by
    /// side with `profile` they show which columns differ.
    #[schema(value_type = Object)]
    pub mapped: serde_json::Map<String, serde_json::Value>,
}

/// Both sides of one id.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct UserSides {
    pub id: Uuid,
    /// `auth.users`, or null when no auth user has the id.
    pub auth: Option<AuthSide>,
    /// The profile's key and mapped columns, or null when it has none.
    #[schema(value_type = Option<Object>)]
    pub profile: Option<serde_json::Value>,
}

/// Everything usersync knows about one id.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct UserDetail {
    #[serde(flatten)]
    pub sides: UserSides,
    pub in_sync: bool,
    pub drift: Vec<DriftKind>,
    /// A failed trigger sync of this user not healed yet.
    pub dead_letter: Option<DeadLetter>,
    /// The latest repairs and reports, newest first (at most 10).
    pub repairs: Vec<UserEvent>,
}

/// Both sides of one id, as they are now.
pub async fn sides(db: &PgPool, bound: &BoundMapping, id: Uuid) -> Result<UserSides, SyncError> {
    let row = users::sides(db, bound, id).await?;
    let auth = row
        .auth
        .map(serde_json::from_value::<AuthSide>)
        .transpose()
        .map_err(|e| SyncError::Database(sqlx::Error::Decode(Box::new(e))))?;
    Ok(UserSides {
        id,
        auth,
        profile: row.profile,
    })
}

/// One user in full; `UserNotFound` when neither table has the id.
pub async fn user(db: &PgPool, bound: &BoundMapping, id: Uuid) -> Result<UserDetail, SyncError> {
    let drift = engine::drift_of(db, bound, id).await?;
    Ok(UserDetail {
        sides: sides(db, bound, id).await?,
        in_sync: drift.in_sync,
        drift: drift.drift,
        dead_letter: dead_letters::pending_of(db, id).await?,
        repairs: events::of_user(db, id, None, LATEST_REPAIRS).await?,
    })
}

/// The users whose auth user or profile holds `email`, in any case.
pub async fn by_email(
    db: &PgPool,
    bound: &BoundMapping,
    email: &str,
) -> Result<Vec<UserSides>, SyncError> {
    let mut ids = users::find_by_email(db, bound, email).await?;
    ids.sort();
    ids.truncate(MOST_MATCHES);
    let mut found = Vec::with_capacity(ids.len());
    for id in ids {
        found.push(sides(db, bound, id).await?);
    }
    Ok(found)
}
