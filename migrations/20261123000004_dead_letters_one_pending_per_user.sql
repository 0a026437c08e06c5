-- One pending dead letter per user.
--
-- Supabase Auth writes a new user in several statements of one transaction, and each of them can
-- queue the deferred sync trigger. When the target is broken, every one of those firings fails
-- for the same reason: they must leave one dead letter naming the cause, not one per statement.
-- The trigger upserts on this index, and the healing loop re-reads the user anyway, so one row
-- per user is all the work there is. Resolved letters stay as history and do not count.
create unique index dead_letters_one_pending_per_user
    on usersync.dead_letters (user_id)
    where resolved_at is null;
