//! A blind source never deletes. A role that does not see every row of `auth.users` (row level
//! security, which hosted Supabase enables there with no policies, applies to any role without
//! BYPASSRLS; or a missing privilege) would take every profile for an orphan. Status, runs and
//! readiness say so in one line, naming the cause and the fix, and no override turns it into
//! deletes. A source that reads empty, or shrank alone since the last run, stops a deleting run
//! too.

use serde_json::Value;

use crate::helpers::*;

/// Six users with profiles, made and synced as the customer's role; `NO_RLS_BYPASS_ROLE` may then
/// use usersync's schema and the target, as a dedicated role would be set up.
async fn six_synced_users() -> TestDb {
    let db = TestDb::new().await;
    for n in 0..6 {
        AuthUser::new(&format!("user{n}@example.com"))
            .insert(&db.pool)
            .await;
    }
    let (code, stdout, stderr) = usersync_cli(&["reconcile"], &[("DATABASE_URL", &db.url())]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    sqlx::raw_sql(&format!(
        "grant usage on schema usersync to {role};
         grant all on all tables in schema usersync to {role};
         grant all on all sequences in schema usersync to {role};
         grant execute on all functions in schema usersync to {role};
         grant all on public.users to {role};",
        role = NO_RLS_BYPASS_ROLE
    ))
    .execute(&db.pool)
    .await
    .unwrap();
    db
}

async fn profiles(db: &TestDb) -> i64 {
    sqlx::query_scalar("select count(*) from public.users")
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_role_that_rls_blinds_gets_one_clear_line_and_deletes_nothing() {
    let db = six_synced_users().await;
    let url = db.url_as(NO_RLS_BYPASS_ROLE);
    let env = |extra: &[(&'static str, &'static str)]| {
        let mut env = vec![("DATABASE_URL", url.clone())];
        env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        env
    };
    let run_with = |args: &[&str], extra: &[(&'static str, &'static str)]| {
        let env = env(extra);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        usersync_cli(args, &env)
    };

    let (code, stdout, stderr) = run_with(&["status"], &[]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("row level security on auth.users applies to role hosted_norls")
            && stderr.contains("BYPASSRLS"),
        "{stderr}"
    );
    assert!(!stdout.contains("orphaned"), "no counts: {stdout}");

    for args in [
        &["reconcile", "--dry-run"][..],
        &["reconcile", "--allow-mass-delete"],
    ] {
        let (code, stdout, stderr) = run_with(
            args,
            &[
                ("USERSYNC_POLICY_ORPHANED", "delete"),
                ("USERSYNC_POLICY_DELETED", "delete"),
            ],
        );
        assert_eq!(code, 1, "{args:?}: {stdout}{stderr}");
        assert!(stdout.contains("failed"), "{stdout}");
        assert!(stdout.contains("row level security"), "{stdout}");
        assert!(!stdout.contains("orphaned"), "nothing planned: {stdout}");
        assert_eq!(profiles(&db).await, 6, "{args:?}");
    }

    let (code, stdout, _) = run_with(&["doctor"], &[]);
    assert_eq!(code, 1);
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("source-rls:") && l.contains("hosted_norls")),
        "{stdout}"
    );
}

