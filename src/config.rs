//! Configuration: every setting's flag and environment variable (the clap argument structs
//! below, flattened into the subcommands that take them), and the functions that parse them,
//! each validated as it is parsed, so that a bad one stops the process at start-up with one line
//! naming it. A setting is declared once, here, so every command that takes it checks it alike.
//!
//! Only parsing lives here: what a setting becomes is a type of the module that uses it
//! (`db::DatabaseUrl` and `db::PoolSettings`, `auth::Credentials` and `auth::ServiceKeys`,
//! `http::EdgeLimits`, `http::CorsOrigins`, `http::MetricsAccess`,
//! `http::serve::ConnectionLimits`, `telemetry::LogFormat`, the reconcile defaults and
//! `Walking` of `sync::reconcile`, `worker::HealingSettings`, the policies of
//! `vocabulary::policy`), and the structs' methods turn flags into those types.
//!
//! The environment variable is the documented way to set each (see the README's configuration
//! table).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, ValueEnum};
use reqwest::Url;
use secrecy::SecretString;
use sqlx::postgres::PgConnectOptions;

use crate::auth::{Credentials, JwksSource, ServiceKeys};
use crate::db::{DatabaseUrl, PoolSettings, TRANSACTION_POOLER_PORT};
use crate::http::serve::ConnectionLimits;
use crate::http::{CorsOrigins, EdgeLimits, MetricsAccess};
use crate::supabase::AdminApi;
use crate::sync::coalesce::Coalescing;
use crate::sync::reconcile::{Walking, DEFAULT_CHUNK_SIZE, DEFAULT_WORKERS};
use crate::telemetry::LogFormat;
use crate::vocabulary::policy::{
    DeletedPolicy, MismatchedPolicy, MissingPolicy, OrphanedPolicy, Policies, StalePolicy,
};
use crate::worker::retry::RetrySchedule;
use crate::worker::HealingSettings;

/// The connection to the Postgres that holds both `auth.users` and the target table.
#[derive(Debug, Clone, Args)]
pub struct DatabaseConfig {
    /// Postgres connection URL: a direct connection or Supabase's session-mode pooler (port
    /// 5432). The transaction-mode pooler (port 6543) is refused.
    #[arg(long = "database-url", env = "DATABASE_URL", value_name = "DATABASE_URL",
          value_parser = parse_database_url, hide_env_values = true)]
    pub url: DatabaseUrl,

    /// Most connections the service holds open.
    #[arg(long = "db-pool-size", env = "USERSYNC_DB_POOL_SIZE",
          value_name = "USERSYNC_DB_POOL_SIZE", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub pool_size: u32,

    /// How long a request waits for a free connection before it is answered 503.
    #[arg(long = "db-acquire-timeout", env = "USERSYNC_DB_ACQUIRE_TIMEOUT",
          value_name = "USERSYNC_DB_ACQUIRE_TIMEOUT", default_value = "3s",
          value_parser = parse_duration)]
    pub acquire_timeout: Duration,
}

impl DatabaseConfig {
    /// The pool these settings describe.
    pub fn pool_settings(&self) -> PoolSettings {
        PoolSettings {
            url: self.url.clone(),
            size: self.pool_size,
            acquire_timeout: self.acquire_timeout,
        }
    }
}

/// Parses and checks a Postgres URL; the error never repeats the URL (it may hold a password).
pub fn parse_database_url(raw: &str) -> Result<DatabaseUrl, String> {
    let url = parse_database_url_any_port(raw)?;
    if url.through_transaction_pooler() {
        return Err(format!(
            "points at port {TRANSACTION_POOLER_PORT}, Supabase's transaction-mode pooler, \
             which does not support prepared statements: use the direct connection or the \
             session-mode pooler (port 5432)"
        ));
    }
    Ok(url)
}

/// Parses without refusing the transaction-mode pooler: `usersync doctor` reports it as a risk
/// rather than stopping at it.
pub fn parse_database_url_any_port(raw: &str) -> Result<DatabaseUrl, String> {
    if !(raw.starts_with("postgres://") || raw.starts_with("postgresql://")) {
        return Err("must be a postgres:// or postgresql:// URL".into());
    }
    let options = PgConnectOptions::from_str(raw).map_err(|_| "is not a valid Postgres URL")?;
    Ok(DatabaseUrl::new(raw, options))
}

/// The Postgres `usersync doctor` inspects. Unlike the other commands, doctor accepts
/// Supabase's transaction-mode pooler, to report it as a risk.
#[derive(Debug, Clone, Args)]
pub struct InspectedDatabaseConfig {
    /// The Postgres to inspect. Unlike the other commands, doctor accepts Supabase's
    /// transaction-mode pooler (port 6543), to report it as a risk.
    #[arg(long = "database-url", env = "DATABASE_URL", value_name = "DATABASE_URL",
          value_parser = parse_database_url_any_port, hide_env_values = true)]
    pub url: DatabaseUrl,
}

