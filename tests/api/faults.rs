//! What production does to a service: the database goes away and comes back, the pool runs dry,
//! the process is told to stop mid-request. The short mode of the fault suite runs in CI.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::helpers::*;

/// A TCP proxy in front of PostgreSQL that can drop every connection and refuse new ones (the
/// database "goes away"), then accept again (it "comes back", as after a restart).
struct PgProxy {
    port: u16,
    up: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl PgProxy {
    async fn start(upstream: std::net::SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (up2, conns) = (up.clone(), connections.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if !up2.load(Ordering::SeqCst) {
                    drop(client); // refused: the connection closes at once
                    continue;
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                conns.lock().unwrap().push(task);
            }
        });
        Self {
            port,
            up,
            connections,
        }
    }

    /// Drops every open connection and refuses new ones.
    fn go_down(&self) {
        self.up.store(false, Ordering::SeqCst);
        for task in self.connections.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    fn come_back(&self) {
        self.up.store(true, Ordering::SeqCst);
    }

    /// The test database's URL, through the proxy.
    fn url_for(&self, db: &TestDb) -> String {
        let direct = db.url();
        let after_scheme = direct.find("://").unwrap() + 3;
        let at = direct[after_scheme..]
            .find('@')
            .map_or(after_scheme, |i| after_scheme + i + 1);
        let slash = direct[at..].find('/').unwrap() + at;
        format!(
            "{}127.0.0.1:{}{}",
            &direct[..at],
            self.port,
            &direct[slash..]
        )
    }
}

async fn upstream_addr(db: &TestDb) -> std::net::SocketAddr {
    let (host, port): (String, i32) = sqlx::query_as(
        "select coalesce(host(inet_server_addr()), '127.0.0.1'), inet_server_port()",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let host = if host == "::1" {
        "127.0.0.1".into()
    } else {
        host
    };
    format!("{host}:{port}").parse().unwrap()
}

/// An app whose database connections all pass through `proxy`.
async fn app_behind_proxy(pool_size: u32, acquire: Duration) -> (TestApp, PgProxy) {
    let db = TestDb::new().await;
    let proxy = PgProxy::start(upstream_addr(&db).await).await;
    let mut config = serve_config(&proxy.url_for(&db), &AppOptions::default());
    config.database.pool_size = pool_size;
    config.database.acquire_timeout = acquire;
    let app = TestApp::start(db, config).await;
    (app, proxy)
}

#[tokio::test]
async fn when_the_database_goes_away_requests_get_503_and_recover_without_a_restart() {
    let (app, proxy) = app_behind_proxy(4, Duration::from_secs(1)).await;
    let id = app
        .insert_auth_user(&AuthUser::new("away@example.com"))
        .await;
    assert_eq!(app.sync_me(&user_token(id)).await.status(), 200);

    proxy.go_down();
    let started = Instant::now();
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 503);
    let sync = app.sync_me(&user_token(id)).await;
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "a request hung while the db was away"
    );
    assert_eq!(
        sync.headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned()),
        Some("1".to_owned()),
        "{:?}",
        sync.status()
    );
    let body = assert_problem(sync, 503, "database_unavailable").await;
    assert!(
        !body["detail"].as_str().unwrap().contains("127.0.0.1"),
        "{body}"
    );
    // Liveness does not depend on the database.
    assert_eq!(app.get("/healthz").await.status(), 200);

    // The database comes back (as after a restart): the same process recovers by itself.
    proxy.come_back();
    let mut recovered = false;
    for _ in 0..50 {
        if app.get("/readyz").await.status() == 200 {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "readyz never recovered");
    let response = app.sync_me(&user_token(id)).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["action"], "unchanged");
}

#[tokio::test]
async fn a_restart_that_kills_open_connections_costs_at_most_the_requests_in_flight() {
    let (app, proxy) = app_behind_proxy(4, Duration::from_secs(2)).await;
    let id = app
        .insert_auth_user(&AuthUser::new("restart@example.com"))
        .await;
    assert_eq!(app.sync_me(&user_token(id)).await.status(), 200);
    // A restart: every pooled connection dies, and the server is back a moment later.
    proxy.go_down();
    proxy.come_back();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(app.sync_me(&user_token(id)).await.status().as_u16());
    }
    // A dead pooled connection may fail one request (503, never a 500); then all succeed.
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 503),
        "{statuses:?}"
    );
    assert_eq!(*statuses.last().unwrap(), 200, "{statuses:?}");
}

