//! ES256 and RS256 tokens verified against a JWKS: caching, rotation, refetch on an unknown
//! `kid` at most once per interval, and an endpoint that goes down.

use std::time::Duration;

use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::*;
use crate::keys::{dead_url, redirecting_to, JwksServer, SigningKey};

async fn app_with_jwks(server: &JwksServer, options: AppOptions) -> (TestApp, Uuid) {
    spawn_app_with_user(AppOptions {
        jwks_url: Some(server.url()),
        ..options
    })
    .await
}

async fn readyz(app: &TestApp) -> (u16, Value) {
    let response = app.get("/readyz").await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn es256_rs256_and_hs256_tokens_are_all_accepted_side_by_side() {
    let (ec, rsa) = (SigningKey::ec_a(), SigningKey::rsa_a());
    let server = JwksServer::start(vec![ec.jwk(), rsa.jwk()]).await;
    let (app, id) = app_with_jwks(&server, AppOptions::default()).await;

    for auth in [
        ec.bearer(&user_claims(id)),
        rsa.bearer(&user_claims(id)),
        user_token(id),
    ] {
        assert_eq!(app.sync_me(&auth).await.status(), 200);
    }
    assert!(app.target_row(id).await.is_some());
    // One fetch at start-up served them all.
    assert_eq!(server.fetches(), 1);
    let (status, body) = readyz(&app).await;
    assert_eq!((status, &body["checks"]["keys"]), (200, &json!("ok")));
    assert_eq!(body["status"], "ready");
}

#[tokio::test]
async fn a_service_role_token_signed_by_a_listed_key_is_the_service() {
    let ec = SigningKey::ec_a();
    let server = JwksServer::start(vec![ec.jwk()]).await;
    let (app, _) = app_with_jwks(&server, AppOptions::default()).await;
    let now = now_secs();
    let token =
        ec.bearer(&json!({"role": "service_role", "iss": "supabase", "iat": now, "exp": now + 60}));
    assert_eq!(app.status(&token).await.status(), 200);
}

#[tokio::test]
async fn during_a_rotation_the_new_key_is_fetched_on_first_use_and_both_keys_work() {
    let (old, new) = (SigningKey::ec_a(), SigningKey::ec_b());
    let server = JwksServer::start(vec![old.jwk()]).await;
    let (app, id) = app_with_jwks(
        &server,
        AppOptions {
            jwks_refetch_interval: Duration::ZERO,
            jwt_secret: None,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        app.sync_me(&old.bearer(&user_claims(id))).await.status(),
        200
    );

    // Supabase publishes the standby key, then starts signing with it.
    server.set_keys(vec![old.jwk(), new.jwk()]);
    assert_eq!(
        app.sync_me(&new.bearer(&user_claims(id))).await.status(),
        200
    );
    assert_eq!(
        app.sync_me(&old.bearer(&user_claims(id))).await.status(),
        200
    );
    assert_eq!(
        server.fetches(),
        2,
        "one fetch at start-up, one for the new kid"
    );

    // The old key is revoked: gone from the set, it stops working at the next fetch.
    server.set_keys(vec![new.jwk()]);
    let unknown = new.sign_with_kid(&user_claims(id), Some("not-a-key"));
    assert_problem(
        app.sync_me(&Auth::Bearer(unknown)).await,
        401,
        "unknown_key",
    )
    .await;
    assert_problem(
        app.sync_me(&old.bearer(&user_claims(id))).await,
        401,
        "unknown_key",
    )
    .await;
    assert_eq!(
        app.sync_me(&new.bearer(&user_claims(id))).await.status(),
        200
    );
}

#[tokio::test]
async fn the_keys_are_refreshed_in_the_background_when_the_cache_expires() {
    let (old, new) = (SigningKey::ec_a(), SigningKey::ec_b());
    let server = JwksServer::start(vec![old.jwk()]).await;
    let (app, id) = app_with_jwks(
        &server,
        AppOptions {
            jwks_cache_ttl: Duration::from_millis(300),
            // No refetch for unknown kids: only the background refresh can bring the new key.
            jwks_refetch_interval: Duration::from_secs(3600),
            ..Default::default()
        },
    )
    .await;
    server.set_keys(vec![old.jwk(), new.jwk()]);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(server.fetches() >= 2, "{} fetches", server.fetches());
    assert_eq!(
        app.sync_me(&new.bearer(&user_claims(id))).await.status(),
        200
    );
}

#[tokio::test]
async fn unknown_kids_trigger_at_most_one_fetch_per_interval_however_many_arrive_at_once() {
    let ec = SigningKey::ec_a();
    let server = JwksServer::start(vec![ec.jwk()]).await;
    let (app, id) = app_with_jwks(
        &server,
        AppOptions {
            jwks_refetch_interval: Duration::from_secs(3600),
            ..Default::default()
        },
    )
    .await;
    let requests = (0..40).map(|i| {
        let token = ec.sign_with_kid(&user_claims(id), Some(&format!("forged-{i}")));
        let app = &app;
        async move { app.sync_me(&Auth::Bearer(token)).await.status().as_u16() }
    });
    let statuses = futures::future::join_all(requests).await;
    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
    // With the refetch interval counted from the start-up fetch, none was due.
    assert_eq!(server.fetches(), 1);
    assert_eq!(app.target_count().await, 0);
}

#[tokio::test]
async fn concurrent_requests_for_a_new_kid_share_one_fetch() {
    let (old, new) = (SigningKey::ec_a(), SigningKey::rsa_a());
    let server = JwksServer::start(vec![old.jwk()]).await;
    let (app, id) = app_with_jwks(
        &server,
        AppOptions {
            jwks_refetch_interval: Duration::from_millis(1),
            ..Default::default()
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    server.set_keys(vec![old.jwk(), new.jwk()]);
    let token = new.bearer(&user_claims(id));
    let path = id.to_string();
    let requests = (0..20).map(|_| app.drift(&path, &token));
    for response in futures::future::join_all(requests).await {
        assert_eq!(response.status(), 200);
    }
    assert_eq!(server.fetches(), 2);
}

#[tokio::test]
async fn when_the_jwks_endpoint_fails_cached_keys_keep_working_and_readyz_says_stale() {
    let ec = SigningKey::ec_a();
    let server = JwksServer::start(vec![ec.jwk()]).await;
    let (app, id) = app_with_jwks(
        &server,
        AppOptions {
            jwks_refetch_interval: Duration::ZERO,
            jwt_secret: None,
            ..Default::default()
        },
    )
    .await;
    server.set_down(true);
    // A token naming an unknown kid makes the service try the endpoint, which fails.
    let unknown = ec.sign_with_kid(&user_claims(id), Some("rotated-in"));
    assert_problem(
        app.sync_me(&Auth::Bearer(unknown)).await,
        401,
        "unknown_key",
    )
    .await;
    assert_eq!(server.fetches(), 2);

    assert_eq!(
        app.sync_me(&ec.bearer(&user_claims(id))).await.status(),
        200
    );
    let (status, body) = readyz(&app).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "degraded");
    let keys = body["checks"]["keys"].as_str().unwrap();
    assert!(keys.starts_with("stale"), "{keys}");
    assert!(keys.contains("503"), "{keys}");

    // Back up: the next fetch clears it.
    server.set_down(false);
    let unknown = ec.sign_with_kid(&user_claims(id), Some("rotated-in-2"));
    assert_problem(
        app.sync_me(&Auth::Bearer(unknown)).await,
        401,
        "unknown_key",
    )
    .await;
    let (status, body) = readyz(&app).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ready")));
}

#[tokio::test]
async fn without_keys_at_start_up_the_service_runs_but_is_not_ready_unless_a_secret_can_verify() {
    let url = dead_url().await;
    // JWKS is the only way to verify user tokens: not ready, with the reason.
    let app = spawn_app_with_options(AppOptions {
        jwks_url: Some(url.clone()),
        jwt_secret: None,
        ..Default::default()
    })
    .await;
    let response = app.get("/readyz").await;
    let body = assert_problem(response, 503, "not_ready").await;
    assert!(
        body["checks"]["keys"]
            .as_str()
            .unwrap()
            .starts_with("unavailable"),
        "{body}"
    );
    assert_eq!(app.get("/healthz").await.status(), 200);
    // Secret keys still work.
    assert_eq!(app.status(&secret_key()).await.status(), 200);

    // With the JWT secret as well, the service is ready but degraded.
    let app = spawn_app_with_options(AppOptions {
        jwks_url: Some(url),
        ..Default::default()
    })
    .await;
    let (status, body) = readyz(&app).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("degraded")));
}

#[tokio::test]
async fn the_jwks_url_can_be_derived_from_the_issuer() {
    let ec = SigningKey::ec_a();
    let server = JwksServer::start(vec![ec.jwk()]).await;
    let (app, id) = spawn_app_with_user(AppOptions {
        issuer: Some(server.issuer()),
        jwks_from_issuer: true,
        ..Default::default()
    })
    .await;
    let mut claims = user_claims(id);
    claims["iss"] = json!(server.issuer());
    assert_eq!(app.sync_me(&ec.bearer(&claims)).await.status(), 200);
    assert_eq!(server.fetches(), 1);
}

#[tokio::test]
async fn a_jwks_redirect_to_plain_http_or_another_host_is_not_followed() {
    let ec = SigningKey::ec_a();
    let server = JwksServer::start(vec![ec.jwk()]).await;
    // The same keys on another host (`localhost` is not `127.0.0.1`), and on the same host over
    // plain http: neither is https on the URL's own host.
    let elsewhere = server.url().replace("127.0.0.1", "localhost");
    for target in [elsewhere, server.url()] {
        let url = redirecting_to(target).await;
        let (app, id) = spawn_app_with_user(AppOptions {
            jwks_url: Some(url),
            jwt_secret: None,
            ..Default::default()
        })
        .await;
        let body = assert_problem(app.get("/readyz").await, 503, "not_ready").await;
        let keys = body["checks"]["keys"].as_str().unwrap();
        assert!(keys.contains("refused a redirect"), "{keys}");
        assert_problem(
            app.sync_me(&ec.bearer(&user_claims(id))).await,
            401,
            "unknown_key",
        )
        .await;
    }
    assert_eq!(server.fetches(), 0);
}
