//! Configuration: typed settings read from the environment (and `.env`), each validated as it
//! is parsed, so that a bad one stops the process at start-up with one line naming it.
//!
//! Every setting is also a flag of the subcommands that need it; the environment variable is the
//! documented way to set it (see the README's configuration table).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, ValueEnum};
use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::PgConnectOptions;

use crate::sync::policy::DeletedPolicy;
use crate::worker::retry::RetrySchedule;
use crate::worker::HealingSettings;

/// The port of Supabase's transaction-mode pooler (Supavisor), which does not support the
/// prepared statements sqlx relies on.
const TRANSACTION_POOLER_PORT: u16 = 6543;

/// The connection to the Postgres that holds both `auth.users` and the target table.
#[derive(Debug, Clone, Args)]
pub struct DatabaseConfig {
    /// Postgres connection URL: a direct connection or Supabase's session-mode pooler (port
    /// 5432). The transaction-mode pooler (port 6543) is refused.
    #[arg(long = "database-url", env = "DATABASE_URL", value_name = "DATABASE_URL",
          value_parser = DatabaseUrl::parse, hide_env_values = true)]
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

/// A parsed Postgres URL. The original string is kept secret: it usually holds a password.
#[derive(Clone)]
pub struct DatabaseUrl {
    pub options: PgConnectOptions,
    raw: SecretString,
}

impl DatabaseUrl {
    pub fn expose(&self) -> &str {
        self.raw.expose_secret()
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DatabaseUrl([redacted])")
    }
}

impl DatabaseUrl {
    /// Parses and checks a Postgres URL; the error never repeats the URL (it may hold a
    /// password).
    pub fn parse(raw: &str) -> Result<DatabaseUrl, String> {
        let url = Self::parse_any_port(raw)?;
        if url.through_transaction_pooler() {
            return Err(format!(
                "points at port {TRANSACTION_POOLER_PORT}, Supabase's transaction-mode pooler, \
                 which does not support prepared statements: use the direct connection or the \
                 session-mode pooler (port 5432)"
            ));
        }
        Ok(url)
    }

    /// Parses without refusing the transaction-mode pooler: `usersync doctor` reports it as a
    /// risk rather than stopping at it.
    pub fn parse_any_port(raw: &str) -> Result<DatabaseUrl, String> {
        if !(raw.starts_with("postgres://") || raw.starts_with("postgresql://")) {
            return Err("must be a postgres:// or postgresql:// URL".into());
        }
        let options = PgConnectOptions::from_str(raw).map_err(|_| "is not a valid Postgres URL")?;
        Ok(DatabaseUrl {
            options,
            raw: SecretString::from(raw.to_owned()),
        })
    }

    /// Whether the URL names Supabase's transaction-mode pooler port.
    pub fn through_transaction_pooler(&self) -> bool {
        self.options.get_port() == TRANSACTION_POOLER_PORT
    }
}

/// How callers prove who they are.
#[derive(Debug, Clone, Args)]
pub struct AuthConfig {
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

    /// Comma-separated opaque secret keys (`sb_secret_...`) accepted as the service, in `apikey`
    /// or `Authorization`. Several at once allow rotation.
    #[arg(long = "service-keys", env = "USERSYNC_SERVICE_KEYS",
          value_name = "USERSYNC_SERVICE_KEYS", value_parser = parse_service_keys,
          hide_env_values = true)]
    pub service_keys: Option<ServiceKeys>,
}

impl AuthConfig {
    /// Refuses a configuration under which nobody could authenticate.
    pub fn check(&self) -> Result<(), String> {
        if self.jwt_secret.is_none() && self.service_keys.is_none() {
            return Err(
                "USERSYNC_JWT_SECRET: is not set, and neither is USERSYNC_SERVICE_KEYS: \
                 no caller could authenticate"
                    .into(),
            );
        }
        Ok(())
    }
}

/// A shared secret: at least 32 characters, as Supabase requires of its JWT secret.
fn parse_secret(raw: &str) -> Result<SecretString, String> {
    if raw.chars().count() < 32 {
        return Err("must be at least 32 characters long".into());
    }
    Ok(SecretString::from(raw.to_owned()))
}

/// The configured secret keys; their values never appear in `Debug`.
#[derive(Clone)]
pub struct ServiceKeys(pub Vec<SecretString>);

impl std::fmt::Debug for ServiceKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServiceKeys([{} redacted])", self.0.len())
    }
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

/// The HTTP edge.
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
          value_parser = RetrySchedule::parse)]
    pub retry_schedule: RetrySchedule,

    /// How often the leader heals every missing and stale user (and once when it takes the
    /// lead); `0` turns the periodic reconciliation off.
    #[arg(long = "reconcile-interval", env = "USERSYNC_RECONCILE_INTERVAL",
          value_name = "USERSYNC_RECONCILE_INTERVAL", default_value = "1h",
          value_parser = parse_duration)]
    pub reconcile_interval: Duration,
}

impl HealingConfig {
    /// What the loop does; `None` when it is off.
    pub fn settings(&self, policy: &PolicyConfig) -> Option<HealingSettings> {
        (self.healing == Switch::On).then(|| HealingSettings {
            sweep_interval: self.sweep_interval,
            retry_schedule: self.retry_schedule.clone(),
            reconcile_interval: (!self.reconcile_interval.is_zero())
                .then_some(self.reconcile_interval),
            policy: policy.deleted,
        })
    }
}

/// The repair policies.
#[derive(Debug, Clone, Args)]
pub struct PolicyConfig {
    /// What happens to a deleted user's target row (hard delete, or `deleted_at` set):
    /// `report` keeps it and records the deletion; `delete` removes it. The trigger path bakes
    /// the policy in when installed: reinstall the triggers after changing it.
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

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line: for production log collectors.
    Json,
    /// Human-readable lines: for a terminal.
    Pretty,
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
    pub healing: HealingConfig,
    #[command(flatten)]
    pub policy: PolicyConfig,
    #[command(flatten)]
    pub hooks: HooksConfig,
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
    fn the_transaction_pooler_is_refused() {
        let err = DatabaseUrl::parse(
            "postgres://postgres.ref:pw@aws-0-eu-central-1.pooler.supabase.com:6543/postgres",
        )
        .unwrap_err();
        assert!(err.contains("6543"), "{err}");
        assert!(DatabaseUrl::parse(
            "postgres://postgres.ref:pw@aws-0-eu-central-1.pooler.supabase.com:5432/postgres"
        )
        .is_ok());
    }

    #[test]
    fn database_urls_never_show_their_password() {
        let url = DatabaseUrl::parse("postgres://u:hunter2-secret@localhost/db").unwrap();
        assert!(!format!("{url:?}").contains("hunter2"));
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
}
