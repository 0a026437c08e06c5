//! The Supabase Auth admin API, for the one write usersync ever makes to the source: creating
//! the auth user of an orphaned profile (the `provision` policy). Always through the API, never
//! into `auth.users` directly: Supabase Auth owns that table, its identities and its invariants.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use uuid::Uuid;

/// How long one admin call may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The body of `POST /auth/v1/admin/users`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewAuthUser {
    /// The id to create the user under: the orphaned profile's, so that the two rows meet.
    pub id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// The profile existed, so the address was in use: do not send a confirmation mail.
    pub email_confirm: bool,
    pub phone_confirm: bool,
    pub user_metadata: serde_json::Map<String, serde_json::Value>,
    pub app_metadata: serde_json::Map<String, serde_json::Value>,
}

/// Why an admin call failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminApiError {
    #[error("Supabase Auth refused to create the user ({status}): {message}")]
    Rejected { status: u16, message: String },
    #[error("cannot reach Supabase Auth: {0}")]
    Transport(String),
}

/// A client for the admin API of one project.
#[derive(Clone)]
pub struct AdminApi {
    client: reqwest::Client,
    users_url: String,
    service_key: SecretString,
}

impl std::fmt::Debug for AdminApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminApi")
            .field("users_url", &self.users_url)
            .finish_non_exhaustive()
    }
}

impl AdminApi {
    /// `project_url` is the project's API URL (`https://<ref>.supabase.co`); `service_key` a
    /// secret key or the legacy `service_role` key.
    pub fn new(project_url: &str, service_key: SecretString) -> Self {
        Self {
            client: reqwest::Client::builder()
                .timeout(TIMEOUT)
                .build()
                .expect("a TLS-capable HTTP client builds"),
            users_url: format!("{}/auth/v1/admin/users", project_url.trim_end_matches('/')),
            service_key,
        }
    }

    /// Creates an auth user. The key goes in both `apikey` (what Supabase's gateway checks) and
    /// `Authorization` (what Supabase Auth checks); a secret key is accepted there when both
    /// carry the same value.
    #[tracing::instrument(skip_all, fields(user_id = %user.id))]
    pub async fn create_user(&self, user: &NewAuthUser) -> Result<(), AdminApiError> {
        let key = self.service_key.expose_secret();
        let response = self
            .client
            .post(&self.users_url)
            .header("apikey", key)
            .bearer_auth(key)
            .json(user)
            .send()
            .await
            .map_err(|e| AdminApiError::Transport(e.without_url().to_string()))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        Err(AdminApiError::Rejected {
            status: status.as_u16(),
            message: error_message(&body),
        })
    }
}

/// The human part of a Supabase Auth error body (`msg`, `message` or `error_description`, with
/// its `error_code`), bounded in length.
fn error_message(body: &serde_json::Value) -> String {
    let text = ["msg", "message", "error_description", "error"]
        .iter()
        .find_map(|k| body.get(k).and_then(|v| v.as_str()))
        .unwrap_or("no reason given");
    let mut message = match body.get("error_code").and_then(|v| v.as_str()) {
        Some(code) => format!("{code}: {text}"),
        None => text.to_owned(),
    };
    message.truncate(200);
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn error_bodies_of_every_vintage_give_a_reason() {
        assert_eq!(
            error_message(&json!({"code": 422, "error_code": "email_exists", "msg": "taken"})),
            "email_exists: taken"
        );
        assert_eq!(error_message(&json!({"message": "nope"})), "nope");
        assert_eq!(error_message(&json!(null)), "no reason given");
    }
}
