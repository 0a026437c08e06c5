//! Every Supabase Auth flow, replayed statement by statement as `supabase_auth_admin` (see
//! `gotrue`), through the installed triggers, with the tests connected as hosted Supabase's
//! customer role. Each asserts the profile and the audit trail: exactly one event per change the
//! mapping sees, and none for a change it does not.

use serde_json::{json, Value};
use uuid::Uuid;

use crate::gotrue::{self, OAuthIdentity, SignUp};
use crate::helpers::*;
use usersync::vocabulary::policy::DeletedPolicy;

/// A fresh database with the triggers installed under `policy`.
async fn installed(policy: DeletedPolicy) -> TestDb {
    let db = TestDb::new().await;
    install_triggers(&db.pool, None, policy).await;
    db
}

async fn profile(db: &TestDb, id: Uuid) -> Option<Value> {
    sqlx::query_scalar("select to_jsonb(u) from public.users u where id = $1")
        .bind(id)
        .fetch_optional(&db.pool)
        .await
        .unwrap()
}

/// The user's audit trail as `kind/action`, oldest first; every event of the trigger's path.
async fn trail(db: &TestDb, id: Uuid) -> Vec<String> {
    events_of(&db.pool, id)
        .await
        .into_iter()
        .map(|(path, kind, action)| {
            assert_eq!(path, "trigger", "{kind}/{action}");
            format!("{kind}/{action}")
        })
        .collect()
}

/// No sync failed: every write above went through, none into a dead letter.
async fn assert_no_dead_letters(db: &TestDb) {
    let letters: i64 = sqlx::query_scalar("select count(*) from usersync.dead_letters")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(letters, 0);
}

#[tokio::test]
async fn an_email_sign_up_creates_the_profile_once_and_its_confirmation_changes_nothing() {
    let db = installed(DeletedPolicy::Report).await;
    let id = gotrue::sign_up(
        &db.auth_admin,
        &SignUp::new("Ada@Example.com").user_metadata(json!({"full_name": "Ada Lovelace"})),
    )
    .await
    .unwrap();
    let row = profile(&db, id).await.expect("a profile at commit");
    assert_eq!(row["email"], "ada@example.com");
    assert_eq!(row["full_name"], "Ada Lovelace");
    assert_eq!(row["role"], "user");
    assert_eq!(trail(&db, id).await, ["missing/created"]);

    gotrue::confirm_sign_up(&db.auth_admin, id).await.unwrap();
    gotrue::sign_in(&db.auth_admin, id).await.unwrap();
    assert_eq!(profile(&db, id).await.unwrap(), row);
    assert_eq!(trail(&db, id).await, ["missing/created"]);
    assert_no_dead_letters(&db).await;
}

#[tokio::test]
async fn a_phone_sign_up_and_an_anonymous_one_each_get_a_profile_without_an_email() {
    let db = installed(DeletedPolicy::Report).await;
    let phone = gotrue::sign_up_phone(
        &db.auth_admin,
        "+1 555 0100",
        json!({"name": "Phoebe"}),
        false,
    )
    .await
    .unwrap();
    gotrue::confirm_phone_sign_up(&db.auth_admin, phone)
        .await
        .unwrap();
    let anonymous = gotrue::sign_up_anonymous(&db.auth_admin, json!({}))
        .await
        .unwrap();

    let row = profile(&db, phone).await.unwrap();
    assert_eq!(row["email"], Value::Null);
    assert_eq!(row["full_name"], "Phoebe");
    assert_eq!(profile(&db, anonymous).await.unwrap()["email"], Value::Null);
    for id in [phone, anonymous] {
        assert_eq!(trail(&db, id).await, ["missing/created"]);
    }
    assert_no_dead_letters(&db).await;
}

