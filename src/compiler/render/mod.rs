//! SQL rendered from the mapping, once at start-up.
//!
//! Every identifier comes from a validated `Ident`, every type from the catalog, every literal
//! through `literal()`: nothing a request carries is ever spliced into SQL, only bound. The drift
//! predicates live here once and are shared by sync-one, per-user drift, the status counts, the
//! drift listings and reconciliation runs, so none of them can disagree about what "missing"
//! means.
//!
//! The predicates are built from a few named pieces (`live`, `lonely`, `stray`, `same_person`,
//! `known_user`). Each kind is written over those pieces in the shape the planner handles well
//! where it is used: correlated `exists` for one id or one key range (the planner turns a
//! top-level `not exists` into an anti-join), and one full join for the whole-table counts.

use std::collections::BTreeMap;

mod audit;
mod drift;
/// usersync's index on the target's `lower(email)`.
pub mod email_index;
mod predicates;
mod repairs;
mod sync;
/// The trigger path: the functions and triggers on `auth.users`, and their removal.
pub mod triggers;
mod values;

use audit::*;
use values::*;

use crate::compiler::catalog::TargetShape;
use crate::compiler::mapping::{
    AnonymousPolicy, ColumnMapping, InvalidValue, JsonPath, Mapping, ValueSource,
};
use crate::vocabulary::policy::DeletedPolicy;
use crate::vocabulary::{AuditAction, DriftKind, SyncPath};

/// The statements a bound mapping runs.
#[derive(Debug, Clone)]
pub struct RenderedSql {
    /// Sync one user: `$1` user id, `$2` caller, `$3` path (both for the audit event).
    pub sync_one: String,
    /// Sync many users in one statement: `$1` their ids (distinct), `$2` the caller of each,
    /// `$3` the path. One row per id, as `sync_one` reports it.
    pub sync_batch: String,
    /// Apply the `report` policy to one user who is gone or soft-deleted, and nothing to a live
    /// one: `$1` user id, `$2` caller, `$3` path.
    pub deleted_report: String,
    /// The same under the `delete` policy.
    pub deleted_delete: String,
    /// The drift kinds of one id: `$1` user id.
    pub drift_one: String,
    /// The profile of one key when it is orphaned (no auth user, and neither a lonely user's
    /// namesake nor a deleted user's): `$1` the key. `id` and `row` (its mapped columns), or
    /// no row. Index probes only, like `drift_one`.
    pub orphan_one: String,
    /// The stray profile that holds the email of the auth user `$1` (the other half of a
    /// mismatched pair), lowest key first; no row when none does.
    pub namesake_of: String,
    /// Both sides of one id, as an admin may see them: `$1` user id. `auth` (safe fields only,
    /// and the values the mapping would write, under `mapped`) and `profile` (its key and
    /// mapped columns), each JSON or null.
    pub user_sides: String,
    /// The ids whose auth user or profile holds an email, in any case: `$1` the email. Index
    /// probes only (Supabase Auth's email indexes, and the target's on `lower(email)`).
    pub find_by_email: String,
    /// Totals and drift counts over both tables, in one statement.
    pub status: String,
    /// When the longest-waiting missing user was created (for the metrics' age gauge).
    pub oldest_missing: String,
    /// One page of the drifted rows of a kind: `$1` lowest id (inclusive), `$2` page size.
    pub drift_page: BTreeMap<DriftKind, String>,
    /// The count of one kind alone: cheaper than `status` when a run plans only some kinds.
    pub count: BTreeMap<DriftKind, String>,
    /// `(source_total, target_total)`.
    pub totals: String,
    /// The repairs a run applies to one key range; see `RepairSql`.
    pub repair: RepairSql,
}

/// A run's statements. A run walks each table in chunks of its rows, `[$1, $2)` (`in_chunk`): the
/// source for the kinds that start from an auth user (missing, stale, mismatched), the target
/// for those that start from a profile (orphaned, deleted), so that every row of either table
/// is met exactly once.
///
/// The writes share their parameters: `$1`/`$2` the pages, `$3` the run id, `$4` the caller,
/// `$5` the most rows to repair (null: no bound). Each re-checks its drift as it writes, records
/// its repairs in the same statement, and returns how many rows it changed.
#[derive(Debug, Clone)]
pub struct RepairSql {
    /// The pages of `auth.users` and of the target, as a run starts.
    pub pages: String,
    /// How many source rows a chunk of pages holds: `$1`, `$2`.
    pub source_rows: String,
    /// How many target rows a chunk of pages holds: `$1`, `$2`.
    pub target_rows: String,
    /// The ids of the source rows a chunk holds (a refused row, once its chunk is narrowed to
    /// it): `$1`, `$2`.
    pub source_ids: String,
    /// The keys of the target rows a chunk holds: `$1`, `$2`.
    pub target_ids: String,
    /// Where the source row of id `$1` is (its `ctid` as text): a run of one user walks only
    /// that place.
    pub source_place: String,
    /// Where the target row of key `$1` is.
    pub target_place: String,
    /// Insert the mapped row of every `missing` user, probing the target for a stray row with
    /// each user's email.
    pub create_missing: Creates,
    /// The same, given the stray rows' emails (`$6`, lower-cased): for a run that found few of
    /// them when it started (see `sync::reconcile`).
    pub create_missing_known_strays: Creates,
    /// The lower-cased emails of the stray target rows, at most `$1` of them.
    pub stray_emails: String,
    /// Write the `always` columns of every `stale` row.
    pub update_stale: String,
    /// The `missing` and `stale` users of the range whose value for some column the target
    /// cannot store (`id`, `kind`, `column_name`): the inserts and updates leave them out, and
    /// the run reports each as a failure. `None` when the mapping has no such column.
    pub refused_users: Option<String>,
    /// Delete every `deleted` row.
    pub delete_deleted: String,
    /// Delete every `orphaned` row.
    pub delete_orphaned: String,
    /// The `orphaned` rows of a chunk of the target, with their mapped columns: `$1`, `$2`,
    /// `$3` most rows.
    pub orphans: String,
    /// The mismatched pairs whose source row is in a chunk of the source, with how many
    /// candidates each side has (a re-key needs exactly one of each): `$1`, `$2`.
    pub pairs: String,
    /// The first CTEs of a re-key (`repo::rekey`): `old` (the row's mapped columns before) and
    /// `moved` (the key update, only while the pair is still mismatched). `$1` the source id,
    /// `$2` the target id.
    pub rekey_moved: String,
    /// The re-key's audit CTE: `$3` the run id, `$4` the caller.
    pub rekey_audit: String,
}

