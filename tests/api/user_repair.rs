//! `POST /v1/users/{id}/repair` and `usersync repair`: exactly one repair of exactly one user,
//! as a run of one user.

use serde_json::{json, Value};
use uuid::Uuid;

use usersync::config::ReconcileConfig;
use usersync::vocabulary::policy::{DeletedPolicy, OrphanedPolicy};

use crate::helpers::*;

impl TestApp {
    async fn repair(&self, id: Uuid, body: Value, auth: &Auth) -> reqwest::Response {
        self.request(
            reqwest::Method::POST,
            &format!("/v1/users/{id}/repair"),
            auth,
        )
        .json(&body)
        .send()
        .await
        .unwrap()
    }

    /// A repair that must succeed: its outcome.
    async fn repaired(&self, id: Uuid, body: Value) -> Value {
        let response = self.repair(id, body, &secret_key()).await;
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }
}

/// Two users with no profile: one to repair, one to show that only that one is.
async fn two_missing(app: &TestApp) -> (Uuid, Uuid) {
    (
        app.insert_auth_user(&AuthUser::new("ada@example.com"))
            .await,
        app.insert_auth_user(&AuthUser::new("bob@example.com"))
            .await,
    )
}

#[tokio::test]
async fn a_dry_run_says_what_one_repair_would_do_and_the_repair_does_it_to_that_user_alone() {
    let app = spawn_app().await;
    let (ada, bob) = two_missing(&app).await;

    let dry = app.repaired(ada, json!({"dry_run": true})).await;

    assert_eq!(dry["kind"], "missing");
    assert_eq!(dry["action"], "create");
    assert_eq!(dry["repaired"], false);
    assert_eq!(dry["run"]["options"]["user_id"], ada.to_string());
    assert_eq!(
        dry["run"]["plan"]["kinds"]["missing"],
        json!({"action": "create", "count": 1})
    );
    assert!(app.target_row(ada).await.is_none());
    assert_eq!(app.event_count().await, 0);

    let done = app.repaired(ada, json!({})).await;

    assert_eq!(done["repaired"], true, "{done}");
    assert_eq!(done["run"]["state"], "succeeded");
    assert_eq!(done["run"]["progress"]["repaired"], json!({"missing": 1}));
    assert_eq!(
        app.target_row(ada).await.unwrap()["email"],
        "ada@example.com"
    );
    assert!(app.target_row(bob).await.is_none());
    // The run's audit, as any run's: a batch event under the run's id.
    let (path, action, run_id): (String, String, Option<Uuid>) =
        sqlx::query_as("select path, action, run_id from usersync.repairs where user_id = $1")
            .bind(ada)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!((path.as_str(), action.as_str()), ("batch", "created"));
    assert_eq!(run_id.unwrap().to_string(), done["run"]["id"]);
    let runs: Value = app.list_runs("", &secret_key()).await.json().await.unwrap();
    assert!(runs.to_string().contains(&ada.to_string()), "{runs}");
}

#[tokio::test]
async fn a_stale_profile_is_updated_and_a_deleted_users_profile_deleted_when_asked() {
    let app = spawn_app().await;
    let (ada, bob) = two_missing(&app).await;
    app.reconcile(json!({"dry_run": false})).await;
    app.exec("update public.users set email = 'old@example.com'")
        .await;
    app.exec(&format!(
        "update auth.users set deleted_at = now() where id = '{bob}'"
    ))
    .await;

    let stale = app.repaired(ada, json!({})).await;
    assert_eq!(
        (stale["kind"].as_str(), stale["action"].as_str()),
        (Some("stale"), Some("update"))
    );
    assert_eq!(
        app.target_row(ada).await.unwrap()["email"],
        "ada@example.com"
    );

    // The deleted policy is `report`: the repair must be named.
    let refused = app.repair(bob, json!({}), &secret_key()).await;
    assert_problem(refused, 409, "report_only").await;
    let deleted = app.repaired(bob, json!({"action": "delete"})).await;
    assert_eq!(deleted["kind"], "deleted");
    assert!(app.target_row(bob).await.is_none());
    assert_eq!(app.events_of(bob).await.last().unwrap().1, "deleted");
}

