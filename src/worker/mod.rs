//! The healing loop inside `usersync serve`: whatever slipped past the trigger path is healed
//! here, exactly once, however many replicas run.
//!
//! One replica leads (see `leader`); the others stand by and try to take over every second.
//! The leader
//! - LISTENs for new dead letters and drains the due ones at once;
//! - retries a failed letter on its schedule, the next attempt stored in Postgres;
//! - sweeps for due letters at least every sweep interval, in case a notification was lost;
//! - starts a reconciliation run every reconciliation interval (the run engine's own: one run
//!   at a time across replicas, the configured repair policies, the mass-delete guard).
//!
//! Every heal re-reads `auth.users` and writes through the same statement as sync-one, whose
//! audit event is written in the same statement as the row: a user healed twice shows one event.
//!
//! It decides nothing of its own about a user (that is `sync`'s) and never imports `config` or
//! the HTTP edge: its settings arrive parsed.

/// Leadership among replicas: the advisory lock and its connection.
pub mod leader;
/// The dead letters' retry schedule.
pub mod retry;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use serde::Serialize;
use sqlx::postgres::{PgConnectOptions, PgListener};
use sqlx::PgPool;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};

use crate::compiler::bind::BoundMapping;
use crate::compiler::render::triggers::DEAD_LETTER_CHANNEL;
use crate::meter;
use crate::repo::dead_letters::{self, ClaimedLetter};
use crate::sync::engine::SyncError;
use crate::sync::heal;
use crate::sync::reconcile::{Reconciler, StartError};
use crate::vocabulary::policy::DeletedPolicy;
use crate::vocabulary::run::RunOptions;
use crate::vocabulary::HealAction;
use crate::vocabulary::SyncPath;
use leader::LockConnection;
use retry::RetrySchedule;

/// How often a standby tries to take the lock, and a leader checks it still holds it.
const LEADERSHIP_CHECK: Duration = Duration::from_secs(1);
/// Dead letters claimed per statement.
const DRAIN_BATCH: i64 = 50;
/// How long a claimed letter is left alone if its attempt never reports back while this leader
/// leads (a new leader releases the claims at once).
const CLAIM_LEASE: Duration = Duration::from_secs(60);
/// How the audit log (and the runs it starts) name the healing loop: by its path's name.
const CALLER: &str = SyncPath::Healing.as_str();

/// This replica's part in the healing loop, as `/readyz` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealingRole {
    /// Healing is turned off on this replica (`USERSYNC_HEALING=off`).
    Off,
    /// Another replica leads, or this one is about to try.
    Standby,
    /// This replica holds the lock and heals.
    Leader,
}

impl HealingRole {
    /// The name `/readyz` reports.
    pub fn as_str(&self) -> &'static str {
        match self {
            HealingRole::Off => "off",
            HealingRole::Standby => "standby",
            HealingRole::Leader => "leader",
        }
    }
}

/// What the loop does, from configuration.
#[derive(Debug, Clone)]
pub struct HealingSettings {
    pub sweep_interval: Duration,
    pub retry_schedule: RetrySchedule,
    /// How often a reconciliation run starts; `None`: never.
    pub reconcile_interval: Option<Duration>,
    pub policy: DeletedPolicy,
}

/// The healing loop of one replica.
pub struct Healer {
    db: PgPool,
    bound: Arc<BoundMapping>,
    settings: HealingSettings,
    /// Runs the periodic reconciliation.
    reconciler: Reconciler,
    role: watch::Sender<HealingRole>,
}

/// Why a term as leader ended.
enum Term {
    /// Shutting down: the lock is released on the way out.
    Stopped,
    /// The lock's connection is gone, and the lock with it.
    Lost,
}

impl Healer {
    /// The loop, not yet running, and a view of its role.
    pub fn new(
        db: PgPool,
        bound: Arc<BoundMapping>,
        settings: HealingSettings,
        reconciler: Reconciler,
    ) -> (Self, watch::Receiver<HealingRole>) {
        let (role, view) = watch::channel(HealingRole::Standby);
        (
            Self {
                db,
                bound,
                settings,
                reconciler,
                role,
            },
            view,
        )
    }

