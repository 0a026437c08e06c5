//! Reconciliation runs: plan, dry run, apply, policies, the guard, one run at a time, resume.

use serde_json::{json, Value};
use sqlx::Connection;
use uuid::Uuid;

use usersync::config::ReconcileConfig;
use usersync::vocabulary::policy::{DeletedPolicy, MissingPolicy, OrphanedPolicy, StalePolicy};

use crate::drift::seed;
use crate::helpers::*;

async fn spawn_with(reconcile: ReconcileConfig) -> TestApp {
    spawn_app_with(
        AppOptions {
            reconcile,
            ..AppOptions::default()
        },
        |_| async {},
    )
    .await
}

/// An app whose runs delete deleted users' profiles, with no mass-delete bound in the way.
async fn spawn_deleting() -> TestApp {
    spawn_with(ReconcileConfig {
        deleted: usersync::config::PolicyConfig {
            deleted: DeletedPolicy::Delete,
        },
        max_delete_share: 1.0,
        ..ReconcileConfig::default()
    })
    .await
}

/// `kind -> count` of a run's plan.
fn planned(run: &Value) -> Value {
    let kinds = run["plan"]["kinds"].as_object().unwrap();
    kinds
        .iter()
        .map(|(k, v)| (k.clone(), v["count"].clone()))
        .collect()
}

#[tokio::test]
async fn a_dry_run_plans_every_kind_and_writes_nothing() {
    let app = spawn_app().await;
    seed(&app).await;
    let before = app.target_snapshot().await;
    let events = app.event_count().await;

    let run = app.reconcile(json!({"dry_run": true})).await;

    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(
        run["plan"]["kinds"],
        json!({
            "missing": {"action": "create", "count": 1},
            "stale": {"action": "update", "count": 1},
            "mismatched": {"action": "report", "count": 1},
            "orphaned": {"action": "report", "count": 1},
            "deleted": {"action": "report", "count": 1},
        })
    );
    assert_eq!(run["plan"]["source_total"], 5);
    assert_eq!(run["plan"]["target_total"], 5);
    assert_eq!(run["progress"]["chunks"], 0);
    assert_eq!(app.target_snapshot().await, before);
    assert_eq!(app.event_count().await, events);
}

#[tokio::test]
async fn an_applied_run_repairs_missing_and_stale_and_records_each_repair() {
    let app = spawn_app().await;
    let s = seed(&app).await;

    let run = app.reconcile(json!({"dry_run": false})).await;

    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(
        run["progress"]["repaired"],
        json!({"missing": 1, "stale": 1})
    );
    assert_eq!(run["progress"]["walked"], run["plan"]["source_total"]);
    assert_eq!(
        app.target_row(s.missing).await.unwrap()["email"],
        "missing@example.com"
    );
    assert_eq!(
        app.target_row(s.stale).await.unwrap()["email"],
        "stale-new@example.com"
    );
    // Reported kinds are left as they are.
    assert!(app.target_row(s.orphaned).await.is_some());
    assert!(app.target_row(s.deleted).await.is_some());
    assert!(app.target_row(s.mismatched_source).await.is_none());

    // One event per repair: the run, the caller, and the mapped columns only.
    let (caller, path, run_id, before, after): (String, String, Uuid, Value, Value) =
        sqlx::query_as(
            "select caller, path, run_id, before, after from usersync.repairs
              where user_id = $1 and action = 'updated'",
        )
        .bind(s.stale)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!((caller.as_str(), path.as_str()), ("service", "batch"));
    assert_eq!(run_id.to_string(), run["id"].as_str().unwrap());
    assert_eq!(before["email"], "stale@example.com");
    assert_eq!(after["email"], "stale-new@example.com");
    let keys: Vec<&String> = after.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "avatar_url",
            "created_at",
            "email",
            "full_name",
            "role",
            "updated_at"
        ]
    );
    assert_eq!(
        app.events_of(s.missing).await,
        [("missing".to_owned(), "created".to_owned())]
    );
    let created: (Option<Value>, Value) = sqlx::query_as(
        "select before, after from usersync.repairs where user_id = $1 and action = 'created'",
    )
    .bind(s.missing)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(created.0, None, "a create has no before image");
    assert_eq!(created.1["email"], "missing@example.com");

    // Stored as one event row per chunk, kind and action: the ids and the images in one order.
    type ChunkRow = (String, Vec<Uuid>, Option<Value>, Option<Value>);
    let chunks: Vec<ChunkRow> = sqlx::query_as(
        "select action, user_ids, before, after from usersync.events
          where run_id = $1 order by action",
    )
    .bind(Uuid::parse_str(run["id"].as_str().unwrap()).unwrap())
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    let shape: Vec<(&str, usize, bool, bool)> = chunks
        .iter()
        .map(|(action, ids, before, after)| {
            (
                action.as_str(),
                ids.len(),
                before.is_some(),
                after.is_some(),
            )
        })
        .collect();
    assert_eq!(
        shape,
        [("created", 1, false, true), ("updated", 1, true, true)]
    );
}

