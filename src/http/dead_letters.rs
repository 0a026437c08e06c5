//! The dead letters not yet healed.

use axum::extract::State;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::extract::{Json, Path};
use crate::auth::Caller;
use crate::error::{ApiError, Problem};
use crate::repo::dead_letters::{self, ClaimedLetter, DeadLetter};
use crate::state::AppState;
use crate::vocabulary::HealAction;
use crate::worker::{self, Attempt};

/// At most this many are listed: a dashboard, not an export.
const LISTED: i64 = 100;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_dead_letters))
        .routes(routes!(retry_dead_letter))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct DeadLetterList {
    /// The oldest unresolved dead letters (at most 100), each with its cause.
    pub dead_letters: Vec<DeadLetter>,
}

/// Failed trigger syncs that the healing loop has not healed yet, oldest first, with the error
/// that caused each.
#[utoipa::path(
    get, path = "/v1/dead-letters", tag = "status",
    security(("bearer" = []), ("apikey" = [])),
    responses(
        (status = 200, description = "Pending dead letters", body = DeadLetterList),
        (status = 401, description = "No, invalid or expired token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the service", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_dead_letters(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<DeadLetterList>, ApiError> {
    caller.require_service()?;
    Ok(Json(DeadLetterList {
        dead_letters: dead_letters::pending(&state.db, LISTED).await?,
    }))
}

/// What a retry by hand did.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RetryOutcome {
    pub user_id: Uuid,
    /// The user is in step again and the letter resolved.
    pub healed: bool,
    /// What healing did, when it healed.
    pub action: Option<HealAction>,
    /// The letter as it stands after a failed attempt: the new cause, one more attempt, and
    /// its next scheduled attempt.
    pub dead_letter: Option<DeadLetter>,
}

/// Heal a dead letter's user now instead of at its next scheduled attempt, and answer with the
/// outcome. The same attempt as the healing loop's: the user is re-read from `auth.users`, and
/// a failure keeps the letter with its latest cause.
#[utoipa::path(
    post, path = "/v1/dead-letters/{user_id}/retry", tag = "status",
    params(("user_id" = Uuid, Path, description = "The user whose dead letter to retry")),
    security(("bearer" = []), ("apikey" = [])),
    responses(
        (status = 200, description = "Attempted: healed, or failed again (see `healed`)", body = RetryOutcome),
        (status = 400, description = "The id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No, invalid or expired token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the service", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No dead letter is pending for this user", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn retry_dead_letter(
    State(state): State<AppState>,
    caller: Caller,
    Path(user_id): Path<Uuid>,
) -> Result<Json<RetryOutcome>, ApiError> {
    caller.require_service()?;
    let letter = dead_letters::pending_of(&state.db, user_id)
        .await?
        .ok_or(ApiError::NoDeadLetter)?;
    let claimed = ClaimedLetter {
        id: letter.id,
        user_id,
        attempts: letter.attempts,
    };
    let attempted = worker::attempt(
        &state.db,
        &state.mapping,
        state.policy,
        &state.retry_schedule,
        &claimed,
        &caller.audit_name(),
    )
    .await?;
    Ok(Json(match attempted {
        Attempt::Healed(action) => RetryOutcome {
            user_id,
            healed: true,
            action: Some(action),
            dead_letter: None,
        },
        Attempt::Failed(_) => RetryOutcome {
            user_id,
            healed: false,
            action: None,
            dead_letter: dead_letters::pending_of(&state.db, user_id).await?,
        },
    }))
}