/// The project's JWT secret and issuer: `serve` verifies user tokens with them, `token` signs
/// with them, both parsed here alike (a token signed with a secret `serve` would refuse would be
/// refused by the service it was minted for).
#[derive(Debug, Clone, Args)]
pub struct JwtConfig {
    /// The project's legacy JWT secret (HS256), used as its raw UTF-8 bytes. At least 32
    /// characters, as Supabase requires.
    #[arg(long = "jwt-secret", env = "USERSYNC_JWT_SECRET", value_name = "USERSYNC_JWT_SECRET",
          value_parser = parse_secret, hide_env_values = true)]
    pub jwt_secret: Option<SecretString>,

    /// The issuer user tokens must carry (`https://<ref>.supabase.co/auth/v1`); unchecked when
    /// unset.
    #[arg(
        long = "jwt-issuer",
        env = "USERSYNC_JWT_ISSUER",
        value_name = "USERSYNC_JWT_ISSUER"
    )]
    pub jwt_issuer: Option<String>,
}

/// How callers prove who they are.
#[derive(Debug, Clone, Args)]
pub struct AuthConfig {
    #[command(flatten)]
    pub jwt: JwtConfig,

    /// Comma-separated opaque secret keys (`sb_secret_...`) accepted as the service, in `apikey`
    /// or `Authorization`. Several at once allow rotation.
    #[arg(long = "service-keys", env = "USERSYNC_SERVICE_KEYS",
          value_name = "USERSYNC_SERVICE_KEYS", value_parser = parse_service_keys,
          hide_env_values = true)]
    pub service_keys: Option<ServiceKeys>,

    /// Where the project publishes its asymmetric signing keys (ES256/RS256), e.g.
    /// `https://<ref>.supabase.co/auth/v1/.well-known/jwks.json`.
    #[arg(long = "jwks-url", env = "USERSYNC_JWKS_URL", value_name = "USERSYNC_JWKS_URL",
          value_parser = parse_jwks_url)]
    pub jwks_url: Option<Url>,

    /// Take the JWKS from `<USERSYNC_JWT_ISSUER>/.well-known/jwks.json`, where Supabase Auth
    /// publishes it, instead of naming it in `USERSYNC_JWKS_URL`.
    #[arg(long = "jwks-from-issuer", env = "USERSYNC_JWKS_FROM_ISSUER",
          value_name = "USERSYNC_JWKS_FROM_ISSUER", default_value_t = false,
          action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub jwks_from_issuer: bool,

    /// How long fetched keys are used before they are fetched again. Supabase caches its JWKS
    /// for 10 minutes at every level; a longer cache delays the effect of a key's revocation.
    #[arg(long = "jwks-cache-ttl", env = "USERSYNC_JWKS_CACHE_TTL",
          value_name = "USERSYNC_JWKS_CACHE_TTL", default_value = "10m",
          value_parser = parse_duration)]
    pub jwks_cache_ttl: Duration,

    /// Least time between two fetches of the JWKS outside the regular refresh: a token naming
    /// an unknown `kid` (a key just rotated in) triggers at most one fetch per interval, so
    /// forged `kid`s cannot turn the service into a flood of requests to Supabase. Also the
    /// retry interval while the JWKS endpoint is failing.
    #[arg(long = "jwks-refetch-interval", env = "USERSYNC_JWKS_REFETCH_INTERVAL",
          value_name = "USERSYNC_JWKS_REFETCH_INTERVAL", default_value = "30s",
          value_parser = parse_duration)]
    pub jwks_refetch_interval: Duration,
}

impl AuthConfig {
    /// Refuses a configuration under which nobody could authenticate, or whose JWKS source is
    /// ambiguous or missing.
    pub fn check(&self) -> Result<(), String> {
        self.resolved_jwks_url()?;
        if self.jwt.jwt_secret.is_none() && self.service_keys.is_none() && !self.uses_jwks() {
            return Err(
                "USERSYNC_JWT_SECRET: is not set, and neither is USERSYNC_JWKS_URL nor \
                 USERSYNC_SERVICE_KEYS: no caller could authenticate"
                    .into(),
            );
        }
        Ok(())
    }

    /// What callers are verified against, once `check` passed.
    pub fn credentials(&self) -> Result<Credentials, String> {
        let jwks = self.resolved_jwks_url()?.map(|url| JwksSource {
            url,
            cache_ttl: self.jwks_cache_ttl,
            refetch_interval: self.jwks_refetch_interval,
        });
        Ok(Credentials {
            jwt_secret: self.jwt.jwt_secret.clone(),
            jwt_issuer: self.jwt.jwt_issuer.clone(),
            service_keys: self.service_keys.clone(),
            jwks,
        })
    }

    fn uses_jwks(&self) -> bool {
        self.jwks_url.is_some() || self.jwks_from_issuer
    }

