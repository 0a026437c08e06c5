//! The test harness: a fresh real database per test, the real application on a random port,
//! and one method per endpoint.
//!
//! The server is the one `DATABASE_URL` names, or, when it is unset, a throwaway PostgreSQL that
//! the harness boots once per test binary from the machine's binaries ([`throwaway`]), and which
//! is gone with its directory once the binary exits, however it ends. Each test gets
//! its own database, cloned from a template that already holds the usersync migrations, the
//! Supabase-compatible `auth` fixture and `public.users`; it is dropped when the test ends.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use reqwest::{Method, RequestBuilder, Response};
use secrecy::SecretString;
use serde_json::{json, Value};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::OnceCell;
use uuid::Uuid;

use usersync::auth::ServiceKeys;
use usersync::compiler::bind::{BoundMapping, FitWatch};
use usersync::compiler::mapping::Mapping;
use usersync::config::{
    parse_cors_origins, parse_database_url, AuthConfig, ConnectionConfig, DatabaseConfig,
    HealingConfig, HooksConfig, HttpConfig, JwtConfig, MappingConfig, ReconcileConfig, ServeConfig,
    Switch,
};
use usersync::dev::fixtures;
use usersync::http::MetricsAccess;
use usersync::repo::triggers;
use usersync::startup::Application;
use usersync::throwaway::Throwaway;
use usersync::vocabulary::policy::DeletedPolicy;

pub const JWT_SECRET: &str = "test-jwt-secret-with-at-least-32-characters!!";
pub const SERVICE_KEY: &str = "sb_secret_test_0123456789abcdef";

/// The server every test database lives on.
fn server_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => throwaway().url().to_owned(),
    })
}

/// The throwaway server, started on first use. A static is never dropped, so it is stopped at
/// exit instead: `atexit` runs when the test binary returns from `main` or calls `exit` (as it
/// does when a test failed), and waits until the server and its directory are gone. A binary
/// killed outright (Ctrl-C, SIGKILL) runs nothing; the server's watchdog cleans up then.
pub fn throwaway() -> &'static Throwaway {
    static SERVER: OnceLock<Throwaway> = OnceLock::new();
    extern "C" fn stop_at_exit() {
        if let Some(server) = SERVER.get() {
            server.stop();
        }
    }
    SERVER.get_or_init(|| {
        let server = Throwaway::start()
            .unwrap_or_else(|e| panic!("{e} (or set DATABASE_URL to a server for the tests)"));
        // SAFETY: `stop_at_exit` is a plain function that neither unwinds (it only closes a
        // pipe and waits for a child) nor calls `exit`.
        let registered = unsafe { libc::atexit(stop_at_exit) };
        assert_eq!(
            registered, 0,
            "atexit refused the throwaway server's clean-up"
        );
        server
    })
}

/// The role every test connects as unless it says why it needs another: hosted Supabase's
/// `postgres` (not a superuser, not the owner of `auth.users`; see tests/fixtures/hosted_role.sql).
pub const HOSTED_ROLE: &str = "hosted_postgres";
/// A role without BYPASSRLS that may read `auth.users`, where RLS then hides every row.
pub const NO_RLS_BYPASS_ROLE: &str = "hosted_norls";
/// Supabase Auth's own role, which owns `auth.*` and writes `auth.users`.
pub const AUTH_ADMIN_ROLE: &str = "supabase_auth_admin";
/// The password of the test roles (the server may ask for one).
pub const ROLE_PASSWORD: &str = "usersync-test";

/// The server's superuser, connected to `database`: for building templates and databases.
fn options_for(database: &str) -> PgConnectOptions {
    server_url()
        .parse::<PgConnectOptions>()
        .expect("DATABASE_URL is a valid Postgres URL")
        .database(database)
}

/// `role` (one of the test roles), connected to `database`.
fn options_as(database: &str, role: &str) -> PgConnectOptions {
    options_for(database).username(role).password(ROLE_PASSWORD)
}

/// The template database, built once per test binary (named after the fixtures' content, so a
/// stale template from older fixtures is never reused).
async fn template() -> &'static str {
    static TEMPLATE: OnceCell<String> = OnceCell::const_new();
    TEMPLATE
        .get_or_init(|| async {
            let digest = {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                fixtures::SUPABASE_AUTH.hash(&mut h);
                HOSTED_ROLE_FIXTURE.hash(&mut h);
                fixtures::PUBLIC_USERS.hash(&mut h);
                for m in usersync::db::MIGRATOR.iter() {
                    m.checksum.hash(&mut h);
                }
                h.finish()
            };
            let name = format!("usersync_tpl_{digest:016x}");
            ensure_template(&name).await;
            name
        })
        .await
}

