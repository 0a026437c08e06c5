//! `POST /v1/hooks/database`: a Supabase Database Webhook on `auth.users` as a sync signal, for
//! teams that configure a webhook instead of installing the triggers.
//!
//! The payload's `record` is the whole `auth.users` row, password hash and tokens included. Only
//! the id is taken from it (serde skips every other field without keeping it); the user is then
//! re-read from `auth.users`, as every path does. The body is never logged or stored, and a
//! parse error is reported by position only, never by quoting the body.

use axum::body::Bytes;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::extract::Json;
use crate::auth::webhook::WEBHOOK_SECRET_HEADER;
use crate::auth::Caller;
use crate::error::{ApiError, Problem};
use crate::meter;
use crate::state::AppState;
use crate::sync::engine::SyncPath;
use crate::sync::heal::{self, HealAction};

/// The webhook route.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(database_hook))
}

/// A Supabase Database Webhook payload on `auth.users`, as `supabase_functions.http_request`
/// builds it: the operation in `type`, the row after it in `record` (`INSERT`, `UPDATE`) or the
/// row before it in `old_record` (`DELETE`). Only what usersync reads is declared; every other
/// field, secrets included, is skipped unread.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type")]
// `schema` and `table` are never read: they are declared so that the parser (and the
// document) require `auth`.`users`.
#[allow(dead_code)]
pub enum DatabaseWebhook {
    #[serde(rename = "INSERT")]
    Insert {
        schema: AuthSchema,
        table: UsersTable,
        record: RecordRef,
    },
    #[serde(rename = "UPDATE")]
    Update {
        schema: AuthSchema,
        table: UsersTable,
        record: RecordRef,
    },
    #[serde(rename = "DELETE")]
    Delete {
        schema: AuthSchema,
        table: UsersTable,
        old_record: RecordRef,
    },
}

impl DatabaseWebhook {
    fn user_id(&self) -> Uuid {
        match self {
            DatabaseWebhook::Insert { record, .. } | DatabaseWebhook::Update { record, .. } => {
                record.id
            }
            DatabaseWebhook::Delete { old_record, .. } => old_record.id,
        }
    }
}

/// The schema a payload must be about.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub enum AuthSchema {
    #[serde(rename = "auth")]
    Auth,
}

/// The table a payload must be about.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub enum UsersTable {
    #[serde(rename = "users")]
    Users,
}

/// The one field of an `auth.users` row that usersync reads from a webhook.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct RecordRef {
    pub id: Uuid,
}

/// Which table a payload is about, read first so that a webhook on another table is told so.
#[derive(Deserialize)]
struct Subject {
    schema: Option<String>,
    table: Option<String>,
}

/// What the signal led to.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HookOutcome {
    pub action: HealAction,
}

/// Who may send a database webhook: the service, or whoever holds the webhook secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookCaller {
    Service,
    WebhookSecret,
}

impl HookCaller {
    fn audit_name(&self) -> &'static str {
        match self {
            HookCaller::Service => "service",
            HookCaller::WebhookSecret => "webhook",
        }
    }
}

impl FromRequestParts<AppState> for HookCaller {
    type Rejection = ApiError;

    /// The secret header, when sent, decides alone: a wrong secret is refused even if a service
    /// key rides along, so that a misconfigured webhook is noticed.
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(sent) = parts.headers.get(WEBHOOK_SECRET_HEADER) {
            return match &state.webhook_secret {
                Some(secret) if secret.matches(sent.as_bytes()) => Ok(HookCaller::WebhookSecret),
                _ => Err(ApiError::WebhookSecret),
            };
        }
        match Caller::from_request_parts(parts, state).await? {
            Caller::Service => Ok(HookCaller::Service),
            Caller::User(_) => Err(ApiError::ServiceOnly),
        }
    }
}

/// Take a Supabase Database Webhook on `auth.users` as a signal to sync that user.
///
/// Only the user's id is read from the payload; the user is re-read from `auth.users`: synced
/// when live, the deleted policy applied when gone or soft-deleted. Authenticate with a service
/// key, or with the configured secret in `x-usersync-webhook-secret`.
#[utoipa::path(
    post, path = "/v1/hooks/database", tag = "hooks",
    request_body = DatabaseWebhook,
    security(("bearer" = []), ("apikey" = []), ("webhook_secret" = [])),
    responses(
        (status = 200, description = "The user was re-read and synced, or the deleted policy applied", body = HookOutcome),
        (status = 400, description = "Not a Database Webhook payload, not about auth.users, or no user id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or invalid credentials, or a wrong webhook secret", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the service", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Another profile holds this user's email", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A value of this user's cannot be stored in the profile table (`invalid_value`, naming the column), or the table's own constraint refused the row (`refused_by_table`)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(user_id))]
async fn database_hook(
    State(state): State<AppState>,
    caller: HookCaller,
    body: Bytes,
) -> Result<Json<HookOutcome>, ApiError> {
    let user_id = user_id_of(&body)?;
    tracing::Span::current().record("user_id", tracing::field::display(user_id));
    let action = heal::heal_user(
        &state.db,
        &state.mapping,
        state.policy,
        user_id,
        caller.audit_name(),
        SyncPath::Hook,
    )
    .await?;
    meter::record_sync(SyncPath::Hook, action);
    tracing::info!(?action, "database webhook handled");
    Ok(Json(HookOutcome { action }))
}

/// The user id a payload is about; every refusal says why without quoting the body.
fn user_id_of(body: &[u8]) -> Result<Uuid, ApiError> {
    let not_a_payload = |e: serde_json::Error| {
        // Where it went wrong, when serde knows (not after buffering a tagged enum); never what.
        let at = match e.line() {
            0 => String::new(),
            line => format!(" at line {line}, column {}", e.column()),
        };
        ApiError::bad_request(
            "invalid_body",
            format!(
                "not a Database Webhook payload on auth.users with a user id ({:?} error{at})",
                e.classify()
            ),
        )
    };
    let subject: Subject = serde_json::from_slice(body).map_err(not_a_payload)?;
    if (subject.schema.as_deref(), subject.table.as_deref()) != (Some("auth"), Some("users")) {
        return Err(ApiError::bad_request(
            "not_auth_users",
            "this endpoint takes webhooks on auth.users only",
        ));
    }
    let hook: DatabaseWebhook = serde_json::from_slice(body).map_err(not_a_payload)?;
    Ok(hook.user_id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parse_error_never_quotes_the_body() {
        let bodies: [&[u8]; 3] = [
            br#"{"type": "INSERT", "table": "users", "schema": "auth", "record": "$2a$10$secrethash"}"#,
            br#"{"type": "INSERT", "table": "users", "schema": "auth", "record": {"id": "secrethash"}}"#,
            br#"{"type": "INSERT", "record": {"encrypted_password": "$2a$10$secrethash"#,
        ];
        for body in bodies {
            let err = user_id_of(body).unwrap_err().to_string();
            assert!(!err.contains("secrethash"), "{err}");
            assert!(err.contains("error"), "{err}");
        }
    }
}