    /// The JWKS to fetch: the configured URL, or the one derived from the issuer.
    pub fn resolved_jwks_url(&self) -> Result<Option<Url>, String> {
        match (&self.jwks_url, self.jwks_from_issuer, &self.jwt.jwt_issuer) {
            (None, false, _) => Ok(None),
            (Some(url), false, _) => Ok(Some(url.clone())),
            (Some(_), true, _) => Err(
                "USERSYNC_JWKS_FROM_ISSUER: is set together with USERSYNC_JWKS_URL: set one".into(),
            ),
            (None, true, None) => Err(
                "USERSYNC_JWKS_FROM_ISSUER: needs USERSYNC_JWT_ISSUER to derive the JWKS URL from"
                    .into(),
            ),
            (None, true, Some(issuer)) => parse_jwks_url(&format!(
                "{}/.well-known/jwks.json",
                issuer.trim_end_matches('/')
            ))
            .map(Some)
            .map_err(|e| format!("USERSYNC_JWT_ISSUER: as the base of the JWKS URL, {e}")),
        }
    }
}

/// An http(s) URL without credentials (it is logged and shown by `/readyz`).
fn parse_jwks_url(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw).map_err(|e| format!("is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err("must be an http:// or https:// URL".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials".into());
    }
    Ok(url)
}

/// A shared secret: at least 32 characters, as Supabase requires of its JWT secret. `serve`
/// and `token` read `USERSYNC_JWT_SECRET` through it alike.
pub fn parse_secret(raw: &str) -> Result<SecretString, String> {
    if raw.chars().count() < 32 {
        return Err("must be at least 32 characters long".into());
    }
    Ok(SecretString::from(raw.to_owned()))
}

fn parse_service_keys(raw: &str) -> Result<ServiceKeys, String> {
    let keys: Vec<&str> = raw.split(',').map(str::trim).collect();
    if keys.iter().any(|k| k.len() < 16) {
        return Err(
            "every key must be at least 16 characters (comma-separated, no empty entries)".into(),
        );
    }
    Ok(ServiceKeys(
        keys.into_iter()
            .map(|k| SecretString::from(k.to_owned()))
            .collect(),
    ))
}

/// Which target table, and where each of its columns comes from.
#[derive(Debug, Clone, Args)]
pub struct MappingConfig {
    /// Path to a TOML mapping; the built-in one targets `public.users` (see
    /// `mappings/default.toml`).
    #[arg(
        long = "mapping",
        env = "USERSYNC_MAPPING",
        value_name = "USERSYNC_MAPPING"
    )]
    pub mapping: Option<PathBuf>,
}

/// The HTTP edge and its limits.
#[derive(Debug, Clone, Args)]
pub struct HttpConfig {
    /// Address to listen on.
    #[arg(
        long = "listen",
        env = "USERSYNC_LISTEN",
        value_name = "USERSYNC_LISTEN",
        default_value = "0.0.0.0:8080"
    )]
    pub listen: SocketAddr,

    /// A request that takes longer is answered 503 (`request_timeout`).
    #[arg(long = "request-timeout", env = "USERSYNC_REQUEST_TIMEOUT",
          value_name = "USERSYNC_REQUEST_TIMEOUT", default_value = "10s",
          value_parser = parse_duration)]
    pub request_timeout: Duration,

    /// Largest request body accepted, in bytes; larger is answered 413.
    #[arg(long = "body-limit", env = "USERSYNC_BODY_LIMIT", value_name = "USERSYNC_BODY_LIMIT",
          default_value_t = 64 * 1024)]
    pub body_limit: usize,

    /// Largest header section accepted (names and values of every header), in bytes; larger is
    /// answered 431. No legitimate caller sends more than a token and a few headers.
    #[arg(long = "header-limit", env = "USERSYNC_HEADER_LIMIT",
          value_name = "USERSYNC_HEADER_LIMIT", default_value_t = 16 * 1024,
          value_parser = clap::value_parser!(u32).range(1024..=256 * 1024))]
    pub header_limit: u32,

    /// Most API requests handled at once; beyond it a request is answered 503 (`overloaded`)
    /// at once rather than queued, so that a burst cannot pile up behind the database pool.
    /// The probes are not counted.
    #[arg(long = "concurrency-limit", env = "USERSYNC_CONCURRENCY_LIMIT",
          value_name = "USERSYNC_CONCURRENCY_LIMIT", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub concurrency_limit: u32,

    /// Most users one sync statement writes. Sync requests that queue while the database is busy
    /// go together in one statement (one round trip for all of them); an idle service still
    /// runs each request alone, at once. `1` runs every request alone.
    #[arg(long = "sync-batch-size", env = "USERSYNC_SYNC_BATCH_SIZE",
          value_name = "USERSYNC_SYNC_BATCH_SIZE", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub sync_batch_size: u32,

    /// Most sync statements running at once (each on a connection of the pool); requests
    /// beyond them queue for the next batch.
    #[arg(long = "sync-statements", env = "USERSYNC_SYNC_STATEMENTS",
          value_name = "USERSYNC_SYNC_STATEMENTS", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub sync_statements: u32,

    /// Sync requests one caller may make per minute (a user by id; an unauthenticated caller by
    /// IP address); beyond it, 429 with `Retry-After`. `0` turns the limit off. The service is
    /// never limited: it is trusted, and syncs on behalf of everyone.
    #[arg(
        long = "rate-limit-per-minute",
        env = "USERSYNC_RATE_LIMIT_PER_MINUTE",
        value_name = "USERSYNC_RATE_LIMIT_PER_MINUTE",
        default_value_t = 60
    )]
    pub rate_limit_per_minute: u32,

    /// Sync requests one caller may make in a burst before the per-minute pace applies.
    #[arg(long = "rate-limit-burst", env = "USERSYNC_RATE_LIMIT_BURST",
          value_name = "USERSYNC_RATE_LIMIT_BURST", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit_burst: u32,

    /// Comma-separated browser origins allowed to call the API (`https://app.example.com`), or
    /// `*` for any. Unset: no CORS headers, so browsers allow only same-origin calls.
    #[arg(long = "cors-origins", env = "USERSYNC_CORS_ORIGINS",
          value_name = "USERSYNC_CORS_ORIGINS", value_parser = parse_cors_origins)]
    pub cors_origins: Option<CorsOrigins>,

    /// Who may read `/metrics`: `public` or `service`.
    #[arg(
        long = "metrics-access",
        env = "USERSYNC_METRICS_ACCESS",
        value_name = "USERSYNC_METRICS_ACCESS",
        value_enum,
        default_value = "public"
    )]
    pub metrics_access: MetricsAccess,

    /// Drift counts in `/metrics` are recomputed at most this often (they scan both tables).
    #[arg(long = "metrics-refresh", env = "USERSYNC_METRICS_REFRESH",
          value_name = "USERSYNC_METRICS_REFRESH", default_value = "15s",
          value_parser = parse_duration)]
    pub metrics_refresh: Duration,

    #[command(flatten)]
    pub connections: ConnectionConfig,
}

