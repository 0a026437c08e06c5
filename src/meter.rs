//! Metrics in Prometheus text format: what is recorded, and what `/metrics` computes per scrape.
//!
//! Request and sync counters are recorded as things happen. Drift counts and ages come from the
//! database, so they are refreshed at scrape time, at most once per `refresh_every`: a scrape
//! every few seconds must not turn into a full-table anti-join every few seconds. The reads are
//! `sync::status::refresh_gauges`'s: the meter imports only `vocabulary`, so that every layer
//! may record into it.

use std::future::Future;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::vocabulary::{DriftKind, HealAction, SyncPath};

const HTTP_DURATION: &str = "usersync_http_request_duration_seconds";

/// How often pending histogram samples are folded into their buckets.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The process-wide recorder (metrics are global; several apps in one test process share it).
///
/// The recorder keeps every histogram sample until upkeep folds it into the buckets, which a
/// scrape does too; with nothing scraping `/metrics`, memory grew by every request's latency
/// sample (the soak run found it: +24% RSS in ten minutes). A thread of its own runs the upkeep,
/// whatever runtime, if any, the process has.
fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full(HTTP_DURATION.to_owned()),
                &[
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
                ],
            )
            .expect("the bucket list is not empty")
            .install_recorder()
            .expect("no other metrics recorder is installed");
        describe();
        let upkeep = handle.clone();
        std::thread::Builder::new()
            .name("usersync-metrics".to_owned())
            .spawn(move || loop {
                std::thread::sleep(UPKEEP_INTERVAL);
                upkeep.run_upkeep();
            })
            .expect("the metrics upkeep thread starts");
        handle
    })
}

/// The standard process metrics (`process_resident_memory_bytes`, `process_cpu_seconds_total`,
/// `process_open_fds`, `process_max_fds`, `process_start_time_seconds`, ...), read from /proc
/// at every scrape.
fn process() -> &'static metrics_process::Collector {
    static PROCESS: OnceLock<metrics_process::Collector> = OnceLock::new();
    PROCESS.get_or_init(metrics_process::Collector::default)
}

