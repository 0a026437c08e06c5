//! The soak run (documented, not in CI): mixed load for `BENCH_SECONDS` (default ten minutes)
//! against the release binary, sampling its memory every `BENCH_SAMPLE` seconds.
//!
//! The mix, per request: 80% `POST /v1/users/me/sync`, 10% `GET /v1/users/{id}/drift` (the
//! caller's own), 5% `POST /v1/users/{id}/sync` and 5% `GET /v1/status` with the secret key.
//! It passes when no request failed and memory is flat: the last quarter's RSS is within 10% of
//! the second quarter's (the first quarter is warm-up).
//!
//!     cargo bench --bench soak
//!     BENCH_SECONDS=60 cargo bench --bench soak     # a short run

mod support;

use std::time::{Duration, Instant};

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

fn main() -> anyhow::Result<()> {
    let seconds: u32 = env_or("BENCH_SECONDS", 600);
    let sample: u64 = env_or("BENCH_SAMPLE", 10);
    let users: u32 = env_or("BENCH_USERS", 10_000);
    let callers: u32 = env_or("BENCH_CALLERS", 32);
    let (server, db_url) = database_urls(DB);
    let work = workdir()?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(prepare_database(&server, &db_url, DB, users))?;
    write_tokens(&work, users, u64::from(seconds) + 3600)?;
    std::fs::write(work.join("soak.lua"), script())?;
    let service = Service::start(&db_url, 16)?;

    eprintln!("soak: {callers} connections for {seconds}s, RSS every {sample}s");
    let (work2, url) = (work.clone(), service.url());
    let load = std::thread::spawn(move || wrk(&work2, "soak.lua", &url, callers, seconds));
    let started = Instant::now();
    let mut samples = Vec::new();
    while !load.is_finished() {
        std::thread::sleep(Duration::from_secs(sample));
        if let Some(rss) = service.rss_kib() {
            let t = started.elapsed().as_secs();
            println!("{t:>6}s  rss {:>8.1} MiB", rss as f64 / 1024.0);
            samples.push(rss);
        }
    }
    let result = load.join().expect("the load thread")?;
    let peak = service.peak_rss_kib().unwrap_or_default();
    drop(service);

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
    println!("requests            {:>12.0}", result.requests);
    println!("requests/s          {:>12.0}", result.requests_per_second);
    println!("p99                 {:>9.2} ms", result.p99_ms);
    println!("errors              {:>12.0}", result.errors);
    println!("RSS 2nd quarter     {:>8.1} MiB", second / 1024.0);
    println!("RSS last quarter    {:>8.1} MiB", last / 1024.0);
    println!("RSS growth          {:>11.1}%", growth * 100.0);
    println!("peak RSS            {:>8.1} MiB", peak as f64 / 1024.0);
    let _ = std::fs::remove_dir_all(&work);
    anyhow::ensure!(result.errors == 0.0, "{} requests failed", result.errors);
    anyhow::ensure!(
        growth < 0.10,
        "memory grew {:.1}% over the run",
        growth * 100.0
    );
    println!("soak OK: no errors, memory flat");
    Ok(())
}
