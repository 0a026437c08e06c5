-- When the healing leader claimed a letter for an attempt. A claim used to be only a later
-- `next_attempt_at` (the lease), which a new leader cannot tell from a scheduled retry: the
-- letters a dead leader had claimed waited out the whole lease. A new leader releases every
-- claim left (see `dead_letters::release_claims`).
alter table usersync.dead_letters add column claimed_at timestamptz;
