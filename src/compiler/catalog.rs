//! What the real target table looks like, and what the connecting role may do to it, read
//! from the Postgres catalog.

use std::collections::HashMap;

use sqlx::PgExecutor;

use crate::compiler::mapping::TargetTable;

/// One column of the target table as the catalog describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnInfo {
    /// The type as SQL (`text`, `timestamp with time zone`, `character varying(255)`).
    pub sql_type: String,
    pub not_null: bool,
    pub has_default: bool,
    /// Generated and identity-always columns cannot be written.
    pub writable: bool,
    /// A string type without constraints of its own (`text`, `varchar(n)`, `char(n)`,
    /// `citext`; not a domain): any text casts into it, so a metadata value cannot fail.
    pub text_like: bool,
}

/// The target table's columns, the unique indexes that cover its email column, and the role's
/// privileges on it. Equal shapes render equal statements and allow the same writes: `/readyz`
/// compares the live one with the last one the mapping was bound against instead of binding
/// again (see `bind::FitWatch`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetShape {
    pub columns: HashMap<String, ColumnInfo>,
    /// Unique indexes (and constraints) on the target other than its primary key, so that a
    /// unique violation can be reported as the conflict it is.
    pub unique_indexes: Vec<UniqueIndex>,
    /// Columns with an index on `lower(column)`: a case-insensitive email lookup can probe it.
    pub lower_indexed: Vec<String>,
    /// What the connecting role may do to the table.
    pub privileges: TargetPrivileges,
}

/// The connecting role's privileges on the target table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetPrivileges {
    pub role: String,
    pub select: bool,
    pub insert: bool,
    pub update: bool,
    pub delete: bool,
}

impl TargetPrivileges {
    /// The privileges the role lacks of those usersync needs, as GRANT spells them: every
    /// sync reads, inserts and updates profiles; `deletes` (a policy deletes profiles) needs
    /// `delete` too.
    pub fn missing(&self, deletes: bool) -> Vec<&'static str> {
        [
            ("select", self.select),
            ("insert", self.insert),
            ("update", self.update),
            ("delete", self.delete || !deletes),
        ]
        .into_iter()
        .filter(|(_, held)| !held)
        .map(|(privilege, _)| privilege)
        .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UniqueIndex {
    pub name: String,
    pub columns: Vec<String>,
}

/// A column as the catalog query reads it, with the role's privileges on its table (the same on
/// every row).
type ColumnRow = (
    String,
    String,
    bool,
    bool,
    bool,
    bool,
    String,
    bool,
    bool,
    bool,
    bool,
);

/// Reads the target's shape; `None` when the table does not exist.
pub async fn target_shape(
    db: impl PgExecutor<'_> + Copy,
    target: &TargetTable,
) -> sqlx::Result<Option<TargetShape>> {
    let rows: Vec<ColumnRow> = sqlx::query_as(
        "select a.attname::text,
                format_type(a.atttypid, a.atttypmod),
                a.attnotnull,
                a.atthasdef or a.attidentity <> '',
                a.attgenerated = '' and a.attidentity <> 'a',
                t.typcategory = 'S' and t.typtype <> 'd',
                current_user::text,
                has_table_privilege(c.oid, 'select'),
                has_table_privilege(c.oid, 'insert'),
                has_table_privilege(c.oid, 'update'),
                has_table_privilege(c.oid, 'delete')
           from pg_attribute a
           join pg_type t on t.oid = a.atttypid
           join pg_class c on c.oid = a.attrelid
           join pg_namespace n on n.oid = c.relnamespace
          where n.nspname = $1 and c.relname = $2 and c.relkind in ('r', 'p')
            and a.attnum > 0 and not a.attisdropped",
    )
    .bind(target.schema.as_str())
    .bind(target.table.as_str())
    .fetch_all(db)
    .await?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let privileges = TargetPrivileges {
        role: first.6.clone(),
        select: first.7,
        insert: first.8,
        update: first.9,
        delete: first.10,
    };
    let columns = rows
        .into_iter()
        .map(
            |(name, sql_type, not_null, has_default, writable, text_like, ..)| {
                (
                    name,
                    ColumnInfo {
                        sql_type,
                        not_null,
                        has_default,
                        writable,
                        text_like,
                    },
                )
            },
        )
        .collect();
    let unique: Vec<(String, Vec<String>)> = sqlx::query_as(
        "select ic.relname::text,
                array(select a.attname::text
                        from unnest(i.indkey) k
                        join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k)
           from pg_index i
           join pg_class ic on ic.oid = i.indexrelid
           join pg_class c on c.oid = i.indrelid
           join pg_namespace n on n.oid = c.relnamespace
          where n.nspname = $1 and c.relname = $2 and i.indisunique and not i.indisprimary
          order by 1",
    )
    .bind(target.schema.as_str())
    .bind(target.table.as_str())
    .fetch_all(db)
    .await?;
    let lower_indexed: Vec<String> = sqlx::query_scalar(
        "select distinct a.attname::text
           from pg_index i
           join pg_class c on c.oid = i.indrelid
           join pg_namespace n on n.oid = c.relnamespace
           join pg_attribute a on a.attrelid = i.indrelid and a.attnum > 0
          where n.nspname = $1 and c.relname = $2 and i.indnatts = 1 and i.indpred is null
            and i.indisvalid
            and pg_get_expr(i.indexprs, i.indrelid) in (
                'lower(' || quote_ident(a.attname) || ')',
                'lower((' || quote_ident(a.attname) || ')::text)')
          order by 1",
    )
    .bind(target.schema.as_str())
    .bind(target.table.as_str())
    .fetch_all(db)
    .await?;
    Ok(Some(TargetShape {
        columns,
        unique_indexes: unique
            .into_iter()
            .map(|(name, columns)| UniqueIndex { name, columns })
            .collect(),
        lower_indexed,
        privileges,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delete_is_needed_only_when_a_policy_deletes() {
        let held = |delete| TargetPrivileges {
            role: "usersync".into(),
            select: true,
            insert: false,
            update: true,
            delete,
        };
        assert_eq!(held(false).missing(false), ["insert"]);
        assert_eq!(held(false).missing(true), ["insert", "delete"]);
        assert_eq!(held(true).missing(true), ["insert"]);
    }
}