#[tokio::test]
async fn a_second_run_changes_nothing() {
    let app = spawn_app().await;
    seed(&app).await;
    app.reconcile(json!({"dry_run": false})).await;
    let rows = app.target_snapshot().await;
    let events = app.event_count().await;

    let again = app.reconcile(json!({"dry_run": false})).await;

    assert_eq!(again["state"], "succeeded");
    assert_eq!(again["progress"]["repaired"], json!({}));
    assert_eq!(planned(&again)["missing"], 0);
    assert_eq!(planned(&again)["stale"], 0);
    assert_eq!(app.target_snapshot().await, rows);
    assert_eq!(app.event_count().await, events);
}

#[tokio::test]
async fn a_run_walks_the_source_in_chunks_of_pages_and_meets_every_user_once() {
    let app = spawn_with(ReconcileConfig {
        chunk_size: 40,
        ..ReconcileConfig::default()
    })
    .await;
    app.exec(
        "insert into auth.users (instance_id, id, aud, role, email, raw_app_meta_data,
             raw_user_meta_data, created_at, updated_at)
         select '00000000-0000-0000-0000-000000000000', gen_random_uuid(), 'authenticated',
                'authenticated', 'c' || g || '@example.com', '{}', '{}', now(), now()
           from generate_series(1, 400) g",
    )
    .await;
    let pages: i64 = sqlx::query_scalar(
        "select pg_relation_size('auth.users') / current_setting('block_size')::bigint",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();

    let run = app.reconcile(json!({"dry_run": false})).await;

    assert_eq!(run["state"], "succeeded", "{run}");
    let chunks = run["progress"]["chunks"].as_i64().unwrap();
    assert!(
        chunks > 1 && chunks <= pages,
        "{chunks} chunks of {pages} pages"
    );
    assert_eq!(run["progress"]["walked"], 400);
    assert_eq!(run["progress"]["repaired"]["missing"], 400);
    assert_eq!(app.target_count().await, 400);
    let once: i64 = sqlx::query_scalar(
        "select count(*) from (select user_id from usersync.repairs group by user_id
                                having count(*) = 1) u",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(once, 400, "every user met exactly once");
}

#[tokio::test]
async fn report_policies_change_nothing() {
    let app = spawn_with(ReconcileConfig {
        missing: MissingPolicy::Report,
        stale: StalePolicy::Report,
        ..ReconcileConfig::default()
    })
    .await;
    seed(&app).await;
    let before = app.target_snapshot().await;

    let run = app.reconcile(json!({"dry_run": false})).await;

    assert_eq!(run["state"], "succeeded");
    assert_eq!(run["plan"]["kinds"]["missing"]["action"], "report");
    assert_eq!(run["plan"]["kinds"]["stale"]["action"], "report");
    assert_eq!(run["progress"]["repaired"], json!({}));
    assert_eq!(app.target_snapshot().await, before);
}

#[tokio::test]
async fn only_the_requested_kinds_are_planned_and_repaired() {
    let app = spawn_app().await;
    let s = seed(&app).await;

    let run = app
        .reconcile(json!({"dry_run": false, "kinds": ["stale"]}))
        .await;

    assert_eq!(planned(&run), json!({"stale": 1}));
    assert_eq!(run["progress"]["repaired"], json!({"stale": 1}));
    assert!(app.target_row(s.missing).await.is_none());
}

