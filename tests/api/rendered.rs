//! The SQL usersync renders from a mapping, in plain sight: every statement of each family
//! (sync, drift, repairs, triggers), for each mapping shape the tests know, is committed under
//! `tests/snapshots/` and compared here, so a change to what "stale" means shows in review as
//! a change of SQL, the way a change of the API shows in `openapi/openapi.json`. Refresh them
//! with `INSTA_UPDATE=always cargo test --test api rendered::` (README, "The mapping").
//!
//! Each statement is also prepared against the shape's real table, so that a syntax or type
//! error fails here rather than in a user's request.

use std::path::PathBuf;

use sqlx::Executor;

use crate::helpers::*;
use usersync::compiler::bind::BoundMapping;
use usersync::compiler::mapping::Mapping;
use usersync::compiler::render::triggers;
use usersync::repo::rekey;
use usersync::vocabulary::policy::DeletedPolicy;
use usersync::vocabulary::DriftKind;

/// A mapping shape: the fixture that makes its table and the mapping file, as `shapes.rs`
/// and `scale.rs` know them. `None` is the built-in `public.users` and mapping.
struct Shape {
    name: &'static str,
    setup: Option<&'static str>,
    mapping: Option<&'static str>,
}

const SHAPES: [Shape; 4] = [
    Shape {
        name: "default",
        setup: None,
        mapping: None,
    },
    Shape {
        name: "users_with_credits",
        setup: Some(include_str!("../fixtures/shapes/users_with_credits.sql")),
        mapping: None,
    },
    Shape {
        name: "onagui_app_users",
        setup: Some(include_str!("../fixtures/shapes/onagui_app_users.sql")),
        mapping: Some("onagui_app_users.toml"),
    },
    Shape {
        name: "public_profiles",
        setup: Some(include_str!("../fixtures/shapes/public_profiles.sql")),
        mapping: Some("public_profiles.toml"),
    },
];

/// One family's statements, named, in the order they are listed.
struct Family {
    name: &'static str,
    /// Statements the service prepares and runs: each is prepared here.
    statements: Vec<(String, String)>,
    /// Scripts (the trigger functions' DDL): shown, and run by `triggers.rs`'s tests.
    scripts: Vec<(String, String)>,
}

impl Family {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            statements: Vec::new(),
            scripts: Vec::new(),
        }
    }

    fn statement(&mut self, name: impl Into<String>, sql: &str) {
        self.statements.push((name.into(), sql.to_owned()));
    }

    /// The family as one SQL file: each statement under a comment naming it.
    fn render(&self) -> String {
        self.statements
            .iter()
            .chain(&self.scripts)
            .map(|(name, sql)| format!("-- {name}\n{};\n", sql.trim_end()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

async fn bind(db: &TestDb, shape: &Shape) -> BoundMapping {
    if let Some(setup) = shape.setup {
        sqlx::raw_sql(setup).execute(&db.pool).await.unwrap();
    }
    let path = shape.mapping.map(|file| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/shapes")
            .join(file)
    });
    BoundMapping::bind(&db.pool, Mapping::load(path.as_deref()).unwrap())
        .await
        .unwrap()
}

/// Every statement a bound mapping renders, by family.
async fn families(db: &TestDb, bound: &BoundMapping) -> Vec<Family> {
    let sql = &bound.sql;

    let mut sync = Family::new("sync");
    sync.statement("sync_one", &sql.sync_one);
    sync.statement("sync_batch", &sql.sync_batch);
    sync.statement("deleted_report", sql.deleted(DeletedPolicy::Report));
    sync.statement("deleted_delete", sql.deleted(DeletedPolicy::Delete));
    sync.statement("orphan_one", &sql.orphan_one);
    sync.statement("namesake_of", &sql.namesake_of);
    sync.statement("user_sides", &sql.user_sides);
    sync.statement("find_by_email", &sql.find_by_email);

    let mut drift = Family::new("drift");
    drift.statement("drift_one", &sql.drift_one);
    drift.statement("status", &sql.status);
    drift.statement("oldest_missing", &sql.oldest_missing);
    drift.statement("totals", &sql.totals);
    for kind in DriftKind::ALL {
        drift.statement(format!("count.{}", kind.as_str()), &sql.count[&kind]);
    }
    for kind in DriftKind::ALL {
        drift.statement(
            format!("drift_page.{}", kind.as_str()),
            &sql.drift_page[&kind],
        );
    }

    let repair = &sql.repair;
    let mut repairs = Family::new("repairs");
    for (name, statement) in [
        ("pages", &repair.pages),
        ("source_rows", &repair.source_rows),
        ("target_rows", &repair.target_rows),
        ("source_ids", &repair.source_ids),
        ("target_ids", &repair.target_ids),
        ("source_place", &repair.source_place),
        ("target_place", &repair.target_place),
        ("create_missing.unguarded", &repair.create_missing.unguarded),
        ("create_missing.guarded", &repair.create_missing.guarded),
        (
            "create_missing_known_strays.unguarded",
            &repair.create_missing_known_strays.unguarded,
        ),
        (
            "create_missing_known_strays.guarded",
            &repair.create_missing_known_strays.guarded,
        ),
        ("stray_emails", &repair.stray_emails),
        ("update_stale", &repair.update_stale),
        ("delete_deleted", &repair.delete_deleted),
        ("delete_orphaned", &repair.delete_orphaned),
        ("orphans", &repair.orphans),
        ("pairs", &repair.pairs),
    ] {
        repairs.statement(name, statement);
    }
    if let Some(refused) = &repair.refused_users {
        repairs.statement("refused_users", refused);
    }
    let references = rekey::references(&db.pool, bound)
        .await
        .unwrap()
        .expect("every shape can be re-keyed");
    repairs.statement("rekey", &rekey::statement(bound, &references));

    let mut trigger_path = Family::new("triggers");
    trigger_path.scripts.push((
        "install (deleted policy: report)".into(),
        triggers::install_sql(bound, DeletedPolicy::Report),
    ));
    trigger_path
        .scripts
        .push(("uninstall".into(), triggers::uninstall_sql()));

    vec![sync, drift, repairs, trigger_path]
}

#[tokio::test]
async fn every_rendered_statement_prepares_and_matches_its_snapshot() {
    for shape in &SHAPES {
        let db = TestDb::new().await;
        let bound = bind(&db, shape).await;
        let mut conn = db.pool.acquire().await.unwrap();
        for family in families(&db, &bound).await {
            for (name, sql) in &family.statements {
                if let Err(e) = conn.prepare(sql.as_str()).await {
                    panic!(
                        "{} / {}: {name} does not prepare: {e}\n{sql}",
                        shape.name, family.name
                    );
                }
            }
            insta::with_settings!({
                snapshot_path => "../snapshots/sql",
                prepend_module_to_snapshot => false,
                omit_expression => true,
                description => format!("usersync's {} statements for the {} shape", family.name, shape.name),
            }, {
                insta::assert_snapshot!(format!("{}__{}", shape.name, family.name), family.render());
            });
        }
    }
}
