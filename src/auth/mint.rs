//! Minting tokens with the configured secret, for `usersync token` and `usersync dev`.
//!
//! They have the shape Supabase Auth gives its own: a user access token (`aud` and `role`
//! `authenticated`, a UUID `sub`), or a `service_role` key (role only, no `sub` or `aud`).

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use uuid::Uuid;

/// Whom the token is for.
#[derive(Debug, Clone, Copy)]
pub enum Subject {
    User(Uuid),
    Service,
}

/// Signs an HS256 token valid for `ttl_seconds`.
pub fn mint(
    secret: &SecretString,
    subject: Subject,
    issuer: Option<&str>,
    ttl_seconds: u64,
) -> jsonwebtoken::errors::Result<String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let mut claims = match subject {
        Subject::User(id) => json!({
            "sub": id,
            "aud": "authenticated",
            "role": "authenticated",
            "aal": "aal1",
            "is_anonymous": false,
            "session_id": Uuid::new_v4(),
        }),
        Subject::Service => json!({ "role": "service_role" }),
    };
    claims["iat"] = json!(now);
    claims["exp"] = json!(now + ttl_seconds);
    claims["iss"] = json!(match (subject, issuer) {
        (Subject::User(_), Some(iss)) => iss,
        _ => "supabase",
    });
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.expose_secret().as_bytes()),
    )
}
