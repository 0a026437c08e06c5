//! The `rekey` repair: the same person under two ids becomes one, with every reference moved.

use serde_json::{json, Value};
use uuid::Uuid;

use usersync::config::ReconcileConfig;
use usersync::vocabulary::policy::MismatchedPolicy;

use crate::helpers::*;

/// An app with `rekey` on and tables that point at `public.users` from another schema, with
/// the `on update` actions an in-place key change must survive.
async fn spawn_rekeying(extra_sql: &'static str) -> TestApp {
    spawn_app_with(
        AppOptions {
            reconcile: ReconcileConfig {
                mismatched: MismatchedPolicy::Rekey,
                ..ReconcileConfig::default()
            },
            ..AppOptions::default()
        },
        |db| async move {
            sqlx::raw_sql(
                "create schema billing;
                 create table billing.invoices (
                     id serial primary key,
                     user_id uuid not null constraint invoices_user_id_fkey
                         references public.users (id)
                 );
                 create table public.notes (
                     id serial primary key,
                     author uuid constraint notes_author_fkey
                         references public.users (id) on update set null on delete cascade
                 );",
            )
            .execute(&db)
            .await
            .unwrap();
            sqlx::raw_sql(extra_sql).execute(&db).await.unwrap();
        },
    )
    .await
}

/// A live auth user with no profile, and the profile the app made for them under another id,
/// with two invoices and a note.
async fn same_person_twice(app: &TestApp) -> (Uuid, Uuid) {
    let source = app
        .insert_auth_user(&AuthUser::new("twice@example.com"))
        .await;
    let target = Uuid::new_v4();
    app.insert_profile(target, Some("TWICE@example.com")).await;
    app.exec(&format!(
        "insert into billing.invoices (user_id) values ('{target}'), ('{target}');
         insert into public.notes (author) values ('{target}');"
    ))
    .await;
    (source, target)
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_dry_run_lists_the_rekey_with_its_tables_and_row_counts() {
    let app = spawn_rekeying("").await;
    let (source, target) = same_person_twice(&app).await;
    let before = app.target_snapshot().await;

    let run = app.reconcile(json!({"dry_run": true})).await;

    assert_eq!(
        run["plan"]["kinds"]["mismatched"],
        json!({"action": "rekey", "count": 1})
    );
    assert_eq!(
        run["plan"]["rekeys"],
        json!([{
            "source_id": source.to_string(),
            "target_id": target.to_string(),
            "references": [
                {"constraint": "invoices_user_id_fkey", "table": "billing.invoices",
                 "column": "user_id", "rows": 2},
                {"constraint": "notes_author_fkey", "table": "public.notes",
                 "column": "author", "rows": 1},
            ],
        }])
    );
    assert_eq!(app.target_snapshot().await, before);
}

#[tokio::test]
async fn rekey_moves_the_profile_and_every_reference_in_one_go() {
    let app = spawn_rekeying("").await;
    let (source, target) = same_person_twice(&app).await;

    let run = app.reconcile(json!({"dry_run": false})).await;

    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["progress"]["repaired"]["mismatched"], 1, "{run}");
    assert!(app.target_row(target).await.is_none());
    let row = app
        .target_row(source)
        .await
        .expect("the profile under the user's id");
    // The app's own data came along; the email now follows the source (a stale repair).
    assert_eq!(row["full_name"], "App Made");
    assert_eq!(row["email"], "twice@example.com");
    let moved = format!("'{source}'");
    assert_eq!(
        count(
            &app,
            &format!("select count(*) from billing.invoices where user_id = {moved}")
        )
        .await,
        2
    );
    // `on update set null` did not null the note: it points at the new id.
    assert_eq!(
        count(
            &app,
            &format!("select count(*) from public.notes where author = {moved}")
        )
        .await,
        1
    );
    assert_eq!(
        app.events_of(source).await,
        [
            ("mismatched".to_owned(), "rekeyed".to_owned()),
            ("stale".to_owned(), "updated".to_owned())
        ]
    );
    let (before, after): (Value, Value) = sqlx::query_as(
        "select before, after from usersync.repairs where user_id = $1 and action = 'rekeyed'",
    )
    .bind(source)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(before["id"], target.to_string());
    assert_eq!(after["id"], source.to_string());
    let drift: Value = app
        .drift(&source.to_string(), &secret_key())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(drift, json!({"in_sync": true, "drift": []}));

    let again = app.reconcile(json!({"dry_run": false})).await;
    assert_eq!(again["progress"]["repaired"], json!({}));
}

#[tokio::test]
async fn a_composite_reference_is_refused_naming_the_constraint() {
    let app = spawn_rekeying(
        "alter table public.users add constraint users_id_email_key unique (id, email);
         create schema audit;
         create table audit.logins (
             user_id uuid, email text,
             constraint logins_user_fkey foreign key (user_id, email)
                 references public.users (id, email)
         );",
    )
    .await;
    let (source, target) = same_person_twice(&app).await;
    let before = app.target_snapshot().await;

    let dry = app.reconcile(json!({"dry_run": true})).await;
    let refused = dry["plan"]["rekeys"][0]["refused"].as_str().unwrap();
    assert!(refused.contains("logins_user_fkey"), "{refused}");

    let run = app.reconcile(json!({"dry_run": false})).await;
    assert_eq!(run["progress"]["failed"]["mismatched"], 1, "{run}");
    let failure = &run["progress"]["failures"][0];
    assert_eq!(failure["id"], source.to_string());
    assert!(failure["reason"]
        .as_str()
        .unwrap()
        .contains("logins_user_fkey"));
    assert!(app.target_row(target).await.is_some());
    assert_eq!(app.target_snapshot().await, before);
}

#[tokio::test]
async fn an_ambiguous_mismatch_is_reported_not_guessed() {
    let app = spawn_rekeying("").await;
    let source = app
        .insert_auth_user(&AuthUser::new("twins@example.com"))
        .await;
    app.insert_profile(Uuid::new_v4(), Some("twins@example.com"))
        .await;
    app.insert_profile(Uuid::new_v4(), Some("Twins@example.com"))
        .await;

    let run = app.reconcile(json!({"dry_run": false})).await;

    assert_eq!(run["progress"]["failed"]["mismatched"], 1, "{run}");
    assert!(run["progress"]["failures"][0]["reason"]
        .as_str()
        .unwrap()
        .starts_with("ambiguous"));
    assert!(app.target_row(source).await.is_none());
    assert_eq!(app.target_count().await, 2);
}
