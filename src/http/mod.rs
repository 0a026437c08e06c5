//! The HTTP edge: one module per resource, composed here with the middleware stack.

mod extract;
mod health;
mod hooks;
mod problem;
mod status;
mod users;

use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::http::{HeaderName, Request};
use axum::routing::get;
use axum::{BoxError, Router};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::auth::webhook::WEBHOOK_SECRET_HEADER;
use crate::error::ApiError;
use crate::openapi::ApiDoc;
use crate::state::AppState;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The routes and the OpenAPI document they describe.
pub fn router_and_openapi() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(users::router())
        .merge(status::router())
        .merge(hooks::router())
        .merge(health::router())
        .split_for_parts()
}

/// Limits the edge enforces.
#[derive(Debug, Clone, Copy)]
pub struct EdgeLimits {
    pub request_timeout: Duration,
    pub body_limit: usize,
}

/// The whole application: routes, `/openapi.json`, and the middleware stack (outermost first):
/// request id, trace span, propagate request id, problem+json for errors raised below the
/// handlers, timeout, catch panic, body limit.
pub fn app(state: AppState, limits: EdgeLimits) -> Router {
    let (router, openapi) = router_and_openapi();
    let openapi_json = serde_json::to_value(&openapi).expect("the OpenAPI document serializes");
    router
        .route(
            "/openapi.json",
            get(move || async move { axum::Json(openapi_json.clone()) }),
        )
        .fallback(|| async { ApiError::RouteNotFound })
        .layer(
            ServiceBuilder::new()
                .layer(SetSensitiveRequestHeadersLayer::new([
                    axum::http::header::AUTHORIZATION,
                    HeaderName::from_static("apikey"),
                    HeaderName::from_static(WEBHOOK_SECRET_HEADER),
                ]))
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(request_span))
                .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                .layer(axum::middleware::from_fn(problem::ensure_problem_json))
                .layer(HandleErrorLayer::new(|error: BoxError| async move {
                    if error.is::<tower::timeout::error::Elapsed>() {
                        ApiError::Timeout
                    } else {
                        ApiError::Internal(anyhow::anyhow!(error))
                    }
                }))
                .timeout(limits.request_timeout)
                .layer(CatchPanicLayer::custom(problem::panic_response))
                .layer(RequestBodyLimitLayer::new(limits.body_limit)),
        )
        .with_state(state)
}

/// The span every request's logs carry: method, route template (never the raw path, which may
/// hold a user id), and the request id.
fn request_span<B>(request: &Request<B>) -> tracing::Span {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let request_id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    tracing::info_span!(
        "request",
        method = %request.method(),
        route = %route,
        request_id = %request_id,
        user_id = tracing::field::Empty,
    )
}
