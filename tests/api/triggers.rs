//! The trigger path: install, show and uninstall, and Supabase Auth's own statement sequences
//! replayed as `supabase_auth_admin` against the installed triggers.

use serde_json::{json, Value};
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use uuid::Uuid;

use crate::gotrue::{self, SignUp};
use crate::helpers::*;
use usersync::vocabulary::policy::DeletedPolicy;

/// Everything usersync's trigger path consists of in the catalog, the drift view included,
/// identities included (a re-created object would get a new oid).
async fn trigger_catalog(db: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "select format('trigger %s %s %s', t.oid, t.tgname, pg_get_triggerdef(t.oid))
           from pg_trigger t
          where t.tgrelid = 'auth.users'::regclass and not t.tgisinternal
         union all
         select format('function %s %s %s %s %s %s', p.oid, p.oid::regprocedure, p.prosecdef,
                       p.proconfig, p.proacl, md5(p.prosrc))
           from pg_proc p
          where p.oid in (to_regprocedure('usersync.sync_auth_user()'),
                          to_regprocedure('usersync.record_dead_letter(uuid, text, text, text)'))
         union all
         select format('view %s %s %s %s', c.oid, c.relname, c.relacl, md5(pg_get_viewdef(c.oid)))
           from pg_class c where c.oid = to_regclass('usersync.user_drift')
         union all
         select format('constraint %s %s', c.oid, c.conname)
           from pg_constraint c where c.conrelid = 'auth.users'::regclass and c.contype = 't'
         order by 1",
    )
    .fetch_all(db)
    .await
    .unwrap()
}

async fn auth_row(db: &PgPool, id: Uuid) -> Value {
    sqlx::query_scalar("select to_jsonb(u) from auth.users u where id = $1")
        .bind(id)
        .fetch_one(db)
        .await
        .unwrap()
}

/// Whether the update trigger's WHEN clause queues the change from `before` to the current row:
/// the clause, as Postgres keeps it, evaluated over the two versions.
async fn queues_update(db: &PgPool, id: Uuid, before: &Value) -> bool {
    let definition: String = sqlx::query_scalar(
        "select pg_get_triggerdef(oid) from pg_trigger
          where tgrelid = 'auth.users'::regclass and tgname like 'usersync\\_user\\_updated%'",
    )
    .fetch_one(db)
    .await
    .unwrap();
    let clause = definition
        .split_once(" WHEN ")
        .and_then(|(_, rest)| rest.rsplit_once(" EXECUTE FUNCTION "))
        .map(|(clause, _)| clause.replace("old.", "o.").replace("new.", "n."))
        .expect("the update trigger has a WHEN clause");
    sqlx::query_scalar(&format!(
        "select {clause}
           from (select jsonb_populate_record(null::auth.users, $1) as o) b,
                lateral (select (o).*) o, auth.users n
          where n.id = $2"
    ))
    .bind(before)
    .bind(id)
    .fetch_one(db)
    .await
    .unwrap()
}

async fn target_row(db: &PgPool, id: Uuid) -> Option<Value> {
    sqlx::query_scalar("select to_jsonb(u) from public.users u where id = $1")
        .bind(id)
        .fetch_optional(db)
        .await
        .unwrap()
}

