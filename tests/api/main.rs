//! One integration-test binary: every test drives the real router over a fresh real database.

mod admin;
mod auth;
mod cli;
mod confusion;
mod drift;
mod edge;
mod faults;
mod helpers;
mod jwks;
mod keys;
mod limits;
mod observability;
mod provision;
mod reconcile;
mod rekey;
mod secrets;
mod sync_one;
