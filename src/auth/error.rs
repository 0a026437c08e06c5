//! Why a caller was refused. Each variant has a stable code (see `error.rs`).

/// An authentication failure. `Display` is the client-facing detail: it never echoes the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no credentials: send `Authorization: Bearer <token>` or an `apikey` header")]
    Missing,
    #[error("the token is malformed, its signature is invalid, or it uses an algorithm that is not accepted")]
    Invalid,
    #[error("the token's key id (`kid`) names no key this service trusts")]
    UnknownKey,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet (nbf is in the future)")]
    NotYetValid,
    #[error("the token's audience is not `authenticated`")]
    WrongAudience,
    #[error("the token's issuer is not the configured one")]
    WrongIssuer,
    #[error("the token's subject is not a user id (UUID)")]
    InvalidSubject,
    #[error("the token's role `{0}` may not use this service")]
    ForbiddenRole(String),
}
