//! What `usersync.events` records of a write: one row per user for a single sync, one row per
//! slice of a chunk for a run, and the lookups that ask whether usersync ever wrote an id.

use super::*;

/// Some event records a repair of `id` (a uuid expression): a single user's row that
/// `user_filter` accepts, found by its `user_id` index, or a run's chunk row that
/// `chunk_filter` accepts, found by the GiST index on its id span and then by the id in its
/// list. Both are index lookups whatever the size of the audit log (see the migration
/// `index_driven_audit`).
pub(super) fn recorded_by(id: &str, user_filter: &str, chunk_filter: &str) -> String {
    format!(
        "(exists (select 1 from usersync.events e where e.user_id = {id} and {user_filter}) \
         or exists (select 1 from usersync.events e where e.user_ids is not null \
         and usersync.id_span(e.first_id, e.last_id, '[]') @> {id} and {id} = any(e.user_ids) \
         and {chunk_filter}))"
    )
}

/// The audit trail knows `id` (a uuid expression) as an auth user's: usersync wrote a row from
/// that user, or recorded the user's deletion.
pub(super) fn known_id(id: &str) -> String {
    let actions: Vec<String> = AuditAction::SOURCE_WRITES.iter().map(|a| a.sql()).collect();
    recorded(
        id,
        &format!(
            "(e.action in ({}) or e.kind = {})",
            actions.join(", "),
            DriftKind::Deleted.sql()
        ),
    )
}

/// `recorded_by` with one filter for both kinds of row.
pub(super) fn recorded(id: &str, filter: &str) -> String {
    recorded_by(id, filter, filter)
}

/// The audit of one chunk's repairs, `rows` (`id`, `before`, `after`): one event row per
/// 1/256 of the id space (the ids' first byte), each with its ids and the images the action
/// has, aggregated in one order, each image an array of the mapped columns' values named once
/// by `names` (see the migrations `run_audit_per_chunk` and `chunk_images_as_arrays`); none
/// when nothing was repaired. A chunk is a range of the table's pages, so its ids are spread
/// over the whole id space: bucketing keeps each row's id span (`first_id .. last_id`) to its
/// 256th, and so "did a run repair this id" reads the few rows whose span holds it.
pub(super) fn chunk_audit(
    kind: DriftKind,
    action: AuditAction,
    rows: &str,
    images: Images,
    names: &str,
) -> String {
    let image = |has: bool, column: &str| match has {
        true => format!("jsonb_agg({column})"),
        false => "null::jsonb".to_owned(),
    };
    format!(
        "insert into usersync.events
       (run_id, user_ids, first_id, last_id, caller, path, kind, action, image_columns, before,
        after)
select $3, array_agg(id), (b || '000000-0000-0000-0000-000000000000')::uuid,
       (b || 'ffffff-ffff-ffff-ffff-ffffffffffff')::uuid, $4, {}, {}, {}, {names}, {}, {}
  from (select r.*, left(r.id::text, 2) as b from {rows} r) bucketed
 group by b",
        SyncPath::Batch.sql(),
        kind.sql(),
        action.sql(),
        image(images.before, "before"),
        image(images.after, "after"),
    )
}

/// Which images of the mapped columns a repair has, for its audit.
#[derive(Debug, Clone, Copy)]
pub(super) struct Images {
    before: bool,
    after: bool,
}

impl Images {
    pub(super) const AFTER: Images = Images {
        before: false,
        after: true,
    };
    pub(super) const BEFORE: Images = Images {
        before: true,
        after: false,
    };
    pub(super) const BOTH: Images = Images {
        before: true,
        after: true,
    };
}
