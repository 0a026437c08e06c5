//! Liveness and readiness probes.

use axum::extract::State;
use serde::Serialize;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::Json;
use crate::db::MIGRATOR;
use crate::error::{ApiError, Problem};
use crate::repo::health;
use crate::state::AppState;
use crate::sync::target::BoundMapping;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok` or `ready`.
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

/// Readiness: the database answers, the usersync schema is migrated, and the mapping still fits
/// the real target table. `checks.healing` says whether this replica leads the healing loop
/// (`leader`), stands by (`standby`), or does not heal (`off`); it never fails readiness.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "Ready", body = Health),
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
        Ok(()) => BoundMapping::bind(&state.db, state.mapping.mapping.clone())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
    };
    let results = [
        ("database", database),
        ("migrations", migrations),
        ("mapping", mapping),
    ];
    let mut checks: serde_json::Map<String, serde_json::Value> = results
        .iter()
        .map(|(name, r)| {
            let value = match r {
                Ok(()) => json!("ok"),
                Err(e) => json!(e),
            };
            ((*name).to_owned(), value)
        })
        .collect();
    checks.insert("healing".to_owned(), json!(state.healing.borrow().as_str()));
    match results.iter().find(|(_, r)| r.is_err()) {
        None => Ok(Json(Health {
            status: "ready",
            checks: Some(checks.into()),
        })),
        Some((name, _)) => Err(ApiError::NotReady {
            failing: (*name).to_owned(),
            checks: checks.into(),
        }),
    }
}