#[tokio::test]
async fn a_limit_bounds_the_repairs_and_the_next_run_does_the_rest() {
    let app = spawn_app().await;
    for i in 0..5 {
        app.insert_auth_user(&AuthUser::new(&format!("l{i}@example.com")))
            .await;
    }

    let first = app.reconcile(json!({"dry_run": false, "limit": 2})).await;
    assert_eq!(first["progress"]["repaired"]["missing"], 2);
    assert_eq!(app.target_count().await, 2);

    let second = app.reconcile(json!({"dry_run": false})).await;
    assert_eq!(second["progress"]["repaired"]["missing"], 3);
    assert_eq!(app.target_count().await, 5);
    assert_eq!(app.event_count().await, 5);
}

#[tokio::test]
async fn a_deletion_a_run_recorded_is_not_reported_again_by_the_trigger() {
    let app = spawn_deleting().await;
    let soft = app
        .insert_auth_user(&AuthUser::new("gone@example.com"))
        .await;
    app.reconcile(json!({"dry_run": false})).await;
    app.exec(&format!(
        "update auth.users set deleted_at = now() where id = '{soft}'"
    ))
    .await;
    app.reconcile(json!({"dry_run": false})).await;
    assert_eq!(
        app.events_of(soft).await,
        [
            ("missing".to_owned(), "created".to_owned()),
            ("deleted".to_owned(), "deleted".to_owned())
        ]
    );

    // The trigger path sees a change to the deleted user; the run's chunk row already records
    // the deletion, so the trigger writes no second event.
    install_triggers(&app.db.pool, None, DeletedPolicy::Report).await;
    app.exec(&format!(
        "update auth.users set email = 'still-gone@example.com' where id = '{soft}'"
    ))
    .await;

    assert_eq!(app.events_of(soft).await.len(), 2);
}

#[tokio::test]
async fn deleted_profiles_are_removed_by_policy_and_never_come_back() {
    let app = spawn_deleting().await;
    // A soft-deleted user and a hard-deleted one, both synced while they were alive.
    let soft = app
        .insert_auth_user(&AuthUser::new("soft@example.com"))
        .await;
    let hard = app
        .insert_auth_user(&AuthUser::new("hard@example.com"))
        .await;
    app.reconcile(json!({"dry_run": false})).await;
    app.exec(&format!(
        "update auth.users set deleted_at = now() where id = '{soft}';
         delete from auth.users where id = '{hard}';"
    ))
    .await;
    let status: Value = app.status(&secret_key()).await.json().await.unwrap();
    assert_eq!(status["drift"]["deleted"], 2, "{status}");
    assert_eq!(status["drift"]["orphaned"], 0, "{status}");

    let run = app.reconcile(json!({"dry_run": false})).await;

    assert_eq!(run["progress"]["repaired"], json!({"deleted": 2}), "{run}");
    assert!(app.target_row(soft).await.is_none());
    assert!(app.target_row(hard).await.is_none());
    let (before,): (Value,) = sqlx::query_as(
        "select before from usersync.repairs where user_id = $1 and action = 'deleted'",
    )
    .bind(soft)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(before["email"], "soft@example.com");

    // No later run, and no call, brings either back.
    let again = app.reconcile(json!({"dry_run": false})).await;
    assert_eq!(again["progress"]["repaired"], json!({}));
    assert!(app.target_row(soft).await.is_none());
    assert!(app.target_row(hard).await.is_none());
    assert_eq!(
        app.sync_user(&soft.to_string(), &secret_key())
            .await
            .status(),
        410
    );
    assert_eq!(
        app.sync_user(&hard.to_string(), &secret_key())
            .await
            .status(),
        404
    );
}

