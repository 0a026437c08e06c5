//! One integration-test binary: every test drives the real router over a fresh real database.

mod auth;
mod cli;
mod drift;
mod edge;
mod helpers;
mod reconcile;
mod sync_one;
