//! A user deleted while usersync writes their profile stays deleted. Supabase Auth's soft
//! delete (and, through the trigger under the `delete` policy, the profile's removal) commits
//! while a run's chunk or a sync-one is between its snapshot and its write: the write must not
//! bring the profile back, nor record a second `created`. And a profile the app commits while a
//! run creates the same user's is left as the app wrote it. Deterministic: the other
//! transaction is held open until the writer has either finished or is seen waiting on it.

use std::time::Duration;

use serde_json::json;
use uuid::Uuid;

use usersync::vocabulary::policy::DeletedPolicy;

use crate::gotrue;
use crate::helpers::*;

/// An app whose runs and trigger delete deleted users' profiles.
async fn spawn_deleting() -> TestApp {
    let app = spawn_app_with(
        AppOptions {
            reconcile: usersync::config::ReconcileConfig {
                deleted: usersync::config::PolicyConfig {
                    deleted: DeletedPolicy::Delete,
                },
                max_delete_share: 1.0,
                ..Default::default()
            },
            ..AppOptions::default()
        },
        |_| async {},
    )
    .await;
    install_triggers(&app.db.pool, None, DeletedPolicy::Delete).await;
    app
}

/// A user signed up through Supabase Auth, whose profile the trigger made.
async fn signed_up(app: &TestApp, email: &str) -> Uuid {
    let id = gotrue::sign_up(&app.db.auth_admin, &gotrue::SignUp::new(email))
        .await
        .unwrap();
    assert!(app.target_row(id).await.is_some());
    id
}

/// Soft-deletes `id` as Supabase Auth does, by hand so that the transaction stays open: the
/// `UPDATE` of `deleted_at`, then its deferred trigger, fired now (`set constraints all
/// immediate`), which removes the profile. That is where a commit stands between its
/// triggers and the end. Returns the open transaction.
async fn begin_soft_delete(app: &TestApp, id: Uuid) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut tx = app.db.auth_admin.begin().await.unwrap();
    sqlx::query(
        "update users set deleted_at = now(), email = null, updated_at = now() where id = $1",
    )
    .bind(id)
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query("set constraints all immediate")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx
}

/// Waits until `done` holds or some session of the test's database waits on a lock (the
/// writer blocked on the open delete), for at most ten seconds.
async fn until_done_or_waiting<F, Fut>(app: &TestApp, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let db = app.db.superuser.clone();
    let name = app.db.name.clone();
    eventually(Duration::from_secs(10), "the writer to finish or wait", || {
        let (db, name) = (db.clone(), name.clone());
        let finished = done();
        async move {
            let waiting: i64 = sqlx::query_scalar(
                "select count(*) from pg_stat_activity where datname = $1 and wait_event_type = 'Lock'",
            )
            .bind(name)
            .fetch_one(&db)
            .await
            .unwrap();
            waiting > 0 || finished.await
        }
    })
    .await;
}

/// Starts a run while `open` holds what the run will meet, waits until the run has finished or
/// waits on it, commits `open`, and returns the finished run.
async fn run_while_open(
    app: &TestApp,
    open: sqlx::Transaction<'static, sqlx::Postgres>,
) -> serde_json::Value {
    let response = app
        .start_run(&json!({"dry_run": false}), &secret_key())
        .await;
    assert_eq!(response.status(), 202);
    let run: serde_json::Value = response.json().await.unwrap();
    let id = run["id"].as_str().unwrap().to_owned();
    until_done_or_waiting(app, || {
        let id = id.clone();
        async move {
            let run: serde_json::Value =
                app.get_run(&id, &secret_key()).await.json().await.unwrap();
            !matches!(run["state"].as_str(), Some("planning" | "running"))
        }
    })
    .await;
    open.commit().await.unwrap();
    app.wait_for_run(&id).await
}

/// The app's own insert of `id`'s profile (as a client-side upsert would), left open.
async fn begin_app_profile(app: &TestApp, id: Uuid) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut tx = app.db.superuser.begin().await.unwrap();
    sqlx::query(
        "insert into public.users (id, email, full_name) values ($1, 'raced@example.com', 'by the app')",
    )
    .bind(id)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx
}

/// How many `created` events `id` has.
async fn created_events(app: &TestApp, id: Uuid) -> usize {
    app.events_of(id)
        .await
        .iter()
        .filter(|(_, action)| action == "created")
        .count()
}

