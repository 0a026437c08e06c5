//! The binary's start-up: a bad setting stops it with one line that names the variable.

use crate::helpers::*;

#[test]
fn a_missing_or_malformed_setting_is_one_line_naming_the_variable() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[], "DATABASE_URL"),
        (&[("DATABASE_URL", "mysql://x")], "DATABASE_URL"),
        (
            &[(
                "DATABASE_URL",
                "postgres://u:pw@db.pooler.supabase.com:6543/postgres",
            )],
            "DATABASE_URL",
        ),
        (
            &[
                ("DATABASE_URL", "postgres://localhost/db"),
                ("USERSYNC_LISTEN", "nope"),
            ],
            "USERSYNC_LISTEN",
        ),
        (
            &[
                ("DATABASE_URL", "postgres://localhost/db"),
                ("USERSYNC_JWT_SECRET", "short"),
            ],
            "USERSYNC_JWT_SECRET",
        ),
        (
            &[
                ("DATABASE_URL", "postgres://localhost/db"),
                ("USERSYNC_REQUEST_TIMEOUT", "soon"),
            ],
            "USERSYNC_REQUEST_TIMEOUT",
        ),
        (
            &[
                ("DATABASE_URL", "postgres://localhost/db"),
                ("USERSYNC_JWKS_URL", "ftp://keys.example/jwks.json"),
            ],
            "USERSYNC_JWKS_URL",
        ),
        (
            &[
                ("DATABASE_URL", "postgres://localhost/db"),
                ("USERSYNC_JWKS_FROM_ISSUER", "true"),
            ],
            "USERSYNC_JWKS_FROM_ISSUER",
        ),
        (
            &[
                ("DATABASE_URL", "postgres://localhost/db"),
                ("USERSYNC_CORS_ORIGINS", "https://app.example.com/path"),
            ],
            "USERSYNC_CORS_ORIGINS",
        ),
        (
            &[
                ("DATABASE_URL", "postgres://localhost/db"),
                ("USERSYNC_RATE_LIMIT_PER_MINUTE", "lots"),
            ],
            "USERSYNC_RATE_LIMIT_PER_MINUTE",
        ),
        (
            &[
                ("DATABASE_URL", "postgres://localhost/db"),
                ("USERSYNC_HEALING", "maybe"),
            ],
            "USERSYNC_HEALING",
        ),
        (
            &[
                ("DATABASE_URL", "postgres://localhost/db"),
                ("USERSYNC_HEALING_RETRY_SCHEDULE", "5s,,1m"),
            ],
            "USERSYNC_HEALING_RETRY_SCHEDULE",
        ),
        (
            &[
                ("DATABASE_URL", "postgres://localhost/db"),
                ("USERSYNC_HEALING_SWEEP_INTERVAL", "0"),
            ],
            "USERSYNC_HEALING_SWEEP_INTERVAL",
        ),
        (
            &[
                ("DATABASE_URL", "postgres://localhost/db"),
                ("USERSYNC_RECONCILE_INTERVAL", "hourly"),
            ],
            "USERSYNC_RECONCILE_INTERVAL",
        ),
        (
            &[
                ("DATABASE_URL", "postgres://localhost/db"),
                ("USERSYNC_POLICY_DELETED", "purge"),
            ],
            "USERSYNC_POLICY_DELETED",
        ),
        (
            &[
                ("DATABASE_URL", "postgres://localhost/db"),
                ("USERSYNC_WEBHOOK_SECRET", "short"),
            ],
            "USERSYNC_WEBHOOK_SECRET",
        ),
    ];
    for (env, var) in cases {
        let (code, _, stderr) = usersync_cli(&["serve"], env);
        assert_ne!(code, 0, "{env:?}");
        assert_eq!(stderr.trim().lines().count(), 1, "not one line: {stderr}");
        assert!(stderr.contains(var), "{var} not named in: {stderr}");
        assert!(
            !stderr.contains("pw@"),
            "the URL's password leaked: {stderr}"
        );
    }
}

#[test]
fn serve_without_any_way_to_authenticate_refuses_to_start() {
    let db = std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://localhost/db".into());
    let (code, _, stderr) = usersync_cli(&["serve"], &[("DATABASE_URL", &db)]);
    assert_ne!(code, 0);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("USERSYNC_JWT_SECRET"), "{stderr}");
}

#[test]
fn token_mints_a_token_the_service_accepts() {
    let (code, stdout, stderr) = usersync_cli(
        &["token", "--service"],
        &[("USERSYNC_JWT_SECRET", JWT_SECRET)],
    );
    assert_eq!(code, 0, "{stderr}");
    let token = stdout.trim().to_owned();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let app = spawn_app().await;
        assert_eq!(app.status(&Auth::Bearer(token)).await.status(), 200);
        let id = app
            .insert_auth_user(&AuthUser::new("cli@example.com"))
            .await;
        let (code, stdout, _) = usersync_cli(
            &["token", "--sub", &id.to_string()],
            &[("USERSYNC_JWT_SECRET", JWT_SECRET)],
        );
        assert_eq!(code, 0);
        let response = app.sync_me(&Auth::Bearer(stdout.trim().to_owned())).await;
        assert_eq!(response.status(), 200);
    });
}

