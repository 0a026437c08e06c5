//! The shared secret a Supabase Database Webhook may present instead of a service key.
//!
//! Database Webhooks are not signed: `supabase_functions.http_request` sends the headers it was
//! configured with, and nothing else proves where a call came from. A long random secret in a
//! dedicated header, compared in constant time, is the whole of it.

use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

/// The header that carries the webhook secret.
pub const WEBHOOK_SECRET_HEADER: &str = "x-usersync-webhook-secret";

/// The configured webhook secret; never shown by `Debug`.
#[derive(Clone)]
pub struct WebhookSecret(SecretString);

impl WebhookSecret {
    /// Wraps the configured secret.
    pub fn new(secret: SecretString) -> Self {
        Self(secret)
    }

    /// Compares in constant time (for candidates of the secret's length).
    pub fn matches(&self, candidate: &[u8]) -> bool {
        self.0.expose_secret().as_bytes().ct_eq(candidate).into()
    }
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_secret_matches() {
        let secret = WebhookSecret::new(SecretString::from("a".repeat(32)));
        assert!(secret.matches("a".repeat(32).as_bytes()));
        assert!(!secret.matches("a".repeat(31).as_bytes()));
        assert!(!secret.matches(format!("{}b", "a".repeat(31)).as_bytes()));
        assert!(!format!("{secret:?}").contains("aaaa"));
    }
}
