//! Whether usersync really sees `auth.users`: the guard every run, the status and readiness
//! pass before they trust what they read.
//!
//! A role that cannot see the source reads it as empty, or as a part of itself, and every
//! profile then looks orphaned: a run with the `delete` policy deleted them all, and
//! `allow_mass_delete` (an answer to "this run deletes a lot, is that right?") let it. Blindness
//! is therefore refused before anything is planned, whatever the overrides: row level security
//! that applies to the role (hosted Supabase enables it on `auth.users` with no policies, so
//! a role without BYPASSRLS sees no row at all), a missing privilege, and, before a run that
//! would delete, a source that reads empty or that shrank by more than the mass-delete share
//! since the last run while the target did not.

use sqlx::PgExecutor;

use crate::repo::access;

/// Why usersync cannot trust what it reads of `auth.users`, with the cause and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unreadable {
    #[error(
        "auth.users does not exist in this database: point DATABASE_URL at the project's database"
    )]
    Missing,
    #[error("role {role} has no USAGE on schema auth, so it cannot read auth.users: connect as a role that has it (on hosted Supabase, postgres; only the platform can grant it to another role)")]
    NoUsage { role: String },
    #[error("role {role} may not SELECT auth.users: run `grant select on auth.users to {role}` as postgres, or connect as postgres")]
    NoSelect { role: String },
    #[error("row level security on auth.users applies to role {role} (no BYPASSRLS, not the owner): it sees none of the users, or only some; connect as a role with BYPASSRLS (on hosted Supabase, postgres; granting BYPASSRLS needs a superuser)")]
    RowSecurity { role: String },
    #[error("auth.users reads empty while the target holds {target_total} rows: refusing to plan deletes from a source that may not be visible; check that DATABASE_URL names the project's database and a role that sees auth.users")]
    Empty { target_total: i64 },
    #[error("auth.users shrank from {before} to {now} rows since the last run, more than the mass-delete share, while the target did not ({target_before} to {target_now}): refusing to plan deletes from a source that may not be fully visible; if those users were really deleted, run once without deleting (`--kind missing --kind stale`) so that the next run compares with today's count")]
    Shrank {
        before: i64,
        now: i64,
        target_before: i64,
        target_now: i64,
    },
}

/// A whole-table read (status, a drift listing) that cannot be trusted, or that failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Unreadable(#[from] Unreadable),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Whether the connecting role sees every row of `auth.users`.
pub async fn check_access(db: impl PgExecutor<'_>) -> sqlx::Result<Result<(), Unreadable>> {
    let Some(access) = access::source_access(db).await? else {
        return Ok(Err(Unreadable::Missing));
    };
    let role = access.role;
    Ok(if !access.usage {
        Err(Unreadable::NoUsage { role })
    } else if !access.select {
        Err(Unreadable::NoSelect { role })
    } else if access.row_security {
        Err(Unreadable::RowSecurity { role })
    } else {
        Ok(())
    })
}

/// Before a run deletes: the source does not read empty while the target has
/// rows, and did not shrink by more than `share` since `last` (the previous plan's source and
/// target totals) while the target did not.
pub fn check_totals(
    source_total: i64,
    target_total: i64,
    last: Option<(i64, i64)>,
    share: f64,
) -> Result<(), Unreadable> {
    if source_total == 0 && target_total > 0 {
        return Err(Unreadable::Empty { target_total });
    }
    if let Some((before, target_before)) = last {
        let keep = 1.0 - share;
        let source_shrank = (source_total as f64) < before as f64 * keep;
        let target_held = target_total as f64 >= target_before as f64 * keep;
        if source_shrank && target_held {
            return Err(Unreadable::Shrank {
                before,
                now: source_total,
                target_before,
                target_now: target_total,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_source_beside_a_full_target_is_blind() {
        assert_eq!(
            check_totals(0, 6, None, 0.05),
            Err(Unreadable::Empty { target_total: 6 })
        );
        assert_eq!(check_totals(0, 0, None, 0.05), Ok(()));
    }

    #[test]
    fn a_source_that_shrank_alone_is_blind_and_one_that_shrank_with_its_target_is_not() {
        assert!(check_totals(900, 1000, Some((1000, 1000)), 0.05).is_err());
        assert_eq!(check_totals(900, 900, Some((1000, 1000)), 0.05), Ok(()));
        assert_eq!(check_totals(990, 1000, Some((1000, 1000)), 0.05), Ok(()));
        assert_eq!(check_totals(1100, 1000, Some((1000, 1000)), 0.05), Ok(()));
    }
}
