//! Sync requests that arrive together are written together.
//!
//! Under load, most of what a sync-one costs is not its work but its trip: a round trip to the
//! database, the statement's bind and executor start-up, and a connection check-out and
//! check-in (sqlx pings every connection it takes back), each paid once per user. So requests
//! queue here, and at most `in_flight` sync statements run at once; whatever queued meanwhile
//! goes into the next statement, which syncs up to `max_batch` users as one set (the
//! `sync_batch` statement, rendered from the same pieces as the single one). No timer holds a
//! request back: an idle service runs each request alone, at once, and only a busy one
//! batches — it pays one trip per batch instead of one per user.
//!
//! A batch is one statement, all or nothing, so one user the database refuses (another
//! profile holds their email, a check constraint of the app's table) would fail the others. A
//! batch the database refuses is therefore split in halves until each user it refuses is
//! synced alone and answered for alone; a batch that fails short of the data (the database
//! away, no free connection in time) gives every request it carried that same 503.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres};
use tokio::sync::{mpsc, oneshot, Semaphore};
use uuid::Uuid;

use crate::compiler::bind::BoundMapping;
use crate::meter;
use crate::repo::users;
use crate::sync::engine::{self, SyncError, SyncOutcome};
use crate::vocabulary::SyncPath;

/// The path every coalesced sync records: they are the API's sync calls.
const PATH: SyncPath = SyncPath::Call;

/// Requests queued beyond this wait to be queued; the HTTP concurrency limit keeps the queue
/// far shorter in practice.
const QUEUE_CAPACITY: usize = 4096;

/// How sync requests share statements.
#[derive(Debug, Clone, Copy)]
pub struct Coalescing {
    /// Most users one statement syncs; 1 runs every request alone.
    pub max_batch: usize,
    /// Most sync statements running at once.
    pub in_flight: usize,
    /// How long a request waits for a statement to run in and a connection to run it on
    /// before it is answered 503 (the pool's acquire timeout).
    pub wait: Duration,
}

/// The queue in front of the sync statements; cheap to clone.
#[derive(Clone)]
pub struct SyncQueue {
    jobs: mpsc::Sender<Job>,
}

struct Job {
    user_id: Uuid,
    caller: String,
    reply: oneshot::Sender<Result<SyncOutcome, SyncError>>,
}

impl Job {
    fn answer(self, result: Result<SyncOutcome, SyncError>) {
        // The caller may have given up (a timeout, a closed connection): nobody to tell.
        let _ = self.reply.send(result);
    }
}

impl SyncQueue {
    /// Starts the dispatcher on the current runtime; it stops when the last clone is dropped.
    pub fn start(db: PgPool, bound: Arc<BoundMapping>, settings: Coalescing) -> Self {
        let (jobs, queued) = mpsc::channel(QUEUE_CAPACITY);
        tokio::spawn(dispatch(queued, db, bound, settings));
        Self { jobs }
    }

    /// Syncs one user as the API's `caller`, alone or in a batch.
    pub async fn sync(&self, user_id: Uuid, caller: String) -> Result<SyncOutcome, SyncError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            user_id,
            caller,
            reply,
        };
        // Either side gone means a dispatcher or a batch task panicked.
        let crashed = || SyncError::Database(sqlx::Error::WorkerCrashed);
        self.jobs.send(job).await.map_err(|_| crashed())?;
        answer.await.map_err(|_| crashed())?
    }
}

/// Takes the first queued request, waits for a free statement slot and a connection, then takes
/// whatever else queued meanwhile (up to a batch) and runs it all in a task of its own.
async fn dispatch(
    mut queued: mpsc::Receiver<Job>,
    db: PgPool,
    bound: Arc<BoundMapping>,
    settings: Coalescing,
) {
    let slots = Arc::new(Semaphore::new(settings.in_flight.max(1)));
    while let Some(first) = queued.recv().await {
        let ready = tokio::time::timeout(settings.wait, async {
            let slot = slots
                .clone()
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            Ok::<_, sqlx::Error>((slot, db.acquire().await?))
        })
        .await
        .unwrap_or(Err(sqlx::Error::PoolTimedOut));
        let mut batch = vec![first];
        while batch.len() < settings.max_batch {
            match queued.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        batch.retain(|job| !job.reply.is_closed());
        match ready {
            Ok((slot, conn)) => {
                let bound = bound.clone();
                tokio::spawn(async move {
                    run(conn, &bound, batch).await;
                    drop(slot);
                });
            }
            Err(error) => answer_all(batch, error),
        }
    }
}

/// Runs one batch on `conn`. A user asked for twice in a batch is synced in the batch once and
/// then again alone: one statement cannot write a row twice.
async fn run(mut conn: PoolConnection<Postgres>, bound: &BoundMapping, batch: Vec<Job>) {
    let mut seen = HashSet::with_capacity(batch.len());
    let (mut distinct, repeats): (Vec<Job>, Vec<Job>) =
        batch.into_iter().partition(|job| seen.insert(job.user_id));
    // Rows are then locked in id order, whichever statement takes them.
    distinct.sort_by_key(|job| job.user_id);
    sync_together(&mut conn, bound, distinct).await;
    for job in repeats {
        sync_alone(&mut conn, bound, job).await;
    }
}

/// Syncs distinct users in one statement, splitting it while the database refuses it.
async fn sync_together(conn: &mut PgConnection, bound: &BoundMapping, jobs: Vec<Job>) {
    let mut pending = vec![jobs];
    while let Some(mut jobs) = pending.pop() {
        if jobs.len() <= 1 {
            if let Some(job) = jobs.pop() {
                sync_alone(conn, bound, job).await;
            }
            continue;
        }
        meter::record_sync_statement(jobs.len());
        let ids: Vec<Uuid> = jobs.iter().map(|job| job.user_id).collect();
        let callers: Vec<String> = jobs.iter().map(|job| job.caller.clone()).collect();
        match users::sync_many(&mut *conn, bound, &ids, &callers, PATH).await {
            Ok(rows) => {
                let mut rows: HashMap<Uuid, _> = rows.into_iter().map(|r| (r.id, r)).collect();
                for job in jobs {
                    match rows.remove(&job.user_id).map(engine::decide) {
                        Some(Ok(Some(outcome))) => job.answer(Ok(outcome)),
                        Some(Err(error)) => job.answer(Err(error)),
                        // The race `engine::sync_one` retries: settle it the same way.
                        Some(Ok(None)) | None => sync_alone(conn, bound, job).await,
                    }
                }
            }
            Err(error) if crate::sqlstate::is_unavailable(&error) => answer_all(jobs, error),
            Err(error) => {
                tracing::debug!(
                    users = jobs.len(),
                    sqlstate = error.as_database_error().and_then(|e| e.code()).as_deref(),
                    "the database refused a batch of syncs; splitting it"
                );
                let back = jobs.split_off(jobs.len() / 2);
                pending.push(back);
                pending.push(jobs);
            }
        }
    }
}

async fn sync_alone(conn: &mut PgConnection, bound: &BoundMapping, job: Job) {
    meter::record_sync_statement(1);
    let result = engine::sync_one(conn, bound, job.user_id, &job.caller, PATH).await;
    job.answer(result);
}

fn answer_all(jobs: Vec<Job>, error: sqlx::Error) {
    let error = Arc::new(error);
    for job in jobs {
        job.answer(Err(SyncError::Shared(error.clone())));
    }
}
