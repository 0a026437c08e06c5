//! The `provision` repair against a stand-in for the Supabase Auth admin API.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use usersync::config::ReconcileConfig;
use usersync::vocabulary::policy::OrphanedPolicy;

use crate::helpers::*;

const ADMIN_KEY: &str = "sb_secret_admin_key_for_provisioning";

/// What the fake admin API saw, and the database it writes users into, like GoTrue does.
#[derive(Clone, Default)]
struct FakeAuth {
    calls: Arc<Mutex<Vec<(HeaderMap, Value)>>>,
    db: Arc<Mutex<Option<PgPool>>>,
}

/// `POST /auth/v1/admin/users`: refuses `taken@example.com` as GoTrue refuses a registered
/// email, and otherwise writes the auth user under the requested id.
async fn create_user(
    State(fake): State<FakeAuth>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> (StatusCode, axum::Json<Value>) {
    fake.calls.lock().unwrap().push((headers, body.clone()));
    if body["email"] == "taken@example.com" {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            axum::Json(json!({"code": 422, "error_code": "email_exists",
                              "msg": "A user with this email address has already been registered"})),
        );
    }
    let mut app_metadata = json!({"provider": "email", "providers": ["email"]});
    for (k, v) in body["app_metadata"].as_object().unwrap() {
        app_metadata[k] = v.clone();
    }
    let user = AuthUser {
        id: Uuid::parse_str(body["id"].as_str().unwrap()).unwrap(),
        ..AuthUser::new(body["email"].as_str().unwrap())
    }
    .user_metadata(body["user_metadata"].clone())
    .app_metadata(app_metadata);
    let db = fake.db.lock().unwrap().clone().unwrap();
    user.insert(&db).await;
    (StatusCode::OK, axum::Json(json!({"id": user.id})))
}

/// The fake admin API, listening; returns it and its URL.
async fn fake_admin() -> (FakeAuth, String) {
    let fake = FakeAuth::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let router = axum::Router::new()
        .route("/auth/v1/admin/users", post(create_user))
        .with_state(fake.clone());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (fake, format!("http://127.0.0.1:{port}"))
}

/// Options that provision orphaned profiles through the admin API at `url`.
fn provisioning(url: String) -> AppOptions {
    AppOptions {
        reconcile: ReconcileConfig {
            orphaned: OrphanedPolicy::Provision,
            supabase_url: Some(url),
            supabase_service_key: Some(ADMIN_KEY.to_owned().into()),
            ..ReconcileConfig::default()
        },
        ..AppOptions::default()
    }
}

async fn spawn_provisioning() -> (TestApp, FakeAuth) {
    let (fake, url) = fake_admin().await;
    let db_slot = fake.db.clone();
    let app = spawn_app_with(provisioning(url), |db| async move {
        *db_slot.lock().unwrap() = Some(db);
    })
    .await;
    (app, fake)
}

fn calls_for(fake: &FakeAuth, id: Uuid) -> Vec<(HeaderMap, Value)> {
    fake.calls
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, body)| body["id"] == id.to_string())
        .cloned()
        .collect()
}

#[tokio::test]
async fn an_orphaned_profile_gets_its_auth_user_through_the_admin_api() {
    let (app, fake) = spawn_provisioning().await;
    let orphan = Uuid::new_v4();
    app.insert_profile(orphan, Some("olga@example.com")).await;
    app.exec(&format!(
        "update public.users set full_name = 'Olga', role = 'admin' where id = '{orphan}'"
    ))
    .await;
    let profile = app.target_row(orphan).await.unwrap();

    let run = app.reconcile(json!({"dry_run": false})).await;

    assert_eq!(run["plan"]["kinds"]["orphaned"]["action"], "provision");
    assert_eq!(run["progress"]["repaired"], json!({"orphaned": 1}), "{run}");
    let calls = calls_for(&fake, orphan);
    assert_eq!(calls.len(), 1);
    let (headers, body) = &calls[0];
    assert_eq!(headers["apikey"], ADMIN_KEY);
    assert_eq!(headers["authorization"], format!("Bearer {ADMIN_KEY}"));
    assert_eq!(
        *body,
        json!({"id": orphan.to_string(), "email": "olga@example.com", "email_confirm": true,
               "phone_confirm": false, "user_metadata": {"full_name": "Olga"},
               "app_metadata": {"role": "admin"}})
    );
    // The profile now has its user and is in sync, untouched.
    let drift: Value = app
        .drift(&orphan.to_string(), &secret_key())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(drift, json!({"in_sync": true, "drift": []}));
    assert_eq!(app.target_row(orphan).await.unwrap(), profile);
    assert_eq!(
        app.events_of(orphan).await,
        [("orphaned".to_owned(), "provisioned".to_owned())]
    );

    let again = app.reconcile(json!({"dry_run": false})).await;
    assert_eq!(again["progress"]["repaired"], json!({}));
    assert_eq!(calls_for(&fake, orphan).len(), 1);
}

