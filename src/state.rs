//! What every handler can reach.

use std::sync::Arc;

use sqlx::PgPool;

use crate::auth::Verifier;
use crate::sync::reconcile::Reconciler;
use crate::sync::target::BoundMapping;

/// Shared, cheaply cloned application state.
#[derive(Clone)]
pub struct AppState {
    pub db: PgPool,
    pub verifier: Arc<Verifier>,
    pub mapping: Arc<BoundMapping>,
    /// Starts reconciliation runs; they run as background tasks of this process.
    pub reconciler: Reconciler,
}
