//! Liveness and readiness probes.

use axum::extract::State;
use serde::Serialize;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::Json;
use crate::auth::KeysHealth;
use crate::db::MIGRATOR;
use crate::error::{ApiError, Problem};
use crate::repo::health;
use crate::state::AppState;
use crate::sync::source;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok` (liveness), `ready`, or `degraded`: ready, but a check reports a problem that does
    /// not stop the service yet (the signing keys are stale).
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub checks: Option<serde_json::Value>,
}

/// Liveness: the process answers. Touches nothing else.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "Alive", body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok",
        checks: None,
    })
}

/// The outcome of one readiness check.
enum Check {
    Ok,
    /// Still ready, but worth an operator's look.
    Degraded(String),
    Failed(String),
}

impl Check {
    fn from_result(result: Result<(), String>) -> Self {
        result.map_or_else(Check::Failed, |()| Check::Ok)
    }
}

/// The statements the service holds still fit the target: the catalog describes it as it did
/// when the mapping was last bound (nothing rendered), or, when someone altered the table
/// since, binding the mapping again succeeds (or names what no longer fits); and the role may
/// still write it as the policies need (see `FitWatch`).
async fn mapping_fits(state: &AppState) -> Result<(), String> {
    let deletes = state.reconciler.policies().deletes();
    state
        .fit
        .check(&state.db, &state.mapping, deletes)
        .await
        .map_err(|e| e.to_string())
}

/// Readiness: the database answers, the usersync schema is migrated, the mapping still fits
/// the real target table, and (with a JWKS configured) the signing keys are at hand.
///
/// Keys that could not be refreshed keep working and only degrade readiness (`keys: stale`);
/// keys never fetched fail it when nothing else can verify a user token. `checks.healing` says
/// whether this replica leads the healing loop (`leader`), stands by (`standby`), or does not
/// heal (`off`); it never fails readiness.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "Ready (`status` is `degraded` when a check reports a problem that does not stop the service, such as stale signing keys)", body = Health),
        (status = 503, description = "A check failed; `checks` says which", body = Problem, content_type = "application/problem+json"),
    ))]
async fn readyz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    let database = health::ping(&state.db).await.map_err(|e| e.to_string());
    let migrations = match &database {
        Err(_) => Err("database unreachable".to_owned()),
        Ok(()) => match health::applied_migrations(&state.db).await {
            Err(e) => Err(e.to_string()),
            Ok(applied) => {
                let pending = MIGRATOR
                    .iter()
                    .filter(|m| !applied.contains(&m.version))
                    .count();
                if pending == 0 {
                    Ok(())
                } else {
                    Err(format!(
                        "{pending} migration(s) pending: run `usersync migrate`"
                    ))
                }
            }
        },
    };
    let mapping = match &database {
        Err(_) => Err("database unreachable".to_owned()),
        Ok(()) => mapping_fits(&state).await,
    };
    // A replica that cannot see every auth user cannot sync any: not ready.
    let source = match &database {
        Err(_) => Err("database unreachable".to_owned()),
        Ok(()) => match source::check_access(&state.db).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(why)) => Err(why.to_string()),
            Err(e) => Err(crate::sqlstate::describe(&e)),
        },
    };
    let mut results = vec![
        ("database", Check::from_result(database)),
        ("migrations", Check::from_result(migrations)),
        ("mapping", Check::from_result(mapping)),
        ("source", Check::from_result(source)),
    ];
    if let Some(keys) = state.verifier.keys_health() {
        results.push(("keys", keys_check(keys, state.verifier.has_secret())));
    }
    let mut checks: serde_json::Map<String, serde_json::Value> = results
        .iter()
        .map(|(name, check)| {
            let value = match check {
                Check::Ok => json!("ok"),
                Check::Degraded(why) | Check::Failed(why) => json!(why),
            };
            ((*name).to_owned(), value)
        })
        .collect();
    checks.insert("healing".to_owned(), json!(state.healing.borrow().as_str()));
    if let Some((name, _)) = results.iter().find(|(_, c)| matches!(c, Check::Failed(_))) {
        return Err(ApiError::NotReady {
            failing: (*name).to_owned(),
            checks: checks.into(),
        });
    }
    let degraded = results.iter().any(|(_, c)| matches!(c, Check::Degraded(_)));
    Ok(Json(Health {
        status: if degraded { "degraded" } else { "ready" },
        checks: Some(checks.into()),
    }))
}

fn keys_check(health: KeysHealth, has_secret: bool) -> Check {
    match health {
        KeysHealth::Fresh { .. } => Check::Ok,
        KeysHealth::Stale { keys, age, error } => Check::Degraded(format!(
            "stale: the {keys} key(s) fetched {}s ago are still used; the last fetch failed: {error}",
            age.as_secs()
        )),
        KeysHealth::Unavailable { error } if has_secret => Check::Degraded(format!(
            "unavailable: only the JWT secret verifies tokens until a fetch succeeds: {error}"
        )),
        KeysHealth::Unavailable { error } => Check::Failed(format!(
            "unavailable: no user token can be verified until a fetch succeeds: {error}"
        )),
    }
}
