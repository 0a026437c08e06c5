-- A reconciliation run records its set-based repairs one event row per chunk, kind and action,
-- instead of one row per repaired user.
--
-- At a million repairs, a row per repair was as much work as the repairs themselves: a second
-- million-row insert, each row wider than the profile it audits, into a table with three
-- indexes (README, "Benchmarks"). A chunk's row holds the same facts for every user it
-- repaired: `user_ids` lists them, and `before` and `after` are JSON arrays of their mapped
-- columns in the same order (null when the action has no such image: a create has no before,
-- a delete no after). `first_id` and `last_id` bound the chunk's id range, so that "was this
-- id ever repaired by a run" finds the few rows whose range holds it through an index.
--
-- Single-user paths (sync-one, triggers, healing, hooks, re-keys, provisioning) keep writing
-- one row per repair with `user_id` set. `usersync.repairs` reads both as one row per repair.
alter table usersync.events
    alter column user_id drop not null,
    add column user_ids uuid[],
    add column first_id uuid,
    add column last_id uuid,
    add constraint events_one_user_or_a_chunk check (
        (user_id is not null and user_ids is null and first_id is null and last_id is null)
        or (user_id is null and user_ids is not null and first_id is not null
            and last_id is not null and run_id is not null)
    ) not valid;
-- `not valid`: every existing row has its `user_id` and none of the new columns, so there is
-- nothing to check, and checking would hold this migration's exclusive lock on the audit log
-- (and with it every sign-up's trigger) for a scan of the whole table. New rows are checked.

create index events_chunk_range_idx on usersync.events (first_id, last_id)
    where user_ids is not null;

-- Chunk arrays are written once and read rarely: lz4 where the server has it (PostgreSQL 14+
-- built with lz4, as Supabase's is) compresses them at a fraction of pglz's cost.
do $$
begin
    alter table usersync.events alter column after set compression lz4;
    alter table usersync.events alter column before set compression lz4;
exception when feature_not_supported or invalid_parameter_value then
    null;
end
$$;

-- Every repair, one row each, whichever way it was recorded: read the audit trail here.
-- `event_id` is the row in `usersync.events`, `ordinal` the repair's place in a chunk's row.
create view usersync.repairs as
select e.id as event_id, 1::bigint as ordinal, e.run_id, e.user_id, e.caller, e.path,
       e.kind, e.action, e.before, e.after, e.at
  from usersync.events e
 where e.user_ids is null
union all
select e.id, r.ordinal, e.run_id, r.user_id, e.caller, e.path,
       e.kind, e.action, r.before, r.after, e.at
  from usersync.events e
 cross join lateral rows from (
           unnest(e.user_ids),
           jsonb_array_elements(e.before),
           jsonb_array_elements(e.after)
       ) with ordinality as r (user_id, before, after, ordinal)
 where e.user_ids is not null;