impl HttpConfig {
    /// The middleware stack's limits and CORS.
    pub fn edge_limits(&self) -> EdgeLimits {
        EdgeLimits {
            request_timeout: self.request_timeout,
            body_limit: self.body_limit,
            header_limit: self.header_limit,
            concurrency_limit: self.concurrency_limit,
            cors_origins: self.cors_origins.clone(),
        }
    }
}

/// How long and how many client connections the service keeps: what an idle or hostile client
/// could otherwise hold for ever (every held connection is a file descriptor).
#[derive(Debug, Clone, Args)]
pub struct ConnectionConfig {
    /// A request's head (request line and headers) must arrive whole within this long, or the
    /// connection is closed. hyper's clock also runs while a kept-alive connection waits for its
    /// next request, so it bounds idle connections too.
    #[arg(long = "header-read-timeout", env = "USERSYNC_HEADER_READ_TIMEOUT",
          value_name = "USERSYNC_HEADER_READ_TIMEOUT", default_value = DEFAULT_HEADER_READ_TIMEOUT,
          value_parser = parse_positive_duration)]
    pub header_read_timeout: Duration,

    /// A connection with no request in flight and no bytes moving for this long is closed.
    /// At most the header-read timeout (which closes an idle connection anyway).
    #[arg(long = "keep-alive-timeout", env = "USERSYNC_KEEP_ALIVE_TIMEOUT",
          value_name = "USERSYNC_KEEP_ALIVE_TIMEOUT", default_value = DEFAULT_KEEP_ALIVE_TIMEOUT,
          value_parser = parse_positive_duration)]
    pub keep_alive_timeout: Duration,

    /// Most client connections open at once; beyond it a new connection waits in the listen
    /// backlog until another closes.
    #[arg(long = "max-connections", env = "USERSYNC_MAX_CONNECTIONS",
          value_name = "USERSYNC_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,
}

const DEFAULT_HEADER_READ_TIMEOUT: &str = "10s";
const DEFAULT_KEEP_ALIVE_TIMEOUT: &str = "5s";
const DEFAULT_MAX_CONNECTIONS: u32 = 1024;