/// Builds the template `name` unless it exists. Also called when a template vanished under a
/// running test binary (the server is shared, and someone may clean old templates up).
async fn ensure_template(name: &str) {
    let mut admin = PgConnection::connect_with(&options_for("postgres"))
        .await
        .expect("the test PostgreSQL server answers");
    let exists: bool =
        sqlx::query_scalar("select exists (select 1 from pg_database where datname = $1)")
            .bind(name)
            .fetch_one(&mut admin)
            .await
            .unwrap();
    if exists {
        return;
    }
    // Build under a private name, then rename: a half-built template is never used.
    let building = format!("usersync_tpl_build_{}", Uuid::new_v4().simple());
    sqlx::raw_sql(&format!("create database {building}"))
        .execute(&mut admin)
        .await
        .unwrap();
    // What Supabase's platform owns is made by the superuser: the auth schema (owned by
    // supabase_auth_admin) and the roles. The project's own objects (the target table, the
    // usersync schema) are made by the customer's role, as `usersync migrate` makes them there.
    let mut superuser = PgConnection::connect_with(&options_for(&building))
        .await
        .unwrap();
    sqlx::raw_sql(fixtures::SUPABASE_AUTH)
        .execute(&mut superuser)
        .await
        .unwrap();
    sqlx::raw_sql(HOSTED_ROLE_FIXTURE)
        .execute(&mut superuser)
        .await
        .unwrap();
    sqlx::raw_sql(&format!("alter database {building} owner to {HOSTED_ROLE}"))
        .execute(&mut superuser)
        .await
        .unwrap();
    superuser.close().await.unwrap();
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options_as(&building, HOSTED_ROLE))
        .await
        .unwrap();
    sqlx::raw_sql(fixtures::PUBLIC_USERS)
        .execute(&pool)
        .await
        .unwrap();
    usersync::db::migrate(&pool).await.unwrap();
    pool.close().await;
    let renamed = sqlx::raw_sql(&format!("alter database {building} rename to {name}"))
        .execute(&mut admin)
        .await;
    if renamed.is_err() {
        // Another test binary won the race; its template is as good as ours.
        let _ = sqlx::raw_sql(&format!("drop database {building}"))
            .execute(&mut admin)
            .await;
    }
}

/// The hosted-role fixture (see `HOSTED_ROLE`).
const HOSTED_ROLE_FIXTURE: &str = include_str!("../fixtures/hosted_role.sql");

/// A fresh database for one test, dropped when the value is dropped.
pub struct TestDb {
    pub name: String,
    /// Connected as `HOSTED_ROLE`, as the service is.
    pub pool: PgPool,
    /// Connected as `supabase_auth_admin` (its `search_path` is `auth`): Supabase Auth's writes.
    pub auth_admin: PgPool,
    /// Connected as the server's superuser, for the few tests that say why they need it.
    pub superuser: PgPool,
}

impl TestDb {
    pub async fn new() -> Self {
        let template = template().await;
        let name = format!("usersync_test_{}", Uuid::new_v4().simple());
        let mut admin = PgConnection::connect_with(&options_for("postgres"))
            .await
            .unwrap();
        // Cloning a template fails while anyone else is connected to it; retry briefly.
        let mut attempt = 0;
        loop {
            let created = sqlx::raw_sql(&format!(
                "create database {name} template {template} owner {HOSTED_ROLE}"
            ))
            .execute(&mut admin)
            .await;
            match created {
                Ok(_) => break,
                Err(e) if attempt < 50 => {
                    attempt += 1;
                    if e.to_string().contains("does not exist") {
                        ensure_template(template).await;
                    } else {
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                }
                Err(e) => panic!("cannot create test database: {e}"),
            }
        }
        let pool = PgPoolOptions::new()
            .max_connections(5)
            .connect_with(options_as(&name, HOSTED_ROLE))
            .await
            .unwrap();
        let lazy = |options| {
            PgPoolOptions::new()
                .max_connections(2)
                .connect_lazy_with(options)
        };
        Self {
            auth_admin: lazy(options_as(&name, AUTH_ADMIN_ROLE)),
            superuser: lazy(options_for(&name)),
            name,
            pool,
        }
    }

    /// The database's URL as `HOSTED_ROLE`: what the service and the CLI are given.
    pub fn url(&self) -> String {
        self.url_as(HOSTED_ROLE)
    }

    /// The database's URL as the server's superuser, for the few tests that say why.
    pub fn superuser_url(&self) -> String {
        let url = server_url();
        let base = &url[..url.rfind('/').expect("a URL with a database")];
        format!("{base}/{}", self.name)
    }

    /// The database's URL as one of the test roles.
    pub fn url_as(&self, role: &str) -> String {
        let url = server_url();
        let (scheme, rest) = url.split_at(url.find("://").unwrap() + 3);
        let authority = rest.split(['/', '?']).next().unwrap();
        let host = authority
            .rsplit_once('@')
            .map_or(authority, |(_, host)| host);
        format!("{scheme}{role}:{ROLE_PASSWORD}@{host}/{}", self.name)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let drop = format!("drop database if exists {} with (force)", self.name);
        clean_up(move || async move { as_superuser("postgres", &drop).await });
    }
}

/// Runs the future `cleanup` makes to its end. `Drop` runs outside any async context we can
/// rely on: it gets a thread with its own runtime.
fn clean_up<F, Fut>(cleanup: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let _ = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(cleanup())
    })
    .join();
}

