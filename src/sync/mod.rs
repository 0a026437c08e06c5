//! The domain: which statement to run for a user, a signal or a run, and what its result
//! means. It runs SQL only through `repo` and the statements `compiler` rendered, and writes
//! none itself; nothing here knows about HTTP.

pub mod chunks;
pub mod coalesce;
pub mod drift;
pub mod engine;
pub mod heal;
pub mod inspect;
pub mod provision;
pub mod reconcile;
pub mod source;
pub mod status;
pub mod user_repair;
