//! SQL only: plain async functions over the pool or a transaction the caller owns. It executes
//! the statements `compiler` rendered and usersync's own queries on its schema (runs, events,
//! dead letters) and catalog checks; it makes no domain decision and imports nothing of `sync`.

pub mod access;
pub mod dead_letters;
pub mod doctor;
pub mod drift;
pub mod email_index;
pub mod events;
pub mod health;
pub mod rekey;
pub mod repair;
pub mod runs;
pub mod status;
pub mod triggers;
pub mod users;
