//! `usersync.runs`: one row per reconciliation run, and the advisory lock that serialises runs.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::vocabulary::run::{Plan, Progress, Run, RunOptions, RunState};

/// The session-level advisory lock a run holds for its whole life ("usersync" in ASCII). Any
/// replica that holds it is the one running; when its process dies, Postgres ends the session
/// and releases the lock, which is how the next run knows the old one was abandoned.
pub const RUN_LOCK: i64 = 0x7573_6572_7379_6e63;

/// Takes the run lock on `conn` if no other session holds it.
pub async fn try_lock(conn: &mut PgConnection) -> sqlx::Result<bool> {
    sqlx::query_scalar!(r#"select pg_try_advisory_lock($1) as "locked!""#, RUN_LOCK)
        .fetch_one(conn)
        .await
}

pub async fn unlock(conn: &mut PgConnection) -> sqlx::Result<()> {
    sqlx::query_scalar!("select pg_advisory_unlock($1)", RUN_LOCK)
        .fetch_one(conn)
        .await
        .map(|_| ())
}

/// The run that is planning or running, as far as the table says.
pub async fn active(db: impl PgExecutor<'_>) -> sqlx::Result<Option<Uuid>> {
    sqlx::query_scalar!(
        "select id from usersync.runs where state in ('planning', 'running')
          order by started_at desc limit 1",
    )
    .fetch_optional(db)
    .await
}

/// Marks every run still planning or running as abandoned, and returns the latest applied one
/// among them (the work a new run takes over). Only called while holding the run lock, so no
/// process is running any of them.
pub async fn abandon_active(db: impl PgExecutor<'_>) -> sqlx::Result<Option<Uuid>> {
    sqlx::query_scalar!(
        "with gone as (
             update usersync.runs
                set state = 'abandoned', finished_at = now(), updated_at = now(),
                    error = 'its process stopped before it finished; the next run took over'
              where state in ('planning', 'running')
             returning id, dry_run, started_at
         )
         select id as \"id!\" from gone where not dry_run order by started_at desc limit 1",
    )
    .fetch_optional(db)
    .await
}

pub async fn insert(
    db: impl PgExecutor<'_>,
    id: Uuid,
    caller: &str,
    options: &RunOptions,
    resumed_from: Option<Uuid>,
) -> sqlx::Result<Run> {
    let row = sqlx::query_as!(
        RunRow,
        r#"insert into usersync.runs (id, caller, dry_run, options, state, resumed_from)
           values ($1, $2, $3, $4, 'planning', $5)
           returning id, caller, state, options as "options: Json<RunOptions>",
                     plan as "plan: Json<Plan>", counts as "counts: Json<serde_json::Value>", error,
                     resumed_from, started_at, updated_at, finished_at"#,
        id,
        caller,
        options.dry_run,
        Json(options) as _,
        resumed_from,
    )
    .fetch_one(db)
    .await?;
    row.try_into()
}

/// Records the plan and the state the run moves to with it.
pub async fn set_plan(
    db: impl PgExecutor<'_>,
    id: Uuid,
    plan: &Plan,
    state: RunState,
) -> sqlx::Result<()> {
    sqlx::query!(
        "update usersync.runs set plan = $2, state = $3, updated_at = now() where id = $1",
        id,
        Json(plan) as _,
        state.as_str(),
    )
    .execute(db)
    .await
    .map(|_| ())
}

/// Locks the run's row until the caller's transaction ends.
pub async fn lock(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<()> {
    sqlx::query_scalar!(
        "select 1 as one from usersync.runs where id = $1 for update",
        id
    )
    .fetch_optional(db)
    .await
    .map(|_| ())
}

/// Records progress; called inside each chunk's transaction, so that the counts move exactly
/// when the chunk's repairs commit.
pub async fn set_progress(
    db: impl PgExecutor<'_>,
    id: Uuid,
    progress: &Progress,
) -> sqlx::Result<()> {
    sqlx::query!(
        "update usersync.runs set counts = $2, updated_at = now() where id = $1",
        id,
        Json(progress) as _,
    )
    .execute(db)
    .await
    .map(|_| ())
}

pub async fn finish(
    db: impl PgExecutor<'_>,
    id: Uuid,
    state: RunState,
    progress: &Progress,
    error: Option<&str>,
) -> sqlx::Result<Run> {
    let row = sqlx::query_as!(
        RunRow,
        r#"update usersync.runs
              set state = $2, counts = $3, error = $4,
                  updated_at = now(), finished_at = now()
            where id = $1
           returning id, caller, state, options as "options: Json<RunOptions>",
                     plan as "plan: Json<Plan>", counts as "counts: Json<serde_json::Value>", error,
                     resumed_from, started_at, updated_at, finished_at"#,
        id,
        state.as_str(),
        Json(progress) as _,
        error,
    )
    .fetch_one(db)
    .await?;
    row.try_into()
}

pub async fn get(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Option<Run>> {
    let row = sqlx::query_as!(
        RunRow,
        r#"select id, caller, state, options as "options: Json<RunOptions>",
                   plan as "plan: Json<Plan>", counts as "counts: Json<serde_json::Value>", error,
                   resumed_from, started_at, updated_at, finished_at
             from usersync.runs where id = $1"#,
        id,
    )
    .fetch_optional(db)
    .await?;
    row.map(Run::try_from).transpose()
}

/// The most recent runs, newest first.
pub async fn recent(db: impl PgExecutor<'_>, limit: i64) -> sqlx::Result<Vec<Run>> {
    let rows = sqlx::query_as!(
        RunRow,
        r#"select id, caller, state, options as "options: Json<RunOptions>",
                   plan as "plan: Json<Plan>", counts as "counts: Json<serde_json::Value>", error,
                   resumed_from, started_at, updated_at, finished_at
             from usersync.runs order by started_at desc, id limit $1"#,
        limit,
    )
    .fetch_all(db)
    .await?;
    rows.into_iter().map(Run::try_from).collect()
}

/// A row of `usersync.runs` as every query here returns it (the same columns, named in each:
/// the compile-time checked macros take only literals).
struct RunRow {
    id: Uuid,
    caller: String,
    state: String,
    options: Json<RunOptions>,
    plan: Option<Json<Plan>>,
    counts: Json<serde_json::Value>,
    error: Option<String>,
    resumed_from: Option<Uuid>,
    started_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
}

impl TryFrom<RunRow> for Run {
    type Error = sqlx::Error;

    fn try_from(row: RunRow) -> sqlx::Result<Run> {
        let state = RunState::parse(&row.state).ok_or_else(|| {
            sqlx::Error::Decode(format!("unknown run state {}", row.state).into())
        })?;
        // A row's counts start as `{}` (the column default): every field of `Progress` has one.
        let progress: Progress =
            serde_json::from_value(row.counts.0).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        Ok(Run {
            id: row.id,
            state,
            caller: row.caller,
            options: row.options.0,
            plan: row.plan.map(|p| p.0),
            progress,
            error: row.error,
            resumed_from: row.resumed_from,
            started_at: row.started_at,
            updated_at: row.updated_at,
            finished_at: row.finished_at,
        })
    }
}
