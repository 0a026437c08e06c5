//! Sync-one: the mapping, the actions, the refusals, and concurrency.

use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::*;

async fn sync_me_json(app: &TestApp, id: Uuid) -> Value {
    let response = app.sync_me(&user_token(id)).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test]
async fn a_new_user_is_created_then_unchanged_and_the_row_matches() {
    let app = spawn_app().await;
    let id = app
        .insert_auth_user(
            &AuthUser::new("ada@example.com").user_metadata(json!({"full_name": "Ada Lovelace"})),
        )
        .await;

    let body = sync_me_json(&app, id).await;
    assert_eq!(body["action"], "created");
    assert_eq!(body["user"]["id"], id.to_string());
    let row = app.target_row(id).await.expect("a target row");
    assert_eq!(row["email"], "ada@example.com");
    assert_eq!(row["full_name"], "Ada Lovelace");
    assert_eq!(row["role"], "user");
    // created_at comes from the auth row, not from the time of the sync.
    let auth_created: Value =
        sqlx::query_scalar("select to_jsonb(created_at) from auth.users where id = $1")
            .bind(id)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(row["created_at"], auth_created);

    let again = sync_me_json(&app, id).await;
    assert_eq!(again["action"], "unchanged");
    // Nothing was written the second time: updated_at did not move.
    assert_eq!(
        app.target_row(id).await.unwrap()["updated_at"],
        row["updated_at"]
    );
}

#[tokio::test]
async fn full_name_follows_the_documented_precedence() {
    let app = spawn_app().await;
    let cases = [
        (
            json!({"full_name": "F", "name": "N", "user_name": "U", "username": "X"}),
            "F",
        ),
        (json!({"name": "N", "user_name": "U", "username": "X"}), "N"),
        (
            json!({"full_name": "", "user_name": "U", "username": "X"}),
            "U",
        ),
        (json!({"username": "X"}), "X"),
    ];
    for (i, (meta, expected)) in cases.into_iter().enumerate() {
        let id = app
            .insert_auth_user(&AuthUser::new(&format!("u{i}@example.com")).user_metadata(meta))
            .await;
        sync_me_json(&app, id).await;
        assert_eq!(app.target_row(id).await.unwrap()["full_name"], expected);
    }
    let id = app
        .insert_auth_user(&AuthUser::new("none@example.com").user_metadata(json!({})))
        .await;
    sync_me_json(&app, id).await;
    assert_eq!(app.target_row(id).await.unwrap()["full_name"], Value::Null);
}

#[tokio::test]
async fn avatar_url_prefers_avatar_url_then_picture() {
    let app = spawn_app().await;
    let both = app
        .insert_auth_user(&AuthUser::new("a@example.com").user_metadata(
            json!({"avatar_url": "https://a/avatar.png", "picture": "https://a/picture.png"}),
        ))
        .await;
    let picture = app
        .insert_auth_user(
            &AuthUser::new("b@example.com")
                .user_metadata(json!({"picture": "https://b/picture.png"})),
        )
        .await;
    sync_me_json(&app, both).await;
    sync_me_json(&app, picture).await;
    assert_eq!(
        app.target_row(both).await.unwrap()["avatar_url"],
        "https://a/avatar.png"
    );
    assert_eq!(
        app.target_row(picture).await.unwrap()["avatar_url"],
        "https://b/picture.png"
    );
}

#[tokio::test]
async fn a_user_who_signs_up_with_role_admin_in_user_metadata_gets_the_default_role() {
    let app = spawn_app().await;
    let attacker = app
        .insert_auth_user(
            &AuthUser::new("mallory@example.com")
                .user_metadata(json!({"role": "admin", "full_name": "Mallory"})),
        )
        .await;
    sync_me_json(&app, attacker).await;
    assert_eq!(app.target_row(attacker).await.unwrap()["role"], "user");

    // Later edits of user_metadata (updateUser({ data })) do not help either.
    sqlx::query(
        "update auth.users set raw_user_meta_data = raw_user_meta_data || '{\"role\":\"admin\"}',
                updated_at = now() where id = $1",
    )
    .bind(attacker)
    .execute(&app.db.pool)
    .await
    .unwrap();
    let body = sync_me_json(&app, attacker).await;
    assert_eq!(body["action"], "unchanged");
    assert_eq!(app.target_row(attacker).await.unwrap()["role"], "user");
}