    /// Stands by, leads when the lock is free, and returns once `stop` turns true (releasing
    /// the lock if it held it).
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let options = self.db.connect_options();
        let mut standby: Option<LockConnection> = None;
        // Say once, not every second, that this replica stands by or cannot reach the database.
        let mut announced = false;
        loop {
            if *stop.borrow() {
                return;
            }
            match try_lead(&mut standby, &options).await {
                Ok(true) => {
                    announced = false;
                    let mut lock = standby.take().expect("the lock connection is kept");
                    tracing::info!("healing: this replica leads");
                    self.role.send_replace(HealingRole::Leader);
                    let term = self.lead(&mut lock, &mut stop).await;
                    self.role.send_replace(HealingRole::Standby);
                    match term {
                        Term::Stopped => {
                            lock.release().await;
                            tracing::info!("healing: stepped down (shutting down)");
                            return;
                        }
                        Term::Lost => {
                            tracing::warn!("healing: lost the lock's connection; standing by")
                        }
                    }
                }
                Ok(false) => {
                    if !announced {
                        tracing::info!("healing: another replica leads; standing by");
                        announced = true;
                    }
                }
                Err(e) => {
                    standby = None;
                    if !announced {
                        tracing::warn!(error = %e, "healing: cannot reach the database to lead; retrying");
                        announced = true;
                    }
                }
            }
            tokio::select! {
                () = tokio::time::sleep(LEADERSHIP_CHECK) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// One term as leader: drain, sweep and reconcile until stopped or the lock is lost.
    async fn lead(&self, lock: &mut LockConnection, stop: &mut watch::Receiver<bool>) -> Term {
        let (notify, mut notified) = mpsc::channel(1);
        let listener = AbortOnDrop(tokio::spawn(listen(self.db.clone(), notify)));
        let mut check = tokio::time::interval(LEADERSHIP_CHECK);
        check.set_missed_tick_behavior(MissedTickBehavior::Delay);
        check.reset();
        match dead_letters::release_claims(&self.db).await {
            Ok(0) => {}
            Ok(released) => tracing::info!(
                released,
                "healing: retrying the letters the last leader had claimed"
            ),
            // Their leases bring them back.
            Err(e) => {
                tracing::warn!(error = %e, "healing: cannot release the last leader's claims")
            }
        }
        let mut next_run = self.first_run().await;
        // A run goes on in a task of its own, so that dead letters keep draining meanwhile; it
        // holds the run lock itself, and a run cut short by a shutdown is taken over by the next.
        let mut running: Option<AbortOnDrop> = None;
        // Drain at once: letters may have been recorded while nobody led.
        let mut next_drain = Instant::now();
        let term = loop {
            tokio::select! {
                _ = stop.changed() => break Term::Stopped,
                Some(()) = notified.recv() => next_drain = Instant::now(),
                () = tokio::time::sleep_until(next_drain) => {
                    next_drain = Instant::now() + self.drain().await;
                }
                () = sleep_until(next_run) => {
                    if running.as_ref().is_none_or(|run| run.0.is_finished()) {
                        running = Some(AbortOnDrop(tokio::spawn(reconcile(self.reconciler.clone()))));
                    }
                    next_run = self.settings.reconcile_interval.map(|every| Instant::now() + every);
                }
                _ = check.tick() => {
                    if !lock.is_alive().await {
                        break Term::Lost;
                    }
                }
            }
        };
        drop(listener);
        term
    }

    /// Attempts every due letter; returns how long to wait before the next drain (the next due
    /// letter, or the sweep interval, whichever comes first).
    async fn drain(&self) -> Duration {
        loop {
            let due = match dead_letters::claim_due(&self.db, DRAIN_BATCH, CLAIM_LEASE).await {
                Ok(due) => due,
                Err(e) => {
                    tracing::warn!(error = %e, "healing: cannot read dead letters");
                    return LEADERSHIP_CHECK;
                }
            };
            for letter in &due {
                self.attempt(letter).await;
            }
            if (due.len() as i64) < DRAIN_BATCH {
                break;
            }
        }
        let sweep = self.settings.sweep_interval;
        match dead_letters::next_due_in(&self.db).await {
            Ok(Some(due_in)) => due_in.min(sweep),
            Ok(None) => sweep,
            Err(e) => {
                tracing::warn!(error = %e, "healing: cannot read dead letters");
                LEADERSHIP_CHECK
            }
        }
    }

    async fn attempt(&self, letter: &ClaimedLetter) {
        let attempted = attempt(
            &self.db,
            &self.bound,
            self.settings.policy,
            &self.settings.retry_schedule,
            letter,
            CALLER,
        )
        .await;
        if let Err(e) = attempted {
            // The claim's lease brings the letter back.
            tracing::warn!(error = %e, "healing: cannot record the attempt");
        }
    }

    /// When the first periodic run is due: one interval after the last run started (a manual
    /// one counts), so that restarts and leadership changes neither skip runs nor repeat them;
    /// at once if there never was one.
    async fn first_run(&self) -> Option<Instant> {
        let every = self.settings.reconcile_interval?;
        let last = match self.reconciler.recent(1).await {
            Ok(runs) => runs.into_iter().next().map(|run| run.started_at),
            Err(e) => {
                tracing::warn!(error = %e, "healing: cannot read the last run; reconciling in one interval");
                return Some(Instant::now() + every);
            }
        };
        let since = last.map_or(every, |started| {
            (Utc::now() - started).to_std().unwrap_or_default()
        });
        Some(Instant::now() + every.saturating_sub(since))
    }
}

/// The periodic reconciliation: a run with every kind and the configured policies, unless one
/// is already going (started by hand, or by another replica's earlier term).
async fn reconcile(reconciler: Reconciler) {
    match reconciler.start(CALLER, RunOptions::all(false)).await {
        Ok(active) => {
            let run = reconciler.execute(active, &|_| {}).await;
            tracing::info!(run_id = %run.id, state = run.state.as_str(),
                repaired = run.progress.total_repaired(), "healing: periodic reconciliation ended");
        }
        Err(StartError::InProgress { .. }) => {
            tracing::info!("healing: a reconciliation run is in progress; skipping this one");
        }
        Err(StartError::Database(e)) => {
            tracing::warn!(error = %e, "healing: cannot start the periodic reconciliation; retrying next interval");
        }
    }
}

/// Tries the lock on the standby connection, opening it first if there is none.
async fn try_lead(
    slot: &mut Option<LockConnection>,
    options: &PgConnectOptions,
) -> sqlx::Result<bool> {
    let conn = match slot {
        Some(conn) => conn,
        None => slot.insert(LockConnection::connect(options).await?),
    };
    conn.try_lead().await
}

/// Waits until `at`, or forever when there is no `at`.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Forwards "a dead letter was recorded" from Postgres to the leader. Notifications are hints
/// (the payload is ignored): a burst becomes one drain, and one lost while the listener
/// reconnects is caught by the drain that follows every reconnection, or by the sweep.
async fn listen(db: PgPool, notify: mpsc::Sender<()>) {
    loop {
        match subscribe(&db).await {
            Ok(mut listener) => loop {
                match listener.try_recv().await {
                    // A notification, or `None`: the connection was lost and re-established,
                    // and anything sent in between was missed. Either way: drain.
                    Ok(_) => {
                        let _ = notify.try_send(());
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "healing: LISTEN connection failed");
                        break;
                    }
                }
            },
            Err(e) => tracing::warn!(error = %e, "healing: cannot LISTEN for dead letters"),
        }
        tokio::time::sleep(LEADERSHIP_CHECK).await;
    }
}

async fn subscribe(db: &PgPool) -> sqlx::Result<PgListener> {
    let mut listener = PgListener::connect_with(db).await?;
    listener.listen(DEAD_LETTER_CHANNEL).await?;
    Ok(listener)
}

/// The message and SQLSTATE of a failed heal, as the dead letter keeps them: the database's own
/// message (never its DETAIL, which can quote row values, nor a data exception's message, which
/// quotes the value; see `crate::sqlstate::describe`).
fn cause(error: &SyncError) -> (String, Option<String>) {
    match error {
        SyncError::Database(e @ sqlx::Error::Database(db)) => (
            crate::sqlstate::describe(e),
            db.code().map(|c| c.into_owned()),
        ),
        other => (other.to_string(), None),
    }
}

/// What one attempt at a dead letter did.
#[derive(Debug)]
pub enum Attempt {
    /// The user is in step again; the letter is resolved.
    Healed(HealAction),
    /// It failed again; the letter keeps the latest cause and its next attempt is scheduled.
    Failed(SyncError),
}

/// One attempt at one letter: heal the user from `auth.users`, then resolve the letter or
/// schedule its next attempt. The healing loop makes it when the letter is due; an admin may
/// make it at once (`POST /v1/dead-letters/{user_id}/retry`). `Err` only when the attempt
/// could not be recorded.
pub async fn attempt(
    db: &PgPool,
    bound: &BoundMapping,
    policy: DeletedPolicy,
    schedule: &RetrySchedule,
    letter: &ClaimedLetter,
    caller: &str,
) -> sqlx::Result<Attempt> {
    let healed =
        heal::heal_user(db, bound, policy, letter.user_id, caller, SyncPath::Healing).await;
    let failed = letter.attempts.saturating_add(1);
    match healed {
        Ok(action) => {
            meter::record_sync(SyncPath::Healing, action);
            tracing::info!(user_id = %letter.user_id, attempts = failed, ?action, caller,
                "healing: dead letter healed");
            dead_letters::resolve(db, letter.id).await?;
            Ok(Attempt::Healed(action))
        }
        Err(e) => {
            let (error, sqlstate) = cause(&e);
            let delay = schedule.delay_after(u32::try_from(failed).unwrap_or(u32::MAX));
            tracing::warn!(user_id = %letter.user_id, attempts = failed, error = %error,
                retry_in = ?delay, caller, "healing: dead letter still fails");
            dead_letters::reschedule(db, letter.id, &error, sqlstate.as_deref(), delay).await?;
            Ok(Attempt::Failed(e))
        }
    }
}

/// Aborts a spawned task when its owner goes away.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
