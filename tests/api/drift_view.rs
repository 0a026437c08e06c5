//! Drift in SQL: the view `usersync.user_drift`, installed with the triggers. Its counts are
//! `GET /v1/status`'s on every fixture shape, a lookup by `user_id` is a user's own drift, and
//! only its owner may read it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::*;
use usersync::vocabulary::policy::DeletedPolicy;

const KINDS: [&str; 5] = ["missing", "stale", "mismatched", "orphaned", "deleted"];

/// A target table as `shapes` knows it, and how to write a profile into it by hand.
struct Shape {
    setup: Option<&'static str>,
    mapping: Option<&'static str>,
    table: &'static str,
    /// The column that holds the email.
    email: &'static str,
    /// Inserts a profile: `$1` its key, `$2` its email. `None`: every profile must have an auth
    /// user (a foreign key), so there are no strays, mismatches or orphans.
    insert_stray: Option<&'static str>,
    /// A hard-deleted auth user takes its profile with it.
    cascades: bool,
}

const DEFAULT: Shape = Shape {
    setup: None,
    mapping: None,
    table: "public.users",
    email: "email",
    insert_stray: Some("insert into public.users (id, email) values ($1, $2)"),
    cascades: false,
};

const CREDITS: Shape = Shape {
    setup: Some(include_str!("../fixtures/shapes/users_with_credits.sql")),
    ..DEFAULT
};

const ONAGUI: Shape = Shape {
    setup: Some(include_str!("../fixtures/shapes/onagui_app_users.sql")),
    mapping: Some("onagui_app_users.toml"),
    table: "onagui.app_users",
    email: "contact_email",
    insert_stray: Some(
        "insert into onagui.app_users (auth_user_id, contact_email, joined_at)
         values ($1, $2, now())",
    ),
    cascades: false,
};

const PROFILES: Shape = Shape {
    setup: Some(include_str!("../fixtures/shapes/public_profiles.sql")),
    mapping: Some("public_profiles.toml"),
    table: "public.profiles",
    email: "email",
    insert_stray: None,
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
}

/// The ids seeded into each kind (and some that are in sync).
#[derive(Default)]
struct Seeded {
    expected: BTreeMap<&'static str, BTreeSet<Uuid>>,
    in_sync: Vec<Uuid>,
    /// Profiles that are the target half of a mismatch: in no row of their own.
    mismatched_targets: Vec<Uuid>,
}

impl Seeded {
    fn expect(&mut self, kind: &'static str, id: Uuid) {
        self.expected.entry(kind).or_default().insert(id);
    }
}

async fn synced(app: &TestApp, email: &str) -> Uuid {
    let id = app.insert_auth_user(&AuthUser::new(email)).await;
    let response = app.sync_user(&id.to_string(), &secret_key()).await;
    assert_eq!(response.status(), 200, "{email}");
    id
}

/// Some drift of every kind the shape can have, through the service and by hand.
async fn seed(app: &TestApp, shape: &Shape) -> Seeded {
    let db = &app.db.pool;
    let mut s = Seeded::default();
    for i in 0..2 {
        let id = synced(app, &format!("ok{i}@example.com")).await;
        s.in_sync.push(id);
    }
    for i in 0..3 {
        let id = app
            .insert_auth_user(&AuthUser::new(&format!("missing{i}@example.com")))
            .await;
        s.expect("missing", id);
    }
    for i in 0..2 {
        let id = synced(app, &format!("stale{i}@example.com")).await;
        sqlx::query("update auth.users set email = 'changed-' || email where id = $1")
            .bind(id)
            .execute(db)
            .await
            .unwrap();
        s.expect("stale", id);
    }
    let soft = synced(app, "soft@example.com").await;
    sqlx::query("update auth.users set deleted_at = now() where id = $1")
        .bind(soft)
        .execute(db)
        .await
        .unwrap();
    s.expect("deleted", soft);
    let hard = synced(app, "hard@example.com").await;
    sqlx::query("delete from auth.users where id = $1")
        .bind(hard)
        .execute(db)
        .await
        .unwrap();
    if !shape.cascades {
        s.expect("deleted", hard);
    }
    if let Some(insert) = shape.insert_stray {
        let stray = |email: &'static str| async move {
            let id = Uuid::new_v4();
            sqlx::query(insert)
                .bind(id)
                .bind(email)
                .execute(db)
                .await
                .unwrap();
            id
        };
        // One auth user whose email two profiles hold under ids no auth user has: one
        // mismatch (ambiguous), and neither profile is an orphan.
        let twice = app
            .insert_auth_user(&AuthUser::new("twice@example.com"))
            .await;
        s.expect("mismatched", twice);
        s.mismatched_targets.push(stray("TWICE@example.com").await);
        s.mismatched_targets.push(stray("twice@example.com").await);
        // An SSO user may share an email: missing, and the profile holding it an orphan.
        let mut sso = AuthUser::new("shared@example.com");
        sso.is_sso_user = true;
        s.expect("missing", app.insert_auth_user(&sso).await);
        s.expect("orphaned", stray("shared@example.com").await);
        s.expect("orphaned", stray("nobody@example.com").await);
    }
    s
}

