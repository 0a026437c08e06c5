//! What the load benchmarks share: a seeded database, tokens, the served binary, wrk.

#![allow(dead_code)] // each bench binary uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection};

use usersync::compiler::bind::BoundMapping;
use usersync::compiler::mapping::Mapping;
use usersync::dev::fixtures;

pub const SECRET: &str = "bench-jwt-secret-with-at-least-32-characters";
pub const SERVICE_KEY: &str = "sb_secret_bench_0123456789abcdef";

pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The deterministic id of bench user `n`, in SQL (pgbench substitutes `:n`) and in Rust.
pub const ID_SQL: &str = "('00000000-0000-4000-8000-' || lpad((:n)::text, 12, '0'))::uuid";
pub fn id_of(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

/// The bench database's name: `BENCH_DB` when set, else `default`.
pub fn database_name(default: &str) -> String {
    std::env::var("BENCH_DB").unwrap_or_else(|_| default.into())
}

/// The server (`DATABASE_URL`, default the local one) and the URL of database `name` on it.
pub fn database_urls(name: &str) -> (String, String) {
    let server = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let base = server.rsplit_once('/').map(|(b, _)| b).unwrap_or(&server);
    let db = format!("{base}/{name}");
    (server, db)
}

/// A user access token for bench user `n`, valid for `ttl` seconds.
pub fn user_token(n: u32, ttl: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": id_of(n), "aud": "authenticated", "role": "authenticated",
                "iat": now, "exp": now + ttl}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// A bench's work directory and database, removed however the run ends (an error or a panic
/// included).
pub struct Cleanup {
    pub work: PathBuf,
    pub server: String,
    pub db: String,
    /// The bench's name, for the one line said when the database cannot be dropped.
    pub bench: &'static str,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.work);
        let dropped = tokio::runtime::Runtime::new()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(drop_database(&self.server, &self.db)));
        if let Err(e) = dropped {
            eprintln!("{}: could not drop database {}: {e}", self.bench, self.db);
        }
    }
}

