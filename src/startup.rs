//! One start-up path for production, `usersync dev` and the tests: bind first, expose the port,
//! then serve until told to stop.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::webhook::WebhookSecret;
use crate::auth::Verifier;
use crate::compiler::bind::{BindError, BoundMapping, FitWatch};
use crate::compiler::mapping::Mapping;
use crate::config::ServeConfig;
use crate::http::serve::{self, ConnectionLimits};
use crate::http::{self, RateLimiter};
use crate::meter::Meter;
use crate::repo::email_index;
use crate::state::AppState;
use crate::sync::coalesce::SyncQueue;
use crate::sync::reconcile::Reconciler;
use crate::sync::source::{self, Unreadable};
use crate::worker::{Healer, HealingRole};

/// How long a stopping application waits for the healing loop to step down (and release its
/// lock, so that a standby takes over at once).
const HEALER_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a command could not start from its mapping.
#[derive(Debug, thiserror::Error)]
pub enum Unbound {
    /// The role may not read what the mapping reads: a privilege, not a mapping, is wrong.
    #[error("{0}")]
    Source(#[from] Unreadable),
    #[error(transparent)]
    Bind(#[from] BindError),
}

/// The bound mapping every command starts from (`serve`, each CLI subcommand, `dev`), so that
/// each checks the source, the mapping and the table the same way: first that the role may
/// read `auth.users` (row level security does not stop the binding's probes; readiness and
/// every run report it), then the mapping against the live table.
pub async fn bind(db: &PgPool, mapping: Mapping) -> Result<BoundMapping, Unbound> {
    match source::check_access(db).await.map_err(BindError::from)? {
        Err(Unreadable::RowSecurity { .. }) | Ok(()) => {}
        Err(other) => return Err(other.into()),
    }
    Ok(BoundMapping::bind(db, mapping).await?)
}

/// A bound, ready-to-serve application.
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    port: u16,
    healer: Option<Healer>,
    connections: ConnectionLimits,
    fit: Arc<FitWatch>,
}

impl Application {
    /// Validates the configuration against the database, binds the listener and builds the
    /// router. Fails with a message naming what is wrong.
    pub async fn build(config: &ServeConfig, db: PgPool) -> anyhow::Result<Self> {
        config.auth.check().map_err(anyhow::Error::msg)?;
        config.reconcile.check().map_err(anyhow::Error::msg)?;
        config
            .http
            .connections
            .check()
            .map_err(anyhow::Error::msg)?;
        let mapping = Mapping::load(config.mapping.mapping.as_deref())?;
        let bound = Arc::new(bind(&db, mapping).await?);
        for warning in &bound.warnings {
            tracing::warn!("mapping: {warning}");
        }
        warn_without_email_index(&db, &bound).await;
        let listener = TcpListener::bind(config.http.listen)
            .await
            .with_context(|| format!("USERSYNC_LISTEN: cannot listen on {}", config.http.listen))?;
        let port = listener.local_addr()?.port();
        let connections = config.http.connections.limits();
        serve::raise_open_file_limit(&connections);
        let mapping = bound;
        let verifier = Verifier::new(&config.auth.credentials().map_err(anyhow::Error::msg)?)?;
        verifier.load_keys().await;
        let reconciler = Reconciler::new(
            db.clone(),
            mapping.clone(),
            config.reconcile.policies(),
            config.reconcile.walking(),
            config.reconcile.admin_api(),
        );
        let healing_settings = config.healing.settings(config.reconcile.deleted.deleted);
        let reconcile_interval = healing_settings
            .as_ref()
            .and_then(|settings| settings.reconcile_interval);
        let (healer, healing) = match healing_settings {
            Some(settings) => {
                let (healer, role) =
                    Healer::new(db.clone(), mapping.clone(), settings, reconciler.clone());
                (Some(healer), role)
            }
            None => (None, watch::channel(HealingRole::Off).1),
        };
        let syncs = SyncQueue::start(db.clone(), mapping.clone(), config.coalescing());
        let fit = Arc::new(FitWatch::new(&mapping));
        let state = AppState {
            db,
            verifier: Arc::new(verifier),
            mapping,
            fit: fit.clone(),
            syncs,
            policy: config.reconcile.deleted.deleted,
            webhook_secret: config.hooks.webhook_secret.clone().map(WebhookSecret::new),
            healing,
            rate_limiter: RateLimiter::new(
                config.http.rate_limit_per_minute,
                config.http.rate_limit_burst,
            )
            .map(Arc::new),
            meter: Arc::new(Meter::new(config.http.metrics_refresh, reconcile_interval)),
            metrics_access: config.http.metrics_access,
            reconciler,
            retry_schedule: config.healing.retry_schedule.clone(),
        };
        let router = http::app(state, &config.http.edge_limits());
        Ok(Self {
            listener,
            router,
            port,
            healer,
            connections,
            fit,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// What `/readyz` keeps of the mapping's fit to the table (how many times it was bound).
    pub fn fit(&self) -> Arc<FitWatch> {
        self.fit.clone()
    }

    /// Serves (and heals, when on) until `shutdown` resolves, then lets in-flight requests
    /// finish and the healing loop step down.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let (stop, stopped) = watch::channel(false);
        let healer = self.healer.map(|healer| tokio::spawn(healer.run(stopped)));
        tracing::info!(port = self.port, "usersync listening");
        serve::serve(self.listener, self.router, self.connections, async move {
            shutdown.await;
            let _ = stop.send(true);
        })
        .await;
        if let Some(healer) = healer {
            if tokio::time::timeout(HEALER_STOP_TIMEOUT, healer)
                .await
                .is_err()
            {
                tracing::warn!("healing: did not step down in time");
            }
        }
        Ok(())
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

/// Says at start-up that every first sync will read the whole target, when the target has no
/// index on `lower(email)` (`usersync migrate` builds one; see `repo::email_index`).
async fn warn_without_email_index(db: &PgPool, bound: &BoundMapping) {
    if let (Ok(None), Some(create)) = (
        email_index::find(db, &bound.mapping).await,
        crate::compiler::render::email_index::create_sql(&bound.mapping, true),
    ) {
        tracing::warn!(
            "{} has no index on lower(email): every first sync reads the whole table; run \
             `usersync migrate`, or `{create}`",
            bound.mapping.target.qualified()
        );
    }
}
