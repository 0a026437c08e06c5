//! The throwaway PostgreSQL leaves nothing behind, however the test binary ends; `usersync dev`
//! without what it needs says so in one line.
//!
//! Each case runs this very binary again as a child, with `DATABASE_URL` unset, filtered down to
//! [`probe`], which boots the harness's throwaway server and then passes, fails or hangs until
//! it is signalled. The child runs in a process group of its own, as a shell runs a foreground
//! job, and Ctrl-C is SIGINT to that whole group, as a terminal sends it.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Set in the child: how [`probe`] ends.
const MODE: &str = "USERSYNC_THROWAWAY_PROBE";
/// What the probe prints before it ends, followed by the server's directory.
const SAYS: &str = "throwaway server dir: ";
/// Long enough for initdb on a loaded machine; a bound, not a sleep.
const DEADLINE: Duration = Duration::from_secs(120);

/// Not a test of its own: the child the tests below run. Does nothing unless `MODE` is set.
#[test]
#[ignore = "run by the tests of this module, in a child process"]
fn probe() {
    let Ok(mode) = std::env::var(MODE) else {
        return;
    };
    assert!(std::env::var_os("DATABASE_URL").is_none());
    let server = crate::helpers::throwaway();
    println!("{SAYS}{}", server.dir().display());
    // Ends only once the parent has seen the server running and closed our stdin.
    let _ = std::io::stdin().read_line(&mut String::new());
    match mode.as_str() {
        "pass" => {}
        "fail" => panic!("this probe fails on purpose"),
        _ => loop {
            std::thread::sleep(Duration::from_secs(1));
        },
    }
}

/// Runs the probe in `mode`, lets it go on once its server is up, sends `signal` to its
/// process group then (if any), and returns the server's directory and the child's exit status.
fn run_probe(mode: &str, signal: Option<libc::c_int>) -> (PathBuf, std::process::ExitStatus) {
    let mut probe = Command::new(std::env::current_exe().unwrap());
    probe
        .args(["throwaway::probe", "--exact", "--ignored", "--nocapture"])
        .env_remove("DATABASE_URL")
        .env(MODE, mode)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0);
    // A shell without job control starts its background jobs with SIGINT ignored (`cmd &`,
    // `nohup`), and the probe would inherit that and never see the Ctrl-C this file sends.
    // SAFETY: signal() is async-signal-safe, as pre_exec requires.
    unsafe {
        probe.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            Ok(())
        });
    }
    let mut child = probe.spawn().expect("the test binary runs again");
    let (dirs, said) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(dir) = line.strip_prefix(SAYS) {
                let _ = dirs.send(PathBuf::from(dir));
            }
        }
    });
    let dir = said.recv_timeout(DEADLINE).unwrap_or_else(|e| {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the probe did not say where its server is: {e}")
    });
    assert!(
        dir.join("data/postmaster.pid").exists(),
        "{dir:?} is running"
    );
    drop(child.stdin.take());
    if let Some(signal) = signal {
        let group = -(child.id() as libc::pid_t);
        // SAFETY: kill has no memory-safety preconditions.
        assert_eq!(unsafe { libc::kill(group, signal) }, 0);
    }
    // Bounded: a probe that outlives its signal fails the test instead of hanging the run.
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (dir, status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the probe outlived its signal by {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The processes whose working directory is in `dir`: every process of a PostgreSQL server
/// works in its data directory, and keeps doing so after the directory is deleted.
fn processes_in(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cwd = std::fs::read_link(entry.path().join("cwd")).ok()?;
            cwd.starts_with(dir).then(|| {
                let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
                format!(
                    "{pid} {}",
                    String::from_utf8_lossy(&cmdline).replace('\0', " ")
                )
            })
        })
        .collect()
}

fn nothing_left(dir: &Path) -> Result<(), String> {
    let processes = processes_in(dir);
    match (dir.exists(), processes.is_empty()) {
        (false, true) => Ok(()),
        (exists, _) => Err(format!(
            "{dir:?} {}; processes in it: {processes:?}",
            if exists { "remains" } else { "is gone" }
        )),
    }
}

/// An orderly exit waits for the clean-up: nothing is left the moment the binary has exited.
fn assert_nothing_left_now(dir: &Path) {
    nothing_left(dir).unwrap();
}

/// A killed binary ran no code: its server's watchdog cleans up, soon after.
fn assert_nothing_left_soon(dir: &Path) {
    let deadline = Instant::now() + DEADLINE;
    while let Err(left) = nothing_left(dir) {
        assert!(Instant::now() < deadline, "after {DEADLINE:?}: {left}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_run_that_passes_leaves_no_server_and_no_directory() {
    let (dir, status) = run_probe("pass", None);
    assert!(status.success(), "{status}");
    assert_nothing_left_now(&dir);
}

#[test]
fn a_run_that_fails_leaves_no_server_and_no_directory() {
    let (dir, status) = run_probe("fail", None);
    assert_eq!(status.code(), Some(101), "a failed test run: {status}");
    assert_nothing_left_now(&dir);
}

#[test]
fn ctrl_c_leaves_no_server_and_no_directory() {
    use std::os::unix::process::ExitStatusExt;
    let (dir, status) = run_probe("hang", Some(libc::SIGINT));
    assert_eq!(status.signal(), Some(libc::SIGINT), "{status}");
    assert_nothing_left_soon(&dir);
}

#[test]
fn sigkill_leaves_no_server_and_no_directory() {
    use std::os::unix::process::ExitStatusExt;
    let (dir, status) = run_probe("hang", Some(libc::SIGKILL));
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    assert_nothing_left_soon(&dir);
}

/// `usersync dev` whose initdb fails (a stand-in that says so, first on PATH) stops with one
/// line, and leaves nothing behind either.
#[test]
fn dev_without_a_working_postgresql_says_so_in_one_line() {
    use std::os::unix::fs::PermissionsExt;
    let bin = tempfile::tempdir().unwrap();
    // Readable by the `postgres` user too, which runs initdb when the tests run as root.
    std::fs::set_permissions(bin.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for (name, says) in [
        (
            "initdb",
            "initdb: error: this initdb is a stand-in that fails",
        ),
        ("postgres", "this postgres is a stand-in"),
    ] {
        let path = bin.path().join(name);
        std::fs::write(&path, format!("#!/bin/sh\necho '{says}' >&2\nexit 1\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_usersync"))
        .args(["dev", "--listen", "127.0.0.1:0"])
        .env_clear()
        .env("PATH", bin.path())
        .env("TMPDIR", tmp.path())
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .output()
        .expect("the usersync binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("initdb: error: this initdb is a stand-in that fails"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(left.is_empty(), "left in TMPDIR: {left:?}");
}
