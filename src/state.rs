//! What handlers share.

use std::sync::Arc;

use sqlx::PgPool;
use tokio::sync::watch;

use crate::auth::webhook::WebhookSecret;
use crate::auth::Verifier;
use crate::compiler::bind::{BoundMapping, FitWatch};
use crate::http::{MetricsAccess, RateLimiter};
use crate::meter::Meter;
use crate::sync::coalesce::SyncQueue;
use crate::sync::reconcile::Reconciler;
use crate::vocabulary::policy::DeletedPolicy;
use crate::worker::retry::RetrySchedule;
use crate::worker::HealingRole;

/// Shared, cheaply cloned application state.
#[derive(Clone)]
pub struct AppState {
    pub db: PgPool,
    pub verifier: Arc<Verifier>,
    pub mapping: Arc<BoundMapping>,
    /// Whether the mapping still fits the live table, for `/readyz`.
    pub fit: Arc<FitWatch>,
    /// The API's sync requests, coalesced under load.
    pub syncs: SyncQueue,
    /// What happens to a deleted user's target row (the webhook applies it).
    pub policy: DeletedPolicy,
    /// Accepted by `POST /v1/hooks/database` in place of a service key, when configured.
    pub webhook_secret: Option<WebhookSecret>,
    /// This replica's part in the healing loop, for `/readyz`.
    pub healing: watch::Receiver<HealingRole>,
    /// The per-caller sync rate limit; `None` when it is off.
    pub rate_limiter: Option<Arc<RateLimiter>>,
    pub meter: Arc<Meter>,
    pub metrics_access: MetricsAccess,
    /// Starts reconciliation runs; they run as background tasks of this process.
    pub reconciler: Reconciler,
    /// When a dead letter retried by hand and failing again is tried next.
    pub retry_schedule: RetrySchedule,
}
