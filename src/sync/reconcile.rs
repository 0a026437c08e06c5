//! Reconciliation runs: plan, guard, then walk the source in chunks and repair.
//!
//! One run at a time across every replica: a run holds a session-level advisory lock on a
//! connection of its own for its whole life. A run whose process dies loses the lock with its
//! session; the next start finds its row still `running`, marks it `abandoned`, and walks the
//! whole source again. That is safe because every repair re-checks its drift as it writes, and
//! each chunk commits its repairs, their audit events and the run's progress in one
//! transaction: a row repaired before the crash is simply no longer drifted.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use sqlx::postgres::PgPoolOptions;
use sqlx::{ConnectOptions, PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::compiler::bind::BoundMapping;
use crate::repo::access;
use crate::repo::rekey::{self, Reference};
use crate::repo::repair::{self, Pages, PairRow, RunContext, SetRepair, Side};
use crate::repo::runs;
use crate::repo::status as status_repo;
use crate::repo::users;
use crate::supabase::AdminApi;
use crate::sync::chunks;
use crate::sync::provision;
use crate::sync::source::{self, Unreadable};
use crate::sync::status;
use crate::vocabulary::policy::{Action, Policies};
use crate::vocabulary::run::{
    MovedReference, Plan, PlannedKind, Progress, RekeyPlan, Run, RunOptions, RunState,
};
use crate::vocabulary::DriftKind;

/// How many re-keys a plan lists in full.
const PLANNED_REKEYS: usize = 100;

/// How long a start waits for a run that has recorded its end to let go of the run lock.
const LOCK_HANDOVER: std::time::Duration = std::time::Duration::from_secs(2);
const LOCK_RETRY: std::time::Duration = std::time::Duration::from_millis(20);

/// Up to this many stray target rows (rows no auth user has, holding an email), a run reads
/// their emails once when it starts and its inserts check each user against that list; with
/// more, each insert probes the target's `lower(email)` index per user. The list spares a
/// backfill a probe per row, and above all the plan Postgres makes for such probes while the
/// target is still (nearly) empty: it may then scan the rows the statement itself is
/// inserting, once per row. The price: a stray row the app writes while the run is going is
/// not seen by that run (the user gets a profile; the stray row then shows as orphaned).
const KNOWN_STRAYS_MAX: i64 = 100;

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Another run holds the lock; its id, when its row is already written.
    #[error("a reconciliation run is in progress")]
    InProgress { run_id: Option<Uuid> },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Why a run stopped early.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("database error: {}", crate::sqlstate::describe(.0))]
    Database(#[from] sqlx::Error),
    #[error("lost the database session that holds the run lock; stopped so that no other run overlaps this one")]
    LostLock,
    #[error("the orphaned policy is `provision`, but no Supabase admin API is configured")]
    NoAdminApi,
    /// The source cannot be trusted (see `sync::source`): nothing was planned or written.
    #[error("auth.users cannot be read reliably: {0}")]
    Unreadable(#[from] Unreadable),
}

/// A started run: its row, and the connection that holds the run lock.
pub struct ActiveRun {
    lock: PgConnection,
    run: Run,
}

impl ActiveRun {
    pub fn run(&self) -> &Run {
        &self.run
    }
}

/// Plans and applies runs for one bound mapping.
#[derive(Clone)]
pub struct Reconciler {
    db: PgPool,
    bound: Arc<BoundMapping>,
    policies: Policies,
    chunk_size: i64,
    workers: usize,
    admin: Option<AdminApi>,
}

/// Source rows per reconciliation chunk: large enough that per-statement costs vanish, small
/// enough that one chunk's transaction stays short.
pub const DEFAULT_CHUNK_SIZE: u32 = 100_000;

/// Chunks in flight at once: the apply path is Postgres work, and two statements use two of the
/// server's cores while leaving the rest to the application.
pub const DEFAULT_WORKERS: u16 = 2;

/// How a run walks the source (`USERSYNC_RECONCILE_CHUNK_SIZE`, `USERSYNC_RECONCILE_WORKERS`).
#[derive(Debug, Clone, Copy)]
pub struct Walking {
    /// Source rows per chunk (one transaction each).
    pub chunk_size: u32,
    /// Chunks in flight at once, each on its own connection.
    pub workers: usize,
}

/// How many more rows the run may repair, and how many more it may delete.
#[derive(Debug, Clone, Copy)]
struct Budget {
    repairs: Option<i64>,
    deletes: Option<i64>,
}

impl Budget {
    fn limit(&self, deleting: bool) -> Option<i64> {
        match (self.repairs, self.deletes.filter(|_| deleting)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn spend(&mut self, rows: i64, deleting: bool) {
        if let Some(r) = &mut self.repairs {
            *r -= rows;
        }
        if deleting {
            if let Some(d) = &mut self.deletes {
                *d -= rows;
            }
        }
    }

    fn exhausted(&self) -> bool {
        self.repairs.is_some_and(|r| r <= 0)
    }
}

impl Reconciler {
    /// A reconciler over the database `db` connects to. Runs use connections of their own (the
    /// run lock's, one per chunk in flight, one for the rest), made with statement logging off:
    /// a run's plan and chunk statements take seconds by design, and sqlx would log each one as
    /// a slow statement, SQL and all, over the progress bar.
    pub fn new(
        db: PgPool,
        bound: Arc<BoundMapping>,
        policies: Policies,
        walking: Walking,
        admin: Option<AdminApi>,
    ) -> Self {
        let workers = walking.workers.max(1);
        let quiet = (*db.connect_options()).clone().disable_statement_logging();
        let db = PgPoolOptions::new()
            .max_connections(u32::try_from(workers + 2).unwrap_or(u32::MAX))
            .acquire_timeout(db.options().get_acquire_timeout())
            .test_before_acquire(false)
            .connect_lazy_with(quiet);
        Self {
            db,
            bound,
            policies,
            chunk_size: i64::from(walking.chunk_size),
            workers,
            admin,
        }
    }

    pub fn policies(&self) -> &Policies {
        &self.policies
    }

    /// The Supabase Auth admin API, when one is configured: what `provision` goes through.
    pub fn admin(&self) -> Option<&AdminApi> {
        self.admin.as_ref()
    }

    /// Takes the run lock, marks runs left over by dead processes abandoned, and records the
    /// new run. Returns at once; `execute` does the work.
    #[tracing::instrument(skip_all)]
    pub async fn start(&self, caller: &str, options: RunOptions) -> Result<ActiveRun, StartError> {
        // A connection of its own, out of the pool: the lock lives exactly as long as it does.
        let mut lock = self.db.acquire().await?.detach();
        let asked = tokio::time::Instant::now();
        while !runs::try_lock(&mut lock).await? {
            // A run records its end a moment before it lets go of the lock (and a starting one
            // takes the lock a moment before it is recorded): a lock held while no run shows
            // as in progress is about to be free. A caller who waited for the last run to end
            // must not be told that it is still going.
            let run_id = runs::active(&self.db).await?;
            if run_id.is_some() || asked.elapsed() >= LOCK_HANDOVER {
                return Err(StartError::InProgress { run_id });
            }
            tokio::time::sleep(LOCK_RETRY).await;
        }
        let resumed_from = runs::abandon_active(&mut lock).await?;
        if let Some(old) = resumed_from {
            tracing::warn!(abandoned_run = %old, "a previous run stopped midway; this run takes over its work");
        }
        let run = runs::insert(
            &mut lock,
            Uuid::new_v4(),
            caller,
            &options.normalized(),
            resumed_from,
        )
        .await?;
        tracing::info!(run_id = %run.id, dry_run = run.options.dry_run, "reconciliation run started");
        Ok(ActiveRun { lock, run })
    }

    /// Plans, then (unless a dry run or stopped by the guard) repairs chunk by chunk, calling
    /// `on_progress` after the plan and after each chunk. Always returns the run as it ended;
    /// the lock is released when this returns.
    #[tracing::instrument(skip_all, fields(run_id = %active.run.id))]
    pub async fn execute(
        &self,
        active: ActiveRun,
        on_progress: &(dyn Fn(&Run) + Send + Sync),
    ) -> Run {
        let ActiveRun { mut lock, mut run } = active;
        let outcome = self.drive(&mut lock, &mut run, on_progress).await;
        let (state, error) = match outcome {
            Ok(state) => (state, run.error.clone()),
            Err(e) => {
                tracing::error!(error = %e, "reconciliation run failed");
                (RunState::Failed, Some(e.to_string()))
            }
        };
        run.state = state;
        run.error = error;
        match runs::finish(&self.db, run.id, state, &run.progress, run.error.as_deref()).await {
            Ok(finished) => run = finished,
            Err(e) => tracing::error!(error = %e, "cannot record the end of the run"),
        }
        // Closing the session would release the lock too; unlocking first says so explicitly.
        let _ = runs::unlock(&mut lock).await;
        drop(lock);
        tracing::info!(
            state = state.as_str(),
            repaired = run.progress.total_repaired(),
            failed = run.progress.total_failed(),
            "reconciliation run ended"
        );
        run
    }

    pub async fn get(&self, id: Uuid) -> sqlx::Result<Option<Run>> {
        runs::get(&self.db, id).await
    }

    pub async fn recent(&self, limit: i64) -> sqlx::Result<Vec<Run>> {
        runs::recent(&self.db, limit).await
    }

    async fn drive(
        &self,
        lock: &mut PgConnection,
        run: &mut Run,
        on_progress: &(dyn Fn(&Run) + Send + Sync),
    ) -> Result<RunState, RunError> {
        // A role that does not see every auth user would take every profile for an orphan.
        source::check_access(&self.db).await??;
        let plan = self.plan(&run.options).await?;
        // (Provisioning from an empty source is what it is for: a project moving its users
        // into Supabase Auth. A blind read would only ask the admin API for users it has.)
        if plan.deletes > 0 {
            let last = access::last_planned_totals(&self.db, run.id).await?;
            source::check_totals(
                plan.source_total,
                plan.target_total,
                last,
                self.policies.max_delete_share,
            )?;
        }
        let proceed = !run.options.dry_run && !plan.needs_override;
        let next = if proceed {
            RunState::Running
        } else {
            RunState::Planning
        };
        runs::set_plan(&self.db, run.id, &plan, next).await?;
        run.plan = Some(plan.clone());
        run.state = next;
        on_progress(run);
        if run.options.dry_run {
            return Ok(RunState::Succeeded);
        }
        if plan.needs_override {
            run.error = Some(format!(
                "this run would delete {} of {} target rows, more than the configured share \
                 (USERSYNC_MAX_DELETE_SHARE allows {}); check the plan, then start it again \
                 with allow_mass_delete",
                plan.deletes, plan.target_total, plan.max_deletes
            ));
            return Ok(RunState::NeedsOverride);
        }
        self.walk(lock, run, &plan, on_progress).await
    }

    /// Counts every requested kind and, for re-keys, lists the moves. All five kinds are one
    /// statement (one pass over both tables); a few kinds are cheaper counted one by one.
    async fn plan(&self, options: &RunOptions) -> Result<Plan, RunError> {
        let (source_total, target_total, counts) = if let Some(id) = options.user_id {
            // One user: their drift, by index; the totals as any run counts them, for the
            // guard against a source that reads short.
            let (source_total, target_total) = status_repo::totals(&self.db, &self.bound).await?;
            let drift = users::drift_one(&self.db, &self.bound, id).await?;
            let counts = options
                .kinds
                .iter()
                .map(|k| i64::from(drift.has(*k)))
                .collect();
            (source_total, target_total, counts)
        } else if options.kinds.len() == DriftKind::ALL.len() {
            let c = status::counts(&self.db, &self.bound).await?;
            let counts: Vec<i64> = options.kinds.iter().map(|k| c.drift.of(*k)).collect();
            (c.source_total, c.target_total, counts)
        } else {
            let (source_total, target_total) = status_repo::totals(&self.db, &self.bound).await?;
            let mut counts = Vec::with_capacity(options.kinds.len());
            for kind in &options.kinds {
                counts.push(status_repo::count(&self.db, &self.bound, *kind).await?);
            }
            (source_total, target_total, counts)
        };
        let kinds: BTreeMap<DriftKind, PlannedKind> = options
            .kinds
            .iter()
            .zip(counts)
            .map(|(k, count)| {
                let planned = PlannedKind {
                    action: self.action(options, *k),
                    count,
                };
                (*k, planned)
            })
            .collect();
        let all_deletes: i64 = kinds
            .values()
            .filter(|p| p.action == Action::Delete)
            .map(|p| p.count)
            .sum();
        let deletes = match options.limit {
            Some(limit) => all_deletes.min(i64::try_from(limit).unwrap_or(i64::MAX)),
            None => all_deletes,
        };
        let max_deletes = self.policies.max_deletes(target_total);
        let rekeys = match kinds.get(&DriftKind::Mismatched) {
            Some(p) if p.action == Action::Rekey && p.count > 0 => {
                let pages = match options.user_id {
                    Some(id) => repair::place(&self.db, &self.bound, Side::Source, id).await?,
                    None => Some(Pages::ALL),
                };
                match pages {
                    Some(pages) => self.rekey_plan(pages).await?,
                    None => Vec::new(),
                }
            }
            _ => Vec::new(),
        };
        Ok(Plan {
            source_total,
            target_total,
            kinds,
            deletes,
            max_deletes,
            needs_override: deletes > max_deletes && !options.allow_mass_delete,
            rekeys,
        })
    }

    /// The re-keys of the mismatched pairs whose auth user is in `pages`.
    async fn rekey_plan(&self, pages: Pages) -> Result<Vec<RekeyPlan>, RunError> {
        let references = rekey::references(&self.db, &self.bound).await?;
        let pairs = repair::pairs(&self.db, &self.bound, pages).await?;
        let mut plans = Vec::new();
        for pair in pairs.into_iter().take(PLANNED_REKEYS) {
            let (moved, refused) = match &references {
                Err(reason) => (Vec::new(), Some(reason.clone())),
                Ok(refs) => {
                    let mut moved = Vec::with_capacity(refs.len());
                    for r in refs {
                        moved.push(MovedReference {
                            constraint: r.constraint.clone(),
                            table: r.table_name(),
                            column: r.column.clone(),
                            rows: rekey::count_references(&self.db, r, pair.target_id).await?,
                        });
                    }
                    (moved, ambiguity(&pair))
                }
            };
            plans.push(RekeyPlan {
                source_id: pair.source_id,
                target_id: pair.target_id,
                references: moved,
                refused,
            });
        }
        Ok(plans)
    }

    fn wants(&self, options: &RunOptions, kind: DriftKind, action: Action) -> bool {
        options.kinds.contains(&kind) && self.action(options, kind) == action
    }

    /// The repair a run with `options` applies to `kind`: the one asked for, or the policy's.
    fn action(&self, options: &RunOptions, kind: DriftKind) -> Action {
        options.action.unwrap_or_else(|| self.policies.action(kind))
    }

    /// Walks the source in chunks, up to `workers` chunks at a time (one at a time when a
    /// limit or the delete bound must be counted exactly).
    async fn walk(
        &self,
        lock: &mut PgConnection,
        run: &mut Run,
        plan: &Plan,
        on_progress: &(dyn Fn(&Run) + Send + Sync),
    ) -> Result<RunState, RunError> {
        if self.wants(&run.options, DriftKind::Orphaned, Action::Provision) && self.admin.is_none()
        {
            return Err(RunError::NoAdminApi);
        }
        let references = if self.wants(&run.options, DriftKind::Mismatched, Action::Rekey) {
            Some(rekey::references(&self.db, &self.bound).await?)
        } else {
            None
        };
        // One user needs no list of the whole target's strays: the per-row probe is cheaper.
        let strays = if self.wants(&run.options, DriftKind::Missing, Action::Create)
            && run.options.user_id.is_none()
        {
            repair::stray_emails(&self.db, &self.bound, KNOWN_STRAYS_MAX).await?
        } else {
            None
        };
        let deletes_planned = plan.kinds.values().any(|p| p.action == Action::Delete);
        let budget = Budget {
            repairs: run
                .options
                .limit
                .map(|l| i64::try_from(l).unwrap_or(i64::MAX)),
            deletes: (!run.options.allow_mass_delete && deletes_planned)
                .then_some(plan.max_deletes),
        };
        let workers = if budget.repairs.is_some() || budget.deletes.is_some() {
            1
        } else {
            self.workers
        };
        let walk = Walk {
            reconciler: self,
            run_id: run.id,
            caller: run.caller.clone(),
            options: run.options.clone(),
            references: references.as_ref(),
            strays: strays.as_deref(),
            state: Mutex::new(WalkState {
                progress: run.progress.clone(),
                budget,
            }),
        };
        // The source first (missing, stale, mismatched start from an auth user), then the
        // target (orphaned, deleted start from a profile), each cut as it then stands.
        for side in [Side::Source, Side::Target] {
            if !self.walks(&run.options, side) {
                continue;
            }
            let chunks = match run.options.user_id {
                Some(id) => repair::place(&self.db, &self.bound, side, id)
                    .await?
                    .into_iter()
                    .collect(),
                None => {
                    let (source_pages, target_pages) = repair::pages(&self.db, &self.bound).await?;
                    let (table_pages, rows) = side.pick(
                        (source_pages, plan.source_total),
                        (target_pages, plan.target_total),
                    );
                    chunks::split(table_pages, rows, self.chunk_size)
                }
            };
            let mut chunks = chunks.into_iter();
            let mut in_flight = FuturesUnordered::new();
            loop {
                while in_flight.len() < workers && !walk.state().budget.exhausted() {
                    let Some(pages) = chunks.next() else {
                        break;
                    };
                    // The lock is only as good as its session: if that is gone, another run
                    // may start, so stop before the next chunk.
                    sqlx::query("select 1")
                        .execute(&mut *lock)
                        .await
                        .map_err(|_| RunError::LostLock)?;
                    in_flight.push(walk.chunk(side, pages));
                }
                match in_flight.next().await {
                    None => break,
                    Some(result) => {
                        result?;
                        run.progress = walk.state().progress.clone();
                        on_progress(run);
                    }
                }
            }
        }
        Ok(RunState::Succeeded)
    }

    /// How many rows a run with `options` and `plan` walks: the source's, and the target's
    /// when it repairs orphaned or deleted profiles (what `Progress::walked` counts towards).
    pub fn rows_to_walk(&self, options: &RunOptions, plan: &Plan) -> u64 {
        [
            (Side::Source, plan.source_total),
            (Side::Target, plan.target_total),
        ]
        .into_iter()
        .filter(|(side, _)| self.walks(options, *side))
        .map(|(_, rows)| rows.max(0) as u64)
        .sum()
    }

    /// Whether a run with `options` has work on `side`'s chunks.
    fn walks(&self, options: &RunOptions, side: Side) -> bool {
        options
            .kinds
            .iter()
            .any(|kind| kind_side(*kind) == side && self.action(options, *kind) != Action::Report)
    }
}

/// Which table a kind's repairs walk: those that start from an auth user walk the source,
/// those that start from a profile the target.
fn kind_side(kind: DriftKind) -> Side {
    match kind {
        DriftKind::Missing | DriftKind::Stale | DriftKind::Mismatched => Side::Source,
        DriftKind::Orphaned | DriftKind::Deleted => Side::Target,
    }
}

/// One walk over the source: what its chunks share.
struct Walk<'a> {
    reconciler: &'a Reconciler,
    run_id: Uuid,
    caller: String,
    options: RunOptions,
    references: Option<&'a Result<Vec<Reference>, String>>,
    /// The stray rows' emails, when there are few (see `KNOWN_STRAYS_MAX`).
    strays: Option<&'a [String]>,
    /// Never held across an await: the chunks run as futures of one task.
    state: Mutex<WalkState>,
}

/// The run's progress and budget.
struct WalkState {
    progress: Progress,
    budget: Budget,
}

impl Walk<'_> {
    fn context(&self) -> RunContext<'_> {
        RunContext {
            run_id: self.run_id,
            caller: &self.caller,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, WalkState> {
        self.state
            .lock()
            .expect("no chunk panics while holding the walk state")
    }

    /// The budget left for a statement.
    fn limit(&self, deleting: bool) -> Option<i64> {
        self.state().budget.limit(deleting)
    }

    /// One chunk of `side`'s pages: provisioning first (HTTP calls cannot join a transaction),
    /// then one transaction with the re-keys, the set-based repairs and the run's progress.
    async fn chunk(&self, side: Side, pages: Pages) -> Result<(), RunError> {
        let r = self.reconciler;
        if side == Side::Target && r.wants(&self.options, DriftKind::Orphaned, Action::Provision) {
            self.provision(pages).await?;
        }
        let mut done = Progress::default();
        let mut tx = r.db.begin().await?;
        repair::tune_chunk(&mut *tx).await?;
        let rows = repair::chunk_rows(&mut *tx, &r.bound, side, pages).await?;
        if let (Side::Source, Some(references)) = (side, self.references) {
            self.rekeys(&mut tx, pages, references, &mut done).await?;
        }
        for repair in [
            SetRepair::CreateMissing,
            SetRepair::UpdateStale,
            SetRepair::DeleteDeleted,
            SetRepair::DeleteOrphaned,
        ] {
            let kind = repair.kind();
            if kind_side(kind) != side {
                continue;
            }
            if !r.wants(&self.options, kind, repair.action()) {
                continue;
            }
            let deleting = repair.action() == Action::Delete;
            let limit = self.limit(deleting);
            if limit.is_some_and(|l| l <= 0) {
                continue;
            }
            let repaired = self
                .isolating(&mut tx, repair, side, pages, limit, &mut done, 0)
                .await?;
            self.state().budget.spend(repaired, deleting);
            done.repaired(kind, repaired as u64);
        }
        // The users those inserts and updates left out because the target cannot store one of
        // their values: each fails alone, named by the column, never by the value.
        let refusing = [SetRepair::CreateMissing, SetRepair::UpdateStale]
            .into_iter()
            .filter(|repair| {
                side == Side::Source && r.wants(&self.options, repair.kind(), repair.action())
            })
            .map(SetRepair::kind)
            .collect::<Vec<_>>();
        if !refusing.is_empty() {
            for refused in repair::refused_users(&mut *tx, &r.bound, pages).await? {
                if refusing.contains(&refused.kind) {
                    done.failed(
                        refused.kind,
                        refused.id,
                        format!(
                            "column {}: this user's value cannot be stored in it",
                            refused.column_name
                        ),
                    );
                }
            }
        }
        // Progress commits with the chunk's repairs. Locking the run's row first makes
        // concurrent chunks take turns from here to their commit, so that each writes a total
        // that includes every chunk committed before it.
        runs::lock(&mut *tx, self.run_id).await?;
        let progress = {
            let mut state = self.state();
            state.progress.merge(done);
            state.progress.chunks += 1;
            state.progress.walked += rows as u64;
            state.progress.clone()
        };
        runs::set_progress(&mut *tx, self.run_id, &progress).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Applies `repair` to a chunk under a savepoint. When the database refuses the statement
    /// because of a row's data (SQLSTATE class 22 or 23: a value out of range, a check or
    /// unique constraint of the target's), the chunk is split in halves until each refused row
    /// is alone: it fails alone, recorded with its id and the error (never the value), and
    /// every other row of the chunk is repaired.
    #[allow(clippy::too_many_arguments)]
    fn isolating<'s>(
        &'s self,
        tx: &'s mut Transaction<'static, Postgres>,
        repair: SetRepair,
        side: Side,
        pages: Pages,
        limit: Option<i64>,
        done: &'s mut Progress,
        depth: u32,
    ) -> BoxFuture<'s, Result<i64, RunError>> {
        Box::pin(async move {
            let r = self.reconciler;
            let mut savepoint = sqlx::Connection::begin(&mut **tx).await?;
            let applied = repair::apply(
                &mut savepoint,
                &r.bound,
                repair,
                pages,
                self.context(),
                limit,
                self.strays,
            )
            .await;
            let refused = match applied {
                Ok(repaired) => {
                    savepoint.commit().await?;
                    return Ok(repaired);
                }
                Err(e) if crate::sqlstate::is_refused_by_data(&e) && depth < MAX_SPLITS => {
                    savepoint.rollback().await?;
                    crate::sqlstate::describe(&e)
                }
                Err(e) => return Err(e.into()),
            };
            // Only an open-ended chunk needs the table's size, to be closed where it ends now (a
            // closed chunk's halves do not depend on it).
            let table_pages = if pages.end.is_none() {
                let (source_pages, target_pages) = repair::pages(&mut **tx, &r.bound).await?;
                u32::try_from(side.pick(source_pages, target_pages)).unwrap_or(u32::MAX)
            } else {
                0
            };
            match pages.halves(table_pages) {
                Some((first, second)) => {
                    let a = self
                        .isolating(tx, repair, side, first, limit, done, depth + 1)
                        .await?;
                    let limit = limit.map(|l| l - a);
                    let b = self
                        .isolating(tx, repair, side, second, limit, done, depth + 1)
                        .await?;
                    Ok(a + b)
                }
                None => {
                    for id in repair::chunk_ids(&mut **tx, &r.bound, side, pages).await? {
                        done.failed(repair.kind(), id, refused.clone());
                    }
                    Ok(0)
                }
            }
        })
    }

    /// Re-keys the mismatched pairs whose source row is in the chunk, each under a savepoint
    /// so that one refused pair does not undo the chunk.
    async fn rekeys(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        pages: Pages,
        references: &Result<Vec<Reference>, String>,
        done: &mut Progress,
    ) -> Result<(), RunError> {
        let bound = &self.reconciler.bound;
        let pairs = repair::pairs(&mut **tx, bound, pages).await?;
        let mut failed_source = None;
        for pair in pairs {
            if self.state().budget.exhausted() {
                break;
            }
            let refused = match references {
                Err(reason) => Some(reason.clone()),
                Ok(_) => ambiguity(&pair),
            };
            if let Some(reason) = refused {
                // An ambiguous source is listed once per candidate; report it once.
                if failed_source != Some(pair.source_id) {
                    done.failed(DriftKind::Mismatched, pair.source_id, reason);
                    failed_source = Some(pair.source_id);
                }
                continue;
            }
            let references = references.as_ref().expect("checked above");
            // `begin` on a connection already in a transaction is a savepoint.
            let mut savepoint = sqlx::Connection::begin(&mut **tx).await?;
            let moved = rekey::rekey(
                &mut *savepoint,
                bound,
                references,
                pair.source_id,
                pair.target_id,
                self.context(),
            )
            .await;
            match moved {
                Ok(moved) => {
                    savepoint.commit().await?;
                    if moved {
                        done.repaired(DriftKind::Mismatched, 1);
                        self.state().budget.spend(1, false);
                    }
                }
                Err(sqlx::Error::Database(e)) => {
                    savepoint.rollback().await?;
                    done.failed(
                        DriftKind::Mismatched,
                        pair.source_id,
                        format!(
                            "re-keying {} failed: {}",
                            pair.target_id,
                            crate::sqlstate::describe(&sqlx::Error::Database(e))
                        ),
                    );
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Creates the auth user of each orphaned row in the chunk through the admin API.
    async fn provision(&self, pages: Pages) -> Result<(), RunError> {
        let r = self.reconciler;
        let admin = r.admin.as_ref().ok_or(RunError::NoAdminApi)?;
        let limit = self.limit(false);
        let orphans = repair::orphans(&r.db, &r.bound, pages, limit).await?;
        for orphan in orphans {
            match provision::provision(&r.db, admin, &r.bound.mapping, &orphan, self.context())
                .await?
            {
                Ok(()) => {
                    let mut state = self.state();
                    state.progress.repaired(DriftKind::Orphaned, 1);
                    state.budget.spend(1, false);
                }
                Err(reason) => {
                    self.state()
                        .progress
                        .failed(DriftKind::Orphaned, orphan.id, reason.to_string())
                }
            }
        }
        Ok(())
    }
}

/// The most times a refused chunk is split: enough to narrow a billion rows to one, and a
/// bound if rows kept arriving at the end of an open chunk.
const MAX_SPLITS: u32 = 64;

/// Why a pair cannot be re-keyed without guessing: its email matches more than one profile, or
/// more than one user.
pub(crate) fn ambiguity(pair: &PairRow) -> Option<String> {
    if pair.targets > 1 {
        return Some(format!(
            "ambiguous: {} profiles without an auth user hold this email",
            pair.targets
        ));
    }
    if pair.sources > 1 {
        return Some(format!(
            "ambiguous: {} auth users without a profile hold the email of profile {}",
            pair.sources, pair.target_id
        ));
    }
    None
}
