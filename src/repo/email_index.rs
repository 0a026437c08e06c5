//! The index that makes every per-user email lookup on the target an index probe.
//!
//! Sync-one, the triggers, healing and the webhook each ask "does a profile without an auth user
//! hold this user's email?" (the `mismatched` kind), as `lower(email) = lower($email)` on the
//! target. Without an index on that expression the question reads the whole target, once per
//! sign-up: at 100,000 profiles a sign-up through the trigger ran at 1% of its bare rate. A
//! project's table rarely has that index, so usersync makes its own, named as usersync's, when
//! the target has no equivalent one: `usersync migrate` and `usersync triggers install` build it
//! `concurrently` (writes to the target go on while it builds), and `usersync doctor` reports it
//! missing.

use sqlx::{PgExecutor, PgPool};

use crate::compiler::mapping::Mapping;
use crate::compiler::render::email_index::{create_sql, index_name};

/// What became of the email index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmailIndex {
    /// The mapping has no email column: nothing to look up.
    NotNeeded,
    /// The target already has an index on `lower(email)` (its own, or usersync's).
    Present(String),
    /// usersync built it now.
    Built(String),
}

/// Whether the target has a valid index on `lower(email)`, and its name.
pub async fn find(db: impl PgExecutor<'_>, mapping: &Mapping) -> sqlx::Result<Option<String>> {
    let Some(email) = mapping.email_column() else {
        return Ok(None);
    };
    sqlx::query_scalar(
        "select ic.relname::text
           from pg_index i
           join pg_class ic on ic.oid = i.indexrelid
           join pg_class c on c.oid = i.indrelid
           join pg_namespace n on n.oid = c.relnamespace
           join pg_attribute a on a.attrelid = i.indrelid and a.attname = $3
          where n.nspname = $1 and c.relname = $2 and i.indisvalid and i.indnatts = 1
            and i.indpred is null
            and pg_get_expr(i.indexprs, i.indrelid) in (
                'lower(' || quote_ident(a.attname) || ')',
                'lower((' || quote_ident(a.attname) || ')::text)')
          order by ic.relname
          limit 1",
    )
    .bind(mapping.target.schema.as_str())
    .bind(mapping.target.table.as_str())
    .bind(email.as_str())
    .fetch_optional(db)
    .await
}

/// Builds usersync's index unless the target has an equivalent one. A build that failed
/// before leaves an invalid index behind, which is dropped and built again.
pub async fn ensure(db: &PgPool, mapping: &Mapping) -> sqlx::Result<EmailIndex> {
    let Some(create) = create_sql(mapping, true) else {
        return Ok(EmailIndex::NotNeeded);
    };
    if let Some(name) = find(db, mapping).await? {
        return Ok(EmailIndex::Present(name));
    }
    let name = index_name(mapping);
    // `concurrently` cannot run inside a transaction: each statement on its own.
    let mut conn = db.acquire().await?;
    sqlx::raw_sql(&format!(
        "drop index concurrently if exists {}.{}",
        mapping.target.schema.quoted(),
        name
    ))
    .execute(&mut *conn)
    .await?;
    sqlx::raw_sql(&create).execute(&mut *conn).await?;
    Ok(EmailIndex::Built(name))
}
