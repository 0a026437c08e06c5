//! The soak run (documented, not in CI): load for `BENCH_SECONDS` (default ten minutes) against
//! the release binary, sampling its memory every `BENCH_SAMPLE` seconds.
//!
//! The HTTP mix, per request: 80% `POST /v1/users/me/sync`, 10% `GET /v1/users/{id}/drift` (the
//! caller's own), 5% `POST /v1/users/{id}/sync` and 5% `GET /v1/status` with the secret key.
//!
//! The held load (`BENCH_SIGNUP_CLIENTS` > 0): the triggers are installed (`usersync triggers
//! install`), and beside the HTTP load pgbench replays GoTrue's sign-up transaction as
//! `supabase_auth_admin`, the one `scripts/bench/signup.sh` measures (from `scripts/bench/lib.sh`),
//! with that many clients, for the same time; every request is then `POST /v1/users/me/sync`
//! (a status reads the whole table, which the sign-ups grow by hundreds of thousands of rows). At
//! the end every signed-up user must have exactly one profile and one `created` event, with no
//! dead letter.
//!
//! It passes when no request and no sign-up failed and memory is flat: the last quarter's RSS is
//! within 10% of the second quarter's (the first quarter is warm-up). The database (`BENCH_DB`,
//! default `usersync_bench_soak`) is dropped at the end.
//!
//!     cargo bench --bench soak
//!     BENCH_SECONDS=60 cargo bench --bench soak                          # a short run
//!     BENCH_SIGNUP_CLIENTS=16 cargo bench --bench soak                   # the held load

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};
use support::*;

const DB: &str = "usersync_bench_soak";