#[tokio::test]
async fn orphaned_profiles_are_deleted_by_policy() {
    let app = spawn_with(ReconcileConfig {
        orphaned: OrphanedPolicy::Delete,
        max_delete_share: 1.0,
        ..ReconcileConfig::default()
    })
    .await;
    let s = seed(&app).await;

    let run = app.reconcile(json!({"dry_run": false})).await;

    assert_eq!(run["progress"]["repaired"]["orphaned"], 1, "{run}");
    assert!(app.target_row(s.orphaned).await.is_none());
    // The other half of a mismatch is not an orphan: it stays.
    assert!(app.target_row(s.mismatched_target).await.is_some());
    assert_eq!(
        app.events_of(s.orphaned).await,
        [("orphaned".to_owned(), "deleted".to_owned())]
    );
}

#[tokio::test]
async fn a_run_that_would_delete_too_much_stops_until_overridden() {
    let app = spawn_with(ReconcileConfig {
        orphaned: OrphanedPolicy::Delete,
        ..ReconcileConfig::default()
    })
    .await;
    // 3 orphans among 4 profiles: 75%, over the default 5%.
    let kept = app
        .insert_auth_user(&AuthUser::new("kept@example.com"))
        .await;
    app.sync_user(&kept.to_string(), &secret_key()).await;
    for i in 0..3 {
        app.insert_profile(Uuid::new_v4(), Some(&format!("o{i}@example.com")))
            .await;
    }

    let stopped = app.reconcile(json!({"dry_run": false})).await;

    assert_eq!(stopped["state"], "needs_override", "{stopped}");
    assert_eq!(stopped["plan"]["deletes"], 3);
    assert_eq!(stopped["plan"]["max_deletes"], 0);
    assert!(stopped["error"]
        .as_str()
        .unwrap()
        .contains("allow_mass_delete"));
    assert_eq!(app.target_count().await, 4);

    // A dry run shows the same plan and flags it, without stopping.
    let dry = app.reconcile(json!({"dry_run": true})).await;
    assert_eq!(dry["state"], "succeeded");
    assert_eq!(dry["plan"]["needs_override"], true);

    let overridden = app
        .reconcile(json!({"dry_run": false, "allow_mass_delete": true}))
        .await;
    assert_eq!(overridden["state"], "succeeded", "{overridden}");
    assert_eq!(overridden["progress"]["repaired"]["orphaned"], 3);
    assert_eq!(app.target_count().await, 1);
}

#[tokio::test]
async fn a_second_run_is_refused_while_one_holds_the_lock() {
    let app = spawn_app().await;
    // Another replica is running: it holds the lock, and its row says `running`.
    let running = Uuid::new_v4();
    sqlx::query(
        "insert into usersync.runs (id, caller, dry_run, state) values ($1, 'service', false, 'running')",
    )
    .bind(running)
    .execute(&app.db.pool)
    .await
    .unwrap();
    let mut other_replica = sqlx::PgConnection::connect(&app.db.url()).await.unwrap();
    let locked: bool = sqlx::query_scalar("select pg_try_advisory_lock($1)")
        .bind(usersync::repo::runs::RUN_LOCK)
        .fetch_one(&mut other_replica)
        .await
        .unwrap();
    assert!(locked);

    let response = app
        .start_run(&json!({"dry_run": true}), &secret_key())
        .await;

    let body = assert_problem(response, 409, "run_in_progress").await;
    assert_eq!(body["run_id"], running.to_string());
    // The refused request left the running run alone.
    let run: Value = app
        .get_run(&running.to_string(), &secret_key())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(run["state"], "running");

    // Once that replica is gone, its run is abandoned and a new one proceeds.
    other_replica.close().await.unwrap();
    let next = app.reconcile(json!({"dry_run": true})).await;
    assert_eq!(next["state"], "succeeded");
    let old: Value = app
        .get_run(&running.to_string(), &secret_key())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(old["state"], "abandoned");
}

