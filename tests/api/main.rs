//! One integration-test binary: every test drives the real router over a fresh real database.

mod auth;
mod cli;
mod drift;
mod edge;
mod helpers;
mod provision;
mod reconcile;
mod rekey;
mod sync_one;
