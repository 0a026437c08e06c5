//! One integration-test binary: every test drives the real router over a fresh real database.

mod auth;
mod cli;
mod doctor;
mod drift;
mod edge;
mod gotrue;
mod healing;
mod helpers;
mod hooks;
mod mapping;
mod shapes;
mod sync_one;
mod triggers;
