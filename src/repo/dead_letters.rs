//! Dead letters: syncs that failed inside the trigger, waiting to be healed, and their retry
//! schedule, kept in Postgres so that whichever replica leads next carries on where the last
//! one stopped.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

/// A dead letter as admins see it: who, what failed and why, and when it is retried.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct DeadLetter {
    pub id: i64,
    pub user_id: Uuid,
    /// `insert`, `update` or `delete`.
    pub op: String,
    /// The error the trigger caught.
    pub error: String,
    pub sqlstate: Option<String>,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

/// The oldest `limit` unresolved dead letters.
pub async fn pending(db: impl PgExecutor<'_>, limit: i64) -> sqlx::Result<Vec<DeadLetter>> {
    sqlx::query_as!(
        DeadLetter,
        "select id, user_id, op, error, sqlstate, attempts, next_attempt_at, created_at
           from usersync.dead_letters
          where resolved_at is null
          order by created_at, id
          limit $1",
        limit,
    )
    .fetch_all(db)
    .await
}

/// The user's unresolved dead letter (a user has at most one).
pub async fn pending_of(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
) -> sqlx::Result<Option<DeadLetter>> {
    sqlx::query_as!(
        DeadLetter,
        "select id, user_id, op, error, sqlstate, attempts, next_attempt_at, created_at
           from usersync.dead_letters
          where user_id = $1 and resolved_at is null",
        user_id,
    )
    .fetch_optional(db)
    .await
}

/// A dead letter claimed for one attempt.
#[derive(Debug)]
pub struct ClaimedLetter {
    pub id: i64,
    pub user_id: Uuid,
    /// Attempts made before this one.
    pub attempts: i32,
}

/// Claims up to `limit` due letters, oldest due first, by moving their next attempt `lease`
/// ahead: a leader that dies mid-batch leaves them to be retried once the lease runs out, and a
/// second leader (for the second it takes to notice a lost lock) skips them.
pub async fn claim_due(
    db: impl PgExecutor<'_>,
    limit: i64,
    lease: Duration,
) -> sqlx::Result<Vec<ClaimedLetter>> {
    sqlx::query_as!(
        ClaimedLetter,
        "update usersync.dead_letters d
            set next_attempt_at = now() + make_interval(secs => $2), claimed_at = now()
          where d.id in (select id from usersync.dead_letters
                          where resolved_at is null and next_attempt_at <= now()
                          order by next_attempt_at
                          limit $1
                          for update skip locked)
      returning d.id, d.user_id, d.attempts",
        limit,
        lease.as_secs_f64(),
    )
    .fetch_all(db)
    .await
}

/// Makes every claimed letter due now, and returns how many there were. For a leader's new
/// term: only the leader claims, and a term begins once the previous leader's lock is gone, so
/// each claim left is an attempt that will never report back, which would otherwise wait out its
/// lease. (A leader that lost its lock a moment ago may still finish one: a second attempt
/// re-reads the user, as every attempt does, and changes nothing.)
pub async fn release_claims(db: impl PgExecutor<'_>) -> sqlx::Result<u64> {
    sqlx::query!(
        "update usersync.dead_letters
            set next_attempt_at = now(), claimed_at = null
          where claimed_at is not null and resolved_at is null",
    )
    .execute(db)
    .await
    .map(|done| done.rows_affected())
}

/// The letter's user is in step again.
pub async fn resolve(db: impl PgExecutor<'_>, id: i64) -> sqlx::Result<()> {
    sqlx::query!(
        "update usersync.dead_letters
            set resolved_at = now(), attempts = attempts + 1, last_attempt_at = now(),
                claimed_at = null
          where id = $1 and resolved_at is null",
        id,
    )
    .execute(db)
    .await
    .map(|_| ())
}

/// The attempt failed: keep the latest cause and schedule the next attempt `delay` from now,
/// jittered by ±20% so that letters that failed together do not all retry together.
pub async fn reschedule(
    db: impl PgExecutor<'_>,
    id: i64,
    error: &str,
    sqlstate: Option<&str>,
    delay: Duration,
) -> sqlx::Result<()> {
    sqlx::query!(
        "update usersync.dead_letters
            set attempts = attempts + 1, last_attempt_at = now(), error = $2, sqlstate = $3,
                next_attempt_at = now() + make_interval(secs => $4 * (0.8 + random() * 0.4)),
                claimed_at = null
          where id = $1 and resolved_at is null",
        id,
        error,
        sqlstate,
        delay.as_secs_f64(),
    )
    .execute(db)
    .await
    .map(|_| ())
}

/// How long until the next pending letter is due (zero if one is overdue); `None` when none
/// is pending.
pub async fn next_due_in(db: impl PgExecutor<'_>) -> sqlx::Result<Option<Duration>> {
    // Not `greatest(..., 0)` in SQL: `greatest` skips nulls, so "none pending" would read as
    // "one due now", and the healing leader would poll this in a tight loop.
    let seconds: Option<f64> = sqlx::query_scalar!(
        "select extract(epoch from min(next_attempt_at) - now())::float8
           from usersync.dead_letters where resolved_at is null",
    )
    .fetch_one(db)
    .await?;
    Ok(seconds.map(|s| Duration::from_secs_f64(s.max(0.0))))
}