#[tokio::test]
async fn a_mismatched_profile_is_rekeyed_from_either_id_and_an_ambiguous_one_is_refused() {
    let app = spawn_app().await;
    let ada = app
        .insert_auth_user(&AuthUser::new("ada@example.com"))
        .await;
    let old_id = Uuid::new_v4();
    app.insert_profile(old_id, Some("ADA@example.com")).await;

    // The sync's 409 names the profile in the way and the repair that resolves it.
    let conflict = app.sync_user(&ada.to_string(), &secret_key()).await;
    let problem = assert_problem(conflict, 409, "email_conflict").await;
    assert_eq!(problem["profile_id"], old_id.to_string());
    assert_eq!(
        problem["repair"],
        json!({"path": format!("/v1/users/{ada}/repair"), "body": {"action": "rekey"}})
    );
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains(&old_id.to_string()),
        "{problem}"
    );

    let dry = app
        .repaired(old_id, json!({"action": "rekey", "dry_run": true}))
        .await;
    assert_eq!(dry["user_id"], ada.to_string());
    assert_eq!(
        dry["run"]["plan"]["rekeys"][0]["target_id"],
        old_id.to_string()
    );
    assert!(app.target_row(ada).await.is_none());

    let done = app.repaired(ada, json!({"action": "rekey"})).await;
    assert_eq!(done["kind"], "mismatched");
    assert!(app.target_row(old_id).await.is_none());
    assert_eq!(app.target_row(ada).await.unwrap()["full_name"], "App Made");
    assert_eq!(
        app.sync_user(&ada.to_string(), &secret_key())
            .await
            .status(),
        200
    );

    let bob = app
        .insert_auth_user(&AuthUser::new("bob@example.com"))
        .await;
    app.insert_profile(Uuid::new_v4(), Some("bob@example.com"))
        .await;
    app.insert_profile(Uuid::new_v4(), Some("Bob@example.com"))
        .await;
    let before = app.target_snapshot().await;
    let ambiguous = app
        .repair(bob, json!({"action": "rekey"}), &secret_key())
        .await;
    assert_problem(ambiguous, 409, "ambiguous_email").await;
    assert_eq!(app.target_snapshot().await, before);
}

#[tokio::test]
async fn a_composite_foreign_key_refuses_the_rekey_up_front() {
    let app = spawn_app_with(AppOptions::default(), |db| async move {
        sqlx::raw_sql(
            "alter table public.users add constraint users_id_email_key unique (id, email);
             create table public.logins (
                 user_id uuid, email text,
                 constraint logins_user_fkey foreign key (user_id, email)
                     references public.users (id, email)
             );",
        )
        .execute(&db)
        .await
        .unwrap();
    })
    .await;
    let ada = app
        .insert_auth_user(&AuthUser::new("ada@example.com"))
        .await;
    app.insert_profile(Uuid::new_v4(), Some("ada@example.com"))
        .await;
    let before = app.target_snapshot().await;

    let refused = app
        .repair(ada, json!({"action": "rekey"}), &secret_key())
        .await;

    let problem = assert_problem(refused, 409, "rekey_refused").await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("logins_user_fkey"),
        "{problem}"
    );
    assert_eq!(app.target_snapshot().await, before);
}

