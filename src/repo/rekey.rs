//! Re-keying a target row: the foreign keys that point at it, read from the catalog, and the
//! one statement that moves the row and every reference together.
//!
//! Why one statement that updates the key in place: a second row under the new id would
//! collide with any unique index on the target (an email index, say), while an in-place update
//! keeps every other column as it is. Postgres checks foreign keys (`no action`, `restrict`,
//! deferred or not) and fires their `on update` actions at the end of the statement, by when
//! every reference already holds the new id: the checks pass, and a `cascade`, `set null` or
//! `set default` action finds nothing left to do, so no reference is ever nulled.

use sqlx::PgExecutor;
use uuid::Uuid;

use crate::compiler::bind::BoundMapping;
use crate::repo::repair::RunContext;

/// A single-column foreign key that references the target's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub constraint: String,
    pub schema: String,
    pub table: String,
    pub column: String,
    /// The target table references itself (`invited_by`, say).
    pub self_reference: bool,
}

impl Reference {
    /// `schema.table`, for people.
    pub fn table_name(&self) -> String {
        format!("{}.{}", self.schema, self.table)
    }

    fn table_sql(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.table))
    }
}

/// A catalog name as a SQL identifier (what Postgres's `quote_ident` does, always quoting).
fn quote_ident(raw: &str) -> String {
    format!("\"{}\"", raw.replace('"', "\"\""))
}

#[derive(sqlx::FromRow)]
struct ForeignKeyRow {
    constraint: String,
    schema: String,
    table: String,
    columns: Vec<String>,
    referenced: Vec<String>,
    self_reference: bool,
}

/// Every foreign key, in any schema, that references the target's key; or why a re-key cannot
/// be done safely, naming the constraint. Foreign keys to other target columns are left out:
/// a re-key does not change them.
pub async fn references(
    db: impl PgExecutor<'_>,
    bound: &BoundMapping,
) -> sqlx::Result<Result<Vec<Reference>, String>> {
    // `conparentid = 0`: a foreign key on a partitioned table is listed once, on the parent,
    // and updating the parent moves the rows of every partition.
    let rows: Vec<ForeignKeyRow> = sqlx::query_as(
        "select c.conname::text as constraint, n.nspname::text as schema, r.relname::text as table,
                array(select a.attname::text
                        from unnest(c.conkey) with ordinality k(attnum, ord)
                        join pg_attribute a on a.attrelid = c.conrelid and a.attnum = k.attnum
                       order by k.ord) as columns,
                array(select a.attname::text
                        from unnest(c.confkey) with ordinality k(attnum, ord)
                        join pg_attribute a on a.attrelid = c.confrelid and a.attnum = k.attnum
                       order by k.ord) as referenced,
                c.conrelid = c.confrelid as self_reference
           from pg_constraint c
           join pg_class r on r.oid = c.conrelid
           join pg_namespace n on n.oid = r.relnamespace
          where c.contype = 'f' and c.confrelid = $1::regclass and c.conparentid = 0
          order by n.nspname, r.relname, c.conname",
    )
    .bind(bound.mapping.target.qualified())
    .fetch_all(db)
    .await?;
    let key = bound.mapping.target.key.as_str();
    let mut references = Vec::new();
    for row in rows {
        if !row.referenced.iter().any(|c| c == key) {
            continue;
        }
        if row.columns.len() != 1 {
            return Ok(Err(format!(
                "foreign key {} on {}.{} ({}) is composite: usersync only moves single-column \
                 references to {}",
                row.constraint,
                row.schema,
                row.table,
                row.columns.join(", "),
                key
            )));
        }
        references.push(Reference {
            constraint: row.constraint,
            schema: row.schema,
            table: row.table,
            column: row.columns[0].clone(),
            self_reference: row.self_reference,
        });
    }
    Ok(Ok(references))
}

/// Rows of `reference` that point at `id`.
pub async fn count_references(
    db: impl PgExecutor<'_>,
    reference: &Reference,
    id: Uuid,
) -> sqlx::Result<i64> {
    sqlx::query_scalar(&format!(
        "select count(*) from {} where {} = $1",
        reference.table_sql(),
        quote_ident(&reference.column)
    ))
    .bind(id)
    .fetch_one(db)
    .await
}

/// Moves target row `from` to `to` with every reference, if the pair is still mismatched, and
/// records the event. Returns whether it moved.
pub async fn rekey(
    db: impl PgExecutor<'_>,
    bound: &BoundMapping,
    references: &[Reference],
    to: Uuid,
    from: Uuid,
    run: RunContext<'_>,
) -> sqlx::Result<bool> {
    sqlx::query_scalar(&statement(bound, references))
        .bind(to)
        .bind(from)
        .bind(run.run_id)
        .bind(run.caller)
        .fetch_one(db)
        .await
}

/// The re-key statement for these references: `$1` the new id, `$2` the old one, `$3` the run,
/// `$4` the caller.
pub fn statement(bound: &BoundMapping, references: &[Reference]) -> String {
    let key = bound.mapping.target.key.quoted();
    let sql = &bound.sql.repair;
    let mut ctes = vec![sql.rekey_moved.clone()];
    for (i, reference) in references.iter().enumerate() {
        let column = quote_ident(&reference.column);
        // A self-reference must not touch the moving row itself: one statement may change a
        // row only once.
        let not_the_row = if reference.self_reference {
            format!(" and {key} <> $2")
        } else {
            String::new()
        };
        ctes.push(format!(
            "ref_{i} as (
    update {table} set {column} = $1
     where {column} = $2{not_the_row} and exists (select 1 from moved)
    returning 1
)",
            table = reference.table_sql(),
        ));
    }
    ctes.push(sql.rekey_audit.clone());
    format!("with {}\nselect count(*) > 0 from moved", ctes.join(",\n"))
}
