//! One integration-test binary: every test drives the real router over a fresh real database.

mod admin;
mod auth;
mod cli;
mod coalesce;
mod confusion;
mod doctor;
mod drift;
mod edge;
mod faults;
mod gotrue;
mod healing;
mod helpers;
mod hooks;
mod jwks;
mod keys;
mod limits;
mod mapping;
mod observability;
mod provision;
mod reconcile;
mod rekey;
mod scale;
mod secrets;
mod shapes;
mod sync_one;
mod triggers;
