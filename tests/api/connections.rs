//! Connection hygiene against clients that connect and never finish: the header-read timeout,
//! the idle timeout, the connection cap and the open-file limit, on the real binary.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

/// The start of a request whose head never ends (no blank line).
const HALF_SENT: &[u8] = b"GET /healthz HTTP/1.1\r\nhost: usersync\r\nx-slow: ";

/// Connects and sends `HALF_SENT`, then holds the connection.
async fn half_sent(address: &str) -> TcpStream {
    let mut stream = TcpStream::connect(address.trim_start_matches("http://"))
        .await
        .unwrap();
    stream.write_all(HALF_SENT).await.unwrap();
    stream
}

/// Reads until the server closes the connection (end of file or a reset); `None` if it is
/// still open at `deadline`.
async fn closed_by(mut stream: TcpStream, deadline: Instant) -> Option<Instant> {
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return Some(Instant::now()),
            // hyper may answer a timed-out head with a 408 before it closes.
            Ok(Ok(_)) => continue,
            Err(_) => return None,
        }
    }
}

fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// `(soft, hard)` of "Max open files" in `/proc/<pid>/limits`.
fn open_file_limits(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let mut fields = line["Max open files".len()..].split_whitespace();
    (
        fields.next().unwrap().to_owned(),
        fields.next().unwrap().to_owned(),
    )
}

// Started with 128 open files, the limit that once made 150 idle connections stop the service.
#[tokio::test]
async fn two_hundred_half_sent_connections_are_closed_at_the_header_timeout_and_block_nobody() {
    const TIMEOUT: Duration = Duration::from_secs(3);
    let db = TestDb::new().await;
    let id = AuthUser::new("held@example.com").insert(&db.pool).await;
    let serve = ServeProcess::start_with_open_files(
        &db.url(),
        &[
            ("USERSYNC_HEADER_READ_TIMEOUT", "3s"),
            ("USERSYNC_KEEP_ALIVE_TIMEOUT", "1s"),
        ],
        128,
    )
    .await;
    let (soft, hard) = open_file_limits(serve.pid());
    assert_eq!(
        soft, hard,
        "the soft open-file limit is raised to the hard one"
    );
    let files_before = open_files(serve.pid());

    let opened = Instant::now();
    let held = futures::future::join_all((0..200).map(|_| half_sent(&serve.address))).await;

    // While all 200 are held, a probe and a sync are answered at once, on new connections.
    let client = reqwest::Client::new();
    let health = client
        .get(format!("{}/healthz", serve.address))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let (status, body) = spawn_sync_me(&serve.address, id).await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(
        opened.elapsed() < TIMEOUT,
        "answered only after the held connections timed out"
    );
    drop(client);

    // Every held connection is closed by the server: not before the timeout, and not long after.
    let deadline = opened + TIMEOUT + Duration::from_secs(10);
    let closed = futures::future::join_all(held.into_iter().map(|s| closed_by(s, deadline))).await;
    let still_open = closed.iter().filter(|c| c.is_none()).count();
    assert_eq!(
        still_open, 0,
        "{still_open} of 200 still open at {deadline:?}"
    );
    let first = closed.iter().flatten().min().unwrap();
    assert!(
        first.duration_since(opened) >= TIMEOUT - Duration::from_millis(500),
        "closed after {:?}, before the timeout",
        first.duration_since(opened)
    );

    // And their descriptors are given back.
    eventually(
        Duration::from_secs(5),
        "the descriptors to be released",
        || {
            let now = open_files(serve.pid());
            async move { now <= files_before + 2 }
        },
    )
    .await;
    let logs = serve.stop();
    assert!(!logs.contains("Too many open files"), "{logs}");
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_after_the_keep_alive_timeout() {
    let db = TestDb::new().await;
    let serve = ServeProcess::start(
        &db.url(),
        &[
            ("USERSYNC_HEADER_READ_TIMEOUT", "30s"),
            ("USERSYNC_KEEP_ALIVE_TIMEOUT", "1s"),
        ],
    )
    .await;
    let mut stream = TcpStream::connect(serve.address.trim_start_matches("http://"))
        .await
        .unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: usersync\r\n\r\n")
        .await
        .unwrap();
    let answered = Instant::now();
    // The answer, then the close: well before the 30 s header timeout would have closed it.
    let closed = closed_by(stream, answered + Duration::from_secs(10)).await;
    let idle = closed.expect("closed").duration_since(answered);
    assert!(
        idle >= Duration::from_millis(900) && idle < Duration::from_secs(10),
        "closed after {idle:?}"
    );
}

#[tokio::test]
async fn beyond_the_connection_cap_a_client_waits_until_a_held_one_closes() {
    let db = TestDb::new().await;
    let serve = ServeProcess::start(
        &db.url(),
        &[
            ("USERSYNC_MAX_CONNECTIONS", "4"),
            ("USERSYNC_HEADER_READ_TIMEOUT", "2s"),
            ("USERSYNC_KEEP_ALIVE_TIMEOUT", "1s"),
        ],
    )
    .await;
    // The start-up probe's connection is idle: let the keep-alive timeout free its slot.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let opened = Instant::now();
    let held = futures::future::join_all((0..4).map(|_| half_sent(&serve.address))).await;
    let health = reqwest::Client::new()
        .get(format!("{}/healthz", serve.address))
        .send()
        .await
        .unwrap();
    let waited = opened.elapsed();
    assert_eq!(health.status(), 200);
    // Answered, but only once the header timeout had closed a held connection.
    assert!(waited >= Duration::from_millis(1500), "waited {waited:?}");
    drop(held);
}

#[tokio::test]
async fn a_keep_alive_longer_than_the_header_timeout_is_refused_at_start() {
    let db = TestDb::new().await;
    let (code, _, stderr) = usersync_cli(
        &["serve"],
        &[
            ("DATABASE_URL", &db.url()),
            ("USERSYNC_SERVICE_KEYS", SERVICE_KEY),
            ("USERSYNC_LISTEN", "127.0.0.1:0"),
            ("USERSYNC_HEADER_READ_TIMEOUT", "5s"),
            ("USERSYNC_KEEP_ALIVE_TIMEOUT", "10s"),
        ],
    );
    assert_ne!(code, 0);
    assert!(stderr.contains("USERSYNC_KEEP_ALIVE_TIMEOUT"), "{stderr}");
}
