//! The healing loop: dead letters retried on a schedule stored in Postgres and healed exactly
//! once, the periodic reconciliation, and leadership among real service processes.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use crate::gotrue::{self, SignUp};
use crate::helpers::*;
use usersync::vocabulary::policy::DeletedPolicy;

/// A dead letter as the tests look at it.
#[derive(Debug, sqlx::FromRow)]
struct Letter {
    attempts: i32,
    error: String,
    /// Seconds between the last attempt and the next one.
    next_in: Option<f64>,
    resolved: bool,
}

async fn letter_of(db: &PgPool, id: Uuid) -> Option<Letter> {
    sqlx::query_as(
        "select attempts, error,
                extract(epoch from next_attempt_at - last_attempt_at)::float8 as next_in,
                resolved_at is not null as resolved
           from usersync.dead_letters where user_id = $1",
    )
    .bind(id)
    .fetch_optional(db)
    .await
    .unwrap()
}

async fn break_target(db: &PgPool) {
    sqlx::query("alter table public.users add column plan text not null")
        .execute(db)
        .await
        .unwrap();
}

async fn fix_target(db: &PgPool) {
    sqlx::query("alter table public.users drop column plan")
        .execute(db)
        .await
        .unwrap();
}

/// Signs a user up while the target is broken: the sign-up commits, a dead letter is left.
async fn sign_up_into_a_broken_target(db: &TestDb) -> Uuid {
    break_target(&db.pool).await;
    gotrue::sign_up(
        &db.auth_admin,
        &SignUp::new("healme@example.com").app_metadata(json!({"role": "admin"})),
    )
    .await
    .expect("the sign-up commits")
}

/// An app whose healing loop runs with `options`, once it leads.
async fn spawn_leader(options: AppOptions) -> TestApp {
    let app = spawn_app_with(
        AppOptions {
            healing: true,
            ..options
        },
        |_| async {},
    )
    .await;
    eventually(Duration::from_secs(5), "leadership", || async {
        app.healing_role().await == "leader"
    })
    .await;
    app
}

#[tokio::test]
async fn a_dead_letter_is_retried_on_a_stored_schedule_and_heals_exactly_once() {
    let app = spawn_leader(AppOptions {
        retry_schedule: Some("400ms"),
        ..AppOptions::default()
    })
    .await;
    let db = &app.db.pool;
    install_triggers(db, None, DeletedPolicy::Report).await;

    let id = sign_up_into_a_broken_target(&app.db).await;

    // The NOTIFY makes the leader try at once; it fails and stores the next attempt, jittered.
    eventually(Duration::from_secs(5), "a failed attempt", || async {
        letter_of(db, id).await.is_some_and(|l| l.attempts >= 1)
    })
    .await;
    let letter = letter_of(db, id).await.unwrap();
    assert!(!letter.resolved);
    assert!(letter.error.contains("plan"), "{letter:?}");
    let next_in = letter.next_in.unwrap();
    assert!((0.3..=0.5).contains(&next_in), "400ms ±20%: {letter:?}");

    fix_target(db).await;
    eventually(Duration::from_secs(5), "the heal", || async {
        letter_of(db, id).await.is_some_and(|l| l.resolved)
    })
    .await;
    assert_eq!(app.target_row(id).await.unwrap()["role"], "admin");
    // Later sweeps find nothing to do: still one healing event.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        events_of(db, id).await,
        [("healing".into(), "missing".into(), "created".into())]
    );
}

/// The reconciliation runs the healing loop started.
async fn healing_runs(db: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "select state from usersync.runs where caller = 'healing' order by started_at",
    )
    .fetch_all(db)
    .await
    .unwrap()
}

#[tokio::test]
async fn the_periodic_reconciliation_is_a_run_that_heals_missing_and_stale_users() {
    let app = spawn_leader(AppOptions {
        reconcile_interval: Some(Duration::from_millis(300)),
        ..AppOptions::default()
    })
    .await;
    let db = &app.db.pool;
    // Users who signed up while nothing synced, and a profile whose email went stale.
    let mut missing = Vec::new();
    for i in 0..3 {
        missing.push(
            app.insert_auth_user(&AuthUser::new(&format!("m{i}@example.com")))
                .await,
        );
    }
    // In one transaction: a periodic run between the two would create the profile first.
    let mut both = db.begin().await.unwrap();
    let stale = AuthUser::new("now@example.com").insert(&mut *both).await;
    sqlx::query("insert into public.users (id, email) values ($1, 'then@example.com')")
        .bind(stale)
        .execute(&mut *both)
        .await
        .unwrap();
    both.commit().await.unwrap();

    eventually(Duration::from_secs(10), "the reconciliation", || async {
        let status: Value = app.status(&secret_key()).await.json().await.unwrap();
        status["drift"]["missing"] == 0 && status["drift"]["stale"] == 0
    })
    .await;
    for id in &missing {
        assert_eq!(
            events_of(db, *id).await,
            [("batch".into(), "missing".into(), "created".into())]
        );
    }
    assert_eq!(
        app.target_row(stale).await.unwrap()["email"],
        "now@example.com"
    );
    assert_eq!(
        events_of(db, stale).await,
        [("batch".into(), "stale".into(), "updated".into())]
    );
    assert!(healing_runs(db).await.contains(&"succeeded".to_owned()));
}

