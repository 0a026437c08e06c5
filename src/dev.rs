//! `usersync dev`: the whole service on a laptop with no set-up.
//!
//! It boots a throwaway Postgres from the machine's PostgreSQL binaries ([`crate::throwaway`]), loads a
//! Supabase-compatible `auth` schema, a demo `public.users` and a few demo users, installs the
//! triggers, prints tokens and curl lines, and serves (healing included). Nothing here runs in
//! production: `auth.*` is Supabase Auth's.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use uuid::Uuid;

use crate::auth::mint::{self, Subject};
use crate::auth::ServiceKeys;
use crate::compiler::mapping::Mapping;
use crate::config::{
    parse_database_url, AuthConfig, ConnectionConfig, DatabaseConfig, DevConfig, HealingConfig,
    HooksConfig, HttpConfig, JwtConfig, MappingConfig, ReconcileConfig, ServeConfig, Switch,
};
use crate::http::MetricsAccess;
use crate::repo::triggers;
use crate::startup::{self, Application};
use crate::throwaway::Throwaway;

/// The SQL fixtures, shared with the integration tests.
pub mod fixtures {
    /// The `auth` schema as Supabase Auth defines it: roles, `auth.users`, `auth.identities`,
    /// `auth.uid()`/`role()`/`jwt()`.
    pub const SUPABASE_AUTH: &str = include_str!("../tests/fixtures/supabase_auth.sql");
    /// The default target, `public.users`.
    pub const PUBLIC_USERS: &str = include_str!("../tests/fixtures/public_users.sql");
    /// A few demo users, written the way Supabase Auth writes them.
    pub const DEMO_USERS: &str = include_str!("../tests/fixtures/demo_users.sql");
}

/// The demo user whose token `usersync dev` prints (Ada, from `demo_users.sql`).
const DEMO_USER: Uuid = Uuid::from_u128(0x00000000_0000_4000_8000_000000000001);
/// Development-only credentials: printed on start, never valid anywhere else.
const DEV_JWT_SECRET: &str = "super-secret-jwt-token-with-at-least-32-characters-long";
const DEV_SERVICE_KEY: &str = "sb_secret_dev_only_do_not_use_in_production";

#[derive(Debug, Args)]
pub struct DevArgs {
    #[command(flatten)]
    http: DevConfig,
}

