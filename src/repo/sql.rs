//! SQL rendered from the mapping, once at start-up.
//!
//! Every identifier comes from a validated `Ident`, every type from the catalog, every literal
//! through `literal()`: nothing a request carries is ever spliced into SQL, only bound. The drift
//! predicates live here once and are shared by sync-one, per-user drift and the status counts,
//! so the three can never disagree about what "missing" means.

use crate::repo::catalog::TargetShape;
use crate::sync::mapping::{AnonymousPolicy, ColumnMapping, JsonPath, Mapping, ValueSource};

/// The statements a bound mapping runs.
#[derive(Debug, Clone)]
pub struct RenderedSql {
    /// Sync one user: `$1` user id, `$2` caller (for the audit event).
    pub sync_one: String,
    /// The drift kinds of one id: `$1` user id.
    pub drift_one: String,
    /// Totals and drift counts over both tables.
    pub status: String,
    /// When the longest-waiting missing user was created (for the metrics' age gauge).
    pub oldest_missing: String,
}

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

    fn sync_one(&self) -> String {
        let m = self.mapping;
        let (table, key) = (&self.table, &self.key);
        let columns: Vec<&ColumnMapping> = m.columns.iter().collect();
        let names: Vec<String> = columns.iter().map(|c| c.name.quoted()).collect();
        let src_values: Vec<String> = columns
            .iter()
            .map(|c| format!("{} as {}", self.typed_expr(c, "s"), c.name.quoted()))
            .collect();
        let compared: Vec<&ColumnMapping> = m.always_columns().collect();
        let on_conflict = if compared.is_empty() {
            "do nothing".to_owned()
        } else {
            let sets: Vec<String> = columns
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
            "with src as (
    select s.id, s.deleted_at, s.is_anonymous,
           exists (select 1 from {table} t where t.{key} = s.id) as has_row,
           {mismatch} as mismatched,
           {src_values}
      from auth.users s
     where s.id = $1
),
ins as (
    insert into {table} as t ({key}, {names})
    select id, {names} from src
     where deleted_at is null{skip_anonymous} and (has_row or not mismatched)
    on conflict ({key}) {on_conflict}
    returning to_jsonb(t) as row, t.xmax = 0 as created, {after} as after
),
audit as (
    insert into usersync.events (user_id, caller, path, kind, action, before, after)
    select $1, $2, 'call',
           case when created then 'missing' else 'stale' end,
           case when created then 'created' else 'updated' end,
           (select {before} from {table} b where b.{key} = $1),
           after
      from ins
)
select exists (select 1 from src) as found,
       coalesce((select deleted_at is not null from src), false) as deleted,
       coalesce((select is_anonymous from src), false) and {skip} as skipped,
       coalesce((select not has_row and mismatched from src), false) as mismatched,
       (select created from ins) as created,
       coalesce((select row from ins), (select to_jsonb(c) from {table} c where c.{key} = $1))
           as row",
            mismatch = self.mismatched_source("s"),
            skip = m.anonymous == AnonymousPolicy::Skip,
            src_values = src_values.join(",\n           "),
            names = names.join(", "),
            after = self.mapped_json("t"),
            before = self.mapped_json("b"),
        )
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
            sync_one: self.sync_one(),
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