#[test]
fn token_refuses_a_secret_serve_would_refuse() {
    let (code, stdout, stderr) = usersync_cli(
        &["token", "--service"],
        &[("USERSYNC_JWT_SECRET", "only-twenty-characte")],
    );
    assert_ne!(code, 0);
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains("must be at least 32 characters long"),
        "{stderr}"
    );
    assert!(!stderr.contains("only-twenty-characte"), "{stderr}");
}

#[test]
fn migrate_can_run_any_number_of_times() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let db = TestDb::new().await;
        for _ in 0..2 {
            let (code, _, stderr) = usersync_cli(&["migrate"], &[("DATABASE_URL", &db.url())]);
            assert_eq!(code, 0, "{stderr}");
        }
        // sqlx's bookkeeping stays out of `public`, which Supabase exposes over its data API.
        let in_public: bool =
            sqlx::query_scalar("select to_regclass('public._sqlx_migrations') is not null")
                .fetch_one(&db.pool)
                .await
                .unwrap();
        assert!(!in_public);
    });
}

#[test]
fn reconcile_prints_a_summary_and_fails_unless_the_run_succeeds() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let app = spawn_app().await;
        let s = crate::drift::seed(&app).await;
        let url = app.db.url();
        let db = [("DATABASE_URL", url.as_str())];

        let (code, stdout, stderr) = usersync_cli(&["reconcile", "--dry-run"], &db);
        assert_eq!(code, 0, "{stderr}");
        assert!(stdout.contains("succeeded (dry run)"), "{stdout}");
        let missing = stdout.lines().find(|l| l.starts_with("missing")).unwrap();
        assert_eq!(
            missing.split_whitespace().collect::<Vec<_>>(),
            ["missing", "create", "1", "0", "0"]
        );
        assert!(app.target_row(s.missing).await.is_none());

        let (code, stdout, stderr) =
            usersync_cli(&["reconcile", "--kind", "missing", "--kind", "stale"], &db);
        assert_eq!(code, 0, "{stderr}");
        let missing = stdout.lines().find(|l| l.starts_with("missing")).unwrap();
        assert_eq!(
            missing.split_whitespace().collect::<Vec<_>>(),
            ["missing", "create", "1", "1", "0"]
        );
        assert!(app.target_row(s.missing).await.is_some());

        // Deleting the orphan would delete a fifth of the target: the guard stops the run.
        let (code, stdout, _) = usersync_cli(
            &["reconcile", "--kind", "orphaned"],
            &[
                ("DATABASE_URL", &url),
                ("USERSYNC_POLICY_ORPHANED", "delete"),
            ],
        );
        assert_eq!(code, 1, "{stdout}");
        assert!(stdout.contains("needs_override"), "{stdout}");
        assert!(app.target_row(s.orphaned).await.is_some());

        let (code, _, stderr) = usersync_cli(
            &["reconcile", "--kind", "orphaned", "--allow-mass-delete"],
            &[
                ("DATABASE_URL", &url),
                ("USERSYNC_POLICY_ORPHANED", "delete"),
            ],
        );
        assert_eq!(code, 0, "{stderr}");
        assert!(app.target_row(s.orphaned).await.is_none());
    });
}

#[test]
fn provisioning_without_an_admin_api_refuses_to_start() {
    let (code, _, stderr) = usersync_cli(
        &["reconcile", "--dry-run"],
        &[
            ("DATABASE_URL", "postgres://localhost/db"),
            ("USERSYNC_POLICY_ORPHANED", "provision"),
        ],
    );
    assert_ne!(code, 0);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("USERSYNC_SUPABASE_URL"), "{stderr}");
}

#[test]
fn a_slow_run_prints_no_statement_on_stderr() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let db = TestDb::new().await;
        AuthUser::new("slow@example.com").insert(&db.pool).await;
        // Every statement that writes the target now takes over a second: the run's insert is
        // a statement sqlx would log as slow.
        sqlx::raw_sql(
            "create function public.slowly() returns trigger language plpgsql
             set search_path = '' as $$ begin perform pg_sleep(1.1); return null; end $$;
             create trigger slowly before insert on public.users
               for each statement execute function public.slowly();",
        )
        .execute(&db.pool)
        .await
        .unwrap();
        let (code, stdout, stderr) = usersync_cli(
            &["reconcile", "--kind", "missing"],
            &[("DATABASE_URL", &db.url()), ("RUST_LOG", "info")],
        );
        assert_eq!(code, 0, "{stderr}");
        assert!(stdout.contains("succeeded"), "{stdout}");
        assert!(!stderr.contains("slow statement"), "{stderr}");
        assert!(!stderr.to_lowercase().contains("insert into"), "{stderr}");
    });
}
