//! The set-based statements of a reconciliation run (rendered in `compiler::render::RepairSql`).
//!
//! Each write covers one chunk of a table's pages in one statement, with its audit events
//! written by the same statement: no round trip per user. Chunk statements are never kept as
//! prepared statements: a cached generic plan knows nothing of how many pages `[$1, $2)` spans,
//! and may read the whole table instead of the chunk; each is planned for its own bounds.

use sqlx::{Connection, PgConnection, PgExecutor};
use uuid::Uuid;

use crate::compiler::bind::BoundMapping;
use crate::vocabulary::policy::Action;
use crate::vocabulary::{AuditAction, DriftKind, SyncPath};

/// A row's place in its table: a page and an offset in it (Postgres's `tid`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Tid {
    pub page: u32,
    pub offset: u16,
}

impl Tid {
    /// The first place of `page`.
    pub const fn page(page: u32) -> Tid {
        Tid { page, offset: 0 }
    }

    fn sql(self) -> String {
        format!("({},{})", self.page, self.offset)
    }

    /// Reads Postgres's text form, `(page,offset)`.
    fn parse(text: &str) -> Option<Tid> {
        let (page, offset) = text.strip_prefix('(')?.strip_suffix(')')?.split_once(',')?;
        Some(Tid {
            page: page.parse().ok()?,
            offset: offset.parse().ok()?,
        })
    }
}

/// The most rows a page holds (Postgres's `MaxHeapTuplesPerPage` for 8 KiB pages): past it, an
/// offset names no row.
const ROWS_PER_PAGE: u16 = 291;

/// A chunk of a table: the rows in places `first..end`, or `first..` to the table's end when
/// `end` is `None` (rows a run's own inserts or concurrent writes add at the end are walked
/// too). A run cuts whole pages; a chunk the database refuses is split down to single rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pages {
    pub first: Tid,
    pub end: Option<Tid>,
}

impl Pages {
    /// Every row.
    pub const ALL: Pages = Pages {
        first: Tid::page(0),
        end: None,
    };

    /// The pages `first..end` (`None`: to the table's end).
    pub fn of(first: u32, end: Option<u32>) -> Pages {
        Pages {
            first: Tid::page(first),
            end: end.map(Tid::page),
        }
    }

    /// The one place `at`: a chunk of one row.
    pub fn row(at: Tid) -> Pages {
        Pages {
            first: at,
            end: Some(Tid {
                page: at.page,
                offset: at.offset + 1,
            }),
        }
    }

    /// The bounds as `in_chunk` binds them.
    fn bounds(self) -> (String, String) {
        (
            self.first.sql(),
            self.end.map_or_else(|| Tid::page(u32::MAX).sql(), Tid::sql),
        )
    }

    /// Two chunks that hold exactly this one's rows, or `None` when it holds at most one place.
    /// An open-ended chunk is first closed at `pages` (the table's pages now) and its open rest.
    pub fn halves(self, pages: u32) -> Option<(Pages, Pages)> {
        let Some(end) = self.end else {
            let close = Tid::page(pages.max(self.first.page.saturating_add(1)));
            return Some((
                Pages {
                    first: self.first,
                    end: Some(close),
                },
                Pages {
                    first: close,
                    end: None,
                },
            ));
        };
        let mid = if end.page > self.first.page.saturating_add(1)
            || (end.page == self.first.page + 1 && end.offset > 0)
        {
            // Several pages: split at a page.
            Tid::page(self.first.page + (end.page - self.first.page).div_ceil(2))
        } else {
            // One page: split its places.
            let last = if end.page == self.first.page {
                end.offset
            } else {
                ROWS_PER_PAGE + 1
            };
            if last <= self.first.offset + 1 {
                return None;
            }
            Tid {
                page: self.first.page,
                offset: self.first.offset + (last - self.first.offset) / 2,
            }
        };
        Some((
            Pages {
                first: self.first,
                end: Some(mid),
            },
            Pages {
                first: mid,
                end: Some(end),
            },
        ))
    }
}

/// Which table a chunk's rows are of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Source,
    Target,
}

impl Side {
    /// This side's one of a pair: its statement, its table's size.
    pub fn pick<T>(self, source: T, target: T) -> T {
        match self {
            Side::Source => source,
            Side::Target => target,
        }
    }
}

/// The pages of `auth.users` and of the target.
pub async fn pages(db: impl PgExecutor<'_>, bound: &BoundMapping) -> sqlx::Result<(i64, i64)> {
    sqlx::query_as(&bound.sql.repair.pages).fetch_one(db).await
}

