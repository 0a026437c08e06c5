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
            metrics_access: Some(usersync::config::MetricsAccess::Service),
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