#[tokio::test]
async fn refusals_are_reported_and_deleted_users_are_never_provisioned() {
    let (app, fake) = spawn_provisioning().await;
    let taken = Uuid::new_v4();
    app.insert_profile(taken, Some("taken@example.com")).await;
    let no_email = Uuid::new_v4();
    app.insert_profile(no_email, None).await;
    // A user usersync synced and who was then deleted from Supabase Auth on purpose.
    let deleted = app
        .insert_auth_user(&AuthUser::new("gone@example.com"))
        .await;
    app.sync_user(&deleted.to_string(), &secret_key()).await;
    app.exec(&format!("delete from auth.users where id = '{deleted}'"))
        .await;

    let run = app.reconcile(json!({"dry_run": false})).await;

    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["progress"]["failed"], json!({"orphaned": 2}), "{run}");
    let reasons: Vec<String> = run["progress"]["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["reason"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("email_exists")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("neither an email nor a phone")),
        "{reasons:?}"
    );
    assert!(calls_for(&fake, deleted).is_empty());
    assert!(calls_for(&fake, no_email).is_empty());
    assert_eq!(run["plan"]["kinds"]["deleted"]["count"], 1);
    let in_auth: i64 = sqlx::query_scalar("select count(*) from auth.users")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(in_auth, 0);
}

/// A Supabase Database Webhook payload on the profile table, as `supabase_functions.http_request`
/// sends it: the whole row.
fn profile_payload(op: &str, row: &Value) -> Value {
    let (record, old_record) = match op {
        "DELETE" => (Value::Null, row.clone()),
        _ => (row.clone(), Value::Null),
    };
    json!({"type": op, "table": "users", "schema": "public", "record": record,
           "old_record": old_record})
}

/// The action of a 200 answer.
async fn action_of(response: reqwest::Response) -> String {
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["action"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_profile_insert_webhook_gives_the_new_profile_its_auth_user_at_once() {
    let (app, fake) = spawn_provisioning().await;
    let orphan = Uuid::new_v4();
    app.insert_profile(orphan, Some("olga@example.com")).await;
    let mut row = app.target_row(orphan).await.unwrap();
    // The payload is only a signal: what it says of the row is not what is provisioned.
    row["email"] = json!("forged@example.com");

    let response = app
        .hook(&profile_payload("INSERT", &row), &secret_key())
        .await;

    assert_eq!(action_of(response).await, "provisioned");
    let calls = calls_for(&fake, orphan);
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].1["email"], "olga@example.com");
    let (path, kind, action): (String, String, String) =
        sqlx::query_as("select path, kind, action from usersync.repairs where user_id = $1")
            .bind(orphan)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(
        (path.as_str(), kind.as_str(), action.as_str()),
        ("hook", "orphaned", "provisioned")
    );
    let drift: Value = app
        .drift(&orphan.to_string(), &secret_key())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(drift["in_sync"], true, "{drift}");

    // Delivered again (an UPDATE, a retry): the profile has its user now, and is that user's
    // signal; nobody is created twice.
    for op in ["INSERT", "UPDATE"] {
        let again = app.hook(&profile_payload(op, &row), &secret_key()).await;
        assert_eq!(action_of(again).await, "unchanged");
    }
    assert_eq!(calls_for(&fake, orphan).len(), 1);
}

#[tokio::test]
async fn a_profile_webhook_on_a_profile_with_a_user_heals_that_user_and_provisions_nobody() {
    let (app, fake) = spawn_provisioning().await;
    let user = app
        .insert_auth_user(&AuthUser::new("ada@example.com"))
        .await;
    // The app wrote the profile first, with a value the mapping does not agree with.
    app.insert_profile(user, Some("stale@example.com")).await;
    let row = app.target_row(user).await.unwrap();

    let response = app
        .hook(&profile_payload("INSERT", &row), &secret_key())
        .await;

    assert_eq!(action_of(response).await, "updated");
    assert_eq!(
        app.target_row(user).await.unwrap()["email"],
        "ada@example.com"
    );
    // A deleted profile of a live user is that user's missing profile; an unknown key, nothing.
    app.exec(&format!("delete from public.users where id = '{user}'"))
        .await;
    let deleted = app
        .hook(&profile_payload("DELETE", &row), &secret_key())
        .await;
    assert_eq!(action_of(deleted).await, "created");
    let nobody = json!({"id": Uuid::new_v4(), "email": "nobody@example.com"});
    let unknown = app
        .hook(&profile_payload("INSERT", &nobody), &secret_key())
        .await;
    assert_eq!(action_of(unknown).await, "unchanged");
    assert!(fake.calls.lock().unwrap().is_empty());
}

