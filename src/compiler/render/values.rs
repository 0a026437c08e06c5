//! The values a mapping writes: each column's expression from `auth.users`, its cast into
//! the target's type, the guard that refuses a value the column cannot store, and the images
//! of the mapped columns the audit records.

use super::*;

/// A metadata path as a `text[]` literal, each key quoted: `'{"address","city"}'`.
pub(super) fn json_path_literal(path: &JsonPath) -> String {
    let segments: Vec<String> = path.segments().iter().map(|s| format!("\"{s}\"")).collect();
    literal(&format!("{{{}}}", segments.join(",")))
}

pub(super) fn json_path_expr(column: &str, alias: &str, path: &JsonPath) -> String {
    format!(
        "nullif({alias}.{column} #>> {}, '')",
        json_path_literal(path)
    )
}

/// The value a column takes from the source row aliased `alias`, before the cast.
pub(super) fn value_expr(column: &ColumnMapping, alias: &str) -> String {
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

impl Renderer<'_> {
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
    pub(super) fn cast_checked(&self, column: &ColumnMapping) -> bool {
        matches!(
            column.source,
            ValueSource::UserMetadata(_) | ValueSource::AppMetadata(_)
        ) && !self.shape.columns[column.name.as_str()].text_like
    }

    /// Whether the column's value may be null where the column is NOT NULL (an explicit null is
    /// refused even where the table has a default).
    pub(super) fn may_be_null_into_not_null(&self, column: &ColumnMapping) -> bool {
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
    pub(super) fn refused(&self, column: &ColumnMapping, s: &str) -> Option<String> {
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
    pub(super) fn mapped_array(&self, t: &str) -> String {
        let values: Vec<String> = self
            .mapping
            .columns
            .iter()
            .map(|c| format!("{t}.{}", c.name.quoted()))
            .collect();
        format!("jsonb_build_array({})", values.join(", "))
    }

    /// The names of the mapped columns, in mapping order, as a `text[]`.
    pub(super) fn mapped_names(&self) -> String {
        let names: Vec<String> = self
            .mapping
            .columns
            .iter()
            .map(|c| literal(c.name.as_str()))
            .collect();
        format!("array[{}]::text[]", names.join(", "))
    }

    /// The email of target row `t` as text, or null when the mapping has no email column.
    pub(super) fn target_email(&self, t: &str) -> String {
        match self.mapping.email_column() {
            Some(email) => format!("{t}.{}::text", email.quoted()),
            None => "null::text".into(),
        }
    }

    /// The target columns an insert writes, and their values from source row `s`.
    pub(super) fn insert_columns(&self, s: &str) -> (String, String) {
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
    pub(super) fn refreshed_columns(&self) -> impl Iterator<Item = &ColumnMapping> {
        self.mapping
            .columns
            .iter()
            .filter(|c| c.is_compared() || c.source == ValueSource::Now)
    }
}