impl Default for ConnectionConfig {
    fn default() -> Self {
        Self {
            header_read_timeout: parse_duration(DEFAULT_HEADER_READ_TIMEOUT).expect("valid"),
            keep_alive_timeout: parse_duration(DEFAULT_KEEP_ALIVE_TIMEOUT).expect("valid"),
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

impl ConnectionConfig {
    /// Refuses a keep-alive timeout that the header-read timeout would cut short, so that the
    /// setting never promises what the server does not do.
    pub fn check(&self) -> Result<(), String> {
        if self.keep_alive_timeout > self.header_read_timeout {
            return Err(format!(
                "USERSYNC_KEEP_ALIVE_TIMEOUT ({:?}) is longer than USERSYNC_HEADER_READ_TIMEOUT \
                 ({:?}), which closes an idle connection first; raise both",
                self.keep_alive_timeout, self.header_read_timeout
            ));
        }
        Ok(())
    }

    /// The accept loop's limits.
    pub fn limits(&self) -> ConnectionLimits {
        ConnectionLimits {
            header_read_timeout: self.header_read_timeout,
            keep_alive_timeout: self.keep_alive_timeout,
            max_connections: self.max_connections,
        }
    }
}

/// Parses `*` or a comma-separated list of origins, each normalised the way browsers send the
/// `Origin` header (lower-case host, no default port, no trailing slash).
pub fn parse_cors_origins(raw: &str) -> Result<CorsOrigins, String> {
    if raw.trim() == "*" {
        return Ok(CorsOrigins::Any);
    }
    raw.split(',')
        .map(|origin| {
            let origin = origin.trim();
            let url = Url::parse(origin).map_err(|_| {
                format!("`{origin}` is not an origin such as https://app.example.com")
            })?;
            let bare = url.path() == "/" && url.query().is_none() && url.fragment().is_none();
            if !matches!(url.scheme(), "http" | "https") || url.host().is_none() || !bare {
                return Err(format!(
                    "`{origin}` is not an origin such as https://app.example.com (scheme and host, no path)"
                ));
            }
            Ok(url.origin().ascii_serialization())
        })
        .collect::<Result<Vec<_>, _>>()
        .map(CorsOrigins::List)
}

/// How reconciliation runs repair each kind of drift, and how they walk the tables.
#[derive(Debug, Clone, Args)]
pub struct ReconcileConfig {
    /// A live auth user without a profile: `create` it, or only `report` it.
    #[arg(
        long = "policy-missing",
        env = "USERSYNC_POLICY_MISSING",
        value_name = "USERSYNC_POLICY_MISSING",
        default_value = "create"
    )]
    pub missing: MissingPolicy,

    /// A profile whose `always` columns differ from the auth user: `update` them, or `report`.
    #[arg(
        long = "policy-stale",
        env = "USERSYNC_POLICY_STALE",
        value_name = "USERSYNC_POLICY_STALE",
        default_value = "update"
    )]
    pub stale: StalePolicy,

    /// The same person under two ids: `report`, or `rekey` the profile (and every foreign key
    /// pointing at it) to the auth user's id.
    #[arg(
        long = "policy-mismatched",
        env = "USERSYNC_POLICY_MISMATCHED",
        value_name = "USERSYNC_POLICY_MISMATCHED",
        default_value = "report"
    )]
    pub mismatched: MismatchedPolicy,

    /// A profile without an auth user: `report`, `delete` it, or `provision` the auth user
    /// through the Supabase Auth admin API (needs USERSYNC_SUPABASE_URL and
    /// USERSYNC_SUPABASE_SERVICE_KEY).
    #[arg(
        long = "policy-orphaned",
        env = "USERSYNC_POLICY_ORPHANED",
        value_name = "USERSYNC_POLICY_ORPHANED",
        default_value = "report"
    )]
    pub orphaned: OrphanedPolicy,

    /// The profile of a deleted auth user (shared with the trigger path and the webhook).
    #[command(flatten)]
    pub deleted: PolicyConfig,

    /// The largest share of the target (0 to 1) one run may delete; a run that would delete
    /// more stops as `needs_override` until started again with the override.
    #[arg(long = "max-delete-share", env = "USERSYNC_MAX_DELETE_SHARE",
          value_name = "USERSYNC_MAX_DELETE_SHARE", default_value = "0.05",
          value_parser = parse_share)]
    pub max_delete_share: f64,

    /// Source rows per chunk: each chunk is one transaction of set-based statements.
    #[arg(long = "chunk-size", env = "USERSYNC_RECONCILE_CHUNK_SIZE",
          value_name = "USERSYNC_RECONCILE_CHUNK_SIZE", default_value_t = DEFAULT_CHUNK_SIZE,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub chunk_size: u32,

    /// Chunks a run repairs at once, each on its own connection. A run with a `limit`, or one
    /// that deletes under the mass-delete bound, goes one chunk at a time so that it counts
    /// exactly.
    #[arg(long = "workers", env = "USERSYNC_RECONCILE_WORKERS",
          value_name = "USERSYNC_RECONCILE_WORKERS", default_value_t = DEFAULT_WORKERS,
          value_parser = clap::value_parser!(u16).range(1..=16))]
    pub workers: u16,

    /// The project's API URL (`https://<ref>.supabase.co`), for the `provision` policy.
    #[arg(long = "supabase-url", env = "USERSYNC_SUPABASE_URL",
          value_name = "USERSYNC_SUPABASE_URL", value_parser = parse_http_url)]
    pub supabase_url: Option<String>,

    /// A secret key (`sb_secret_...`) or the legacy `service_role` key, for the `provision`
    /// policy's admin API calls.
    #[arg(
        long = "supabase-service-key",
        env = "USERSYNC_SUPABASE_SERVICE_KEY",
        value_name = "USERSYNC_SUPABASE_SERVICE_KEY",
        hide_env_values = true
    )]
    pub supabase_service_key: Option<SecretString>,
}