#[tokio::test]
async fn an_exhausted_pool_makes_requests_wait_a_bounded_time_then_503() {
    let db = TestDb::new().await;
    let id = AuthUser::new("busy@example.com").insert(&db.pool).await;
    let mut config = serve_config(&db.url(), &AppOptions::default());
    config.database.pool_size = 1;
    config.database.acquire_timeout = Duration::from_millis(500);
    let app = TestApp::start(db, config).await;
    assert_eq!(app.sync_me(&user_token(id)).await.status(), 200);
    // Make the one pooled connection busy: its sync blocks on a row lock this test holds.
    let (_, blocker, first) = assert_next_sync_waits_then_503(&app, id, id).await;
    blocker.rollback().await.unwrap();
    assert_eq!(
        first.await.unwrap().0,
        200,
        "the blocked request finished once the lock went"
    );
}

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish() {
    let db = TestDb::new().await;
    let id = AuthUser::new("term@example.com").insert(&db.pool).await;
    let serve = ServeProcess::start(&db.url(), &[]).await;
    let client = reqwest::Client::new();
    let Auth::Bearer(token) = user_token(id) else {
        unreachable!()
    };
    assert_eq!(
        client
            .post(format!("{}/v1/users/me/sync", serve.address))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // Hold the profile row so that the next syncs are still running when SIGTERM arrives.
    let blocker = hold_next_sync(&db.pool, id).await;
    let in_flight: Vec<_> = (0..3)
        .map(|_| {
            let request = client
                .post(format!("{}/v1/users/me/sync", serve.address))
                .bearer_auth(&token)
                .send();
            tokio::spawn(async move { request.await.map(|r| r.status().as_u16()) })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = serve.pid();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    blocker.rollback().await.unwrap();
    let mut statuses = Vec::new();
    for request in in_flight {
        statuses.push(
            request
                .await
                .unwrap()
                .expect("the in-flight request was answered"),
        );
    }
    statuses.sort();
    assert_eq!(statuses, vec![200, 200, 200]);
    let (exit, _) = serve.wait();
    assert!(
        exit.success(),
        "usersync exited with {exit:?} after SIGTERM"
    );
    let email: String = sqlx::query_scalar("select email from public.users where id = $1")
        .bind(id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(email, "held-term@example.com");
}

/// Seeds `n` auth users with no profile (all `missing`), the way a backfill finds them.
async fn seed_missing(db: &TestDb, n: i32) {
    sqlx::query(
        "insert into auth.users (instance_id, id, aud, role, email, raw_app_meta_data,
             raw_user_meta_data, confirmation_token, recovery_token, email_change_token_new,
             email_change, created_at, updated_at)
         select '00000000-0000-0000-0000-000000000000', gen_random_uuid(), 'authenticated',
                'authenticated', 'bulk' || i || '@example.com', '{\"provider\":\"email\"}', '{}',
                '', '', '', '', now(), now()
           from generate_series(1, $1) i",
    )
    .bind(n)
    .execute(&db.pool)
    .await
    .unwrap();
}

async fn start_applied_run(client: &reqwest::Client, address: &str) -> Value {
    let start = client.post(format!("{address}/v1/reconciliations"));
    as_service(start.json(&serde_json::json!({"dry_run": false}))).await
}

async fn run_state(client: &reqwest::Client, address: &str, id: &str) -> Value {
    as_service(client.get(format!("{address}/v1/reconciliations/{id}"))).await
}

/// Sends `request` with the service key; its JSON answer.
async fn as_service(request: reqwest::RequestBuilder) -> Value {
    let response = request.header("apikey", SERVICE_KEY).send().await.unwrap();
    response.json().await.unwrap()
}

#[tokio::test]
async fn sigkill_in_the_middle_of_a_reconciliation_is_finished_by_the_next_run_nothing_twice() {
    const USERS: i32 = 30_000;
    let db = TestDb::new().await;
    seed_missing(&db, USERS).await;
    // No periodic reconciliation from the healing loop: this test starts the runs itself.
    let env = [
        ("USERSYNC_RECONCILE_CHUNK_SIZE", "200"),
        ("USERSYNC_RECONCILE_INTERVAL", "0"),
    ];
    let client = reqwest::Client::new();

    let first = ServeProcess::start(&db.url(), &env).await;
    let started = start_applied_run(&client, &first.address).await;
    let killed_id = started["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{started}"))
        .to_owned();
    // Kill it as soon as some chunks are committed, while most of the work is still ahead.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let done: i64 = sqlx::query_scalar("select count(*) from public.users")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        if done > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the run never started repairing");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    std::process::Command::new("kill")
        .args(["-KILL", &first.pid().to_string()])
        .status()
        .unwrap();
    let (status, _) = first.wait();
    assert!(!status.success(), "the process was killed");
    let repaired_before: i64 = sqlx::query_scalar("select count(*) from public.users")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(
        repaired_before > 0 && repaired_before < i64::from(USERS),
        "the kill did not land mid-run ({repaired_before} of {USERS} repaired)"
    );

    // A new process: the killed run is abandoned, and the next run completes the job.
    let second = ServeProcess::start(&db.url(), &env).await;
    let next = start_applied_run(&client, &second.address).await;
    let next_id = next["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    let finished = loop {
        let run = run_state(&client, &second.address, &next_id).await;
        if !matches!(run["state"].as_str(), Some("planning" | "running")) {
            break run;
        }
        assert!(
            Instant::now() < deadline,
            "the second run did not finish: {run}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(finished["state"], "succeeded", "{finished}");
    assert_eq!(finished["resumed_from"], killed_id.as_str());
    let killed = run_state(&client, &second.address, &killed_id).await;
    assert_eq!(killed["state"], "abandoned", "{killed}");

    // Everyone has exactly one profile and exactly one `created` event: nothing done twice.
    let (profiles, events, users_with_two): (i64, i64, i64) = sqlx::query_as(
        "select (select count(*) from public.users),
                (select count(*) from usersync.repairs where action = 'created'),
                (select count(*) from (select user_id from usersync.repairs
                   group by user_id having count(*) > 1) twice)",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(profiles, i64::from(USERS));
    assert_eq!(events, i64::from(USERS));
    assert_eq!(users_with_two, 0);
}