/// The ids of the rows a chunk of `side` holds.
pub async fn chunk_ids(
    db: impl PgExecutor<'_>,
    bound: &BoundMapping,
    side: Side,
    chunk: Pages,
) -> sqlx::Result<Vec<Uuid>> {
    let sql = side.pick(&bound.sql.repair.source_ids, &bound.sql.repair.target_ids);
    let (first, end) = chunk.bounds();
    sqlx::query_scalar(sql)
        .bind(first)
        .bind(end)
        .persistent(false)
        .fetch_all(db)
        .await
}

/// How many rows a chunk of `side` holds.
pub async fn chunk_rows(
    db: impl PgExecutor<'_>,
    bound: &BoundMapping,
    side: Side,
    chunk: Pages,
) -> sqlx::Result<i64> {
    let sql = side.pick(&bound.sql.repair.source_rows, &bound.sql.repair.target_rows);
    let (first, end) = chunk.bounds();
    sqlx::query_scalar(sql)
        .bind(first)
        .bind(end)
        .persistent(false)
        .fetch_one(db)
        .await
}

/// Settings for the rest of a chunk's transaction.
///
/// Memory: each write holds the chunk's changed rows and their audit images between its CTEs
/// (tens of megabytes at the default chunk size), which the server's default `work_mem` would
/// send through temporary files.
///
/// No sequential scans where an index will do: the create statement probes the target for each
/// source row, and the target grows under that statement. Planned on a target that is empty
/// (the first run of a new project), the probe is a sequential scan, repeated per row over
/// every page the statement has written so far: a 100,000-row chunk took minutes.
pub async fn tune_chunk(db: impl PgExecutor<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "select set_config('work_mem', '64MB', true), set_config('enable_seqscan', 'off', true)",
    )
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

    /// The policy's repair this statement applies to its kind.
    pub fn action(self) -> Action {
        match self {
            SetRepair::CreateMissing => Action::Create,
            SetRepair::UpdateStale => Action::Update,
            SetRepair::DeleteDeleted | SetRepair::DeleteOrphaned => Action::Delete,
        }
    }
}

/// Applies `repair` to a chunk, repairing at most `limit` rows (`None`: no bound), and returns
/// how many rows it repaired. `strays`, when known, are the emails of the stray target rows
/// (see `stray_emails`), which spare the insert a probe per row.
///
/// A create runs unguarded first, under a savepoint; a unique violation (a profile made since
/// the statement's snapshot, or a value another unique index refuses) runs it again guarded,
/// which skips the former and meets the latter again (see `sql::Creates`).
#[allow(clippy::too_many_arguments)]
pub async fn apply(
    db: &mut PgConnection,
    bound: &BoundMapping,
    repair: SetRepair,
    chunk: Pages,
    run: RunContext<'_>,
    limit: Option<i64>,
    strays: Option<&[String]>,
) -> sqlx::Result<i64> {
    let sql = &bound.sql.repair;
    let strays = strays.filter(|_| repair == SetRepair::CreateMissing);
    let execute = |sql| ChunkStatement {
        sql,
        chunk,
        run,
        limit,
        strays,
    };
    let creates = match repair {
        SetRepair::CreateMissing if strays.is_some() => &sql.create_missing_known_strays,
        SetRepair::CreateMissing => &sql.create_missing,
        SetRepair::UpdateStale => return execute(&sql.update_stale).run(db).await,
        SetRepair::DeleteDeleted => return execute(&sql.delete_deleted).run(db).await,
        SetRepair::DeleteOrphaned => return execute(&sql.delete_orphaned).run(db).await,
    };
    let mut savepoint = db.begin().await?;
    match execute(&creates.unguarded).run(&mut savepoint).await {
        Ok(created) => {
            savepoint.commit().await?;
            Ok(created)
        }
        Err(e)
            if e.as_database_error()
                .is_some_and(|e| e.is_unique_violation()) =>
        {
            savepoint.rollback().await?;
            execute(&creates.guarded).run(db).await
        }
        Err(e) => {
            savepoint.rollback().await?;
            Err(e)
        }
    }
}

/// One chunk statement with a run's parameters: `$1`, `$2` the chunk, `$3` the run, `$4` the
/// caller, `$5` the most rows, and `$6` the stray emails when they are known.
struct ChunkStatement<'a> {
    sql: &'a str,
    chunk: Pages,
    run: RunContext<'a>,
    limit: Option<i64>,
    strays: Option<&'a [String]>,
}

