//! One user's bad metadata fails that user alone. Anyone can write their own user_metadata
//! (`auth.updateUser({ data })`); a mapping that sends it into a typed column (`credits
//! integer`) meets values that do not cast. Every other user is synced, every listing answers,
//! and the value itself is never copied into a run, a dead letter, a response or a log.

use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::*;
use usersync::compiler::mapping::DEFAULT_MAPPING_TOML;
use usersync::vocabulary::policy::DeletedPolicy;

const BAD: &str = "12; drop table x";

/// The built-in mapping plus `credits` from user_metadata, following the source, with `extra`
/// settings for it.
fn credits_mapping(extra: &str) -> tempfile::NamedTempFile {
    mapping_file(&format!(
        "{DEFAULT_MAPPING_TOML}\n[columns.credits]\nuser_metadata = [\"credits\"]\n\
         sync = \"always\"\n{extra}\n"
    ))
}

/// The app, over `public.users` grown an `integer` credits column.
async fn spawn_with_credits(extra: &str, options: AppOptions) -> TestApp {
    let mapping = credits_mapping(extra);
    let app = spawn_app_with(
        AppOptions {
            mapping: Some(mapping.path().to_owned()),
            ..options
        },
        |db| async move {
            sqlx::raw_sql("alter table public.users add column credits integer")
                .execute(&db)
                .await
                .unwrap();
        },
    )
    .await;
    app
}

/// Five users with good credits and one with `BAD`; returns the bad one.
async fn users(app: &TestApp) -> Uuid {
    for n in 0..5 {
        app.insert_auth_user(
            &AuthUser::new(&format!("good{n}@example.com")).user_metadata(json!({"credits": "5"})),
        )
        .await;
    }
    app.insert_auth_user(&AuthUser::new("bad@example.com").user_metadata(json!({"credits": BAD})))
        .await
}

async fn credits_of(app: &TestApp, id: Uuid) -> Option<Value> {
    app.target_row(id).await.map(|row| row["credits"].clone())
}

#[tokio::test]
async fn a_value_that_does_not_cast_fails_that_user_alone_in_a_run() {
    let app = spawn_with_credits("", AppOptions::default()).await;
    let bad = users(&app).await;

    let run = app.reconcile(json!({"dry_run": false})).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["progress"]["repaired"]["missing"], 5, "{run}");
    assert_eq!(run["progress"]["failed"]["missing"], 1, "{run}");
    let failure = &run["progress"]["failures"][0];
    assert_eq!(failure["id"], bad.to_string());
    let reason = failure["reason"].as_str().unwrap();
    assert!(reason.contains("column credits"), "{reason}");
    assert!(!run.to_string().contains("drop table"), "{run}");
    assert_eq!(app.target_count().await, 5);
    assert!(app.target_row(bad).await.is_none());

    // Once the user fixes their metadata, the next run creates them.
    sqlx::query("update auth.users set raw_user_meta_data = '{\"credits\": \"7\"}' where id = $1")
        .bind(bad)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let run = app.reconcile(json!({"dry_run": false})).await;
    assert_eq!(run["progress"]["repaired"]["missing"], 1, "{run}");
    assert_eq!(credits_of(&app, bad).await, Some(json!(7)));
}

#[tokio::test]
async fn listings_status_and_metrics_answer_for_everyone_and_sync_one_is_422_for_that_user() {
    let app = spawn_with_credits("", AppOptions::default()).await;
    let bad = users(&app).await;
    app.reconcile(json!({"dry_run": false})).await;
    // A synced user writes a bad value later: now it is a stale user that cannot be updated.
    let later = app
        .insert_auth_user(
            &AuthUser::new("later@example.com").user_metadata(json!({"credits": "1"})),
        )
        .await;
    assert_eq!(
        app.sync_user(&later.to_string(), &secret_key())
            .await
            .status(),
        200
    );
    sqlx::query("update auth.users set raw_user_meta_data = $2 where id = $1")
        .bind(later)
        .bind(json!({"credits": BAD}))
        .execute(&app.db.pool)
        .await
        .unwrap();

    let status = app.status(&secret_key()).await;
    assert_eq!(status.status(), 200);
    let status: Value = status.json().await.unwrap();
    assert_eq!(status["drift"]["missing"], 1, "{status}");
    assert_eq!(status["drift"]["stale"], 1, "{status}");
    for kind in ["missing", "stale"] {
        let page = app
            .list_drift(&format!("?kind={kind}"), &secret_key())
            .await;
        assert_eq!(page.status(), 200, "{kind}");
        assert!(!page.text().await.unwrap().contains("drop table"));
    }
    let metrics = app.get("/metrics").await;
    assert_eq!(metrics.status(), 200);
    assert!(!metrics.text().await.unwrap().contains("drop table"));

    for id in [bad, later] {
        let body = assert_problem(
            app.sync_user(&id.to_string(), &secret_key()).await,
            422,
            "invalid_value",
        )
        .await;
        let detail = body["detail"].as_str().unwrap();
        assert!(
            detail.contains("credits") && !detail.contains("drop"),
            "{detail}"
        );
        let own = app.sync_me(&user_token(id)).await;
        assert_problem(own, 422, "invalid_value").await;
    }
    assert_eq!(
        credits_of(&app, later).await,
        Some(json!(1)),
        "left as it was"
    );
}