pub fn workdir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("usersync-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Writes one token per bench user to `dir/tokens.txt`, for the wrk scripts.
pub fn write_tokens(dir: &Path, users: u32, ttl: u64) -> anyhow::Result<()> {
    let tokens: Vec<String> = (1..=users).map(|n| user_token(n, ttl)).collect();
    std::fs::write(dir.join("tokens.txt"), tokens.join("\n"))?;
    Ok(())
}

/// The release binary serving `db_url` on a free port; killed when dropped.
pub struct Service {
    pub child: Child,
    pub port: u16,
}

impl Service {
    pub fn start(db_url: &str, pool: u32) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new(env!("CARGO_BIN_EXE_usersync"))
            .arg("serve")
            .env("DATABASE_URL", db_url)
            .env("USERSYNC_LISTEN", format!("127.0.0.1:{port}"))
            .env("USERSYNC_JWT_SECRET", SECRET)
            .env("USERSYNC_SERVICE_KEYS", SERVICE_KEY)
            .env("USERSYNC_LOG_FORMAT", "json")
            .env("USERSYNC_DB_POOL_SIZE", pool.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let service = Self { child, port };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(service);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        anyhow::bail!("usersync did not start listening on {port}")
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Resident set size now, in KiB (from /proc).
    pub fn rss_kib(&self) -> Option<u64> {
        proc_status_kib(self.child.id(), "VmRSS:")
    }

    /// Peak resident set size so far, in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        proc_status_kib(self.child.id(), "VmHWM:")
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// A fresh bench database: the auth fixture, `public.users`, the migrations, and `users` users
/// already synced (the steady state of a sign-in callback: the profile exists and is current).
/// Returns the sync-one statement the service renders for it.
pub async fn prepare_database(
    server: &str,
    db: &str,
    name: &str,
    users: u32,
) -> anyhow::Result<String> {
    let mut admin = PgConnection::connect(server).await?;
    sqlx::raw_sql(&format!("drop database if exists {name} with (force)"))
        .execute(&mut admin)
        .await?;
    sqlx::raw_sql(&format!("create database {name}"))
        .execute(&mut admin)
        .await?;
    let pool = PgPoolOptions::new().max_connections(2).connect(db).await?;
    sqlx::raw_sql(fixtures::SUPABASE_AUTH)
        .execute(&pool)
        .await?;
    sqlx::raw_sql(fixtures::PUBLIC_USERS).execute(&pool).await?;
    usersync::db::migrate(&pool).await?;
    sqlx::query(
        "insert into auth.users (instance_id, id, aud, role, email, raw_app_meta_data,
             raw_user_meta_data, confirmation_token, recovery_token, email_change_token_new,
             email_change, created_at, updated_at)
         select '00000000-0000-0000-0000-000000000000',
                ('00000000-0000-4000-8000-' || lpad(n::text, 12, '0'))::uuid,
                'authenticated', 'authenticated', 'user' || n || '@example.com',
                '{\"provider\":\"email\",\"providers\":[\"email\"]}',
                jsonb_build_object('full_name', 'User ' || n), '', '', '', '', now(), now()
           from generate_series(1, $1) n",
    )
    .bind(users as i32)
    .execute(&pool)
    .await?;
    sqlx::query(
        "insert into public.users (id, email, full_name, role, created_at)
         select id, email, raw_user_meta_data->>'full_name', 'user', created_at from auth.users",
    )
    .execute(&pool)
    .await?;
    sqlx::raw_sql("vacuum analyze").execute(&pool).await?;
    let bound = BoundMapping::bind(&pool, Mapping::default_mapping()).await?;
    pool.close().await;
    Ok(bound.sql.sync_one)
}

/// Drops database `name` on `server` (the bench's connections too).
pub async fn drop_database(server: &str, name: &str) -> anyhow::Result<()> {
    let mut admin = PgConnection::connect(server).await?;
    sqlx::raw_sql(&format!("drop database if exists {name} with (force)"))
        .execute(&mut admin)
        .await?;
    Ok(())
}

/// Each wrk thread reads the tokens once and signs every request with a random user's token.
pub const SYNC_ME_LUA: &str = r#"
local tokens = {}
function init(args)
  for line in io.lines("tokens.txt") do tokens[#tokens + 1] = line end
  math.randomseed(os.time() + math.floor(os.clock() * 1000000))
end
function request()
  local token = tokens[math.random(#tokens)]
  return wrk.format("POST", "/v1/users/me/sync", { ["Authorization"] = "Bearer " .. token }, "")
end
"#;

/// Runs a function of `scripts/bench/lib.sh`, what the shell benchmarks share (GoTrue's tables
/// and its sign-up transaction, say), and returns what it printed.
pub fn lib_sh(function: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("bash")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("-c")
        .arg(r#". scripts/bench/lib.sh && "$@""#)
        .arg("lib.sh")
        .arg(function)
        .args(args)
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "lib.sh {function} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?)
}

/// What pgbench reported.
pub struct PgbenchResult {
    pub tps: f64,
    pub transactions: f64,
    /// Failed transactions and aborted clients (an error aborts a client).
    pub errors: f64,
    /// The tps of each progress interval (`-P`), in order.
    pub progress: Vec<f64>,
    pub output: String,
}

/// Runs pgbench's script `script` (prepared statements, `clients` clients on at most as many
/// threads as cores, for `seconds`) against `url`, printing progress every `progress` seconds
/// (0: none). A failed run is an error only when it says nothing at all: a client that aborts is
/// counted in `errors`, for the caller to report beside everything else.
pub fn pgbench(
    script: &Path,
    url: &str,
    clients: u32,
    seconds: u32,
    progress: u32,
) -> anyhow::Result<PgbenchResult> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let mut command = Command::new("pgbench");
    command
        .args(["-n", "-M", "prepared"])
        .args([
            "-c",
            &clients.to_string(),
            "-j",
            &clients.min(cores).to_string(),
        ])
        .args(["-T", &seconds.to_string()]);
    if progress > 0 {
        command.args(["-P", &progress.to_string()]);
    }
    let output = command.arg("-f").arg(script).arg(url).output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let out = format!("{stdout}{stderr}");
    let tps = number_after(&stdout, "tps = ")
        .ok_or_else(|| anyhow::anyhow!("no tps in pgbench output:\n{out}"))?;
    let aborted = stderr.lines().filter(|l| l.contains(" aborted ")).count() as f64;
    let failed = number_after(&stdout, "number of failed transactions: ").unwrap_or(0.0);
    let progress = stderr
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("progress: ")?;
            let (_, rest) = rest.split_once(" s, ")?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .collect();
    Ok(PgbenchResult {
        tps,
        transactions: number_after(&stdout, "number of transactions actually processed: ")
            .unwrap_or(0.0),
        errors: failed + aborted.max(if output.status.success() { 0.0 } else { 1.0 }),
        progress,
        output: out,
    })
}

/// What wrk reported.
pub struct WrkResult {
    pub requests_per_second: f64,
    pub p99_ms: f64,
    pub errors: f64,
    pub requests: f64,
}

/// Runs wrk with a Lua script from `dir` against `url`.
pub fn wrk(
    dir: &Path,
    script: &str,
    url: &str,
    connections: u32,
    seconds: u32,
) -> anyhow::Result<WrkResult> {
    let output = Command::new("wrk")
        .current_dir(dir)
        .args([
            "-t",
            "2",
            "-c",
            &connections.to_string(),
            "-d",
            &format!("{seconds}s"),
        ])
        .args(["--latency", "-s", script])
        .arg(url)
        .output()?;
    let out = String::from_utf8_lossy(&output.stdout).into_owned();
    anyhow::ensure!(output.status.success(), "wrk failed: {out}");
    // Which kind of error, for whoever reads a run with errors: a status, or a socket's fate.
    for line in out.lines().filter(|l| {
        let l = l.trim_start();
        l.starts_with("Non-2xx") || l.starts_with("Socket errors:")
    }) {
        eprintln!("wrk: {}", line.trim());
    }
    Ok(WrkResult {
        requests_per_second: number_after(&out, "Requests/sec:")
            .ok_or_else(|| anyhow::anyhow!("no Requests/sec in wrk output:\n{out}"))?,
        p99_ms: latency_ms(&out, "99%")
            .ok_or_else(|| anyhow::anyhow!("no p99 in wrk output:\n{out}"))?,
        errors: number_after(&out, "Non-2xx or 3xx responses:").unwrap_or(0.0)
            + socket_errors(&out),
        requests: total_requests(&out).unwrap_or(0.0),
    })
}

/// wrk's `123456 requests in 15.00s, ...` line.
fn total_requests(text: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.contains(" requests in "))?;
    line.split_whitespace().next()?.parse().ok()
}

/// The first number after `label` in `text`.
pub fn number_after(text: &str, label: &str) -> Option<f64> {
    let rest = &text[text.find(label)? + label.len()..];
    let token: String = rest
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    token.parse().ok()
}

/// A line of wrk's latency distribution (`99%   12.34ms`) in milliseconds.
pub fn latency_ms(text: &str, percentile: &str) -> Option<f64> {
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with(percentile))?;
    let value = line.split_whitespace().nth(1)?;
    let (number, unit) = value.split_at(value.find(|c: char| c.is_alphabetic())?);
    let number: f64 = number.parse().ok()?;
    Some(match unit {
        "us" => number / 1000.0,
        "ms" => number,
        "s" => number * 1000.0,
        _ => return None,
    })
}

/// wrk's `Socket errors: connect 0, read 0, write 0, timeout 0`, summed.
pub fn socket_errors(text: &str) -> f64 {
    text.lines()
        .find(|l| l.trim_start().starts_with("Socket errors:"))
        .map(|l| {
            l.split(',')
                .filter_map(|part| part.split_whitespace().last()?.parse::<f64>().ok())
                .sum()
        })
        .unwrap_or(0.0)
}