/// Runs `sql` as the server's superuser in `database`, if it can connect; a clean-up's failure
/// is no test's.
async fn as_superuser(database: &str, sql: &str) {
    if let Ok(mut conn) = PgConnection::connect_with(&options_for(database)).await {
        let _ = sqlx::raw_sql(sql).execute(&mut conn).await;
    }
}

/// A role of its own for the service, as a careful project sets one up: BYPASSRLS (hosted
/// Supabase enables RLS on `auth.users`), SELECT on `auth.users`, the usersync schema, and
/// every privilege on the target. Made by the superuser, because only a superuser may give a
/// role BYPASSRLS and only the platform may grant on `auth.users`. Roles are cluster-global:
/// it is dropped when the value is dropped.
pub struct DedicatedRole {
    pub name: String,
    database: String,
}

impl DedicatedRole {
    pub async fn create(db: &TestDb) -> Self {
        let role = Self {
            name: format!("usersync_role_{}", Uuid::new_v4().simple()),
            database: db.name.clone(),
        };
        let name = &role.name;
        sqlx::raw_sql(&format!(
            "create role {name} login password '{ROLE_PASSWORD}' nosuperuser bypassrls;
             grant usage on schema auth to {name};
             grant select on auth.users to {name};"
        ))
        .execute(&db.superuser)
        .await
        .unwrap();
        sqlx::raw_sql(&format!(
            "grant usage on schema usersync to {name};
             grant all on all tables in schema usersync to {name};
             grant all on all sequences in schema usersync to {name};
             grant execute on all functions in schema usersync to {name};
             grant all on public.users to {name};"
        ))
        .execute(&db.pool)
        .await
        .unwrap();
        role
    }
}

impl Drop for DedicatedRole {
    fn drop(&mut self) {
        let (name, database) = (self.name.clone(), self.database.clone());
        // Its grants in the test database (if that still exists), then the role.
        clean_up(move || async move {
            as_superuser(&database, &format!("drop owned by {name}")).await;
            as_superuser("postgres", &format!("drop role if exists {name}")).await;
        });
    }
}

/// A running application over a fresh database.
pub struct TestApp {
    pub address: String,
    pub db: TestDb,
    pub client: reqwest::Client,
    /// What `/readyz` keeps of the mapping's fit to the table.
    pub fit: Arc<FitWatch>,
}

/// Settings a test may change before the app starts.
pub struct AppOptions {
    pub mapping: Option<std::path::PathBuf>,
    pub issuer: Option<String>,
    pub jwt_secret: Option<String>,
    pub service_keys: Vec<String>,
    pub jwks_url: Option<String>,
    pub jwks_from_issuer: bool,
    pub jwks_cache_ttl: Duration,
    pub jwks_refetch_interval: Duration,
    /// Off unless a test is about it: several tests sync one user many times.
    pub rate_limit_per_minute: u32,
    pub rate_limit_burst: u32,
    pub concurrency_limit: u32,
    /// Coalesced syncs: most users per statement, most statements at once.
    pub sync_batch_size: u32,
    pub sync_statements: u32,
    pub request_timeout: Duration,
    pub header_limit: u32,
    pub cors_origins: Option<&'static str>,
    pub metrics_access: Option<MetricsAccess>,
    /// Repair policies, chunk size, admin API.
    pub reconcile: ReconcileConfig,
    /// Run the healing loop (off by default, so that tests see drift stay put).
    pub healing: bool,
    /// The dead letters' retry schedule when healing (default: a fast one).
    pub retry_schedule: Option<&'static str>,
    /// The periodic reconciliation when healing (default: off).
    pub reconcile_interval: Option<Duration>,
    /// The dead letters' sweep when healing (default: 5 s).
    pub sweep_interval: Option<Duration>,
    /// The deleted policy (overrides `reconcile`'s when set to `delete`).
    pub policy: DeletedPolicy,
    pub webhook_secret: Option<String>,
}

