//! One user's audit trail: the events that name them alone, and the chunk events of runs that
//! repaired them among others (`usersync.repairs` unpacks those).

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

/// One page of a user's events, newest first: `$1` user id, `$2` only events older than this
/// event (null: from the newest), `$3` page size. Newest by `at`, then id: event ids come from a
/// sequence each session caches a thousand of, so they follow time only within a session. The
/// user's events are found first, through the per-user index and the chunk span index, so that
/// `usersync.repairs` unpacks only the page's chunk rows.
pub const USER_EVENTS: &str = "\
with mine as materialized (
    select e.id, e.at from usersync.events e where e.user_id = $1
    union all
    select e.id, e.at from usersync.events e
     where e.user_ids is not null
       and usersync.id_span(e.first_id, e.last_id, '[]') @> $1::uuid
       and $1 = any(e.user_ids)
),
page as materialized (
    select m.id, m.at from mine m
     where $2::bigint is null
        or (m.at, m.id) < (select c.at, c.id from usersync.events c where c.id = $2)
     order by m.at desc, m.id desc
     limit $3
)
select r.event_id, r.run_id, r.caller, r.path, r.kind, r.action, r.before, r.after, r.at
  from usersync.repairs r
 where r.event_id = any(array(select id from page)) and r.user_id = $1
 order by r.at desc, r.event_id desc";

/// One repair or report usersync made to one user, as the audit recorded it.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct UserEvent {
    /// The event's id: pass the last one of a page as `before` for the next page.
    pub event_id: i64,
    /// The run that made it, if a run did.
    pub run_id: Option<Uuid>,
    /// Who asked: a user id, `service`, `trigger`, `healing`...
    pub caller: String,
    /// `call`, `batch`, `trigger`, `healing` or `hook`.
    pub path: String,
    /// The drift kind repaired or reported.
    pub kind: String,
    /// What was done: `created`, `updated`, `deleted`, `reported`, `rekeyed`...
    pub action: String,
    /// The mapped columns before, when a row existed.
    #[schema(value_type = Option<Object>)]
    pub before: Option<serde_json::Value>,
    /// The mapped columns after, when a row remains.
    #[schema(value_type = Option<Object>)]
    pub after: Option<serde_json::Value>,
    pub at: DateTime<Utc>,
}

/// Up to `limit` of the user's events older than event `before` (or the newest), newest first.
pub async fn of_user(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
    before: Option<i64>,
    limit: i64,
) -> sqlx::Result<Vec<UserEvent>> {
    sqlx::query_as(USER_EVENTS)
        .bind(user_id)
        .bind(before)
        .bind(limit)
        .fetch_all(db)
        .await
}
