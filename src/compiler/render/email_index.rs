//! usersync's own index on the target's `lower(email)`, which keeps every per-user lookup by
//! email an index probe (`repo::email_index` finds and builds it).

use crate::compiler::mapping::Mapping;

/// The name of usersync's index on the target (at most 63 bytes, Postgres's limit).
pub fn index_name(mapping: &Mapping) -> String {
    let table: String = mapping.target.table.as_str().chars().take(38).collect();
    format!("usersync_{table}_email_lower_idx")
}

/// The statement that builds usersync's index, `concurrently` or not.
pub fn create_sql(mapping: &Mapping, concurrently: bool) -> Option<String> {
    let email = mapping.email_column()?;
    Some(format!(
        "create index {}if not exists {} on {} (lower({}))",
        if concurrently { "concurrently " } else { "" },
        index_name(mapping),
        mapping.target.qualified(),
        email.quoted()
    ))
}
