-- A run's chunk row keeps each repaired user's image as an array of the mapped columns' values,
-- named once per row in `image_columns`, instead of as an object that repeats every name.
--
-- Building one JSON object per repaired user (`jsonb_build_object`: every key copied and
-- sorted, for every row) was most of what the audit cost a run: at 100,000 users a chunk, about
-- 0.3 s of a 1.7 s chunk statement (README, "Benchmarks"). An array of values carries the same
-- facts. Rows written before this keep their objects and no `image_columns`; the view reads
-- both, so `usersync.repairs` still gives every repair its `before` and `after` as objects.
alter table usersync.events add column image_columns text[];

-- Each repair's images as objects again: a row written before this keeps its objects; a newer
-- one names its array's values with `image_columns`, in order.
create or replace view usersync.repairs as
select e.id as event_id, 1::bigint as ordinal, e.run_id, e.user_id, e.caller, e.path,
       e.kind, e.action, e.before, e.after, e.at
  from usersync.events e
 where e.user_ids is null
union all
select e.id, r.ordinal, e.run_id, r.user_id, e.caller, e.path, e.kind, e.action,
       i.before, i.after, e.at
  from usersync.events e
 cross join lateral rows from (
           unnest(e.user_ids),
           jsonb_array_elements(e.before),
           jsonb_array_elements(e.after)
       ) with ordinality as r (user_id, before, after, ordinal)
 cross join lateral (
           select case when e.image_columns is null then r.before
                       else jsonb_object_agg(c.name, r.before -> (c.n - 1)::int)
                                filter (where r.before is not null) end as before,
                  case when e.image_columns is null then r.after
                       else jsonb_object_agg(c.name, r.after -> (c.n - 1)::int)
                                filter (where r.after is not null) end as after
             from unnest(e.image_columns) with ordinality as c (name, n)
       ) i
 where e.user_ids is not null;
