-- The usersync schema: everything usersync owns lives here, never in `auth` (Supabase Auth
-- owns that) nor in `public` (exposed through the project's data API).
create schema if not exists usersync;

-- One row per reconciliation run. `cursor` is the last source id a run has finished, so a run
-- that was killed can be resumed by the next one instead of starting over.
create table usersync.runs (
    id uuid primary key,
    caller text not null,
    dry_run boolean not null,
    options jsonb not null default '{}',
    state text not null
        constraint runs_state_check
        check (state in ('planning', 'running', 'succeeded', 'failed', 'abandoned')),
    plan jsonb,
    counts jsonb not null default '{}',
    cursor uuid,
    error text,
    started_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    finished_at timestamptz
);
create index runs_started_at_idx on usersync.runs (started_at desc);

-- The audit log: every repair, by any path, with the mapped columns before and after (never
-- the whole row: the source holds password hashes, the target app data).
create table usersync.events (
    id bigint generated always as identity primary key,
    run_id uuid constraint events_run_id_fkey references usersync.runs (id),
    user_id uuid not null,
    caller text not null,
    path text not null
        constraint events_path_check
        check (path in ('call', 'batch', 'trigger', 'healing', 'hook')),
    kind text not null,
    action text not null,
    before jsonb,
    after jsonb,
    at timestamptz not null default now()
);
create index events_user_id_idx on usersync.events (user_id);
create index events_run_id_idx on usersync.events (run_id) where run_id is not null;

-- Syncs that failed inside a trigger. The trigger catches the error so that the sign-up
-- commits, and leaves the work here; the healing loop retries it on the stored schedule.
create table usersync.dead_letters (
    id bigint generated always as identity primary key,
    user_id uuid not null,
    op text not null constraint dead_letters_op_check check (op in ('insert', 'update', 'delete')),
    error text not null,
    sqlstate text,
    attempts integer not null default 0,
    next_attempt_at timestamptz not null default now(),
    created_at timestamptz not null default now(),
    last_attempt_at timestamptz,
    resolved_at timestamptz
);
create index dead_letters_pending_idx on usersync.dead_letters (next_attempt_at)
    where resolved_at is null;
