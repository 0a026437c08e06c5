//! What a reconciliation run does about each kind of drift.
//!
//! Only `missing` and `stale` are repaired by default: both write what `auth.users` already
//! says. Everything that destroys or merges data (`delete`, `rekey`) or writes to Supabase Auth
//! (`provision`) has to be chosen by the operator, and deletes are further bounded by
//! `max_delete_share` (the mass-delete guard).

use serde::{Deserialize, Serialize};

use crate::vocabulary::{AuditAction, DriftKind};

/// What to do about a `missing` user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum MissingPolicy {
    /// Insert the mapped row.
    #[default]
    Create,
    /// Count and list it; change nothing.
    Report,
}

/// What to do about a `stale` row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum StalePolicy {
    /// Write the `always` columns that differ.
    #[default]
    Update,
    /// Count and list it; change nothing.
    Report,
}

/// What to do about the same person under two ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum MismatchedPolicy {
    /// Count and list it; change nothing.
    #[default]
    Report,
    /// Move the target row, and every foreign key pointing at it, to the source id.
    Rekey,
}

/// What to do about a target row with no auth user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OrphanedPolicy {
    /// Count and list it; change nothing.
    #[default]
    Report,
    /// Delete the target row (bounded by the mass-delete guard).
    Delete,
    /// Create the missing auth user through the Supabase Auth admin API.
    Provision,
}

/// What to do about the target row of a deleted auth user, hard (the row is gone; the trigger
/// path sees it) or soft (`deleted_at` is set). One setting, `USERSYNC_POLICY_DELETED`, for
/// runs, triggers and the webhook alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum DeletedPolicy {
    /// Keep the target row (it may hold data the app must keep) and record a `deleted` event,
    /// so that the deletion shows as drift and a later run knows it was deliberate.
    #[default]
    Report,
    /// Delete the target row (runs: bounded by the mass-delete guard), and record that it did.
    Delete,
}

impl DeletedPolicy {
    /// The setting's value, as `USERSYNC_POLICY_DELETED` spells it.
    pub fn as_str(&self) -> &'static str {
        match self {
            DeletedPolicy::Report => "report",
            DeletedPolicy::Delete => "delete",
        }
    }
}

/// The repair a run applies to one kind, as runs report it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Create,
    Update,
    Rekey,
    Delete,
    Provision,
    Report,
}

impl Action {
    /// Whether this repair is one for `kind`: `create` a missing profile, `update` a stale
    /// one, `rekey` a mismatched pair, `provision` or `delete` an orphan, `delete` a deleted
    /// user's profile.
    pub fn fits(self, kind: DriftKind) -> bool {
        matches!(
            (kind, self),
            (DriftKind::Missing, Action::Create)
                | (DriftKind::Stale, Action::Update)
                | (DriftKind::Mismatched, Action::Rekey)
                | (DriftKind::Orphaned, Action::Provision | Action::Delete)
                | (DriftKind::Deleted, Action::Delete)
        )
    }

    /// The action's name, as the API, the CLI and the runs' plans spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Rekey => "rekey",
            Action::Delete => "delete",
            Action::Provision => "provision",
            Action::Report => "report",
        }
    }

    /// The audit event the repair records for each row it repairs; a `report` records none.
    pub fn audit(self) -> Option<AuditAction> {
        match self {
            Action::Create => Some(AuditAction::Created),
            Action::Update => Some(AuditAction::Updated),
            Action::Rekey => Some(AuditAction::Rekeyed),
            Action::Delete => Some(AuditAction::Deleted),
            Action::Provision => Some(AuditAction::Provisioned),
            Action::Report => None,
        }
    }

    /// Whether the repair writes anything (a `report` does not).
    pub fn repairs(self) -> bool {
        self != Action::Report
    }
}

/// The policy for every kind, and the mass-delete guard's bound.
#[derive(Debug, Clone, Copy)]
pub struct Policies {
    pub missing: MissingPolicy,
    pub stale: StalePolicy,
    pub mismatched: MismatchedPolicy,
    pub orphaned: OrphanedPolicy,
    pub deleted: DeletedPolicy,
    /// The largest share of the target (0..=1) a run may delete without an explicit override.
    pub max_delete_share: f64,
}

impl Default for Policies {
    fn default() -> Self {
        Self {
            missing: MissingPolicy::default(),
            stale: StalePolicy::default(),
            mismatched: MismatchedPolicy::default(),
            orphaned: OrphanedPolicy::default(),
            deleted: DeletedPolicy::default(),
            max_delete_share: 0.05,
        }
    }
}

impl Policies {
    /// The repair this configuration applies to `kind`.
    pub fn action(&self, kind: DriftKind) -> Action {
        match kind {
            DriftKind::Missing => match self.missing {
                MissingPolicy::Create => Action::Create,
                MissingPolicy::Report => Action::Report,
            },
            DriftKind::Stale => match self.stale {
                StalePolicy::Update => Action::Update,
                StalePolicy::Report => Action::Report,
            },
            DriftKind::Mismatched => match self.mismatched {
                MismatchedPolicy::Report => Action::Report,
                MismatchedPolicy::Rekey => Action::Rekey,
            },
            DriftKind::Orphaned => match self.orphaned {
                OrphanedPolicy::Report => Action::Report,
                OrphanedPolicy::Delete => Action::Delete,
                OrphanedPolicy::Provision => Action::Provision,
            },
            DriftKind::Deleted => match self.deleted {
                DeletedPolicy::Report => Action::Report,
                DeletedPolicy::Delete => Action::Delete,
            },
        }
    }

    /// Whether any policy deletes profiles (so the role needs DELETE on the target).
    pub fn deletes(&self) -> bool {
        self.orphaned == OrphanedPolicy::Delete || self.deleted == DeletedPolicy::Delete
    }

    /// The most rows a run may delete from a target of `target_total` rows without the
    /// override.
    pub fn max_deletes(&self, target_total: i64) -> i64 {
        (self.max_delete_share * target_total as f64).floor() as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_repair_only_what_the_source_already_says() {
        let p = Policies::default();
        let actions: Vec<Action> = DriftKind::ALL.iter().map(|k| p.action(*k)).collect();
        assert_eq!(
            actions,
            [
                Action::Create,
                Action::Update,
                Action::Report,
                Action::Report,
                Action::Report
            ]
        );
    }

    #[test]
    fn the_delete_bound_rounds_down() {
        let p = Policies::default();
        assert_eq!(p.max_deletes(100), 5);
        assert_eq!(p.max_deletes(19), 0);
        assert_eq!(p.max_deletes(0), 0);
    }

    #[test]
    fn an_actions_name_is_its_wire_name() {
        use clap::ValueEnum;
        for action in Action::value_variants() {
            assert_eq!(serde_json::to_value(action).unwrap(), action.as_str());
        }
    }
}
