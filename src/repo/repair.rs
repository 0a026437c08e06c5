//! The set-based statements of a reconciliation run (rendered in `repo::sql::RepairSql`).
//!
//! Each write covers one key range in one statement, with its audit events written by the same
//! statement: no round trip per user.

use sqlx::PgExecutor;
use uuid::Uuid;

use crate::sync::drift::DriftKind;
use crate::sync::target::BoundMapping;

/// An inclusive range of ids, `first..=last`, in the order Postgres sorts uuids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRange {
    pub first: Uuid,
    pub last: Uuid,
}

impl KeyRange {
    /// Every id.
    pub const ALL: KeyRange = KeyRange {
        first: Uuid::nil(),
        last: Uuid::max(),
    };
}

/// The id right after `id` in uuid order, if any. Postgres compares uuids as 16 big-endian
/// bytes, which is the order of `Uuid::as_u128`.
pub fn successor(id: Uuid) -> Option<Uuid> {
    id.as_u128().checked_add(1).map(Uuid::from_u128)
}

/// About `percent` percent of the source's ids, sorted (see `sync::chunks`).
pub async fn sample_ids(
    db: impl PgExecutor<'_>,
    bound: &BoundMapping,
    percent: f32,
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar(&bound.sql.repair.sample_ids)
        .bind(percent)
        .fetch_all(db)
        .await
}

/// How many source rows `range` holds.
pub async fn range_rows(
    db: impl PgExecutor<'_>,
    bound: &BoundMapping,
    range: KeyRange,
) -> sqlx::Result<i64> {
    sqlx::query_scalar(&bound.sql.repair.range_rows)
        .bind(range.first)
        .bind(range.last)
        .fetch_one(db)
        .await
}

/// Memory for the rest of a chunk's transaction: each write holds the chunk's changed rows and
/// their audit images between its CTEs (tens of megabytes at the default chunk size), which the
/// server's default `work_mem` would send through temporary files.
pub async fn tune_chunk(db: impl PgExecutor<'_>) -> sqlx::Result<()> {
    sqlx::query("select set_config('work_mem', '64MB', true)")
        .execute(db)
        .await
        .map(|_| ())
}

/// The lower-cased emails of the target rows no source row has, if there are at most `most`.
pub async fn stray_emails(
    db: impl PgExecutor<'_>,
    bound: &BoundMapping,
    most: i64,
) -> sqlx::Result<Option<Vec<String>>> {
    let emails: Vec<String> = sqlx::query_scalar(&bound.sql.repair.stray_emails)
        .bind(most + 1)
        .fetch_one(db)
        .await?;
    Ok((emails.len() as i64 <= most).then_some(emails))
}

/// Who and what a run's writes are recorded under.
#[derive(Debug, Clone, Copy)]
pub struct RunContext<'a> {
    pub run_id: Uuid,
    pub caller: &'a str,
}

/// The repairs that are one statement per key range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetRepair {
    CreateMissing,
    UpdateStale,
    DeleteDeleted,
    DeleteOrphaned,
}

impl SetRepair {
    pub fn kind(self) -> DriftKind {
        match self {
            SetRepair::CreateMissing => DriftKind::Missing,
            SetRepair::UpdateStale => DriftKind::Stale,
            SetRepair::DeleteDeleted => DriftKind::Deleted,
            SetRepair::DeleteOrphaned => DriftKind::Orphaned,
        }
    }
}

/// Applies `repair` to `range`, repairing at most `limit` rows (`None`: no bound), and returns
/// how many rows it repaired. `strays`, when known, are the emails of the stray target rows
/// (see `stray_emails`), which spare the insert a probe per row.
#[allow(clippy::too_many_arguments)]
pub async fn apply(
    db: impl PgExecutor<'_>,
    bound: &BoundMapping,
    repair: SetRepair,
    range: KeyRange,
    run: RunContext<'_>,
    limit: Option<i64>,
    strays: Option<&[String]>,
) -> sqlx::Result<i64> {
    let sql = &bound.sql.repair;
    let statement = match repair {
        SetRepair::CreateMissing if strays.is_some() => &sql.create_missing_known_strays,
        SetRepair::CreateMissing => &sql.create_missing,
        SetRepair::UpdateStale => &sql.update_stale,
        SetRepair::DeleteDeleted => &sql.delete_deleted,
        SetRepair::DeleteOrphaned => &sql.delete_orphaned,
    };
    let query = sqlx::query_scalar(statement)
        .bind(range.first)
        .bind(range.last)
        .bind(run.run_id)
        .bind(run.caller)
        .bind(limit);
    match (repair, strays) {
        (SetRepair::CreateMissing, Some(strays)) => query.bind(strays).fetch_one(db).await,
        _ => query.fetch_one(db).await,
    }
}

/// A user the range's inserts or updates left out: the target cannot store their value for
/// `column_name`.
#[derive(Debug, sqlx::FromRow)]
pub struct RefusedRow {
    pub id: Uuid,
    /// `missing` or `stale`.
    pub kind: DriftKind,
    pub column_name: String,
}

/// The users of `range` whose values the target cannot store; none when the mapping has no
/// column that can refuse a value.
pub async fn refused_users(
    db: impl PgExecutor<'_>,
    bound: &BoundMapping,
    range: KeyRange,
) -> sqlx::Result<Vec<RefusedRow>> {
    match &bound.sql.repair.refused_users {
        None => Ok(Vec::new()),
        Some(sql) => {
            sqlx::query_as(sql)
                .bind(range.first)
                .bind(range.last)
                .fetch_all(db)
                .await
        }
    }
}

/// An orphaned target row and its mapped columns.
#[derive(Debug, sqlx::FromRow)]
pub struct OrphanRow {
    pub id: Uuid,
    pub row: serde_json::Value,
}

pub async fn orphans(
    db: impl PgExecutor<'_>,
    bound: &BoundMapping,
    range: KeyRange,
    limit: Option<i64>,
) -> sqlx::Result<Vec<OrphanRow>> {
    sqlx::query_as(&bound.sql.repair.orphans)
        .bind(range.first)
        .bind(range.last)
        .bind(limit)
        .fetch_all(db)
        .await
}

/// A lonely source row and a stray target row holding its email, with how many stray rows its
/// email matches and how many lonely source rows the target's email matches.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PairRow {
    pub source_id: Uuid,
    pub target_id: Uuid,
    pub targets: i64,
    pub sources: i64,
}

pub async fn pairs(
    db: impl PgExecutor<'_>,
    bound: &BoundMapping,
    range: KeyRange,
) -> sqlx::Result<Vec<PairRow>> {
    sqlx::query_as(&bound.sql.repair.pairs)
        .bind(range.first)
        .bind(range.last)
        .fetch_all(db)
        .await
}

/// Records one repair done outside a set-based statement (a re-key, a provisioned auth user).
#[allow(clippy::too_many_arguments)]
pub async fn record_event(
    db: impl PgExecutor<'_>,
    run: RunContext<'_>,
    user_id: Uuid,
    kind: DriftKind,
    action: &str,
    before: Option<&serde_json::Value>,
    after: Option<&serde_json::Value>,
) -> sqlx::Result<()> {
    sqlx::query(
        "insert into usersync.events (run_id, user_id, caller, path, kind, action, before, after)
         values ($1, $2, $3, 'batch', $4, $5, $6, $7)",
    )
    .bind(run.run_id)
    .bind(user_id)
    .bind(run.caller)
    .bind(kind.as_str())
    .bind(action)
    .bind(before)
    .bind(after)
    .execute(db)
    .await
    .map(|_| ())
}
