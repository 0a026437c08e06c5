//! The `usersync` binary: parse the command line and hand off.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    usersync::cli::run().await
}