#[tokio::test]
async fn a_run_killed_midway_is_abandoned_and_the_next_finishes_without_doing_anything_twice() {
    let app = spawn_with(ReconcileConfig {
        chunk_size: 2,
        ..ReconcileConfig::default()
    })
    .await;
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(
            app.insert_auth_user(&AuthUser::new(&format!("k{i}@example.com")))
                .await,
        );
    }
    // A run that got through its first chunks and then died: its repairs and progress are
    // committed, its row still says `running`, and nobody holds the lock.
    let killed = app.reconcile(json!({"dry_run": false, "limit": 3})).await;
    let killed_id = killed["id"].as_str().unwrap().to_owned();
    sqlx::query("update usersync.runs set state = 'running', finished_at = null where id = $1")
        .bind(Uuid::parse_str(&killed_id).unwrap())
        .execute(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(app.target_count().await, 3);

    let next = app.reconcile(json!({"dry_run": false})).await;

    assert_eq!(next["state"], "succeeded", "{next}");
    assert_eq!(next["resumed_from"], killed_id);
    assert_eq!(next["progress"]["repaired"]["missing"], 3);
    let old: Value = app
        .get_run(&killed_id, &secret_key())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(old["state"], "abandoned");
    assert_eq!(app.target_count().await, 6);
    for id in ids {
        assert_eq!(
            app.events_of(id).await,
            [("missing".to_owned(), "created".to_owned())],
            "{id} repaired more than once"
        );
    }
}

