//! The drifted rows of one kind.

use axum::extract::State;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::extract::{page_limit, Json, Query};
use crate::auth::Caller;
use crate::error::{ApiError, Problem};
use crate::state::AppState;
use crate::sync::drift::{self, DriftPage};
use crate::vocabulary::DriftKind;

/// The largest page.
const MAX_LIMIT: i64 = 1000;
const DEFAULT_LIMIT: i64 = 100;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_drift))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DriftQuery {
    /// The kind to list.
    kind: DriftKind,
    /// The last id of the previous page (its `next`).
    after: Option<Uuid>,
    /// Rows per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

/// The drifted rows of one kind, in id order, a page at a time.
#[utoipa::path(
    get, path = "/v1/drift", tag = "status",
    params(DriftQuery),
    security(("bearer" = []), ("apikey" = [])),
    responses(
        (status = 200, description = "One page", body = DriftPage),
        (status = 400, description = "Unknown kind, bad cursor or limit", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No, invalid or expired token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the service", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database is unavailable, or usersync's role cannot see every row of auth.users (`source_unreadable`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all)]
async fn list_drift(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<DriftQuery>,
) -> Result<Json<DriftPage>, ApiError> {
    caller.require_service()?;
    let limit = page_limit(query.limit, DEFAULT_LIMIT, MAX_LIMIT)?;
    let page = drift::page(&state.db, &state.mapping, query.kind, query.after, limit).await?;
    Ok(Json(page))
}
