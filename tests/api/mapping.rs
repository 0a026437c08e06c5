//! The mapping is checked against the real table at start-up: each way it can fail to fit is
//! one clear error naming the column.

use usersync::compiler::mapping::DEFAULT_MAPPING_TOML;
use usersync::startup::Application;

use crate::helpers::*;

/// The built-in mapping plus `extra` TOML, in a file of its own.
fn default_plus(extra: &str) -> tempfile::NamedTempFile {
    mapping_file(&format!("{DEFAULT_MAPPING_TOML}\n{extra}\n"))
}

/// Starts the application against a fresh database altered by `alter`; returns the error.
async fn start_up_error(alter: &str, extra: &str) -> String {
    let db = TestDb::new().await;
    if !alter.is_empty() {
        sqlx::raw_sql(alter).execute(&db.pool).await.unwrap();
    }
    let mapping = default_plus(extra);
    let options = AppOptions {
        mapping: Some(mapping.path().to_owned()),
        ..AppOptions::default()
    };
    let config = serve_config(&db.url(), &options);
    let built = Application::build(
        &config,
        usersync::db::pool(&config.database.pool_settings()),
    )
    .await;
    match built {
        Ok(_) => panic!("started with a mapping that does not fit: {extra}"),
        Err(e) => format!("{e:#}"),
    }
}

#[tokio::test]
async fn a_mapping_that_does_not_fit_the_table_stops_the_start_up_naming_the_column() {
    let cases = [
        (
            "",
            "[columns.nickname]\nuser_metadata = [\"nickname\"]\nsync = \"on_create\"",
            "column `nickname`: does not exist",
        ),
        (
            "alter table public.users add column age integer",
            "[columns.age]\nsource = \"email\"\nsync = \"always\"",
            "column `age`: its value cannot be stored",
        ),
        (
            "alter table public.users add column first_seen timestamptz",
            "[columns.first_seen]\nsource = \"id\"\nsync = \"on_create\"",
            "column `first_seen`: its value cannot be stored",
        ),
        (
            "alter table public.users add column plan text not null",
            "",
            "column `plan`: is NOT NULL",
        ),
        (
            "alter table public.users add column email_lower text generated always as (lower(email)) stored",
            "[columns.email_lower]\nsource = \"email\"\nsync = \"always\"",
            "column `email_lower`: is generated",
        ),
        (
            "alter table public.users add column signed_up_at timestamptz",
            "[columns.signed_up_at]\nvalue = \"now()\"\nsync = \"on_create\"",
            "now = true",
        ),
    ];
    // One after the other: each starts an application, and a burst of them on a busy server
    // would time out on connections rather than test the mapping.
    for (alter, extra, expected) in cases {
        let error = start_up_error(alter, extra).await;
        assert!(error.contains(expected), "{expected:?} not in: {error}");
        assert_eq!(error.lines().count(), 1, "{error}");
    }
}

#[test]
fn serve_with_a_mapping_that_does_not_fit_exits_with_one_line_naming_the_column() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let db = TestDb::new().await;
        let mapping = default_plus(
            "[columns.nickname]\nuser_metadata = [\"nickname\"]\nsync = \"on_create\"",
        );
        let (code, _, stderr) = usersync_cli(
            &["serve"],
            &[
                ("DATABASE_URL", &db.url()),
                ("USERSYNC_JWT_SECRET", JWT_SECRET),
                ("USERSYNC_LISTEN", "127.0.0.1:0"),
                ("USERSYNC_MAPPING", mapping.path().to_str().unwrap()),
            ],
        );
        assert_ne!(code, 0);
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains("`nickname`"), "{stderr}");
    });
}
