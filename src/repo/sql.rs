//! SQL rendered from the mapping, once at start-up.
//!
//! Every identifier comes from a validated `Ident`, every type from the catalog, every literal
//! through `literal()`: nothing a request carries is ever spliced into SQL, only bound. The drift
//! predicates live here once and are shared by sync-one, per-user drift and the status counts,
//! so the three can never disagree about what "missing" means.

use crate::repo::catalog::TargetShape;
use crate::sync::mapping::{AnonymousPolicy, ColumnMapping, JsonPath, Mapping, ValueSource};
use crate::sync::policy::DeletedPolicy;

/// The statements a bound mapping runs.
#[derive(Debug, Clone)]
pub struct RenderedSql {
    /// Sync one user: `$1` user id, `$2` caller, `$3` path (both for the audit event).
    pub sync_one: String,
    /// Apply the `report` policy to one user who is gone or soft-deleted, and nothing to a live
    /// one: `$1` user id, `$2` caller, `$3` path.
    pub deleted_report: String,
    /// The same under the `delete` policy.
    pub deleted_delete: String,
    /// Heal the next `$3` missing or stale users with an id above `$4`, in id order: `$1`
    /// caller, `$2` path. Returns the last id looked at (null when none was left) and counts.
    pub heal_drift: String,
    /// The drift kinds of one id: `$1` user id.
    pub drift_one: String,
    /// Totals and drift counts over both tables.
    pub status: String,
    /// When the longest-waiting missing user was created (for the metrics' age gauge).
    pub oldest_missing: String,
}

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
}

/// The origin of the statements the service runs: `$1` user id, `$2` caller, `$3` path.
const BOUND_ORIGIN: Origin<'static> = Origin {
    user_id: "$1",
    caller: "$2",
    path: "$3",
};

/// A SQL string literal.
pub fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

