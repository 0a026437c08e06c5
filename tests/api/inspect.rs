//! One user as an admin looks them up: by id or email, both sides, the audit trail, and a dead
//! letter retried by hand. Service only; each endpoint's bad input and auth.

use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use usersync::vocabulary::policy::DeletedPolicy;

use crate::gotrue::{self, SignUp};
use crate::helpers::*;

async fn get(app: &TestApp, path: &str, auth: &Auth) -> reqwest::Response {
    app.request(Method::GET, path, auth).send().await.unwrap()
}

async fn get_json(app: &TestApp, path: &str) -> Value {
    let response = get(app, path, &secret_key()).await;
    assert_eq!(response.status(), 200, "{path}");
    response.json().await.unwrap()
}

async fn retry(app: &TestApp, id: &str, auth: &Auth) -> reqwest::Response {
    app.request(Method::POST, &format!("/v1/dead-letters/{id}/retry"), auth)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_user_shows_both_sides_safe_fields_only_drift_and_latest_repairs() {
    let (app, id) = spawn_app_with_user(AppOptions::default()).await;
    assert_eq!(app.sync_me(&user_token(id)).await.status(), 200);
    // The email changes in auth: the profile is stale until the next sync.
    app.exec(&format!(
        "update auth.users set email = 'renamed@example.com', \
         encrypted_password = '$2a$10$secrethashsecrethashsecrethashsecrethashsecreth' where id = '{id}'"
    ))
    .await;

    let body = get_json(&app, &format!("/v1/users/{id}")).await;
    assert_eq!(body["id"], json!(id.to_string()));
    let auth = &body["auth"];
    for field in [
        "email",
        "phone",
        "created_at",
        "last_sign_in_at",
        "deleted_at",
        "is_anonymous",
        "is_sso_user",
        "providers",
        "role",
        "mapped",
    ] {
        assert!(auth.get(field).is_some(), "auth.{field} in {auth}");
    }
    assert_eq!(auth["email"], "renamed@example.com");
    assert_eq!(auth["mapped"]["email"], "renamed@example.com");
    assert_eq!(body["profile"]["id"], json!(id.to_string()));
    assert_ne!(body["profile"]["email"], "renamed@example.com");
    assert_eq!(body["drift"], json!(["stale"]));
    assert_eq!(body["in_sync"], false);
    assert_eq!(body["dead_letter"], Value::Null);
    let repairs = body["repairs"].as_array().unwrap();
    assert_eq!(repairs.len(), 1);
    assert_eq!(repairs[0]["action"], "created");
    assert_eq!(repairs[0]["path"], "call");
    // Nothing that authenticates, and no raw metadata.
    let text = body.to_string();
    for secret in [
        "encrypted_password",
        "$2a$10$",
        "confirmation_token",
        "raw_user_meta_data",
        "raw_app_meta_data",
    ] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
}

#[tokio::test]
async fn a_profile_without_an_auth_user_is_shown_with_a_null_auth_side() {
    let app = spawn_app().await;
    let id = Uuid::new_v4();
    app.insert_profile(id, Some("orphan@example.com")).await;
    let body = get_json(&app, &format!("/v1/users/{id}")).await;
    assert_eq!(body["auth"], Value::Null);
    assert_eq!(body["profile"]["email"], "orphan@example.com");
    assert_eq!(body["drift"], json!(["orphaned"]));
}

#[tokio::test]
async fn the_user_endpoints_are_for_the_service_and_refuse_bad_input() {
    let (app, id) = spawn_app_with_user(AppOptions::default()).await;
    let paths = [
        format!("/v1/users/{id}"),
        format!("/v1/users/{id}/events"),
        "/v1/users?email=a%40example.com".to_owned(),
    ];
    for path in &paths {
        assert_problem(
            get(&app, path, &Auth::None).await,
            401,
            "missing_credentials",
        )
        .await;
        // A user may not look even at themselves: this is the admins' view.
        assert_problem(get(&app, path, &user_token(id)).await, 403, "service_only").await;
        assert_eq!(
            get(&app, path, &service_token()).await.status(),
            200,
            "{path}"
        );
    }
    assert_problem(
        retry(&app, &id.to_string(), &Auth::None).await,
        401,
        "missing_credentials",
    )
    .await;
    assert_problem(
        retry(&app, &id.to_string(), &user_token(id)).await,
        403,
        "service_only",
    )
    .await;

    let key = secret_key();
    assert_problem(
        get(&app, "/v1/users/not-a-uuid", &key).await,
        400,
        "invalid_path",
    )
    .await;
    assert_problem(
        get(&app, &format!("/v1/users/{}", Uuid::new_v4()), &key).await,
        404,
        "user_not_found",
    )
    .await;
    for query in ["", "?email=", "?other=x", "?email=a&email=b"] {
        let response = get(&app, &format!("/v1/users{query}"), &key).await;
        assert_problem(response, 400, "invalid_query").await;
    }
    let long = format!("/v1/users?email={}%40example.com", "a".repeat(400));
    assert_problem(get(&app, &long, &key).await, 400, "invalid_query").await;
    for query in [
        "limit=0",
        "limit=501",
        "limit=x",
        "before=0",
        "before=-3",
        "before=x",
        "after=1",
    ] {
        let response = get(&app, &format!("/v1/users/{id}/events?{query}"), &key).await;
        assert_problem(response, 400, "invalid_query").await;
    }
    assert_problem(retry(&app, "not-a-uuid", &key).await, 400, "invalid_path").await;
    assert_problem(
        retry(&app, &id.to_string(), &key).await,
        404,
        "no_dead_letter",
    )
    .await;
    // Nothing was written by any of it.
    assert_eq!(app.target_count().await, 0);
    assert_eq!(app.event_count().await, 0);
}

#[tokio::test]
async fn an_email_finds_the_auth_user_and_a_profile_under_another_id_in_any_case() {
    let (app, id) = spawn_app_with_user(AppOptions::default()).await;
    let email = app.auth_email(id).await;
    // The same person under a second id: a profile left by an earlier sign-up.
    let stray = Uuid::new_v4();
    app.insert_profile(stray, Some(&email.to_uppercase())).await;
    app.insert_profile(Uuid::new_v4(), Some("someone.else@example.com"))
        .await;

    let query = format!(
        "/v1/users?email={}",
        email.to_uppercase().replace('@', "%40")
    );
    let body = get_json(&app, &query).await;
    let mut found: Vec<String> = body["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_owned())
        .collect();
    found.sort();
    let mut expected = vec![id.to_string(), stray.to_string()];
    expected.sort();
    assert_eq!(found, expected);
    let users = body["users"].as_array().unwrap();
    let of = |wanted: Uuid| {
        users
            .iter()
            .find(|u| u["id"] == json!(wanted.to_string()))
            .unwrap()
    };
    assert_eq!(of(id)["auth"]["email"], json!(email));
    assert_eq!(of(id)["profile"], Value::Null);
    assert_eq!(of(stray)["auth"], Value::Null);

    for nobody in ["nobody%40example.com", "%20", "a%00b%40example.com"] {
        let none = get_json(&app, &format!("/v1/users?email={nobody}")).await;
        assert_eq!(none["users"], json!([]), "{nobody}");
    }
}

#[tokio::test]
async fn the_audit_trail_pages_newest_first_through_calls_and_run_chunks() {
    let (app, id) = spawn_app_with_user(AppOptions::default()).await;
    // A run creates the profile (a chunk event), a sync-one updates it, another run updates it.
    let run = app
        .reconcile(json!({"dry_run": false, "kinds": ["missing"]}))
        .await;
    assert_eq!(run["state"], "succeeded", "{run}");
    let rename = |email: &str| format!("update auth.users set email = '{email}' where id = '{id}'");
    app.exec(&rename("second@example.com")).await;
    assert_eq!(app.sync_me(&user_token(id)).await.status(), 200);
    app.exec(&rename("third@example.com")).await;
    let run = app
        .reconcile(json!({"dry_run": false, "kinds": ["stale"]}))
        .await;
    assert_eq!(run["state"], "succeeded", "{run}");
    // Another user's events are not this user's.
    let other = AuthUser::new("other@example.com")
        .insert(&app.db.pool)
        .await;
    assert_eq!(app.sync_me(&user_token(other)).await.status(), 200);

    let all = get_json(&app, &format!("/v1/users/{id}/events")).await;
    let trail: Vec<(String, String)> = all["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["path"].as_str().unwrap().into(),
                e["action"].as_str().unwrap().into(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [
        ("batch", "updated"),
        ("call", "updated"),
        ("batch", "created"),
    ]
    .iter()
    .map(|(p, a)| (p.to_string(), a.to_string()))
    .collect();
    assert_eq!(trail, expected);
    assert_eq!(all["next"], Value::Null);
    assert_eq!(all["events"][0]["after"]["email"], "third@example.com");
    assert_eq!(all["events"][0]["before"]["email"], "second@example.com");

    // One at a time, following `next`, gives the same trail.
    let mut paged = Vec::new();
    let mut before: Option<i64> = None;
    loop {
        let query = before.map_or(String::new(), |b| format!("&before={b}"));
        let page = get_json(&app, &format!("/v1/users/{id}/events?limit=1{query}")).await;
        paged.extend(
            page["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["event_id"].clone()),
        );
        match page["next"].as_i64() {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    let ids: Vec<Value> = all["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_id"].clone())
        .collect();
    assert_eq!(paged, ids);
}

/// Signs a user up (through the triggers) while the target refuses every insert: the sign-up
/// commits and leaves a dead letter.
async fn dead_letter_for(app: &TestApp) -> Uuid {
    install_triggers(&app.db.pool, None, DeletedPolicy::Report).await;
    app.exec("alter table public.users add column plan text not null")
        .await;
    gotrue::sign_up(&app.db.auth_admin, &SignUp::new("letter@example.com"))
        .await
        .expect("the sign-up commits")
}

#[tokio::test]
async fn a_dead_letter_retried_by_hand_fails_with_its_cause_then_heals_once_the_table_is_fixed() {
    let app = spawn_app().await;
    let id = dead_letter_for(&app).await;
    let shown = get_json(&app, &format!("/v1/users/{id}")).await;
    assert_eq!(shown["dead_letter"]["user_id"], json!(id.to_string()));
    let attempts = shown["dead_letter"]["attempts"].as_i64().unwrap();

    // Still broken: the attempt fails, the letter stays with one more attempt and its cause.
    let response = retry(&app, &id.to_string(), &secret_key()).await;
    assert_eq!(response.status(), 200);
    let failed: Value = response.json().await.unwrap();
    assert_eq!(failed["healed"], false);
    assert_eq!(failed["dead_letter"]["attempts"], json!(attempts + 1));
    assert!(
        failed["dead_letter"]["error"]
            .as_str()
            .unwrap()
            .contains("plan"),
        "{failed}"
    );
    assert_eq!(app.target_row(id).await, None);

    app.exec("alter table public.users drop column plan").await;
    let response = retry(&app, &id.to_string(), &service_token()).await;
    assert_eq!(response.status(), 200);
    let healed: Value = response.json().await.unwrap();
    assert_eq!(
        healed,
        json!({"user_id": id.to_string(), "healed": true, "action": "created", "dead_letter": null})
    );
    assert!(app.target_row(id).await.is_some());
    let shown = get_json(&app, &format!("/v1/users/{id}")).await;
    assert_eq!(shown["dead_letter"], Value::Null);
    assert_eq!(shown["in_sync"], true);
    assert_eq!(shown["repairs"][0]["path"], "healing");
    assert_eq!(shown["repairs"][0]["caller"], "service");
    // Resolved: nothing left to retry.
    assert_problem(
        retry(&app, &id.to_string(), &secret_key()).await,
        404,
        "no_dead_letter",
    )
    .await;
}
