//! The drift status of the whole project: what `GET /v1/status` and `usersync status` show.

use serde::Serialize;
use sqlx::PgPool;

use crate::compiler::bind::BoundMapping;
use crate::meter;
use crate::repo::{runs, status};
use crate::sync::source::{self, ReadError};
use crate::vocabulary::run::Run;
use crate::vocabulary::DriftKind;

/// Drift counts per kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct DriftCounts {
    pub missing: i64,
    pub stale: i64,
    pub mismatched: i64,
    pub orphaned: i64,
    pub deleted: i64,
}

impl DriftCounts {
    pub fn of(&self, kind: DriftKind) -> i64 {
        match kind {
            DriftKind::Missing => self.missing,
            DriftKind::Stale => self.stale,
            DriftKind::Mismatched => self.mismatched,
            DriftKind::Orphaned => self.orphaned,
            DriftKind::Deleted => self.deleted,
        }
    }
}

/// Totals, drift counts and pending dead letters, from one statement (see `compiler::render`).
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
pub struct Counts {
    /// Rows in `auth.users`.
    pub source_total: i64,
    /// Rows in the target table.
    pub target_total: i64,
    pub drift: DriftCounts,
    /// Failed trigger syncs not yet healed.
    pub dead_letters_pending: i64,
}

/// The counts and the last run.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(example = json!({
    "source_total": 1204,
    "target_total": 1199,
    "drift": {"missing": 6, "stale": 2, "mismatched": 0, "orphaned": 1, "deleted": 0},
    "dead_letters_pending": 0,
    "last_run": null
}))]
pub struct Status {
    #[serde(flatten)]
    pub counts: Counts,
    /// The most recent reconciliation run, if any.
    pub last_run: Option<Run>,
}

pub async fn counts(db: &PgPool, bound: &BoundMapping) -> sqlx::Result<Counts> {
    let c = status::counts(db, bound).await?;
    Ok(Counts {
        source_total: c.source_total,
        target_total: c.target_total,
        drift: DriftCounts {
            missing: c.missing,
            stale: c.stale,
            mismatched: c.mismatched,
            orphaned: c.orphaned,
            deleted: c.deleted,
        },
        dead_letters_pending: c.dead_letters_pending,
    })
}

/// Reads what the metrics' database gauges show and records it (`meter::Meter::render` calls
/// this when they are due). A source usersync cannot see whole would count every profile as
/// drift: then only that is recorded, and the drift gauges are left out.
pub async fn refresh_gauges(db: &PgPool, bound: &BoundMapping) -> sqlx::Result<()> {
    let readable = source::check_access(db).await?;
    meter::record_source_readable(readable.is_ok());
    if let Err(why) = readable {
        tracing::warn!(%why, "metrics: auth.users cannot be read reliably; no drift gauges");
        return Ok(());
    }
    let (c, oldest_missing, last_success) = tokio::try_join!(
        counts(db, bound),
        status::oldest_missing(db, bound),
        status::last_successful_run(db),
    )?;
    meter::record_status(
        c.source_total,
        c.target_total,
        |kind| c.drift.of(kind),
        c.dead_letters_pending,
    );
    meter::record_ages(oldest_missing, last_success);
    Ok(())
}

/// The status, unless the source cannot be seen whole (then every profile would count as
/// drift; see `sync::source`).
pub async fn status(db: &PgPool, bound: &BoundMapping) -> Result<Status, ReadError> {
    source::check_access(db).await??;
    let (counts, mut last) = tokio::try_join!(counts(db, bound), runs::recent(db, 1))?;
    Ok(Status {
        counts,
        last_run: last.pop(),
    })
}
