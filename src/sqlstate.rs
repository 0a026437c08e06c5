//! What a database error means to usersync, and how it is told without quoting a value. Pure
//! functions of a `sqlx::Error`, imported by every layer that meets one; it imports nothing of
//! the crate.

/// Whether `error` means "the database is away" rather than "we have a bug": connection-level
/// failures (refused, reset, a proxy that hangs up mid-handshake, no free connection in time),
/// and SQLSTATE classes 08 (connection exception) and 57 (operator intervention: shutdown,
/// restart, cannot connect now). Such a failure is answered 503, and retrying it elsewhere is
/// pointless.
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(e) => e
            .code()
            .is_some_and(|code| code.starts_with("08") || code.starts_with("57")),
        _ => false,
    }
}

/// Whether the database refused a statement because of a row's data (SQLSTATE class 22, data
/// exception, or 23, integrity constraint violation): without that row it would have gone
/// through, so a set-based write may be split to find the row.
pub fn is_refused_by_data(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code.starts_with("22") || code.starts_with("23"))
}

/// A database error as usersync records and logs it (run errors, failures, dead letters, log
/// lines). A data exception's message (SQLSTATE class 22) quotes the value at fault, which may
/// be what a user wrote in their own metadata: only its SQLSTATE is kept. Other messages name
/// objects (a constraint, a column, a privilege), never values.
pub fn describe(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(e) => match e.code() {
            Some(code) if code.starts_with("22") => {
                format!("a value cannot be stored (SQLSTATE {code})")
            }
            _ => e.message().to_owned(),
        },
        other => other.to_string(),
    }
}