#[tokio::test]
async fn the_first_periodic_run_waits_one_interval_after_the_last_run() {
    let app = spawn_app_with(
        AppOptions {
            healing: true,
            reconcile_interval: Some(Duration::from_millis(1500)),
            ..AppOptions::default()
        },
        // A run finished just now (by hand, say): the next periodic one is due an interval later.
        |db| async move {
            sqlx::query(
                "insert into usersync.runs (id, caller, dry_run, state, started_at, finished_at)
                 values (gen_random_uuid(), 'service', false, 'succeeded', now(), now())",
            )
            .execute(&db)
            .await
            .unwrap();
        },
    )
    .await;
    eventually(Duration::from_secs(5), "leadership", || async {
        app.healing_role().await == "leader"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(healing_runs(&app.db.pool).await.is_empty(), "a run at once");
    eventually(Duration::from_secs(5), "the periodic run", || async {
        !healing_runs(&app.db.pool).await.is_empty()
    })
    .await;
}

#[tokio::test]
async fn a_dead_letter_whose_notification_was_lost_is_found_by_the_sweep() {
    let app = spawn_leader(AppOptions {
        sweep_interval: Some(Duration::from_millis(300)),
        ..AppOptions::default()
    })
    .await;
    let db = &app.db.pool;
    let id = app
        .insert_auth_user(&AuthUser::new("quiet@example.com"))
        .await;
    // Recorded while the listener was away: no NOTIFY ever comes.
    sqlx::query(
        "insert into usersync.dead_letters (user_id, op, error) values ($1, 'insert', 'x')",
    )
    .bind(id)
    .execute(db)
    .await
    .unwrap();
    eventually(Duration::from_secs(3), "the sweep", || async {
        letter_of(db, id).await.is_some_and(|l| l.resolved)
    })
    .await;
    assert!(app.target_row(id).await.is_some());
}

#[tokio::test]
async fn a_new_leader_retries_at_once_the_letters_a_dead_leader_had_claimed() {
    let db = TestDb::new().await;
    let id = AuthUser::new("claimed@example.com").insert(&db.pool).await;
    sqlx::query(
        "insert into usersync.dead_letters (user_id, op, error) values ($1, 'insert', 'x')",
    )
    .bind(id)
    .execute(&db.pool)
    .await
    .unwrap();
    // A leader claims the letter for its 60 s lease, then dies before its attempt reports back.
    let claimed = usersync::repo::dead_letters::claim_due(&db.pool, 50, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);

    let config = serve_config(
        &db.url(),
        &AppOptions {
            healing: true,
            ..AppOptions::default()
        },
    );
    let started = Instant::now();
    let app = TestApp::start(db, config).await;

    eventually(
        Duration::from_secs(10),
        "the claimed letter's heal",
        || async {
            letter_of(&app.db.pool, id)
                .await
                .is_some_and(|l| l.resolved)
        },
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(app.target_row(id).await.is_some());
    assert_eq!(
        events_of(&app.db.pool, id).await,
        [("healing".into(), "missing".into(), "created".into())]
    );
}

#[tokio::test]
async fn a_manual_run_starts_while_this_replica_leads_the_healing_loop() {
    let app = spawn_leader(AppOptions::default()).await;
    let response = app
        .start_run(&json!({"dry_run": true}), &secret_key())
        .await;
    assert_eq!(
        response.status(),
        202,
        "the leader's lock must not be the run lock"
    );
}

#[tokio::test]
async fn a_replica_with_healing_off_reports_off() {
    let app = spawn_app().await;
    assert_eq!(app.healing_role().await, "off");
}

/// A quick retry schedule, and no periodic reconciliation: the dead letter is the only way the
/// user can heal.
const FAST: &[(&str, &str)] = &[
    ("USERSYNC_HEALING", "on"),
    ("USERSYNC_HEALING_RETRY_SCHEDULE", "300ms"),
    ("USERSYNC_RECONCILE_INTERVAL", "0"),
];

/// How many lines of `logs` contain `text`.
fn count(logs: &str, text: &str) -> usize {
    logs.lines().filter(|l| l.contains(text)).count()
}

#[tokio::test]
async fn two_replicas_elect_one_leader_and_the_standby_takes_over_when_it_is_killed() {
    let db = TestDb::new().await;
    install_triggers(&db.pool, None, DeletedPolicy::Report).await;
    let url = db.url();

    let first = ServeProcess::start(&url, FAST).await;
    eventually(
        Duration::from_secs(5),
        "the first replica to lead",
        || async { first.healing_role().await == "leader" },
    )
    .await;
    let second = ServeProcess::start(&url, FAST).await;
    // Past the second replica's first tries at the lock: it stands by.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(second.healing_role().await, "standby");
    assert_eq!(first.healing_role().await, "leader");

    // A sign-up fails to sync; the leader tries at once and fails too.
    let id = sign_up_into_a_broken_target(&db).await;
    eventually(Duration::from_secs(5), "the leader's attempt", || async {
        letter_of(&db.pool, id)
            .await
            .is_some_and(|l| l.attempts >= 1)
    })
    .await;

    // The leader dies without a word; its session, and so its lock, goes with it.
    let killed = Instant::now();
    std::process::Command::new("kill")
        .args(["-KILL", &first.pid().to_string()])
        .status()
        .unwrap();
    let (status, first_logs) = first.wait();
    assert!(!status.success());
    eventually(
        Duration::from_secs(5),
        "the standby to take over",
        || async { second.healing_role().await == "leader" },
    )
    .await;
    let takeover = killed.elapsed();
    eprintln!("healing takeover after SIGKILL: {takeover:?}");
    assert!(takeover < Duration::from_secs(3), "took {takeover:?}");

    // The new leader carries the stored schedule on, and heals once the target is fixed.
    fix_target(&db.pool).await;
    eventually(Duration::from_secs(5), "the heal", || async {
        letter_of(&db.pool, id).await.is_some_and(|l| l.resolved)
    })
    .await;
    let row: Value = sqlx::query_scalar("select to_jsonb(u) from public.users u where id = $1")
        .bind(id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(row["role"], "admin");
    assert_eq!(
        events_of(&db.pool, id).await,
        [("healing".into(), "missing".into(), "created".into())]
    );

    // What each replica said: one led, then the other stood by, took over once, healed once.
    let second_logs = second.stop();
    assert_eq!(count(&first_logs, "healing: this replica leads"), 1);
    assert_eq!(
        count(&first_logs, "healing: dead letter still fails"),
        1,
        "{first_logs}"
    );
    assert_eq!(
        count(&second_logs, "healing: another replica leads; standing by"),
        1
    );
    assert_eq!(count(&second_logs, "healing: this replica leads"), 1);
    assert_eq!(count(&second_logs, "healing: dead letter healed"), 1);
}

/// Transactions committed in this test's database so far, as the statistics system has them
/// (each busy backend reports at least once a second).
async fn commits(db: &PgPool) -> i64 {
    sqlx::query_scalar(
        "select xact_commit from pg_stat_database where datname = current_database()",
    )
    .fetch_one(db)
    .await
    .unwrap()
}

#[tokio::test]
async fn an_idle_leader_waits_for_the_next_sweep_instead_of_polling() {
    let app = spawn_leader(AppOptions::default()).await;
    let db = &app.db.pool;
    assert_eq!(
        usersync::repo::dead_letters::next_due_in(db).await.unwrap(),
        None,
        "no letter pending: nothing is due"
    );
    // With nothing pending, the leader's next look is the sweep (30 s by default): in three
    // seconds it checks its lock a few times. A leader that took "none pending" for "due now"
    // ran two statements in a loop, thousands of transactions a second.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = commits(db).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = commits(db).await - before;
    assert!(during < 200, "{during} transactions in 3 s of idling");

    let id = app
        .insert_auth_user(&AuthUser::new("due@example.com"))
        .await;
    sqlx::query(
        "insert into usersync.dead_letters (user_id, op, error, next_attempt_at)
         values ($1, 'insert', 'x', now() + interval '1 hour')",
    )
    .bind(id)
    .execute(db)
    .await
    .unwrap();
    let due = usersync::repo::dead_letters::next_due_in(db).await.unwrap();
    assert!(
        due.is_some_and(|d| d > Duration::from_secs(3500)),
        "{due:?}"
    );
}