#[tokio::test]
async fn an_orphan_is_only_reported_under_the_report_policy() {
    let app = spawn_app().await;
    let orphan = Uuid::new_v4();
    app.insert_profile(orphan, Some("olga@example.com")).await;
    let before = app.target_snapshot().await;

    let response = app
        .hook(
            &profile_payload("INSERT", &json!({"id": orphan})),
            &secret_key(),
        )
        .await;

    assert_eq!(action_of(response).await, "orphan_reported");
    assert_eq!(app.target_snapshot().await, before);
    assert_eq!(app.event_count().await, 0);
}

#[tokio::test]
async fn a_profile_webhook_that_cannot_provision_says_why_and_changes_nothing() {
    let (app, fake) = spawn_provisioning().await;
    let taken = Uuid::new_v4();
    app.insert_profile(taken, Some("taken@example.com")).await;
    let no_email = Uuid::new_v4();
    app.insert_profile(no_email, None).await;
    let before = app.target_snapshot().await;

    let refused = app
        .hook(
            &profile_payload("INSERT", &json!({"id": taken})),
            &secret_key(),
        )
        .await;
    let problem = assert_problem(refused, 502, "provision_failed").await;
    assert!(
        problem["detail"].as_str().unwrap().contains("email_exists"),
        "{problem}"
    );
    let unmappable = app
        .hook(
            &profile_payload("INSERT", &json!({"id": no_email})),
            &secret_key(),
        )
        .await;
    let problem = assert_problem(unmappable, 422, "provision_failed").await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("neither an email nor a phone"),
        "{problem}"
    );
    assert!(calls_for(&fake, no_email).is_empty());
    assert_eq!(app.target_snapshot().await, before);
    assert_eq!(app.event_count().await, 0);
}

#[tokio::test]
async fn a_role_that_cannot_see_auth_users_provisions_nobody() {
    // Row level security hides every auth user from this role: every profile would look
    // orphaned, and each would be created a second auth user.
    let (fake, url) = fake_admin().await;
    let db = TestDb::new().await;
    *fake.db.lock().unwrap() = Some(db.pool.clone());
    let user = AuthUser::new("ada@example.com").insert(&db.pool).await;
    let config = serve_config(&db.url_as(NO_RLS_BYPASS_ROLE), &provisioning(url));
    let app = TestApp::start(db, config).await;
    app.insert_profile(Uuid::new_v4(), Some("olga@example.com"))
        .await;
    sqlx::query("insert into public.users (id, email) values ($1, 'ada@example.com') on conflict do nothing")
        .bind(user)
        .execute(&app.db.pool)
        .await
        .unwrap();

    let response = app
        .hook(
            &profile_payload("INSERT", &json!({"id": user})),
            &secret_key(),
        )
        .await;

    assert_problem(response, 503, "source_unreadable").await;
    assert!(fake.calls.lock().unwrap().is_empty());
}

#[tokio::test]
async fn profile_payloads_without_a_key_or_about_another_table_are_refused() {
    let app = spawn_app().await;
    let id = Uuid::new_v4();
    for record in [
        json!({"email": "x@example.com"}),
        json!({"id": 42}),
        json!({"id": "nope"}),
    ] {
        let response = app
            .hook(&profile_payload("INSERT", &record), &secret_key())
            .await;
        assert_problem(response, 400, "invalid_body").await;
    }
    let mut other = profile_payload("INSERT", &json!({"id": id}));
    other["table"] = json!("profiles");
    assert_problem(app.hook(&other, &secret_key()).await, 422, "unknown_table").await;
    assert_eq!(app.event_count().await, 0);
}

#[tokio::test]
async fn one_orphan_is_provisioned_by_its_repair() {
    let (app, fake) = spawn_provisioning().await;
    let orphan = Uuid::new_v4();
    app.insert_profile(orphan, Some("olga@example.com")).await;
    let other = Uuid::new_v4();
    app.insert_profile(other, Some("otto@example.com")).await;

    let response = app
        .request(
            reqwest::Method::POST,
            &format!("/v1/users/{orphan}/repair"),
            &secret_key(),
        )
        .json(&json!({}))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 200);
    let done: Value = response.json().await.unwrap();
    assert_eq!(
        (done["kind"].as_str(), done["action"].as_str()),
        (Some("orphaned"), Some("provision"))
    );
    assert_eq!(done["repaired"], true);
    assert_eq!(calls_for(&fake, orphan).len(), 1);
    assert!(calls_for(&fake, other).is_empty());
    assert_eq!(
        app.events_of(orphan).await,
        [("orphaned".to_owned(), "provisioned".to_owned())]
    );
}