fn script() -> String {
    format!(
        r#"
local tokens = {{}}
local ids = {{}}
function init(args)
  for line in io.lines("tokens.txt") do tokens[#tokens + 1] = line end
  math.randomseed(os.time() + math.floor(os.clock() * 1000000))
end
function request()
  local n = math.random(#tokens)
  local id = string.format("00000000-0000-4000-8000-%012d", n)
  local auth = {{ ["Authorization"] = "Bearer " .. tokens[n] }}
  local roll = math.random(100)
  if roll <= 80 then
    return wrk.format("POST", "/v1/users/me/sync", auth, "")
  elseif roll <= 90 then
    return wrk.format("GET", "/v1/users/" .. id .. "/drift", auth)
  elseif roll <= 95 then
    return wrk.format("POST", "/v1/users/" .. id .. "/sync", {{ ["apikey"] = "{SERVICE_KEY}" }}, "")
  else
    return wrk.format("GET", "/v1/status", {{ ["apikey"] = "{SERVICE_KEY}" }})
  end
end
"#
    )
}

/// The held load's sign-up side: GoTrue's other tables and its sign-up script (lib.sh's, as
/// signup.sh runs them), and usersync's triggers, installed by the CLI.
fn prepare_signups(db_url: &str, work: &Path, rt: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    let tables = lib_sh("gotrue_tables_sql", &[])?;
    rt.block_on(async {
        let mut conn = PgConnection::connect(db_url).await?;
        sqlx::raw_sql(&tables).execute(&mut conn).await?;
        anyhow::Ok(())
    })?;
    std::fs::write(work.join("signup.sql"), lib_sh("signup_sql", &["confirm"])?)?;
    let install = std::process::Command::new(env!("CARGO_BIN_EXE_usersync"))
        .args(["triggers", "install"])
        .env("DATABASE_URL", db_url)
        .output()?;
    anyhow::ensure!(
        install.status.success(),
        "usersync triggers install failed: {}",
        String::from_utf8_lossy(&install.stderr)
    );
    Ok(())
}

/// After the held load: the signed-up users, those without a profile, the profiles beyond one
/// per sign-up, their `created` events by the trigger, and every dead letter.
struct SignupCheck {
    users: i64,
    lost: i64,
    extra: i64,
    created_events: i64,
    dead_letters: i64,
}

async fn check_signups(db_url: &str) -> anyhow::Result<SignupCheck> {
    let mut conn = PgConnection::connect(db_url).await?;
    // The sign-ups grew the tables tenfold or more since the seed's statistics: without fresh
    // ones the planner expects a few sign-ups and joins them to the events by a nested loop
    // (minutes, at a hundred thousand).
    sqlx::raw_sql("analyze auth.users; analyze public.users; analyze usersync.events")
        .execute(&mut conn)
        .await?;
    let (users, lost, extra, created_events, dead_letters): (i64, i64, i64, i64, i64) =
        sqlx::query_as(
            "with s as (select id from auth.users where email like 'signup-%')
             select (select count(*) from s),
                    (select count(*) from s where not exists
                        (select from public.users p where p.id = s.id)),
                    (select count(*) from public.users where email like 'signup-%')
                      - (select count(*) from s),
                    (select count(*) from usersync.events e join s on s.id = e.user_id
                      where e.path = 'trigger' and e.action = 'created'),
                    (select count(*) from usersync.dead_letters)",
        )
        .fetch_one(&mut conn)
        .await?;
    Ok(SignupCheck {
        users,
        lost,
        extra,
        created_events,
        dead_letters,
    })
}

fn main() -> anyhow::Result<()> {
    let seconds: u32 = env_or("BENCH_SECONDS", 600);
    let sample: u64 = env_or("BENCH_SAMPLE", 10);
    let users: u32 = env_or("BENCH_USERS", 10_000);
    let callers: u32 = env_or("BENCH_CALLERS", 32);
    let signup_clients: u32 = env_or("BENCH_SIGNUP_CLIENTS", 0);
    let db = database_name(DB);
    let (server, db_url) = database_urls(&db);
    let work = workdir()?;
    let _cleanup = Cleanup {
        work: work.clone(),
        server: server.clone(),
        db: db.clone(),
        bench: "soak",
    };
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(prepare_database(&server, &db_url, &db, users))?;
    let held = signup_clients > 0;
    if held {
        prepare_signups(&db_url, &work, &rt)?;
    }
    write_tokens(&work, users, u64::from(seconds) + 3600)?;
    let lua = if held { SYNC_ME_LUA.into() } else { script() };
    std::fs::write(work.join("soak.lua"), lua)?;
    let service = Service::start(&db_url, 16)?;

    if held {
        eprintln!(
            "soak: {callers} connections of sync-ones and {signup_clients} pgbench clients of \
             sign-ups for {seconds}s, RSS every {sample}s"
        );
    } else {
        eprintln!("soak: {callers} connections for {seconds}s, RSS every {sample}s");
    }
    let (work2, url) = (work.clone(), service.url());
    let load = std::thread::spawn(move || wrk(&work2, "soak.lua", &url, callers, seconds));
    let signups = held.then(|| {
        let script = work.join("signup.sql");
        let auth_url = lib_sh("auth_admin_url", &[&db_url]).map(|u| u.trim().to_string());
        std::thread::spawn(move || pgbench(&script, &auth_url?, signup_clients, seconds, 60))
    });
    let started = Instant::now();
    let mut samples = Vec::new();
    while !load.is_finished() || signups.as_ref().is_some_and(|s| !s.is_finished()) {
        std::thread::sleep(Duration::from_secs(sample));
        if let Some(rss) = service.rss_kib() {
            let t = started.elapsed().as_secs();
            println!("{t:>6}s  rss {:>8.1} MiB", rss as f64 / 1024.0);
            samples.push(rss);
        }
    }
    let result = load.join().expect("the load thread")?;
    let signups = signups
        .map(|s| s.join().expect("the sign-up thread"))
        .transpose()?;
    let peak = service.peak_rss_kib().unwrap_or_default();
    drop(service);
    let check = match signups {
        Some(_) => Some(rt.block_on(check_signups(&db_url))?),
        None => None,
    };

    let quarter = samples.len() / 4;
    anyhow::ensure!(
        quarter > 0,
        "too few samples: run longer than 4 x BENCH_SAMPLE"
    );
    let mean = |s: &[u64]| s.iter().sum::<u64>() as f64 / s.len() as f64;
    let second = mean(&samples[quarter..2 * quarter]);
    let last = mean(&samples[samples.len() - quarter..]);
    let growth = (last - second) / second;
    println!();
    if let (Some(pg), Some(c)) = (&signups, &check) {
        let lowest = pg.progress.iter().copied().fold(f64::INFINITY, f64::min);
        let highest = pg.progress.iter().copied().fold(0.0, f64::max);
        println!("sign-ups (GoTrue's transaction, {signup_clients} pgbench clients, the triggers)");
        println!("transactions        {:>12.0}", pg.transactions);
        println!("tps                 {:>12.0}", pg.tps);
        if !pg.progress.is_empty() {
            println!("tps by minute       {lowest:>5.0} – {highest:.0}");
        }
        println!("errors              {:>12.0}", pg.errors);
        println!("users signed up     {:>12}", c.users);
        println!("  without a profile {:>12}", c.lost);
        println!("  extra profiles    {:>12}", c.extra);
        println!("  created events    {:>12}", c.created_events);
        println!("dead letters        {:>12}", c.dead_letters);
        println!();
        println!("sync-ones (POST /v1/users/me/sync, {callers} connections)");
    }
    println!("requests            {:>12.0}", result.requests);
    println!("requests/s          {:>12.0}", result.requests_per_second);
    println!("p99                 {:>9.2} ms", result.p99_ms);
    println!("errors              {:>12.0}", result.errors);
    println!("RSS 2nd quarter     {:>8.1} MiB", second / 1024.0);
    println!("RSS last quarter    {:>8.1} MiB", last / 1024.0);
    println!("RSS growth          {:>11.1}%", growth * 100.0);
    println!("peak RSS            {:>8.1} MiB", peak as f64 / 1024.0);
    anyhow::ensure!(result.errors == 0.0, "{} requests failed", result.errors);
    if let (Some(pg), Some(c)) = (&signups, &check) {
        anyhow::ensure!(
            pg.errors == 0.0,
            "{} sign-ups failed:\n{}",
            pg.errors,
            pg.output
        );
        anyhow::ensure!(
            c.users > 0 && c.users as f64 >= pg.transactions,
            "pgbench signed up {} users, auth.users holds {}",
            pg.transactions,
            c.users
        );
        anyhow::ensure!(
            c.lost == 0 && c.extra == 0,
            "{} sign-ups without a profile, {} profiles too many",
            c.lost,
            c.extra
        );
        anyhow::ensure!(
            c.created_events == c.users,
            "{} created events for {} sign-ups",
            c.created_events,
            c.users
        );
        anyhow::ensure!(c.dead_letters == 0, "{} dead letters", c.dead_letters);
    }
    anyhow::ensure!(
        growth < 0.10,
        "memory grew {:.1}% over the run",
        growth * 100.0
    );
    if held {
        println!("soak OK: no errors, every sign-up has its profile, memory flat");
    } else {
        println!("soak OK: no errors, memory flat");
    }
    Ok(())
}
