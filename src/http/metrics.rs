//! `GET /metrics`, and the middleware that counts and times every request.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::MetricsAccess;
use crate::error::{ApiError, Problem};
use crate::meter;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(metrics))
}

/// Prometheus text format: requests and latency by route and status, sync actions by path and
/// kind, drift counts by kind, dead letters pending, the age of the oldest unsynced user, and
/// the seconds since the last successful run.
///
/// Public by default; `USERSYNC_METRICS_ACCESS=service` puts it behind the service's
/// credentials.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses(
        (status = 200, description = "Prometheus text exposition format", body = String, content_type = "text/plain; version=0.0.4"),
        (status = 401, description = "Credentials required (`USERSYNC_METRICS_ACCESS=service`)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the service", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    if state.metrics_access == MetricsAccess::Service {
        state
            .verifier
            .authenticate(&headers)
            .await?
            .require_service()?;
    }
    let text = state.meter.render(&state.db, &state.mapping).await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// Records every request by method, route template and status.
pub async fn track(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    meter::record_request(
        &method,
        &route,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}
