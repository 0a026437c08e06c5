//! The mapping: how an `auth.users` row becomes a target row.
//!
//! One mapping drives every path (call, batch, trigger, healing), so it is parsed and checked
//! once, here, into types that cannot hold an unsafe identifier or a secret source column. SQL
//! is rendered from it in `compiler::render`; nothing else interprets the TOML.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::Deserialize;

/// The built-in mapping onto `public.users`, shipped as a file so that it doubles as the
/// example every custom mapping starts from.
pub const DEFAULT_MAPPING_TOML: &str = include_str!("../../mappings/default.toml");

/// Why a mapping was refused. Each message names the column or key at fault.
#[derive(Debug, thiserror::Error)]
pub enum MappingError {
    #[error("cannot read mapping file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid mapping: {0}")]
    Syntax(String),
    #[error("invalid mapping: column `{column}`: {reason}")]
    Column { column: String, reason: String },
    #[error("invalid mapping: {0}")]
    Invalid(String),
}

/// A lower-case SQL identifier (`[a-z_][a-z0-9_]*`, at most 63 bytes): safe to quote into SQL.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ident(String);

impl Ident {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut chars = raw.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
        let rest_ok = raw
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !first_ok || !rest_ok || raw.len() > 63 {
            return Err(format!(
                "`{raw}` is not a plain lower-case SQL identifier ([a-z_][a-z0-9_]*)"
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The identifier double-quoted for SQL.
    pub fn quoted(&self) -> String {
        format!("\"{}\"", self.0)
    }
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A path into a metadata object, such as `full_name` or `address.city`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPath(Vec<String>);

impl JsonPath {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let segments: Vec<String> = raw.split('.').map(str::to_owned).collect();
        let valid = segments.iter().all(|s| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        });
        if !valid {
            return Err(format!(
                "`{raw}` is not a metadata path (dot-separated keys of [A-Za-z0-9_-])"
            ));
        }
        Ok(Self(segments))
    }

    pub fn segments(&self) -> &[String] {
        &self.0
    }
}

/// The `auth.users` columns a mapping may read. Password hashes, tokens and the raw metadata
/// columns are absent on purpose: they are never copied, and metadata is read by path only.
pub const READABLE_SOURCE_COLUMNS: &[&str] = &[
    "id",
    "aud",
    "role",
    "email",
    "phone",
    "email_confirmed_at",
    "phone_confirmed_at",
    "confirmed_at",
    "invited_at",
    "last_sign_in_at",
    "created_at",
    "updated_at",
    "banned_until",
    "deleted_at",
    "is_sso_user",
    "is_anonymous",
];

/// Where a target column's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueSource {
    /// A column of the `auth.users` row.
    Column(Ident),
    /// The first non-empty of these paths in `raw_user_meta_data` (user-writable).
    UserMetadata(Vec<JsonPath>),
    /// The first non-empty of these paths in `raw_app_meta_data` (server-controlled).
    AppMetadata(Vec<JsonPath>),
    /// A constant.
    Constant(String),
    /// The time of the write; stamped on every insert and real update, never compared.
    Now,
}

/// When a column follows the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncMode {
    /// Kept equal to the source; a difference is `stale` drift.
    Always,
    /// Written when the row is created and then owned by the app (people edit their name).
    OnCreate,
}

/// What happens to a user's value that the target column cannot store (metadata `"12; drop
/// table x"` for an `integer` column: anyone can write their own user_metadata).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum InvalidValue {
    /// The user is not synced, and the failure is recorded with the user's id and the column
    /// (never the value); every other user is synced.
    #[default]
    Fail,
    /// The column is written as null.
    Null,
    /// The column is written as the mapping's `default`.
    Default,
}

impl InvalidValue {
    pub fn as_str(self) -> &'static str {
        match self {
            InvalidValue::Fail => "fail",
            InvalidValue::Null => "null",
            InvalidValue::Default => "default",
        }
    }
}

/// One target column and where its value comes from.
#[derive(Debug, Clone)]
pub struct ColumnMapping {
    pub name: Ident,
    pub source: ValueSource,
    pub sync: SyncMode,
    pub default: Option<String>,
    pub allow: Option<Vec<String>>,
    /// What a value the column cannot store becomes.
    pub invalid: InvalidValue,
}

/// What happens to anonymous sign-ins (`is_anonymous`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AnonymousPolicy {
    #[default]
    Sync,
    Skip,
}

