//! The accept loop. `axum::serve` keeps every connection for as long as the client likes and
//! accepts until the process runs out of file descriptors; this loop bounds both, with hyper's
//! header-read timeout, an idle timeout of its own and a cap on open connections.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::ServiceExt;

/// How long and how many client connections the service keeps (`config` parses them from
/// `USERSYNC_HEADER_READ_TIMEOUT`, `USERSYNC_KEEP_ALIVE_TIMEOUT`, `USERSYNC_MAX_CONNECTIONS`).
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// A request's head must arrive whole within this long, or the connection is closed.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight and no bytes moving for this long is closed.
    pub keep_alive_timeout: Duration,
    /// Most client connections open at once.
    pub max_connections: u32,
}

/// How often an idle check looks again while a request is being answered.
const IDLE_RECHECK: Duration = Duration::from_millis(250);

/// Raises the soft open-file limit to the hard one, so the connection cap (not the kernel's
/// default of 1,024 descriptors) decides how many clients fit; warns when even the hard limit
/// leaves no room for the cap.
pub fn raise_open_file_limit(config: &ConnectionLimits) {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            // The pool, the listener, logs and the healing connection need a few of their own.
            let needed = u64::from(config.max_connections) + 64;
            if limit < needed {
                tracing::warn!(
                    open_files = limit,
                    "the open-file limit is below USERSYNC_MAX_CONNECTIONS plus 64; lower the \
                     cap or raise the hard limit (ulimit -Hn)"
                );
            }
        }
        Err(error) => tracing::warn!(%error, "cannot raise the open-file limit"),
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops accepting, lets every
/// connection finish its request in flight, and returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    config: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let config = Arc::new(config);
    let slots = Arc::new(Semaphore::new(config.max_connections as usize));
    let (stop, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        // A slot first: at the cap the listener is left alone, and new clients wait in the
        // kernel's backlog instead of costing a descriptor each.
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let (stream, remote) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors or a connection reset before it was accepted: wait a
                    // moment rather than spin on an error that will repeat at once.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let connection = serve_connection(
            stream,
            remote,
            router.clone(),
            config.clone(),
            stopping.clone(),
        );
        connections.spawn(async move {
            connection.await;
            drop(slot);
        });
        // Reap finished connections so the set does not grow with every client ever served.
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    let _ = stop.send(true);
    while connections.join_next().await.is_some() {}
}

/// One HTTP/1.1 connection: served until the client leaves, a timeout closes it, or the
/// server stops (then after its request in flight).
async fn serve_connection(
    stream: TcpStream,
    remote: SocketAddr,
    router: Router,
    config: Arc<ConnectionLimits>,
    mut stopping: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Tracked {
        inner: stream,
        activity: activity.clone(),
    });
    let in_flight = activity.clone();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        // The caller's address keys the rate limit of callers that do not authenticate.
        request.extensions_mut().insert(ConnectInfo(remote));
        let busy = in_flight.begin();
        let response = router.clone().oneshot(request);
        async move {
            let response = response.await;
            drop(busy);
            response
        }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .serve_connection(io, service);
    tokio::pin!(connection);
    let mut closing = false;
    let mut next_check = activity.idle_deadline(config.keep_alive_timeout);
    loop {
        tokio::select! {
            served = connection.as_mut() => {
                if let Err(error) = served {
                    tracing::debug!(%error, "connection closed");
                }
                return;
            }
            _ = stopping.changed(), if !closing => {
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
            () = tokio::time::sleep_until(next_check), if !closing => {
                if activity.is_idle_for(config.keep_alive_timeout) {
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
                // A request in flight moves no bytes: look again a little later, not at once.
                next_check = activity
                    .idle_deadline(config.keep_alive_timeout)
                    .max(Instant::now() + IDLE_RECHECK);
            }
        }
    }
}

/// When a connection last moved a byte, and how many of its requests are being answered.
struct Activity {
    started: Instant,
    /// Milliseconds after `started` of the last read or write.
    last_io_ms: AtomicU64,
    requests: AtomicUsize,
}

impl Activity {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            last_io_ms: AtomicU64::new(0),
            requests: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        self.last_io_ms.store(now, Ordering::Relaxed);
    }

    fn last_io(&self) -> Instant {
        self.started + Duration::from_millis(self.last_io_ms.load(Ordering::Relaxed))
    }

    fn idle_deadline(&self, timeout: Duration) -> Instant {
        self.last_io() + timeout
    }

    /// A request being answered is never idle, however long its statement runs.
    fn is_idle_for(&self, timeout: Duration) -> bool {
        self.requests.load(Ordering::Relaxed) == 0 && self.last_io().elapsed() >= timeout
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.requests.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }
}

/// A request being answered; dropped when its response is ready (or the request abandoned).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.requests.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// The connection's socket, noting every read and write in `activity`.
struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