impl Default for AppOptions {
    fn default() -> Self {
        Self {
            mapping: None,
            issuer: None,
            jwt_secret: Some(JWT_SECRET.to_owned()),
            service_keys: vec![SERVICE_KEY.to_owned()],
            jwks_url: None,
            jwks_from_issuer: false,
            jwks_cache_ttl: Duration::from_secs(600),
            jwks_refetch_interval: Duration::from_secs(30),
            rate_limit_per_minute: 0,
            rate_limit_burst: 10,
            concurrency_limit: 256,
            sync_batch_size: 64,
            sync_statements: 4,
            request_timeout: Duration::from_secs(10),
            header_limit: 16 * 1024,
            cors_origins: None,
            metrics_access: None,
            reconcile: ReconcileConfig::default(),
            healing: false,
            retry_schedule: None,
            reconcile_interval: None,
            sweep_interval: None,
            policy: DeletedPolicy::Report,
            webhook_secret: None,
        }
    }
}

pub fn serve_config(db_url: &str, options: &AppOptions) -> ServeConfig {
    ServeConfig {
        database: DatabaseConfig {
            url: parse_database_url(db_url).unwrap(),
            pool_size: 60,
            acquire_timeout: Duration::from_secs(5),
        },
        auth: AuthConfig {
            jwt: JwtConfig {
                jwt_secret: options
                    .jwt_secret
                    .as_ref()
                    .map(|s| SecretString::from(s.clone())),
                jwt_issuer: options.issuer.clone(),
            },
            service_keys: (!options.service_keys.is_empty()).then(|| {
                ServiceKeys(
                    options
                        .service_keys
                        .iter()
                        .map(|k| SecretString::from(k.clone()))
                        .collect(),
                )
            }),
            jwks_url: options.jwks_url.as_ref().map(|u| u.parse().unwrap()),
            jwks_from_issuer: options.jwks_from_issuer,
            jwks_cache_ttl: options.jwks_cache_ttl,
            jwks_refetch_interval: options.jwks_refetch_interval,
        },
        mapping: MappingConfig {
            mapping: options.mapping.clone(),
        },
        http: HttpConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            request_timeout: options.request_timeout,
            body_limit: 64 * 1024,
            header_limit: options.header_limit,
            concurrency_limit: options.concurrency_limit,
            sync_batch_size: options.sync_batch_size,
            sync_statements: options.sync_statements,
            rate_limit_per_minute: options.rate_limit_per_minute,
            rate_limit_burst: options.rate_limit_burst,
            cors_origins: options.cors_origins.map(|o| parse_cors_origins(o).unwrap()),
            metrics_access: options.metrics_access.unwrap_or(MetricsAccess::Public),
            metrics_refresh: Duration::from_secs(15),
            connections: ConnectionConfig::default(),
        },
        reconcile: {
            let mut reconcile = options.reconcile.clone();
            if options.policy == DeletedPolicy::Delete {
                reconcile.deleted.deleted = DeletedPolicy::Delete;
            }
            reconcile
        },
        healing: HealingConfig {
            healing: if options.healing {
                Switch::On
            } else {
                Switch::Off
            },
            sweep_interval: options.sweep_interval.unwrap_or(Duration::from_secs(5)),
            retry_schedule: usersync::config::parse_retry_schedule(
                options.retry_schedule.unwrap_or("200ms,500ms"),
            )
            .unwrap(),
            reconcile_interval: options.reconcile_interval.unwrap_or_default(),
        },
        hooks: HooksConfig {
            webhook_secret: options.webhook_secret.clone().map(SecretString::from),
        },
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(AppOptions::default(), |_| async {}).await
}

/// Starts the app with these settings.
pub async fn spawn_app_with_options(options: AppOptions) -> TestApp {
    spawn_app_with(options, |_| async {}).await
}

/// Starts the app with these settings, and one user (Ada) in `auth.users`.
pub async fn spawn_app_with_user(options: AppOptions) -> (TestApp, Uuid) {
    let app = spawn_app_with_options(options).await;
    let id = app
        .insert_auth_user(&AuthUser::new("ada@example.com"))
        .await;
    (app, id)
}

/// Starts the app after `prepare` has run against the fresh database (to create another target
/// table, say).
pub async fn spawn_app_with<F, Fut>(options: AppOptions, prepare: F) -> TestApp
where
    F: FnOnce(PgPool) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let db = TestDb::new().await;
    prepare(db.pool.clone()).await;
    let config = serve_config(&db.url(), &options);
    TestApp::start(db, config).await
}