impl ReconcileConfig {
    /// Refuses a `provision` policy with nowhere to provision.
    pub fn check(&self) -> Result<(), String> {
        if self.orphaned == OrphanedPolicy::Provision {
            if self.supabase_url.is_none() {
                return Err(
                    "USERSYNC_SUPABASE_URL: is not set, and USERSYNC_POLICY_ORPHANED \
                            is `provision`, which creates auth users through the admin API"
                        .into(),
                );
            }
            if self.supabase_service_key.is_none() {
                return Err("USERSYNC_SUPABASE_SERVICE_KEY: is not set, and \
                            USERSYNC_POLICY_ORPHANED is `provision`, which calls the admin API"
                    .into());
            }
        }
        Ok(())
    }

    pub fn policies(&self) -> Policies {
        Policies {
            missing: self.missing,
            stale: self.stale,
            mismatched: self.mismatched,
            orphaned: self.orphaned,
            deleted: self.deleted.deleted,
            max_delete_share: self.max_delete_share,
        }
    }

    pub fn walking(&self) -> Walking {
        Walking {
            chunk_size: self.chunk_size,
            workers: usize::from(self.workers),
        }
    }

    /// The admin API client, when one is configured.
    pub fn admin_api(&self) -> Option<AdminApi> {
        match (&self.supabase_url, &self.supabase_service_key) {
            (Some(url), Some(key)) => Some(AdminApi::new(url, key.clone())),
            _ => None,
        }
    }
}

/// The defaults of every flag above, for callers that build the config in code.
impl Default for ReconcileConfig {
    fn default() -> Self {
        let p = Policies::default();
        Self {
            missing: p.missing,
            stale: p.stale,
            mismatched: p.mismatched,
            orphaned: p.orphaned,
            deleted: PolicyConfig { deleted: p.deleted },
            max_delete_share: p.max_delete_share,
            chunk_size: DEFAULT_CHUNK_SIZE,
            workers: DEFAULT_WORKERS,
            supabase_url: None,
            supabase_service_key: None,
        }
    }
}

fn parse_share(raw: &str) -> Result<f64, String> {
    match raw.trim().parse::<f64>() {
        Ok(share) if (0.0..=1.0).contains(&share) => Ok(share),
        _ => Err(format!(
            "`{raw}` is not a share between 0 and 1, such as 0.05"
        )),
    }
}

fn parse_http_url(raw: &str) -> Result<String, String> {
    let trimmed = raw.trim().trim_end_matches('/');
    let rest = trimmed
        .strip_prefix("https://")
        .or_else(|| trimmed.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains(char::is_whitespace) => {
            Ok(trimmed.to_owned())
        }
        _ => Err("must be an http:// or https:// URL, such as https://<ref>.supabase.co".into()),
    }
}

/// On or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    On,
    Off,
}

/// The healing loop inside `usersync serve` (see `worker`).
#[derive(Debug, Clone, Args)]
pub struct HealingConfig {
    /// `on`: this replica takes part in the healing loop (one replica leads at a time, by a
    /// Postgres advisory lock; the others stand by and take over within about a second when
    /// it dies). `off`: this replica only serves HTTP.
    #[arg(
        long = "healing",
        env = "USERSYNC_HEALING",
        value_name = "USERSYNC_HEALING",
        default_value = "on"
    )]
    pub healing: Switch,

    /// The leader looks for due dead letters at least this often, whatever LISTEN/NOTIFY said:
    /// the safety net for a notification lost while its connection was down.
    #[arg(long = "healing-sweep-interval", env = "USERSYNC_HEALING_SWEEP_INTERVAL",
          value_name = "USERSYNC_HEALING_SWEEP_INTERVAL", default_value = "30s",
          value_parser = parse_positive_duration)]
    pub sweep_interval: Duration,

    /// Delays between a dead letter's attempts, comma-separated; the last one repeats until
    /// the letter heals. Each is jittered by ±20%; the next attempt is stored in Postgres.
    #[arg(long = "healing-retry-schedule", env = "USERSYNC_HEALING_RETRY_SCHEDULE",
          value_name = "USERSYNC_HEALING_RETRY_SCHEDULE", default_value = "5s,30s,2m,10m,30m,1h",
          value_parser = parse_retry_schedule)]
    pub retry_schedule: RetrySchedule,

    /// How often the leader starts a reconciliation run (every kind, the configured policies):
    /// one interval after the last run started, manual runs included, or at once if none ever
    /// did; `0` turns the periodic reconciliation off.
    #[arg(long = "reconcile-interval", env = "USERSYNC_RECONCILE_INTERVAL",
          value_name = "USERSYNC_RECONCILE_INTERVAL", default_value = "1h",
          value_parser = parse_duration)]
    pub reconcile_interval: Duration,
}

