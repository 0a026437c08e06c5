//! SQL only: plain async functions over the pool or a transaction the caller owns.

pub mod catalog;
pub mod dead_letters;
pub mod doctor;
pub mod health;
pub mod sql;
pub mod status;
pub mod triggers;
pub mod users;
