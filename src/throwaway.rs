//! A throwaway PostgreSQL server, for `usersync dev` and for the tests when `DATABASE_URL` is
//! unset, that leaves nothing behind however its process ends.
//!
//! Dropping a handle cannot be the whole answer: the tests keep theirs in a static, which is
//! never dropped, and a process killed by Ctrl-C or SIGKILL runs no code at all. So the server
//! is run by a watchdog, a small `sh` script whose standard input is a pipe from this process
//! that nobody writes to: when this process exits, however it ends, the kernel closes the pipe,
//! the watchdog reads end-of-file, stops the server (immediate shutdown) and removes its
//! directory. The watchdog and the server run in a process group of their own, so the SIGINT a
//! terminal sends to the foreground group on Ctrl-C reaches this process only, never the server
//! under the watchdog's feet. [`Throwaway::stop`] (also run on drop) closes the pipe and waits
//! for the watchdog, so an orderly exit returns only once the server and the directory are gone.
//! The server logs to `server.log` in its directory, never to a pipe: a pipe nobody reads fills
//! up at 64 KiB and then blocks every backend writing the next log line.
//!
//! It needs PostgreSQL's `initdb` and `postgres`, found on `PATH` or, as Debian installs them,
//! in `/usr/lib/postgresql/<version>/bin` (the newest). PostgreSQL refuses to run as root: as
//! root, the watchdog (and so `initdb` and the server) runs as the `postgres` user, which
//! PostgreSQL's packages create; no `sudo` is involved.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, TryRecvError};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Where Debian puts each major version's server binaries: `<this>/<version>/bin`.
const DEBIAN_BINARIES: &str = "/usr/lib/postgresql";
/// initdb and the first start, on a slow shared machine.
const STARTUP: Duration = Duration::from_secs(120);

/// The watchdog. Arguments: the binaries' directory, the directory to make the server's own
/// directory in, the port. It prints `dir <path>` once it has made the directory, and
/// `failed: <why>` if initdb or the server fails; the caller watches `postmaster.pid` for
/// readiness. SIGPIPE is ignored because the caller may be gone by the time it writes: the
/// clean-up must still run. Its stdin is kept as fd 3 for the one subshell that waits on it
/// (`sh` gives a background job /dev/null as stdin otherwise); the others do not inherit it.
const WATCHDOG: &str = r#"
set -u
trap '' PIPE
bin=$1 tmp=$2 port=$3
exec 3<&0 </dev/null
dir=$(mktemp -d "$tmp/usersync-pg-XXXXXX" 2>&1) || { echo "failed: $dir"; exit 1; }
echo "dir $dir"
if ! "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --no-locale -N \
    >"$dir/initdb.log" 2>&1 3<&-; then
  echo "failed: $(grep -m1 -i error "$dir/initdb.log" || tail -n1 "$dir/initdb.log")"
  rm -rf "$dir"
  exit 1
fi
"$bin/postgres" -D "$dir/data" -c listen_addresses=127.0.0.1 -c port="$port" \
  -c unix_socket_directories="$dir" -c fsync=off -c synchronous_commit=off \
  -c full_page_writes=off -c autovacuum=off >"$dir/server.log" 2>&1 3<&- &
pg=$!
(cat <&3 >/dev/null; kill -QUIT "$pg") >/dev/null 2>&1 &
exec 3<&-
wait "$pg"
echo "failed: $(grep -m1 -E 'FATAL|PANIC' "$dir/server.log" || tail -n1 "$dir/server.log")"
rm -rf "$dir"
wait
"#;

/// Why a throwaway server could not start. Each says in one line what to do.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "a throwaway PostgreSQL needs PostgreSQL's server binaries (initdb, postgres) on PATH or \
         in {DEBIAN_BINARIES}/<version>/bin: install them (Debian: apt-get install postgresql)"
    )]
    NoBinaries,
    #[error(
        "a throwaway PostgreSQL started as root runs as the `postgres` user, and there is none: \
         install PostgreSQL's server package, which creates it (Debian: apt-get install \
         postgresql), or run as another user"
    )]
    NoServerUser,
    #[error("the throwaway PostgreSQL did not start: {0}")]
    Failed(String),
}

/// A running throwaway server. Stopped, and its directory removed, by [`Throwaway::stop`], on
/// drop, or by its watchdog once this process has gone.
#[derive(Debug)]
pub struct Throwaway {
    url: String,
    dir: PathBuf,
    /// The write end of the watchdog's stdin: closing it stops the server.
    stdin: Mutex<Option<ChildStdin>>,
    watchdog: Mutex<Child>,
}

