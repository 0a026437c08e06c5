//! Coalesced syncs: requests that queue while the one sync statement allowed is busy go together
//! in the next statement, and each still gets its own answer.

use std::time::Duration;

use serde_json::Value;
use uuid::Uuid;

use crate::helpers::*;

/// One statement at a time, so that requests queue behind a blocked one.
fn one_statement() -> AppOptions {
    AppOptions {
        sync_statements: 1,
        ..AppOptions::default()
    }
}

/// Blocks the sync of `blocker` (whose profile exists) on a row lock, sends `ids`' syncs while it
/// waits so that they queue behind it, then lets it go. Returns each id's status and body, in
/// order.
async fn sync_queued_behind_a_blocked_sync(
    app: &TestApp,
    blocker: Uuid,
    ids: &[Uuid],
) -> Vec<(u16, Value)> {
    let lock = hold_next_sync(&app.db.pool, blocker).await;
    let blocked = spawn_sync_me(&app.address, blocker);
    wait_for_lock_waiters(&app.db.pool, 1).await;
    let queued: Vec<_> = ids
        .iter()
        .map(|id| spawn_sync_me(&app.address, *id))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    lock.rollback().await.unwrap();
    let (status, body) = blocked.await.unwrap();
    assert_eq!((status, body["action"].as_str()), (200, Some("updated")));
    let mut answers = Vec::new();
    for call in queued {
        answers.push(call.await.unwrap());
    }
    answers
}

async fn synced_user(app: &TestApp, email: &str) -> Uuid {
    let id = app.insert_auth_user(&AuthUser::new(email)).await;
    assert_eq!(app.sync_me(&user_token(id)).await.status(), 200);
    id
}

