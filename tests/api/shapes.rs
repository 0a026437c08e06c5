//! The same behaviour against the shapes real projects have: the default table grown a NOT
//! NULL column with a default, a table in another schema under its own names and mapping, and
//! Supabase's `public.profiles` with a cascading foreign key to `auth.users`.

use std::path::PathBuf;

use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use crate::gotrue::{self, SignUp};
use crate::helpers::*;
use usersync::vocabulary::policy::DeletedPolicy;

/// A target table and what the behaviour should look like in it.
struct Shape {
    /// SQL that creates or alters the table.
    setup: &'static str,
    /// The mapping file, under `tests/fixtures/shapes/` (`None`: the built-in one).
    mapping: Option<&'static str>,
    table: &'static str,
    key: &'static str,
    email: &'static str,
    role: &'static str,
    /// The column stamped with the time of each write.
    stamp: &'static str,
    /// Columns the mapping does not fill and their expected values after a sign-up.
    defaults: &'static [(&'static str, &'static str)],
    /// The target row goes with the auth user (`on delete cascade`).
    cascades: bool,
}

const USERS_WITH_CREDITS: Shape = Shape {
    setup: include_str!("../fixtures/shapes/users_with_credits.sql"),
    mapping: None,
    table: "public.users",
    key: "id",
    email: "email",
    role: "role",
    stamp: "updated_at",
    defaults: &[("credits", "1000")],
    cascades: false,
};

const ONAGUI_APP_USERS: Shape = Shape {
    setup: include_str!("../fixtures/shapes/onagui_app_users.sql"),
    mapping: Some("onagui_app_users.toml"),
    table: "onagui.app_users",
    key: "auth_user_id",
    email: "contact_email",
    role: "access_level",
    stamp: "synced_at",
    defaults: &[("plan", "\"free\"")],
    cascades: false,
};

const PUBLIC_PROFILES: Shape = Shape {
    setup: include_str!("../fixtures/shapes/public_profiles.sql"),
    mapping: Some("public_profiles.toml"),
    table: "public.profiles",
    key: "id",
    email: "email",
    role: "role",
    stamp: "updated_at",
    defaults: &[],
    cascades: true,
};

impl Shape {
    fn mapping_path(&self) -> Option<PathBuf> {
        self.mapping.map(|file| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/shapes")
                .join(file)
        })
    }

    async fn row(&self, db: &PgPool, id: Uuid) -> Option<Value> {
        sqlx::query_scalar(&format!(
            "select to_jsonb(t) from {} t where {} = $1",
            self.table, self.key
        ))
        .bind(id)
        .fetch_optional(db)
        .await
        .unwrap()
    }
}

/// Sign-up (trigger), sign-in, email change, sync-one and hard delete, against one shape.
async fn exercise(shape: Shape) {
    let setup = shape.setup;
    let app = spawn_app_with(
        AppOptions {
            mapping: shape.mapping_path(),
            ..AppOptions::default()
        },
        |db| async move {
            sqlx::raw_sql(setup).execute(&db).await.unwrap();
        },
    )
    .await;
    let db = &app.db.pool;
    let ready: Value = app.get("/readyz").await.json().await.unwrap();
    assert_eq!(ready["checks"]["mapping"], "ok", "{ready}");
    install_triggers(db, shape.mapping_path().as_deref(), DeletedPolicy::Report).await;

    // Sign-up: the final row, with the app's own defaults for what the mapping leaves out.
    let id = gotrue::sign_up(
        &app.db.auth_admin,
        &SignUp::new("ada@example.com")
            .user_metadata(json!({"full_name": "Ada"}))
            .app_metadata(json!({"role": "admin"}))
            .confirmed(),
    )
    .await
    .expect("the sign-up commits");
    let created = shape.row(db, id).await.expect("a row at commit");
    assert_eq!(created[shape.email], "ada@example.com", "{created}");
    assert_eq!(created[shape.role], "admin", "{created}");
    for (column, value) in shape.defaults {
        assert_eq!(created[*column].to_string(), *value, "{created}");
    }
    assert_eq!(events_of(db, id).await.len(), 1);

    // Sign-in: nothing written.
    gotrue::sign_in(&app.db.auth_admin, id).await.unwrap();
    let github = gotrue::OAuthIdentity::github(1815, "ada", "Ada L.", "ada@example.com", true);
    gotrue::oauth_sign_in(&app.db.auth_admin, &github)
        .await
        .unwrap();
    assert_eq!(shape.row(db, id).await.unwrap(), created);
    assert_eq!(events_of(db, id).await.len(), 1);

    // Email change: only once confirmed.
    gotrue::request_email_change(&app.db.auth_admin, id, "ada@new.example.com")
        .await
        .unwrap();
    assert_eq!(
        shape.row(db, id).await.unwrap()[shape.email],
        "ada@example.com"
    );
    gotrue::confirm_email_change(&app.db.auth_admin, id)
        .await
        .unwrap();
    let changed = shape.row(db, id).await.unwrap();
    assert_eq!(changed[shape.email], "ada@new.example.com");
    assert_ne!(changed[shape.stamp], created[shape.stamp]);

    // The call path agrees with what the trigger path wrote.
    let response = app.sync_me(&user_token(id)).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["action"], "unchanged", "{body}");

    // Hard delete: reported; the row stays unless the table cascades.
    gotrue::delete_user(&app.db.auth_admin, id)
        .await
        .expect("the delete commits");
    assert_eq!(shape.row(db, id).await.is_none(), shape.cascades);
    let reported = ("trigger".into(), "deleted".into(), "reported".into());
    let letters: Vec<(String, String)> =
        sqlx::query_as("select op, error from usersync.dead_letters where user_id = $1")
            .bind(id)
            .fetch_all(db)
            .await
            .unwrap();
    let events = events_of(db, id).await;
    assert_eq!(events.last().unwrap(), &reported, "{events:?} {letters:?}");
}

#[tokio::test]
async fn public_users_with_a_not_null_credits_column_with_a_default() {
    exercise(USERS_WITH_CREDITS).await;
}

#[tokio::test]
async fn onagui_app_users_in_another_schema_with_its_own_mapping() {
    exercise(ONAGUI_APP_USERS).await;
}

#[tokio::test]
async fn public_profiles_with_a_cascading_foreign_key_to_auth_users() {
    exercise(PUBLIC_PROFILES).await;
}