#[test]
fn install_twice_changes_nothing_show_is_the_same_sql_and_uninstall_leaves_nothing() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let db = TestDb::new().await;
        let env = [("DATABASE_URL", db.url())];
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();

        let (code, stdout, stderr) = usersync_cli(&["triggers", "install"], &env);
        assert_eq!(code, 0, "{stderr}");
        assert!(stdout.contains("installed"), "{stdout}");
        let first = trigger_catalog(&db.pool).await;
        assert_eq!(
            first.iter().filter(|l| l.starts_with("trigger")).count(),
            3,
            "{first:#?}"
        );
        assert_eq!(
            first.iter().filter(|l| l.starts_with("function")).count(),
            2
        );
        assert_eq!(first.iter().filter(|l| l.starts_with("view")).count(), 1);
        // Both functions pin an empty search_path, are security definer, and nobody else may
        // execute them.
        for line in first.iter().filter(|l| l.starts_with("function")) {
            assert!(line.contains(r#"{"search_path=\"\""}"#), "{line}");
            assert!(line.contains(" t {"), "{line}");
        }

        let (code, _, stderr) = usersync_cli(&["triggers", "install"], &env);
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(
            trigger_catalog(&db.pool).await,
            first,
            "a second install changed something"
        );

        // `show` prints what `install` runs: one transaction that can be shipped as a migration
        // and re-run.
        let (code, sql, stderr) = usersync_cli(&["triggers", "show"], &env);
        assert_eq!(code, 0, "{stderr}");
        assert!(sql.trim_start().starts_with("--"), "{sql}");
        assert!(sql.contains("\nbegin;\n") && sql.trim_end().ends_with("commit;"));
        assert!(sql.contains("deferrable initially deferred"));
        assert!(sql.contains("security definer") && sql.contains("set search_path = ''"));
        assert!(sql.contains("exception when others"));
        assert!(sql.contains(
            "create or replace view usersync.user_drift (user_id, email, kind, detail) as"
        ));
        assert!(sql.contains("revoke all on usersync.user_drift from public;"));
        sqlx::raw_sql(&sql).execute(&db.pool).await.unwrap();
        assert_eq!(
            trigger_catalog(&db.pool).await,
            first,
            "the shown SQL differs"
        );

        // The customer's role may not drop triggers on auth.users: uninstall neutralises them
        // and says, in one line, what to run and as whom.
        let (code, stdout, stderr) = usersync_cli(&["triggers", "uninstall"], &env);
        assert_eq!(code, 0, "{stdout}{stderr}");
        let line = stdout.trim();
        assert_eq!(line.lines().count(), 1, "{stdout}");
        assert!(line.contains("neutralised"), "{line}");
        let (_, drop) = line
            .split_once("run as supabase_auth_admin: ")
            .expect("names the owner");
        let neutral = trigger_catalog(&db.pool).await;
        assert_eq!(
            neutral.iter().filter(|l| l.starts_with("trigger")).count(),
            3
        );
        assert_eq!(
            neutral.iter().filter(|l| l.starts_with("function")).count(),
            1
        );
        // The view is usersync's own: it goes at once.
        assert_eq!(neutral.iter().filter(|l| l.starts_with("view")).count(), 0);
        // A sign-up through the neutralised triggers commits and leaves nothing behind.
        let id = gotrue::sign_up(&db.auth_admin, &SignUp::new("after@example.com"))
            .await
            .expect("the sign-up commits");
        assert_eq!(target_row(&db.pool, id).await, None);
        assert!(events_of(&db.pool, id).await.is_empty());
        let letters: i64 = sqlx::query_scalar("select count(*) from usersync.dead_letters")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(letters, 0);

        // The owner runs what it was told; then uninstall removes the rest, and again nothing.
        sqlx::raw_sql(drop).execute(&db.auth_admin).await.unwrap();
        for _ in 0..2 {
            let (code, stdout, stderr) = usersync_cli(&["triggers", "uninstall"], &env);
            assert_eq!(code, 0, "{stderr}");
            assert!(stdout.contains("removed"), "{stdout}");
            assert_eq!(trigger_catalog(&db.pool).await, Vec::<String>::new());
        }
    });
}

