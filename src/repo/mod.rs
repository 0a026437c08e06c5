//! SQL only: plain async functions over the pool or a transaction the caller owns.

pub mod access;
pub mod catalog;
pub mod dead_letters;
pub mod doctor;
pub mod drift;
pub mod email_index;
pub mod events;
pub mod health;
pub mod rekey;
pub mod repair;
pub mod runs;
pub mod sql;
pub mod status;
pub mod triggers;
pub mod users;