/// The view's counts, every kind present (zero when it has no row).
async fn view_counts(db: &PgPool) -> Value {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("select kind, count(*) from usersync.user_drift group by 1")
            .fetch_all(db)
            .await
            .unwrap();
    let mut counts = serde_json::Map::new();
    for kind in KINDS {
        counts.insert(kind.into(), json!(0));
    }
    for (kind, count) in rows {
        assert!(KINDS.contains(&kind.as_str()), "{kind}");
        counts.insert(kind, json!(count));
    }
    Value::Object(counts)
}

async fn kinds_of(db: &PgPool, id: Uuid) -> Vec<String> {
    sqlx::query_scalar("select kind from usersync.user_drift where user_id = $1 order by kind")
        .bind(id)
        .fetch_all(db)
        .await
        .unwrap()
}

async fn status_drift(app: &TestApp) -> Value {
    let response = app.status(&secret_key()).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["drift"].clone()
}

async fn counts_equal_the_status(shape: Shape) {
    let setup = shape.setup;
    let app = spawn_app_with(
        AppOptions {
            mapping: shape.mapping_path(),
            ..AppOptions::default()
        },
        |db| async move {
            if let Some(setup) = setup {
                sqlx::raw_sql(setup).execute(&db).await.unwrap();
            }
        },
    )
    .await;
    let db = &app.db.pool;
    let seeded = seed(&app, &shape).await;
    install_triggers(db, shape.mapping_path().as_deref(), DeletedPolicy::Report).await;

    let status = status_drift(&app).await;
    assert_eq!(view_counts(db).await, status, "{}", shape.table);
    for kind in KINDS {
        let expected = seeded.expected.get(kind).cloned().unwrap_or_default();
        assert_eq!(status[kind], expected.len(), "{} {kind}", shape.table);
        let listed: BTreeSet<Uuid> =
            sqlx::query_scalar("select user_id from usersync.user_drift where kind = $1")
                .bind(kind)
                .fetch_all(db)
                .await
                .unwrap()
                .into_iter()
                .collect();
        assert_eq!(listed, expected, "{} {kind}", shape.table);
    }

    // A lookup by user_id is the user's own drift, as `GET /v1/users/{id}/drift` says it.
    for (kind, ids) in &seeded.expected {
        for id in ids {
            assert_eq!(kinds_of(db, *id).await, [*kind], "{} {id}", shape.table);
            if *kind == "missing" || *kind == "stale" {
                let response = app.drift(&id.to_string(), &secret_key()).await;
                let body: Value = response.json().await.unwrap();
                assert_eq!(body["drift"], json!([kind]), "{} {id}", shape.table);
            }
        }
    }
    for id in &seeded.in_sync {
        assert!(kinds_of(db, *id).await.is_empty());
    }
    // A mismatch is one row, under the auth user's id; its profiles are in the detail.
    for id in &seeded.mismatched_targets {
        assert!(kinds_of(db, *id).await.is_empty());
    }
    if let Some(source) = seeded.expected.get("mismatched") {
        let detail: Value = sqlx::query_scalar(
            "select detail from usersync.user_drift where kind = 'mismatched' and user_id = $1",
        )
        .bind(source.first().unwrap())
        .fetch_one(db)
        .await
        .unwrap();
        let mut targets = seeded.mismatched_targets.clone();
        targets.sort();
        assert_eq!(detail, json!({ "target_ids": targets }), "{}", shape.table);
    }
    let stale = seeded.expected["stale"].first().unwrap();
    let detail: Value = sqlx::query_scalar(
        "select detail from usersync.user_drift where kind = 'stale' and user_id = $1",
    )
    .bind(stale)
    .fetch_one(db)
    .await
    .unwrap();
    assert_eq!(
        detail,
        json!({ "columns": [shape.email] }),
        "{}",
        shape.table
    );
    let email: String = sqlx::query_scalar(
        "select email from usersync.user_drift where kind = 'stale' and user_id = $1",
    )
    .bind(stale)
    .fetch_one(db)
    .await
    .unwrap();
    assert!(email.starts_with("changed-stale"), "{email}");

    // A run repairs what it may; the view follows the status.
    app.reconcile(json!({"dry_run": false})).await;
    let status = status_drift(&app).await;
    assert_eq!(status["missing"], 0, "{status}");
    assert_eq!(view_counts(db).await, status, "{} after a run", shape.table);
}

