//! The words the audit trail, the API, the metrics and the rendered SQL share: the kinds of
//! drift, the paths a write comes by, the actions `usersync.events` records, and the policies
//! that say what each kind of drift gets. Each is spelled once, here; SQL gets them through
//! `sql()`, so a statement and the code that reads its rows cannot spell an action differently.
//! It imports nothing else of the crate, so every layer may use it.

use serde::{Deserialize, Serialize};

/// What a run or a signal does about each kind of drift.
pub mod policy;
/// A reconciliation run's record: its options, plan, progress and state.
pub mod run;

/// A kind of drift between `auth.users` (source) and the target table.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    clap::ValueEnum,
    sqlx::Type,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum DriftKind {
    /// A live source row with no target row of its id (and not mismatched).
    Missing,
    /// Source and target share the id, and an `always` column differs.
    Stale,
    /// The same person under two ids: a target row holds a live user's email under an id that
    /// no source row has.
    Mismatched,
    /// A target row whose id is in no source row (and that is not mismatched).
    Orphaned,
    /// A target row whose auth user was deleted: soft-deleted (`deleted_at` set), or gone from
    /// `auth.users` after usersync had synced it (its audit trail says the user existed).
    Deleted,
}

impl DriftKind {
    pub const ALL: [DriftKind; 5] = [
        DriftKind::Missing,
        DriftKind::Stale,
        DriftKind::Mismatched,
        DriftKind::Orphaned,
        DriftKind::Deleted,
    ];

    /// The name used on the wire, in the audit log and in SQL.
    pub fn as_str(self) -> &'static str {
        match self {
            DriftKind::Missing => "missing",
            DriftKind::Stale => "stale",
            DriftKind::Mismatched => "mismatched",
            DriftKind::Orphaned => "orphaned",
            DriftKind::Deleted => "deleted",
        }
    }
}

impl std::fmt::Display for DriftKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl DriftKind {
    /// The name as a SQL literal.
    pub fn sql(self) -> String {
        quoted(self.as_str())
    }
}

/// Which path wrote, as the audit log (`usersync.events.path`) records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPath {
    /// `POST /v1/users/{id}/sync`: the frontend or the OAuth callback.
    Call,
    /// A reconciliation run.
    Batch,
    /// The trigger on `auth.users`, inside the database.
    Trigger,
    /// The healing loop: a dead letter retried, or the periodic reconciliation.
    Healing,
    /// `POST /v1/hooks/database`: a Supabase Database Webhook.
    Hook,
}

impl SyncPath {
    /// The value of `usersync.events.path` (its check constraint lists them).
    pub fn as_str(&self) -> &'static str {
        match self {
            SyncPath::Call => "call",
            SyncPath::Batch => "batch",
            SyncPath::Trigger => "trigger",
            SyncPath::Healing => "healing",
            SyncPath::Hook => "hook",
        }
    }
}

impl SyncPath {
    /// The name as a SQL literal.
    pub fn sql(self) -> String {
        quoted(self.as_str())
    }
}

/// What healing one user did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealAction {
    /// The target row was missing and was inserted.
    Created,
    /// An `always` column differed and was written.
    Updated,
    /// Nothing differed; nothing was written.
    Unchanged,
    /// The user is anonymous and the mapping skips anonymous users.
    Skipped,
    /// The user is deleted and the `delete` policy removed the target row.
    Deleted,
    /// The user is deleted and the deletion is recorded (the `report` policy, or no target row
    /// was left to delete).
    Reported,
    /// The profile had no auth user, and got one through the admin API (the `provision`
    /// policy for orphaned profiles).
    Provisioned,
    /// The profile has no auth user, and the orphaned policy only reports it.
    OrphanReported,
}

impl HealAction {
    /// The action's name, as the API and the metrics spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            HealAction::Created => "created",
            HealAction::Updated => "updated",
            HealAction::Unchanged => "unchanged",
            HealAction::Skipped => "skipped",
            HealAction::Deleted => "deleted",
            HealAction::Reported => "reported",
            HealAction::Provisioned => "provisioned",
            HealAction::OrphanReported => "orphan_reported",
        }
    }

    /// The drift kind the action repaired, as metrics label it.
    pub fn drift_kind(self) -> &'static str {
        match self {
            HealAction::Created => "missing",
            HealAction::Updated => "stale",
            HealAction::Deleted | HealAction::Reported => "deleted",
            HealAction::Provisioned | HealAction::OrphanReported => "orphaned",
            HealAction::Unchanged | HealAction::Skipped => "none",
        }
    }
}

/// What an audit event (`usersync.events.action`) says was done to a target row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum AuditAction {
    /// A profile was inserted from its auth user.
    Created,
    /// A profile's `always` columns were written from its auth user.
    Updated,
    /// A profile was moved to its auth user's id (a mismatched pair).
    Rekeyed,
    /// An orphaned profile got an auth user through the admin API.
    Provisioned,
    /// A deleted user's profile was removed (the `delete` policy).
    Deleted,
    /// A deleted user's profile was recorded and kept (the `report` policy).
    Reported,
}

impl AuditAction {
    /// Actions that mean "usersync wrote this row from an `auth.users` row": a target row with
    /// such a history had an auth user once, so if that user is gone now it was deleted.
    pub const SOURCE_WRITES: [AuditAction; 4] = [
        AuditAction::Created,
        AuditAction::Updated,
        AuditAction::Rekeyed,
        AuditAction::Provisioned,
    ];

    /// The name in the audit log and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::Created => "created",
            AuditAction::Updated => "updated",
            AuditAction::Rekeyed => "rekeyed",
            AuditAction::Provisioned => "provisioned",
            AuditAction::Deleted => "deleted",
            AuditAction::Reported => "reported",
        }
    }

    /// The name as a SQL literal.
    pub fn sql(self) -> String {
        quoted(self.as_str())
    }
}

/// A name of this vocabulary as a SQL string literal: each is a lower-case ASCII word, so
/// quoting needs no escaping.
fn quoted(name: &'static str) -> String {
    debug_assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
    format!("'{name}'")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_a_plain_sql_literal() {
        for kind in DriftKind::ALL {
            assert_eq!(kind.sql(), format!("'{kind}'"));
        }
        assert_eq!(SyncPath::Batch.sql(), "'batch'");
        assert_eq!(AuditAction::Provisioned.sql(), "'provisioned'");
    }
}
