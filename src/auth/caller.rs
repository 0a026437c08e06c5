//! The authenticated caller. `http::extract` makes it an axum extractor (it runs before any
//! path or body extractor) and gives it `require_service`, whose refusal is an HTTP answer.

use uuid::Uuid;

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