impl HealingConfig {
    /// What the loop does; `None` when it is off.
    pub fn settings(&self, deleted: DeletedPolicy) -> Option<HealingSettings> {
        (self.healing == Switch::On).then(|| HealingSettings {
            sweep_interval: self.sweep_interval,
            retry_schedule: self.retry_schedule.clone(),
            reconcile_interval: (!self.reconcile_interval.is_zero())
                .then_some(self.reconcile_interval),
            policy: deleted,
        })
    }
}

/// What happens to a deleted user's target row, on every path.
#[derive(Debug, Clone, Args)]
pub struct PolicyConfig {
    /// What happens to a deleted user's target row (hard delete, or `deleted_at` set):
    /// `report` keeps it and records the deletion; `delete` removes it (runs: within the
    /// mass-delete guard). The trigger path bakes the policy in when installed: reinstall the
    /// triggers after changing it.
    #[arg(
        long = "policy-deleted",
        env = "USERSYNC_POLICY_DELETED",
        value_name = "USERSYNC_POLICY_DELETED",
        value_enum,
        default_value = "report"
    )]
    pub deleted: DeletedPolicy,
}

/// Signals from Supabase.
#[derive(Debug, Clone, Args)]
pub struct HooksConfig {
    /// A shared secret that a Supabase Database Webhook may send in the
    /// `x-usersync-webhook-secret` header of `POST /v1/hooks/database`, instead of a service
    /// key. At least 32 characters.
    #[arg(long = "webhook-secret", env = "USERSYNC_WEBHOOK_SECRET",
          value_name = "USERSYNC_WEBHOOK_SECRET", value_parser = parse_secret,
          hide_env_values = true)]
    pub webhook_secret: Option<SecretString>,
}

/// How every command logs.
#[derive(Debug, Clone, Args)]
pub struct LogConfig {
    /// Log format; `json` by default when stderr is not a terminal, else `pretty`.
    #[arg(
        long,
        env = "USERSYNC_LOG_FORMAT",
        value_name = "USERSYNC_LOG_FORMAT",
        global = true
    )]
    pub log_format: Option<LogFormat>,
}

impl LogConfig {
    /// The configured format, or the default for where stderr goes.
    pub fn format(&self, stderr_is_terminal: bool) -> LogFormat {
        self.log_format.unwrap_or(if stderr_is_terminal {
            LogFormat::Pretty
        } else {
            LogFormat::Json
        })
    }
}

/// Where `usersync dev` listens: `USERSYNC_LISTEN`, as `serve` reads it, but on the loopback
/// interface by default.
#[derive(Debug, Clone, Args)]
pub struct DevConfig {
    /// Address to listen on.
    #[arg(
        long,
        env = "USERSYNC_LISTEN",
        value_name = "USERSYNC_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    pub listen: SocketAddr,
}

/// Everything `usersync serve` needs.
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    #[command(flatten)]
    pub database: DatabaseConfig,
    #[command(flatten)]
    pub auth: AuthConfig,
    #[command(flatten)]
    pub mapping: MappingConfig,
    #[command(flatten)]
    pub http: HttpConfig,
    #[command(flatten)]
    pub reconcile: ReconcileConfig,
    #[command(flatten)]
    pub healing: HealingConfig,
    #[command(flatten)]
    pub hooks: HooksConfig,
}

impl ServeConfig {
    /// How the API's sync requests share statements.
    pub fn coalescing(&self) -> Coalescing {
        Coalescing {
            max_batch: self.http.sync_batch_size as usize,
            in_flight: self.http.sync_statements as usize,
            wait: self.database.acquire_timeout,
        }
    }
}

/// Parses `250ms`, `10s`, `5m`, `1h`, or a bare number of seconds.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (number, unit) = raw.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{raw}` is not a duration such as 500ms, 10s, 5m or 1h"))?;
    let duration = match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => {
            return Err(format!(
                "`{raw}` is not a duration such as 500ms, 10s, 5m or 1h"
            ))
        }
    };
    Ok(duration)
}

/// `5s,30s,2m`: comma-separated durations, each above zero.
pub fn parse_retry_schedule(raw: &str) -> Result<RetrySchedule, String> {
    let delays = raw
        .split(',')
        .map(|part| parse_duration(part.trim()))
        .collect::<Result<Vec<_>, _>>()?;
    RetrySchedule::new(delays)
}

