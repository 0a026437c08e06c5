//! The edge's limits, each with a clear problem+json answer: the per-caller rate limit, the
//! global concurrency limit, the request timeout, the header-size limit, and CORS.

use std::time::Duration;

use reqwest::Method;
use sqlx::Connection;
use uuid::Uuid;

use crate::helpers::*;

fn retry_after(response: &reqwest::Response) -> u64 {
    response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_user_over_the_sync_rate_gets_429_with_retry_after_and_no_one_else_does() {
    let (app, ada) = spawn_app_with_user(AppOptions {
        rate_limit_per_minute: 60,
        rate_limit_burst: 3,
        ..Default::default()
    })
    .await;
    let bob = app
        .insert_auth_user(&AuthUser::new("bob@example.com"))
        .await;

    for _ in 0..3 {
        assert_eq!(app.sync_me(&user_token(ada)).await.status(), 200);
    }
    // Both sync endpoints draw on the same quota.
    let response = app.sync_user(&ada.to_string(), &user_token(ada)).await;
    let wait = retry_after(&response);
    assert!((1..=2).contains(&wait), "Retry-After: {wait}");
    assert_problem(response, 429, "rate_limited").await;

    // Other users, and the service, are not held back by Ada.
    assert_eq!(app.sync_me(&user_token(bob)).await.status(), 200);
    for _ in 0..5 {
        assert_eq!(
            app.sync_user(&ada.to_string(), &secret_key())
                .await
                .status(),
            200
        );
    }
    // Other endpoints are not rate limited.
    assert_eq!(
        app.drift(&ada.to_string(), &user_token(ada)).await.status(),
        200
    );

    // Retrying when told to succeeds.
    tokio::time::sleep(Duration::from_secs(wait)).await;
    assert_eq!(app.sync_me(&user_token(ada)).await.status(), 200);
}

#[tokio::test]
async fn failed_authentication_on_sync_is_limited_by_address() {
    let app = spawn_app_with_options(AppOptions {
        rate_limit_per_minute: 60,
        rate_limit_burst: 3,
        ..Default::default()
    })
    .await;
    for _ in 0..3 {
        assert_problem(
            app.sync_me(&Auth::Bearer("guess".into())).await,
            401,
            "invalid_token",
        )
        .await;
    }
    let response = app.sync_me(&Auth::None).await;
    assert!(retry_after(&response) >= 1);
    assert_problem(response, 429, "rate_limited").await;
}

/// Holds an exclusive lock on the target table until dropped (rolled back), so that requests
/// which touch it stay in flight.
async fn lock_target(app: &TestApp) -> sqlx::PgConnection {
    let mut conn = sqlx::PgConnection::connect(&app.db.url()).await.unwrap();
    sqlx::raw_sql("begin; lock table public.users in access exclusive mode")
        .execute(&mut conn)
        .await
        .unwrap();
    conn
}

/// Waits until a query on this test's database is blocked on a lock.
async fn wait_for_a_blocked_query(app: &TestApp) {
    for _ in 0..100 {
        let waiting: i64 = sqlx::query_scalar(
            "select count(*) from pg_locks l join pg_database d on d.oid = l.database
             where not l.granted and d.datname = current_database()",
        )
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
        if waiting > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no request reached the database");
}

#[tokio::test]
async fn beyond_the_concurrency_limit_api_requests_are_shed_with_503_but_probes_answer() {
    let (app, id) = spawn_app_with_user(AppOptions {
        concurrency_limit: 1,
        ..Default::default()
    })
    .await;
    let lock = lock_target(&app).await;
    let in_flight = tokio::spawn({
        let (client, url, token) = (
            app.client.clone(),
            format!("{}/v1/users/me/sync", app.address),
            user_token(id),
        );
        async move {
            let Auth::Bearer(token) = token else {
                unreachable!()
            };
            client
                .post(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    wait_for_a_blocked_query(&app).await;

    let response = app.status(&secret_key()).await;
    assert!(response.headers().contains_key("retry-after"));
    assert_problem(response, 503, "overloaded").await;
    assert_eq!(app.get("/healthz").await.status(), 200);

    lock.close().await.unwrap();
    assert_eq!(in_flight.await.unwrap(), 200);
    assert_eq!(app.status(&secret_key()).await.status(), 200);
}

/// The promise of a timed-out request is that it may still be done and is safe to retry: a
/// coalesced sync's statement goes on after its requests are answered, so "nothing was
/// written" would not be true.
#[tokio::test]
async fn a_request_over_the_timeout_is_503_request_timeout_and_safe_to_retry() {
    let (app, id) = spawn_app_with_user(AppOptions {
        request_timeout: Duration::from_millis(300),
        ..Default::default()
    })
    .await;
    let lock = lock_target(&app).await;
    let response = app.sync_me(&user_token(id)).await;
    let body = assert_problem(response, 503, "request_timeout").await;
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("may still be done") && detail.contains("safe to retry"),
        "{detail}"
    );
    lock.close().await.unwrap();

    // The retry answers for the one profile, made once, by whichever statement made it.
    let retried = app.sync_me(&user_token(id)).await;
    assert_eq!(retried.status(), 200);
    let action = retried.json::<serde_json::Value>().await.unwrap()["action"].clone();
    assert!(action == "created" || action == "unchanged", "{action}");
    assert!(app.target_row(id).await.is_some());
    assert_eq!(
        app.events_of(id).await,
        [("missing".to_owned(), "created".to_owned())]
    );
}

#[tokio::test]
async fn oversized_headers_are_431() {
    let (app, id) = spawn_app_with_user(AppOptions {
        header_limit: 4096,
        ..Default::default()
    })
    .await;
    let one_big = app
        .request(Method::POST, "/v1/users/me/sync", &user_token(id))
        .header("x-padding", "x".repeat(5000))
        .send()
        .await
        .unwrap();
    assert_problem(one_big, 431, "headers_too_large").await;
    let mut many = app.request(Method::GET, "/healthz", &Auth::None);
    for i in 0..40 {
        many = many.header(format!("x-padding-{i}"), "y".repeat(100));
    }
    assert_problem(many.send().await.unwrap(), 431, "headers_too_large").await;
    assert!(app.target_row(id).await.is_none());
    // A token-sized request is fine.
    assert_eq!(app.sync_me(&user_token(id)).await.status(), 200);
}

fn preflight(app: &TestApp, origin: &str) -> reqwest::RequestBuilder {
    app.request(Method::OPTIONS, "/v1/users/me/sync", &Auth::None)
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn cors_answers_configured_origins_and_no_one_else() {
    let app = spawn_app_with_options(AppOptions {
        cors_origins: Some("https://app.example.com, http://localhost:3000"),
        ..Default::default()
    })
    .await;
    for origin in ["https://app.example.com", "http://localhost:3000"] {
        let response = preflight(&app, origin).send().await.unwrap();
        assert!(response.status().is_success(), "{}", response.status());
        assert_eq!(
            header(&response, "access-control-allow-origin"),
            Some(origin)
        );
        let methods = header(&response, "access-control-allow-methods").unwrap();
        assert!(methods.contains("POST"), "{methods}");
        let allowed = header(&response, "access-control-allow-headers").unwrap();
        assert!(
            allowed.contains("authorization") && allowed.contains("apikey"),
            "{allowed}"
        );
        assert!(header(&response, "access-control-allow-credentials").is_none());
    }
    for origin in [
        "https://evil.example",
        "https://app.example.com.evil.example",
        "null",
    ] {
        let response = preflight(&app, origin).send().await.unwrap();
        assert!(
            header(&response, "access-control-allow-origin").is_none(),
            "{origin}"
        );
    }
    // An actual call from the app: even its problem+json answer is readable by the page.
    let response = app
        .request(Method::POST, "/v1/users/me/sync", &Auth::None)
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&response, "access-control-allow-origin"),
        Some("https://app.example.com")
    );
    let exposed = header(&response, "access-control-expose-headers")
        .unwrap()
        .to_owned();
    assert!(
        exposed.contains("x-request-id") && exposed.contains("retry-after"),
        "{exposed}"
    );
    assert_problem(response, 401, "missing_credentials").await;
}

#[tokio::test]
async fn without_configured_origins_there_are_no_cors_headers() {
    let app = spawn_app().await;
    let response = preflight(&app, "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert!(header(&response, "access-control-allow-origin").is_none());
    assert_problem(response, 405, "method_not_allowed").await;
    let id = Uuid::new_v4();
    let response = app
        .request(Method::GET, &format!("/v1/users/{id}/drift"), &secret_key())
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert!(header(&response, "access-control-allow-origin").is_none());
}
