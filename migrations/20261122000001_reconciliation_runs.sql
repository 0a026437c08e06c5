-- Reconciliation runs (issue 3): what the run engine needs beyond the first schema.

-- A run the mass-delete guard stopped is neither a success nor a failure of the machinery: it
-- waits for a person to look at the plan and start it again with the override.
alter table usersync.runs drop constraint runs_state_check;
alter table usersync.runs add constraint runs_state_check
    check (state in ('planning', 'running', 'succeeded', 'failed', 'abandoned', 'needs_override'));

-- The abandoned run whose unfinished work a run took over. The new run walks the whole source
-- again rather than trusting the old cursor: repairs re-check their drift at write time, so what
-- the abandoned run already did is not done twice, and drift that appeared behind its cursor
-- is not missed.
alter table usersync.runs add column resumed_from uuid
    constraint runs_resumed_from_fkey references usersync.runs (id);

-- At most one run is planning or running at any time. The session-level advisory lock held by
-- the running process is what serialises runs across replicas; this index makes a second active
-- row impossible even if that lock were ever bypassed.
create unique index runs_one_active_idx on usersync.runs ((true))
    where state in ('planning', 'running');

-- A batch run writes one event per repair, a million at a time: hand out identity values in
-- blocks instead of one sequence round per row. Ids are then unique but not in commit order
-- across sessions: read an audit trail in order of `at, id`.
alter table usersync.events alter column id set cache 1000;

-- Nor a foreign-key check per event: with it, every one of those million inserts fires a
-- trigger that looks the run up again. Events of a run are only ever written by that run,
-- after its row exists, and runs are never deleted; the index still finds a run's events.
alter table usersync.events drop constraint events_run_id_fkey;
