//! The API's one error type, and the one place it becomes HTTP: `application/problem+json`
//! (RFC 9457) with a stable machine-readable `code`.
//!
//! Nothing internal crosses this line: a 5xx is logged here, once, with its cause chain, and the
//! client gets a fixed sentence.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::auth::AuthError;
use crate::sync::engine::SyncError;
use crate::sync::provision::{ProfileError, ProvisionError};
use crate::sync::reconcile::StartError;
use crate::sync::source::{ReadError, Unreadable};
use crate::sync::user_repair::RepairError;
use crate::vocabulary::policy::Action;

/// Seconds a client should wait before retrying a 503.
const RETRY_AFTER_SECONDS: &str = "1";

/// Every way a request can fail.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("a user may only act on their own id")]
    NotSelf,
    #[error("this endpoint is for the service (a service_role token or a secret key)")]
    ServiceOnly,
    #[error("this endpoint is for a signed-in user")]
    UserOnly,
    #[error("the webhook secret is wrong (or none is configured)")]
    WebhookSecret,
    #[error("{detail}")]
    BadRequest { code: &'static str, detail: String },
    #[error("no auth user has this id")]
    UserNotFound,
    #[error("the auth user is deleted")]
    UserDeleted,
    #[error("{}", email_conflict_detail(*.user_id, *.profile_id))]
    EmailConflict {
        /// The user synced, when known: the repair is theirs.
        user_id: Option<uuid::Uuid>,
        /// The profile that holds the email.
        profile_id: Option<uuid::Uuid>,
    },
    #[error("this user's value for column `{column}` cannot be stored in the profile table; the user is synced once the value in auth.users changes")]
    RefusedValue { column: String },
    #[error("the profile table refused this user's row ({detail}); nothing was written, and the user is synced once the table or the user's data allows it")]
    RefusedByTable { detail: String },
    #[error("{0}")]
    SourceUnreadable(#[from] Unreadable),
    #[error("this payload is about a table usersync does not sync: it takes auth.users and the profile table, {target}")]
    UnknownTable { target: String },
    #[error("{detail}")]
    RepairRefused { code: &'static str, detail: String },
    #[error("the repair failed: {detail}")]
    RepairFailed { detail: String },
    #[error("the orphaned profile did not get its auth user: {0}")]
    ProvisionFailed(#[source] ProvisionError),
    #[error("no such route")]
    RouteNotFound,
    #[error("no reconciliation run has this id")]
    RunNotFound,
    #[error("this user has no dead letter pending")]
    NoDeadLetter,
    #[error("a reconciliation run is in progress (`run_id` names it); start another once it has finished")]
    RunInProgress { run_id: Option<uuid::Uuid> },
    #[error("{0}")]
    Status(StatusCode),
    #[error("too many requests: retry after the time in `Retry-After`")]
    RateLimited { retry_after: Duration },
    #[error("the request took longer than the configured timeout; what it asked for may still be done (every write of usersync's is idempotent, and checked again as it is made): it is safe to retry")]
    Timeout,
    #[error("the service is handling as many requests as it may; retry shortly")]
    Overloaded,
    #[error("the profile is being changed concurrently; retry")]
    Contended,
    #[error("the database is unavailable")]
    Unavailable(#[source] Arc<sqlx::Error>),
    #[error("not ready: {failing}")]
    NotReady {
        failing: String,
        checks: serde_json::Value,
    },
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

/// The problem+json body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({
    "type": "urn:usersync:problem:not_self",
    "title": "Forbidden",
    "status": 403,
    "detail": "a user may only act on their own id",
    "code": "not_self"
}))]
pub struct Problem {
    /// A URI naming the problem type: `urn:usersync:problem:<code>`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Stable and machine-readable: branch on this, not on `title` or `detail`.
    pub code: String,
    /// Readiness checks, on a 503 from `/readyz`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub checks: Option<serde_json::Value>,
    /// The run in progress, on a 409 `run_in_progress`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<uuid::Uuid>,
    /// On a 409 `email_conflict`: the profile that holds the user's email.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile_id: Option<uuid::Uuid>,
    /// On a 409 `email_conflict` of a sync: the request that resolves it (`POST` its `path`
    /// with its `body`), the re-key of that profile onto the user's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub repair: Option<serde_json::Value>,
}

/// What a 409 `email_conflict` says, naming what it knows.
fn email_conflict_detail(user_id: Option<uuid::Uuid>, profile_id: Option<uuid::Uuid>) -> String {
    let holder = match profile_id {
        Some(profile) => format!("profile {profile} holds this email"),
        None => "another profile holds this email".to_owned(),
    };
    match user_id {
        Some(user) => format!(
            "{holder} (the same person under another id?): re-key it onto this user with \
             POST /v1/users/{user}/repair {{\"action\": \"rekey\"}}, or \
             `usersync repair --user {user} --action rekey`"
        ),
        None => format!(
            "{holder} (the same person under another id?); reconcile with the `rekey` repair"
        ),
    }
}

impl ApiError {
    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            detail: detail.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Auth(AuthError::ForbiddenRole(_)) => StatusCode::FORBIDDEN,
            ApiError::Auth(_) | ApiError::WebhookSecret => StatusCode::UNAUTHORIZED,
            ApiError::NotSelf | ApiError::ServiceOnly | ApiError::UserOnly => StatusCode::FORBIDDEN,
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::UserNotFound
            | ApiError::RouteNotFound
            | ApiError::RunNotFound
            | ApiError::NoDeadLetter => StatusCode::NOT_FOUND,
            ApiError::UserDeleted => StatusCode::GONE,
            ApiError::RefusedValue { .. }
            | ApiError::RefusedByTable { .. }
            | ApiError::UnknownTable { .. }
            | ApiError::RepairFailed { .. }
            | ApiError::ProvisionFailed(ProvisionError::Unmappable(_)) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::ProvisionFailed(ProvisionError::AdminApi(_)) => StatusCode::BAD_GATEWAY,
            ApiError::EmailConflict { .. }
            | ApiError::RunInProgress { .. }
            | ApiError::RepairRefused { .. } => StatusCode::CONFLICT,
            ApiError::Status(status) => *status,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Timeout
            | ApiError::Overloaded
            | ApiError::Contended
            | ApiError::Unavailable(_)
            | ApiError::SourceUnreadable(_)
            | ApiError::NotReady { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Auth(e) => match e {
                AuthError::Missing => "missing_credentials",
                AuthError::Invalid => "invalid_token",
                AuthError::UnknownKey => "unknown_key",
                AuthError::Expired => "token_expired",
                AuthError::NotYetValid => "token_not_yet_valid",
                AuthError::WrongAudience => "invalid_audience",
                AuthError::WrongIssuer => "invalid_issuer",
                AuthError::InvalidSubject => "invalid_subject",
                AuthError::ForbiddenRole(_) => "forbidden_role",
            },
            ApiError::NotSelf => "not_self",
            ApiError::ServiceOnly => "service_only",
            ApiError::UserOnly => "user_only",
            ApiError::WebhookSecret => "invalid_webhook_secret",
            ApiError::BadRequest { code, .. } => code,
            ApiError::UserNotFound => "user_not_found",
            ApiError::UserDeleted => "user_deleted",
            ApiError::EmailConflict { .. } => "email_conflict",
            ApiError::RefusedValue { .. } => "invalid_value",
            ApiError::RefusedByTable { .. } => "refused_by_table",
            ApiError::SourceUnreadable(_) => "source_unreadable",
            ApiError::UnknownTable { .. } => "unknown_table",
            ApiError::RepairRefused { code, .. } => code,
            ApiError::RepairFailed { .. } => "repair_failed",
            ApiError::ProvisionFailed(_) => "provision_failed",
            ApiError::RouteNotFound => "not_found",
            ApiError::RunNotFound => "run_not_found",
            ApiError::NoDeadLetter => "no_dead_letter",
            ApiError::RunInProgress { .. } => "run_in_progress",
            ApiError::Status(status) => status_code_name(*status),
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Timeout => "request_timeout",
            ApiError::Overloaded => "overloaded",
            ApiError::Contended => "sync_contended",
            ApiError::Unavailable(_) => "database_unavailable",
            ApiError::NotReady { .. } => "not_ready",
            ApiError::Internal(_) => "internal",
        }
    }

    fn problem(&self) -> Problem {
        let status = self.status();
        let code = self.code();
        Problem {
            kind: format!("urn:usersync:problem:{code}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: self.to_string(),
            code: code.to_owned(),
            checks: match self {
                ApiError::NotReady { checks, .. } => Some(checks.clone()),
                _ => None,
            },
            run_id: match self {
                ApiError::RunInProgress { run_id } => *run_id,
                _ => None,
            },
            profile_id: match self {
                ApiError::EmailConflict { profile_id, .. } => *profile_id,
                _ => None,
            },
            repair: match self {
                ApiError::EmailConflict {
                    user_id: Some(id), ..
                } => Some(serde_json::json!({
                    "path": format!("/v1/users/{id}/repair"),
                    "body": {"action": Action::Rekey},
                })),
                _ => None,
            },
        }
    }
}

/// Codes for errors that arise below the handlers (the router, the body limit), by status.
fn status_code_name(status: StatusCode) -> &'static str {
    match status {
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "headers_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        StatusCode::REQUEST_TIMEOUT => "request_timeout",
        s if s.is_client_error() => "bad_request",
        _ => "internal",
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = self.problem();
        match &self {
            ApiError::Internal(cause) => tracing::error!(error = ?cause, "request failed"),
            ApiError::Unavailable(cause) => tracing::error!(error = %cause, "database unavailable"),
            _ => {}
        }
        let status = self.status();
        let mut response = (status, axum::Json(problem)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            // RFC 6750: a challenge on every 401, with `error` once credentials were sent.
            let challenge = if matches!(self, ApiError::Auth(AuthError::Missing)) {
                "Bearer realm=\"usersync\""
            } else {
                "Bearer realm=\"usersync\", error=\"invalid_token\""
            };
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        if let ApiError::RateLimited { retry_after } = &self {
            // Whole seconds, rounded up: retrying at the advertised time must succeed.
            let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECONDS),
            );
        }
        response
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        Arc::new(error).into()
    }
}