#[tokio::test]
async fn uninstall_never_touches_a_trigger_that_is_not_usersyncs() {
    let db = TestDb::new().await;
    install_triggers(&db.pool, None, DeletedPolicy::Report).await;
    sqlx::raw_sql(
        "create function public.audit_signup() returns trigger language plpgsql
         security definer set search_path = '' as $$
         begin return null; exception when others then return null; end $$;
         create trigger audit_signup after insert on auth.users
           for each row execute function public.audit_signup();",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    // As the customer's role (who may not drop triggers on auth.users: it neutralises them),
    // then as a superuser (who may: it removes them).
    for url in [db.url(), db.superuser_url()] {
        let (code, stdout, stderr) =
            usersync_cli(&["triggers", "uninstall"], &[("DATABASE_URL", &url)]);
        assert_eq!(code, 0, "{stdout}{stderr}");
    }
    let left: Vec<String> = sqlx::query_scalar(
        "select tgname::text from pg_trigger
          where tgrelid = 'auth.users'::regclass and not tgisinternal order by 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(left, ["audit_signup"]);
}

#[tokio::test]
async fn a_sign_up_replayed_as_supabase_auth_admin_syncs_the_final_row_at_commit() {
    let db = TestDb::new().await;
    install_triggers(&db.pool, None, DeletedPolicy::Report).await;

    // The insert carries role '' and provider-only app metadata; the role and the admin's
    // custom app metadata arrive in later statements of the same transaction.
    let id = gotrue::sign_up(
        &db.auth_admin,
        &SignUp::new("ada@example.com")
            .user_metadata(json!({"full_name": "Ada Lovelace", "role": "admin"}))
            .app_metadata(json!({"role": "admin"})),
    )
    .await
    .expect("the sign-up commits");

    let row = target_row(&db.pool, id).await.expect("a profile at commit");
    assert_eq!(row["email"], "ada@example.com");
    assert_eq!(row["full_name"], "Ada Lovelace");
    assert_eq!(
        row["role"], "admin",
        "the final app metadata, not the insert's"
    );
    assert_eq!(
        events_of(&db.pool, id).await,
        [("trigger".into(), "missing".into(), "created".into())]
    );
}

#[tokio::test]
async fn a_role_in_user_metadata_never_reaches_the_profile_through_the_trigger() {
    let db = TestDb::new().await;
    install_triggers(&db.pool, None, DeletedPolicy::Report).await;
    let id = gotrue::sign_up(
        &db.auth_admin,
        &SignUp::new("mallory@example.com").user_metadata(json!({"role": "admin"})),
    )
    .await
    .unwrap();
    assert_eq!(target_row(&db.pool, id).await.unwrap()["role"], "user");
}

#[tokio::test]
async fn a_sign_in_writes_nothing_to_the_target() {
    let db = TestDb::new().await;
    install_triggers(&db.pool, None, DeletedPolicy::Report).await;
    let id = gotrue::sign_up(
        &db.auth_admin,
        &SignUp::new("grace@example.com")
            .user_metadata(json!({"full_name": "Grace"}))
            .confirmed(),
    )
    .await
    .unwrap();
    let before = target_row(&db.pool, id).await.unwrap();
    let auth_before = auth_row(&db.pool, id).await;

    // A password sign-in, then a GitHub sign-in with the same verified email, which links the
    // identity and merges the provider's claims into user_metadata (names are on_create: the
    // app owns them once the row exists).
    gotrue::sign_in(&db.auth_admin, id).await.unwrap();
    let github =
        gotrue::OAuthIdentity::github(7, "grace", "Grace Hopper", "grace@example.com", true);
    assert_eq!(
        gotrue::oauth_sign_in(&db.auth_admin, &github)
            .await
            .unwrap(),
        id
    );

    assert_eq!(target_row(&db.pool, id).await.unwrap(), before);
    assert_eq!(events_of(&db.pool, id).await.len(), 1, "only the creation");
    // Not even queued: the WHEN clause filters the sign-in out before the trigger runs.
    assert_ne!(auth_row(&db.pool, id).await, auth_before);
    assert!(!queues_update(&db.pool, id, &auth_before).await);
}

/// Function calls made in one transaction of Supabase Auth's, after its deferred triggers
/// fired, by usersync function: `(name, calls)`. As the superuser, because only it may turn on
/// `track_functions`, whose counts are kept per session.
async fn calls_in(db: &TestDb, id: Uuid, update: &str) -> Vec<(String, i64)> {
    let mut tx = db.superuser.begin().await.unwrap();
    sqlx::raw_sql(
        "set local track_functions = 'all'; set local role supabase_auth_admin;
         set local search_path = auth",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query(update)
        .bind(id)
        .execute(&mut *tx)
        .await
        .unwrap();
    // Fires every queued deferred trigger now, as the commit would.
    sqlx::raw_sql("set constraints all immediate; reset role")
        .execute(&mut *tx)
        .await
        .unwrap();
    let calls = sqlx::query_as(
        "select funcname::text, calls from pg_stat_xact_user_functions
          where schemaname = 'usersync' order by 1",
    )
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    calls
}

#[tokio::test]
async fn a_sign_in_calls_no_function_and_a_real_change_syncs_once() {
    let db = TestDb::new().await;
    install_triggers(&db.pool, None, DeletedPolicy::Report).await;
    let id = gotrue::sign_up(&db.auth_admin, &SignUp::new("ida@example.com"))
        .await
        .unwrap();

    // The WHEN clause's function is inlined: a sign-in calls nothing and queues nothing.
    let sign_in = "update users set last_sign_in_at = now(), updated_at = now() where id = $1";
    assert_eq!(calls_in(&db, id, sign_in).await, []);

    // A change the mapping reads queues the sync, which runs once; still no call of the WHEN's.
    let role = "update users set raw_app_meta_data = raw_app_meta_data || '{\"role\": \"admin\"}',
                                updated_at = now() where id = $1";
    assert_eq!(
        calls_in(&db, id, role).await,
        [("sync_auth_user".to_owned(), 1)]
    );
}

#[tokio::test]
async fn an_email_change_propagates_only_once_confirmed() {
    let db = TestDb::new().await;
    install_triggers(&db.pool, None, DeletedPolicy::Report).await;
    let id = gotrue::sign_up(&db.auth_admin, &SignUp::new("old@example.com"))
        .await
        .unwrap();

    let auth_before = auth_row(&db.pool, id).await;
    gotrue::request_email_change(&db.auth_admin, id, "new@example.com")
        .await
        .unwrap();
    assert_eq!(
        target_row(&db.pool, id).await.unwrap()["email"],
        "old@example.com"
    );
    assert_eq!(events_of(&db.pool, id).await.len(), 1);
    assert!(!queues_update(&db.pool, id, &auth_before).await);

    let auth_before = auth_row(&db.pool, id).await;
    gotrue::confirm_email_change(&db.auth_admin, id)
        .await
        .unwrap();
    assert!(queues_update(&db.pool, id, &auth_before).await);
    assert_eq!(
        target_row(&db.pool, id).await.unwrap()["email"],
        "new@example.com"
    );
    assert_eq!(
        events_of(&db.pool, id).await.last().unwrap(),
        &("trigger".into(), "stale".into(), "updated".into())
    );
}

#[tokio::test]
async fn an_app_metadata_change_updates_the_role() {
    let db = TestDb::new().await;
    install_triggers(&db.pool, None, DeletedPolicy::Report).await;
    let id = gotrue::sign_up(&db.auth_admin, &SignUp::new("linus@example.com"))
        .await
        .unwrap();
    gotrue::set_app_metadata(
        &db.auth_admin,
        id,
        json!({"provider": "email", "providers": ["email"], "role": "admin"}),
    )
    .await
    .unwrap();
    assert_eq!(target_row(&db.pool, id).await.unwrap()["role"], "admin");
}

#[tokio::test]
async fn a_broken_target_still_lets_the_sign_up_commit_and_leaves_one_dead_letter() {
    let db = TestDb::new().await;
    install_triggers(&db.pool, None, DeletedPolicy::Report).await;
    // Someone ships a migration the mapping knows nothing about.
    sqlx::query("alter table public.users add column plan text not null")
        .execute(&db.pool)
        .await
        .unwrap();
    let mut listener = PgListener::connect_with(&db.pool).await.unwrap();
    listener.listen("usersync_dead_letters").await.unwrap();

    let id = gotrue::sign_up(
        &db.auth_admin,
        &SignUp::new("margaret@example.com").app_metadata(json!({"role": "admin"})),
    )
    .await
    .expect("the sign-up commits although the sync failed");

    let in_auth: bool =
        sqlx::query_scalar("select exists (select 1 from auth.users where id = $1)")
            .bind(id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(in_auth);
    assert!(target_row(&db.pool, id).await.is_none());
    // Two statements of the sign-up queued the trigger; both failed; one letter.
    let letters: Vec<(i64, String, String, Option<String>, i32)> = sqlx::query_as(
        "select id, op, error, sqlstate, attempts from usersync.dead_letters where user_id = $1",
    )
    .bind(id)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    let (letter_id, op, error, sqlstate, attempts) = &letters[0];
    assert_eq!(op, "insert");
    assert!(error.contains("\"plan\""), "the cause is named: {error}");
    assert_eq!(sqlstate.as_deref(), Some("23502"));
    assert_eq!(*attempts, 0);
    let notification = tokio::time::timeout(std::time::Duration::from_secs(5), listener.recv())
        .await
        .expect("a NOTIFY")
        .unwrap();
    assert_eq!(notification.payload(), letter_id.to_string());
}

#[tokio::test]
async fn a_hard_delete_is_reported_by_default_and_the_profile_kept() {
    let db = TestDb::new().await;
    install_triggers(&db.pool, None, DeletedPolicy::Report).await;
    let id = gotrue::sign_up(&db.auth_admin, &SignUp::new("gone@example.com"))
        .await
        .unwrap();
    gotrue::delete_user(&db.auth_admin, id).await.unwrap();

    assert!(target_row(&db.pool, id).await.is_some());
    let reported = ("trigger".into(), "deleted".into(), "reported".into());
    assert_eq!(events_of(&db.pool, id).await.last().unwrap(), &reported);
}

#[tokio::test]
async fn under_the_delete_policy_hard_and_soft_deletes_remove_the_profile() {
    let db = TestDb::new().await;
    install_triggers(&db.pool, None, DeletedPolicy::Delete).await;
    let hard = gotrue::sign_up(&db.auth_admin, &SignUp::new("hard@example.com"))
        .await
        .unwrap();
    let soft = gotrue::sign_up(&db.auth_admin, &SignUp::new("soft@example.com"))
        .await
        .unwrap();

    gotrue::delete_user(&db.auth_admin, hard).await.unwrap();
    gotrue::soft_delete_user(&db.auth_admin, soft)
        .await
        .unwrap();

    for id in [hard, soft] {
        assert!(target_row(&db.pool, id).await.is_none());
        let deleted = ("trigger".into(), "deleted".into(), "deleted".into());
        let events = events_of(&db.pool, id).await;
        assert_eq!(events.last().unwrap(), &deleted, "{events:?}");
    }
}

#[test]
fn a_mapping_that_changes_what_updates_compare_replaces_the_update_trigger_through_its_owner() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let db = TestDb::new().await;
        let url = db.url();
        let (code, _, stderr) = usersync_cli(&["triggers", "install"], &[("DATABASE_URL", &url)]);
        assert_eq!(code, 0, "{stderr}");
        let before = trigger_catalog(&db.pool).await;

        // The app now keeps names in step with auth: full_name follows the source.
        let mapping = mapping_file(&usersync::compiler::mapping::DEFAULT_MAPPING_TOML.replace(
            "user_metadata = [\"full_name\", \"name\", \"user_name\", \"username\"]\nsync = \"on_create\"",
            "user_metadata = [\"full_name\", \"name\", \"user_name\", \"username\"]\nsync = \"always\"",
        ));
        let env = [("DATABASE_URL", url.as_str()), ("USERSYNC_MAPPING", mapping.path().to_str().unwrap())];

        // The customer's role may not drop the old update trigger: one line says what to run,
        // and nothing changed.
        let (code, _, stderr) = usersync_cli(&["triggers", "install"], &env);
        assert_eq!(code, 1);
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        let (_, statement) = stderr
            .split_once("as supabase_auth_admin, run `")
            .expect("names the owner");
        let statement = statement.split_once('`').unwrap().0;
        assert!(statement.starts_with("drop trigger usersync_user_updated_"), "{stderr}");
        assert_eq!(trigger_catalog(&db.pool).await, before);

        // The owner drops it; the install then puts the new one in place.
        sqlx::raw_sql(statement).execute(&db.auth_admin).await.unwrap();
        let (code, _, stderr) = usersync_cli(&["triggers", "install"], &env);
        assert_eq!(code, 0, "{stderr}");
        let after = trigger_catalog(&db.pool).await;
        let updates = |c: &[String]| {
            c.iter()
                .filter(|l| l.starts_with("trigger") && l.contains("usersync_user_updated_"))
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(updates(&after).len(), 1);
        assert_ne!(updates(&after), updates(&before));
        drop(mapping);

        // A name change now reaches the profile through the trigger.
        let id = gotrue::sign_up(&db.auth_admin, &SignUp::new("nm@example.com").confirmed())
            .await
            .unwrap();
        gotrue::update_user_metadata(&db.auth_admin, id, json!({"full_name": "New Name"}))
            .await
            .unwrap();
        assert_eq!(target_row(&db.pool, id).await.unwrap()["full_name"], "New Name");
    });
}
