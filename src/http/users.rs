//! Sync-one and per-user drift.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::extract::{page_limit, Json, Path, Query};
use super::limits::RateLimited;
use crate::auth::Caller;
use crate::error::{ApiError, Problem};
use crate::meter;
use crate::repo::events::{self, UserEvent};
use crate::state::AppState;
use crate::sync::engine::{self, SyncError, SyncOutcome, UserDrift};
use crate::sync::inspect::{self, UserDetail, UserSides};
use crate::vocabulary::SyncPath;

/// The longest email searched for (RFC 5321's limit on a path is 256; a little room).
const MAX_EMAIL_LENGTH: usize = 320;
const DEFAULT_EVENTS: i64 = 50;
const MAX_EVENTS: i64 = 500;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(sync_me))
        .routes(routes!(sync_user))
        .routes(routes!(user_drift))
        .routes(routes!(get_user))
        .routes(routes!(find_users))
        .routes(routes!(user_events))
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
        (status = 409, description = "Another profile holds this email (`email_conflict`): `profile_id` names it, `repair` the request that re-keys it onto this user", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A value of this user's cannot be stored in the profile table (`invalid_value`, naming the column), or the table's own constraint refused the row (`refused_by_table`)", body = Problem, content_type = "application/problem+json"),
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
        (status = 409, description = "Another profile holds this email (`email_conflict`): `profile_id` names it, `repair` the request that re-keys it onto this user", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A value of this user's cannot be stored in the profile table (`invalid_value`, naming the column), or the table's own constraint refused the row (`refused_by_table`)", body = Problem, content_type = "application/problem+json"),
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
    let outcome = match state.syncs.sync(id, caller.audit_name()).await {
        Err(SyncError::EmailConflict) => {
            let profile_id = engine::conflicting_profile(&state.db, &state.mapping, id).await?;
            return Err(ApiError::EmailConflict {
                user_id: Some(id),
                profile_id,
            });
        }
        other => other?,
    };
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

/// One user as usersync knows them: the auth side (safe fields only), the profile, drift, a
/// pending dead letter and the latest repairs.
#[utoipa::path(
    get, path = "/v1/users/{id}", tag = "users",
    params(("id" = Uuid, Path, description = "The user's id (auth.users.id or the profile's key)")),
    security(("bearer" = []), ("apikey" = [])),
    responses(
        (status = 200, description = "The user", body = UserDetail),
        (status = 400, description = "The id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No, invalid or expired token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the service", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Neither table has this id", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<UserDetail>, ApiError> {
    caller.require_service()?;
    Ok(Json(inspect::user(&state.db, &state.mapping, id).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FindQuery {
    /// The email, in any case.
    #[param(min_length = 1, max_length = 320)]
    email: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserMatches {
    /// Every id whose auth user or profile holds the email (at most 20), in id order.
    pub users: Vec<UserSides>,
}

/// The users whose auth user or profile holds an email, compared case-insensitively.
#[utoipa::path(
    get, path = "/v1/users", tag = "users",
    params(FindQuery),
    security(("bearer" = []), ("apikey" = [])),
    responses(
        (status = 200, description = "The matches, maybe none", body = UserMatches),
        (status = 400, description = "No email, an empty one, or one over 320 characters", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No, invalid or expired token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the service", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn find_users(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<FindQuery>,
) -> Result<Json<UserMatches>, ApiError> {
    caller.require_service()?;
    let email = query.email;
    let length = email.chars().count();
    if length == 0 || length > MAX_EMAIL_LENGTH {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("email must be 1 to {MAX_EMAIL_LENGTH} characters"),
        ));
    }
    // No email holds a NUL, and Postgres cannot even compare text that does.
    if email.contains('\0') {
        return Ok(Json(UserMatches { users: Vec::new() }));
    }
    let users = inspect::by_email(&state.db, &state.mapping, &email).await?;
    Ok(Json(UserMatches { users }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only events older than this one (the previous page's `next`).
    #[param(minimum = 1)]
    before: Option<i64>,
    /// Events per page, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventPage {
    /// Newest first.
    pub events: Vec<UserEvent>,
    /// `before` of the next page; null on the last one.
    pub next: Option<i64>,
}

/// A user's audit trail, newest first, a page at a time: every repair and report usersync made
/// to them, by any path (sync-one, trigger, healing, webhook, runs).
#[utoipa::path(
    get, path = "/v1/users/{id}/events", tag = "users",
    params(("id" = Uuid, Path, description = "The user's id"), EventsQuery),
    security(("bearer" = []), ("apikey" = [])),
    responses(
        (status = 200, description = "One page, maybe empty", body = EventPage),
        (status = 400, description = "The id is not a UUID, or a bad cursor or limit", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No, invalid or expired token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the service", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn user_events(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    Query(query): Query<EventsQuery>,
) -> Result<Json<EventPage>, ApiError> {
    caller.require_service()?;
    let limit = page_limit(query.limit, DEFAULT_EVENTS, MAX_EVENTS)?;
    if query.before.is_some_and(|before| before < 1) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "before must be an event id (1 or more)",
        ));
    }
    let events = events::of_user(&state.db, id, query.before, limit).await?;
    let next = (events.len() as i64 == limit)
        .then(|| events.last().map(|e| e.event_id))
        .flatten();
    Ok(Json(EventPage { events, next }))
}
