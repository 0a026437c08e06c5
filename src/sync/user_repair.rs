//! Repair one user: the per-user tool admins used to keep as SQL functions
//! (`fix_user_id_mismatch(email)`, `sync_user_to_auth(user_id)`), as a reconciliation run of
//! one user. The run plans from the user's own drift and walks only the user's own rows, so the
//! repair is made by the same statements, under the same guards (a source the role cannot fully
//! see, an ambiguous email, a composite foreign key) and into the same audit as any run, and
//! shows in the list of runs.

use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::compiler::bind::BoundMapping;
use crate::repo::rekey;
use crate::repo::repair::{self, Side};
use crate::repo::users::{self, DriftRow};
use crate::sync::engine::SyncError;
use crate::sync::reconcile::{self, Reconciler, StartError};
use crate::sync::source::{self, Unreadable};
use crate::vocabulary::policy::Action;
use crate::vocabulary::run::{Run, RunOptions, RunState};
use crate::vocabulary::DriftKind;

/// What a repair of one user did, or would do.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RepairOutcome {
    /// The user repaired: the auth user's id (for a mismatched pair, also when the request
    /// named the profile's).
    pub user_id: Uuid,
    pub kind: DriftKind,
    pub action: Action,
    pub dry_run: bool,
    /// The repair was made (never on a dry run).
    pub repaired: bool,
    /// The run of this one user: its plan (with the re-key's moves, for `rekey`) and progress.
    pub run: Run,
}