#[tokio::test]
async fn a_run_does_not_bring_back_a_user_deleted_while_its_chunk_runs() {
    let app = spawn_deleting().await;
    let deleted = signed_up(&app, "leaving@example.com").await;
    // A user with no profile, so that the run has something to create.
    let missing = app
        .insert_auth_user(&AuthUser::new("missing@example.com"))
        .await;

    let delete = begin_soft_delete(&app, deleted).await;
    let run = run_while_open(&app, delete).await;

    assert_eq!(run["state"], "succeeded", "{run}");
    assert!(app.target_row(missing).await.is_some(), "{run}");
    assert!(app.target_row(deleted).await.is_none(), "{run}");
    assert_eq!(created_events(&app, deleted).await, 1);
}

/// A sync-one of a user whose deletion is in flight, with the profile as it was (`stale`
/// false) or one column behind: either way the deletion wins.
async fn a_sync_during_a_delete(stale: bool) {
    let app = spawn_deleting().await;
    let deleted = signed_up(&app, "leaving@example.com").await;
    if stale {
        app.exec(&format!(
            "update public.users set email = 'old@example.com' where id = '{deleted}'"
        ))
        .await;
    }

    let delete = begin_soft_delete(&app, deleted).await;
    let sync = spawn_sync_me(&app.address, deleted);
    until_done_or_waiting(&app, || std::future::ready(sync.is_finished())).await;
    delete.commit().await.unwrap();
    let (status, body) = sync.await.unwrap();

    assert_eq!(status, 200, "{body}");
    assert!(app.target_row(deleted).await.is_none(), "{body}");
    assert_eq!(created_events(&app, deleted).await, 1);
}

#[tokio::test]
async fn a_sync_does_not_bring_back_a_user_deleted_while_it_runs() {
    a_sync_during_a_delete(false).await;
}

#[tokio::test]
async fn a_sync_of_a_stale_profile_does_not_bring_back_a_user_deleted_while_it_runs() {
    a_sync_during_a_delete(true).await;
}

/// A profile the app commits while a run's chunk creates the same user's: the chunk's insert
/// (which reads "no profile" in its snapshot, without `on conflict`) meets the new row's key,
/// and the chunk runs again guarded. The app's profile stays, the run records no `created`
/// for that user, fails nothing, and creates every other missing profile.
#[tokio::test]
async fn a_run_leaves_alone_a_profile_the_app_made_while_its_chunk_runs() {
    let app = spawn_app().await;
    let raced = app
        .insert_auth_user(&AuthUser::new("raced@example.com"))
        .await;
    let missing = app
        .insert_auth_user(&AuthUser::new("missing@example.com"))
        .await;

    let app_write = begin_app_profile(&app, raced).await;
    let run = run_while_open(&app, app_write).await;

    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["progress"]["failed"], json!({}), "{run}");
    assert_eq!(run["progress"]["repaired"], json!({"missing": 1}), "{run}");
    assert!(app.target_row(missing).await.is_some(), "{run}");
    assert_eq!(
        app.target_row(raced).await.unwrap()["full_name"],
        "by the app"
    );
    assert_eq!(created_events(&app, raced).await, 0);
    assert_eq!(created_events(&app, missing).await, 1);
}

/// The same race for a one-user repair, whose chunk is that user's row alone: the guarded
/// create skips the app's profile (halving the chunk could not), and the repair answers that
/// the user changed while it ran, not with the unique violation.
#[tokio::test]
async fn a_repair_leaves_alone_a_profile_the_app_made_while_it_runs() {
    let app = spawn_app().await;
    let raced = app
        .insert_auth_user(&AuthUser::new("raced@example.com"))
        .await;

    let app_write = begin_app_profile(&app, raced).await;
    let repair = app
        .request(
            reqwest::Method::POST,
            &format!("/v1/users/{raced}/repair"),
            &secret_key(),
        )
        .json(&json!({}))
        .send();
    let repair = tokio::spawn(async move {
        let response = repair.await.unwrap();
        (
            response.status(),
            response.json::<serde_json::Value>().await.unwrap(),
        )
    });
    until_done_or_waiting(&app, || std::future::ready(repair.is_finished())).await;
    app_write.commit().await.unwrap();
    let (status, body) = repair.await.unwrap();

    assert_eq!(status, 422, "{body}");
    assert_eq!(body["code"], "repair_failed", "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("the user changed while the repair ran"),
        "{body}"
    );
    assert_eq!(created_events(&app, raced).await, 0);
    assert_eq!(
        app.target_row(raced).await.unwrap()["full_name"],
        "by the app"
    );
}
