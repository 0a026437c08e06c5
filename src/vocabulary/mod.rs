//! The words the audit trail, the API, the metrics and the rendered SQL share: the kinds of
//! drift, the paths a write comes by, the actions `usersync.events` records, and the policies
//! that say what each kind of drift gets. Each is spelled once, here; SQL gets them through
//! `sql()`, so a statement and the code that reads its rows cannot spell an action differently.
//!
//! The four action enums and how they relate live here too, so that no other module maps one
//! onto another by hand: what a sync did (`SyncAction`) is what healing reports
//! (`HealAction::from`); a repair (`policy::Action`, imperative) and a heal each say which
//! audit event (`AuditAction`, past tense) they record (`audit()`); applying the deleted policy
//! yields `HealAction::of_deleted_policy`. The tests below hold the names they share equal.
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
    pub const fn as_str(&self) -> &'static str {
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

/// What a sync did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SyncAction {
    /// The target row did not exist and was inserted.
    Created,
    /// An `always` column differed and was written.
    Updated,
    /// Nothing differed; nothing was written.
    Unchanged,
    /// The user is anonymous and the mapping skips anonymous users.
    Skipped,
}

impl SyncAction {
    /// The audit event the sync recorded: a profile created or updated; none when nothing was
    /// written.
    pub fn audit(self) -> Option<AuditAction> {
        HealAction::from(self).audit()
    }
}

/// A sync is the first thing healing does; what it did is what the heal reports.
impl From<SyncAction> for HealAction {
    fn from(action: SyncAction) -> Self {
        match action {
            SyncAction::Created => HealAction::Created,
            SyncAction::Updated => HealAction::Updated,
            SyncAction::Unchanged => HealAction::Unchanged,
            SyncAction::Skipped => HealAction::Skipped,
        }
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

    /// The drift kind the action repaired; `None` when there was none.
    pub fn drift_kind(self) -> Option<DriftKind> {
        match self {
            HealAction::Created => Some(DriftKind::Missing),
            HealAction::Updated => Some(DriftKind::Stale),
            HealAction::Deleted | HealAction::Reported => Some(DriftKind::Deleted),
            HealAction::Provisioned | HealAction::OrphanReported => Some(DriftKind::Orphaned),
            HealAction::Unchanged | HealAction::Skipped => None,
        }
    }

    /// The audit event the heal recorded, if it wrote or reported anything (an orphan that
    /// is only reported leaves no event: nothing was done to it).
    pub fn audit(self) -> Option<AuditAction> {
        match self {
            HealAction::Created => Some(AuditAction::Created),
            HealAction::Updated => Some(AuditAction::Updated),
            HealAction::Deleted => Some(AuditAction::Deleted),
            HealAction::Reported => Some(AuditAction::Reported),
            HealAction::Provisioned => Some(AuditAction::Provisioned),
            HealAction::Unchanged | HealAction::Skipped | HealAction::OrphanReported => None,
        }
    }

    /// What applying the deleted policy did to one user: nothing to a live user (`gone`
    /// false), else the profile `removed` (the `delete` policy) or the deletion recorded and
    /// the profile kept (the `report` policy, or no profile was left to delete).
    pub fn of_deleted_policy(gone: bool, removed: bool) -> HealAction {
        match (gone, removed) {
            (false, _) => HealAction::Unchanged,
            (true, true) => HealAction::Deleted,
            (true, false) => HealAction::Reported,
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
    use super::policy::Action;
    use super::*;

    const SYNC_ACTIONS: [SyncAction; 4] = [
        SyncAction::Created,
        SyncAction::Updated,
        SyncAction::Unchanged,
        SyncAction::Skipped,
    ];
    const HEAL_ACTIONS: [HealAction; 8] = [
        HealAction::Created,
        HealAction::Updated,
        HealAction::Unchanged,
        HealAction::Skipped,
        HealAction::Deleted,
        HealAction::Reported,
        HealAction::Provisioned,
        HealAction::OrphanReported,
    ];
    const AUDIT_ACTIONS: [AuditAction; 6] = [
        AuditAction::Created,
        AuditAction::Updated,
        AuditAction::Rekeyed,
        AuditAction::Provisioned,
        AuditAction::Deleted,
        AuditAction::Reported,
    ];

    /// The name serde gives a value on the wire.
    fn wire<T: Serialize>(value: T) -> String {
        serde_json::to_value(value)
            .unwrap()
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// `OrphanReported` -> `orphan_reported`: the name sqlx's `rename_all = "snake_case"`
    /// reads back from the database.
    fn snake_case(debug: impl std::fmt::Debug) -> String {
        let mut name = String::new();
        for c in format!("{debug:?}").chars() {
            if c.is_ascii_uppercase() && !name.is_empty() {
                name.push('_');
            }
            name.push(c.to_ascii_lowercase());
        }
        name
    }

    #[test]
    fn every_name_is_a_plain_sql_literal() {
        for kind in DriftKind::ALL {
            assert_eq!(kind.sql(), format!("'{kind}'"));
        }
        assert_eq!(SyncPath::Batch.sql(), "'batch'");
        assert_eq!(AuditAction::Provisioned.sql(), "'provisioned'");
    }

    #[test]
    fn a_sync_heal_and_audit_event_spell_a_shared_action_alike() {
        for sync in SYNC_ACTIONS {
            let heal = HealAction::from(sync);
            assert_eq!(wire(sync), heal.as_str());
            assert_eq!(sync.audit(), heal.audit());
        }
        assert_eq!(wire(SyncAction::Created), AuditAction::Created.as_str());
        assert_eq!(HealAction::Created.as_str(), AuditAction::Created.as_str());
        for heal in HEAL_ACTIONS {
            assert_eq!(wire(heal), heal.as_str());
            if let Some(audit) = heal.audit() {
                assert_eq!(audit.as_str(), heal.as_str(), "{heal:?}");
            }
            if let Some(kind) = heal.drift_kind() {
                assert_eq!(wire(kind), kind.as_str());
            }
        }
    }

    #[test]
    fn the_database_reads_back_the_audit_names_the_code_writes() {
        for audit in AUDIT_ACTIONS {
            assert_eq!(snake_case(audit), audit.as_str());
        }
        for kind in DriftKind::ALL {
            assert_eq!(snake_case(kind), kind.as_str());
            assert_eq!(wire(kind), kind.as_str());
        }
    }

    #[test]
    fn a_repair_records_its_action_in_the_past_tense() {
        use clap::ValueEnum;
        for action in Action::value_variants() {
            match action.audit() {
                Some(audit) => {
                    let suffix = audit.as_str().strip_prefix(action.as_str());
                    assert!(
                        matches!(suffix, Some("d" | "ed")),
                        "{action:?} records {audit:?}"
                    );
                }
                None => assert!(!action.repairs(), "{action:?} records nothing"),
            }
        }
    }

    #[test]
    fn applying_the_deleted_policy_reports_what_it_recorded() {
        assert_eq!(
            HealAction::of_deleted_policy(true, true).audit(),
            Some(AuditAction::Deleted)
        );
        assert_eq!(
            HealAction::of_deleted_policy(true, false).audit(),
            Some(AuditAction::Reported)
        );
        assert_eq!(
            HealAction::of_deleted_policy(false, true),
            HealAction::Unchanged
        );
    }
}
