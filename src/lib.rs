//! usersync keeps Supabase's `auth.users` and the application's users table in step.
//!
//! Read top-down: the CLI hands off to the start-up path, which wires the HTTP edge to the
//! domain, which runs SQL through the repository layer.

/// Token and secret-key verification; the `Caller` extractor.
pub mod auth;
/// The subcommands: serve, migrate, triggers, status, reconcile, doctor, openapi, token, dev.
pub mod cli;
/// The mapping, its binding to the target table, and the SQL rendered from them.
pub mod compiler;
/// Every setting's flag and variable, parsed into the types of the modules that use them.
pub mod config;
/// The connection pool, its settings and the usersync migrations.
pub mod db;
/// `usersync dev`: a throwaway Postgres with a Supabase-like `auth` schema and demo users.
pub mod dev;
/// `usersync doctor`: the risks a live project carries for sign-up, sync and deletion.
pub mod doctor;
/// The API error type and its problem+json form.
pub mod error;
/// Routes, extractors and the middleware stack.
pub mod http;
/// Metrics: what is recorded, and the Prometheus scrape.
pub mod meter;
/// The OpenAPI document.
pub mod openapi;
/// Executes statements: the compiler's, and usersync's own queries on its schema.
pub mod repo;
/// What a database error means (unavailable, refused by a row's data), and its safe wording.
pub mod sqlstate;
/// Bind, serve, shut down gracefully.
pub mod startup;
/// What handlers share.
pub mod state;
/// The Supabase Auth admin API (the `provision` repair).
pub mod supabase;
/// The domain: sync decisions, drift listings, reconciliation runs, healing.
pub mod sync;
/// Logging set-up.
pub mod telemetry;
/// A throwaway PostgreSQL (`usersync dev`, the tests) that leaves nothing behind.
pub mod throwaway;
/// The words the audit trail, the API and the SQL share: drift kinds, paths, actions,
/// policies, a run's record.
pub mod vocabulary;
/// The healing loop: leader election, dead letters, periodic reconciliation.
pub mod worker;
