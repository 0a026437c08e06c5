//! What the real target table looks like, read from the Postgres catalog.

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

/// The target table's columns and the unique indexes that cover its email column.
/// Equal shapes render equal statements: `/readyz` compares the live one with the one the
/// service rendered from instead of rendering again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetShape {
    pub columns: HashMap<String, ColumnInfo>,
    /// Unique indexes (and constraints) on the target other than its primary key, so that a
    /// unique violation can be reported as the conflict it is.
    pub unique_indexes: Vec<UniqueIndex>,
    /// Columns with an index on `lower(column)`: a case-insensitive email lookup can probe it.
    pub lower_indexed: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UniqueIndex {
    pub name: String,
    pub columns: Vec<String>,
}

/// Reads the target's shape; `None` when the table does not exist.
pub async fn target_shape(
    db: impl PgExecutor<'_> + Copy,
    target: &TargetTable,
) -> sqlx::Result<Option<TargetShape>> {
    let rows: Vec<(String, String, bool, bool, bool, bool)> = sqlx::query_as(
        "select a.attname::text,
                format_type(a.atttypid, a.atttypmod),
                a.attnotnull,
                a.atthasdef or a.attidentity <> '',
                a.attgenerated = '' and a.attidentity <> 'a',
                t.typcategory = 'S' and t.typtype <> 'd'
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
    if rows.is_empty() {
        return Ok(None);
    }
    let columns = rows
        .into_iter()
        .map(
            |(name, sql_type, not_null, has_default, writable, text_like)| {
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
    }))
}