/// A database error shared by the requests of one coalesced sync (see `sync::coalesce`).
impl From<Arc<sqlx::Error>> for ApiError {
    fn from(error: Arc<sqlx::Error>) -> Self {
        if crate::sqlstate::is_unavailable(&error) {
            ApiError::Unavailable(error)
        } else if crate::sqlstate::is_refused_by_data(&error) {
            // The target's own constraint or type refused one user's row: that user's problem,
            // as a run and the trigger treat it, not the service's.
            ApiError::RefusedByTable {
                detail: crate::sqlstate::describe(&error),
            }
        } else {
            ApiError::Internal(anyhow::anyhow!(
                "database error: {}",
                crate::sqlstate::describe(&error)
            ))
        }
    }
}

impl From<SyncError> for ApiError {
    fn from(error: SyncError) -> Self {
        match error {
            SyncError::UserNotFound => ApiError::UserNotFound,
            SyncError::UserDeleted => ApiError::UserDeleted,
            SyncError::EmailConflict => ApiError::EmailConflict {
                user_id: None,
                profile_id: None,
            },
            SyncError::RefusedValue { column } => ApiError::RefusedValue { column },
            SyncError::Contended => ApiError::Contended,
            SyncError::Database(e) => e.into(),
            SyncError::Shared(e) => e.into(),
        }
    }
}

