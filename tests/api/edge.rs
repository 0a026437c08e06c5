//! Probes, the OpenAPI document, and errors raised below the handlers.

use reqwest::Method;
use serde_json::Value;

use crate::helpers::*;

#[tokio::test]
async fn healthz_and_readyz_answer() {
    let app = spawn_app().await;
    let health = app.get("/healthz").await;
    assert_eq!(health.status(), 200);
    assert!(health.headers().contains_key("x-request-id"));
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["checks"]["database"], "ok");
    assert_eq!(body["checks"]["migrations"], "ok");
    assert_eq!(body["checks"]["mapping"], "ok");
}

#[tokio::test]
async fn readyz_is_503_naming_the_mapping_when_the_table_no_longer_fits() {
    let app = spawn_app().await;
    // Someone ships a migration that the mapping does not know about.
    sqlx::query("alter table public.users add column plan text not null")
        .execute(&app.db.pool)
        .await
        .unwrap();
    let response = app.get("/readyz").await;
    assert!(response.headers().contains_key("retry-after"));
    let body = assert_problem(response, 503, "not_ready").await;
    assert_eq!(body["checks"]["database"], "ok");
    assert!(
        body["checks"]["mapping"].as_str().unwrap().contains("plan"),
        "{body}"
    );
}

#[tokio::test]
async fn readyz_stays_ready_when_the_table_changes_in_a_way_the_mapping_still_fits() {
    let app = spawn_app().await;
    // Unchanged: the catalog's shape equals the one the statements were rendered from.
    assert_eq!(app.get("/readyz").await.status(), 200);
    // A column the mapping does not know, with nothing required of it: the shape differs, the
    // mapping binds again, and it still fits.
    sqlx::query("alter table public.users add column note text")
        .execute(&app.db.pool)
        .await
        .unwrap();
    let response = app.get("/readyz").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["checks"]["mapping"], "ok", "{body}");
}

#[tokio::test]
async fn readyz_binds_the_mapping_again_only_once_the_tables_shape_changed() {
    let app = spawn_app().await;
    assert_eq!(app.fit.binds(), 1, "bound once, at start-up");
    for _ in 0..5 {
        assert_eq!(app.get("/readyz").await.status(), 200);
    }
    assert_eq!(app.fit.binds(), 1, "an unchanged table is not bound again");
    app.exec("alter table public.users add column note text")
        .await;
    for _ in 0..5 {
        assert_eq!(app.get("/readyz").await.status(), 200);
    }
    assert_eq!(app.fit.binds(), 2, "a changed table is bound again once");
}

#[tokio::test]
async fn readyz_fails_while_a_privilege_every_sync_needs_on_the_target_is_revoked() {
    // The service runs as a role of its own, which the table's owner grants to and revokes
    // from.
    let db = TestDb::new().await;
    let role = DedicatedRole::create(&db).await;
    let config = serve_config(&db.url_as(&role.name), &AppOptions::default());
    let app = TestApp::start(db, config).await;
    let name = &role.name;
    assert_eq!(app.get("/readyz").await.status(), 200);

    // No policy deletes: DELETE is not needed.
    app.exec(&format!("revoke delete on public.users from {name}"))
        .await;
    assert_eq!(app.get("/readyz").await.status(), 200);

    app.exec(&format!(
        "revoke insert, update on public.users from {name}"
    ))
    .await;
    let response = app.get("/readyz").await;
    assert!(response.headers().contains_key("retry-after"));
    let body = assert_problem(response, 503, "not_ready").await;
    let mapping = body["checks"]["mapping"].as_str().unwrap();
    assert!(
        mapping.contains(&format!(
            r#"role {name} lacks INSERT, UPDATE on "public"."users""#
        )) && mapping.contains(&format!(
            r#"grant insert, update on table "public"."users" to {name}"#
        )),
        "{body}"
    );
    assert_eq!(body["checks"]["database"], "ok");

    app.exec(&format!("grant insert, update on public.users to {name}"))
        .await;
    assert_eq!(app.get("/readyz").await.status(), 200);
}

#[tokio::test]
async fn a_caller_supplied_request_id_is_propagated() {
    let app = spawn_app().await;
    let response = app
        .request(Method::GET, "/healthz", &Auth::None)
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "abc-123");
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problem_json() {
    let app = spawn_app().await;
    assert_problem(app.get("/nope").await, 404, "not_found").await;
    let response = app
        .request(Method::DELETE, "/v1/status", &secret_key())
        .send()
        .await
        .unwrap();
    assert_problem(response, 405, "method_not_allowed").await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let app = spawn_app().await;
    let id = app
        .insert_auth_user(&AuthUser::new("big@example.com"))
        .await;
    let response = app
        .request(Method::POST, "/v1/users/me/sync", &user_token(id))
        .body(vec![b'x'; 128 * 1024])
        .send()
        .await
        .unwrap();
    assert_problem(response, 413, "payload_too_large").await;
    assert!(app.target_row(id).await.is_none());
}

#[tokio::test]
async fn the_openapi_document_is_served_and_matches_the_committed_file() {
    let app = spawn_app().await;
    let served: Value = app.get("/openapi.json").await.json().await.unwrap();
    for path in [
        "/v1/users/me/sync",
        "/v1/users/{id}/sync",
        "/v1/users/{id}/drift",
        "/v1/status",
        "/v1/drift",
        "/v1/reconciliations",
        "/v1/reconciliations/{id}",
        "/v1/hooks/database",
        "/healthz",
        "/readyz",
    ] {
        assert!(
            served["paths"][path].is_object(),
            "{path} is not documented"
        );
    }
    let committed: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json"))
            .expect("openapi/openapi.json is committed"),
    )
    .unwrap();
    assert_eq!(
        served, committed,
        "openapi/openapi.json is stale: run `cargo run -- openapi > openapi/openapi.json`"
    );
}
