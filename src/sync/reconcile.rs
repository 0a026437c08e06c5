//! Reconciliation runs: plan, guard, then walk the source in chunks and repair.
//!
//! One run at a time across every replica: a run holds a session-level advisory lock on a
//! connection of its own for its whole life. A run whose process dies loses the lock with its
//! session; the next start finds its row still `running`, marks it `abandoned`, and walks the
//! whole source again. That is safe because every repair re-checks its drift as it writes, and
//! each chunk commits its repairs, their audit events and the run's progress in one
//! transaction: a row repaired before the crash is simply no longer drifted.

use std::collections::BTreeMap;
use std::sync::Arc;

use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::repo::rekey::{self, Reference};
use crate::repo::repair::{self, KeyRange, PairRow, RunContext, SetRepair};
use crate::repo::runs;
use crate::supabase::AdminApi;
use crate::sync::drift::DriftKind;
use crate::sync::policy::{Action, Policies};
use crate::sync::provision::auth_user_for;
use crate::sync::run::{
    MovedReference, Plan, PlannedKind, Progress, RekeyPlan, Run, RunOptions, RunState,
};
use crate::sync::status;
use crate::sync::target::BoundMapping;

/// How many re-keys a plan lists in full.
const PLANNED_REKEYS: usize = 100;

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
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("lost the database session that holds the run lock; stopped so that no other run overlaps this one")]
    LostLock,
    #[error("the orphaned policy is `provision`, but no Supabase admin API is configured")]
    NoAdminApi,
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
    admin: Option<AdminApi>,
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
    pub fn new(
        db: PgPool,
        bound: Arc<BoundMapping>,
        policies: Policies,
        chunk_size: u32,
        admin: Option<AdminApi>,
    ) -> Self {
        Self {
            db,
            bound,
            policies,
            chunk_size: i64::from(chunk_size),
            admin,
        }
    }

    pub fn policies(&self) -> &Policies {
        &self.policies
    }

    /// Takes the run lock, marks runs left over by dead processes abandoned, and records the
    /// new run. Returns at once; `execute` does the work.
    #[tracing::instrument(skip_all)]
    pub async fn start(&self, caller: &str, options: RunOptions) -> Result<ActiveRun, StartError> {
        // A connection of its own, out of the pool: the lock lives exactly as long as it does.
        let mut lock = self.db.acquire().await?.detach();
        if !runs::try_lock(&mut lock).await? {
            let run_id = runs::active(&self.db).await?;
            return Err(StartError::InProgress { run_id });
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
        let plan = self.plan(&run.options).await?;
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

    /// Counts every requested kind (one statement) and, for re-keys, lists the moves.
    async fn plan(&self, options: &RunOptions) -> Result<Plan, RunError> {
        let counts = status::counts(&self.db, &self.bound).await?;
        let kinds: BTreeMap<DriftKind, PlannedKind> = options
            .kinds
            .iter()
            .map(|k| {
                let planned = PlannedKind {
                    action: self.policies.action(*k),
                    count: counts.drift.of(*k),
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
        let max_deletes = self.policies.max_deletes(counts.target_total);
        let rekeys = match kinds.get(&DriftKind::Mismatched) {
            Some(p) if p.action == Action::Rekey && p.count > 0 => self.rekey_plan().await?,
            _ => Vec::new(),
        };
        Ok(Plan {
            source_total: counts.source_total,
            target_total: counts.target_total,
            kinds,
            deletes,
            max_deletes,
            needs_override: deletes > max_deletes && !options.allow_mass_delete,
            rekeys,
        })
    }

    async fn rekey_plan(&self) -> Result<Vec<RekeyPlan>, RunError> {
        let references = rekey::references(&self.db, &self.bound).await?;
        let pairs = repair::pairs(&self.db, &self.bound, KeyRange::ALL).await?;
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

    fn wants(&self, run: &Run, kind: DriftKind, action: Action) -> bool {
        run.options.kinds.contains(&kind) && self.policies.action(kind) == action
    }

    async fn walk(
        &self,
        lock: &mut PgConnection,
        run: &mut Run,
        plan: &Plan,
        on_progress: &(dyn Fn(&Run) + Send + Sync),
    ) -> Result<RunState, RunError> {
        if self.wants(run, DriftKind::Orphaned, Action::Provision) && self.admin.is_none() {
            return Err(RunError::NoAdminApi);
        }
        let references = if self.wants(run, DriftKind::Mismatched, Action::Rekey) {
            Some(rekey::references(&self.db, &self.bound).await?)
        } else {
            None
        };
        let mut budget = Budget {
            repairs: run
                .options
                .limit
                .map(|l| i64::try_from(l).unwrap_or(i64::MAX)),
            deletes: (!run.options.allow_mass_delete).then_some(plan.max_deletes),
        };
        let mut first = Uuid::nil();
        loop {
            // The lock is only as good as its session: if that is gone, another run may start.
            sqlx::query("select 1")
                .execute(&mut *lock)
                .await
                .map_err(|_| RunError::LostLock)?;
            let (last, rows) =
                repair::chunk_end(&self.db, &self.bound, first, self.chunk_size).await?;
            let final_chunk = rows < self.chunk_size;
            let range = KeyRange {
                first,
                last: match last {
                    Some(last) if !final_chunk => last,
                    _ => Uuid::max(),
                },
            };
            self.repair_chunk(run, range, rows, references.as_ref(), &mut budget)
                .await?;
            on_progress(run);
            if final_chunk || budget.exhausted() {
                return Ok(RunState::Succeeded);
            }
            first = repair::successor(range.last)
                .expect("a chunk that is not the last ends below the largest id");
        }
    }

    /// One chunk: provisioning first (HTTP calls cannot join a transaction), then one
    /// transaction with the re-keys, the set-based repairs and the run's progress.
    async fn repair_chunk(
        &self,
        run: &mut Run,
        range: KeyRange,
        rows: i64,
        references: Option<&Result<Vec<Reference>, String>>,
        budget: &mut Budget,
    ) -> Result<(), RunError> {
        if self.wants(run, DriftKind::Orphaned, Action::Provision) {
            self.provision(run, range, budget).await?;
        }
        let mut progress = run.progress.clone();
        let ctx = RunContext {
            run_id: run.id,
            caller: &run.caller,
        };
        let mut tx = self.db.begin().await?;
        if let Some(references) = references {
            self.rekey_chunk(&mut tx, range, references, ctx, &mut progress, budget)
                .await?;
        }
        for repair in [
            SetRepair::CreateMissing,
            SetRepair::UpdateStale,
            SetRepair::DeleteDeleted,
            SetRepair::DeleteOrphaned,
        ] {
            let kind = repair.kind();
            let action = self.policies.action(kind);
            let expected = match repair {
                SetRepair::CreateMissing => Action::Create,
                SetRepair::UpdateStale => Action::Update,
                SetRepair::DeleteDeleted | SetRepair::DeleteOrphaned => Action::Delete,
            };
            if action != expected || !run.options.kinds.contains(&kind) {
                continue;
            }
            let deleting = action == Action::Delete;
            let limit = budget.limit(deleting);
            if limit.is_some_and(|l| l <= 0) {
                continue;
            }
            let repaired = repair::apply(&mut *tx, &self.bound, repair, range, ctx, limit).await?;
            budget.spend(repaired, deleting);
            progress.repaired(kind, repaired as u64);
        }
        progress.chunks += 1;
        progress.walked += rows as u64;
        progress.cursor = Some(range.last);
        runs::set_progress(&mut *tx, run.id, &progress).await?;
        tx.commit().await?;
        run.progress = progress;
        Ok(())
    }

    /// Re-keys the mismatched pairs whose source id is in the range, each under a savepoint so
    /// that one refused pair does not undo the chunk.
    async fn rekey_chunk(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        range: KeyRange,
        references: &Result<Vec<Reference>, String>,
        ctx: RunContext<'_>,
        progress: &mut Progress,
        budget: &mut Budget,
    ) -> Result<(), RunError> {
        let pairs = repair::pairs(&mut **tx, &self.bound, range).await?;
        let mut failed_source = None;
        for pair in pairs {
            if budget.exhausted() {
                break;
            }
            let refused = match references {
                Err(reason) => Some(reason.clone()),
                Ok(_) => ambiguity(&pair),
            };
            if let Some(reason) = refused {
                // An ambiguous source is listed once per candidate; report it once.
                if failed_source != Some(pair.source_id) {
                    progress.failed(DriftKind::Mismatched, pair.source_id, reason);
                    failed_source = Some(pair.source_id);
                }
                continue;
            }
            let references = references.as_ref().expect("checked above");
            // `begin` on a connection already in a transaction is a savepoint.
            let mut savepoint = sqlx::Connection::begin(&mut **tx).await?;
            match rekey::rekey(
                &mut *savepoint,
                &self.bound,
                references,
                pair.source_id,
                pair.target_id,
                ctx,
            )
            .await
            {
                Ok(moved) => {
                    savepoint.commit().await?;
                    if moved {
                        progress.repaired(DriftKind::Mismatched, 1);
                        budget.spend(1, false);
                    }
                }
                Err(sqlx::Error::Database(e)) => {
                    savepoint.rollback().await?;
                    progress.failed(
                        DriftKind::Mismatched,
                        pair.source_id,
                        format!("re-keying {} failed: {}", pair.target_id, e.message()),
                    );
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Creates the auth user of each orphaned row in the range through the admin API. Each
    /// success is recorded at once: the call cannot be undone, so its event must not wait for
    /// the chunk's transaction.
    async fn provision(
        &self,
        run: &mut Run,
        range: KeyRange,
        budget: &mut Budget,
    ) -> Result<(), RunError> {
        let admin = self.admin.as_ref().ok_or(RunError::NoAdminApi)?;
        let orphans = repair::orphans(&self.db, &self.bound, range, budget.limit(false)).await?;
        let ctx = RunContext {
            run_id: run.id,
            caller: &run.caller,
        };
        for orphan in orphans {
            let created = match auth_user_for(&self.bound.mapping, orphan.id, &orphan.row) {
                Err(reason) => Err(reason),
                Ok(user) => admin.create_user(&user).await.map_err(|e| e.to_string()),
            };
            match created {
                Ok(()) => {
                    repair::record_event(
                        &self.db,
                        ctx,
                        orphan.id,
                        DriftKind::Orphaned,
                        "provisioned",
                        Some(&orphan.row),
                        None,
                    )
                    .await?;
                    run.progress.repaired(DriftKind::Orphaned, 1);
                    budget.spend(1, false);
                }
                Err(reason) => run.progress.failed(DriftKind::Orphaned, orphan.id, reason),
            }
        }
        Ok(())
    }
}

/// Why a pair cannot be re-keyed without guessing: its email matches more than one profile, or
/// more than one user.
fn ambiguity(pair: &PairRow) -> Option<String> {
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