#[tokio::test]
async fn refusals_say_why_with_a_stable_code_and_change_nothing() {
    let app = spawn_app().await;
    let (ada, bob) = two_missing(&app).await;
    app.repaired(bob, json!({})).await;
    let orphan = Uuid::new_v4();
    app.insert_profile(orphan, Some("olga@example.com")).await;
    let (before, events) = (app.target_snapshot().await, app.event_count().await);

    let cases = [
        (bob, json!({}), 409, "in_sync"),
        (ada, json!({"action": "update"}), 409, "action_does_not_fit"),
        (ada, json!({"action": "delete"}), 409, "action_does_not_fit"),
        (orphan, json!({}), 409, "report_only"),
        (orphan, json!({"action": "provision"}), 409, "no_admin_api"),
        (Uuid::new_v4(), json!({}), 404, "user_not_found"),
        (ada, json!({"action": "destroy"}), 400, "invalid_body"),
        (ada, json!({"dry_run": "yes"}), 400, "invalid_body"),
        (ada, json!({"force": true}), 400, "invalid_body"),
    ];
    for (id, body, status, code) in cases {
        assert_problem(app.repair(id, body, &secret_key()).await, status, code).await;
    }
    assert_problem(
        app.repair(ada, json!({}), &user_token(ada)).await,
        403,
        "service_only",
    )
    .await;
    assert_eq!(app.target_snapshot().await, before);
    assert_eq!(app.event_count().await, events);
}

#[tokio::test]
async fn a_repair_the_table_refuses_is_422_and_the_user_stays_missing() {
    let app = spawn_app().await;
    let (ada, _) = two_missing(&app).await;
    app.exec("alter table public.users add constraint no_ada check (email <> 'ada@example.com')")
        .await;

    let failed = app.repair(ada, json!({}), &secret_key()).await;

    let problem = assert_problem(failed, 422, "repair_failed").await;
    assert!(
        problem["detail"].as_str().unwrap().contains("no_ada"),
        "{problem}"
    );
    assert!(app.target_row(ada).await.is_none());
}

#[tokio::test]
async fn an_orphan_is_deleted_when_the_policy_says_so() {
    let app = spawn_app_with_options(AppOptions {
        reconcile: ReconcileConfig {
            orphaned: OrphanedPolicy::Delete,
            deleted: usersync::config::PolicyConfig {
                deleted: DeletedPolicy::Report,
            },
            ..ReconcileConfig::default()
        },
        ..AppOptions::default()
    })
    .await;
    let orphan = Uuid::new_v4();
    app.insert_profile(orphan, Some("olga@example.com")).await;
    let other = Uuid::new_v4();
    app.insert_profile(other, Some("otto@example.com")).await;
    // A source that reads empty is the run's guard against deleting blind: the repair fails
    // with the guard's reason, and deletes nothing.
    let blind = app.repair(orphan, json!({}), &secret_key()).await;
    let problem = assert_problem(blind, 422, "repair_failed").await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("auth.users reads empty"),
        "{problem}"
    );
    assert!(app.target_row(orphan).await.is_some());
    app.insert_auth_user(&AuthUser::new("ada@example.com"))
        .await;

    let done = app.repaired(orphan, json!({})).await;

    assert_eq!(
        (done["kind"].as_str(), done["action"].as_str()),
        (Some("orphaned"), Some("delete"))
    );
    assert!(app.target_row(orphan).await.is_none());
    assert!(app.target_row(other).await.is_some());
}

#[tokio::test]
async fn the_cli_repairs_one_user_by_email() {
    let app = spawn_app().await;
    let (ada, bob) = two_missing(&app).await;
    let url = app.db.url();
    let env = [("DATABASE_URL", url.as_str())];

    let (code, out, err) =
        usersync_cli(&["repair", "--email", "ADA@example.com", "--dry-run"], &env);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("would create {ada} (missing drift)")),
        "{out}"
    );
    assert!(app.target_row(ada).await.is_none());

    let (code, out, err) = usersync_cli(&["repair", "--email", "ada@example.com"], &env);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("repaired: create {ada}")), "{out}");
    assert!(app.target_row(ada).await.is_some());
    assert!(app.target_row(bob).await.is_none());

    let (code, _, err) = usersync_cli(&["repair", "--user", &ada.to_string()], &env);
    assert_ne!(code, 0);
    assert!(err.contains("in sync"), "{err}");
    let (code, _, err) = usersync_cli(&["repair", "--email", "nobody@example.com"], &env);
    assert_ne!(code, 0);
    assert!(err.contains("no auth user and no profile"), "{err}");
}
