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

use crate::repo::catalog::TargetShape;
use crate::sync::mapping::{
    AnonymousPolicy, ColumnMapping, InvalidValue, JsonPath, Mapping, ValueSource,
};
use crate::sync::policy::DeletedPolicy;
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

/// Some event records a repair of `id` (a uuid expression): a single user's row that
/// `user_filter` accepts, found by its `user_id` index, or a run's chunk row that
/// `chunk_filter` accepts, found by the GiST index on its id span and then by the id in its
/// list. Both are index lookups whatever the size of the audit log (see the migration
/// `index_driven_audit`).
fn recorded_by(id: &str, user_filter: &str, chunk_filter: &str) -> String {
    format!(
        "(exists (select 1 from usersync.events e where e.user_id = {id} and {user_filter}) \
         or exists (select 1 from usersync.events e where e.user_ids is not null \
         and usersync.id_span(e.first_id, e.last_id, '[]') @> {id} and {id} = any(e.user_ids) \
         and {chunk_filter}))"
    )
}

/// The audit trail knows `id` (a uuid expression) as an auth user's: usersync wrote a row from
/// that user, or recorded the user's deletion.
fn known_id(id: &str) -> String {
    let actions: Vec<String> = AuditAction::SOURCE_WRITES.iter().map(|a| a.sql()).collect();
    recorded(
        id,
        &format!(
            "(e.action in ({}) or e.kind = {})",
            actions.join(", "),
            DriftKind::Deleted.sql()
        ),
    )
}

/// `recorded_by` with one filter for both kinds of row.
fn recorded(id: &str, filter: &str) -> String {
    recorded_by(id, filter, filter)
}

/// The audit of one chunk's repairs, `rows` (`id`, `before`, `after`): one event row per
/// 1/256 of the id space (the ids' first byte), each with its ids and the images the action
/// has, aggregated in one order, each image an array of the mapped columns' values named once
/// by `names` (see the migrations `run_audit_per_chunk` and `chunk_images_as_arrays`); none
/// when nothing was repaired. A chunk is a range of the table's pages, so its ids are spread
/// over the whole id space: bucketing keeps each row's id span (`first_id .. last_id`) to its
/// 256th, and so "did a run repair this id" reads the few rows whose span holds it.
fn chunk_audit(
    kind: DriftKind,
    action: AuditAction,
    rows: &str,
    images: Images,
    names: &str,
) -> String {
    let image = |has: bool, column: &str| match has {
        true => format!("jsonb_agg({column})"),
        false => "null::jsonb".to_owned(),
    };
    format!(
        "insert into usersync.events
       (run_id, user_ids, first_id, last_id, caller, path, kind, action, image_columns, before,
        after)
select $3, array_agg(id), (b || '000000-0000-0000-0000-000000000000')::uuid,
       (b || 'ffffff-ffff-ffff-ffff-ffffffffffff')::uuid, $4, {}, {}, {}, {names}, {}, {}
  from (select r.*, left(r.id::text, 2) as b from {rows} r) bucketed
 group by b",
        SyncPath::Batch.sql(),
        kind.sql(),
        action.sql(),
        image(images.before, "before"),
        image(images.after, "after"),
    )
}

/// A chunk of a run: the rows of `alias` whose places in its table are in `[$1, $2)`, two tids
/// as text (a TID range scan reads each page once, where an id range of random uuids touches
/// nearly every page). A chunk is whole pages; a chunk split to find the one row the database
/// refuses narrows down to single rows.
fn in_chunk(alias: &str) -> String {
    format!("{alias}.ctid >= $1::text::tid and {alias}.ctid < $2::text::tid")
}

/// Which images of the mapped columns a repair has, for its audit.
#[derive(Debug, Clone, Copy)]
struct Images {
    before: bool,
    after: bool,
}

impl Images {
    const AFTER: Images = Images {
        before: false,
        after: true,
    };
    const BEFORE: Images = Images {
        before: true,
        after: false,
    };
    const BOTH: Images = Images {
        before: true,
        after: true,
    };
}

/// A SQL string literal.
pub fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// A metadata path as a `text[]` literal, each key quoted: `'{"address","city"}'`.
fn json_path_literal(path: &JsonPath) -> String {
    let segments: Vec<String> = path.segments().iter().map(|s| format!("\"{s}\"")).collect();
    literal(&format!("{{{}}}", segments.join(",")))
}

fn json_path_expr(column: &str, alias: &str, path: &JsonPath) -> String {
    format!(
        "nullif({alias}.{column} #>> {}, '')",
        json_path_literal(path)
    )
}

