//! Per-user drift and the project-wide status counts.

use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::*;

/// One user per drift kind, plus one in sync (shared with the reconciliation tests).
pub struct Seeded {
    pub in_sync: Uuid,
    pub missing: Uuid,
    pub stale: Uuid,
    pub mismatched_source: Uuid,
    pub mismatched_target: Uuid,
    pub orphaned: Uuid,
    pub deleted: Uuid,
}

pub async fn seed(app: &TestApp) -> Seeded {
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

async fn page(app: &TestApp, query: &str) -> Value {
    let response = app.list_drift(query, &secret_key()).await;
    assert_eq!(response.status(), 200, "{query}");
    response.json().await.unwrap()
}

#[tokio::test]
async fn each_kind_lists_its_rows() {
    let app = spawn_app().await;
    let s = seed(&app).await;
    for (kind, id) in [
        ("missing", s.missing),
        ("stale", s.stale),
        ("mismatched", s.mismatched_source),
        ("orphaned", s.orphaned),
        ("deleted", s.deleted),
    ] {
        let body = page(&app, &format!("?kind={kind}")).await;
        assert_eq!(body["kind"], kind);
        assert_eq!(body["next"], Value::Null);
        let items = body["items"].as_array().unwrap();
        assert_eq!(items.len(), 1, "{kind}: {body}");
        assert_eq!(items[0]["id"], id.to_string(), "{kind}");
    }
    let stale = page(&app, "?kind=stale").await;
    assert_eq!(stale["items"][0]["columns"], json!(["email"]));
    assert_eq!(stale["items"][0]["email"], "stale-new@example.com");
    let mismatched = page(&app, "?kind=mismatched").await;
    assert_eq!(
        mismatched["items"][0]["target_ids"],
        json!([s.mismatched_target.to_string()])
    );
}

#[tokio::test]
async fn drift_pages_follow_the_cursor_in_id_order() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            app.insert_auth_user(&AuthUser::new(&format!("p{i}@example.com")))
                .await,
        );
    }
    ids.sort();
    let mut seen = Vec::new();
    let mut query = "?kind=missing&limit=2".to_owned();
    loop {
        let body = page(&app, &query).await;
        for item in body["items"].as_array().unwrap() {
            seen.push(Uuid::parse_str(item["id"].as_str().unwrap()).unwrap());
        }
        match body["next"].as_str() {
            Some(next) => query = format!("?kind=missing&limit=2&after={next}"),
            None => break,
        }
    }
    assert_eq!(seen, ids);
}

#[tokio::test]
async fn listing_counts_agree_with_the_status_counts() {
    let app = spawn_app().await;
    seed(&app).await;
    // A second lonely user whose email two stray profiles hold is one mismatch, ambiguous.
    app.insert_auth_user(&AuthUser::new("dup@example.com"))
        .await;
    app.insert_profile(Uuid::new_v4(), Some("dup@example.com"))
        .await;
    app.insert_profile(Uuid::new_v4(), Some("DUP@example.com"))
        .await;
    let status: Value = app.status(&secret_key()).await.json().await.unwrap();
    for kind in ["missing", "stale", "mismatched", "orphaned", "deleted"] {
        let listed = page(&app, &format!("?kind={kind}&limit=1000")).await["items"]
            .as_array()
            .unwrap()
            .len();
        assert_eq!(
            status["drift"][kind].as_i64().unwrap(),
            listed as i64,
            "{kind}"
        );
    }
    assert_eq!(status["drift"]["mismatched"], 2);
}

#[tokio::test]
async fn bad_drift_queries_are_400_and_users_are_403() {
    let app = spawn_app().await;
    for query in [
        "",
        "?kind=bogus",
        "?kind=missing&limit=0",
        "?kind=missing&limit=1001",
        "?kind=missing&after=not-a-uuid",
        "?kind=missing&colour=blue",
    ] {
        let response = app.list_drift(query, &secret_key()).await;
        assert_problem(response, 400, "invalid_query").await;
    }
    let id = app.insert_auth_user(&AuthUser::new("u@example.com")).await;
    let response = app.list_drift("?kind=missing", &user_token(id)).await;
    assert_problem(response, 403, "service_only").await;
}