#[tokio::test]
async fn an_oauth_sign_up_takes_the_providers_names_and_later_sign_ins_change_nothing() {
    let db = installed(DeletedPolicy::Report).await;
    let github = OAuthIdentity::github(42, "grace", "Grace Hopper", "Grace@Navy.mil", true);
    let id = gotrue::oauth_sign_up(&db.auth_admin, &github)
        .await
        .unwrap();
    let row = profile(&db, id).await.unwrap();
    assert_eq!(row["email"], "grace@navy.mil");
    assert_eq!(row["full_name"], "Grace Hopper");
    assert_eq!(
        row["avatar_url"],
        "https://avatars.githubusercontent.com/u/42?v=4"
    );
    assert_eq!(trail(&db, id).await, ["missing/created"]);

    // Every later sign-in merges the provider's claims into user_metadata: the names are the
    // app's once the profile exists (on_create), so nothing is written.
    let renamed = OAuthIdentity::github(42, "grace", "Amazing Grace", "grace@navy.mil", true);
    for _ in 0..2 {
        assert_eq!(
            gotrue::oauth_sign_in(&db.auth_admin, &renamed)
                .await
                .unwrap(),
            id
        );
    }
    let merged: Value =
        sqlx::query_scalar("select raw_user_meta_data from auth.users where id = $1")
            .bind(id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        merged["full_name"], "Amazing Grace",
        "GoTrue merged the claims"
    );
    assert_eq!(profile(&db, id).await.unwrap(), row);
    assert_eq!(trail(&db, id).await, ["missing/created"]);
    assert_no_dead_letters(&db).await;
}

#[tokio::test]
async fn admin_create_user_syncs_the_role_it_sets_after_the_identities() {
    let db = installed(DeletedPolicy::Report).await;
    let id = gotrue::admin_create_user(
        &db.auth_admin,
        &SignUp::new("root@example.com")
            .user_metadata(json!({"full_name": "Root", "role": "owner"}))
            .app_metadata(json!({"role": "admin"}))
            .confirmed(),
    )
    .await
    .unwrap();
    let row = profile(&db, id).await.unwrap();
    assert_eq!(row["role"], "admin", "app_metadata, never user_metadata");
    assert_eq!(row["full_name"], "Root");
    assert_eq!(trail(&db, id).await, ["missing/created"]);
    assert_no_dead_letters(&db).await;
}

#[tokio::test]
async fn an_anonymous_user_made_permanent_gets_their_email_once() {
    let db = installed(DeletedPolicy::Report).await;
    let id = gotrue::sign_up_anonymous(&db.auth_admin, json!({}))
        .await
        .unwrap();
    gotrue::convert_anonymous(&db.auth_admin, id, "Anon@Example.com", false)
        .await
        .unwrap();
    let row = profile(&db, id).await.unwrap();
    assert_eq!(row["email"], "anon@example.com");
    assert_eq!(trail(&db, id).await, ["missing/created", "stale/updated"]);
    assert_no_dead_letters(&db).await;
}

#[tokio::test]
async fn an_email_change_reaches_the_profile_once_when_its_last_link_is_followed() {
    let db = installed(DeletedPolicy::Report).await;
    let id = gotrue::sign_up(&db.auth_admin, &SignUp::new("old@example.com").confirmed())
        .await
        .unwrap();
    gotrue::request_email_change(&db.auth_admin, id, "New@Example.com")
        .await
        .unwrap();
    assert_eq!(profile(&db, id).await.unwrap()["email"], "old@example.com");
    // Secure email change: the link to the current address, then the one to the new.
    gotrue::verify_email_change(&db.auth_admin, id, gotrue::EmailChangeLink::Current)
        .await
        .unwrap();
    assert_eq!(profile(&db, id).await.unwrap()["email"], "old@example.com");
    assert_eq!(trail(&db, id).await, ["missing/created"]);
    gotrue::verify_email_change(&db.auth_admin, id, gotrue::EmailChangeLink::New)
        .await
        .unwrap();
    assert_eq!(profile(&db, id).await.unwrap()["email"], "new@example.com");
    assert_eq!(trail(&db, id).await, ["missing/created", "stale/updated"]);
    assert_no_dead_letters(&db).await;
}

