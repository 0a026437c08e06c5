//! `POST /v1/hooks/database`: Supabase Database Webhooks on `auth.users` as sync signals.

use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::*;
use usersync::vocabulary::policy::DeletedPolicy;

const WEBHOOK_SECRET: &str = "whsec-test-0123456789abcdef0123456789";
const PASSWORD_HASH: &str = "$2a$10$PAYLOADHASHpayloadhashPAYLOADHASHpayloadhash012";

/// The body `supabase_functions.http_request` sends: the whole row, secrets included.
fn payload(op: &str, id: Uuid, email: &str) -> Value {
    let row = json!({
        "id": id,
        "email": email,
        "encrypted_password": PASSWORD_HASH,
        "raw_app_meta_data": {"provider": "email", "role": "admin"},
        "raw_user_meta_data": {"full_name": "Forged"},
        "confirmation_token": "tok",
    });
    let (record, old_record) = match op {
        "INSERT" => (row, Value::Null),
        "UPDATE" => (row.clone(), row),
        _ => (Value::Null, row),
    };
    json!({"type": op, "table": "users", "schema": "auth", "record": record, "old_record": old_record})
}

fn with_secret(secret: &str) -> Auth {
    Auth::Header("x-usersync-webhook-secret", secret.to_owned())
}

async fn action_of(response: reqwest::Response) -> String {
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["action"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn an_insert_webhook_syncs_the_user_as_auth_users_has_it_not_as_the_payload_says() {
    let app = spawn_app().await;
    let id = app
        .insert_auth_user(&AuthUser::new("real@example.com"))
        .await;

    let response = app
        .hook(&payload("INSERT", id, "forged@example.com"), &secret_key())
        .await;
    assert_eq!(action_of(response).await, "created");

    let row = app.target_row(id).await.unwrap();
    assert_eq!(row["email"], "real@example.com");
    assert_eq!(
        row["role"], "user",
        "nothing but the id is read from the payload"
    );
    assert_eq!(row["full_name"], Value::Null);
    assert_eq!(
        events_of(&app.db.pool, id).await,
        [("hook".into(), "missing".into(), "created".into())]
    );
    // Nothing of the payload is stored.
    let stored: i64 = sqlx::query_scalar(
        "select count(*) from usersync.repairs e
          where e::text like '%' || $1 || '%' or e::text like '%Forged%'",
    )
    .bind(&PASSWORD_HASH[7..20])
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(stored, 0);

    let again = app
        .hook(&payload("UPDATE", id, "real@example.com"), &service_token())
        .await;
    assert_eq!(action_of(again).await, "unchanged");
}

#[tokio::test]
async fn the_webhook_secret_or_the_service_may_call_and_nobody_else() {
    let app = spawn_app_with(
        AppOptions {
            webhook_secret: Some(WEBHOOK_SECRET.into()),
            ..AppOptions::default()
        },
        |_| async {},
    )
    .await;
    let id = app
        .insert_auth_user(&AuthUser::new("who@example.com"))
        .await;
    let body = payload("INSERT", id, "who@example.com");

    assert_eq!(
        action_of(app.hook(&body, &with_secret(WEBHOOK_SECRET)).await).await,
        "created"
    );
    let wrong = app
        .hook(&body, &with_secret("whsec-not-the-one-0123456789abcdef"))
        .await;
    assert_problem(wrong, 401, "invalid_webhook_secret").await;
    assert_problem(
        app.hook(&body, &Auth::None).await,
        401,
        "missing_credentials",
    )
    .await;
    assert_problem(app.hook(&body, &user_token(id)).await, 403, "service_only").await;
}

#[tokio::test]
async fn without_a_configured_secret_the_secret_header_is_refused() {
    let app = spawn_app().await;
    let id = app
        .insert_auth_user(&AuthUser::new("nosecret@example.com"))
        .await;
    let response = app
        .hook(
            &payload("INSERT", id, "x@example.com"),
            &with_secret(WEBHOOK_SECRET),
        )
        .await;
    assert_problem(response, 401, "invalid_webhook_secret").await;
    assert!(app.target_row(id).await.is_none());
}

#[tokio::test]
async fn a_delete_webhook_applies_the_deleted_policy() {
    for (policy, action, kept) in [
        (DeletedPolicy::Report, "reported", true),
        (DeletedPolicy::Delete, "deleted", false),
    ] {
        let app = spawn_app_with(
            AppOptions {
                policy,
                ..AppOptions::default()
            },
            |_| async {},
        )
        .await;
        let id = app
            .insert_auth_user(&AuthUser::new("bye@example.com"))
            .await;
        assert_eq!(
            app.sync_user(&id.to_string(), &secret_key()).await.status(),
            200
        );
        sqlx::query("delete from auth.users where id = $1")
            .bind(id)
            .execute(&app.db.pool)
            .await
            .unwrap();

        let response = app
            .hook(&payload("DELETE", id, "bye@example.com"), &secret_key())
            .await;
        assert_eq!(action_of(response).await, action);
        assert_eq!(app.target_row(id).await.is_some(), kept, "{policy:?}");
        let last = events_of(&app.db.pool, id).await.pop().unwrap();
        assert_eq!(last, ("hook".into(), "deleted".into(), action.into()));

        // A redelivery records nothing new.
        let before = events_of(&app.db.pool, id).await.len();
        app.hook(&payload("DELETE", id, "bye@example.com"), &secret_key())
            .await;
        assert_eq!(events_of(&app.db.pool, id).await.len(), before);
    }
}

#[tokio::test]
async fn a_delete_signal_removes_only_the_profile_of_a_deleted_user() {
    let app = spawn_app_with_options(AppOptions {
        policy: DeletedPolicy::Delete,
        ..AppOptions::default()
    })
    .await;
    let db = &app.db.pool;
    // Mismatched: a stray profile holding the email of a live auth user without a profile.
    app.insert_auth_user(&AuthUser::new("lonely@example.com"))
        .await;
    let mismatched = Uuid::new_v4();
    app.insert_profile(mismatched, Some("lonely@example.com"))
        .await;
    // Orphaned: a profile the app made, with no auth user and no history.
    let orphaned = Uuid::new_v4();
    app.insert_profile(orphaned, Some("orphan@example.com"))
        .await;
    // Never synced: the app made the profile of a user who was then hard-deleted; usersync
    // never knew them.
    let unknown = app
        .insert_auth_user(&AuthUser::new("unknown@example.com"))
        .await;
    app.insert_profile(unknown, Some("unknown@example.com"))
        .await;
    sqlx::query("delete from auth.users where id = $1")
        .bind(unknown)
        .execute(db)
        .await
        .unwrap();
    let events = app.event_count().await;
    let rows = app.target_snapshot().await;

    for id in [mismatched, orphaned, unknown, Uuid::new_v4()] {
        let response = app
            .hook(&payload("DELETE", id, "forged@example.com"), &secret_key())
            .await;
        assert_eq!(action_of(response).await, "unchanged", "{id}");
    }
    assert_eq!(app.target_snapshot().await, rows, "no profile went");
    assert_eq!(app.event_count().await, events, "nothing was recorded");

    // A soft-deleted user's profile is a deleted user's, signal or not.
    let mut soft = AuthUser::new("soft@example.com");
    soft.deleted = true;
    let soft = app.insert_auth_user(&soft).await;
    app.insert_profile(soft, Some("soft@example.com")).await;
    let response = app
        .hook(&payload("UPDATE", soft, "soft@example.com"), &secret_key())
        .await;
    assert_eq!(action_of(response).await, "deleted");
    assert!(app.target_row(soft).await.is_none());
}

#[tokio::test]
async fn a_random_id_records_nothing_under_the_report_policy() {
    let app = spawn_app().await;
    for op in ["DELETE", "UPDATE", "INSERT"] {
        let response = app
            .hook(&payload(op, Uuid::new_v4(), "x@example.com"), &secret_key())
            .await;
        assert_eq!(action_of(response).await, "unchanged", "{op}");
    }
    assert_eq!(app.event_count().await, 0);
}

#[tokio::test]
async fn a_late_insert_webhook_for_a_deleted_user_creates_nothing() {
    let app = spawn_app().await;
    let mut user = AuthUser::new("late@example.com");
    user.deleted = true;
    let id = app.insert_auth_user(&user).await;
    let response = app
        .hook(&payload("INSERT", id, "late@example.com"), &secret_key())
        .await;
    assert_eq!(action_of(response).await, "reported");
    assert!(app.target_row(id).await.is_none());
}

#[tokio::test]
async fn payloads_that_are_not_about_an_auth_user_are_refused() {
    let app = spawn_app().await;
    let id = Uuid::new_v4();
    let mut other_table = payload("INSERT", id, "x@example.com");
    other_table["table"] = json!("profiles");
    other_table["schema"] = json!("public");
    assert_problem(
        app.hook(&other_table, &secret_key()).await,
        422,
        "unknown_table",
    )
    .await;
    let cases = [
        (
            json!({"type": "TRUNCATE", "table": "users", "schema": "auth"}),
            "invalid_body",
        ),
        (
            json!({"type": "INSERT", "table": "users", "schema": "auth", "record": {"email": "x"}}),
            "invalid_body",
        ),
        (
            json!({"type": "INSERT", "table": "users", "schema": "auth", "record": {"id": 42}}),
            "invalid_body",
        ),
        (
            json!({"type": "DELETE", "table": "users", "schema": "auth", "record": {"id": id}}),
            "invalid_body",
        ),
        (json!(["not", "a", "payload"]), "invalid_body"),
    ];
    for (body, code) in cases {
        assert_problem(app.hook(&body, &secret_key()).await, 400, code).await;
    }
    // Malformed JSON is refused by position, without quoting the body back.
    let response = app
        .request(reqwest::Method::POST, "/v1/hooks/database", &secret_key())
        .body(format!(
            r#"{{"type": "INSERT", "record": {{"encrypted_password": "{PASSWORD_HASH}"#
        ))
        .send()
        .await
        .unwrap();
    let problem = assert_problem(response, 400, "invalid_body").await;
    assert!(!problem.to_string().contains("PAYLOADHASH"), "{problem}");
}

#[tokio::test]
async fn the_payload_never_reaches_the_logs() {
    let db = TestDb::new().await;
    let id = AuthUser::new("logged@example.com").insert(&db.pool).await;
    let serve = ServeProcess::start(&db.url(), &[("RUST_LOG", "trace")]).await;
    let response = reqwest::Client::new()
        .post(format!("{}/v1/hooks/database", serve.address))
        .header("apikey", SERVICE_KEY)
        .json(&payload("INSERT", id, "logged@example.com"))
        .send()
        .await
        .unwrap();
    assert_eq!(action_of(response).await, "created");
    let logs = serve.stop();
    assert_eq!(
        logs.lines()
            .filter(|l| l.contains("database webhook handled"))
            .count(),
        1,
        "{logs}"
    );
    for secret in ["PAYLOADHASH", "Forged", SERVICE_KEY] {
        assert!(!logs.contains(secret), "{secret} was logged");
    }
}
