//! The repair policies: what usersync does about a change it must not simply copy.

use serde::Serialize;

/// What happens to a user's target row when the user is deleted in `auth.users`, hard (the row
/// is gone) or soft (`deleted_at` is set). `USERSYNC_POLICY_DELETED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum DeletedPolicy {
    /// Keep the target row (it may hold data the app must keep) and record a `deleted` event,
    /// so that the deletion shows as drift and a later run knows it was deliberate.
    #[default]
    Report,
    /// Delete the target row, and record that it did.
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