/// How a test request authenticates.
#[derive(Clone)]
pub enum Auth {
    None,
    Bearer(String),
    ApiKey(String),
    /// Any other header (a webhook secret).
    Header(&'static str, String),
}

impl TestApp {
    /// Serves `config` in this test's runtime, over `db` (which the test keeps for assertions).
    pub async fn start(db: TestDb, config: ServeConfig) -> TestApp {
        let pool = usersync::db::pool(&config.database.pool_settings());
        let app = Application::build(&config, pool)
            .await
            .expect("the app builds");
        let address = format!("http://127.0.0.1:{}", app.port());
        let fit = app.fit();
        tokio::spawn(app.run_until_stopped(std::future::pending()));
        TestApp {
            address,
            db,
            client: reqwest::Client::new(),
            fit,
        }
    }

    pub fn request(&self, method: Method, path: &str, auth: &Auth) -> RequestBuilder {
        let builder = self
            .client
            .request(method, format!("{}{path}", self.address));
        match auth {
            Auth::None => builder,
            Auth::Bearer(t) => builder.bearer_auth(t),
            Auth::ApiKey(k) => builder.header("apikey", k),
            Auth::Header(name, value) => builder.header(*name, value),
        }
    }

    pub async fn sync_me(&self, auth: &Auth) -> Response {
        self.request(Method::POST, "/v1/users/me/sync", auth)
            .send()
            .await
            .unwrap()
    }

    pub async fn sync_user(&self, id: &str, auth: &Auth) -> Response {
        self.request(Method::POST, &format!("/v1/users/{id}/sync"), auth)
            .send()
            .await
            .unwrap()
    }

    pub async fn drift(&self, id: &str, auth: &Auth) -> Response {
        self.request(Method::GET, &format!("/v1/users/{id}/drift"), auth)
            .send()
            .await
            .unwrap()
    }

    pub async fn status(&self, auth: &Auth) -> Response {
        self.request(Method::GET, "/v1/status", auth)
            .send()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str) -> Response {
        self.request(Method::GET, path, &Auth::None)
            .send()
            .await
            .unwrap()
    }

