//! Per-user drift and the project-wide status counts.

use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::*;

/// One user per drift kind, plus one in sync.
struct Seeded {
    in_sync: Uuid,
    missing: Uuid,
    stale: Uuid,
    mismatched_source: Uuid,
    mismatched_target: Uuid,
    orphaned: Uuid,
    deleted: Uuid,
}

async fn seed(app: &TestApp) -> Seeded {
    let db = &app.db.pool;
    let in_sync = app.insert_auth_user(&AuthUser::new("ok@example.com")).await;
    assert_eq!(
        app.sync_user(&in_sync.to_string(), &secret_key())
            .await
            .status(),
        200
    );
    let missing = app
        .insert_auth_user(&AuthUser::new("missing@example.com"))
        .await;
    let stale = app
        .insert_auth_user(&AuthUser::new("stale@example.com"))
        .await;
    assert_eq!(
        app.sync_user(&stale.to_string(), &secret_key())
            .await
            .status(),
        200
    );
    sqlx::query("update auth.users set email = 'stale-new@example.com' where id = $1")
        .bind(stale)
        .execute(db)
        .await
        .unwrap();
    let mismatched_source = app
        .insert_auth_user(&AuthUser::new("twice@example.com"))
        .await;
    let mismatched_target = Uuid::new_v4();
    sqlx::query("insert into public.users (id, email) values ($1, 'TWICE@example.com')")
        .bind(mismatched_target)
        .execute(db)
        .await
        .unwrap();
    let orphaned = Uuid::new_v4();
    sqlx::query("insert into public.users (id, email) values ($1, 'nobody@example.com')")
        .bind(orphaned)
        .execute(db)
        .await
        .unwrap();
    let deleted = app
        .insert_auth_user(&AuthUser::new("deleted@example.com"))
        .await;
    assert_eq!(
        app.sync_user(&deleted.to_string(), &secret_key())
            .await
            .status(),
        200
    );
    sqlx::query("update auth.users set deleted_at = now() where id = $1")
        .bind(deleted)
        .execute(db)
        .await
        .unwrap();
    Seeded {
        in_sync,
        missing,
        stale,
        mismatched_source,
        mismatched_target,
        orphaned,
        deleted,
    }
}

async fn drift_of(app: &TestApp, id: Uuid) -> Value {
    let response = app.drift(&id.to_string(), &secret_key()).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test]
async fn each_id_reports_its_own_drift_kind() {
    let app = spawn_app().await;
    let s = seed(&app).await;
    assert_eq!(
        drift_of(&app, s.in_sync).await,
        json!({"in_sync": true, "drift": []})
    );
    for (id, kind) in [
        (s.missing, "missing"),
        (s.stale, "stale"),
        (s.mismatched_source, "mismatched"),
        (s.mismatched_target, "mismatched"),
        (s.orphaned, "orphaned"),
        (s.deleted, "deleted"),
    ] {
        assert_eq!(
            drift_of(&app, id).await,
            json!({"in_sync": false, "drift": [kind]}),
            "{kind}"
        );
    }
    let response = app.drift(&Uuid::new_v4().to_string(), &secret_key()).await;
    assert_problem(response, 404, "user_not_found").await;
}

#[tokio::test]
async fn a_user_reads_their_own_drift() {
    let app = spawn_app().await;
    let id = app.insert_auth_user(&AuthUser::new("me@example.com")).await;
    let response = app.drift(&id.to_string(), &user_token(id)).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, json!({"in_sync": false, "drift": ["missing"]}));
}

#[tokio::test]
async fn status_counts_every_kind_and_both_totals() {
    let app = spawn_app().await;
    seed(&app).await;
    let response = app.status(&secret_key()).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["source_total"], 5);
    assert_eq!(body["target_total"], 5);
    assert_eq!(
        body["drift"],
        json!({"missing": 1, "stale": 1, "mismatched": 1, "orphaned": 1, "deleted": 1})
    );
    assert_eq!(body["dead_letters_pending"], 0);
    assert_eq!(body["last_run"], Value::Null);
}

#[tokio::test]
async fn syncing_a_missing_user_clears_its_drift_from_the_status() {
    let app = spawn_app().await;
    let id = app
        .insert_auth_user(&AuthUser::new("new@example.com"))
        .await;
    let before: Value = app.status(&service_token()).await.json().await.unwrap();
    assert_eq!(before["drift"]["missing"], 1);
    app.sync_me(&user_token(id)).await;
    let after: Value = app.status(&service_token()).await.json().await.unwrap();
    assert_eq!(after["drift"]["missing"], 0);
    assert_eq!(after["target_total"], 1);
}
