//! The drift status of the whole project: what `GET /v1/status` and `usersync status` show.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::repo::status;
use crate::sync::target::BoundMapping;

/// Drift counts per kind.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DriftCounts {
    pub missing: i64,
    pub stale: i64,
    pub mismatched: i64,
    pub orphaned: i64,
    pub deleted: i64,
}

/// The most recent reconciliation run, if any.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RunSummary {
    pub id: Uuid,
    pub state: String,
    pub dry_run: bool,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// Totals, drift counts, pending dead letters and the last run.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(example = json!({
    "source_total": 1204,
    "target_total": 1199,
    "drift": {"missing": 6, "stale": 2, "mismatched": 0, "orphaned": 1, "deleted": 0},
    "dead_letters_pending": 0,
    "last_run": {
        "id": "4f7d7a52-3c55-4e8e-9a55-0c2f6c1f1a10",
        "state": "succeeded",
        "dry_run": false,
        "started_at": "2026-11-21T03:00:00Z",
        "finished_at": "2026-11-21T03:00:04Z"
    }
}))]
pub struct Status {
    /// Rows in `auth.users`.
    pub source_total: i64,
    /// Rows in the target table.
    pub target_total: i64,
    pub drift: DriftCounts,
    /// Failed trigger syncs not yet healed.
    pub dead_letters_pending: i64,
    pub last_run: Option<RunSummary>,
}

pub async fn status(db: &PgPool, bound: &BoundMapping) -> sqlx::Result<Status> {
    let (counts, last_run) = tokio::try_join!(status::counts(db, bound), status::last_run(db))?;
    Ok(Status {
        source_total: counts.source_total,
        target_total: counts.target_total,
        drift: DriftCounts {
            missing: counts.missing,
            stale: counts.stale,
            mismatched: counts.mismatched,
            orphaned: counts.orphaned,
            deleted: counts.deleted,
        },
        dead_letters_pending: counts.dead_letters_pending,
        last_run: last_run.map(|r| RunSummary {
            id: r.id,
            state: r.state,
            dry_run: r.dry_run,
            started_at: r.started_at,
            finished_at: r.finished_at,
        }),
    })
}
