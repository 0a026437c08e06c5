//! Reconciliation runs: start one, read one, list the recent ones.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::extract::{page_limit, Json, Path, Query};
use crate::auth::Caller;
use crate::error::{ApiError, Problem};
use crate::state::AppState;
use crate::vocabulary::run::{Run, RunOptions};
use crate::vocabulary::DriftKind;

const MAX_RECENT: i64 = 100;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(start_run, list_runs))
        .routes(routes!(get_run))
}

/// What to reconcile.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRun {
    /// Plan only: count and list the drift, write nothing. Required, so that nobody applies a
    /// run by leaving it out.
    dry_run: bool,
    /// The kinds to reconcile; all five when absent.
    #[schema(min_items = 1)]
    kinds: Option<Vec<DriftKind>>,
    /// The most rows to repair in this run.
    #[schema(minimum = 1)]
    #[serde(default, deserialize_with = "whole_number")]
    limit: Option<u64>,
    /// Let the run delete more than USERSYNC_MAX_DELETE_SHARE of the target.
    #[serde(default)]
    allow_mass_delete: bool,
}

impl StartRun {
    fn into_options(self) -> Result<RunOptions, ApiError> {
        if self.limit == Some(0) {
            return Err(ApiError::bad_request(
                "invalid_body",
                "limit must be at least 1",
            ));
        }
        let kinds = self.kinds.unwrap_or_else(|| DriftKind::ALL.to_vec());
        if kinds.is_empty() {
            return Err(ApiError::bad_request(
                "invalid_body",
                "kinds must name at least one kind (or be left out for all)",
            ));
        }
        Ok(RunOptions {
            dry_run: self.dry_run,
            kinds,
            limit: self.limit,
            allow_mass_delete: self.allow_mass_delete,
            ..RunOptions::default()
        })
    }
}

/// Start a reconciliation run.
///
/// The run plans (counts per kind and action) and, unless it is a dry run, repairs in chunks
/// in the background; poll its `Location` for progress. One run at a time across all replicas.
#[utoipa::path(
    post, path = "/v1/reconciliations", tag = "reconciliations",
    request_body = StartRun,
    security(("bearer" = []), ("apikey" = [])),
    responses(
        (status = 202, description = "Started", body = Run,
         headers(("location" = String, description = "The run's URL"))),
        (status = 400, description = "Malformed body or unknown field", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not `application/json`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No, invalid or expired token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the service", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A run is in progress; `run_id` names it", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all)]
async fn start_run(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<StartRun>,
) -> Result<Response, ApiError> {
    caller.require_service()?;
    let options = body.into_options()?;
    let active = state
        .reconciler
        .start(&caller.audit_name(), options)
        .await?;
    let run = active.run().clone();
    let reconciler = state.reconciler.clone();
    tokio::spawn(async move {
        reconciler.execute(active, &|_| {}).await;
    });
    let location = format!("/v1/reconciliations/{}", run.id);
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(run),
    )
        .into_response())
}

/// One run: its state, plan, progress and errors.
#[utoipa::path(
    get, path = "/v1/reconciliations/{id}", tag = "reconciliations",
    params(("id" = Uuid, Path, description = "The run's id")),
    security(("bearer" = []), ("apikey" = [])),
    responses(
        (status = 200, description = "The run", body = Run),
        (status = 400, description = "The id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No, invalid or expired token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the service", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No run has this id", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(run_id = %id))]
async fn get_run(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<Run>, ApiError> {
    caller.require_service()?;
    let run = state.reconciler.get(id).await?;
    run.map(Json).ok_or(ApiError::RunNotFound)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RecentQuery {
    /// How many runs, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
}

/// The recent runs, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RunList {
    pub runs: Vec<Run>,
}

/// The most recent runs, newest first.
#[utoipa::path(
    get, path = "/v1/reconciliations", tag = "reconciliations",
    params(RecentQuery),
    security(("bearer" = []), ("apikey" = [])),
    responses(
        (status = 200, description = "Recent runs", body = RunList),
        (status = 400, description = "Bad limit", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No, invalid or expired token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the service", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all)]
async fn list_runs(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<RecentQuery>,
) -> Result<Json<RunList>, ApiError> {
    caller.require_service()?;
    let limit = page_limit(query.limit, 20, MAX_RECENT)?;
    Ok(Json(RunList {
        runs: state.reconciler.recent(limit).await?,
    }))
}

/// A JSON number that is a whole number, `64485.0` included: JSON Schema's `integer` accepts it,
/// so the API must too.
fn whole_number<'de, D>(deserializer: D) -> Result<Option<u64>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::de::Error;
    let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else {
        return Ok(None);
    };
    number
        .as_u64()
        .or_else(|| {
            number
                .as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < u64::MAX as f64)
                .map(|f| f as u64)
        })
        // The document says int64: a larger number is as invalid as a fraction.
        .filter(|n| i64::try_from(*n).is_ok())
        .map(Some)
        .ok_or_else(|| D::Error::custom("limit must be a whole number from 1 to 2^63 - 1"))
}
