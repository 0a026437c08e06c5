//! The dead letters not yet healed.

use axum::extract::State;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::Json;
use crate::auth::Caller;
use crate::error::{ApiError, Problem};
use crate::repo::dead_letters::{self, DeadLetter};
use crate::state::AppState;

/// At most this many are listed: a dashboard, not an export.
const LISTED: i64 = 100;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_dead_letters))
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
