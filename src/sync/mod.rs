//! The domain: mapping, drift and the sync decisions. Nothing here knows about HTTP.

pub mod chunks;
pub mod coalesce;
pub mod drift;
pub mod engine;
pub mod heal;
pub mod inspect;
pub mod mapping;
pub mod policy;
pub mod provision;
pub mod reconcile;
pub mod run;
pub mod source;
pub mod status;
pub mod target;
pub mod user_repair;