impl ChunkStatement<'_> {
    async fn run(self, db: &mut PgConnection) -> sqlx::Result<i64> {
        let (first, end) = self.chunk.bounds();
        let query = sqlx::query_scalar(self.sql)
            .bind(first)
            .bind(end)
            .bind(self.run.run_id)
            .bind(self.run.caller)
            .bind(self.limit)
            .persistent(false);
        match self.strays {
            Some(strays) => query.bind(strays).fetch_one(db).await,
            None => query.fetch_one(db).await,
        }
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

/// The users of a chunk of the source whose values the target cannot store; none when the
/// mapping has no column that can refuse a value.
pub async fn refused_users(
    db: impl PgExecutor<'_>,
    bound: &BoundMapping,
    chunk: Pages,
) -> sqlx::Result<Vec<RefusedRow>> {
    let (first, end) = chunk.bounds();
    match &bound.sql.repair.refused_users {
        None => Ok(Vec::new()),
        Some(sql) => {
            sqlx::query_as(sql)
                .bind(first)
                .bind(end)
                .persistent(false)
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

/// Where the row of `id` is on `side` now, if it exists: the chunk a run of one user walks.
/// (A row that moves before the chunk's statements run is simply not found in its old place:
/// the repair does nothing, and says so.)
pub async fn place(
    db: impl PgExecutor<'_>,
    bound: &BoundMapping,
    side: Side,
    id: Uuid,
) -> sqlx::Result<Option<Pages>> {
    let sql = side.pick(
        &bound.sql.repair.source_place,
        &bound.sql.repair.target_place,
    );
    let place: Option<String> = sqlx::query_scalar(sql).bind(id).fetch_optional(db).await?;
    Ok(place.as_deref().and_then(Tid::parse).map(Pages::row))
}

/// The orphaned rows of a chunk of the target.
pub async fn orphans(
    db: impl PgExecutor<'_>,
    bound: &BoundMapping,
    chunk: Pages,
    limit: Option<i64>,
) -> sqlx::Result<Vec<OrphanRow>> {
    let (first, end) = chunk.bounds();
    sqlx::query_as(&bound.sql.repair.orphans)
        .bind(first)
        .bind(end)
        .bind(limit)
        .persistent(false)
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

/// The mismatched pairs whose source row is in a chunk of the source.
pub async fn pairs(
    db: impl PgExecutor<'_>,
    bound: &BoundMapping,
    chunk: Pages,
) -> sqlx::Result<Vec<PairRow>> {
    let (first, end) = chunk.bounds();
    sqlx::query_as(&bound.sql.repair.pairs)
        .bind(first)
        .bind(end)
        .persistent(false)
        .fetch_all(db)
        .await
}

/// The profile of `id` when it is orphaned (see `RenderedSql::orphan_one`).
pub async fn orphan_one(
    db: impl PgExecutor<'_>,
    bound: &BoundMapping,
    id: Uuid,
) -> sqlx::Result<Option<OrphanRow>> {
    sqlx::query_as(&bound.sql.orphan_one)
        .bind(id)
        .fetch_optional(db)
        .await
}

/// Whom a repair made outside a set-based statement is filed under: a run (path `batch`), or
/// one call (a webhook's signal).
#[derive(Debug, Clone, Copy)]
pub struct Filed<'a> {
    pub run_id: Option<Uuid>,
    pub caller: &'a str,
    pub path: SyncPath,
}

impl<'a> From<RunContext<'a>> for Filed<'a> {
    fn from(run: RunContext<'a>) -> Self {
        Filed {
            run_id: Some(run.run_id),
            caller: run.caller,
            path: SyncPath::Batch,
        }
    }
}

/// Records one repair done outside a set-based statement (a re-key, a provisioned auth user).
#[allow(clippy::too_many_arguments)]
pub async fn record_event(
    db: impl PgExecutor<'_>,
    filed: impl Into<Filed<'_>>,
    user_id: Uuid,
    kind: DriftKind,
    action: AuditAction,
    before: Option<&serde_json::Value>,
    after: Option<&serde_json::Value>,
) -> sqlx::Result<()> {
    let filed = filed.into();
    sqlx::query!(
        "insert into usersync.events (run_id, user_id, caller, path, kind, action, before, after)
         values ($1, $2, $3, $4, $5, $6, $7, $8)",
        filed.run_id,
        user_id,
        filed.caller,
        filed.path.as_str(),
        kind.as_str(),
        action.as_str(),
        before,
        after,
    )
    .execute(db)
    .await
    .map(|_| ())
}