#[tokio::test]
async fn runs_are_listed_newest_first_and_read_by_id() {
    let app = spawn_app().await;
    let first = app.reconcile(json!({"dry_run": true})).await;
    let second = app
        .reconcile(json!({"dry_run": true, "kinds": ["missing"]}))
        .await;

    let response = app.list_runs("?limit=10", &secret_key()).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let ids: Vec<&Value> = body["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["id"])
        .collect();
    assert_eq!(ids, [&second["id"], &first["id"]]);

    let status: Value = app.status(&secret_key()).await.json().await.unwrap();
    assert_eq!(status["last_run"]["id"], second["id"]);
    assert_eq!(status["last_run"]["options"]["kinds"], json!(["missing"]));

    let missing = app
        .get_run(&Uuid::new_v4().to_string(), &secret_key())
        .await;
    assert_problem(missing, 404, "run_not_found").await;
}

#[tokio::test]
async fn a_started_run_answers_202_with_its_location() {
    let app = spawn_app().await;
    let response = app
        .start_run(&json!({"dry_run": true}), &secret_key())
        .await;
    assert_eq!(response.status(), 202);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let run: Value = response.json().await.unwrap();
    assert_eq!(
        location,
        format!("/v1/reconciliations/{}", run["id"].as_str().unwrap())
    );
    assert_eq!(run["state"], "planning");
    assert_eq!(run["caller"], "service");
    app.wait_for_run(run["id"].as_str().unwrap()).await;
}

#[tokio::test]
async fn bad_run_requests_are_400_and_only_the_service_may_start_runs() {
    let app = spawn_app().await;
    let cases = [
        json!({"dry_run": true, "force": true}),
        json!({"kinds": ["missing"]}),
        json!({"dry_run": true, "kinds": []}),
        json!({"dry_run": true, "kinds": ["bogus"]}),
        json!({"dry_run": true, "limit": 0}),
        json!({"dry_run": "yes"}),
    ];
    for body in cases {
        let response = app.start_run(&body, &secret_key()).await;
        assert_problem(response, 400, "invalid_body").await;
    }
    let id = app.insert_auth_user(&AuthUser::new("u@example.com")).await;
    let response = app
        .start_run(&json!({"dry_run": true}), &user_token(id))
        .await;
    assert_problem(response, 403, "service_only").await;
    let response = app.list_runs("", &user_token(id)).await;
    assert_problem(response, 403, "service_only").await;
    let response = app.list_runs("?limit=1000", &secret_key()).await;
    assert_problem(response, 400, "invalid_query").await;
    assert_eq!(app.list_runs("", &secret_key()).await.status(), 200);
}

#[tokio::test]
async fn with_many_stray_profiles_a_mismatched_user_is_still_left_alone() {
    let app = spawn_app().await;
    // More stray profiles than a run lists up front: the insert then probes per user.
    app.exec(
        "insert into public.users (id, email)
         select gen_random_uuid(), 'stray' || g || '@example.com' from generate_series(1, 150) g",
    )
    .await;
    let twin = app
        .insert_auth_user(&AuthUser::new("STRAY7@example.com"))
        .await;
    let fresh = app
        .insert_auth_user(&AuthUser::new("fresh@example.com"))
        .await;

    let run = app.reconcile(json!({"dry_run": false})).await;

    assert_eq!(run["plan"]["kinds"]["mismatched"]["count"], 1, "{run}");
    assert_eq!(run["progress"]["repaired"], json!({"missing": 1}), "{run}");
    assert!(app.target_row(twin).await.is_none());
    assert!(app.target_row(fresh).await.is_some());
}

#[tokio::test]
async fn a_leading_healing_loop_does_not_block_reconciliation_runs() {
    // Two locks, two jobs: leadership of the healing loop and the one-run-at-a-time guard.
    assert_ne!(
        usersync::worker::leader::LOCK_KEY,
        usersync::repo::runs::RUN_LOCK
    );
    let db = TestDb::new().await;
    AuthUser::new("led@example.com").insert(&db.pool).await;
    let serve = ServeProcess::start(
        &db.url(),
        &[
            ("USERSYNC_HEALING", "on"),
            ("USERSYNC_RECONCILE_INTERVAL", "0"),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    // Wait until this replica leads.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let ready: Value = client
            .get(format!("{}/readyz", serve.address))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if ready.to_string().contains("lead") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never led: {ready}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let response = client
        .post(format!("{}/v1/reconciliations", serve.address))
        .header("apikey", SERVICE_KEY)
        .json(&json!({"dry_run": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
}

#[tokio::test]
async fn the_repairs_view_names_each_users_values_in_new_and_older_chunk_rows() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for n in 0..5 {
        let user = AuthUser::new(&format!("user{n}@example.com"))
            .user_metadata(json!({"full_name": format!("User {n}")}));
        ids.push(app.insert_auth_user(&user).await);
    }
    let run = app.reconcile(json!({"dry_run": false})).await;
    assert_eq!(run["state"], "succeeded");
    let chunk_rows: i64 = sqlx::query_scalar("select count(*) from usersync.events")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    let buckets = ids
        .iter()
        .map(|id| id.to_string()[..2].to_owned())
        .collect::<std::collections::BTreeSet<_>>()
        .len() as i64;
    assert_eq!(
        chunk_rows, buckets,
        "one chunk row per first byte of the ids"
    );
    for id in &ids {
        let after: Value = sqlx::query_scalar(
            "select after from usersync.repairs where user_id = $1 and action = 'created'",
        )
        .bind(id)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
        let row = app.target_row(*id).await.unwrap();
        for column in ["email", "full_name", "role", "created_at", "updated_at"] {
            assert_eq!(after[column], row[column], "{column} of {id}");
        }
    }

    // A chunk row written before images were arrays: objects, and no `image_columns`.
    let (old_a, old_b) = (Uuid::new_v4(), Uuid::new_v4());
    sqlx::query(
        "insert into usersync.events
             (run_id, user_ids, first_id, last_id, caller, path, kind, action, before, after)
         values ($1, array[$2, $3]::uuid[], $2, $3, 'service', 'batch', 'stale', 'updated',
                 '[{\"email\": \"a@old\"}, {\"email\": \"b@old\"}]',
                 '[{\"email\": \"a@new\"}, {\"email\": \"b@new\"}]')",
    )
    .bind(Uuid::parse_str(run["id"].as_str().unwrap()).unwrap())
    .bind(old_a.min(old_b))
    .bind(old_a.max(old_b))
    .execute(&app.db.pool)
    .await
    .unwrap();
    let images: Vec<(Uuid, Value, Value)> = sqlx::query_as(
        "select user_id, before, after from usersync.repairs where kind = 'stale' order by ordinal",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(
        images,
        [
            (
                old_a.min(old_b),
                json!({"email": "a@old"}),
                json!({"email": "a@new"})
            ),
            (
                old_a.max(old_b),
                json!({"email": "b@old"}),
                json!({"email": "b@new"})
            ),
        ]
    );
}
