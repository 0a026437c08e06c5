//! Sync-one under load, next to the database's own limit for the same statement.
//!
//! In one run, on one database seeded with `USERS` synced users:
//! 1. pgbench runs the exact sync-one statement the service renders (prepared, `CALLERS`
//!    clients, `SECONDS` seconds);
//! 2. wrk drives `POST /v1/users/me/sync` on the real release binary with `CALLERS` connections,
//!    each request carrying a valid user token for a random user.
//!
//! Both sides then print their throughput, the ratio, wrk's p99 latency and the error count.
//! Targets: ratio >= 0.6, p99 < 25 ms, zero errors.
//!
//!     cargo bench --bench sync_one_load
//!
//! Needs `pgbench` and `wrk` on PATH, and the server named by `DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`). `BENCH_SECONDS`, `BENCH_USERS` and
//! `BENCH_CALLERS` override the defaults.

use std::process::{Command, Stdio};
use std::time::Duration;

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection};

use usersync::dev::fixtures;
use usersync::sync::mapping::Mapping;
use usersync::sync::target::BoundMapping;

const SECRET: &str = "bench-jwt-secret-with-at-least-32-characters";
const DB: &str = "usersync_bench_sync_one";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The deterministic id of bench user `n`, in SQL (pgbench substitutes `:n`) and in Rust.
const ID_SQL: &str = "('00000000-0000-4000-8000-' || lpad((:n)::text, 12, '0'))::uuid";
fn id_of(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

fn main() -> anyhow::Result<()> {
    let seconds: u32 = env_or("BENCH_SECONDS", 15);
    let users: u32 = env_or("BENCH_USERS", 10_000);
    let callers: u32 = env_or("BENCH_CALLERS", 64);
    let server = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let base = server.rsplit_once('/').map(|(b, _)| b).unwrap_or(&server);
    let db_url = format!("{base}/{DB}");
    let work = tempdir()?;

    let rt = tokio::runtime::Runtime::new()?;
    let statement = rt.block_on(prepare_database(&server, &db_url, users))?;

    // --- pgbench: the same statement, alone --------------------------------------------------
    let script = format!(
        "\\set n random(1, {users})\n{};\n",
        statement
            .replace("$1", ID_SQL)
            .replace("$2", "'bench'")
            .replace('\n', " ")
    );
    std::fs::write(work.join("sync_one.sql"), script)?;
    eprintln!("pgbench: {callers} clients, {seconds}s ...");
    let pgbench = Command::new("pgbench")
        .args(["-n", "-M", "prepared", "-j", "2"])
        .args(["-c", &callers.to_string(), "-T", &seconds.to_string()])
        .arg("-f")
        .arg(work.join("sync_one.sql"))
        .arg(&db_url)
        .output()?;
    let pgbench_out = String::from_utf8_lossy(&pgbench.stdout);
    anyhow::ensure!(
        pgbench.status.success(),
        "pgbench failed: {}",
        String::from_utf8_lossy(&pgbench.stderr)
    );
    let tps = number_after(&pgbench_out, "tps = ")
        .ok_or_else(|| anyhow::anyhow!("no tps in pgbench output:\n{pgbench_out}"))?;
    let pg_failed = number_after(&pgbench_out, "number of failed transactions: ").unwrap_or(0.0);

    // --- the service under wrk -----------------------------------------------------------------
    let tokens: Vec<String> = (1..=users)
        .map(|n| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            encode(
                &Header::new(Algorithm::HS256),
                &json!({"sub": id_of(n), "aud": "authenticated", "role": "authenticated",
                        "iat": now, "exp": now + 3600}),
                &EncodingKey::from_secret(SECRET.as_bytes()),
            )
            .unwrap()
        })
        .collect();
    std::fs::write(work.join("tokens.txt"), tokens.join("\n"))?;
    std::fs::write(work.join("sync_me.lua"), WRK_SCRIPT)?;
    let port = free_port()?;
    let mut service = Command::new(env!("CARGO_BIN_EXE_usersync"))
        .arg("serve")
        .env("DATABASE_URL", &db_url)
        .env("USERSYNC_LISTEN", format!("127.0.0.1:{port}"))
        .env("USERSYNC_JWT_SECRET", SECRET)
        .env("USERSYNC_LOG_FORMAT", "json")
        .env(
            "USERSYNC_DB_POOL_SIZE",
            env_or::<u32>("BENCH_POOL", 16).to_string(),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let result = (|| -> anyhow::Result<(f64, f64, f64)> {
        wait_ready(port)?;
        eprintln!("wrk: {callers} connections, {seconds}s ...");
        let wrk = Command::new("wrk")
            .current_dir(&work)
            .args([
                "-t",
                "2",
                "-c",
                &callers.to_string(),
                "-d",
                &format!("{seconds}s"),
            ])
            .args(["--latency", "-s", "sync_me.lua"])
            .arg(format!("http://127.0.0.1:{port}"))
            .output()?;
        let out = String::from_utf8_lossy(&wrk.stdout).into_owned();
        anyhow::ensure!(wrk.status.success(), "wrk failed: {out}");
        let rps = number_after(&out, "Requests/sec:")
            .ok_or_else(|| anyhow::anyhow!("no Requests/sec in wrk output:\n{out}"))?;
        let p99 = latency_ms(&out, "99%")
            .ok_or_else(|| anyhow::anyhow!("no p99 in wrk output:\n{out}"))?;
        let errors =
            number_after(&out, "Non-2xx or 3xx responses:").unwrap_or(0.0) + socket_errors(&out);
        Ok((rps, p99, errors))
    })();
    let _ = service.kill();
    let _ = service.wait();
    let (rps, p99, errors) = result?;

    println!();
    println!("sync-one at {callers} concurrent callers, {users} users, {seconds}s each side");
    println!(
        "{:<44}{:>14}",
        "pgbench, the sync-one statement (tps)",
        format!("{tps:.0}")
    );
    println!(
        "{:<44}{:>14}",
        "usersync POST /v1/users/me/sync (req/s)",
        format!("{rps:.0}")
    );
    println!(
        "{:<44}{:>14}",
        "ratio (target >= 0.60)",
        format!("{:.2}", rps / tps)
    );
    println!(
        "{:<44}{:>14}",
        "usersync p99 latency (target < 25 ms)",
        format!("{p99:.2} ms")
    );
    println!(
        "{:<44}{:>14}",
        "usersync errors (target 0)",
        format!("{errors:.0}")
    );
    println!(
        "{:<44}{:>14}",
        "pgbench failed transactions",
        format!("{pg_failed:.0}")
    );
    Ok(())
}

/// Each wrk thread reads the tokens once and signs every request with a random user's token.
const WRK_SCRIPT: &str = r#"
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

/// A fresh bench database: the auth fixture, `public.users`, the migrations, and `users` users
/// already synced (the steady state of a sign-in callback: the profile exists and is current).
async fn prepare_database(server: &str, db_url: &str, users: u32) -> anyhow::Result<String> {
    let mut admin = PgConnection::connect(server).await?;
    sqlx::raw_sql(&format!("drop database if exists {DB} with (force)"))
        .execute(&mut admin)
        .await?;
    sqlx::raw_sql(&format!("create database {DB}"))
        .execute(&mut admin)
        .await?;
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(db_url)
        .await?;
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

fn tempdir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("usersync-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn wait_ready(port: u16) -> anyhow::Result<()> {
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    anyhow::bail!("usersync did not start listening on {port}")
}

/// The first number after `label` in `text`.
fn number_after(text: &str, label: &str) -> Option<f64> {
    let rest = &text[text.find(label)? + label.len()..];
    let token: String = rest
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    token.parse().ok()
}

/// A line of wrk's latency distribution (`99%   12.34ms`) in milliseconds.
fn latency_ms(text: &str, percentile: &str) -> Option<f64> {
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
fn socket_errors(text: &str) -> f64 {
    text.lines()
        .find(|l| l.trim_start().starts_with("Socket errors:"))
        .map(|l| {
            l.split(',')
                .filter_map(|part| part.split_whitespace().last()?.parse::<f64>().ok())
                .sum()
        })
        .unwrap_or(0.0)
}
