//! What every handler can reach.

use std::sync::Arc;

use sqlx::PgPool;

use crate::auth::Verifier;
use crate::config::MetricsAccess;
use crate::meter::Meter;
use crate::sync::target::BoundMapping;

/// Shared, cheaply cloned application state.
#[derive(Clone)]
pub struct AppState {
    pub db: PgPool,
    pub verifier: Arc<Verifier>,
    pub mapping: Arc<BoundMapping>,
    pub meter: Arc<Meter>,
    pub metrics_access: MetricsAccess,
}
