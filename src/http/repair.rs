//! `POST /v1/users/{id}/repair`: one user's repair, for admins.

use axum::extract::State;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::extract::{Json, Path};
use crate::auth::Caller;
use crate::error::{ApiError, Problem};
use crate::state::AppState;
use crate::sync::user_repair::{self, RepairOutcome};
use crate::vocabulary::policy::Action;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(repair_user))
}

/// Which repair, and whether to make it.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RepairRequest {
    /// The repair: `create` (missing), `update` (stale), `rekey` (mismatched), `provision` or
    /// `delete` (orphaned), `delete` (deleted). The configured policy's for the user's drift
    /// when absent.
    action: Option<Action>,
    /// Say what would be done, and do nothing.
    #[serde(default)]
    dry_run: bool,
}

/// Repair one user.
///
/// Applies exactly one repair to exactly this user, as a reconciliation run of one user: the
/// same statements, guards and audit as a run, and listed with the runs. `id` is the auth
/// user's, or the profile's key (an orphan; the profile of a mismatched pair, which is repaired
/// from its auth user).
#[utoipa::path(
    post, path = "/v1/users/{id}/repair", tag = "users",
    params(("id" = Uuid, Path, description = "The auth user's id or the profile's key")),
    request_body = RepairRequest,
    security(("bearer" = []), ("apikey" = [])),
    responses(
        (status = 200, description = "Repaired, or (`dry_run`) what would be", body = RepairOutcome),
        (status = 400, description = "The id is not a UUID, or a malformed body", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No, invalid or expired token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the service", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Neither table has this id", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Refused, by a stable `code`: `in_sync`, `report_only` (the policy only reports: name the action), `action_does_not_fit` (not a repair for this drift), `ambiguous_email`, `rekey_refused` (a composite foreign key), `no_admin_api`, or `run_in_progress`", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not `application/json`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The repair was tried and failed (`repair_failed`): the profile table or the admin API refused it, or the user changed meanwhile", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable, or auth.users not fully visible to the role", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(user_id = %id))]
async fn repair_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    Json(body): Json<RepairRequest>,
) -> Result<Json<RepairOutcome>, ApiError> {
    caller.require_service()?;
    let outcome = user_repair::repair_user(
        &state.reconciler,
        &state.db,
        &state.mapping,
        id,
        body.action,
        body.dry_run,
        &caller.audit_name(),
    )
    .await?;
    tracing::info!(
        kind = outcome.kind.as_str(),
        repaired = outcome.repaired,
        "user repaired"
    );
    Ok(Json(outcome))
}
