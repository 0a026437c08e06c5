//! Token and secret-key verification.
//!
//! The keys, and so the accepted algorithms, come from configuration, never from the token:
//! with only an HS256 secret configured, a token whose header names any other algorithm
//! (`none` included) is refused before its signature is looked at.

use axum::http::header::AUTHORIZATION;
use axum::http::HeaderMap;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use subtle::ConstantTimeEq;
use uuid::Uuid;

use super::{AuthError, Caller};
use crate::config::AuthConfig;

/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECONDS: u64 = 30;
/// The audience of Supabase user access tokens.
const USER_AUDIENCE: &str = "authenticated";

/// Verifies credentials against the configured secret and keys.
#[derive(Clone)]
pub struct Verifier {
    hs256: Option<DecodingKey>,
    issuer: Option<String>,
    service_keys: Vec<SecretString>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("hs256", &self.hs256.is_some())
            .field("issuer", &self.issuer)
            .field("service_keys", &self.service_keys.len())
            .finish()
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn contains(&self, wanted: &str) -> bool {
        match self {
            Audience::One(a) => a == wanted,
            Audience::Many(list) => list.iter().any(|a| a == wanted),
        }
    }
}

/// The claims that decide who the caller is; everything else in the token is ignored.
#[derive(Deserialize)]
struct Claims {
    /// Any JSON: a non-string `sub` must be refused as a bad subject, not as a bad token.
    sub: Option<serde_json::Value>,
    role: Option<String>,
    aud: Option<Audience>,
    iss: Option<String>,
}

impl Verifier {
    pub fn from_config(config: &AuthConfig) -> Self {
        Self {
            hs256: config
                .jwt_secret
                .as_ref()
                .map(|s| DecodingKey::from_secret(s.expose_secret().as_bytes())),
            issuer: config.jwt_issuer.clone(),
            service_keys: config
                .service_keys
                .as_ref()
                .map(|k| k.0.clone())
                .unwrap_or_default(),
        }
    }

    /// Authenticates a request from its headers.
    ///
    /// A configured secret key in `apikey` or `Authorization` makes the caller the service.
    /// Otherwise the bearer token is verified; without one, a JWT in `apikey` (a legacy
    /// `service_role` key sent the way the Supabase gateway expects) is.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, AuthError> {
        let apikey = headers.get("apikey").and_then(|v| v.to_str().ok());
        let bearer = match headers.get(AUTHORIZATION) {
            None => None,
            Some(value) => Some(bearer_token(
                value.to_str().map_err(|_| AuthError::Invalid)?,
            )?),
        };
        if [apikey, bearer]
            .into_iter()
            .flatten()
            .any(|candidate| self.is_service_key(candidate))
        {
            return Ok(Caller::Service);
        }
        match (bearer, apikey) {
            (Some(token), _) => self.verify_jwt(token),
            (None, Some(key)) => self.verify_jwt(key),
            (None, None) => Err(AuthError::Missing),
        }
    }

    /// Compares against every configured key without stopping at the first match, in constant
    /// time per key.
    fn is_service_key(&self, candidate: &str) -> bool {
        self.service_keys
            .iter()
            .fold(subtle::Choice::from(0), |found, key| {
                found | key.expose_secret().as_bytes().ct_eq(candidate.as_bytes())
            })
            .into()
    }

    fn verify_jwt(&self, token: &str) -> Result<Caller, AuthError> {
        let key = self.hs256.as_ref().ok_or(AuthError::Invalid)?;
        let header = decode_header(token).map_err(|_| AuthError::Invalid)?;
        if header.alg != Algorithm::HS256 {
            return Err(AuthError::Invalid);
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_nbf = true;
        // The audience depends on the role (legacy API keys carry none), so it is checked below.
        validation.validate_aud = false;
        let claims = decode::<Claims>(token, key, &validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                _ => AuthError::Invalid,
            })?
            .claims;
        match claims.role.as_deref() {
            Some("service_role") => Ok(Caller::Service),
            Some("authenticated") => self.user(claims),
            Some(other) => Err(AuthError::ForbiddenRole(other.to_owned())),
            None => Err(AuthError::ForbiddenRole(String::new())),
        }
    }

    fn user(&self, claims: Claims) -> Result<Caller, AuthError> {
        if !claims.aud.is_some_and(|a| a.contains(USER_AUDIENCE)) {
            return Err(AuthError::WrongAudience);
        }
        if let Some(expected) = &self.issuer {
            if claims.iss.as_deref() != Some(expected.as_str()) {
                return Err(AuthError::WrongIssuer);
            }
        }
        let id = claims
            .sub
            .as_ref()
            .and_then(|sub| sub.as_str())
            .and_then(|sub| Uuid::parse_str(sub).ok())
            .ok_or(AuthError::InvalidSubject)?;
        Ok(Caller::User(id))
    }
}

/// The token of an `Authorization: Bearer <token>` header (the scheme is case-insensitive).
fn bearer_token(value: &str) -> Result<&str, AuthError> {
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::Invalid)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(AuthError::Invalid);
    }
    Ok(token)
}
