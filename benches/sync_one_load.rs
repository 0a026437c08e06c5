//! Sync-one under load, next to the database's own limit for the same statement.
//!
//! In one run, on one database seeded with `BENCH_USERS` synced users:
//! 1. pgbench runs the exact sync-one statement the service renders (prepared, `BENCH_CALLERS`
//!    clients, `BENCH_SECONDS` seconds);
//! 2. wrk drives `POST /v1/users/me/sync` on the real release binary with `BENCH_CALLERS`
//!    connections, each request carrying a valid user token for a random user.
//!
//! Both sides then print their throughput, the ratio, wrk's p99 latency and the error count.
//! Targets: ratio >= 0.6, p99 < 25 ms, zero errors.
//!
//!     cargo bench --bench sync_one_load
//!
//! Needs `pgbench` and `wrk` on PATH, and the server named by `DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`).

mod support;

use support::*;

const DB: &str = "usersync_bench_sync_one";

fn main() -> anyhow::Result<()> {
    let seconds: u32 = env_or("BENCH_SECONDS", 15);
    let users: u32 = env_or("BENCH_USERS", 100_000);
    let callers: u32 = env_or("BENCH_CALLERS", 64);
    let pool: u32 = env_or("BENCH_POOL", 16);
    let (server, db_url) = database_urls(DB);
    let work = workdir()?;
    let _cleanup = Cleanup {
        work: work.clone(),
        server: server.clone(),
        db: DB.to_owned(),
        bench: "sync_one_load",
    };
    let rt = tokio::runtime::Runtime::new()?;
    let statement = rt.block_on(prepare_database(&server, &db_url, DB, users))?;

    // --- pgbench: the same statement, alone --------------------------------------------------
    let script = format!(
        "\\set n random(1, {users})\n{};\n",
        statement
            .replace("$1", ID_SQL)
            .replace("$2", "'bench'")
            .replace("$3", "'call'")
            .replace('\n', " ")
    );
    std::fs::write(work.join("sync_one.sql"), script)?;
    eprintln!("pgbench: {callers} clients, {seconds}s ...");
    let pg = pgbench(&work.join("sync_one.sql"), &db_url, callers, seconds, 0)?;
    let (tps, pg_failed) = (pg.tps, pg.errors);

    // --- the service under wrk -----------------------------------------------------------------
    write_tokens(&work, users, 3600)?;
    std::fs::write(work.join("sync_me.lua"), SYNC_ME_LUA)?;
    let service = Service::start(&db_url, pool)?;
    eprintln!("wrk: {callers} connections, {seconds}s ...");
    let http = wrk(&work, "sync_me.lua", &service.url(), callers, seconds)?;
    drop(service);

    println!();
    println!("sync-one at {callers} concurrent callers, {users} users, {seconds}s each side");
    let row = |label: &str, value: String| println!("{label:<44}{value:>14}");
    row("pgbench, the sync-one statement (tps)", format!("{tps:.0}"));
    row(
        "usersync POST /v1/users/me/sync (req/s)",
        format!("{:.0}", http.requests_per_second),
    );
    row(
        "ratio (target >= 0.60)",
        format!("{:.2}", http.requests_per_second / tps),
    );
    row(
        "usersync p99 latency (target < 25 ms)",
        format!("{:.2} ms", http.p99_ms),
    );
    row("usersync errors (target 0)", format!("{:.0}", http.errors));
    row(
        "pgbench errors (failed or aborted)",
        format!("{pg_failed:.0}"),
    );
    Ok(())
}