/// The distinct times at which the latest events of `ids` were recorded (`now()`: the start of
/// each one's transaction).
async fn latest_event_times(app: &TestApp, ids: &[Uuid]) -> Vec<String> {
    sqlx::query_scalar(
        "select distinct max(at)::text from usersync.repairs where user_id = any($1)
          group by user_id",
    )
    .bind(ids)
    .fetch_all(&app.db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn syncs_queued_together_share_one_statement_and_each_gets_its_own_answer() {
    let app = spawn_app_with_options(one_statement()).await;
    let blocker = synced_user(&app, "blocker@example.com").await;
    let mut new = Vec::new();
    for email in ["n1@example.com", "n2@example.com", "n3@example.com"] {
        new.push(app.insert_auth_user(&AuthUser::new(email)).await);
    }
    let stale = synced_user(&app, "stale@example.com").await;
    sqlx::query("update auth.users set email = 'fresh@example.com' where id = $1")
        .bind(stale)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let unchanged = synced_user(&app, "same@example.com").await;
    let deleted = {
        let mut user = AuthUser::new("gone@example.com");
        user.deleted = true;
        app.insert_auth_user(&user).await
    };
    let unknown = Uuid::new_v4();
    // The same person under another id: a profile no auth user has holds this email.
    sqlx::query("insert into public.users (id, email) values ($1, 'twin@example.com')")
        .bind(Uuid::new_v4())
        .execute(&app.db.pool)
        .await
        .unwrap();
    let twin = app
        .insert_auth_user(&AuthUser::new("twin@example.com"))
        .await;

    let ids = [
        new[0], new[1], new[2], stale, unchanged, deleted, unknown, twin, new[0],
    ];
    let answers = sync_queued_behind_a_blocked_sync(&app, blocker, &ids).await;
    let summary: Vec<(u16, String)> = answers
        .iter()
        .map(|(status, body)| {
            let what = body["action"].as_str().or(body["code"].as_str());
            (*status, what.unwrap_or_default().to_owned())
        })
        .collect();
    let created_twice = [&summary[0], &summary[8]];
    assert!(
        created_twice.contains(&&(200, "created".into()))
            && created_twice.contains(&&(200, "unchanged".into())),
        "{summary:?}"
    );
    let expected: Vec<(u16, String)> = [
        (200, "created"),
        (200, "created"),
        (200, "updated"),
        (200, "unchanged"),
        (410, "user_deleted"),
        (404, "user_not_found"),
        (409, "email_conflict"),
    ]
    .map(|(s, w)| (s, w.to_owned()))
    .to_vec();
    assert_eq!(summary[1..8], expected[..]);

    // Each answer carries its own row, and the rows are what a single sync would write.
    for (i, id) in [new[1], new[2], stale, unchanged].iter().enumerate() {
        assert_eq!(answers[i + 1].1["user"]["id"], id.to_string());
        assert_eq!(
            Some(&answers[i + 1].1["user"]),
            app.target_row(*id).await.as_ref()
        );
    }
    assert_eq!(
        app.target_row(stale).await.unwrap()["email"],
        "fresh@example.com"
    );
    for id in [deleted, unknown, twin] {
        assert!(app.target_row(id).await.is_none());
    }
    // The four writes were one statement: one transaction, one `now()`.
    let written = [new[0], new[1], new[2], stale];
    assert_eq!(latest_event_times(&app, &written).await.len(), 1);
    for id in new {
        assert_eq!(events_of(&app.db.pool, id).await.len(), 1, "one event each");
    }
    let updated = ("call".into(), "stale".into(), "updated".into());
    assert_eq!(events_of(&app.db.pool, stale).await.last(), Some(&updated));
}

#[tokio::test]
async fn a_batch_the_database_refuses_is_split_until_each_user_is_answered_alone() {
    let app = spawn_app_with(one_statement(), |db| async move {
        sqlx::query("create unique index users_email_key on public.users (lower(email))")
            .execute(&db)
            .await
            .unwrap();
    })
    .await;
    let blocker = synced_user(&app, "blocker@example.com").await;
    let holder = synced_user(&app, "one@example.com").await;
    let taker = synced_user(&app, "two@example.com").await;
    // An email change into an address another live user's profile holds: the unique index
    // refuses the statement that writes it, whichever other users it carries.
    sqlx::query("update auth.users set email = 'ONE@example.com' where id = $1")
        .bind(taker)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let mut new = Vec::new();
    for n in 0..6 {
        new.push(
            app.insert_auth_user(&AuthUser::new(&format!("new{n}@example.com")))
                .await,
        );
    }
    let mut ids = new.clone();
    ids.insert(3, taker);
    ids.push(holder);

    let answers = sync_queued_behind_a_blocked_sync(&app, blocker, &ids).await;
    for (id, (status, body)) in ids.iter().zip(&answers) {
        let expected = if *id == taker {
            (409, "email_conflict")
        } else if *id == holder {
            (200, "unchanged")
        } else {
            (200, "created")
        };
        let what = body["action"].as_str().or(body["code"].as_str());
        assert_eq!((*status, what.unwrap_or_default()), expected, "{id}");
    }
    assert_eq!(
        app.target_row(taker).await.unwrap()["email"],
        "two@example.com"
    );
    for id in &new {
        assert_eq!(
            events_of(&app.db.pool, *id).await.len(),
            1,
            "one event each"
        );
    }
}

#[tokio::test]
async fn a_request_waits_for_a_busy_statement_a_bounded_time_then_503() {
    let db = TestDb::new().await;
    let id = AuthUser::new("busy@example.com").insert(&db.pool).await;
    let other = AuthUser::new("other@example.com").insert(&db.pool).await;
    let mut config = serve_config(&db.url(), &one_statement());
    config.database.acquire_timeout = Duration::from_millis(500);
    let app = TestApp::start(db, config).await;
    assert_eq!(app.sync_me(&user_token(id)).await.status(), 200);
    // The one statement allowed blocks on a row lock this test holds; the pool has connections
    // to spare, so only the statement slot is busy.
    let (body, lock, blocked) = assert_next_sync_waits_then_503(&app, id, other).await;
    assert!(body["detail"].is_string());
    assert!(app.target_row(other).await.is_none(), "nothing was written");
    lock.rollback().await.unwrap();
    assert_eq!(blocked.await.unwrap().0, 200);
    assert_eq!(app.sync_me(&user_token(other)).await.status(), 200);
}