#[tokio::test]
async fn the_role_follows_app_metadata_which_only_the_service_writes() {
    let app = spawn_app().await;
    let admin = app
        .insert_auth_user(
            &AuthUser::new("root@example.com")
                .app_metadata(json!({"provider": "email", "role": "admin"})),
        )
        .await;
    sync_me_json(&app, admin).await;
    assert_eq!(app.target_row(admin).await.unwrap()["role"], "admin");

    // A demotion by the service reaches the profile on the next sync.
    sqlx::query(
        "update auth.users set raw_app_meta_data = '{\"provider\":\"email\"}' where id = $1",
    )
    .bind(admin)
    .execute(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(sync_me_json(&app, admin).await["action"], "updated");
    assert_eq!(app.target_row(admin).await.unwrap()["role"], "user");
}

#[tokio::test]
async fn email_always_follows_the_source_but_names_are_the_apps() {
    let app = spawn_app().await;
    let id = app
        .insert_auth_user(
            &AuthUser::new("old@example.com").user_metadata(json!({"full_name": "Old Name"})),
        )
        .await;
    sync_me_json(&app, id).await;
    // The person renames themselves in the app.
    sqlx::query("update public.users set full_name = 'Chosen Name' where id = $1")
        .bind(id)
        .execute(&app.db.pool)
        .await
        .unwrap();
    // A pending email change is not synced...
    sqlx::query("update auth.users set email_change = 'new@example.com', raw_user_meta_data = '{\"full_name\":\"Provider Name\"}' where id = $1")
        .bind(id)
        .execute(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(sync_me_json(&app, id).await["action"], "unchanged");
    assert_eq!(
        app.target_row(id).await.unwrap()["email"],
        "old@example.com"
    );
    // ...until Supabase Auth confirms it into `email`.
    sqlx::query("update auth.users set email = 'new@example.com', email_change = '' where id = $1")
        .bind(id)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let body = sync_me_json(&app, id).await;
    assert_eq!(body["action"], "updated");
    let row = app.target_row(id).await.unwrap();
    assert_eq!(row["email"], "new@example.com");
    assert_eq!(row["full_name"], "Chosen Name");
    // Each write left an audit event with the mapped columns only.
    let actions: Vec<(String, String, Value)> = sqlx::query_as(
        "select kind, action, after from usersync.repairs where user_id = $1 order by at, event_id, ordinal",
    )
    .bind(id)
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(actions.len(), 2);
    assert_eq!(
        (actions[0].0.as_str(), actions[0].1.as_str()),
        ("missing", "created")
    );
    assert_eq!(
        (actions[1].0.as_str(), actions[1].1.as_str()),
        ("stale", "updated")
    );
    assert_eq!(actions[1].2["email"], "new@example.com");
}

#[tokio::test]
async fn a_user_with_a_null_email_is_synced() {
    let app = spawn_app().await;
    let mut phone_user = AuthUser::new("x@example.com");
    phone_user.email = None;
    phone_user.phone = Some("15555550100".into());
    let id = app.insert_auth_user(&phone_user).await;
    assert_eq!(sync_me_json(&app, id).await["action"], "created");
    assert_eq!(app.target_row(id).await.unwrap()["email"], Value::Null);
    assert_eq!(sync_me_json(&app, id).await["action"], "unchanged");
}

#[tokio::test]
async fn two_sso_users_sharing_one_email_each_get_a_profile() {
    let app = spawn_app().await;
    let mut first = AuthUser::new("shared@corp.example");
    first.is_sso_user = true;
    let mut second = AuthUser::new("shared@corp.example");
    second.is_sso_user = true;
    let a = app.insert_auth_user(&first).await;
    let b = app.insert_auth_user(&second).await;
    assert_eq!(sync_me_json(&app, a).await["action"], "created");
    assert_eq!(sync_me_json(&app, b).await["action"], "created");
    assert_eq!(app.target_count().await, 2);
}

#[tokio::test]
async fn a_soft_deleted_user_is_410_and_nothing_is_written() {
    let app = spawn_app().await;
    let mut user = AuthUser::new("gone@example.com");
    user.deleted = true;
    let id = app.insert_auth_user(&user).await;
    assert_problem(app.sync_me(&user_token(id)).await, 410, "user_deleted").await;
    assert!(app.target_row(id).await.is_none());
}

#[tokio::test]
async fn an_unknown_id_is_404_for_the_service() {
    let app = spawn_app().await;
    let response = app
        .sync_user(&Uuid::new_v4().to_string(), &secret_key())
        .await;
    assert_problem(response, 404, "user_not_found").await;
    assert_eq!(app.target_count().await, 0);
}

#[tokio::test]
async fn a_bad_uuid_in_the_path_is_400_after_authentication() {
    let app = spawn_app().await;
    assert_problem(
        app.sync_user("not-a-uuid", &secret_key()).await,
        400,
        "invalid_path",
    )
    .await;
    // Without credentials the answer is 401 first: nothing about ids leaks to strangers.
    assert_problem(
        app.sync_user("not-a-uuid", &Auth::None).await,
        401,
        "missing_credentials",
    )
    .await;
}

#[tokio::test]
async fn the_same_person_under_another_id_is_409_email_conflict() {
    let app = spawn_app().await;
    // A profile left under an old id that no auth user has any more.
    sqlx::query("insert into public.users (id, email) values ($1, 'Ada@Example.com')")
        .bind(Uuid::new_v4())
        .execute(&app.db.pool)
        .await
        .unwrap();
    let id = app
        .insert_auth_user(&AuthUser::new("ada@example.com"))
        .await;
    let body = assert_problem(app.sync_me(&user_token(id)).await, 409, "email_conflict").await;
    assert!(body["detail"].as_str().unwrap().contains("rekey"));
    assert!(app.target_row(id).await.is_none());
    assert_eq!(app.target_count().await, 1);
}

#[tokio::test]
async fn a_unique_email_index_on_the_target_is_409_email_conflict() {
    let app = spawn_app_with(AppOptions::default(), |db| async move {
        sqlx::query("create unique index users_email_key on public.users (lower(email))")
            .execute(&db)
            .await
            .unwrap();
    })
    .await;
    let first = app
        .insert_auth_user(&AuthUser::new("one@example.com"))
        .await;
    let second = app
        .insert_auth_user(&AuthUser::new("two@example.com"))
        .await;
    sync_me_json(&app, first).await;
    sync_me_json(&app, second).await;
    // Supabase confirms an email change for the second user into the first one's address
    // (in a real project a different casing, or an SSO account, gets there).
    sqlx::query("update auth.users set email = 'ONE@example.com' where id = $1")
        .bind(second)
        .execute(&app.db.pool)
        .await
        .unwrap();
    assert_problem(
        app.sync_me(&user_token(second)).await,
        409,
        "email_conflict",
    )
    .await;
    assert_eq!(
        app.target_row(second).await.unwrap()["email"],
        "two@example.com"
    );
}

#[tokio::test]
async fn fifty_concurrent_syncs_of_one_new_user_create_exactly_one_row() {
    let app = spawn_app().await;
    let id = app
        .insert_auth_user(&AuthUser::new("race@example.com"))
        .await;
    let token = user_token(id);
    let calls = (0..50).map(|_| {
        let (app, token) = (&app, token.clone());
        async move {
            let response = app.sync_me(&token).await;
            assert_eq!(response.status(), 200);
            let body: Value = response.json().await.unwrap();
            body["action"].as_str().unwrap().to_owned()
        }
    });
    let actions = futures::future::join_all(calls).await;
    assert_eq!(
        actions.iter().filter(|a| *a == "created").count(),
        1,
        "{actions:?}"
    );
    assert!(
        actions.iter().all(|a| a == "created" || a == "unchanged"),
        "{actions:?}"
    );
    assert_eq!(app.target_count().await, 1);
    let events: i64 =
        sqlx::query_scalar("select count(*) from usersync.repairs where user_id = $1")
            .bind(id)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(events, 1);
}

#[tokio::test]
async fn a_row_the_tables_own_constraint_refuses_is_422_for_that_user_alone_and_writes_nothing() {
    let (app, id) = spawn_app_with_user(AppOptions::default()).await;
    let email = app.auth_email(id).await;
    // The app's own rule, which usersync's mapping knows nothing about.
    app.exec(&format!(
        "alter table public.users add constraint no_such_email check (email <> '{email}') not valid"
    ))
    .await;
    let body = assert_problem(app.sync_me(&user_token(id)).await, 422, "refused_by_table").await;
    assert!(
        body["detail"].as_str().unwrap().contains("no_such_email"),
        "{body}"
    );
    let hook = json!({"type": "INSERT", "table": "users", "schema": "auth", "record": {"id": id}});
    assert_problem(
        app.hook(&hook, &secret_key()).await,
        422,
        "refused_by_table",
    )
    .await;
    assert_eq!(app.target_row(id).await, None);
    assert_eq!(app.event_count().await, 0);
    // Another user is not held up by it.
    let other = AuthUser::new("fine@example.com").insert(&app.db.pool).await;
    assert_eq!(app.sync_me(&user_token(other)).await.status(), 200);
}
