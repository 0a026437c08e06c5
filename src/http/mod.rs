//! The HTTP edge: one module per resource, composed here with the middleware stack, and the
//! OpenAPI document they describe. The edge's settings live here too (`EdgeLimits`,
//! `CorsOrigins`, `MetricsAccess`, `serve::ConnectionLimits`); `config` parses them. Only `state`
//! imports it back (the rate limiter and the metrics access it holds).

mod admin;
mod dead_letters;
mod drift;
mod extract;
mod health;
mod hooks;
mod limits;
mod metrics;
mod problem;
mod reconciliations;
mod repair;
pub mod serve;
mod status;
mod users;

use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::http::{HeaderName, Request};
use axum::{BoxError, Router};
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::{Config, SwaggerUi};

pub use limits::{CorsOrigins, RateLimiter};
pub use metrics::MetricsAccess;

use crate::auth::webhook::WEBHOOK_SECRET_HEADER;
use crate::error::ApiError;
use crate::openapi::ApiDoc;
use crate::state::AppState;

/// The limits of the middleware stack and CORS (`config` parses them from the environment).
#[derive(Debug, Clone)]
pub struct EdgeLimits {
    /// A slower request is answered 503 `request_timeout`.
    pub request_timeout: Duration,
    /// Largest request body in bytes; larger is 413.
    pub body_limit: usize,
    /// Largest header section (every name and value) in bytes; larger is 431.
    pub header_limit: u32,
    /// Most API requests in flight; beyond it 503 `overloaded` at once.
    pub concurrency_limit: u32,
    /// The browser origins allowed to call the API; `None`: no CORS headers.
    pub cors_origins: Option<CorsOrigins>,
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The API's resources: what the concurrency limit guards.
fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(users::router())
        .merge(repair::router())
        .merge(status::router())
        .merge(dead_letters::router())
        .merge(drift::router())
        .merge(reconciliations::router())
        .merge(hooks::router())
}

/// The API, the probes and `/metrics`, and the OpenAPI document they describe.
fn compose(api: OpenApiRouter<AppState>) -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, mut openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(api)
        .merge(health::router())
        .merge(metrics::router())
        .split_for_parts();
    crate::openapi::document_edge_responses(&mut openapi);
    (router, openapi)
}

/// The whole OpenAPI document, as served and committed (`usersync openapi`).
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    router_and_openapi().1
}

/// The routes and the OpenAPI document they describe.
pub fn router_and_openapi() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    compose(api())
}

/// The whole application: routes, `/openapi.json` and `/docs`, and the middleware stack
/// (outermost first): request id, trace span, propagate request id, CORS, metrics,
/// problem+json for errors raised below the handlers, header-size limit, timeout, catch panic,
/// body limit. The API routes (not the probes or `/metrics`) sit behind the concurrency limit,
/// and sync behind the per-caller rate limit (the `RateLimited` extractor).
pub fn app(state: AppState, config: &EdgeLimits) -> Router {
    let overload_guard = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(|_: BoxError| async {
            ApiError::Overloaded
        }))
        .load_shed()
        .layer(GlobalConcurrencyLimitLayer::new(
            config.concurrency_limit as usize,
        ));
    let (router, openapi) = compose(api().layer(overload_guard));
    router
        // The API reference: Swagger UI with its assets compiled into the binary (no CDN).
        .merge(
            SwaggerUi::new("/docs")
                .url("/openapi.json", openapi)
                .config(Config::default().validator_url("none")),
        )
        .merge(admin::router())
        .fallback(|| async { ApiError::RouteNotFound })
        .layer(
            ServiceBuilder::new()
                .layer(SetSensitiveRequestHeadersLayer::new([
                    axum::http::header::AUTHORIZATION,
                    axum::http::header::COOKIE,
                    HeaderName::from_static("apikey"),
                    HeaderName::from_static(WEBHOOK_SECRET_HEADER),
                ]))
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(request_span)
                        .on_response(DefaultOnResponse::new().level(tracing::Level::INFO)),
                )
                .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                .option_layer(config.cors_origins.as_ref().map(limits::cors))
                .layer(axum::middleware::from_fn(metrics::track))
                .layer(axum::middleware::from_fn(problem::ensure_problem_json))
                .layer(axum::middleware::from_fn_with_state(
                    config.header_limit as usize,
                    limits::limit_header_size,
                ))
                .layer(HandleErrorLayer::new(|error: BoxError| async move {
                    if error.is::<tower::timeout::error::Elapsed>() {
                        ApiError::Timeout
                    } else {
                        ApiError::Internal(anyhow::anyhow!(error))
                    }
                }))
                .timeout(config.request_timeout)
                .layer(CatchPanicLayer::custom(problem::panic_response))
                .layer(RequestBodyLimitLayer::new(config.body_limit)),
        )
        .with_state(state)
}

/// The span every request's logs carry: method, route template (never the raw path, which may
/// hold a user id), and the request id; then, once known, the caller's id and what a sync did.
/// The access line tower-http writes at the response carries them all: one line per request.
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
        method = metrics::method_label(request.method()),
        route = %route,
        request_id = %request_id,
        user_id = tracing::field::Empty,
        action = tracing::field::Empty,
    )
}