    pub async fn start_run(&self, body: &Value, auth: &Auth) -> Response {
        self.request(Method::POST, "/v1/reconciliations", auth)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn get_run(&self, id: &str, auth: &Auth) -> Response {
        self.request(Method::GET, &format!("/v1/reconciliations/{id}"), auth)
            .send()
            .await
            .unwrap()
    }

    pub async fn list_runs(&self, query: &str, auth: &Auth) -> Response {
        self.request(Method::GET, &format!("/v1/reconciliations{query}"), auth)
            .send()
            .await
            .unwrap()
    }

    pub async fn list_drift(&self, query: &str, auth: &Auth) -> Response {
        self.request(Method::GET, &format!("/v1/drift{query}"), auth)
            .send()
            .await
            .unwrap()
    }

    /// Polls a run until it has stopped, and returns it.
    pub async fn wait_for_run(&self, id: &str) -> Value {
        for _ in 0..400 {
            let run: Value = self.get_run(id, &secret_key()).await.json().await.unwrap();
            if !matches!(run["state"].as_str(), Some("planning" | "running")) {
                return run;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("run {id} did not finish");
    }

    /// Starts a run (it must be accepted) and waits for it to stop.
    pub async fn reconcile(&self, body: Value) -> Value {
        let response = self.start_run(&body, &secret_key()).await;
        assert_eq!(response.status(), 202, "{:?}", response.text().await);
        let run: Value = response.json().await.unwrap();
        self.wait_for_run(run["id"].as_str().unwrap()).await
    }

    /// A target row written by the app itself (no auth user behind it unless one is made).
    pub async fn insert_profile(&self, id: Uuid, email: Option<&str>) {
        sqlx::query("insert into public.users (id, email, full_name) values ($1, $2, 'App Made')")
            .bind(id)
            .bind(email)
            .execute(&self.db.pool)
            .await
            .unwrap();
    }

    /// Audit events of one user: `(kind, action)` in order (see `events_of`).
    pub async fn events_of(&self, id: Uuid) -> Vec<(String, String)> {
        events_of(&self.db.pool, id)
            .await
            .into_iter()
            .map(|(_, kind, action)| (kind, action))
            .collect()
    }

    pub async fn event_count(&self) -> i64 {
        sqlx::query_scalar("select count(*) from usersync.repairs")
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }

    /// The target table as JSON rows, in id order: to compare before and after.
    pub async fn target_snapshot(&self) -> Vec<Value> {
        sqlx::query_scalar("select to_jsonb(u) from public.users u order by id")
            .fetch_all(&self.db.pool)
            .await
            .unwrap()
    }

    pub async fn exec(&self, sql: &str) {
        sqlx::raw_sql(sql).execute(&self.db.pool).await.unwrap();
    }

    /// The target row as JSON, or `None`.
    pub async fn target_row(&self, id: Uuid) -> Option<Value> {
        sqlx::query_scalar("select to_jsonb(u) from public.users u where id = $1")
            .bind(id)
            .fetch_optional(&self.db.pool)
            .await
            .unwrap()
    }

    /// The email `auth.users` holds for `id`.
    pub async fn auth_email(&self, id: Uuid) -> String {
        sqlx::query_scalar("select email from auth.users where id = $1")
            .bind(id)
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }

    pub async fn target_count(&self) -> i64 {
        sqlx::query_scalar("select count(*) from public.users")
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }

    pub async fn insert_auth_user(&self, user: &AuthUser) -> Uuid {
        user.insert(&self.db.pool).await
    }

    pub async fn hook(&self, payload: &Value, auth: &Auth) -> Response {
        self.request(Method::POST, "/v1/hooks/database", auth)
            .json(payload)
            .send()
            .await
            .unwrap()
    }

    /// The `checks.healing` of `/readyz`: `leader`, `standby` or `off`.
    pub async fn healing_role(&self) -> String {
        let body: Value = self.get("/readyz").await.json().await.unwrap();
        body["checks"]["healing"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

/// Installs the trigger path for `mapping` (the built-in one when `None`), as `usersync
/// triggers install` does.
pub async fn install_triggers(
    db: &PgPool,
    mapping: Option<&std::path::Path>,
    policy: DeletedPolicy,
) {
    let bound = BoundMapping::bind(db, Mapping::load(mapping).unwrap())
        .await
        .expect("the mapping binds");
    triggers::install(db, &bound, policy)
        .await
        .expect("the triggers install");
}

/// The audit events of one user, oldest first: `(path, kind, action)`. By transaction time
/// first: event ids come from a sequence each session caches a thousand of, so they are in order
/// within a session only.
pub async fn events_of(db: &PgPool, id: Uuid) -> Vec<(String, String, String)> {
    sqlx::query_as(
        "select path, kind, action from usersync.repairs where user_id = $1 order by at, event_id, ordinal",
    )
    .bind(id)
    .fetch_all(db)
    .await
    .unwrap()
}

/// Makes the next sync of `id` wait: changes the user's email in `auth.users`, so that the sync
/// must write the profile row (to `held-` and the old email), and locks that row until the
/// returned transaction ends.
pub async fn hold_next_sync(db: &PgPool, id: Uuid) -> sqlx::Transaction<'static, sqlx::Postgres> {
    sqlx::query("update auth.users set email = 'held-' || email where id = $1")
        .bind(id)
        .execute(db)
        .await
        .unwrap();
    let mut lock = db.begin().await.unwrap();
    sqlx::query("select 1 from public.users where id = $1 for update")
        .bind(id)
        .execute(&mut *lock)
        .await
        .unwrap();
    lock
}

/// Waits until `count` sessions of this database wait on a lock (a sync behind
/// `hold_next_sync`'s row lock): a fixed sleep was not always long enough on a loaded machine,
/// and the next request then took the statement slot first.
pub async fn wait_for_lock_waiters(db: &PgPool, count: i64) {
    eventually(
        Duration::from_secs(10),
        "a sync blocked on the held row",
        || async {
            let waiting: i64 = sqlx::query_scalar(
                "select count(*) from pg_stat_activity
              where datname = current_database() and wait_event_type = 'Lock'",
            )
            .fetch_one(db)
            .await
            .unwrap();
            waiting >= count
        },
    )
    .await;
}

/// Sends `POST /v1/users/me/sync` as `id` to the service at `address` in the background; the
/// task ends with the answer's status and body.
pub fn spawn_sync_me(address: &str, id: Uuid) -> tokio::task::JoinHandle<(u16, Value)> {
    let (address, token) = (address.to_owned(), user_token(id));
    tokio::spawn(async move {
        let Auth::Bearer(token) = token else {
            unreachable!()
        };
        let response = reqwest::Client::new()
            .post(format!("{address}/v1/users/me/sync"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    })
}

/// Holds the next sync of `busy` (see `hold_next_sync`) and sends one of `next` while it waits:
/// that one must be answered 503 `database_unavailable` after about the acquire timeout the
/// test configured (500 ms), never hang. Returns its problem body, the lock and the held
/// request, for the caller to check, release and await.
pub async fn assert_next_sync_waits_then_503(
    app: &TestApp,
    busy: Uuid,
    next: Uuid,
) -> (
    Value,
    sqlx::Transaction<'static, sqlx::Postgres>,
    tokio::task::JoinHandle<(u16, Value)>,
) {
    let lock = hold_next_sync(&app.db.pool, busy).await;
    let held = spawn_sync_me(&app.address, busy);
    wait_for_lock_waiters(&app.db.pool, 1).await;
    let started = std::time::Instant::now();
    let answer = app.sync_me(&user_token(next)).await;
    let waited = started.elapsed();
    let body = assert_problem(answer, 503, "database_unavailable").await;
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_secs(3),
        "waited {waited:?}"
    );
    (body, lock, held)
}

/// Polls `check` every 50 ms until it holds, for at most `within`; panics naming `what`.
pub async fn eventually<F, Fut>(within: std::time::Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + within;
    while !check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// An `auth.users` row written the way Supabase Auth writes one (token columns `''`).
#[derive(Clone)]
pub struct AuthUser {
    pub id: Uuid,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub user_metadata: Value,
    pub app_metadata: Value,
    pub is_sso_user: bool,
    pub is_anonymous: bool,
    pub deleted: bool,
}

impl AuthUser {
    pub fn new(email: &str) -> Self {
        Self {
            id: Uuid::new_v4(),
            email: Some(email.to_owned()),
            phone: None,
            user_metadata: json!({}),
            app_metadata: json!({"provider": "email", "providers": ["email"]}),
            is_sso_user: false,
            is_anonymous: false,
            deleted: false,
        }
    }

    pub fn user_metadata(mut self, value: Value) -> Self {
        self.user_metadata = value;
        self
    }

    pub fn app_metadata(mut self, value: Value) -> Self {
        self.app_metadata = value;
        self
    }

    pub async fn insert(&self, db: impl sqlx::PgExecutor<'_>) -> Uuid {
        sqlx::query(
            "insert into auth.users (instance_id, id, aud, role, email, phone, encrypted_password,
                 email_confirmed_at, raw_app_meta_data, raw_user_meta_data,
                 confirmation_token, recovery_token, email_change_token_new, email_change,
                 email_change_token_current, reauthentication_token, phone_change,
                 phone_change_token, is_sso_user, is_anonymous, created_at, updated_at, deleted_at)
             values ('00000000-0000-0000-0000-000000000000', $1, 'authenticated', 'authenticated',
                 $2, $3, '$2a$10$abcdefghijklmnopqrstuuJ0rV0yqQ6m8m8m8m8m8m8m8m8m8m8m8', now(), $4,
                 $5, '', '', '', '', '', '', '', '', $6, $7, now() - interval '1 day', now(),
                 case when $8 then now() end)",
        )
        .bind(self.id)
        .bind(&self.email)
        .bind(&self.phone)
        .bind(&self.app_metadata)
        .bind(&self.user_metadata)
        .bind(self.is_sso_user)
        .bind(self.is_anonymous)
        .bind(self.deleted)
        .execute(db)
        .await
        .unwrap();
        self.id
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Signs arbitrary claims with `secret` (HS256).
pub fn sign(claims: &Value, secret: &str) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// Claims of a Supabase user access token, valid for an hour.
pub fn user_claims(id: Uuid) -> Value {
    let now = now();
    json!({
        "iss": "http://127.0.0.1:54321/auth/v1",
        "sub": id.to_string(),
        "aud": "authenticated",
        "role": "authenticated",
        "exp": now + 3600,
        "iat": now,
        "email": "",
        "phone": "",
        "aal": "aal1",
        "session_id": Uuid::new_v4().to_string(),
        "is_anonymous": false,
        "app_metadata": {"provider": "email"},
        "user_metadata": {},
    })
}

pub fn user_token(id: Uuid) -> Auth {
    Auth::Bearer(sign(&user_claims(id), JWT_SECRET))
}

/// A legacy `service_role` API key: role only, no `sub` or `aud`.
pub fn service_token() -> Auth {
    let now = now();
    Auth::Bearer(sign(
        &json!({"iss": "supabase", "ref": "testref", "role": "service_role", "iat": now, "exp": now + 3600}),
        JWT_SECRET,
    ))
}

pub fn secret_key() -> Auth {
    Auth::ApiKey(SERVICE_KEY.to_owned())
}

pub fn now_secs() -> u64 {
    now()
}

/// Asserts the RFC 9457 shape and returns the body.
pub async fn assert_problem(response: Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status().as_u16(), status, "status");
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json"),
        "content type"
    );
    if status == 401 {
        let challenge = response
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(
            challenge.starts_with("Bearer"),
            "401 without a Bearer challenge"
        );
    }
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], code, "code in {body}");
    assert_eq!(body["status"], status, "status in {body}");
    assert_eq!(body["type"], format!("urn:usersync:problem:{code}"));
    assert!(body["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(body["detail"].as_str().is_some_and(|t| !t.is_empty()));
    body
}

/// Runs the real binary with only `env` (and `PATH`) set: `(exit code, stdout, stderr)`.
pub fn usersync_cli(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_usersync"));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The real binary serving on a free port of 127.0.0.1, with the test secrets. Its stderr is
/// read as it is written (a pipe nobody reads would block the process once 64 KiB of log
/// lines piled up) and kept for the test. Killed when dropped, so a failing test leaves no
/// process behind.
pub struct ServeProcess {
    child: std::process::Child,
    pub address: String,
    stderr: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
    client: reqwest::Client,
}

impl ServeProcess {
    pub async fn start(db_url: &str, env: &[(&str, &str)]) -> Self {
        Self::spawn(db_url, env, None).await
    }

    /// Started with a soft open-file limit of `soft` (the hard limit kept), as a machine with a
    /// low default gives it.
    pub async fn start_with_open_files(db_url: &str, env: &[(&str, &str)], soft: u64) -> Self {
        Self::spawn(db_url, env, Some(soft)).await
    }

    async fn spawn(db_url: &str, env: &[(&str, &str)], soft_open_files: Option<u64>) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_usersync"));
        cmd.arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", db_url)
            .env("USERSYNC_LISTEN", format!("127.0.0.1:{port}"))
            .env("USERSYNC_JWT_SECRET", JWT_SECRET)
            .env("USERSYNC_SERVICE_KEYS", SERVICE_KEY)
            // Off unless a test is about it: its periodic run would race the test's own.
            .env("USERSYNC_HEALING", "off")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        if let Some(soft) = soft_open_files {
            use std::os::unix::process::CommandExt;
            // SAFETY: between fork and exec the closure makes only the getrlimit and setrlimit
            // system calls, which are async-signal-safe, and allocates nothing.
            unsafe {
                cmd.pre_exec(move || {
                    let (_, hard) = rlimit::Resource::NOFILE.get()?;
                    rlimit::Resource::NOFILE.set(soft.min(hard), hard)
                });
            }
        }
        let mut child = cmd.spawn().expect("the usersync binary starts");
        let stderr = Arc::new(Mutex::new(String::new()));
        let reader = {
            let mut pipe = child.stderr.take().expect("stderr is piped");
            let sink = stderr.clone();
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(&mut pipe).lines() {
                    let Ok(line) = line else { break };
                    let mut all = sink.lock().unwrap();
                    all.push_str(&line);
                    all.push('\n');
                }
            })
        };
        let process = Self {
            child,
            address: format!("http://127.0.0.1:{port}"),
            stderr,
            reader: Some(reader),
            client: reqwest::Client::new(),
        };
        for _ in 0..100 {
            let health = process
                .client
                .get(format!("{}/healthz", process.address))
                .send();
            if health.await.is_ok() {
                return process;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("usersync serve did not answer on {}", process.address);
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything written to stderr so far.
    pub fn logs(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// `checks.healing` of its `/readyz` (`unreachable` when it does not answer).
    pub async fn healing_role(&self) -> String {
        let url = format!("{}/readyz", self.address);
        match self.client.get(url).send().await {
            Ok(response) => {
                let body: Value = response.json().await.unwrap_or_default();
                body["checks"]["healing"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            }
            Err(_) => "unreachable".to_owned(),
        }
    }

    /// Sends SIGTERM, waits for the exit, and returns everything written to stderr.
    pub fn stop(self) -> String {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.wait().1
    }

    /// Waits for the process to exit (after a signal sent elsewhere); its status and stderr.
    pub fn wait(mut self) -> (std::process::ExitStatus, String) {
        let status = self.child.wait().expect("the process was started");
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        (status, self.logs())
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A mapping file holding `toml`, removed when dropped (whether the test passes or fails). The
/// service reads its mapping once, at start-up.
pub fn mapping_file(toml: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new()
        .prefix("usersync-mapping-")
        .suffix(".toml")
        .tempfile()
        .unwrap();
    std::io::Write::write_all(&mut file, toml.as_bytes()).unwrap();
    file
}
