//! Our own extractors: the authenticated `Caller` (it runs before any path or body extractor),
//! and `Path` and `Json`, axum's with every rejection turned into `ApiError`, so that a bad
//! UUID or bad JSON looks like every other failure on the wire.

use axum::extract::path::ErrorKind;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::request::Parts;
use axum::http::StatusCode;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// The authenticated caller, from the request's credentials.
impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = state.verifier.authenticate(&parts.headers).await?;
        if let Caller::User(id) = caller {
            tracing::Span::current().record("user_id", tracing::field::display(id));
        }
        Ok(caller)
    }
}

impl Caller {
    /// Service-only endpoints: anyone else is 403 `service_only`, before any query runs.
    pub fn require_service(&self) -> Result<(), ApiError> {
        match self {
            Caller::Service => Ok(()),
            Caller::User(_) => Err(ApiError::ServiceOnly),
        }
    }
}

/// A path parameter; a malformed one is a 400 `invalid_path`.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

/// A JSON body; malformed JSON or an unknown field is a 400 `invalid_body`, a body over the
/// limit a 413.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

impl From<PathRejection> for ApiError {
    /// Names the parameter and the type it needs, never the value: a path is where a confused
    /// client puts a token, and the answer must not echo it.
    fn from(rejection: PathRejection) -> Self {
        let detail = match &rejection {
            PathRejection::FailedToDeserializePathParams(e) => match e.kind() {
                ErrorKind::ParseErrorAtKey {
                    key, expected_type, ..
                } => format!(
                    "the path parameter `{key}` is not a valid {}",
                    expected_type.rsplit("::").next().unwrap_or(expected_type)
                ),
                _ => "a path parameter is malformed".to_owned(),
            },
            _ => "a path parameter is malformed".to_owned(),
        };
        ApiError::bad_request("invalid_path", detail)
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::Status(StatusCode::PAYLOAD_TOO_LARGE),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                ApiError::Status(StatusCode::UNSUPPORTED_MEDIA_TYPE)
            }
            _ => ApiError::bad_request("invalid_body", rejection.body_text()),
        }
    }
}

impl<T: serde::Serialize> axum::response::IntoResponse for Json<T> {
    fn into_response(self) -> axum::response::Response {
        axum::Json(self.0).into_response()
    }
}

/// Query parameters; a malformed or unknown one is a 400 `invalid_query`.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::bad_request("invalid_query", rejection.body_text())
    }
}

/// A `limit` query parameter: `default` when absent, 400 `invalid_query` outside `1..=max`.
pub fn page_limit(raw: Option<i64>, default: i64, max: i64) -> Result<i64, ApiError> {
    let limit = raw.unwrap_or(default);
    if !(1..=max).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be between 1 and {max}"),
        ));
    }
    Ok(limit)
}