/// A duration above zero.
fn parse_positive_duration(raw: &str) -> Result<Duration, String> {
    match parse_duration(raw)? {
        d if d.is_zero() => Err("must be above zero".into()),
        d => Ok(d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_schedule_is_comma_separated_durations_each_above_zero() {
        let schedule = parse_retry_schedule("5s, 30s,2m").unwrap();
        assert_eq!(schedule.delay_after(3), Duration::from_secs(120));
        for bad in ["", "5s,,1m", "0s", "5s,soon"] {
            assert!(parse_retry_schedule(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn the_transaction_pooler_is_refused() {
        let err = parse_database_url(
            "postgres://postgres.ref:pw@aws-0-eu-central-1.pooler.supabase.com:6543/postgres",
        )
        .unwrap_err();
        assert!(err.contains("6543"), "{err}");
        assert!(parse_database_url(
            "postgres://postgres.ref:pw@aws-0-eu-central-1.pooler.supabase.com:5432/postgres"
        )
        .is_ok());
        assert!(parse_database_url_any_port(
            "postgres://postgres.ref:pw@aws-0-eu-central-1.pooler.supabase.com:6543/postgres"
        )
        .is_ok_and(|url| url.through_transaction_pooler()));
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5d").is_err());
    }

    #[test]
    fn shares_and_urls_are_checked() {
        assert_eq!(parse_share("0.05").unwrap(), 0.05);
        assert!(parse_share("1.5").is_err());
        assert!(parse_share("five").is_err());
        assert_eq!(
            parse_http_url("https://ref.supabase.co/").unwrap(),
            "https://ref.supabase.co"
        );
        assert!(parse_http_url("ref.supabase.co").is_err());
    }

    #[test]
    fn provisioning_needs_somewhere_to_provision() {
        let config = ReconcileConfig {
            orphaned: OrphanedPolicy::Provision,
            ..ReconcileConfig::default()
        };
        assert!(config
            .check()
            .unwrap_err()
            .starts_with("USERSYNC_SUPABASE_URL"));
        assert!(ReconcileConfig::default().check().is_ok());
    }

    #[test]
    fn short_secrets_and_empty_keys_are_refused() {
        assert!(parse_secret("short").is_err());
        assert!(parse_service_keys("sb_secret_aaaaaaaaaaaaaaaa,").is_err());
        assert_eq!(
            parse_service_keys("sb_secret_aaaaaaaaaaaaaaaa, sb_secret_bbbbbbbbbbbbbbbb")
                .unwrap()
                .0
                .len(),
            2
        );
    }

    fn auth(jwks_url: Option<&str>, from_issuer: bool, issuer: Option<&str>) -> AuthConfig {
        AuthConfig {
            jwt: JwtConfig {
                jwt_secret: None,
                jwt_issuer: issuer.map(str::to_owned),
            },
            service_keys: None,
            jwks_url: jwks_url.map(|u| parse_jwks_url(u).unwrap()),
            jwks_from_issuer: from_issuer,
            jwks_cache_ttl: Duration::from_secs(600),
            jwks_refetch_interval: Duration::from_secs(30),
        }
    }

    #[test]
    fn the_jwks_url_is_configured_or_derived_from_the_issuer_never_both() {
        let issuer = Some("https://ref.supabase.co/auth/v1/");
        assert_eq!(
            auth(None, true, issuer)
                .resolved_jwks_url()
                .unwrap()
                .unwrap()
                .as_str(),
            "https://ref.supabase.co/auth/v1/.well-known/jwks.json"
        );
        let explicit = auth(Some("https://keys.example/jwks.json"), false, issuer);
        assert_eq!(
            explicit.resolved_jwks_url().unwrap().unwrap().as_str(),
            "https://keys.example/jwks.json"
        );
        assert!(
            explicit.check().is_ok(),
            "a JWKS alone can authenticate users"
        );
        assert!(auth(Some("https://keys.example/jwks.json"), true, issuer)
            .check()
            .is_err());
        assert!(auth(None, true, None)
            .check()
            .unwrap_err()
            .contains("USERSYNC_JWT_ISSUER"));
        assert!(auth(None, false, None).check().is_err());
    }

    #[test]
    fn jwks_urls_must_be_http_without_credentials() {
        assert!(parse_jwks_url("https://ref.supabase.co/auth/v1/.well-known/jwks.json").is_ok());
        for bad in [
            "ftp://x/jwks.json",
            "not a url",
            "https://user:pw@x/jwks.json",
            "file:///etc/passwd",
        ] {
            assert!(parse_jwks_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cors_origins_are_normalised_the_way_browsers_send_them() {
        assert_eq!(parse_cors_origins(" * ").unwrap(), CorsOrigins::Any);
        assert_eq!(
            parse_cors_origins(
                "https://App.Example.com, http://localhost:3000/, https://x.dev:443"
            )
            .unwrap(),
            CorsOrigins::List(vec![
                "https://app.example.com".into(),
                "http://localhost:3000".into(),
                "https://x.dev".into(),
            ])
        );
        for bad in [
            "app.example.com",
            "https://app.example.com/path",
            "https://a.com,",
            "*,https://a.com",
        ] {
            assert!(parse_cors_origins(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn no_secret_shows_in_the_configuration_debug_output() {
        let config = AuthConfig {
            jwt: JwtConfig {
                jwt_secret: Some(
                    parse_secret("jwt-secret-value-that-is-long-enough-0123").unwrap(),
                ),
                jwt_issuer: None,
            },
            service_keys: Some(
                parse_service_keys("sb_secret_aaaaaaaaaaaaaaaa,sb_secret_bbbbbbbbbbbbbbbb")
                    .unwrap(),
            ),
            ..auth(None, false, None)
        };
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("jwt-secret-value") && !debug.contains("sb_secret_"),
            "{debug}"
        );
    }
}