/// The value a column takes from the source row aliased `alias`, before the cast.
fn value_expr(column: &ColumnMapping, alias: &str) -> String {
    let metadata = |json_column: &str, paths: &[JsonPath]| {
        let parts: Vec<String> = paths
            .iter()
            .map(|p| json_path_expr(json_column, alias, p))
            .collect();
        format!("coalesce({})", parts.join(", "))
    };
    let raw = match &column.source {
        ValueSource::Column(c) => format!("{alias}.{}", c.quoted()),
        ValueSource::UserMetadata(paths) => metadata("raw_user_meta_data", paths),
        ValueSource::AppMetadata(paths) => metadata("raw_app_meta_data", paths),
        ValueSource::Constant(v) => literal(v),
        ValueSource::Now => "now()".to_owned(),
    };
    let allowed = match &column.allow {
        Some(allow) => {
            let list: Vec<String> = allow.iter().map(|v| literal(v)).collect();
            format!(
                "case when ({raw})::text in ({}) then {raw} end",
                list.join(", ")
            )
        }
        None => raw,
    };
    match &column.default {
        Some(d) => format!("coalesce({allowed}, {})", literal(d)),
        None => allowed,
    }
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

    /// The source value of a column, cast to the target column's type. A metadata value that
    /// the column's type may refuse is cast only if `usersync.castable` says it can be (else it
    /// is null, or the mapping's `default` under `invalid = "default"`), so that no statement
    /// that reads it can fail because of one user's value.
    pub fn typed_expr(&self, column: &ColumnMapping, alias: &str) -> String {
        let sql_type = &self.shape.columns[column.name.as_str()].sql_type;
        let value = value_expr(column, alias);
        if !self.cast_checked(column) {
            return format!("({value})::{sql_type}");
        }
        let fallback = match (column.invalid, &column.default) {
            (InvalidValue::Default, Some(default)) => {
                format!(" else ({})::{sql_type}", literal(default))
            }
            _ => String::new(),
        };
        format!(
            "(case when usersync.castable({value}, {}) then ({value})::{sql_type}{fallback} end)",
            literal(sql_type)
        )
    }

    /// Whether the column takes text a user writes (metadata) into a type that may refuse it.
    fn cast_checked(&self, column: &ColumnMapping) -> bool {
        matches!(
            column.source,
            ValueSource::UserMetadata(_) | ValueSource::AppMetadata(_)
        ) && !self.shape.columns[column.name.as_str()].text_like
    }

    /// Whether the column's value may be null where the column is NOT NULL (an explicit null is
    /// refused even where the table has a default).
    fn may_be_null_into_not_null(&self, column: &ColumnMapping) -> bool {
        let info = &self.shape.columns[column.name.as_str()];
        let never_null = match &column.source {
            ValueSource::Constant(_) | ValueSource::Now => true,
            // The only NOT NULL columns of auth.users.
            ValueSource::Column(c) => matches!(c.as_str(), "id" | "is_sso_user" | "is_anonymous"),
            ValueSource::UserMetadata(_) | ValueSource::AppMetadata(_) => false,
        };
        info.not_null && !never_null && column.default.is_none()
            || info.not_null && self.cast_checked(column) && column.invalid == InvalidValue::Null
    }

    /// A boolean expression: source row `s` holds a value `column` cannot store, under its
    /// `invalid` setting; `None` when no value can be refused.
    fn refused(&self, column: &ColumnMapping, s: &str) -> Option<String> {
        let mut checks = Vec::new();
        if self.cast_checked(column) && column.invalid == InvalidValue::Fail {
            let sql_type = &self.shape.columns[column.name.as_str()].sql_type;
            checks.push(format!(
                "not usersync.castable({}, {})",
                value_expr(column, s),
                literal(sql_type)
            ));
        }
        if self.may_be_null_into_not_null(column) {
            checks.push(format!("{} is null", self.typed_expr(column, s)));
        }
        (!checks.is_empty()).then(|| format!("({})", checks.join(" or ")))
    }

    /// The name of the first column whose value source row `s` cannot store, or null: over
    /// every mapped column for an insert, over the `always` ones for an update of an existing
    /// row (the others are not written then).
    pub fn refused_column(&self, s: &str, existing: bool) -> String {
        let arms: Vec<String> = self
            .mapping
            .columns
            .iter()
            .filter(|c| !existing || c.is_compared())
            .filter_map(|c| {
                self.refused(c, s)
                    .map(|check| format!("when {check} then {}", literal(c.name.as_str())))
            })
            .collect();
        if arms.is_empty() {
            return "null::text".into();
        }
        format!("(case {} end)", arms.join(" "))
    }

    /// Warnings about the mapping that do not stop it: metadata, which anyone writes about
    /// themselves, feeding a column that may refuse it.
    pub fn warnings(&self) -> Vec<String> {
        self.mapping
            .columns
            .iter()
            .filter(|c| self.cast_checked(c))
            .map(|c| {
                format!(
                    "column `{}` takes metadata into {}: a user's value that does not cast is \
                     handled by `invalid = \"{}\"`",
                    c.name,
                    self.shape.columns[c.name.as_str()].sql_type,
                    c.invalid.as_str()
                )
            })
            .collect()
    }

    /// For a column copied from an `auth.users` column, an `insert` that Postgres can only
    /// parse if the source type is assignable to the target column. The cast in `typed_expr`
    /// is explicit and so accepts text into an integer column, which would fail on the first
    /// real row; this is prepared (never run) to refuse such a mapping up front. Metadata values
    /// are text by nature and rely on the explicit cast, so they are not probed this way.
    pub fn assignment_probe(&self, column: &ColumnMapping) -> Option<String> {
        matches!(column.source, ValueSource::Column(_)).then(|| {
            format!(
                "insert into {} ({}) select {} from auth.users s limit 0",
                self.table,
                column.name.quoted(),
                value_expr(column, "s")
            )
        })
    }

    // --- the pieces every kind is built from ------------------------------------------------

    /// A source row usersync keeps a target row for.
    fn live(&self, s: &str) -> String {
        match self.mapping.anonymous {
            AnonymousPolicy::Sync => format!("{s}.deleted_at is null"),
            AnonymousPolicy::Skip => format!("{s}.deleted_at is null and not {s}.is_anonymous"),
        }
    }

    fn no_target_row(&self, s: &str) -> String {
        format!(
            "not exists (select 1 from {} x where x.{} = {s}.id)",
            self.table, self.key
        )
    }

    /// `no_target_row` for a chunk of source rows: one probe of the target's key per row. The
    /// `offset 0` keeps the planner from making it an anti-join, which would hash the whole
    /// target once per chunk.
    fn no_target_row_per_row(&self, s: &str) -> String {
        format!(
            "not exists (select 1 from {} x where x.{} = {s}.id offset 0)",
            self.table, self.key
        )
    }

    fn not_in_source(&self, t: &str) -> String {
        format!(
            "not exists (select 1 from auth.users a where a.id = {t}.{})",
            self.key
        )
    }

    /// The source half a mismatch can have: live, not SSO (SSO users may share an email), with
    /// an email, and no target row of its id.
    fn lonely(&self, s: &str) -> String {
        if self.mapping.email_column().is_none() {
            return "false".into();
        }
        format!(
            "({} and not {s}.is_sso_user and {s}.email is not null and {})",
            self.live(s),
            self.no_target_row(s)
        )
    }

    /// The target half a mismatch can have: an email, and an id no source row has.
    fn stray(&self, t: &str) -> String {
        match self.mapping.email_column() {
            None => "false".into(),
            Some(email) => format!(
                "({t}.{} is not null and {})",
                email.quoted(),
                self.not_in_source(t)
            ),
        }
    }

    /// Source `s` and target `t` hold the same email, case-insensitively.
    fn same_person(&self, s: &str, t: &str) -> String {
        match self.mapping.email_column() {
            None => "false".into(),
            Some(email) => format!("lower({t}.{}) = lower({s}.email)", email.quoted()),
        }
    }

    /// The audit trail knows target row `t`'s id as an auth user's: usersync wrote the row from
    /// one (see `AuditAction::SOURCE_WRITES`), or recorded that user's deletion. If no auth
    /// user has the id now, that user was deleted.
    fn known_user(&self, t: &str) -> String {
        known_id(&format!("{t}.{}", self.key))
    }

    /// A stray target row some lonely source row claims by email. For the whole-table
    /// statements, where the planner hashes `auth.users` once.
    fn claimed(&self, t: &str) -> String {
        format!(
            "exists (select 1 from auth.users s2 where {} and {})",
            self.lonely("s2"),
            self.same_person("s2", t)
        )
    }

    /// `claimed` for one target row, through indexes only. usersync cannot index `auth.users`
    /// (it belongs to Supabase Auth), so it probes Supabase Auth's own: the unique index on
    /// `email` (Supabase Auth stores every email lower-cased) and, for an email stored in
    /// another case, the `(instance_id, lower(email))` index Supabase Auth looks users up by,
    /// under its nil instance. Only a source row written by hand, with an email in capitals
    /// and another `instance_id`, is matched by the whole-table statements alone.
    fn claimed_by_index(&self, t: &str) -> String {
        let Some(email) = self.mapping.email_column() else {
            return "false".into();
        };
        format!(
            "exists (select 1 from auth.users s2 where {} and {})",
            self.lonely("s2"),
            self.same_by_index("s2", &format!("{t}.{}", email.quoted()))
        )
    }

    /// Source row `s` holds `email` (a target's email, a text expression), as Supabase Auth's
    /// own indexes can find it: stored lower-cased (the unique index on `email`), or in another
    /// case under Supabase Auth's nil instance (its `(instance_id, lower(email))` index).
    fn same_by_index(&self, s: &str, email: &str) -> String {
        format!(
            "({s}.email = lower({email}) \
             or ({s}.instance_id = {GOTRUE_INSTANCE} and lower({s}.email) = lower({email})))"
        )
    }

    // --- the kinds, correlated ------------------------------------------------------------------

    /// A lonely source row whose email a stray target row holds: the same person under two ids.
    pub fn mismatched_source(&self, s: &str) -> String {
        format!(
            "({} and exists (select 1 from {} m where {} and {}))",
            self.lonely(s),
            self.table,
            self.stray("m"),
            self.same_person(s, "m")
        )
    }

    /// Live, no target row of its id, and not mismatched. Given the first two, "not mismatched"
    /// is "no stray row holds its email unless it is SSO", written as one top-level
    /// `not exists` so that the planner makes it an anti-join.
    pub fn missing(&self, s: &str) -> String {
        format!(
            "({} and {} and {})",
            self.live(s),
            self.no_target_row(s),
            self.no_stray_namesake(s)
        )
    }

    /// No stray target row holds the email of source row `s` (unless `s` is SSO): given live
    /// and no target row, "not mismatched". One top-level `not exists`, which the planner
    /// makes an anti-join: the right shape for whole-table statements.
    fn no_stray_namesake(&self, s: &str) -> String {
        format!(
            "not exists (select 1 from {} m where {} and {} and not {s}.is_sso_user)",
            self.table,
            self.stray("m"),
            self.same_person(s, "m")
        )
    }

    /// `no_stray_namesake` for a chunk of source rows. As an anti-join (or a hashed subplan)
    /// the planner finds every stray row of the whole target once per chunk, so a run would
    /// cost chunks x table size. Inside a `case`, and correlated beyond the email equality
    /// (`m.key <> s.id` always holds for a stray row, which no source row has), it stays a
    /// per-row probe of the `lower(email)` index, when the target has one.
    fn no_stray_namesake_per_row(&self, s: &str) -> String {
        match self.mapping.email_column() {
            Some(email) if self.shape.lower_indexed.iter().any(|c| c == email.as_str()) => {
                format!(
                    "case when {s}.is_sso_user or {s}.email is null then true \
                     else not exists (select 1 from {} m where {} and m.{} <> {s}.id and {}) end",
                    self.table,
                    self.same_person(s, "m"),
                    self.key,
                    self.stray("m")
                )
            }
            _ => self.no_stray_namesake(s),
        }
    }

    /// Source `s` and target `t` share the id and an `always` column differs.
    pub fn stale(&self, s: &str, t: &str) -> String {
        let (targets, sources): (Vec<String>, Vec<String>) = self
            .mapping
            .always_columns()
            .map(|c| (format!("{t}.{}", c.name.quoted()), self.typed_expr(c, s)))
            .unzip();
        if targets.is_empty() {
            return "false".into();
        }
        format!(
            "({} and ({}) is distinct from ({}))",
            self.live(s),
            targets.join(", "),
            sources.join(", ")
        )
    }

    /// No source row has its id, it is not mismatched, and the audit trail never knew its id as
    /// an auth user's (if it did, the user was deleted: see `deleted`).
    pub fn orphaned(&self, t: &str) -> String {
        self.orphaned_with(t, &self.claimed(t))
    }

    fn orphaned_with(&self, t: &str, claimed: &str) -> String {
        format!(
            "({} and not {claimed} and not {})",
            self.not_in_source(t),
            self.known_user(t)
        )
    }

    /// The auth user is soft-deleted, or gone and known to the audit trail (a hard delete).
    pub fn deleted(&self, t: &str) -> String {
        self.deleted_with(t, &self.claimed(t))
    }

    fn deleted_with(&self, t: &str, claimed: &str) -> String {
        format!(
            "(exists (select 1 from auth.users sd where sd.id = {t}.{key} \
             and sd.deleted_at is not null) \
             or ({} and not {claimed} and {}))",
            self.not_in_source(t),
            self.known_user(t),
            key = self.key,
        )
    }

    /// `jsonb_build_object` of the mapped columns of `t`: what audit events record (never
    /// the whole row, which may hold app data that is none of the audit's business).
    pub fn mapped_json(&self, t: &str) -> String {
        let pairs: Vec<String> = self
            .mapping
            .columns
            .iter()
            .map(|c| format!("{}, {t}.{}", literal(c.name.as_str()), c.name.quoted()))
            .collect();
        format!("jsonb_build_object({})", pairs.join(", "))
    }

    /// The mapped columns of target row `t` as a JSON array of their values, in mapping order: a
    /// run's image of one row (see `chunk_audit`; `mapped_names` names them).
    fn mapped_array(&self, t: &str) -> String {
        let values: Vec<String> = self
            .mapping
            .columns
            .iter()
            .map(|c| format!("{t}.{}", c.name.quoted()))
            .collect();
        format!("jsonb_build_array({})", values.join(", "))
    }

    /// The names of the mapped columns, in mapping order, as a `text[]`.
    fn mapped_names(&self) -> String {
        let names: Vec<String> = self
            .mapping
            .columns
            .iter()
            .map(|c| literal(c.name.as_str()))
            .collect();
        format!("array[{}]::text[]", names.join(", "))
    }

    /// The email of target row `t` as text, or null when the mapping has no email column.
    fn target_email(&self, t: &str) -> String {
        match self.mapping.email_column() {
            Some(email) => format!("{t}.{}::text", email.quoted()),
            None => "null::text".into(),
        }
    }

    /// The target columns an insert writes, and their values from source row `s`.
    fn insert_columns(&self, s: &str) -> (String, String) {
        let names: Vec<String> = self
            .mapping
            .columns
            .iter()
            .map(|c| c.name.quoted())
            .collect();
        let values: Vec<String> = self
            .mapping
            .columns
            .iter()
            .map(|c| format!("{} as {}", self.typed_expr(c, s), c.name.quoted()))
            .collect();
        (names.join(", "), values.join(",\n           "))
    }

    /// The columns a repair of stale data rewrites: the compared ones and the `now` stamps.
    fn refreshed_columns(&self) -> impl Iterator<Item = &ColumnMapping> {
        self.mapping
            .columns
            .iter()
            .filter(|c| c.is_compared() || c.source == ValueSource::Now)
    }

    /// The `src` CTE: the source rows selected by `filter` (over `auth.users s`), with what
    /// the upsert needs to decide, and every mapped value cast to its target column's type.
    fn src_cte(&self, filter: &str) -> String {
        let (table, key) = (&self.table, &self.key);
        let src_values: Vec<String> = self
            .mapping
            .columns
            .iter()
            .map(|c| format!("{} as {}", self.typed_expr(c, "s"), c.name.quoted()))
            .collect();
        format!(
            "src as (
    select s.id, s.deleted_at, s.is_anonymous,
           exists (select 1 from {table} t where t.{key} = s.id) as has_row,
           {mismatch} as mismatched,
           {refused_insert} as refused_insert,
           {refused_update} as refused_update,
           {src_values}
      from auth.users s
     where {filter}
)",
            mismatch = self.mismatched_source("s"),
            refused_insert = self.refused_column("s", false),
            refused_update = self.refused_column("s", true),
            src_values = src_values.join(",\n           "),
        )
    }

    /// The `ins` and `audit` CTEs over `src`: insert the rows that may be written, update only
    /// the `always` columns and only when one really differs, and record one event per write.
    /// `ins` returns `id`, `row` (the whole target row), `created` and `after`.
    ///
    /// A user with a profile in the snapshot is updated, never upserted: an update skips a
    /// profile deleted since, where `on conflict` would insert it again, and so bring back a
    /// user whose deletion (and the trigger's removal of the profile) committed meanwhile. The
    /// insert keeps `on conflict` for a profile made meanwhile.
    fn upsert_ctes(&self, caller: &str, path: &str) -> String {
        let m = self.mapping;
        let (table, key) = (&self.table, &self.key);
        let names: Vec<String> = m.columns.iter().map(|c| c.name.quoted()).collect();
        let compared: Vec<&ColumnMapping> = m.always_columns().collect();
        let differs = |new: &str| {
            let (old, new): (Vec<String>, Vec<String>) = compared
                .iter()
                .map(|c| {
                    let n = c.name.quoted();
                    (format!("t.{n}"), format!("{new}.{n}"))
                })
                .unzip();
            format!("({}) is distinct from ({})", old.join(", "), new.join(", "))
        };
        let sets = |new: &str| {
            let sets: Vec<String> = self
                .refreshed_columns()
                .map(|c| {
                    let n = c.name.quoted();
                    format!("{n} = {new}.{n}")
                })
                .collect();
            sets.join(", ")
        };
        let on_conflict = if compared.is_empty() {
            "do nothing".to_owned()
        } else {
            format!(
                "do update set {} where {}",
                sets("excluded"),
                differs("excluded")
            )
        };
        let skip_anonymous = match m.anonymous {
            AnonymousPolicy::Sync => "",
            AnonymousPolicy::Skip => " and not src.is_anonymous",
        };
        let returning = |created: &str| {
            format!(
                "returning t.{key} as id, to_jsonb(t) as row, {created} as created, {} as after",
                self.mapped_json("t")
            )
        };
        let updated = if compared.is_empty() {
            String::new()
        } else {
            format!(
                "updated as (
    update {table} as t set {sets}
      from src
     where t.{key} = src.id and src.has_row and src.deleted_at is null{skip_anonymous}
       and src.refused_update is null and {differs}
    {returning}
),
",
                sets = sets("src"),
                differs = differs("src"),
                returning = returning("false"),
            )
        };
        let ins = if compared.is_empty() {
            "select * from inserted"
        } else {
            "select * from inserted union all select * from updated"
        };
        format!(
            "inserted as (
    insert into {table} as t ({key}, {names})
    select id, {names} from src
     where deleted_at is null{skip_anonymous} and not has_row and not mismatched
       and refused_insert is null
    on conflict ({key}) {on_conflict}
    {returning}
),
{updated}ins as ({ins}),
audit as (
    insert into usersync.events (user_id, caller, path, kind, action, before, after)
    select ins.id, {caller}, {path},
           case when created then {missing_kind} else {stale_kind} end,
           case when created then {created_action} else {updated_action} end,
           (select {before} from {table} b where b.{key} = ins.id),
           after
      from ins
)",
            names = names.join(", "),
            returning = returning("t.xmax = 0"),
            before = self.mapped_json("b"),
            missing_kind = DriftKind::Missing.sql(),
            stale_kind = DriftKind::Stale.sql(),
            created_action = AuditAction::Created.sql(),
            updated_action = AuditAction::Updated.sql(),
        )
    }

    /// Create one new user's profile, unless anything stands in the way: the user is not live
    /// (or is skipped), already has a profile (`on conflict do nothing`), is mismatched, or has
    /// a value the target cannot store. The statement of a run's `create_missing` for one id,
    /// from the same pieces. Returns the mapped columns written (`after`), or no row. A
    /// sign-up's trigger tries this first: most firings are a new user, and this one
    /// statement costs half of the whole sync.
    pub fn create_one(&self, origin: Origin<'_>) -> String {
        let (table, key, id) = (&self.table, &self.key, origin.user_id);
        let (columns, values) = self.insert_columns("s");
        format!(
            "insert into {table} as t ({key}, {columns})
select s.id, {values}
  from auth.users s
 where s.id = {id} and {live} and {no_namesake} and {refused} is null
on conflict ({key}) do nothing
returning {after}",
            live = self.live("s"),
            no_namesake = self.no_stray_namesake_per_row("s"),
            refused = self.refused_column("s", false),
            after = self.mapped_json("t"),
        )
    }

    /// Sync one user: read the `auth.users` row and upsert the target in one statement, which
    /// reports what it found and did.
    pub fn sync_statement(&self, origin: Origin<'_>) -> String {
        let id = origin.user_id;
        self.sync_of(
            &format!(
                "select ({id})::uuid as id, ({})::text as caller",
                origin.caller
            ),
            &format!("s.id = {id}"),
            origin.path,
        )
    }

    /// The same for many users at once, one result row each: `$1` their ids (distinct), `$2`
    /// the caller of each, `$3` the path.
    fn sync_batch_statement(&self) -> String {
        self.sync_of(
            "select r.id, r.caller from unnest($1::uuid[], $2::text[]) as r(id, caller)",
            "s.id = any($1::uuid[])",
            "$3",
        )
    }

    /// A sync over `requests` (a query of `id` and `caller`, distinct ids) whose source rows
    /// `filter` selects: one statement for one user or many, so that a batch can never sync a
    /// user differently from a single call. The existing row is read from the statement's
    /// snapshot, i.e. before the upsert.
    fn sync_of(&self, requests: &str, filter: &str, path: &str) -> String {
        let (table, key) = (&self.table, &self.key);
        format!(
            "with req as ({requests}),
{src},
{upsert}
select req.id,
       src.id is not null as found,
       coalesce(src.deleted_at is not null, false) as deleted,
       coalesce(src.is_anonymous, false) and {skip} as skipped,
       coalesce(not src.has_row and src.mismatched, false) as mismatched,
       case when src.has_row then src.refused_update else src.refused_insert end
           as refused_column,
       ins.created,
       coalesce(ins.row, (select to_jsonb(c) from {table} c where c.{key} = req.id)) as row
  from req
  left join src on src.id = req.id
  left join ins on ins.id = req.id",
            src = self.src_cte(filter),
            upsert = self.upsert_ctes("(select r.caller from req r where r.id = ins.id)", path),
            skip = self.mapping.anonymous == AnonymousPolicy::Skip,
        )
    }

    /// Apply the deleted policy to one user, exactly when the `deleted` kind says the user is
    /// deleted: the auth row is soft-deleted, or it is gone and either `origin` saw it go (the
    /// trigger on a `DELETE`) or the audit trail knew the id as an auth user's, and no lonely
    /// auth user claims the profile by email (that profile is mismatched, not deleted). A
    /// live user, a mismatched, orphaned or never-synced profile, and an id nobody knows are
    /// left alone, whatever a signal says, and record nothing.
    ///
    /// `delete` removes the profile; both policies record one `deleted` event (action `deleted`
    /// or `reported`), so that a later run knows the deletion was deliberate and never brings
    /// the user back. A deletion is reported once: a soft delete is known by its `deleted_at`
    /// (kept in the event's `source_deleted_at`; Supabase Auth takes it from its own clock,
    /// after its transaction began, and may fire the trigger twice in that transaction), a hard
    /// delete by any deletion recorded before.
    pub fn deleted_statement(&self, origin: Origin<'_>, policy: DeletedPolicy) -> String {
        let (table, key, id) = (&self.table, &self.key, origin.user_id);
        let removed = match policy {
            DeletedPolicy::Delete => format!(
                "delete from {table} t using gone where t.{key} = gone.id
    returning t.{key} as id, {before} as before",
                before = self.mapped_json("t"),
            ),
            DeletedPolicy::Report => format!(
                "select b.{key} as id, {before} as before from {table} b join gone on b.{key} = gone.id",
                before = self.mapped_json("b"),
            ),
        };
        // Removing a row is news worth an event every time; a report is made once per deletion.
        let (action, news) = match policy {
            DeletedPolicy::Delete => (
                format!(
                    "case when exists (select 1 from removed) then {} else {} end",
                    AuditAction::Deleted.sql(),
                    AuditAction::Reported.sql()
                ),
                "exists (select 1 from removed)",
            ),
            DeletedPolicy::Report => (AuditAction::Reported.sql(), "false"),
        };
        let deleted = DriftKind::Deleted.sql();
        let gone_id = "gone.id";
        let known = known_id(&format!("({id})::uuid"));
        format!(
            "with gone as (
    select ({id})::uuid as id, sd.deleted_at
      from (select) one
      left join auth.users sd on sd.id = {id}
     where case when sd.id is not null then sd.deleted_at is not null
                else ({witnessed} or {known})
                     and not exists (select 1 from {table} c where c.{key} = {id} and {claimed})
           end
),
removed as (
    {removed}
),
audit as (
    insert into usersync.events (user_id, caller, path, kind, action, before, source_deleted_at)
    select gone.id, {caller}, {path}, {deleted}, {action}, (select before from removed),
           gone.deleted_at
      from gone
     where {news}
        or not {reported}
    returning action
)
select exists (select 1 from gone) as gone,
       exists (select 1 from removed) and {deletes} as removed,
       (select action from audit) as action",
            witnessed = origin.witnessed_delete,
            claimed = self.claimed_by_index("c"),
            caller = origin.caller,
            path = origin.path,
            deletes = policy == DeletedPolicy::Delete,
            reported = recorded_by(
                gone_id,
                &format!(
                    "e.kind = {deleted} and (gone.deleted_at is null \
                     or e.source_deleted_at = gone.deleted_at)"
                ),
                &format!("e.kind = {deleted} and e.at >= coalesce(gone.deleted_at, '-infinity')"),
            ),
        )
    }

    /// A boolean expression over two versions `o` and `n` of an `auth.users` row: true when the
    /// change may matter to the target (a value an `always` column reads, liveness, or anonymity
    /// under `skip`). Every sign-in bumps `updated_at` and `last_sign_in_at`; unless the mapping
    /// reads those, a sign-in is not a change.
    ///
    /// It compares the raw values the mapping reads, never their casts, so that it cannot fail:
    /// it is the update trigger's `WHEN` clause, evaluated inside the writer's own statement,
    /// where an error would fail a sign-in.
    pub fn changed_predicate(&self, o: &str, n: &str) -> String {
        let differs =
            |value: &dyn Fn(&str) -> String| format!("{} is distinct from {}", value(o), value(n));
        let mut checks = Vec::new();
        for column in self.mapping.always_columns() {
            match &column.source {
                ValueSource::Column(c) => {
                    checks.push(differs(&|r: &str| format!("{r}.{}", c.quoted())))
                }
                ValueSource::UserMetadata(paths) | ValueSource::AppMetadata(paths) => {
                    let json = match &column.source {
                        ValueSource::UserMetadata(_) => "raw_user_meta_data",
                        _ => "raw_app_meta_data",
                    };
                    for path in paths {
                        let path = json_path_literal(path);
                        checks.push(differs(&|r: &str| format!("({r}.{json} #>> {path})")));
                    }
                }
                ValueSource::Constant(_) | ValueSource::Now => {}
            }
        }
        checks.push(differs(&|r: &str| format!("{r}.deleted_at")));
        if self.mapping.anonymous == AnonymousPolicy::Skip {
            checks.push(differs(&|r: &str| format!("{r}.is_anonymous")));
        }
        let mut seen = std::collections::HashSet::new();
        checks.retain(|c| seen.insert(c.clone()));
        checks.join("\n        or ")
    }

    /// The kinds of one id, each an index lookup (see `claimed_by_index`).
    fn drift_one(&self) -> String {
        let (table, key) = (&self.table, &self.key);
        let claimed = self.claimed_by_index("t");
        let mismatched_t = format!("({} and {claimed})", self.stray("t"));
        format!(
            "select exists (select 1 from auth.users s where s.id = $1) as in_source,
       exists (select 1 from {table} t where t.{key} = $1) as in_target,
       exists (select 1 from auth.users s where s.id = $1 and {missing}) as missing,
       exists (select 1 from auth.users s join {table} t on t.{key} = s.id
                where s.id = $1 and {stale}) as stale,
       exists (select 1 from auth.users s where s.id = $1 and {mismatched_s})
       or exists (select 1 from {table} t where t.{key} = $1 and {mismatched_t}) as mismatched,
       exists (select 1 from {table} t where t.{key} = $1 and {orphaned}) as orphaned,
       exists (select 1 from {table} t where t.{key} = $1 and {deleted}) as deleted",
            missing = self.missing("s"),
            stale = self.stale("s", "t"),
            mismatched_s = self.mismatched_source("s"),
            orphaned = self.orphaned_with("t", &claimed),
            deleted = self.deleted_with("t", &claimed),
        )
    }

    /// `namesake_of`: one probe of the target's email index.
    fn namesake_of(&self) -> String {
        let (table, key) = (&self.table, &self.key);
        format!(
            "select m.{key} from auth.users s join {table} m on {same}
 where s.id = $1 and m.{key} <> s.id and {stray}
 order by m.{key} limit 1",
            same = self.same_person("s", "m"),
            stray = self.stray("m"),
        )
    }

    /// `orphaned` for one key, with `drift_one`'s index-driven claim.
    fn orphan_one(&self) -> String {
        let (table, key) = (&self.table, &self.key);
        format!(
            "select t.{key} as id, {row} as row from {table} t where t.{key} = $1 and {orphaned}",
            row = self.mapped_json("t"),
            orphaned = self.orphaned_with("t", &self.claimed_by_index("t")),
        )
    }

    /// Both sides of one id (see `RenderedSql::user_sides`). The auth side names what an admin
    /// needs to tell why a profile is wrong, and nothing that authenticates: no password hash,
    /// no token, no metadata but what the mapping reads (through `mapped`).
    fn user_sides(&self) -> String {
        let (table, key) = (&self.table, &self.key);
        let mapped: Vec<String> = self
            .mapping
            .columns
            .iter()
            .filter(|c| c.is_compared())
            .map(|c| format!("{}, {}", literal(c.name.as_str()), self.typed_expr(c, "s")))
            .collect();
        format!(
            "select (select jsonb_build_object(
                   'email', s.email, 'phone', s.phone, 'created_at', s.created_at,
                   'last_sign_in_at', s.last_sign_in_at, 'deleted_at', s.deleted_at,
                   'is_anonymous', s.is_anonymous, 'is_sso_user', s.is_sso_user,
                   'providers', coalesce((
                       select jsonb_agg(p) from jsonb_array_elements_text(
                           case when jsonb_typeof(s.raw_app_meta_data -> 'providers') = 'array'
                                then s.raw_app_meta_data -> 'providers' end) p), '[]'::jsonb),
                   'role', s.raw_app_meta_data ->> 'role',
                   'mapped', jsonb_build_object({mapped}))
          from auth.users s where s.id = $1) as auth,
       (select jsonb_build_object({key_name}, t.{key}) || {profile}
          from {table} t where t.{key} = $1) as profile",
            mapped = mapped.join(", "),
            key_name = literal(self.mapping.target.key.as_str()),
            profile = self.mapped_json("t"),
        )
    }

    /// The ids holding an email on either side (see `RenderedSql::find_by_email`).
    fn find_by_email(&self) -> String {
        // Two arms, one per Supabase Auth index (`same_by_index`): its unique index on `email`
        // is partial (`not is_sso_user`), so an `or` of both would read the whole table.
        let in_source = format!(
            "select s.id from auth.users s where s.email = lower($1) and s.is_sso_user = false
union
select s.id from auth.users s
 where s.instance_id = {GOTRUE_INSTANCE} and lower(s.email) = lower($1)"
        );
        match self.mapping.email_column() {
            Some(email) => format!(
                "{in_source}\nunion\nselect t.{key} from {table} t where lower(t.{email}) = lower($1)",
                key = self.key,
                table = self.table,
                email = email.quoted(),
            ),
            None => in_source,
        }
    }

    /// Every count in one statement, in two passes the planner can run in parallel (a full
    /// join cannot be, before PostgreSQL 16): the target rows no auth user has (`strays`, one
    /// anti-join: usually few), then every auth user left-joined to its profile. A stray that a
    /// lonely auth user claims by email is found from the stray's side, through Supabase Auth's
    /// own indexes (`same_by_index`); each count is the kind above with those facts substituted
    /// (every mismatched auth user is live and has no profile: `missing` is the live unmatched
    /// ones less them, so the second pass need not look at the pairs).
    fn status(&self) -> String {
        let (table, key) = (&self.table, &self.key);
        let email = self.target_email("t");
        format!(
            "with strays as materialized (
    select t.{key} as id, {email} as email, {known} as known
      from {table} t
     where {not_in_source}
),
paired as materialized (
    select distinct s.id as source_id, m.id as target_id
      from strays m
      join lateral (select s.id from auth.users s
                     where {lonely} and {same}) s on true
),
source_side as (
    select count(*) as source_total,
           count(t.{key}) as matched,
           count(*) filter (where t.{key} is null and {live}) as unmatched_live,
           count(*) filter (where t.{key} is not null and {stale}) as stale,
           count(*) filter (where t.{key} is not null and s.deleted_at is not null)
               as soft_deleted
      from auth.users s
      left join {table} t on t.{key} = s.id
),
mismatched as (
    select count(distinct source_id) as sources from paired
)
select source_total,
       matched + (select count(*) from strays) as target_total,
       unmatched_live - mismatched.sources as missing,
       stale,
       mismatched.sources as mismatched,
       (select count(*) from strays m
         where not m.known and m.id not in (select target_id from paired)) as orphaned,
       soft_deleted + (select count(*) from strays m
                        where m.known and m.id not in (select target_id from paired)) as deleted,
       (select count(*) from usersync.dead_letters where resolved_at is null)
           as dead_letters_pending
  from source_side, mismatched",
            known = self.known_user("t"),
            not_in_source = self.not_in_source("t"),
            lonely = self.lonely("s"),
            same = self.same_by_index("s", "m.email"),
            live = self.live("s"),
            stale = self.stale("s", "t"),
        )
    }

    /// How many rows of one kind there are, with the correlated predicates (each a join the
    /// planner can hash).
    fn count(&self, kind: DriftKind) -> String {
        let (table, key) = (&self.table, &self.key);
        match kind {
            DriftKind::Missing => format!(
                "select count(*) from auth.users s where {}",
                self.missing("s")
            ),
            DriftKind::Stale => format!(
                "select count(*) from auth.users s join {table} t on t.{key} = s.id where {}",
                self.stale("s", "t")
            ),
            DriftKind::Mismatched => format!(
                "select count(*) from auth.users s where {}",
                self.mismatched_source("s")
            ),
            DriftKind::Orphaned => {
                format!(
                    "select count(*) from {table} t where {}",
                    self.orphaned("t")
                )
            }
            DriftKind::Deleted => {
                format!("select count(*) from {table} t where {}", self.deleted("t"))
            }
        }
    }

    /// One page of a kind, keyset-paginated by id. Every row says its id and email; stale rows
    /// name the columns that differ, mismatched rows the target ids holding their email.
    fn drift_page(&self, kind: DriftKind) -> String {
        let (table, key) = (&self.table, &self.key);
        let target_side = |predicate: String| {
            format!(
                "select t.{key} as id, {email} as email, null::uuid[] as target_ids,
       null::text[] as columns
  from {table} t
 where t.{key} >= $1 and {predicate}
 order by t.{key}
 limit $2",
                email = self.target_email("t"),
            )
        };
        match kind {
            DriftKind::Missing => format!(
                "select s.id, s.email::text as email, null::uuid[] as target_ids,
       null::text[] as columns
  from auth.users s
 where s.id >= $1 and {}
 order by s.id
 limit $2",
                self.missing("s")
            ),
            DriftKind::Stale => format!(
                "select s.id, s.email::text as email, null::uuid[] as target_ids,
       {} as columns
  from auth.users s join {table} t on t.{key} = s.id
 where s.id >= $1 and {}
 order by s.id
 limit $2",
                self.differing_columns("s", "t"),
                self.stale("s", "t")
            ),
            DriftKind::Mismatched => format!(
                "select s.id, s.email::text as email,
       array_agg(m.{key} order by m.{key}) as target_ids, null::text[] as columns
  from auth.users s join {table} m on {}
 where s.id >= $1 and {} and {}
 group by s.id, s.email
 order by s.id
 limit $2",
                self.same_person("s", "m"),
                self.lonely("s"),
                self.stray("m")
            ),
            DriftKind::Orphaned => target_side(self.orphaned("t")),
            DriftKind::Deleted => target_side(self.deleted("t")),
        }
    }

    /// The names of the `always` columns in which source `s` and target `t` differ, in mapping
    /// order, as a `text[]`: what a stale row's listing and the view say about it.
    fn differing_columns(&self, s: &str, t: &str) -> String {
        let differing: Vec<String> = self
            .mapping
            .always_columns()
            .map(|c| {
                format!(
                    "case when {t}.{} is distinct from {} then {} end",
                    c.name.quoted(),
                    self.typed_expr(c, s),
                    literal(c.name.as_str())
                )
            })
            .collect();
        format!(
            "array_remove(array[{}]::text[], null)",
            differing.join(", ")
        )
    }

    /// The query of the view `usersync.user_drift (user_id, email, kind, detail)`: one row per
    /// drifted user and kind, installed with the triggers (`repo::triggers`) for admins who ask
    /// in SQL (`select kind, count(*) from usersync.user_drift group by 1`).
    ///
    /// One `union all` branch per kind, each the kind's own predicate exactly as `drift_one`
    /// asks it of one id (the source-side kinds as the listings and counts ask them, the
    /// target-side ones with `claimed_by_index`, as `status` pairs strays with auth users), so
    /// that its counts are `status`'s and a user's rows are `GET /v1/users/{id}/drift`'s. Each
    /// branch's `user_id` is the plain key column of the table it starts from (`s.id`, the
    /// auth user's id, for missing, stale and mismatched; the profile's key for orphaned and
    /// deleted) and every branch has the same column types, so the planner pushes a
    /// `where user_id = ...` into each branch as an index condition: a lookup of one user reads
    /// a few index entries at any table size (the scale rule; `tests/api/scale.rs`).
    ///
    /// `email` is the auth user's for the source-side kinds and the profile's for the others.
    /// `detail` is `jsonb`: `{"columns": [...]}` for stale (the `always` columns that differ),
    /// `{"target_ids": [...]}` for mismatched (the profiles holding the email under an id no
    /// auth user has), `{"auth_user": "soft_deleted" | "gone"}` for deleted, null otherwise.
    pub fn drift_view(&self) -> String {
        let (table, key) = (&self.table, &self.key);
        let branch = |kind: DriftKind| {
            let kind_name = literal(kind.as_str());
            match kind {
                DriftKind::Missing => format!(
                    "select s.id as user_id, s.email::text as email, {kind_name}::text as kind,
       null::jsonb as detail
  from auth.users s
 where {}",
                    self.missing("s")
                ),
                DriftKind::Stale => format!(
                    "select s.id, s.email::text, {kind_name}::text,
       jsonb_build_object('columns', to_jsonb({}))
  from auth.users s join {table} t on t.{key} = s.id
 where {}",
                    self.differing_columns("s", "t"),
                    self.stale("s", "t")
                ),
                DriftKind::Mismatched => format!(
                    "select s.id, s.email::text, {kind_name}::text,
       jsonb_build_object('target_ids', (select jsonb_agg(m.{key} order by m.{key})
                                           from {table} m where {} and {}))
  from auth.users s
 where {}",
                    self.stray("m"),
                    self.same_person("s", "m"),
                    self.mismatched_source("s")
                ),
                DriftKind::Orphaned => format!(
                    "select t.{key}, {email}, {kind_name}::text, null::jsonb
  from {table} t
 where {}",
                    self.orphaned_with("t", &self.claimed_by_index("t")),
                    email = self.target_email("t"),
                ),
                DriftKind::Deleted => format!(
                    "select t.{key}, {email}, {kind_name}::text,
       jsonb_build_object('auth_user', case when exists (select 1 from auth.users a
                                                          where a.id = t.{key})
                                            then 'soft_deleted' else 'gone' end)
  from {table} t
 where {}",
                    self.deleted_with("t", &self.claimed_by_index("t")),
                    email = self.target_email("t"),
                ),
            }
        };
        DriftKind::ALL
            .iter()
            .map(|k| branch(*k))
            .collect::<Vec<_>>()
            .join("\nunion all\n")
    }

    fn repair(&self) -> RepairSql {
        let (table, key) = (&self.table, &self.key);
        let (columns, values) = self.insert_columns("s");
        let names = self.mapped_names();
        // `missing`, with its two probes made per row for speed: "no target row" through the
        // primary key (see `Creates`), and "no stray namesake" through the `lower(email)` index
        // or against a list of emails.
        let create = |no_namesake: String| {
            let form = |on_conflict: &str| {
                format!(
                    "with ins as (
    insert into {table} as t ({key}, {columns})
    select s.id, {values}
      from auth.users s
     where {chunk} and {live} and {no_row}
       and {no_namesake} and {refused} is null
     limit $5{on_conflict}
    returning t.{key} as id, null::jsonb as before, {after} as after
),
audit as (
    {audit}
)
select count(*) from ins",
                    chunk = in_chunk("s"),
                    live = self.live("s"),
                    no_row = self.no_target_row_per_row("s"),
                    refused = self.refused_column("s", false),
                    after = self.mapped_array("t"),
                    audit = chunk_audit(
                        DriftKind::Missing,
                        AuditAction::Created,
                        "ins",
                        Images::AFTER,
                        &names,
                    ),
                )
            };
            Creates {
                unguarded: form(""),
                guarded: form(&format!("\n    on conflict ({key}) do nothing")),
            }
        };
        let create_missing = create(self.no_stray_namesake_per_row("s"));
        let create_missing_known_strays = create(
            "(s.is_sso_user or s.email is null or lower(s.email) <> all($6::text[]))".into(),
        );
        let sets: Vec<String> = self
            .refreshed_columns()
            .map(|c| {
                let value = match c.source {
                    ValueSource::Now => "now()".to_owned(),
                    _ => self.typed_expr(c, "s"),
                };
                format!("{} = {value}", c.name.quoted())
            })
            .collect();
        // `b` is the same row read through the statement's snapshot: its values before the
        // update, for the audit event.
        let update_stale = format!(
            "with candidates as (
    select t.{key} as id
      from auth.users s join {table} t on t.{key} = s.id
     where {chunk} and {stale} and {refused} is null
     limit $5
),
upd as (
    update {table} as t set {sets}
      from candidates c, auth.users s, {table} b
     where t.{key} = c.id and s.id = c.id and b.{key} = c.id and {stale}
       and {refused} is null
    returning t.{key} as id, {before} as before, {after} as after
),
audit as (
    {audit}
)
select count(*) from upd",
            chunk = in_chunk("s"),
            stale = self.stale("s", "t"),
            refused = self.refused_column("s", true),
            sets = sets.join(", "),
            before = self.mapped_array("b"),
            after = self.mapped_array("t"),
            audit = chunk_audit(
                DriftKind::Stale,
                AuditAction::Updated,
                "upd",
                Images::BOTH,
                &names,
            ),
        );
        let delete = |kind: DriftKind, predicate: &dyn Fn(&str) -> String| {
            format!(
                "with gone as (
    delete from {table} t
     where t.{key} in (select c.{key} from {table} c
                        where {chunk} and {candidate} limit $5)
       and {recheck}
    returning t.{key} as id, {before} as before, null::jsonb as after
),
audit as (
    {audit}
)
select count(*) from gone",
                chunk = in_chunk("c"),
                candidate = predicate("c"),
                recheck = predicate("t"),
                before = self.mapped_array("t"),
                audit = chunk_audit(kind, AuditAction::Deleted, "gone", Images::BEFORE, &names),
            )
        };
        let refused_users = {
            let (insert, update) = (
                self.refused_column("s", false),
                self.refused_column("s", true),
            );
            // The refused users of a chunk are few: each part finds them first (`offset 0`
            // keeps the planner from joining the whole chunk to the target before it filters),
            // and only they are then checked for their kind, one index probe each.
            let mut parts = Vec::new();
            if insert != "null::text" {
                parts.push(format!(
                    "select s.id, {missing_kind} as kind, s.column_name
  from (select s.*, {insert} as column_name from auth.users s
         where {chunk} and {insert} is not null offset 0) s
 where {missing}",
                    chunk = in_chunk("s"),
                    missing = self.missing("s"),
                    missing_kind = DriftKind::Missing.sql(),
                ));
            }
            if update != "null::text" {
                parts.push(format!(
                    "select s.id, {stale_kind} as kind, s.column_name
  from (select s.*, {update} as column_name from auth.users s
         where {chunk} and {update} is not null offset 0) s
  join {table} t on t.{key} = s.id
 where {stale}",
                    chunk = in_chunk("s"),
                    stale = self.stale("s", "t"),
                    stale_kind = DriftKind::Stale.sql(),
                ));
            }
            (!parts.is_empty()).then(|| parts.join("\nunion all\n"))
        };
        RepairSql {
            refused_users,
            stray_emails: format!(
                "select array(select distinct {email} from {table} m where {stray} limit $1)",
                email = match self.mapping.email_column() {
                    Some(e) => format!("lower(m.{})", e.quoted()),
                    None => "null::text".into(),
                },
                stray = self.stray("m"),
            ),
            create_missing_known_strays,
            pages: format!(
                "select pg_relation_size('auth.users') / current_setting('block_size')::bigint,
       pg_relation_size({}) / current_setting('block_size')::bigint",
                literal(&self.mapping.target.qualified())
            ),
            source_rows: format!("select count(*) from auth.users s where {}", in_chunk("s")),
            target_rows: format!("select count(*) from {table} t where {}", in_chunk("t")),
            source_ids: format!("select s.id from auth.users s where {}", in_chunk("s")),
            target_ids: format!("select t.{key} from {table} t where {}", in_chunk("t")),
            source_place: "select s.ctid::text from auth.users s where s.id = $1".into(),
            target_place: format!("select t.ctid::text from {table} t where t.{key} = $1"),
            create_missing,
            update_stale,
            delete_deleted: delete(DriftKind::Deleted, &|t| self.deleted(t)),
            delete_orphaned: delete(DriftKind::Orphaned, &|t| self.orphaned(t)),
            orphans: format!(
                "select t.{key} as id, {row} as row
  from {table} t
 where {chunk} and {orphaned}
 order by t.{key}
 limit $3",
                chunk = in_chunk("t"),
                row = self.mapped_json("t"),
                orphaned = self.orphaned("t"),
            ),
            pairs: format!(
                "select s.id as source_id, m.{key} as target_id,
       (select count(*) from {table} m2 where {stray_m2} and {same_m2}) as targets,
       (select count(*) from auth.users s2 where {lonely_s2} and {same_s2}) as sources
  from auth.users s join {table} m on {same}
 where {chunk} and {lonely} and {stray}
 order by s.id, m.{key}",
                chunk = in_chunk("s"),
                stray_m2 = self.stray("m2"),
                same_m2 = self.same_person("s", "m2"),
                lonely_s2 = self.lonely("s2"),
                same_s2 = self.same_person("s2", "m"),
                same = self.same_person("s", "m"),
                lonely = self.lonely("s"),
                stray = self.stray("m"),
            ),
            rekey_moved: format!(
                "old as (
    select {before} as before from {table} o where o.{key} = $2
),
moved as (
    update {table} t set {key} = $1
     where t.{key} = $2 and {stray}
       and exists (select 1 from auth.users s where s.id = $1 and {lonely} and {same})
    returning t.{key} as id, {after} as after
)",
                before = self.mapped_json("o"),
                stray = self.stray("t"),
                lonely = self.lonely("s"),
                same = self.same_person("s", "t"),
                after = self.mapped_json("t"),
            ),
            rekey_audit: format!(
                "audit as (
    insert into usersync.events (run_id, user_id, caller, path, kind, action, before, after)
    select $3, id, $4, {batch}, {mismatched}, {rekeyed},
           (select before from old) || jsonb_build_object({key_name}, $2::uuid),
           after || jsonb_build_object({key_name}, $1::uuid)
      from moved
)",
                key_name = literal(self.mapping.target.key.as_str()),
                batch = SyncPath::Batch.sql(),
                mismatched = DriftKind::Mismatched.sql(),
                rekeyed = AuditAction::Rekeyed.sql(),
            ),
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