impl From<RepairError> for ApiError {
    fn from(error: RepairError) -> Self {
        let refused = |code, e: &RepairError| ApiError::RepairRefused {
            code,
            detail: e.to_string(),
        };
        match error {
            RepairError::UserNotFound => ApiError::UserNotFound,
            RepairError::InSync => refused("in_sync", &error),
            RepairError::ReportOnly(_) => refused("report_only", &error),
            RepairError::DoesNotFit { .. } => refused("action_does_not_fit", &error),
            RepairError::AmbiguousEmail(_) => refused("ambiguous_email", &error),
            RepairError::RekeyRefused(_) => refused("rekey_refused", &error),
            RepairError::NoAdminApi => refused("no_admin_api", &error),
            RepairError::Failed(detail) => ApiError::RepairFailed { detail },
            RepairError::Unreadable(e) => ApiError::SourceUnreadable(e),
            RepairError::Start(e) => e.into(),
            RepairError::Sync(e) => e.into(),
            RepairError::Database(e) => e.into(),
        }
    }
}

impl From<ProfileError> for ApiError {
    fn from(error: ProfileError) -> Self {
        match error {
            ProfileError::Sync(e) => e.into(),
            ProfileError::Unreadable(e) => ApiError::SourceUnreadable(e),
            // `serve` refuses to start with the `provision` policy and no admin API.
            e @ ProfileError::NoAdminApi => ApiError::Internal(e.into()),
            ProfileError::Provision(e) => ApiError::ProvisionFailed(e),
            ProfileError::Database(e) => e.into(),
        }
    }
}

impl From<ReadError> for ApiError {
    fn from(error: ReadError) -> Self {
        match error {
            ReadError::Unreadable(e) => ApiError::SourceUnreadable(e),
            ReadError::Database(e) => e.into(),
        }
    }
}

impl From<StartError> for ApiError {
    fn from(error: StartError) -> Self {
        match error {
            StartError::InProgress { run_id } => ApiError::RunInProgress { run_id },
            StartError::Database(e) => e.into(),
        }
    }
}
