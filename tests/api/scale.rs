//! The scale rule (design.md): every per-user statement touches a bounded number of index
//! entries at any table size. Each one the service or the trigger runs is EXPLAINed, as a
//! generic plan (what a cached prepared statement and a trigger function use after a few
//! runs) and as a custom one, against 100,000 users and profiles (analysed) and a million audit
//! events, and no plan may read `auth.users`, the target or `usersync.events` sequentially.
//! A regression guard, not a timing: a plan that scans is as slow on a laptop as in production,
//! only later.

use std::path::PathBuf;

use serde_json::Value;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::helpers::*;
use usersync::compiler::bind::BoundMapping;
use usersync::compiler::mapping::Mapping;
use usersync::repo::email_index;
use usersync::repo::events;
use usersync::repo::rekey;
use usersync::repo::triggers;
use usersync::vocabulary::policy::DeletedPolicy;

/// Users with profiles; as many again have none.
const USERS: i64 = 100_000;

/// A target table, as `shapes` knows them, and how to fill it from `auth.users`.
struct Target {
    setup: Option<&'static str>,
    mapping: Option<&'static str>,
    /// Fills the target from `auth.users s` (the first `USERS` users).
    fill: &'static str,
    /// Adds 1,000 profiles without an auth user, holding an email.
    strays: &'static str,
}

const DEFAULT: Target = Target {
    setup: None,
    mapping: None,
    fill: "insert into public.users (id, email, full_name)
           select s.id, s.email, 'User' from auth.users s where s.email like 'user%'",
    strays: "insert into public.users (id, email)
             select gen_random_uuid(), 'stray' || g || '@example.com'
               from generate_series(1, 1000) g",
};

const ONAGUI: Target = Target {
    setup: Some(include_str!("../fixtures/shapes/onagui_app_users.sql")),
    mapping: Some("onagui_app_users.toml"),
    fill: "insert into onagui.app_users (auth_user_id, contact_email, joined_at)
           select s.id, s.email, now() from auth.users s where s.email like 'user%'",
    strays: "insert into onagui.app_users (auth_user_id, contact_email, joined_at)
             select gen_random_uuid(), 'stray' || g || '@example.com', now()
               from generate_series(1, 1000) g",
};

const PROFILES: Target = Target {
    setup: Some(include_str!("../fixtures/shapes/public_profiles.sql")),
    mapping: Some("public_profiles.toml"),
    fill: "insert into public.profiles (id, email)
           select s.id, s.email from auth.users s where s.email like 'user%'",
    // A profile's id must be an auth user's here (the foreign key): no strays.
    strays: "select",
};

const CREDITS: Target = Target {
    setup: Some(include_str!("../fixtures/shapes/users_with_credits.sql")),
    ..DEFAULT
};

/// `USERS` users with profiles and `USERS` without (named `new…`), a soft-deleted one, the
/// target's strays, and `events` audit events: one per profile made by sync-one, the rest in
/// runs' chunk rows of 1,000 users each.
async fn seed(db: &TestDb, target: &Target, events: i64) {
    if let Some(setup) = target.setup {
        sqlx::raw_sql(setup).execute(&db.pool).await.unwrap();
    }
    sqlx::raw_sql(&format!(
        "insert into auth.users (instance_id, id, aud, role, email, encrypted_password,
             raw_app_meta_data, raw_user_meta_data, confirmation_token, recovery_token,
             email_change_token_new, email_change, email_change_token_current,
             reauthentication_token, phone_change, phone_change_token, created_at, updated_at)
         select '00000000-0000-0000-0000-000000000000', gen_random_uuid(), 'authenticated',
                'authenticated', case when g <= {USERS} then 'user' else 'new' end || g
                || '@example.com', '', '{{\"provider\": \"email\"}}',
                jsonb_build_object('full_name', 'User ' || g), '', '', '', '', '', '', '', '',
                now(), now()
           from generate_series(1, 2 * {USERS}) g;
         update auth.users set deleted_at = now() where email = 'user1@example.com';
         {fill};
         {strays};
         insert into usersync.events (user_id, caller, path, kind, action)
         select gen_random_uuid(), 'seed', 'call', 'missing', 'created'
           from generate_series(1, {USERS});
         insert into usersync.events (run_id, user_ids, first_id, last_id, caller, path, kind,
                                      action)
         select gen_random_uuid(), ids, ids[1], ids[array_length(ids, 1)], 'seed', 'batch',
                'missing', 'created'
           from (select array_agg(u order by u) as ids
                   from (select gen_random_uuid() as u, g
                           from generate_series(1, {chunked}) g) ids
                  group by g / 1000) chunks;
         analyze auth.users; analyze usersync.events;",
        fill = target.fill,
        strays = target.strays,
        chunked = (events - USERS).max(0),
    ))
    .execute(&db.pool)
    .await
    .unwrap();
}