/// The target table: `schema.table`, keyed by the column that holds `auth.users.id`.
#[derive(Debug, Clone)]
pub struct TargetTable {
    pub schema: Ident,
    pub table: Ident,
    pub key: Ident,
}

impl TargetTable {
    /// `"schema"."table"`, for SQL.
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.schema.quoted(), self.table.quoted())
    }
}

/// A parsed, self-consistent mapping (not yet checked against the real table; see
/// `compiler::catalog`).
#[derive(Debug, Clone)]
pub struct Mapping {
    pub target: TargetTable,
    pub anonymous: AnonymousPolicy,
    /// The mapped columns in a stable order (the key is not among them).
    pub columns: Vec<ColumnMapping>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMapping {
    target: RawTarget,
    #[serde(default)]
    source: RawSource,
    columns: BTreeMap<String, RawColumn>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    schema: String,
    table: String,
    key: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSource {
    #[serde(default)]
    anonymous: AnonymousPolicy,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawColumn {
    source: Option<String>,
    user_metadata: Option<Vec<String>>,
    app_metadata: Option<Vec<String>>,
    value: Option<String>,
    now: Option<bool>,
    sync: Option<SyncMode>,
    default: Option<String>,
    allow: Option<Vec<String>>,
    invalid: Option<InvalidValue>,
}

impl Mapping {
    /// The built-in mapping onto `public.users`.
    pub fn default_mapping() -> Self {
        Self::from_toml(DEFAULT_MAPPING_TOML).expect("the built-in mapping is valid")
    }

    /// Reads a mapping file, or the built-in one when no path is given.
    pub fn load(path: Option<&Path>) -> Result<Self, MappingError> {
        match path {
            None => Ok(Self::default_mapping()),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| MappingError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                Self::from_toml(&text)
            }
        }
    }

    pub fn from_toml(text: &str) -> Result<Self, MappingError> {
        let raw: RawMapping =
            toml::from_str(text).map_err(|e| MappingError::Syntax(e.message().to_owned()))?;
        let target = TargetTable {
            schema: Ident::parse(&raw.target.schema).map_err(MappingError::Invalid)?,
            table: Ident::parse(&raw.target.table).map_err(MappingError::Invalid)?,
            key: Ident::parse(&raw.target.key).map_err(MappingError::Invalid)?,
        };
        if target.schema.as_str() == "auth" {
            return Err(MappingError::Invalid(
                "the target cannot live in the `auth` schema: usersync never writes it".into(),
            ));
        }
        let mut columns = Vec::with_capacity(raw.columns.len());
        for (name, column) in raw.columns {
            columns.push(parse_column(&name, column, &target.key)?);
        }
        if columns.is_empty() {
            return Err(MappingError::Invalid("no columns are mapped".into()));
        }
        Ok(Self {
            target,
            anonymous: raw.source.anonymous,
            columns,
        })
    }

    /// Columns that follow the source and so take part in change detection.
    pub fn always_columns(&self) -> impl Iterator<Item = &ColumnMapping> {
        self.columns.iter().filter(|c| c.is_compared())
    }

    /// The target column that holds the source email, which the mismatch (same person, two
    /// ids) detection compares. `None` disables that detection.
    pub fn email_column(&self) -> Option<&Ident> {
        self.columns
            .iter()
            .find(|c| matches!(&c.source, ValueSource::Column(s) if s.as_str() == "email"))
            .map(|c| &c.name)
    }
}

impl ColumnMapping {
    /// Whether a difference in this column counts as a change worth a write.
    pub fn is_compared(&self) -> bool {
        self.sync == SyncMode::Always && self.source != ValueSource::Now
    }
}

fn parse_column(name: &str, raw: RawColumn, key: &Ident) -> Result<ColumnMapping, MappingError> {
    let column_error = |reason: String| MappingError::Column {
        column: name.to_owned(),
        reason,
    };
    let ident = Ident::parse(name).map_err(column_error)?;
    if &ident == key {
        return Err(column_error(
            "is the key; it always holds auth.users.id and takes no mapping".into(),
        ));
    }
    let paths = |raw: Vec<String>| -> Result<Vec<JsonPath>, MappingError> {
        if raw.is_empty() {
            return Err(column_error("lists no metadata path".into()));
        }
        raw.iter()
            .map(|p| JsonPath::parse(p).map_err(column_error))
            .collect()
    };
    let given = [
        raw.source.is_some(),
        raw.user_metadata.is_some(),
        raw.app_metadata.is_some(),
        raw.value.is_some(),
        raw.now.is_some(),
    ]
    .iter()
    .filter(|g| **g)
    .count();
    if given != 1 {
        return Err(column_error(
            "needs exactly one of `source`, `user_metadata`, `app_metadata`, `value`, `now`".into(),
        ));
    }
    let source = if let Some(col) = raw.source {
        if !READABLE_SOURCE_COLUMNS.contains(&col.as_str()) {
            return Err(column_error(format!(
                "`{col}` is not a readable auth.users column (one of: {})",
                READABLE_SOURCE_COLUMNS.join(", ")
            )));
        }
        ValueSource::Column(Ident::parse(&col).map_err(column_error)?)
    } else if let Some(p) = raw.user_metadata {
        ValueSource::UserMetadata(paths(p)?)
    } else if let Some(p) = raw.app_metadata {
        ValueSource::AppMetadata(paths(p)?)
    } else if let Some(v) = raw.value {
        // A constant is stored as written; `now()` as text is never what was meant.
        if v.trim().eq_ignore_ascii_case("now()") {
            return Err(column_error(
                "`value = \"now()\"` would store the text `now()`: write `now = true` for the \
                 time of each write"
                    .into(),
            ));
        }
        ValueSource::Constant(v)
    } else if raw.now == Some(true) {
        ValueSource::Now
    } else {
        return Err(column_error("`now` can only be `true`".into()));
    };
    let sync = match (&source, raw.sync) {
        (ValueSource::Now, None) => SyncMode::Always,
        (ValueSource::Now, Some(_)) => {
            return Err(column_error(
                "`now` is stamped on every write and takes no `sync`".into(),
            ))
        }
        (_, Some(mode)) => mode,
        (_, None) => {
            return Err(column_error(
                "needs `sync = \"always\"` or `sync = \"on_create\"`".into(),
            ))
        }
    };
    if let Some(allow) = &raw.allow {
        if allow.is_empty() {
            return Err(column_error("`allow` is empty".into()));
        }
        match &raw.default {
            Some(d) if !allow.contains(d) => {
                return Err(column_error(format!(
                    "the default `{d}` is not in its own `allow` list"
                )))
            }
            _ => {}
        }
    }
    let invalid = raw.invalid.unwrap_or_default();
    if invalid == InvalidValue::Default && raw.default.is_none() {
        return Err(column_error(
            "`invalid = \"default\"` needs a `default` to write".into(),
        ));
    }
    Ok(ColumnMapping {
        name: ident,
        source,
        sync,
        default: raw.default,
        allow: raw.allow,
        invalid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_mapping_takes_role_from_app_metadata_only() {
        let m = Mapping::default_mapping();
        let role = m
            .columns
            .iter()
            .find(|c| c.name.as_str() == "role")
            .unwrap();
        assert!(matches!(role.source, ValueSource::AppMetadata(_)));
        assert_eq!(role.default.as_deref(), Some("user"));
        assert_eq!(m.email_column().unwrap().as_str(), "email");
    }

    #[test]
    fn identifiers_that_could_inject_sql_are_refused() {
        for bad in ["Users", "users;drop", "\"x\"", "", "1abc", "a b"] {
            assert!(Ident::parse(bad).is_err(), "{bad} accepted");
        }
        assert!(JsonPath::parse("a'b").is_err());
        assert!(JsonPath::parse("a..b").is_err());
    }

    #[test]
    fn secret_source_columns_cannot_be_mapped() {
        let toml = r#"
            [target]
            schema = "public"
            table = "users"
            key = "id"
            [columns.pw]
            source = "encrypted_password"
            sync = "always"
        "#;
        let err = Mapping::from_toml(toml).unwrap_err().to_string();
        assert!(
            err.contains("`pw`") && err.contains("encrypted_password"),
            "{err}"
        );
    }

    #[test]
    fn now_is_spelled_now_true_not_a_constant() {
        let toml = r#"
            [target]
            schema = "public"
            table = "users"
            key = "id"
            [columns.updated_at]
            value = "now()"
            sync = "always"
        "#;
        let err = Mapping::from_toml(toml).unwrap_err().to_string();
        assert!(err.contains("now = true"), "{err}");
    }

    #[test]
    fn a_column_needs_exactly_one_source() {
        let toml = r#"
            [target]
            schema = "public"
            table = "users"
            key = "id"
            [columns.email]
            source = "email"
            value = "x"
            sync = "always"
        "#;
        assert!(Mapping::from_toml(toml).is_err());
    }
}
