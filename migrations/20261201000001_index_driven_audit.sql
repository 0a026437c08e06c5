-- Every per-user question to the audit log is an index lookup, at any size of the log.
--
-- "Did usersync ever write this id from an auth user?" and "was this deletion reported
-- already?" are asked for one user by sync-one, the triggers, healing and the webhook. A run's
-- chunk row lists its users in `user_ids` and bounds them by `first_id .. last_id`; the btree on
-- `(first_id, last_id)` could only narrow `first_id <= id`, and so read about half of every
-- chunk row's entries per question. A GiST index on the span finds the few chunk rows whose
-- span holds the id, and only their lists are read.
create type usersync.id_span as range (subtype = uuid);

create index events_chunk_span_idx on usersync.events
    using gist (usersync.id_span(first_id, last_id, '[]'))
    where user_ids is not null;
drop index usersync.events_chunk_range_idx;

-- A soft delete is one deletion however often the trigger fires for it: Supabase Auth's own
-- soft delete updates the row twice in one transaction, and takes `deleted_at` from its own
-- clock, after the transaction (and so the event's `at`) began. A deleted event keeps the
-- `deleted_at` it reported, and a deletion is reported once per value: a soft delete, a
-- restore and a second soft delete are two events.
alter table usersync.events add column source_deleted_at timestamptz;