/// Binds the mapping, builds usersync's email index as `usersync migrate` does (none of the
/// shapes has one of its own), and analyses the target.
async fn bind(db: &TestDb, target: &Target) -> BoundMapping {
    let path = target.mapping.map(|file| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/shapes")
            .join(file)
    });
    let bound = BoundMapping::bind(&db.pool, Mapping::load(path.as_deref()).unwrap())
        .await
        .unwrap();
    email_index::ensure(&db.pool, &bound.mapping).await.unwrap();
    sqlx::raw_sql(&format!("analyze {}", bound.mapping.target.qualified()))
        .execute(&db.pool)
        .await
        .unwrap();
    bound
}

/// One user of each situation a per-user statement meets: synced, new, soft-deleted, a stray
/// profile's id, and an id nobody has.
async fn sample_ids(db: &TestDb, bound: &BoundMapping) -> Vec<Uuid> {
    let (table, key) = (
        bound.mapping.target.qualified(),
        bound.mapping.target.key.quoted(),
    );
    let email = bound.mapping.email_column().unwrap().quoted();
    sqlx::query_scalar(&format!(
        "select (select id from auth.users where email = 'user2@example.com')
         union all select (select id from auth.users where email = 'new{n}@example.com')
         union all select (select id from auth.users where email = 'user1@example.com')
         union all select coalesce(
             (select {key} from {table} where {email} like 'stray%' limit 1), gen_random_uuid())
         union all select gen_random_uuid()",
        n = USERS + 1
    ))
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

/// Every Seq Scan of `auth.users`, the target or `usersync.events` in a JSON plan.
fn sequential_scans(plan: &Value, watched: &[(String, String)], found: &mut Vec<String>) {
    match plan {
        Value::Object(node) => {
            if node.get("Node Type").and_then(Value::as_str) == Some("Seq Scan") {
                let relation = (
                    node["Schema"].as_str().unwrap_or_default().to_owned(),
                    node["Relation Name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                );
                if watched.contains(&relation) {
                    found.push(format!("{}.{}", relation.0, relation.1));
                }
            }
            for child in node.values() {
                sequential_scans(child, watched, found);
            }
        }
        Value::Array(items) => {
            for item in items {
                sequential_scans(item, watched, found);
            }
        }
        _ => {}
    }
}

/// EXPLAINs `sql` (parameters of `types`, with `args` as literals) as a generic and as a custom
/// plan, and fails on a sequential scan of a watched table.
async fn assert_index_only(
    conn: &mut PgConnection,
    watched: &[(String, String)],
    name: &str,
    sql: &str,
    types: &str,
    args: &str,
) {
    sqlx::raw_sql(&format!("prepare probe ({types}) as {sql}"))
        .execute(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("{name} prepares: {e}"));
    for mode in ["force_generic_plan", "force_custom_plan"] {
        sqlx::raw_sql(&format!("set plan_cache_mode = {mode}"))
            .execute(&mut *conn)
            .await
            .unwrap();
        let plan: Value = sqlx::query_scalar(&format!(
            "explain (format json, verbose) execute probe ({args})"
        ))
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        let mut found = Vec::new();
        sequential_scans(&plan, watched, &mut found);
        assert!(
            found.is_empty(),
            "{name} ({mode}, {args}) reads {found:?} sequentially:\n{}",
            serde_json::to_string_pretty(&plan).unwrap()
        );
    }
    sqlx::raw_sql("deallocate probe")
        .execute(&mut *conn)
        .await
        .unwrap();
}

/// Every per-user statement of `bound`, for every sample id.
async fn assert_per_user_statements_use_indexes(db: &TestDb, bound: &BoundMapping) {
    let target = &bound.mapping.target;
    let watched = vec![
        ("auth".to_owned(), "users".to_owned()),
        (target.schema.to_string(), target.table.to_string()),
        ("usersync".to_owned(), "events".to_owned()),
    ];
    let sql = &bound.sql;
    let rekey = rekey::statement(bound, &[]);
    // The drift view, installed with the triggers: a lookup by user_id.
    triggers::install(&db.pool, bound, DeletedPolicy::Report)
        .await
        .unwrap();
    let view_lookup = "select * from usersync.user_drift where user_id = $1";
    let ids = sample_ids(db, bound).await;
    let mut conn = PgConnection::connect(&db.url()).await.unwrap();
    for id in &ids {
        let one = format!("'{id}', 'probe', 'call'");
        let statements: [(&str, &str, &str, String); 13] = [
            ("sync_one", &sql.sync_one, "uuid, text, text", one.clone()),
            (
                "sync_batch",
                &sql.sync_batch,
                "uuid[], text[], text",
                format!(
                    "array['{id}', '{}']::uuid[], array['a', 'b'], 'call'",
                    ids[0]
                ),
            ),
            (
                "deleted (report)",
                sql.deleted(DeletedPolicy::Report),
                "uuid, text, text",
                one.clone(),
            ),
            (
                "deleted (delete)",
                sql.deleted(DeletedPolicy::Delete),
                "uuid, text, text",
                one.clone(),
            ),
            ("drift_one", &sql.drift_one, "uuid", format!("'{id}'")),
            ("user_drift view", view_lookup, "uuid", format!("'{id}'")),
            ("user_sides", &sql.user_sides, "uuid", format!("'{id}'")),
            ("orphan_one", &sql.orphan_one, "uuid", format!("'{id}'")),
            ("namesake_of", &sql.namesake_of, "uuid", format!("'{id}'")),
            (
                "find_by_email",
                &sql.find_by_email,
                "text",
                format!("'Someone-{id}@Example.com'"),
            ),
            (
                "user events",
                events::USER_EVENTS,
                "uuid, bigint, bigint",
                format!("'{id}', null, 50"),
            ),
            (
                "user events (a later page)",
                events::USER_EVENTS,
                "uuid, bigint, bigint",
                format!("'{id}', 1000, 50"),
            ),
            (
                "rekey",
                &rekey,
                "uuid, uuid, uuid, text",
                format!("'{id}', '{}', '{}', 'probe'", ids[3], Uuid::new_v4()),
            ),
        ];
        for (name, statement, types, args) in statements {
            assert_index_only(&mut conn, &watched, name, statement, types, &args).await;
        }
    }
}

#[tokio::test]
async fn every_per_user_statement_reads_indexes_only_at_scale() {
    let db = TestDb::new().await;
    // The fixture's own index on lower(email) goes: usersync's must do the work.
    sqlx::raw_sql("drop index public.users_email_lower_idx")
        .execute(&db.pool)
        .await
        .unwrap();
    seed(&db, &DEFAULT, 1_000_000).await;
    let bound = bind(&db, &DEFAULT).await;
    assert_per_user_statements_use_indexes(&db, &bound).await;
}

#[tokio::test]
async fn every_per_user_statement_reads_indexes_only_in_every_shape() {
    for target in [ONAGUI, PROFILES, CREDITS] {
        let db = TestDb::new().await;
        seed(&db, &target, USERS).await;
        let bound = bind(&db, &target).await;
        assert_per_user_statements_use_indexes(&db, &bound).await;
    }
}