impl Throwaway {
    /// Makes a cluster in a new directory under the temporary directory, starts it on a free
    /// port of 127.0.0.1 and waits until it accepts connections (as `postgres`, trust auth).
    pub fn start() -> Result<Self, StartError> {
        let bin = find_binaries(
            std::env::var_os("PATH").as_deref(),
            Path::new(DEBIAN_BINARIES),
        )
        .ok_or(StartError::NoBinaries)?;
        let user = server_user()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| StartError::Failed(format!("no free port on 127.0.0.1: {e}")))?
            .port();
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(WATCHDOG)
            .arg("usersync-throwaway-postgres")
            .arg(&bin)
            .arg(std::env::temp_dir())
            .arg(port.to_string())
            .current_dir("/")
            // The script's own tools; initdb and postgres are named by their full paths.
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0);
        if let Some((uid, gid)) = user {
            cmd.uid(uid).gid(gid);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| StartError::Failed(format!("cannot run /bin/sh: {e}")))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (lines, said) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = Throwaway {
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            dir: PathBuf::new(),
            stdin: Mutex::new(child.stdin.take()),
            watchdog: Mutex::new(child),
        };
        // From here on, an early return drops `server`: the watchdog cleans up.
        let deadline = Instant::now() + STARTUP;
        loop {
            match said.try_recv() {
                Ok(line) => match line.strip_prefix("dir ") {
                    Some(dir) => server.dir = PathBuf::from(dir),
                    None => {
                        let why = line.strip_prefix("failed: ").unwrap_or(&line);
                        return Err(StartError::Failed(why.to_owned()));
                    }
                },
                Err(TryRecvError::Disconnected) => {
                    return Err(StartError::Failed("its watchdog exited".into()))
                }
                Err(TryRecvError::Empty) => {}
            }
            if !server.dir.as_os_str().is_empty() && ready(&server.dir.join("data")) {
                return Ok(server);
            }
            if Instant::now() > deadline {
                return Err(StartError::Failed(format!(
                    "not ready after {}s",
                    STARTUP.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The server's own directory: the cluster in `data/`, its log in `server.log`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stops the server and removes its directory, and returns once both are done. Takes
    /// `&self` so that a server kept in a static can be stopped at exit; a second call does
    /// nothing.
    pub fn stop(&self) {
        drop(
            self.stdin
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        let _ = self
            .watchdog
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .wait();
    }
}

impl Drop for Throwaway {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The server writes its state on the 8th line of `postmaster.pid`; `ready` once it accepts
/// connections (what `pg_ctl start --wait` looks for).
fn ready(data: &Path) -> bool {
    std::fs::read_to_string(data.join("postmaster.pid"))
        .is_ok_and(|pid| pid.lines().nth(7).map(str::trim) == Some("ready"))
}

/// The first directory on `path` holding both `initdb` and `postgres`, else the newest
/// `<debian>/<version>/bin` that does.
fn find_binaries(path: Option<&OsStr>, debian: &Path) -> Option<PathBuf> {
    let has_both = |dir: &Path| {
        ["initdb", "postgres"].iter().all(|name| {
            std::fs::metadata(dir.join(name))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    };
    let on_path = path
        .into_iter()
        .flat_map(std::env::split_paths)
        .find(|dir| has_both(dir));
    let newest = || {
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(debian)
            .ok()?
            .filter_map(|entry| {
                let entry = entry.ok()?;
                let version = entry.file_name().to_str()?.parse().ok()?;
                Some((version, entry.path().join("bin")))
            })
            .filter(|(_, bin)| has_both(bin))
            .collect();
        versions.sort();
        versions.pop().map(|(_, bin)| bin)
    };
    // The watchdog runs in `/`: a relative PATH entry would name another directory there.
    on_path
        .or_else(newest)
        .and_then(|dir| std::path::absolute(dir).ok())
}

/// As root, the uid and gid of `postgres`, to run the server as; otherwise none (it runs as us).
fn server_user() -> Result<Option<(u32, u32)>, StartError> {
    // SAFETY: getuid has no preconditions and cannot fail.
    if unsafe { libc::getuid() } != 0 {
        return Ok(None);
    }
    // SAFETY: every pointer is to a live local that outlives the call, and `buf`'s length is
    // passed with it; `passwd`'s strings point into `buf`, and only its ids are read.
    let mut passwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut found = std::ptr::null_mut();
    let rc = unsafe {
        libc::getpwnam_r(
            c"postgres".as_ptr(),
            &mut passwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    if rc != 0 || found.is_null() {
        return Err(StartError::NoServerUser);
    }
    Ok(Some((passwd.pw_uid, passwd.pw_gid)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn executable(path: &Path) {
        std::fs::write(path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn binaries_are_found_on_path_first_then_in_the_newest_debian_version() {
        let root = tempfile::tempdir().unwrap();
        let on_path = root.path().join("on-path");
        let debian = root.path().join("debian");
        for dir in [&on_path, &debian.join("9/bin"), &debian.join("15/bin")] {
            std::fs::create_dir_all(dir).unwrap();
            executable(&dir.join("initdb"));
            executable(&dir.join("postgres"));
        }
        // Half an installation is none.
        std::fs::create_dir_all(debian.join("16/bin")).unwrap();
        executable(&debian.join("16/bin/initdb"));

        let path = std::env::join_paths([root.path(), &on_path]).unwrap();
        assert_eq!(find_binaries(Some(&path), &debian), Some(on_path));
        assert_eq!(
            find_binaries(Some(root.path().as_os_str()), &debian),
            Some(debian.join("15/bin"))
        );
        assert_eq!(find_binaries(None, &root.path().join("none")), None);
    }

    #[test]
    fn missing_binaries_say_in_one_line_what_to_install() {
        let said = StartError::NoBinaries.to_string();
        assert!(said.contains("apt-get install postgresql"), "{said}");
        assert!(!said.contains('\n'));
        let said = StartError::NoServerUser.to_string();
        assert!(said.contains("apt-get install postgresql"), "{said}");
        assert!(!said.contains('\n'));
    }
}