fn json_path_expr(column: &str, alias: &str, path: &JsonPath) -> String {
    let segments: Vec<String> = path.segments().iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        "nullif({alias}.{column} #>> {}, '')",
        literal(&format!("{{{}}}", segments.join(",")))
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

    /// The source value of a column, cast to the target column's type.
    pub fn typed_expr(&self, column: &ColumnMapping, alias: &str) -> String {
        let sql_type = &self.shape.columns[column.name.as_str()].sql_type;
        format!("({})::{sql_type}", value_expr(column, alias))
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

    fn not_in_source(&self, t: &str) -> String {
        format!(
            "not exists (select 1 from auth.users a where a.id = {t}.{})",
            self.key
        )
    }

    /// A live, non-SSO source row with an email, without a target row of its id, whose email
    /// a target row holds under an id that no source row has: the same person under two ids.
    pub fn mismatched_source(&self, s: &str) -> String {
        let Some(email) = self.mapping.email_column() else {
            return "false".into();
        };
        format!(
            "({live} and not {s}.is_sso_user and {s}.email is not null and {no_row} \
             and exists (select 1 from {table} m where lower(m.{email}) = lower({s}.email) \
             and {m_orphan}))",
            live = self.live(s),
            no_row = self.no_target_row(s),
            table = self.table,
            email = email.quoted(),
            m_orphan = self.not_in_source("m"),
        )
    }

    /// The target side of a mismatch: a row whose id no source row has, holding the email of a
    /// live, non-SSO source row that has no target row.
    pub fn mismatched_target(&self, t: &str) -> String {
        let Some(email) = self.mapping.email_column() else {
            return "false".into();
        };
        format!(
            "({t}.{email} is not null and {orphan} and exists (select 1 from auth.users s2 \
             where {live} and not s2.is_sso_user and lower(s2.email) = lower({t}.{email}) \
             and {no_row}))",
            email = email.quoted(),
            orphan = self.not_in_source(t),
            live = self.live("s2"),
            no_row = self.no_target_row("s2"),
        )
    }

    pub fn missing(&self, s: &str) -> String {
        format!(
            "({} and {} and not {})",
            self.live(s),
            self.no_target_row(s),
            self.mismatched_source(s)
        )
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

    pub fn orphaned(&self, t: &str) -> String {
        format!(
            "({} and not {})",
            self.not_in_source(t),
            self.mismatched_target(t)
        )
    }

    pub fn deleted(&self, s: &str) -> String {
        format!(
            "({s}.deleted_at is not null and not {})",
            self.no_target_row(s)
        )
    }

    /// `jsonb_build_object` of the mapped columns of `t`: what audit events record (never
    /// the whole row, which may hold app data that is none of the audit's business).
    fn mapped_json(&self, t: &str) -> String {
        let pairs: Vec<String> = self
            .mapping
            .columns
            .iter()
            .map(|c| format!("{}, {t}.{}", literal(c.name.as_str()), c.name.quoted()))
            .collect();
        format!("jsonb_build_object({})", pairs.join(", "))
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
           {src_values}
      from auth.users s
     where {filter}
)",
            mismatch = self.mismatched_source("s"),
            src_values = src_values.join(",\n           "),
        )
    }

    /// The `ins` and `audit` CTEs over `src`: insert the rows that may be written, update only
    /// the `always` columns and only when one really differs, and record one event per write.
    /// `ins` returns `id`, `row` (the whole target row), `created` and `after`.
    fn upsert_ctes(&self, caller: &str, path: &str) -> String {
        let m = self.mapping;
        let (table, key) = (&self.table, &self.key);
        let names: Vec<String> = m.columns.iter().map(|c| c.name.quoted()).collect();
        let compared: Vec<&ColumnMapping> = m.always_columns().collect();
        let on_conflict = if compared.is_empty() {
            "do nothing".to_owned()
        } else {
            let sets: Vec<String> = m
                .columns
                .iter()
                .filter(|c| c.is_compared() || c.source == ValueSource::Now)
                .map(|c| {
                    let n = c.name.quoted();
                    format!("{n} = excluded.{n}")
                })
                .collect();
            let left: Vec<String> = compared
                .iter()
                .map(|c| format!("t.{}", c.name.quoted()))
                .collect();
            let right: Vec<String> = compared
                .iter()
                .map(|c| format!("excluded.{}", c.name.quoted()))
                .collect();
            format!(
                "do update set {} where ({}) is distinct from ({})",
                sets.join(", "),
                left.join(", "),
                right.join(", ")
            )
        };
        let skip_anonymous = match m.anonymous {
            AnonymousPolicy::Sync => "",
            AnonymousPolicy::Skip => " and not is_anonymous",
        };
        format!(
            "ins as (
    insert into {table} as t ({key}, {names})
    select id, {names} from src
     where deleted_at is null{skip_anonymous} and (has_row or not mismatched)
    on conflict ({key}) {on_conflict}
    returning t.{key} as id, to_jsonb(t) as row, t.xmax = 0 as created, {after} as after
),
audit as (
    insert into usersync.events (user_id, caller, path, kind, action, before, after)
    select ins.id, {caller}, {path},
           case when created then 'missing' else 'stale' end,
           case when created then 'created' else 'updated' end,
           (select {before} from {table} b where b.{key} = ins.id),
           after
      from ins
)",
            names = names.join(", "),
            after = self.mapped_json("t"),
            before = self.mapped_json("b"),
        )
    }

    /// Sync one user: read the `auth.users` row and upsert the target in one statement, which
    /// reports what it found and did.
    pub fn sync_statement(&self, origin: Origin<'_>) -> String {
        let (table, key, id) = (&self.table, &self.key, origin.user_id);
        format!(
            "with {src},
{upsert}
select exists (select 1 from src) as found,
       coalesce((select deleted_at is not null from src), false) as deleted,
       coalesce((select is_anonymous from src), false) and {skip} as skipped,
       coalesce((select not has_row and mismatched from src), false) as mismatched,
       (select created from ins) as created,
       coalesce((select row from ins), (select to_jsonb(c) from {table} c where c.{key} = {id}))
           as row",
            src = self.src_cte(&format!("s.id = {id}")),
            upsert = self.upsert_ctes(origin.caller, origin.path),
            skip = self.mapping.anonymous == AnonymousPolicy::Skip,
        )
    }

    /// Apply the deleted policy to one user whose source row is gone (hard delete) or
    /// soft-deleted; a live user is left alone, so a late or replayed signal cannot remove a
    /// profile. `delete` removes the target row; both policies record one `deleted` event (action
    /// `deleted` or `reported`), so that a later run knows the deletion was deliberate and never
    /// brings the user back. Reports once per deletion: repeating the statement changes nothing.
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
                "case when exists (select 1 from removed) then 'deleted' else 'reported' end",
                "exists (select 1 from removed)",
            ),
            DeletedPolicy::Report => ("'reported'", "false"),
        };
        format!(
            "with gone as (
    select ({id})::uuid as id,
           (select s.deleted_at from auth.users s where s.id = {id}) as deleted_at
     where not exists (select 1 from auth.users s where s.id = {id} and s.deleted_at is null)
),
removed as (
    {removed}
),
audit as (
    insert into usersync.events (user_id, caller, path, kind, action, before)
    select gone.id, {caller}, {path}, 'deleted', {action}, (select before from removed)
      from gone
     where {news}
        or not exists (select 1 from usersync.events e
                        where e.user_id = gone.id and e.kind = 'deleted'
                          and e.at >= coalesce(gone.deleted_at, '-infinity'))
    returning action
)
select exists (select 1 from gone) as gone,
       exists (select 1 from removed) and {deletes} as removed,
       (select action from audit) as action",
            caller = origin.caller,
            path = origin.path,
            deletes = policy == DeletedPolicy::Delete,
        )
    }

    /// Heal missing and stale users set-based, one keyset-ordered batch at a time (see
    /// `RenderedSql::heal_drift`).
    fn heal_drift(&self) -> String {
        let (table, key) = (&self.table, &self.key);
        format!(
            "with cand as (
    select s.id from auth.users s
     where s.id > $4
       and ({missing}
            or exists (select 1 from {table} t where t.{key} = s.id and {stale}))
     order by s.id
     limit $3
),
{src},
{upsert}
select (select id from cand order by id desc limit 1) as last_id,
       (select count(*) from ins where created) as created,
       (select count(*) from ins where not created) as updated",
            missing = self.missing("s"),
            stale = self.stale("s", "t"),
            src = self.src_cte("s.id in (select id from cand)"),
            upsert = self.upsert_ctes("$1", "$2"),
        )
    }

    /// A boolean expression over two versions `o` and `n` of an `auth.users` row: true when the
    /// change matters to the target (an `always` value, liveness, or anonymity under `skip`).
    /// Every sign-in bumps `updated_at` and `last_sign_in_at`; unless the mapping reads those,
    /// a sign-in is not a change.
    pub fn changed_predicate(&self, o: &str, n: &str) -> String {
        let (old, new): (Vec<String>, Vec<String>) = self
            .mapping
            .always_columns()
            .map(|c| (self.typed_expr(c, o), self.typed_expr(c, n)))
            .unzip();
        let mut checks = vec![format!("{o}.deleted_at is distinct from {n}.deleted_at")];
        if !old.is_empty() {
            checks.insert(
                0,
                format!(
                    "row({}) is distinct from row({})",
                    old.join(", "),
                    new.join(", ")
                ),
            );
        }
        if self.mapping.anonymous == AnonymousPolicy::Skip {
            checks.push(format!(
                "{o}.is_anonymous is distinct from {n}.is_anonymous"
            ));
        }
        checks.join("\n        or ")
    }

    fn drift_one(&self) -> String {
        let (table, key) = (&self.table, &self.key);
        format!(
            "select exists (select 1 from auth.users s where s.id = $1) as in_source,
       exists (select 1 from {table} t where t.{key} = $1) as in_target,
       exists (select 1 from auth.users s where s.id = $1 and {missing}) as missing,
       exists (select 1 from auth.users s join {table} t on t.{key} = s.id
                where s.id = $1 and {stale}) as stale,
       exists (select 1 from auth.users s where s.id = $1 and {mismatched_s})
       or exists (select 1 from {table} t where t.{key} = $1 and {mismatched_t}) as mismatched,
       exists (select 1 from {table} t where t.{key} = $1 and {orphaned}) as orphaned,
       exists (select 1 from auth.users s where s.id = $1 and {deleted}) as deleted",
            missing = self.missing("s"),
            stale = self.stale("s", "t"),
            mismatched_s = self.mismatched_source("s"),
            mismatched_t = self.mismatched_target("t"),
            orphaned = self.orphaned("t"),
            deleted = self.deleted("s"),
        )
    }

    fn status(&self) -> String {
        let (table, key) = (&self.table, &self.key);
        format!(
            "select (select count(*) from auth.users) as source_total,
       (select count(*) from {table}) as target_total,
       (select count(*) from auth.users s where {missing}) as missing,
       (select count(*) from auth.users s join {table} t on t.{key} = s.id where {stale}) as stale,
       (select count(*) from auth.users s where {mismatched}) as mismatched,
       (select count(*) from {table} t where {orphaned}) as orphaned,
       (select count(*) from auth.users s where {deleted}) as deleted,
       (select count(*) from usersync.dead_letters where resolved_at is null)
           as dead_letters_pending",
            missing = self.missing("s"),
            stale = self.stale("s", "t"),
            mismatched = self.mismatched_source("s"),
            orphaned = self.orphaned("t"),
            deleted = self.deleted("s"),
        )
    }

    pub fn render(&self) -> RenderedSql {
        RenderedSql {
            sync_one: self.sync_statement(BOUND_ORIGIN),
            deleted_report: self.deleted_statement(BOUND_ORIGIN, DeletedPolicy::Report),
            deleted_delete: self.deleted_statement(BOUND_ORIGIN, DeletedPolicy::Delete),
            heal_drift: self.heal_drift(),
            drift_one: self.drift_one(),
            status: self.status(),
            oldest_missing: format!(
                "select min(s.created_at) from auth.users s where {}",
                self.missing("s")
            ),
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
