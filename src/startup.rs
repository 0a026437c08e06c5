//! One start-up path for production, `usersync dev` and the tests: bind first, expose the port,
//! then serve until told to stop.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use sqlx::PgPool;
use tokio::net::TcpListener;

use crate::auth::Verifier;
use crate::config::ServeConfig;
use crate::http::{self, RateLimiter};
use crate::meter::Meter;
use crate::state::AppState;
use crate::sync::mapping::Mapping;
use crate::sync::reconcile::Reconciler;
use crate::sync::target::BoundMapping;

/// A bound, ready-to-serve application.
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    port: u16,
}

impl Application {
    /// Validates the configuration against the database, binds the listener and builds the
    /// router. Fails with a message naming what is wrong.
    pub async fn build(config: &ServeConfig, db: PgPool) -> anyhow::Result<Self> {
        config.auth.check().map_err(anyhow::Error::msg)?;
        config.reconcile.check().map_err(anyhow::Error::msg)?;
        let mapping = Mapping::load(config.mapping.mapping.as_deref())?;
        let bound = Arc::new(BoundMapping::bind(&db, mapping).await?);
        let listener = TcpListener::bind(config.http.listen)
            .await
            .with_context(|| format!("USERSYNC_LISTEN: cannot listen on {}", config.http.listen))?;
        let port = listener.local_addr()?.port();
        let verifier = Verifier::from_config(&config.auth)?;
        verifier.load_keys().await;
        let reconciler = Reconciler::new(
            db.clone(),
            bound.clone(),
            config.reconcile.policies(),
            config.reconcile.walking(),
            config.reconcile.admin_api(),
        );
        let state = AppState {
            db,
            verifier: Arc::new(verifier),
            mapping: bound,
            rate_limiter: RateLimiter::new(
                config.http.rate_limit_per_minute,
                config.http.rate_limit_burst,
            )
            .map(Arc::new),
            meter: Arc::new(Meter::new(config.http.metrics_refresh)),
            metrics_access: config.http.metrics_access,
            reconciler,
        };
        let router = http::app(state, &config.http);
        Ok(Self {
            listener,
            router,
            port,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until `shutdown` resolves, then lets in-flight requests finish.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        tracing::info!(port = self.port, "usersync listening");
        // The connection's address keys the rate limit of callers that do not authenticate.
        let service = self
            .router
            .into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(self.listener, service)
            .with_graceful_shutdown(shutdown)
            .await
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