/// A run's create statement in its two forms. Both read "has no profile" in the statement's
/// snapshot, with the user, one probe of the target's key per row: leaving it to `on conflict`
/// brought back the profile of a user deleted while the chunk ran (`on conflict` sees the
/// committed delete of the profile, not that of the user).
#[derive(Debug, Clone)]
pub struct Creates {
    /// Without `on conflict`, which would probe the key a second time per row: the snapshot's
    /// probe and the insert's own unique check are all a new row costs, as for the bare
    /// `insert ... on conflict do nothing`. A profile committed after the snapshot fails it
    /// with a unique violation.
    pub unguarded: String,
    /// With `on conflict (key) do nothing`, for a profile made while the statement runs: what a
    /// chunk runs after the unguarded form met a unique violation.
    pub guarded: String,
}

/// The id Supabase Auth gives every user's `instance_id` (`uuid.Nil`), under which it looks
/// users up by `lower(email)` through its own `(instance_id, lower(email))` index.
const GOTRUE_INSTANCE: &str = "'00000000-0000-0000-0000-000000000000'::uuid";

impl RenderedSql {
    /// The deleted-user statement of a policy.
    pub fn deleted(&self, policy: DeletedPolicy) -> &str {
        match policy {
            DeletedPolicy::Report => &self.deleted_report,
            DeletedPolicy::Delete => &self.deleted_delete,
        }
    }
}

/// Who writes and by which path, as SQL expressions: bind parameters when the service runs a
/// statement, variables when a trigger function does. One rendering serves both, so the trigger
/// path and the service can never map a user differently.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// The user id, a `uuid` expression.
    pub user_id: &'a str,
    /// Who asked, a `text` expression (`usersync.events.caller`).
    pub caller: &'a str,
    /// Which path, a `text` expression (`usersync.events.path`).
    pub path: &'a str,
    /// A `boolean` expression: true when this origin itself saw the auth user being deleted
    /// (the trigger, firing for a `DELETE` on `auth.users`). Only that is evidence enough that a
    /// profile belonged to a deleted user when nothing in the audit trail says so; an id from
    /// a request or a webhook payload is not.
    pub witnessed_delete: &'a str,
}

/// The origin of the statements the service runs: `$1` user id, `$2` caller, `$3` path.
const BOUND_ORIGIN: Origin<'static> = Origin {
    user_id: "$1",
    caller: "$2",
    path: "$3",
    witnessed_delete: "false",
};

/// A SQL string literal.
pub fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Renders SQL for a mapping whose columns were checked against `shape`.
pub struct Renderer<'a> {
    mapping: &'a Mapping,
    shape: &'a TargetShape,
    table: String,
    key: String,
}

impl<'a> Renderer<'a> {
    pub fn new(mapping: &'a Mapping, shape: &'a TargetShape) -> Self {
        Self {
            mapping,
            shape,
            table: mapping.target.qualified(),
            key: mapping.target.key.quoted(),
        }
    }

    pub fn render(&self) -> RenderedSql {
        RenderedSql {
            sync_one: self.sync_statement(BOUND_ORIGIN),
            sync_batch: self.sync_batch_statement(),
            deleted_report: self.deleted_statement(BOUND_ORIGIN, DeletedPolicy::Report),
            deleted_delete: self.deleted_statement(BOUND_ORIGIN, DeletedPolicy::Delete),
            drift_one: self.drift_one(),
            orphan_one: self.orphan_one(),
            namesake_of: self.namesake_of(),
            user_sides: self.user_sides(),
            find_by_email: self.find_by_email(),
            status: self.status(),
            oldest_missing: format!(
                "select min(s.created_at) from auth.users s where {}",
                self.missing("s")
            ),
            drift_page: DriftKind::ALL
                .iter()
                .map(|k| (*k, self.drift_page(*k)))
                .collect(),
            count: DriftKind::ALL
                .iter()
                .map(|k| (*k, self.count(*k)))
                .collect(),
            totals: format!(
                "select (select count(*) from auth.users) as source_total,
       (select count(*) from {}) as target_total",
                self.table
            ),
            repair: self.repair(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_double_their_quotes() {
        assert_eq!(literal("it's"), "'it''s'");
    }

    #[test]
    fn metadata_paths_fall_back_in_order_and_skip_empty_strings() {
        let m = Mapping::default_mapping();
        let full_name = m
            .columns
            .iter()
            .find(|c| c.name.as_str() == "full_name")
            .unwrap();
        let expr = value_expr(full_name, "s");
        let order: Vec<usize> = ["full_name", "\"name\"", "user_name", "username"]
            .iter()
            .map(|k| expr.find(k).unwrap())
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{expr}");
        assert!(expr.contains("nullif("));
    }
}
