//! The drift reads: one user's kinds, the status counts, one kind's count and listing pages,
//! and the `usersync.user_drift` view.

use super::*;

impl Renderer<'_> {
    /// The kinds of one id, each an index lookup (see `claimed_by_index`).
    pub(super) fn drift_one(&self) -> String {
        let (table, key) = (&self.table, &self.key);
        let claimed = self.claimed_by_index("t");
        let mismatched_t = format!("({} and {claimed})", self.stray("t"));
        format!(
            "select exists (select 1 from auth.users s where s.id = $1) as in_source,
       exists (select 1 from {table} t where t.{key} = $1) as in_target,
       exists (select 1 from auth.users s where s.id = $1 and {missing}) as missing,
       exists (select 1 from auth.users s join {table} t on t.{key} = s.id
                where s.id = $1 and {stale}) as stale,
       exists (select 1 from auth.users s where s.id = $1 and {mismatched_s})
       or exists (select 1 from {table} t where t.{key} = $1 and {mismatched_t}) as mismatched,
       exists (select 1 from {table} t where t.{key} = $1 and {orphaned}) as orphaned,
       exists (select 1 from {table} t where t.{key} = $1 and {deleted}) as deleted",
            missing = self.missing("s"),
            stale = self.stale("s", "t"),
            mismatched_s = self.mismatched_source("s"),
            orphaned = self.orphaned_with("t", &claimed),
            deleted = self.deleted_with("t", &claimed),
        )
    }

    /// Every count in one statement, in two passes the planner can run in parallel (a full
    /// join cannot be, before PostgreSQL 16): the target rows no auth user has (`strays`, one
    /// anti-join: usually few), then every auth user left-joined to its profile. A stray that a
    /// lonely auth user claims by email is found from the stray's side, through Supabase Auth's
    /// own indexes (`same_by_index`); each count is the kind above with those facts substituted
    /// (every mismatched auth user is live and has no profile: `missing` is the live unmatched
    /// ones less them, so the second pass need not look at the pairs).
    pub(super) fn status(&self) -> String {
        let (table, key) = (&self.table, &self.key);
        let email = self.target_email("t");
        format!(
            "with strays as materialized (
    select t.{key} as id, {email} as email, {known} as known
      from {table} t
     where {not_in_source}
),
paired as materialized (
    select distinct s.id as source_id, m.id as target_id
      from strays m
      join lateral (select s.id from auth.users s
                     where {lonely} and {same}) s on true
),
source_side as (
    select count(*) as source_total,
           count(t.{key}) as matched,
           count(*) filter (where t.{key} is null and {live}) as unmatched_live,
           count(*) filter (where t.{key} is not null and {stale}) as stale,
           count(*) filter (where t.{key} is not null and s.deleted_at is not null)
               as soft_deleted
      from auth.users s
      left join {table} t on t.{key} = s.id
),
mismatched as (
    select count(distinct source_id) as sources from paired
)
select source_total,
       matched + (select count(*) from strays) as target_total,
       unmatched_live - mismatched.sources as missing,
       stale,
       mismatched.sources as mismatched,
       (select count(*) from strays m
         where not m.known and m.id not in (select target_id from paired)) as orphaned,
       soft_deleted + (select count(*) from strays m
                        where m.known and m.id not in (select target_id from paired)) as deleted,
       (select count(*) from usersync.dead_letters where resolved_at is null)
           as dead_letters_pending
  from source_side, mismatched",
            known = self.known_user("t"),
            not_in_source = self.not_in_source("t"),
            lonely = self.lonely("s"),
            same = self.same_by_index("s", "m.email"),
            live = self.live("s"),
            stale = self.stale("s", "t"),
        )
    }

    /// How many rows of one kind there are, with the correlated predicates (each a join the
    /// planner can hash).
    pub(super) fn count(&self, kind: DriftKind) -> String {
        let (table, key) = (&self.table, &self.key);
        match kind {
            DriftKind::Missing => format!(
                "select count(*) from auth.users s where {}",
                self.missing("s")
            ),
            DriftKind::Stale => format!(
                "select count(*) from auth.users s join {table} t on t.{key} = s.id where {}",
                self.stale("s", "t")
            ),
            DriftKind::Mismatched => format!(
                "select count(*) from auth.users s where {}",
                self.mismatched_source("s")
            ),
            DriftKind::Orphaned => {
                format!(
                    "select count(*) from {table} t where {}",
                    self.orphaned("t")
                )
            }
            DriftKind::Deleted => {
                format!("select count(*) from {table} t where {}", self.deleted("t"))
            }
        }
    }

    /// One page of a kind, keyset-paginated by id. Every row says its id and email; stale rows
    /// name the columns that differ, mismatched rows the target ids holding their email.
    pub(super) fn drift_page(&self, kind: DriftKind) -> String {
        let (table, key) = (&self.table, &self.key);
        let target_side = |predicate: String| {
            format!(
                "select t.{key} as id, {email} as email, null::uuid[] as target_ids,
       null::text[] as columns
  from {table} t
 where t.{key} >= $1 and {predicate}
 order by t.{key}
 limit $2",
                email = self.target_email("t"),
            )
        };
        match kind {
            DriftKind::Missing => format!(
                "select s.id, s.email::text as email, null::uuid[] as target_ids,
       null::text[] as columns
  from auth.users s
 where s.id >= $1 and {}
 order by s.id
 limit $2",
                self.missing("s")
            ),
            DriftKind::Stale => format!(
                "select s.id, s.email::text as email, null::uuid[] as target_ids,
       {} as columns
  from auth.users s join {table} t on t.{key} = s.id
 where s.id >= $1 and {}
 order by s.id
 limit $2",
                self.differing_columns("s", "t"),
                self.stale("s", "t")
            ),
            DriftKind::Mismatched => format!(
                "select s.id, s.email::text as email,
       array_agg(m.{key} order by m.{key}) as target_ids, null::text[] as columns
  from auth.users s join {table} m on {}
 where s.id >= $1 and {} and {}
 group by s.id, s.email
 order by s.id
 limit $2",
                self.same_person("s", "m"),
                self.lonely("s"),
                self.stray("m")
            ),
            DriftKind::Orphaned => target_side(self.orphaned("t")),
            DriftKind::Deleted => target_side(self.deleted("t")),
        }
    }

    /// The names of the `always` columns in which source `s` and target `t` differ, in mapping
    /// order, as a `text[]`: what a stale row's listing and the view say about it.
    pub(super) fn differing_columns(&self, s: &str, t: &str) -> String {
        let differing: Vec<String> = self
            .mapping
            .always_columns()
            .map(|c| {
                format!(
                    "case when {t}.{} is distinct from {} then {} end",
                    c.name.quoted(),
                    self.typed_expr(c, s),
                    literal(c.name.as_str())
                )
            })
            .collect();
        format!(
            "array_remove(array[{}]::text[], null)",
            differing.join(", ")
        )
    }

    /// The query of the view `usersync.user_drift (user_id, email, kind, detail)`: one row per
    /// drifted user and kind, installed with the triggers (`repo::triggers`) for admins who ask
    /// in SQL (`select kind, count(*) from usersync.user_drift group by 1`).
    ///
    /// One `union all` branch per kind, each the kind's own predicate exactly as `drift_one`
    /// asks it of one id (the source-side kinds as the listings and counts ask them, the
    /// target-side ones with `claimed_by_index`, as `status` pairs strays with auth users), so
    /// that its counts are `status`'s and a user's rows are `GET /v1/users/{id}/drift`'s. Each
    /// branch's `user_id` is the plain key column of the table it starts from (`s.id`, the
    /// auth user's id, for missing, stale and mismatched; the profile's key for orphaned and
    /// deleted) and every branch has the same column types, so the planner pushes a
    /// `where user_id = ...` into each branch as an index condition: a lookup of one user reads
    /// a few index entries at any table size (the scale rule; `tests/api/scale.rs`).
    ///
    /// `email` is the auth user's for the source-side kinds and the profile's for the others.
    /// `detail` is `jsonb`: `{"columns": [...]}` for stale (the `always` columns that differ),
    /// `{"target_ids": [...]}` for mismatched (the profiles holding the email under an id no
    /// auth user has), `{"auth_user": "soft_deleted" | "gone"}` for deleted, null otherwise.
    pub fn drift_view(&self) -> String {
        let (table, key) = (&self.table, &self.key);
        let branch = |kind: DriftKind| {
            let kind_name = literal(kind.as_str());
            match kind {
                DriftKind::Missing => format!(
                    "select s.id as user_id, s.email::text as email, {kind_name}::text as kind,
       null::jsonb as detail
  from auth.users s
 where {}",
                    self.missing("s")
                ),
                DriftKind::Stale => format!(
                    "select s.id, s.email::text, {kind_name}::text,
       jsonb_build_object('columns', to_jsonb({}))
  from auth.users s join {table} t on t.{key} = s.id
 where {}",
                    self.differing_columns("s", "t"),
                    self.stale("s", "t")
                ),
                DriftKind::Mismatched => format!(
                    "select s.id, s.email::text, {kind_name}::text,
       jsonb_build_object('target_ids', (select jsonb_agg(m.{key} order by m.{key})
                                           from {table} m where {} and {}))
  from auth.users s
 where {}",
                    self.stray("m"),
                    self.same_person("s", "m"),
                    self.mismatched_source("s")
                ),
                DriftKind::Orphaned => format!(
                    "select t.{key}, {email}, {kind_name}::text, null::jsonb
  from {table} t
 where {}",
                    self.orphaned_with("t", &self.claimed_by_index("t")),
                    email = self.target_email("t"),
                ),
                DriftKind::Deleted => format!(
                    "select t.{key}, {email}, {kind_name}::text,
       jsonb_build_object('auth_user', case when exists (select 1 from auth.users a
                                                          where a.id = t.{key})
                                            then 'soft_deleted' else 'gone' end)
  from {table} t
 where {}",
                    self.deleted_with("t", &self.claimed_by_index("t")),
                    email = self.target_email("t"),
                ),
            }
        };
        DriftKind::ALL
            .iter()
            .map(|k| branch(*k))
            .collect::<Vec<_>>()
            .join("\nunion all\n")
    }
}
