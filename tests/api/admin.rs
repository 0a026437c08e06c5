//! The admin page and the dead-letter list it shows.

use serde_json::Value;
use uuid::Uuid;

use crate::helpers::*;

#[tokio::test]
async fn the_admin_page_is_served_with_a_strict_policy_and_no_third_party_assets() {
    let app = spawn_app().await;
    let page = app.get("/admin").await;
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = page.text().await.unwrap();
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "external reference"
    );
    for (asset, kind) in [
        ("/admin/app.js", "text/javascript"),
        ("/admin/app.css", "text/css"),
    ] {
        let response = app.get(asset).await;
        assert_eq!(response.status(), 200);
        assert!(response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with(kind));
        let body = response.text().await.unwrap();
        assert!(
            !body.contains("https://"),
            "{asset} loads something from elsewhere"
        );
    }
}

#[tokio::test]
async fn dead_letters_are_listed_with_their_cause_for_the_service_only() {
    let app = spawn_app().await;
    let id = Uuid::new_v4();
    sqlx::query(
        "insert into usersync.dead_letters (user_id, op, error, sqlstate)
         values ($1, 'insert', 'null value in column \"plan\" violates not-null constraint', '23502')",
    )
    .bind(id)
    .execute(&app.db.pool)
    .await
    .unwrap();
    sqlx::query(
        "insert into usersync.dead_letters (user_id, op, error, resolved_at)
         values (gen_random_uuid(), 'update', 'healed already', now())",
    )
    .execute(&app.db.pool)
    .await
    .unwrap();
    let response = app
        .request(reqwest::Method::GET, "/v1/dead-letters", &secret_key())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let letters = body["dead_letters"].as_array().unwrap();
    assert_eq!(letters.len(), 1, "{body}");
    assert_eq!(letters[0]["user_id"], id.to_string());
    assert_eq!(letters[0]["sqlstate"], "23502");
    assert!(letters[0]["error"].as_str().unwrap().contains("plan"));

    let user = app.insert_auth_user(&AuthUser::new("u@example.com")).await;
    let response = app
        .request(reqwest::Method::GET, "/v1/dead-letters", &user_token(user))
        .send()
        .await
        .unwrap();
    assert_problem(response, 403, "service_only").await;
}