/// Gives every family usersync publishes its HELP line (the exporter writes TYPE lines itself),
/// and publishes the build's version. Runs once, as the recorder is installed. A new metric
/// needs a line here and a row in the README's Observability table (a test compares the table
/// with a scrape).
fn describe() {
    describe_counter!(
        "usersync_http_requests_total",
        "HTTP requests answered, by method, route template and status."
    );
    describe_histogram!(
        HTTP_DURATION,
        "Time to answer an HTTP request in seconds, by method, route template and status."
    );
    describe_counter!(
        "usersync_sync_statements_total",
        "Sync statements the API ran (each syncs one or more coalesced users)."
    );
    describe_counter!(
        "usersync_sync_statement_users_total",
        "Users synced by the API's sync statements."
    );
    describe_counter!(
        "usersync_sync_actions_total",
        "Sync decisions, by path, drift kind repaired and action."
    );
    describe_gauge!(
        "usersync_drift_users",
        "Drifted users, by drift kind (refreshed at most every USERSYNC_METRICS_REFRESH)."
    );
    describe_gauge!("usersync_source_users", "Rows in auth.users.");
    describe_gauge!("usersync_target_users", "Rows in the target users table.");
    describe_gauge!(
        "usersync_dead_letters_pending",
        "Failed trigger syncs not yet healed."
    );
    describe_gauge!(
        "usersync_oldest_unsynced_user_age_seconds",
        "Seconds the longest-waiting missing user has waited (0 when none)."
    );
    describe_gauge!(
        "usersync_last_successful_run_age_seconds",
        "Seconds since the last successful reconciliation run (absent before the first)."
    );
    describe_gauge!(
        "usersync_source_readable",
        "1 when usersync's role sees every row of auth.users, else 0 (and no drift gauges)."
    );
    describe_gauge!(
        "usersync_healing_leader",
        "1 on the replica that leads the healing loop, else 0."
    );
    describe_gauge!(
        "usersync_reconcile_interval_seconds",
        "USERSYNC_RECONCILE_INTERVAL in seconds on a replica that takes part in healing; 0 when \
         periodic runs are off or healing is off."
    );
    describe_gauge!(
        "usersync_build_info",
        "Always 1; the version label is the running build's."
    );
    gauge!("usersync_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    process().describe();
}

/// One HTTP request: counted and timed by route template (never the raw path) and status.
pub fn record_request(method: &str, route: &str, status: u16, elapsed: Duration) {
    let labels = [
        ("method", method.to_owned()),
        ("route", route.to_owned()),
        ("status", status.to_string()),
    ];
    counter!("usersync_http_requests_total", &labels).increment(1);
    histogram!(HTTP_DURATION, &labels).record(elapsed.as_secs_f64());
}

/// One sync decision, by path (`call`, `batch`, `trigger`, `healing`, `hook`), drift kind and
/// action.
pub fn record_sync(path: SyncPath, action: HealAction) {
    counter!(
        "usersync_sync_actions_total",
        "path" => path.as_str(),
        "kind" => action.drift_kind().map_or("none", DriftKind::as_str),
        "action" => action.as_str()
    )
    .increment(1);
}

/// One sync statement of the API and how many users it synced: their ratio is how much the
/// coalescing batches (see `sync::coalesce`).
pub fn record_sync_statement(users: usize) {
    counter!("usersync_sync_statements_total").increment(1);
    counter!("usersync_sync_statement_users_total").increment(users as u64);
}

/// Scrape-time state: the exporter and when the database gauges were last refreshed.
pub struct Meter {
    refresh_every: Duration,
    last_refresh: Mutex<Option<Instant>>,
    /// How often this replica's healing loop starts a run, when it leads; `None`: never.
    reconcile_interval: Option<Duration>,
}

impl Meter {
    pub fn new(refresh_every: Duration, reconcile_interval: Option<Duration>) -> Self {
        // Install the recorder now, so that nothing recorded before the first scrape is lost.
        handle();
        Self {
            refresh_every,
            last_refresh: Mutex::new(None),
            reconcile_interval,
        }
    }

    /// The exposition text, after `refresh` (which reads the database and sets its gauges,
    /// `sync::status::refresh_gauges`) if they are due. `leads_healing`: this replica leads
    /// the healing loop now.
    pub async fn render<F>(&self, leads_healing: bool, refresh: F) -> sqlx::Result<String>
    where
        F: Future<Output = sqlx::Result<()>>,
    {
        // Set at every scrape, from this replica's own state: the gauges are process-wide, and
        // the role changes whenever leadership moves.
        gauge!("usersync_healing_leader").set(if leads_healing { 1.0 } else { 0.0 });
        gauge!("usersync_reconcile_interval_seconds")
            .set(self.reconcile_interval.map_or(0.0, |i| i.as_secs_f64()));
        process().collect();
        let due = {
            let mut last = self.last_refresh.lock().expect("not poisoned");
            let due = last.is_none_or(|at| at.elapsed() >= self.refresh_every);
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        if due {
            if let Err(e) = refresh.await {
                // Let the next scrape try again rather than serve stale numbers for a full period.
                *self.last_refresh.lock().expect("not poisoned") = None;
                return Err(e);
            }
        }
        Ok(handle().render())
    }
}

/// Whether usersync sees `auth.users` whole. When it does not, the drift gauges are left out:
/// every profile would count as drift.
pub fn record_source_readable(readable: bool) {
    gauge!("usersync_source_readable").set(if readable { 1.0 } else { 0.0 });
}

/// The status counts: totals, drift per kind (`drift(kind)`), pending dead letters.
pub fn record_status(
    source_total: i64,
    target_total: i64,
    drift: impl Fn(DriftKind) -> i64,
    dead_letters_pending: i64,
) {
    for kind in DriftKind::ALL {
        gauge!("usersync_drift_users", "kind" => kind.as_str()).set(drift(kind) as f64);
    }
    gauge!("usersync_source_users").set(source_total as f64);
    gauge!("usersync_target_users").set(target_total as f64);
    gauge!("usersync_dead_letters_pending").set(dead_letters_pending as f64);
}

/// How long the longest-waiting unsynced user has waited, and since the last successful run.
pub fn record_ages(oldest_missing: Option<DateTime<Utc>>, last_success: Option<DateTime<Utc>>) {
    let now = Utc::now();
    let age =
        |at: Option<DateTime<Utc>>| at.map(|t| (now - t).num_milliseconds().max(0) as f64 / 1000.0);
    // No unsynced user: the age is zero, which is what an alert on it wants to see.
    gauge!("usersync_oldest_unsynced_user_age_seconds").set(age(oldest_missing).unwrap_or(0.0));
    // Never a successful run: the gauge is absent rather than a misleading number.
    if let Some(seconds) = age(last_success) {
        gauge!("usersync_last_successful_run_age_seconds").set(seconds);
    }
}
