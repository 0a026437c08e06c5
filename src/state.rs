//! What every handler can reach.

use std::sync::Arc;

use sqlx::PgPool;

use crate::auth::Verifier;
use crate::config::MetricsAccess;
use crate::http::RateLimiter;
use crate::meter::Meter;
use crate::sync::reconcile::Reconciler;
use crate::sync::target::BoundMapping;

/// Shared, cheaply cloned application state.
#[derive(Clone)]
pub struct AppState {
    pub db: PgPool,
    pub verifier: Arc<Verifier>,
    pub mapping: Arc<BoundMapping>,
    /// The per-caller sync rate limit; `None` when it is off.
    pub rate_limiter: Option<Arc<RateLimiter>>,
    pub meter: Arc<Meter>,
    pub metrics_access: MetricsAccess,
    /// Starts reconciliation runs; they run as background tasks of this process.
    pub reconciler: Reconciler,
}
