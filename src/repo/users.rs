//! The per-user statements: sync-one and drift-of-one.

use sqlx::PgExecutor;
use uuid::Uuid;

use crate::compiler::bind::BoundMapping;
use crate::vocabulary::policy::DeletedPolicy;
use crate::vocabulary::{AuditAction, DriftKind, SyncPath};

/// What the sync-one statement reports (see `compiler::render` for the statement itself).
#[derive(Debug, sqlx::FromRow)]
pub struct SyncRow {
    /// The user the row is about (a batch answers for many).
    pub id: Uuid,
    /// An `auth.users` row has the id.
    pub found: bool,
    /// That row is soft-deleted.
    pub deleted: bool,
    /// The user is anonymous and the mapping skips anonymous users.
    pub skipped: bool,
    /// Creating the row would make a second profile for the same person (see
    /// `Renderer::mismatched_source`).
    pub mismatched: bool,
    /// The first mapped column whose value, for this user, the target cannot store (see
    /// `Renderer::refused_column`): nothing was written.
    pub refused_column: Option<String>,
    /// `Some(true)` inserted, `Some(false)` updated, `None` nothing written.
    pub created: Option<bool>,
    /// The target row after the statement.
    pub row: Option<serde_json::Value>,
}

#[tracing::instrument(level = "debug", skip_all, fields(user_id = %user_id))]
pub async fn sync_one(
    db: impl PgExecutor<'_>,
    bound: &BoundMapping,
    user_id: Uuid,
    caller: &str,
    path: SyncPath,
) -> sqlx::Result<SyncRow> {
    sqlx::query_as(&bound.sql.sync_one)
        .bind(user_id)
        .bind(caller)
        .bind(path.as_str())
        .fetch_one(db)
        .await
}

/// Syncs many users in one statement, one row per id. `ids` must be distinct; `callers[i]` is
/// the audit caller of `ids[i]`.
#[tracing::instrument(level = "debug", skip_all, fields(users = ids.len()))]
pub async fn sync_many(
    db: impl PgExecutor<'_>,
    bound: &BoundMapping,
    ids: &[Uuid],
    callers: &[String],
    path: SyncPath,
) -> sqlx::Result<Vec<SyncRow>> {
    sqlx::query_as(&bound.sql.sync_batch)
        .bind(ids)
        .bind(callers)
        .bind(path.as_str())
        .fetch_all(db)
        .await
}

/// Which drift kinds apply to one id.
#[derive(Debug, sqlx::FromRow)]
pub struct DriftRow {
    pub in_source: bool,
    pub in_target: bool,
    pub missing: bool,
    pub stale: bool,
    pub mismatched: bool,
    pub orphaned: bool,
    pub deleted: bool,
}

impl DriftRow {
    /// Whether the id has drift of `kind`.
    pub fn has(&self, kind: DriftKind) -> bool {
        match kind {
            DriftKind::Missing => self.missing,
            DriftKind::Stale => self.stale,
            DriftKind::Mismatched => self.mismatched,
            DriftKind::Orphaned => self.orphaned,
            DriftKind::Deleted => self.deleted,
        }
    }
}

#[tracing::instrument(level = "debug", skip_all, fields(user_id = %user_id))]
pub async fn drift_one(
    db: impl PgExecutor<'_>,
    bound: &BoundMapping,
    user_id: Uuid,
) -> sqlx::Result<DriftRow> {
    sqlx::query_as(&bound.sql.drift_one)
        .bind(user_id)
        .fetch_one(db)
        .await
}

/// What the deleted-user statement found and did (see `Renderer::deleted_statement`).
#[derive(Debug, sqlx::FromRow)]
pub struct DeletedRow {
    /// The source row is gone or soft-deleted (a live user is left alone).
    pub gone: bool,
    /// The target row was deleted (the `delete` policy).
    pub removed: bool,
    /// The action of the event recorded now, if one was.
    pub action: Option<AuditAction>,
}

#[tracing::instrument(level = "debug", skip_all, fields(user_id = %user_id, policy = policy.as_str()))]
pub async fn apply_deleted(
    db: impl PgExecutor<'_>,
    bound: &BoundMapping,
    policy: DeletedPolicy,
    user_id: Uuid,
    caller: &str,
    path: SyncPath,
) -> sqlx::Result<DeletedRow> {
    sqlx::query_as(bound.sql.deleted(policy))
        .bind(user_id)
        .bind(caller)
        .bind(path.as_str())
        .fetch_one(db)
        .await
}

/// Both sides of one id (see `RenderedSql::user_sides`).
#[derive(Debug, sqlx::FromRow)]
pub struct SidesRow {
    pub auth: Option<serde_json::Value>,
    pub profile: Option<serde_json::Value>,
}

#[tracing::instrument(level = "debug", skip_all, fields(user_id = %user_id))]
pub async fn sides(
    db: impl PgExecutor<'_>,
    bound: &BoundMapping,
    user_id: Uuid,
) -> sqlx::Result<SidesRow> {
    sqlx::query_as(&bound.sql.user_sides)
        .bind(user_id)
        .fetch_one(db)
        .await
}

/// The stray profile holding the email of auth user `id` (see `RenderedSql::namesake_of`).
pub async fn namesake_of(
    db: impl PgExecutor<'_>,
    bound: &BoundMapping,
    id: Uuid,
) -> sqlx::Result<Option<Uuid>> {
    sqlx::query_scalar(&bound.sql.namesake_of)
        .bind(id)
        .fetch_optional(db)
        .await
}

/// The ids whose auth user or profile holds `email`, in any case.
pub async fn find_by_email(
    db: impl PgExecutor<'_>,
    bound: &BoundMapping,
    email: &str,
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar(&bound.sql.find_by_email)
        .bind(email)
        .fetch_all(db)
        .await
}
