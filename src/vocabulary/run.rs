//! A reconciliation run as the API, the CLI and `usersync.runs` see it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::vocabulary::policy::Action;
use crate::vocabulary::DriftKind;

/// Where a run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Counting the drift it will repair.
    Planning,
    /// Walking the source in chunks, repairing.
    Running,
    /// Finished (a dry run finishes after planning).
    Succeeded,
    /// Stopped by an error; `error` says which. Chunks already committed stay repaired.
    Failed,
    /// Its process stopped before it finished; the next run picked up the work.
    Abandoned,
    /// Stopped before writing anything: it would delete more than the configured share of the
    /// target. Start it again with `allow_mass_delete` if the plan is right.
    NeedsOverride,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Planning => "planning",
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::Abandoned => "abandoned",
            RunState::NeedsOverride => "needs_override",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [
            RunState::Planning,
            RunState::Running,
            RunState::Succeeded,
            RunState::Failed,
            RunState::Abandoned,
            RunState::NeedsOverride,
        ]
        .into_iter()
        .find(|s| s.as_str() == raw)
    }

    /// Whether the run has stopped for good.
    pub fn is_finished(self) -> bool {
        !matches!(self, RunState::Planning | RunState::Running)
    }
}

/// What a run was asked to do. Missing fields read as their defaults, so that a row written
/// by hand (or by an older version) still reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct RunOptions {
    /// Plan only: count and list, write nothing to the target.
    pub dry_run: bool,
    /// The kinds to plan and repair, in the order runs apply them.
    pub kinds: Vec<DriftKind>,
    /// The most rows to repair; none means all.
    pub limit: Option<u64>,
    /// Let the run delete more than the configured share of the target.
    pub allow_mass_delete: bool,
    /// A repair of this one user (`POST /v1/users/{id}/repair`): the run plans and walks only
    /// the user's own rows, with the same statements as any run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<Uuid>,
    /// The repair to apply to the requested kind instead of the configured policy's (with
    /// `user_id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self::all(false)
    }
}

impl RunOptions {
    /// Every kind, no limit, no override.
    pub fn all(dry_run: bool) -> Self {
        Self {
            dry_run,
            kinds: DriftKind::ALL.to_vec(),
            limit: None,
            allow_mass_delete: false,
            user_id: None,
            action: None,
        }
    }

    /// Sorts and deduplicates `kinds`, so that runs always apply them in one order.
    pub fn normalized(mut self) -> Self {
        self.kinds.sort();
        self.kinds.dedup();
        self
    }
}

/// The plan of one kind: the repair the policy chose and how many rows drifted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PlannedKind {
    pub action: Action,
    pub count: i64,
}

/// One foreign key a re-key moves, and how many rows it moves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MovedReference {
    /// The foreign key constraint.
    pub constraint: String,
    /// The referencing table, schema-qualified.
    pub table: String,
    pub column: String,
    /// Rows that point at the old id.
    pub rows: i64,
}

/// One re-key: the target row `target_id` moves to `source_id`, with its references.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RekeyPlan {
    pub source_id: Uuid,
    pub target_id: Uuid,
    pub references: Vec<MovedReference>,
    /// Why this pair cannot be re-keyed, when it cannot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

/// What a run found before repairing anything.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Plan {
    pub source_total: i64,
    pub target_total: i64,
    /// Per requested kind: the action and the number of drifted rows.
    pub kinds: BTreeMap<DriftKind, PlannedKind>,
    /// Target rows the plan deletes (kinds whose policy is `delete`, bounded by `limit`).
    pub deletes: i64,
    /// The most deletes allowed without `allow_mass_delete`.
    pub max_deletes: i64,
    /// The plan deletes more than allowed and the run did not ask for the override.
    pub needs_override: bool,
    /// The re-keys (policy `rekey`), the first 100.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rekeys: Vec<RekeyPlan>,
}

/// One row a run could not repair, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Failure {
    pub kind: DriftKind,
    pub id: Uuid,
    pub reason: String,
}

/// How far a run got: updated in the same transaction as each chunk's repairs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct Progress {
    /// Chunks committed so far (of the source's pages, then of the target's).
    pub chunks: u64,
    /// Rows walked so far: the source's, then (for orphaned and deleted) the target's.
    pub walked: u64,
    /// Rows repaired, per kind.
    pub repaired: BTreeMap<DriftKind, u64>,
    /// Rows that could not be repaired, per kind (`failures` says why, for the first 100).
    pub failed: BTreeMap<DriftKind, u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<Failure>,
}

/// The most failures a run keeps the reasons of.
pub const MAX_FAILURES: usize = 100;

impl Progress {
    pub fn repaired(&mut self, kind: DriftKind, rows: u64) {
        if rows > 0 {
            *self.repaired.entry(kind).or_default() += rows;
        }
    }

    pub fn failed(&mut self, kind: DriftKind, id: Uuid, reason: String) {
        *self.failed.entry(kind).or_default() += 1;
        if self.failures.len() < MAX_FAILURES {
            self.failures.push(Failure { kind, id, reason });
        }
    }

    /// Adds another chunk's repairs and failures.
    pub fn merge(&mut self, other: Progress) {
        for (kind, rows) in other.repaired {
            self.repaired(kind, rows);
        }
        for (kind, rows) in other.failed {
            *self.failed.entry(kind).or_default() += rows;
        }
        let room = MAX_FAILURES.saturating_sub(self.failures.len());
        self.failures.extend(other.failures.into_iter().take(room));
    }

    pub fn total_repaired(&self) -> u64 {
        self.repaired.values().sum()
    }

    pub fn total_failed(&self) -> u64 {
        self.failed.values().sum()
    }
}

/// A reconciliation run.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Run {
    pub id: Uuid,
    pub state: RunState,
    /// Who started it (`service`, `cli`).
    pub caller: String,
    pub options: RunOptions,
    /// Set once planning is done.
    pub plan: Option<Plan>,
    pub progress: Progress,
    /// Why it failed or needs the override.
    pub error: Option<String>,
    /// The abandoned run whose work this one took over.
    pub resumed_from: Option<Uuid>,
    pub started_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}
