//! Sync-one and per-user drift.

use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::extract::{Json, Path};
use super::limits::RateLimited;
use crate::auth::Caller;
use crate::error::{ApiError, Problem};
use crate::meter;
use crate::state::AppState;
use crate::sync::engine::{self, SyncOutcome, SyncPath, UserDrift};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(sync_me))
        .routes(routes!(sync_user))
        .routes(routes!(user_drift))
}

/// Sync the calling user.
///
/// For the frontend right after sign-up and for the OAuth callback after the session exchange.
/// The token only says who; the data is read from `auth.users` in the same statement that
/// writes the profile.
#[utoipa::path(
    post, path = "/v1/users/me/sync", tag = "users",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Synced", body = SyncOutcome),
        (status = 401, description = "No, invalid or expired token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a user token (anon role, or the service)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The token's user no longer exists", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Another profile holds this email", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A value of this user's cannot be stored in the profile table (`invalid_value`, naming the column)", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "The user is deleted", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over the caller's sync rate", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    )
)]
async fn sync_me(
    State(state): State<AppState>,
    RateLimited(caller): RateLimited,
) -> Result<Json<SyncOutcome>, ApiError> {
    let Caller::User(id) = caller else {
        return Err(ApiError::UserOnly);
    };
    sync(&state, caller, id).await
}

/// Sync one user by id.
///
/// A user may sync only themselves; the service may sync anyone.
#[utoipa::path(
    post, path = "/v1/users/{id}/sync", tag = "users",
    params(("id" = Uuid, Path, description = "The user's id (auth.users.id)")),
    security(("bearer" = []), ("apikey" = [])),
    responses(
        (status = 200, description = "Synced", body = SyncOutcome),
        (status = 400, description = "The id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No, invalid or expired token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Another user's id, or a role without access", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No auth user has this id", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Another profile holds this email", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A value of this user's cannot be stored in the profile table (`invalid_value`, naming the column)", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "The user is deleted", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over the caller's sync rate", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    )
)]
async fn sync_user(
    State(state): State<AppState>,
    RateLimited(caller): RateLimited,
    Path(id): Path<Uuid>,
) -> Result<Json<SyncOutcome>, ApiError> {
    if !caller.may_access(id) {
        return Err(ApiError::NotSelf);
    }
    sync(&state, caller, id).await
}

async fn sync(state: &AppState, caller: Caller, id: Uuid) -> Result<Json<SyncOutcome>, ApiError> {
    let outcome = state.syncs.sync(id, caller.audit_name()).await?;
    meter::record_sync(SyncPath::Call, outcome.action.into());
    // On the request span, so that the one access line per request says what the sync did: a
    // line of its own would double the logging cost of the service's hottest path.
    tracing::Span::current().record("action", tracing::field::debug(outcome.action));
    Ok(Json(outcome))
}

/// The drift kinds that apply to one user.
#[utoipa::path(
    get, path = "/v1/users/{id}/drift", tag = "users",
    params(("id" = Uuid, Path, description = "The user's id")),
    security(("bearer" = []), ("apikey" = [])),
    responses(
        (status = 200, description = "Drift of this id", body = UserDrift),
        (status = 400, description = "The id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No, invalid or expired token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Another user's id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Neither table has this id", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn user_drift(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<UserDrift>, ApiError> {
    if !caller.may_access(id) {
        return Err(ApiError::NotSelf);
    }
    Ok(Json(engine::drift_of(&state.db, &state.mapping, id).await?))
}
