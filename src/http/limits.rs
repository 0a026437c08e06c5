//! The edge's limits, each with a clear answer: a per-caller rate limit on sync (429 with
//! `Retry-After`), a global concurrency limit on the API (503 `overloaded`), a header-size limit
//! (431), and CORS for the configured origins. The body limit (413) and the request timeout
//! (503) are tower-http's and tower's, wired in `http/mod.rs`.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota};
use tower_http::cors::{AllowOrigin, CorsLayer};
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// Every this many checks, forget callers whose quota has fully replenished, so that the
/// limiter's memory follows the number of recent callers, not of all callers ever seen.
const PRUNE_EVERY: u64 = 4096;

/// How long browsers may cache a preflight answer.
const CORS_MAX_AGE: Duration = Duration::from_secs(3600);

/// Whom a quota belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum RateKey {
    User(Uuid),
    /// A caller that did not authenticate, by the address of the connection (a proxy in front
    /// of the service makes this the proxy's: `X-Forwarded-For` can be forged, so it is not
    /// read).
    Address(IpAddr),
    /// No connection address is known (the router driven without a socket).
    Unknown,
}

/// The per-caller sync rate limit (GCRA, from `governor`).
pub struct RateLimiter {
    limiter: DefaultKeyedRateLimiter<RateKey>,
    checks: AtomicU64,
}

impl RateLimiter {
    /// `None` when `per_minute` is 0 (the limit is off).
    pub fn new(per_minute: u32, burst: u32) -> Option<Self> {
        let per_minute = NonZeroU32::new(per_minute)?;
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        Some(Self {
            limiter: DefaultKeyedRateLimiter::dashmap(
                Quota::per_minute(per_minute).allow_burst(burst),
            ),
            checks: AtomicU64::new(0),
        })
    }

    fn check(&self, key: RateKey) -> Result<(), ApiError> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
        self.limiter.check_key(&key).map_err(|not_until| {
            let retry_after = not_until.wait_time_from(self.limiter.clock().now());
            tracing::info!(
                retry_after_ms = retry_after.as_millis() as u64,
                "rate limited"
            );
            ApiError::RateLimited { retry_after }
        })
    }
}

/// The caller of a rate-limited endpoint: authenticated as [`Caller`] is, then counted against
/// its quota. A user is counted by id; a request that fails to authenticate is counted by its
/// connection's address before its 401 is returned, so that guessing tokens is limited too. The
/// service is not counted.
pub struct RateLimited(pub Caller);

impl FromRequestParts<AppState> for RateLimited {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await;
        let Some(limiter) = &state.rate_limiter else {
            return caller.map(RateLimited);
        };
        let key = match &caller {
            Ok(Caller::Service) => None,
            Ok(Caller::User(id)) => Some(RateKey::User(*id)),
            Err(_) => Some(
                parts
                    .extensions
                    .get::<ConnectInfo<SocketAddr>>()
                    .map_or(RateKey::Unknown, |ConnectInfo(addr)| {
                        RateKey::Address(addr.ip())
                    }),
            ),
        };
        if let Some(key) = key {
            limiter.check(key)?;
        }
        caller.map(RateLimited)
    }
}

/// Answers 431 when the request's header section (every name and value) exceeds `limit`
/// bytes. hyper itself refuses far larger ones (about 400 KiB, or over 100 headers) with a bare
/// 431 before any of this runs.
pub async fn limit_header_size(
    State(limit): State<usize>,
    request: Request,
    next: Next,
) -> Response {
    let size: usize = request
        .headers()
        .iter()
        // `name: value\r\n`
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if size > limit {
        return ApiError::Status(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE).into_response();
    }
    next.run(request).await
}

/// The origins CORS allows: any, or a list of exact `scheme://host[:port]` origins, each as
/// browsers send the `Origin` header (`config` parses and normalises them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    Any,
    List(Vec<String>),
}

/// CORS for the configured origins: what a browser app needs to call the API with a bearer
/// token or an `apikey`, and to read the request id and `Retry-After` of any answer. No
/// credentials mode: the API reads no cookies.
pub fn cors(origins: &CorsOrigins) -> CorsLayer {
    let allow_origin = match origins {
        CorsOrigins::Any => AllowOrigin::any(),
        CorsOrigins::List(list) => AllowOrigin::list(
            list.iter()
                .filter_map(|origin| HeaderValue::from_str(origin).ok()),
        ),
    };
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("apikey"),
            HeaderName::from_static("x-request-id"),
        ])
        .expose_headers([
            HeaderName::from_static("x-request-id"),
            header::RETRY_AFTER,
            header::WWW_AUTHENTICATE,
        ])
        .max_age(CORS_MAX_AGE)
}