/// Why a user was not repaired.
#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    #[error("no auth user and no profile has this id (or email)")]
    UserNotFound,
    #[error("the user is in sync: there is nothing to repair")]
    InSync,
    #[error("the configured policy for {} only reports it: name the repair in `action`", .0.as_str())]
    ReportOnly(DriftKind),
    #[error("`{}` is not a repair for {} drift", .action.as_str(), .kind.as_str())]
    DoesNotFit { kind: DriftKind, action: Action },
    #[error("{0}")]
    AmbiguousEmail(String),
    #[error("the profile cannot be re-keyed: {0}")]
    RekeyRefused(String),
    #[error("provisioning needs the Supabase admin API: set USERSYNC_SUPABASE_URL and USERSYNC_SUPABASE_SERVICE_KEY")]
    NoAdminApi,
    #[error("{0}")]
    Failed(String),
    #[error(transparent)]
    Unreadable(#[from] Unreadable),
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(transparent)]
    Sync(SyncError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl From<SyncError> for RepairError {
    fn from(error: SyncError) -> Self {
        match error {
            SyncError::UserNotFound => RepairError::UserNotFound,
            SyncError::Database(e) => RepairError::Database(e),
            other => RepairError::Sync(other),
        }
    }
}

/// Applies `action` (the configured policy's when `None`) to the drift of `id`: an auth user's
/// id, or a profile's key (an orphan, a deleted user's profile, or the profile of a mismatched
/// pair, which is repaired from its auth user).
pub async fn repair_user(
    reconciler: &Reconciler,
    db: &PgPool,
    bound: &BoundMapping,
    id: Uuid,
    action: Option<Action>,
    dry_run: bool,
    caller: &str,
) -> Result<RepairOutcome, RepairError> {
    source::check_access(db).await??;
    let drift = users::drift_one(db, bound, id).await?;
    if !drift.in_source && !drift.in_target {
        return Err(RepairError::UserNotFound);
    }
    let Some(kind) = DriftKind::ALL.into_iter().find(|k| drift.has(*k)) else {
        return Err(RepairError::InSync);
    };
    let action = action.unwrap_or_else(|| reconciler.policies().action(kind));
    if action == Action::Report {
        return Err(RepairError::ReportOnly(kind));
    }
    if !action.fits(kind) {
        return Err(RepairError::DoesNotFit { kind, action });
    }
    let user_id = if kind == DriftKind::Mismatched && !drift.in_source {
        lonely_user(db, bound, id).await?
    } else {
        id
    };
    match action {
        Action::Provision if reconciler.admin().is_none() => return Err(RepairError::NoAdminApi),
        Action::Rekey => check_rekey(db, bound, user_id).await?,
        _ => {}
    }
    let options = RunOptions {
        dry_run,
        kinds: vec![kind],
        limit: None,
        // The mass-delete bound is for runs that find their deletes; this one was named.
        allow_mass_delete: true,
        user_id: Some(user_id),
        action: Some(action),
    };
    let active = reconciler.start(caller, options).await?;
    let run = reconciler.execute(active, &|_| {}).await;
    if run.state != RunState::Succeeded {
        return Err(RepairError::Failed(run.error.clone().unwrap_or_else(
            || format!("the repair's run ended {}", run.state.as_str()),
        )));
    }
    let repaired = run.progress.repaired.get(&kind).copied().unwrap_or(0) > 0;
    if !dry_run && !repaired {
        let reason = run
            .progress
            .failures
            .first()
            .map(|f| f.reason.clone())
            .unwrap_or_else(|| {
                "the user changed while the repair ran, and it no longer applies: look again"
                    .to_owned()
            });
        return Err(RepairError::Failed(reason));
    }
    Ok(RepairOutcome {
        user_id,
        kind,
        action,
        dry_run,
        repaired,
        run,
    })
}

/// The id an email names: the auth user who holds it, or, when no auth user does, the one
/// profile that does.
pub async fn user_by_email(
    db: &PgPool,
    bound: &BoundMapping,
    email: &str,
) -> Result<Uuid, RepairError> {
    let (mut users, mut profiles) = (Vec::new(), Vec::new());
    for (id, row) in holders(db, bound, email).await? {
        if row.in_source {
            users.push(id);
        } else if row.in_target {
            profiles.push(id);
        }
    }
    match (users.as_slice(), profiles.as_slice()) {
        ([one], _) | ([], [one]) => Ok(*one),
        ([], []) => Err(RepairError::UserNotFound),
        ([], many) => Err(RepairError::AmbiguousEmail(format!(
            "ambiguous: {} profiles and no auth user hold this email; name one by --user",
            many.len()
        ))),
        (many, _) => Err(RepairError::AmbiguousEmail(format!(
            "ambiguous: {} auth users hold this email (SSO users may share one); name one by --user",
            many.len()
        ))),
    }
}

/// The ids whose auth user or profile holds `email`, each with its drift.
async fn holders(
    db: &PgPool,
    bound: &BoundMapping,
    email: &str,
) -> Result<Vec<(Uuid, DriftRow)>, RepairError> {
    let mut found = Vec::new();
    for id in users::find_by_email(db, bound, email).await? {
        found.push((id, users::drift_one(db, bound, id).await?));
    }
    Ok(found)
}

/// The auth user of the mismatched pair whose profile is `id`: the one lonely auth user holding
/// the profile's email.
async fn lonely_user(db: &PgPool, bound: &BoundMapping, id: Uuid) -> Result<Uuid, RepairError> {
    let sides = crate::sync::inspect::sides(db, bound, id).await?;
    let email = bound
        .mapping
        .email_column()
        .and_then(|column| sides.profile.as_ref()?.get(column.as_str())?.as_str())
        .ok_or_else(|| RepairError::Failed("the profile has no email to pair it by".into()))?;
    let users: Vec<Uuid> = holders(db, bound, email)
        .await?
        .into_iter()
        .filter(|(_, row)| row.in_source && row.mismatched)
        .map(|(id, _)| id)
        .collect();
    match users.as_slice() {
        [one] => Ok(*one),
        _ => Err(RepairError::AmbiguousEmail(format!(
            "ambiguous: {} auth users without a profile hold this profile's email",
            users.len()
        ))),
    }
}

/// The refusals a run would record for this pair, said up front with their own codes.
async fn check_rekey(db: &PgPool, bound: &BoundMapping, user_id: Uuid) -> Result<(), RepairError> {
    if let Err(reason) = rekey::references(db, bound).await? {
        return Err(RepairError::RekeyRefused(reason));
    }
    let Some(place) = repair::place(db, bound, Side::Source, user_id).await? else {
        return Ok(());
    };
    for pair in repair::pairs(db, bound, place).await? {
        if let Some(reason) = reconcile::ambiguity(&pair) {
            return Err(RepairError::AmbiguousEmail(reason));
        }
    }
    Ok(())
}
