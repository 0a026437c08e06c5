//! Logging: a tracing subscriber, JSON for log collectors or pretty for a terminal (the
//! `LogFormat` that `USERSYNC_LOG_FORMAT` names). It imports nothing of the crate.

use clap::ValueEnum;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line: for production log collectors.
    Json,
    /// Human-readable lines: for a terminal.
    Pretty,
}

/// Installs the global subscriber once; `RUST_LOG` overrides the default `info` level.
/// Logs go to stderr so that commands which print (`openapi`, `token`) stay pipeable.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=info"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    // The list carries the request span (and its request_id) on every line, even
                    // when the line comes from a nested span.
                    .with_current_span(true)
                    .with_span_list(true)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Pretty => registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .try_init(),
    };
    // A second init (tests start several apps in one process) keeps the first subscriber.
    let _ = result;
}