/// Boots the throwaway database, seeds it, and serves until Ctrl-C; the database goes with it.
pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    // No line of its own before the server is up: when something is missing, the one line
    // on stderr is the error, saying what to install.
    let pg = tokio::task::spawn_blocking(Throwaway::start).await??;
    let url = pg.url().to_owned();
    let admin = PgPoolOptions::new()
        .max_connections(2)
        .connect(&url)
        .await
        .context("cannot connect to the throwaway PostgreSQL")?;
    seed(&admin).await?;
    admin.close().await;

    let secret = SecretString::from(DEV_JWT_SECRET.to_owned());
    let config = ServeConfig {
        database: DatabaseConfig {
            url: parse_database_url(&url).map_err(anyhow::Error::msg)?,
            pool_size: 16,
            acquire_timeout: Duration::from_secs(3),
        },
        auth: AuthConfig {
            jwt: JwtConfig {
                jwt_secret: Some(secret.clone()),
                jwt_issuer: None,
            },
            service_keys: Some(ServiceKeys(vec![SecretString::from(
                DEV_SERVICE_KEY.to_owned(),
            )])),
            jwks_url: None,
            jwks_from_issuer: false,
            jwks_cache_ttl: Duration::from_secs(600),
            jwks_refetch_interval: Duration::from_secs(30),
        },
        mapping: MappingConfig { mapping: None },
        http: HttpConfig {
            listen: args.http.listen,
            request_timeout: Duration::from_secs(10),
            body_limit: 64 * 1024,
            header_limit: 16 * 1024,
            concurrency_limit: 256,
            sync_batch_size: 64,
            sync_statements: 4,
            rate_limit_per_minute: 60,
            rate_limit_burst: 10,
            cors_origins: None,
            metrics_access: MetricsAccess::Public,
            metrics_refresh: std::time::Duration::from_secs(15),
            connections: ConnectionConfig::default(),
        },
        reconcile: ReconcileConfig::default(),
        healing: HealingConfig {
            healing: Switch::On,
            sweep_interval: Duration::from_secs(30),
            retry_schedule: crate::config::parse_retry_schedule("5s,30s,2m")
                .expect("a valid schedule"),
            // Off, so that the demo users stay "missing" until you sync them.
            reconcile_interval: Duration::ZERO,
        },
        hooks: HooksConfig {
            webhook_secret: None,
        },
    };
    let pool = crate::db::pool(&config.database.pool_settings());
    crate::db::migrate(&pool).await?;
    // The trigger path, as `usersync triggers install` would: new sign-ups sync at commit.
    let bound = crate::startup::bind(&pool, Mapping::default_mapping()).await?;
    triggers::install(&pool, &bound, config.reconcile.deleted.deleted).await?;
    let app = Application::build(&config, pool).await?;
    let base = format!("http://127.0.0.1:{}", app.port());
    let user_token = mint::mint(&secret, Subject::User(DEMO_USER), None, 24 * 3600)?;
    let service_token = mint::mint(&secret, Subject::Service, None, 24 * 3600)?;
    // One write, and a reader that has gone is no reason to stop: a harness that read the
    // banner up to its last line and closed the pipe made `println!` panic (its trailing
    // newline is a second write) and took the service down before its first request.
    let text = format!("{}\n", banner(&base, &url, &user_token, &service_token));
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        tracing::warn!(%error, "could not print the banner; serving anyway");
    }
    drop(stdout);
    app.run_until_stopped(startup::shutdown_signal()).await?;
    // Stops the server and removes its directory before returning; had this process been
    // killed instead, the server's watchdog would have.
    drop(pg);
    Ok(())
}

/// Loads the auth fixture, the usersync schema's prerequisites, the demo target and users.
pub async fn seed(db: &PgPool) -> anyhow::Result<()> {
    for (name, sql) in [
        ("supabase_auth.sql", fixtures::SUPABASE_AUTH),
        ("public_users.sql", fixtures::PUBLIC_USERS),
        ("demo_users.sql", fixtures::DEMO_USERS),
    ] {
        sqlx::raw_sql(sql)
            .execute(db)
            .await
            .with_context(|| format!("loading {name}"))?;
    }
    Ok(())
}

fn banner(base: &str, db_url: &str, user_token: &str, service_token: &str) -> String {
    let secret = DEV_JWT_SECRET;
    let key = SecretString::from(DEV_SERVICE_KEY.to_owned());
    let key = key.expose_secret();
    format!(
        "
usersync dev is running at {base}
  database (throwaway): {db_url}
  demo users: ada, grace, linus, margaret (admin), a phone-only user; one orphaned profile
  the usersync triggers are installed: a user inserted into auth.users now gets a profile at
  commit; the demo users were loaded before, so they show as missing until synced

Paste these into a shell:

export USERSYNC_URL={base}
export USER_TOKEN={user_token}
export SERVICE_TOKEN={service_token}
export SECRET_KEY={key}
export USERSYNC_JWT_SECRET={secret}   # mint more tokens: usersync token --sub <id>

# sync Ada (the user token's own user)
curl -s -X POST $USERSYNC_URL/v1/users/me/sync -H \"Authorization: Bearer $USER_TOKEN\"
# her drift
curl -s $USERSYNC_URL/v1/users/00000000-0000-4000-8000-000000000001/drift -H \"Authorization: Bearer $USER_TOKEN\"
# the service syncs Grace
curl -s -X POST $USERSYNC_URL/v1/users/00000000-0000-4000-8000-000000000002/sync -H \"Authorization: Bearer $SERVICE_TOKEN\"
# drift counts for the whole project, with a secret key
curl -s $USERSYNC_URL/v1/status -H \"apikey: $SECRET_KEY\"
# probes and the API document
curl -s $USERSYNC_URL/readyz
curl -s $USERSYNC_URL/openapi.json

Ctrl-C stops the service and deletes the database.
"
    )
}