#[tokio::test]
async fn the_service_is_not_ready_and_answers_503_source_unreadable_when_rls_blinds_it() {
    let db = six_synced_users().await;
    let service = ServeProcess::start(
        &db.url_as(NO_RLS_BYPASS_ROLE),
        &[
            ("USERSYNC_POLICY_ORPHANED", "delete"),
            ("USERSYNC_MAX_DELETE_SHARE", "1"),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let ready = client
        .get(format!("{}/readyz", service.address))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let ready: Value = ready.json().await.unwrap();
    assert!(
        ready["checks"]["source"]
            .as_str()
            .is_some_and(|s| s.contains("row level security")),
        "{ready}"
    );
    for path in ["/v1/status", "/v1/drift?kind=orphaned"] {
        let response = client
            .get(format!("{}{path}", service.address))
            .header("apikey", SERVICE_KEY)
            .send()
            .await
            .unwrap();
        assert_problem(response, 503, "source_unreadable").await;
    }
    let run: Value = client
        .post(format!("{}/v1/reconciliations", service.address))
        .header("apikey", SERVICE_KEY)
        .json(&serde_json::json!({"dry_run": false, "allow_mass_delete": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = run["id"].as_str().unwrap().to_owned();
    let mut state = String::new();
    for _ in 0..100 {
        let run: Value = client
            .get(format!("{}/v1/reconciliations/{id}", service.address))
            .header("apikey", SERVICE_KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        state = run["state"].as_str().unwrap().to_owned();
        if state != "planning" && state != "running" {
            assert!(run["error"]
                .as_str()
                .unwrap()
                .contains("row level security"));
            assert_eq!(run["plan"], Value::Null);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(state, "failed");
    assert_eq!(profiles(&db).await, 6);
    service.stop();
}

#[tokio::test]
async fn a_missing_select_is_named_with_the_grant_that_fixes_it() {
    let db = six_synced_users().await;
    // The fixture's grant was made by the platform's superuser; only it may take it back.
    sqlx::raw_sql(&format!(
        "revoke select on auth.users from {NO_RLS_BYPASS_ROLE}"
    ))
    .execute(&db.superuser)
    .await
    .unwrap();
    let url = db.url_as(NO_RLS_BYPASS_ROLE);
    let (code, _, stderr) = usersync_cli(&["status"], &[("DATABASE_URL", &url)]);
    assert_eq!(code, 1);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("may not SELECT auth.users")
            && stderr.contains("grant select on auth.users to hosted_norls"),
        "{stderr}"
    );
    let (_, stdout, _) = usersync_cli(&["doctor"], &[("DATABASE_URL", &url)]);
    assert!(
        stdout.lines().any(|l| l.starts_with("missing-privilege:")
            && l.contains("SELECT on table auth.users")
            && l.contains("grant select on table auth.users to hosted_norls")),
        "{stdout}"
    );
}

#[tokio::test]
async fn a_source_that_reads_empty_or_shrank_alone_stops_a_deleting_run_whatever_the_override() {
    let db = six_synced_users().await;
    let env = [
        ("DATABASE_URL", db.url()),
        ("USERSYNC_POLICY_DELETED", "delete".into()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();

    // Three of six users gone (the profiles stay: no trigger): the source shrank by half since
    // the last run, the target not at all.
    sqlx::raw_sql("delete from auth.users where email in ('user0@example.com', 'user1@example.com', 'user2@example.com')")
        .execute(&db.pool)
        .await
        .unwrap();
    let (code, stdout, _) = usersync_cli(&["reconcile", "--allow-mass-delete"], &env);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("shrank from 6 to 3 rows"), "{stdout}");
    assert_eq!(profiles(&db).await, 6);

    // Once a run that deletes nothing has seen the smaller source, deleting is planned anew.
    let (code, stdout, _) =
        usersync_cli(&["reconcile", "--kind", "missing", "--kind", "stale"], &env);
    assert_eq!(code, 0, "{stdout}");
    let (code, stdout, _) = usersync_cli(&["reconcile", "--allow-mass-delete"], &env);
    assert_eq!(code, 0, "{stdout}");
    assert_eq!(profiles(&db).await, 3);

    // Every auth user gone while profiles remain: the source reads empty.
    sqlx::raw_sql("delete from auth.users")
        .execute(&db.pool)
        .await
        .unwrap();
    let (code, stdout, _) = usersync_cli(&["reconcile", "--allow-mass-delete"], &env);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("auth.users reads empty"), "{stdout}");
    assert_eq!(profiles(&db).await, 3);
}

#[tokio::test]
async fn a_missing_privilege_is_named_once_with_its_object_never_as_a_mapping_error() {
    let db = six_synced_users().await;
    // The fixture's grant was made by the platform's superuser; only it may take it back.
    sqlx::raw_sql(&format!(
        "revoke usage on schema auth from {NO_RLS_BYPASS_ROLE}"
    ))
    .execute(&db.superuser)
    .await
    .unwrap();
    let url = db.url_as(NO_RLS_BYPASS_ROLE);
    // The mapping check reads auth.users: a privilege is missing, the mapping is fine.
    let (code, _, stderr) = usersync_cli(&["triggers", "show"], &[("DATABASE_URL", &url)]);
    assert_eq!(code, 1);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("role hosted_norls has no USAGE on schema auth"),
        "{stderr}"
    );
    assert!(!stderr.contains("cannot be stored"), "{stderr}");
    // migrate may not create in the database: said once, naming the database.
    let (code, _, stderr) = usersync_cli(&["migrate"], &[("DATABASE_URL", &url)]);
    assert_eq!(code, 1);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert_eq!(
        stderr.matches("permission denied for database").count(),
        1,
        "{stderr}"
    );
}
