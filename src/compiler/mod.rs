//! The mapping compiler: the TOML mapping, its binding to the live target table, and the SQL
//! rendered from both, once at start-up.
//!
//! It owns every statement usersync runs against `auth.users` and the target (the drift
//! predicates, sync-one, the drift and status reads, a run's repairs and the trigger
//! functions); `repo` executes them and `sync` decides which to run, and neither writes SQL
//! about the mapped tables. It imports only `vocabulary` and the catalog reads it needs, so
//! that what a statement means can be read, and reviewed (`tests/snapshots/sql/`), here alone.

/// Checks a mapping against the live table and renders its SQL.
pub mod bind;
/// The target table's shape as the catalog describes it.
pub mod catalog;
/// The TOML mapping: which column gets which value.
pub mod mapping;
/// The statements, by family.
pub mod render;
