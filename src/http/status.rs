//! The project-wide drift status.

use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::Json;
use crate::auth::Caller;
use crate::error::{ApiError, Problem};
use crate::state::AppState;
use crate::sync::status::{self, Status};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_status))
}

/// Drift counts per kind, source and target totals, pending dead letters and the last run.
#[utoipa::path(
    get, path = "/v1/status", tag = "status",
    security(("bearer" = []), ("apikey" = [])),
    responses(
        (status = 200, description = "Current status", body = Status),
        (status = 401, description = "No, invalid or expired token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the service", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database is unavailable, or usersync's role cannot see every row of auth.users (`source_unreadable`, naming the cause and the fix)", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_status(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Status>, ApiError> {
    caller.require_service()?;
    Ok(Json(status::status(&state.db, &state.mapping).await?))
}