#[tokio::test]
async fn the_trigger_records_a_dead_letter_naming_the_column_and_the_sign_up_commits() {
    let app = spawn_with_credits("", AppOptions::default()).await;
    install_triggers(
        &app.db.pool,
        Some(credits_mapping("").path()),
        DeletedPolicy::Report,
    )
    .await;
    let bad = users(&app).await;
    assert!(app.target_row(bad).await.is_none());
    let (error, sqlstate): (String, Option<String>) =
        sqlx::query_as("select error, sqlstate from usersync.dead_letters where user_id = $1")
            .bind(bad)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert!(error.contains("column credits"), "{error}");
    assert!(!error.contains("drop"), "{error}");
    assert_eq!(sqlstate, None);
    assert_eq!(
        app.target_count().await,
        5,
        "everyone else synced at commit"
    );
}

#[tokio::test]
async fn the_mapping_may_store_null_or_the_default_instead() {
    for (extra, expected) in [
        ("invalid = \"null\"", Value::Null),
        ("invalid = \"default\"\ndefault = \"0\"", json!(0)),
    ] {
        let app = spawn_with_credits(extra, AppOptions::default()).await;
        let bad = users(&app).await;
        let run = app.reconcile(json!({"dry_run": false})).await;
        assert_eq!(run["progress"]["repaired"]["missing"], 6, "{extra}: {run}");
        assert_eq!(credits_of(&app, bad).await, Some(expected), "{extra}");
        let good = app
            .insert_auth_user(
                &AuthUser::new("g@example.com").user_metadata(json!({"credits": "3"})),
            )
            .await;
        let response = app.sync_user(&good.to_string(), &secret_key()).await;
        assert_eq!(response.status(), 200);
        assert_eq!(credits_of(&app, good).await, Some(json!(3)));
    }
}

#[tokio::test]
async fn start_up_warns_about_metadata_into_a_typed_column_and_no_value_reaches_the_logs() {
    let db = TestDb::new().await;
    sqlx::raw_sql("alter table public.users add column credits integer")
        .execute(&db.pool)
        .await
        .unwrap();
    let mapping = credits_mapping("");
    let service = ServeProcess::start(
        &db.url(),
        &[
            ("USERSYNC_MAPPING", mapping.path().to_str().unwrap()),
            ("RUST_LOG", "usersync=debug"),
        ],
    )
    .await;
    let bad = AuthUser::new("bad@example.com").user_metadata(json!({"credits": BAD}));
    let bad = bad.insert(&db.pool).await;
    let client = reqwest::Client::new();
    let sync = client
        .post(format!("{}/v1/users/{bad}/sync", service.address))
        .header("apikey", SERVICE_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(sync.status(), 422);
    let run = client
        .post(format!("{}/v1/reconciliations", service.address))
        .header("apikey", SERVICE_KEY)
        .json(&json!({"dry_run": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(run.status(), 202);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let logs = service.stop();
    assert!(
        logs.contains("column `credits` takes metadata into integer"),
        "{logs}"
    );
    assert!(!logs.contains("drop table"), "{logs}");
}

#[tokio::test]
async fn a_value_a_constraint_of_the_target_refuses_fails_that_user_alone_in_a_run() {
    let app = spawn_with_credits("", AppOptions::default()).await;
    app.exec("alter table public.users add constraint credits_not_negative check (credits >= 0)")
        .await;
    // Enough users for several pages, so that the refused one is found by splitting a chunk.
    app.exec(
        "insert into auth.users (instance_id, id, aud, role, email, raw_app_meta_data,
             raw_user_meta_data, created_at, updated_at)
         select '00000000-0000-0000-0000-000000000000', gen_random_uuid(), 'authenticated',
                'authenticated', 'many' || g || '@example.com', '{}', '{\"credits\": \"5\"}',
                now(), now()
           from generate_series(1, 300) g",
    )
    .await;
    let negative = app
        .insert_auth_user(&AuthUser::new("neg@example.com").user_metadata(json!({"credits": "-5"})))
        .await;

    let run = app.reconcile(json!({"dry_run": false})).await;

    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["progress"]["repaired"]["missing"], 300, "{run}");
    assert_eq!(run["progress"]["failed"]["missing"], 1, "{run}");
    let failure = &run["progress"]["failures"][0];
    assert_eq!(failure["id"], negative.to_string());
    assert!(
        failure["reason"]
            .as_str()
            .unwrap()
            .contains("credits_not_negative"),
        "{failure}"
    );
    assert!(app.target_row(negative).await.is_none());
    assert_eq!(app.target_count().await, 300);
}
