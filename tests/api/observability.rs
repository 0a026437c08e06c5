//! `/metrics` and `/docs`.

use serde_json::Value;

use crate::helpers::*;

/// The value of one sample line (`name{labels} value`), if present.
fn sample(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

// The only test that scrapes successfully: drift gauges are process-wide, so a second scraping
// test running in parallel could overwrite them between refresh and read.
#[tokio::test]
async fn metrics_count_requests_sync_actions_and_drift() {
    let app = spawn_app().await;
    let synced = app.insert_auth_user(&AuthUser::new("a@example.com")).await;
    app.insert_auth_user(&AuthUser::new("b@example.com")).await;
    sqlx::query(
        "insert into public.users (id, email) values (gen_random_uuid(), 'orphan@example.com')",
    )
    .execute(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(app.sync_me(&user_token(synced)).await.status(), 200);
    assert_eq!(app.sync_me(&user_token(synced)).await.status(), 200);

    let response = app.get("/metrics").await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = response.text().await.unwrap();

    let requests = sample(
        &text,
        r#"usersync_http_requests_total{method="POST",route="/v1/users/me/sync",status="200"}"#,
    );
    assert!(requests.is_some_and(|n| n >= 2.0), "{text}");
    assert!(text.contains(r#"usersync_http_request_duration_seconds_bucket{method="POST",route="/v1/users/me/sync",status="200",le="0.005"}"#));
    let created = sample(
        &text,
        r#"usersync_sync_actions_total{path="call",kind="missing",action="created"}"#,
    );
    assert!(created.is_some_and(|n| n >= 1.0), "{text}");
    assert!(sample(
        &text,
        r#"usersync_sync_actions_total{path="call",kind="none",action="unchanged"}"#
    )
    .is_some());
    assert_eq!(
        sample(&text, r#"usersync_drift_users{kind="missing"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, r#"usersync_drift_users{kind="orphaned"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, r#"usersync_drift_users{kind="stale"}"#),
        Some(0.0)
    );
    assert_eq!(sample(&text, "usersync_source_users"), Some(2.0));
    assert_eq!(sample(&text, "usersync_target_users"), Some(2.0));
    assert_eq!(sample(&text, "usersync_dead_letters_pending"), Some(0.0));
    // The missing user was created a day ago (see AuthUser::insert).
    let age = sample(&text, "usersync_oldest_unsynced_user_age_seconds").unwrap();
    assert!((86_000.0..90_000.0).contains(&age), "{age}");
    // Raw paths (which hold user ids) never become labels.
    assert!(!text.contains(&synced.to_string()));
}

#[tokio::test]
async fn metrics_can_be_restricted_to_the_service() {
    let app = spawn_app_with(
        AppOptions {
            metrics_access: Some(usersync::http::MetricsAccess::Service),
            ..Default::default()
        },
        |_| async {},
    )
    .await;
    assert_problem(app.get("/metrics").await, 401, "missing_credentials").await;
    let id = app.insert_auth_user(&AuthUser::new("u@example.com")).await;
    let response = app
        .request(reqwest::Method::GET, "/metrics", &user_token(id))
        .send()
        .await
        .unwrap();
    assert_problem(response, 403, "service_only").await;
}

#[tokio::test]
async fn the_docs_page_is_served_from_the_binary() {
    let app = spawn_app().await;
    let page = app.get("/docs/").await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "{html}");
    assert!(
        !html.contains("cdn"),
        "the page must not load assets from a CDN"
    );
    for asset in [
        "/docs/swagger-ui.css",
        "/docs/swagger-ui-bundle.js",
        "/docs/swagger-initializer.js",
    ] {
        let response = app.get(asset).await;
        assert_eq!(response.status(), 200, "{asset}");
    }
    let initializer = app
        .get("/docs/swagger-initializer.js")
        .await
        .text()
        .await
        .unwrap();
    assert!(initializer.contains("/openapi.json"), "{initializer}");
    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
}

#[tokio::test]
async fn json_logs_carry_the_request_id_on_every_request_line() {
    let db = TestDb::new().await;
    let id = AuthUser::new("logs@example.com").insert(&db.pool).await;
    let serve = ServeProcess::start(&db.url(), &[("USERSYNC_LOG_FORMAT", "json")]).await;
    let client = reqwest::Client::new();
    let mut request_ids = Vec::new();
    for (path, auth) in [
        ("/v1/users/me/sync", Some(user_token(id))),
        ("/v1/users/me/sync", None),
    ] {
        let mut request = client.post(format!("{}{path}", serve.address));
        if let Some(Auth::Bearer(token)) = auth {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        request_ids.push(
            response.headers()["x-request-id"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
    }
    let logs = serve.stop();
    let lines: Vec<Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    let request_lines: Vec<&Value> = lines
        .iter()
        .filter(|l| l["spans"].as_array().is_some_and(|s| !s.is_empty()))
        .collect();
    let request_id_of = |line: &Value| -> Option<String> {
        line["spans"]
            .as_array()?
            .iter()
            .find_map(|s| s["request_id"].as_str().map(str::to_owned))
    };
    for id in &request_ids {
        let for_this: Vec<&&Value> = request_lines
            .iter()
            .filter(|l| request_id_of(l).as_deref() == Some(id.as_str()))
            .collect();
        assert!(
            for_this
                .iter()
                .any(|l| l["fields"]["message"] == "finished processing request"),
            "no response line for {id}: {logs}"
        );
    }
    for line in request_lines {
        assert!(
            request_id_of(line).is_some(),
            "a request line without request_id: {line}"
        );
    }
}

/// Peak-free resident memory of a process, in KiB (`VmRSS`).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

// In a process of its own: the recorder is process-wide, and this test scrapes.
#[tokio::test]
async fn made_up_methods_leave_metrics_and_memory_as_they_were() {
    let db = TestDb::new().await;
    let serve = ServeProcess::start(&db.url(), &[]).await;
    let client = reqwest::Client::new();
    let healthz = format!("{}/healthz", serve.address);
    let made_up = |i: usize| {
        reqwest::Method::from_bytes(format!("M{i:04}{}", "X".repeat(2043)).as_bytes()).unwrap()
    };
    let scrape = || async {
        let text = client
            .get(format!("{}/metrics", serve.address))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        // The scrape's own counters change their digits, not the document's shape.
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                l.rsplit_once(' ')
                    .map_or(l, |(series, _)| series)
                    .to_owned()
            })
            .collect::<std::collections::BTreeSet<_>>()
    };

    // One made-up method and one scrape first, so that their series exist before the baseline.
    client.request(made_up(0), &healthz).send().await.unwrap();
    scrape().await;
    let before = scrape().await;
    let rss_before = rss_kib(serve.pid());

    for i in 1..=1000 {
        client.request(made_up(i), &healthz).send().await.unwrap();
    }

    let after = scrape().await;
    let rss_after = rss_kib(serve.pid());
    assert_eq!(
        after.difference(&before).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "1,000 made-up methods added series"
    );
    assert!(after.iter().any(|s| s.contains(r#"method="other""#)));
    assert!(!after.iter().any(|s| s.contains("M0001XX")));
    // 1,000 label sets of 2 KiB each held in the recorder would be megabytes.
    assert!(
        rss_after < rss_before + 2048,
        "RSS grew from {rss_before} to {rss_after} KiB"
    );
    assert!(!serve.logs().contains("M0001XX"));
}

/// The metric families a scrape declares (`# TYPE` lines), by name and type.
fn families(text: &str) -> std::collections::BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| (name.to_owned(), kind.to_owned()))
        .collect()
}

/// The families the README's Observability table names (first column, in backticks).
fn readme_families() -> std::collections::BTreeSet<String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme
        .split_once("\n## Observability\n")
        .expect("the README has an Observability section")
        .1;
    let section = section.split_once("\n## ").map_or(section, |(s, _)| s);
    section
        .lines()
        .filter(|l| l.starts_with('|'))
        .filter_map(|l| l.split('|').nth(1))
        .flat_map(|cell| cell.split('`').skip(1).step_by(2))
        .filter(|name| name.starts_with("usersync_") || name.starts_with("process_"))
        .map(str::to_owned)
        .collect()
}

/// `promtool check metrics` over `text`: `None` when promtool is not installed.
fn promtool_check_metrics(text: &str) -> Option<(bool, String)> {
    use std::io::Write;
    let mut child = match std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some((out.status.success(), report))
}

// In a process of its own (the recorder is process-wide), with healing on so that the leader's
// first run succeeds and every family is published: a request, a sync, a run, the leader.
#[tokio::test]
async fn a_scrape_passes_promtool_and_publishes_exactly_the_readme_table() {
    let db = TestDb::new().await;
    let id = AuthUser::new("scrape@example.com").insert(&db.pool).await;
    let serve = ServeProcess::start(&db.url(), &[("USERSYNC_HEALING", "on")]).await;
    eventually(
        std::time::Duration::from_secs(20),
        "the leader's first run to succeed",
        || async {
            sqlx::query_scalar::<_, i64>(
                "select count(*) from usersync.runs where state = 'succeeded'",
            )
            .fetch_one(&db.pool)
            .await
            .unwrap()
                > 0
        },
    )
    .await;
    let client = reqwest::Client::new();
    let Auth::Bearer(token) = user_token(id) else {
        unreachable!("a user token is a bearer token")
    };
    let synced = client
        .post(format!("{}/v1/users/me/sync", serve.address))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(synced.status(), 200);
    let scrape = client
        .get(format!("{}/metrics", serve.address))
        .send()
        .await
        .unwrap();
    assert_eq!(scrape.status(), 200);
    let text = scrape.text().await.unwrap();

    // The table, the alerts and the dashboard (scripts/check-grafana.py reads the table) name
    // what a real process publishes, no more, no less.
    let published: std::collections::BTreeSet<String> = families(&text).into_keys().collect();
    assert_eq!(
        published,
        readme_families(),
        "the families /metrics publishes (left) and the README's Observability table (right) \
         differ:\n{text}"
    );
    for family in &published {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("# HELP {family} "))),
            "no HELP for {family}"
        );
    }
    assert_eq!(
        sample(
            &text,
            &format!(
                r#"usersync_build_info{{version="{}"}}"#,
                env!("CARGO_PKG_VERSION")
            )
        ),
        Some(1.0)
    );
    assert_eq!(sample(&text, "usersync_healing_leader"), Some(1.0));
    assert_eq!(
        sample(&text, "usersync_reconcile_interval_seconds"),
        Some(3600.0)
    );
    let age = sample(&text, "usersync_last_successful_run_age_seconds").unwrap();
    assert!((0.0..60.0).contains(&age), "{age}");
    let rss = sample(&text, "process_resident_memory_bytes").unwrap();
    assert!(rss > 1_000_000.0, "{rss}");
    assert!(sample(&text, "process_open_fds").is_some_and(|n| n > 0.0));
    let started = sample(&text, "process_start_time_seconds").unwrap();
    assert!(
        (now_secs() as f64 - started).abs() < 600.0,
        "{started} is not about now"
    );

    match promtool_check_metrics(&text) {
        Some((passed, report)) => assert!(passed, "promtool check metrics:\n{report}\n{text}"),
        // CI installs promtool (.ci/run), so there this never skips.
        None => eprintln!(
            "skipped promtool check metrics: promtool is not installed (Debian: apt-get install \
             --no-install-recommends prometheus)"
        ),
    }
}

#[tokio::test]
async fn a_replica_without_healing_publishes_no_leader_and_no_interval() {
    let db = TestDb::new().await;
    let serve = ServeProcess::start(&db.url(), &[]).await;
    let text = reqwest::get(format!("{}/metrics", serve.address))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        sample(&text, "usersync_healing_leader"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "usersync_reconcile_interval_seconds"),
        Some(0.0)
    );
    // Never a successful run: absent, not a made-up age.
    assert_eq!(
        sample(&text, "usersync_last_successful_run_age_seconds"),
        None
    );
}
