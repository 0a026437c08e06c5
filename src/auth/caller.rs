//! The authenticated caller, as an axum extractor that runs before any path or body extractor.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;

/// Who is asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// A signed-in user (an access token with role `authenticated`).
    User(Uuid),
    /// The project's backend: a `service_role` token or a configured secret key.
    Service,
}

impl Caller {
    /// Users may touch only their own id; the service any.
    pub fn may_access(&self, user_id: Uuid) -> bool {
        match self {
            Caller::User(id) => *id == user_id,
            Caller::Service => true,
        }
    }

    /// How the audit log names this caller.
    pub fn audit_name(&self) -> String {
        match self {
            Caller::User(id) => format!("user:{id}"),
            Caller::Service => "service".to_owned(),
        }
    }
}

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