#[tokio::test]
async fn the_views_counts_equal_the_status_on_public_users() {
    counts_equal_the_status(DEFAULT).await;
}

#[tokio::test]
async fn the_views_counts_equal_the_status_on_users_with_credits() {
    counts_equal_the_status(CREDITS).await;
}

#[tokio::test]
async fn the_views_counts_equal_the_status_on_onagui_app_users() {
    counts_equal_the_status(ONAGUI).await;
}

#[tokio::test]
async fn the_views_counts_equal_the_status_on_public_profiles() {
    counts_equal_the_status(PROFILES).await;
}

#[tokio::test]
async fn an_empty_project_has_no_drift_and_every_kind_counts_zero() {
    let app = spawn_app().await;
    install_triggers(&app.db.pool, None, DeletedPolicy::Report).await;
    let zero = json!({"missing": 0, "stale": 0, "mismatched": 0, "orphaned": 0, "deleted": 0});
    assert_eq!(status_drift(&app).await, zero);
    assert_eq!(view_counts(&app.db.pool).await, zero);
}

#[tokio::test]
async fn only_the_installing_role_may_read_the_view_whatever_the_default_privileges() {
    let db = TestDb::new().await;
    // Default privileges that would hand every new table in the schema to the API roles.
    sqlx::raw_sql(
        "alter default privileges in schema usersync
           grant select on tables to public, anon, authenticated",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    install_triggers(&db.pool, None, DeletedPolicy::Report).await;
    let readers: Vec<(String, bool)> = sqlx::query_as(
        "select r, has_table_privilege(r, 'usersync.user_drift', 'select')
           from unnest(array['anon', 'authenticated', 'hosted_norls', current_user::text]) r",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        readers,
        [
            ("anon".to_owned(), false),
            ("authenticated".to_owned(), false),
            ("hosted_norls".to_owned(), false),
            (HOSTED_ROLE.to_owned(), true),
        ]
    );
}

#[tokio::test]
async fn the_view_pins_no_column_so_the_apps_migrations_still_run() {
    let app = spawn_app().await;
    install_triggers(&app.db.pool, None, DeletedPolicy::Report).await;
    // A view reading these columns itself would refuse both: "cannot alter type of a column
    // used by a view or rule".
    app.exec("alter table public.users alter column email type varchar(320)")
        .await;
    app.exec("alter table public.users alter column role type varchar(64)")
        .await;
    // And the view still answers, through the retyped columns.
    assert_eq!(view_counts(&app.db.pool).await["missing"], 0);
}