#[tokio::test]
async fn a_phone_change_the_mapping_does_not_read_writes_nothing() {
    let db = installed(DeletedPolicy::Report).await;
    let id = gotrue::sign_up(&db.auth_admin, &SignUp::new("tel@example.com").confirmed())
        .await
        .unwrap();
    let row = profile(&db, id).await.unwrap();
    gotrue::request_phone_change(&db.auth_admin, id, "+44 20 7946 0000")
        .await
        .unwrap();
    gotrue::confirm_phone_change(&db.auth_admin, id)
        .await
        .unwrap();
    let phone: Option<String> = sqlx::query_scalar("select phone from auth.users where id = $1")
        .bind(id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(phone.as_deref(), Some("442079460000"));
    assert_eq!(profile(&db, id).await.unwrap(), row);
    assert_eq!(trail(&db, id).await, ["missing/created"]);
}

#[tokio::test]
async fn a_soft_delete_a_restore_and_a_second_soft_delete_are_two_deletions() {
    let db = installed(DeletedPolicy::Report).await;
    // An app-metadata role, so that the soft delete's clearing of app metadata is a change the
    // mapping reads: the trigger then fires twice in one transaction.
    let id = gotrue::admin_create_user(
        &db.auth_admin,
        &SignUp::new("twice@example.com")
            .app_metadata(json!({"role": "admin"}))
            .confirmed(),
    )
    .await
    .unwrap();

    // GoTrue's soft delete: deleted_at from its own clock, the email obfuscated, then the two
    // metadata columns cleared in two more updates, all in one transaction.
    gotrue::soft_delete_user(&db.auth_admin, id).await.unwrap();
    assert_eq!(
        trail(&db, id).await,
        ["missing/created", "deleted/reported"]
    );
    assert!(profile(&db, id).await.is_some(), "report keeps the profile");

    // Restored by hand (GoTrue has no undo): the user is live again, under a real email.
    sqlx::query(
        "update auth.users set deleted_at = null, email = 'twice@example.com',
                raw_app_meta_data = '{\"role\": \"admin\"}', updated_at = now()
          where id = $1",
    )
    .bind(id)
    .execute(&db.auth_admin)
    .await
    .unwrap();
    let after_restore = trail(&db, id).await;

    gotrue::soft_delete_user(&db.auth_admin, id).await.unwrap();
    let deletions = trail(&db, id)
        .await
        .iter()
        .filter(|e| e.starts_with("deleted/"))
        .count();
    assert_eq!(
        deletions,
        2,
        "{after_restore:?} then {:?}",
        trail(&db, id).await
    );
    // Soft-deleting an already soft-deleted user again changes nothing.
    gotrue::soft_delete_user(&db.auth_admin, id).await.unwrap();
    let again = trail(&db, id)
        .await
        .iter()
        .filter(|e| e.starts_with("deleted/"))
        .count();
    assert_eq!(again, 2);
    assert_no_dead_letters(&db).await;
}

#[tokio::test]
async fn under_the_delete_policy_soft_and_hard_deletes_remove_the_profile_once() {
    let db = installed(DeletedPolicy::Delete).await;
    let soft = gotrue::sign_up(&db.auth_admin, &SignUp::new("soft@example.com").confirmed())
        .await
        .unwrap();
    let hard = gotrue::sign_up(&db.auth_admin, &SignUp::new("hard@example.com").confirmed())
        .await
        .unwrap();

    gotrue::soft_delete_user(&db.auth_admin, soft)
        .await
        .unwrap();
    gotrue::delete_user(&db.auth_admin, hard).await.unwrap();
    for id in [soft, hard] {
        assert!(profile(&db, id).await.is_none());
        assert_eq!(trail(&db, id).await, ["missing/created", "deleted/deleted"]);
    }
    // The soft-deleted user hard-deleted later: nothing left to delete, nothing to report.
    gotrue::delete_user(&db.auth_admin, soft).await.unwrap();
    assert_eq!(
        trail(&db, soft).await,
        ["missing/created", "deleted/deleted"]
    );
    assert_no_dead_letters(&db).await;
}

#[tokio::test]
async fn a_hard_delete_is_reported_once_and_the_profile_kept_by_default() {
    let db = installed(DeletedPolicy::Report).await;
    let id = gotrue::sign_up(&db.auth_admin, &SignUp::new("gone@example.com").confirmed())
        .await
        .unwrap();
    gotrue::delete_user(&db.auth_admin, id).await.unwrap();
    assert!(profile(&db, id).await.is_some());
    assert_eq!(
        trail(&db, id).await,
        ["missing/created", "deleted/reported"]
    );
    assert_no_dead_letters(&db).await;
}
