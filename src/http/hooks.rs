//! `POST /v1/hooks/database`: a Supabase Database Webhook as a sync signal, for teams that
//! configure a webhook instead of installing the triggers, and for profiles an app writes
//! first. A payload on `auth.users` names a user, who is synced; one on the target table names
//! a profile, whose auth user is provisioned at once when the profile is an orphan.
//!
//! The payload's `record` is the whole row: on `auth.users`, password hash and tokens
//! included. Only the id (the target's key) is taken from it; serde skips every other field of
//! an `auth.users` row without keeping it. The row is then re-read, as every path does. The
//! body is never logged or stored, and a parse error is reported by position only, never by
//! quoting the body.

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
use crate::compiler::mapping::TargetTable;
use crate::error::{ApiError, Problem};
use crate::meter;
use crate::state::AppState;
use crate::sync::heal;
use crate::sync::provision;
use crate::vocabulary::HealAction;
use crate::vocabulary::SyncPath;

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

/// A Supabase Database Webhook payload on the profile table (the mapping's target): the row
/// after an `INSERT` or `UPDATE` in `record`, before a `DELETE` in `old_record`. Only the key
/// column is read.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type")]
// Never parsed (see `ProfilePayload`): declared for the document.
#[allow(dead_code)]
pub enum ProfileWebhook {
    #[serde(rename = "INSERT")]
    Insert {
        /// The profile table's schema, as the mapping names it.
        schema: String,
        /// The profile table's name, as the mapping names it.
        table: String,
        record: ProfileRef,
    },
    #[serde(rename = "UPDATE")]
    Update {
        schema: String,
        table: String,
        record: ProfileRef,
    },
    #[serde(rename = "DELETE")]
    Delete {
        schema: String,
        table: String,
        old_record: ProfileRef,
    },
}

/// The field of a profile row that usersync reads from a webhook: the key column, `id` in the
/// built-in mapping (the mapping's `key` otherwise). Other columns are ignored.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ProfileRef {
    pub id: Uuid,
}

/// How a payload on the profile table is read: its row as columns, of which only the key is
/// looked at (a mapping names its own key column).
#[derive(Deserialize)]
#[serde(tag = "type")]
enum ProfilePayload {
    #[serde(rename = "INSERT", alias = "UPDATE")]
    Written {
        record: serde_json::Map<String, serde_json::Value>,
    },
    #[serde(rename = "DELETE")]
    Deleted {
        old_record: serde_json::Map<String, serde_json::Value>,
    },
}

/// Either payload the endpoint takes, for the document.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum WebhookPayload {
    AuthUsers(DatabaseWebhook),
    Profile(ProfileWebhook),
}

/// What a payload names: an auth user, or a profile by its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    User(Uuid),
    Profile(Uuid),
}

/// Which table a payload is about, read first: it decides how the rest is read.
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

/// Take a Supabase Database Webhook as a signal: on `auth.users`, to sync that user; on the
/// profile table, to give a new profile its auth user.
///
/// Only the id (the profile's key) is read from the payload, and the row is re-read. A user is
/// synced when live, and the deleted policy applied when gone or soft-deleted. A profile with
/// no auth user (orphaned) is provisioned through the Supabase Auth admin API when the
/// orphaned policy is `provision`, and reported (`orphan_reported`) otherwise; any other
/// profile is its user's signal. Authenticate with a service key, or with the configured secret
/// in `x-usersync-webhook-secret`.
#[utoipa::path(
    post, path = "/v1/hooks/database", tag = "hooks",
    request_body = WebhookPayload,
    security(("bearer" = []), ("apikey" = []), ("webhook_secret" = [])),
    responses(
        (status = 200, description = "The row was re-read and acted on: the user synced or the deleted policy applied, or the orphaned profile provisioned or reported", body = HookOutcome),
        (status = 400, description = "Not a Database Webhook payload, or no id (key) in its record", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or invalid credentials, or a wrong webhook secret", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the service", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Another profile holds this user's email", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A payload about a table that is neither auth.users nor the profile table (`unknown_table`); a value of this user's that cannot be stored in the profile table (`invalid_value`, naming the column), or the table's own constraint refused the row (`refused_by_table`); an orphaned profile that cannot become an auth user (`provision_failed`)", body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "Supabase Auth refused to create the auth user, or could not be reached (`provision_failed`)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable, or auth.users not fully visible to the role", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(user_id))]
async fn database_hook(
    State(state): State<AppState>,
    caller: HookCaller,
    body: Bytes,
) -> Result<Json<HookOutcome>, ApiError> {
    let signal = signal_of(&body, &state.mapping.mapping.target)?;
    let (Signal::User(id) | Signal::Profile(id)) = signal;
    tracing::Span::current().record("user_id", tracing::field::display(id));
    let caller = caller.audit_name();
    let action = match signal {
        Signal::User(id) => {
            heal::heal_user(
                &state.db,
                &state.mapping,
                state.policy,
                id,
                caller,
                SyncPath::Hook,
            )
            .await?
        }
        Signal::Profile(id) => {
            provision::heal_profile(
                &state.db,
                &state.mapping,
                state.reconciler.policies().orphaned,
                state.reconciler.admin(),
                state.policy,
                id,
                caller,
            )
            .await?
        }
    };
    meter::record_sync(SyncPath::Hook, action);
    tracing::info!(?action, "database webhook handled");
    Ok(Json(HookOutcome { action }))
}

/// What a payload is about; every refusal says why without quoting the body.
fn signal_of(body: &[u8], target: &TargetTable) -> Result<Signal, ApiError> {
    let not_a_payload = |e: serde_json::Error| {
        // Where it went wrong, when serde knows (not after buffering a tagged enum); never what.
        let at = match e.line() {
            0 => String::new(),
            line => format!(" at line {line}, column {}", e.column()),
        };
        ApiError::bad_request(
            "invalid_body",
            format!(
                "not a Database Webhook payload with a row id ({:?} error{at})",
                e.classify()
            ),
        )
    };
    let subject: Subject = serde_json::from_slice(body).map_err(not_a_payload)?;
    let about = (subject.schema.as_deref(), subject.table.as_deref());
    if about == (Some("auth"), Some("users")) {
        let hook: DatabaseWebhook = serde_json::from_slice(body).map_err(not_a_payload)?;
        return Ok(Signal::User(hook.user_id()));
    }
    if about != (Some(target.schema.as_str()), Some(target.table.as_str())) {
        return Err(ApiError::UnknownTable {
            target: format!("{}.{}", target.schema.as_str(), target.table.as_str()),
        });
    }
    let (ProfilePayload::Written { record } | ProfilePayload::Deleted { old_record: record }) =
        serde_json::from_slice(body).map_err(not_a_payload)?;
    let key = target.key.as_str();
    let id = record
        .get(key)
        .and_then(|v| v.as_str())
        .and_then(|v| Uuid::parse_str(v).ok())
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_body",
                format!("the record has no uuid in the key column `{key}`"),
            )
        })?;
    Ok(Signal::Profile(id))
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
        let target = crate::compiler::mapping::Mapping::default_mapping().target;
        for body in bodies {
            let err = signal_of(body, &target).unwrap_err().to_string();
            assert!(!err.contains("secrethash"), "{err}");
            assert!(err.contains("error"), "{err}");
        }
    }
}
