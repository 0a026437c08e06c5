//! The `provision` repair against a stand-in for the Supabase Auth admin API.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use usersync::config::ReconcileConfig;
use usersync::sync::policy::OrphanedPolicy;

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

async fn spawn_provisioning() -> (TestApp, FakeAuth) {
    let fake = FakeAuth::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let router = axum::Router::new()
        .route("/auth/v1/admin/users", post(create_user))
        .with_state(fake.clone());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let db_slot = fake.db.clone();
    let app = spawn_app_with(
        AppOptions {
            reconcile: ReconcileConfig {
                orphaned: OrphanedPolicy::Provision,
                supabase_url: Some(format!("http://127.0.0.1:{port}")),
                supabase_service_key: Some(ADMIN_KEY.to_owned().into()),
                ..ReconcileConfig::default()
            },
            ..AppOptions::default()
        },
        |db| async move {
            *db_slot.lock().unwrap() = Some(db);
        },
    )
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
