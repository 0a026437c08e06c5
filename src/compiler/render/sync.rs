//! The per-user statements: sync-one (the service's and the trigger's), the deleted path, and
//! the index-only lookups of one user's profile, namesake or email.

use super::*;

impl Renderer<'_> {
    /// The `src` CTE: the source rows selected by `filter` (over `auth.users s`), with what
    /// the upsert needs to decide, and every mapped value cast to its target column's type.
    pub(super) fn src_cte(&self, filter: &str) -> String {
        let (table, key) = (&self.table, &self.key);
        let src_values: Vec<String> = self
            .mapping
            .columns
            .iter()
            .map(|c| format!("{} as {}", self.typed_expr(c, "s"), c.name.quoted()))
            .collect();
        format!(
            "src as (
    select s.id, s.deleted_at, s.is_anonymous,
           exists (select 1 from {table} t where t.{key} = s.id) as has_row,
           {mismatch} as mismatched,
           {refused_insert} as refused_insert,
           {refused_update} as refused_update,
           {src_values}
      from auth.users s
     where {filter}
)",
            mismatch = self.mismatched_source("s"),
            refused_insert = self.refused_column("s", false),
            refused_update = self.refused_column("s", true),
            src_values = src_values.join(",\n           "),
        )
    }

    /// The `ins` and `audit` CTEs over `src`: insert the rows that may be written, update only
    /// the `always` columns and only when one really differs, and record one event per write.
    /// `ins` returns `id`, `row` (the whole target row), `created` and `after`.
    ///
    /// A user with a profile in the snapshot is updated, never upserted: an update skips a
    /// profile deleted since, where `on conflict` would insert it again, and so bring back a
    /// user whose deletion (and the trigger's removal of the profile) committed meanwhile. The
    /// insert keeps `on conflict` for a profile made meanwhile.
    pub(super) fn upsert_ctes(&self, caller: &str, path: &str) -> String {
        let m = self.mapping;
        let (table, key) = (&self.table, &self.key);
        let names: Vec<String> = m.columns.iter().map(|c| c.name.quoted()).collect();
        let compared: Vec<&ColumnMapping> = m.always_columns().collect();
        let differs = |new: &str| {
            let (old, new): (Vec<String>, Vec<String>) = compared
                .iter()
                .map(|c| {
                    let n = c.name.quoted();
                    (format!("t.{n}"), format!("{new}.{n}"))
                })
                .unzip();
            format!("({}) is distinct from ({})", old.join(", "), new.join(", "))
        };
        let sets = |new: &str| {
            let sets: Vec<String> = self
                .refreshed_columns()
                .map(|c| {
                    let n = c.name.quoted();
                    format!("{n} = {new}.{n}")
                })
                .collect();
            sets.join(", ")
        };
        let on_conflict = if compared.is_empty() {
            "do nothing".to_owned()
        } else {
            format!(
                "do update set {} where {}",
                sets("excluded"),
                differs("excluded")
            )
        };
        let skip_anonymous = match m.anonymous {
            AnonymousPolicy::Sync => "",
            AnonymousPolicy::Skip => " and not src.is_anonymous",
        };
        let returning = |created: &str| {
            format!(
                "returning t.{key} as id, to_jsonb(t) as row, {created} as created, {} as after",
                self.mapped_json("t")
            )
        };
        let updated = if compared.is_empty() {
            String::new()
        } else {
            format!(
                "updated as (
    update {table} as t set {sets}
      from src
     where t.{key} = src.id and src.has_row and src.deleted_at is null{skip_anonymous}
       and src.refused_update is null and {differs}
    {returning}
),
",
                sets = sets("src"),
                differs = differs("src"),
                returning = returning("false"),
            )
        };
        let ins = if compared.is_empty() {
            "select * from inserted"
        } else {
            "select * from inserted union all select * from updated"
        };
        format!(
            "inserted as (
    insert into {table} as t ({key}, {names})
    select id, {names} from src
     where deleted_at is null{skip_anonymous} and not has_row and not mismatched
       and refused_insert is null
    on conflict ({key}) {on_conflict}
    {returning}
),
{updated}ins as ({ins}),
audit as (
    insert into usersync.events (user_id, caller, path, kind, action, before, after)
    select ins.id, {caller}, {path},
           case when created then {missing_kind} else {stale_kind} end,
           case when created then {created_action} else {updated_action} end,
           (select {before} from {table} b where b.{key} = ins.id),
           after
      from ins
)",
            names = names.join(", "),
            returning = returning("t.xmax = 0"),
            before = self.mapped_json("b"),
            missing_kind = DriftKind::Missing.sql(),
            stale_kind = DriftKind::Stale.sql(),
            created_action = AuditAction::Created.sql(),
            updated_action = AuditAction::Updated.sql(),
        )
    }

    /// Create one new user's profile, unless anything stands in the way: the user is not live
    /// (or is skipped), already has a profile (`on conflict do nothing`), is mismatched, or has
    /// a value the target cannot store. The statement of a run's `create_missing` for one id,
    /// from the same pieces. Returns the mapped columns written (`after`), or no row. A
    /// sign-up's trigger tries this first: most firings are a new user, and this one
    /// statement costs half of the whole sync.
    pub fn create_one(&self, origin: Origin<'_>) -> String {
        let (table, key, id) = (&self.table, &self.key, origin.user_id);
        let (columns, values) = self.insert_columns("s");
        format!(
            "insert into {table} as t ({key}, {columns})
select s.id, {values}
  from auth.users s
 where s.id = {id} and {live} and {no_namesake} and {refused} is null
on conflict ({key}) do nothing
returning {after}",
            live = self.live("s"),
            no_namesake = self.no_stray_namesake_per_row("s"),
            refused = self.refused_column("s", false),
            after = self.mapped_json("t"),
        )
    }

    /// Sync one user: read the `auth.users` row and upsert the target in one statement, which
    /// reports what it found and did.
    pub fn sync_statement(&self, origin: Origin<'_>) -> String {
        let id = origin.user_id;
        self.sync_of(
            &format!(
                "select ({id})::uuid as id, ({})::text as caller",
                origin.caller
            ),
            &format!("s.id = {id}"),
            origin.path,
        )
    }

    /// The same for many users at once, one result row each: `$1` their ids (distinct), `$2`
    /// the caller of each, `$3` the path.
    pub(super) fn sync_batch_statement(&self) -> String {
        self.sync_of(
            "select r.id, r.caller from unnest($1::uuid[], $2::text[]) as r(id, caller)",
            "s.id = any($1::uuid[])",
            "$3",
        )
    }

    /// A sync over `requests` (a query of `id` and `caller`, distinct ids) whose source rows
    /// `filter` selects: one statement for one user or many, so that a batch can never sync a
    /// user differently from a single call. The existing row is read from the statement's
    /// snapshot, i.e. before the upsert.
    pub(super) fn sync_of(&self, requests: &str, filter: &str, path: &str) -> String {
        let (table, key) = (&self.table, &self.key);
        format!(
            "with req as ({requests}),
{src},
{upsert}
select req.id,
       src.id is not null as found,
       coalesce(src.deleted_at is not null, false) as deleted,
       coalesce(src.is_anonymous, false) and {skip} as skipped,
       coalesce(not src.has_row and src.mismatched, false) as mismatched,
       case when src.has_row then src.refused_update else src.refused_insert end
           as refused_column,
       ins.created,
       coalesce(ins.row, (select to_jsonb(c) from {table} c where c.{key} = req.id)) as row
  from req
  left join src on src.id = req.id
  left join ins on ins.id = req.id",
            src = self.src_cte(filter),
            upsert = self.upsert_ctes("(select r.caller from req r where r.id = ins.id)", path),
            skip = self.mapping.anonymous == AnonymousPolicy::Skip,
        )
    }

    /// Apply the deleted policy to one user, exactly when the `deleted` kind says the user is
    /// deleted: the auth row is soft-deleted, or it is gone and either `origin` saw it go (the
    /// trigger on a `DELETE`) or the audit trail knew the id as an auth user's, and no lonely
    /// auth user claims the profile by email (that profile is mismatched, not deleted). A
    /// live user, a mismatched, orphaned or never-synced profile, and an id nobody knows are
    /// left alone, whatever a signal says, and record nothing.
    ///
    /// `delete` removes the profile; both policies record one `deleted` event (action `deleted`
    /// or `reported`), so that a later run knows the deletion was deliberate and never brings
    /// the user back. A deletion is reported once: a soft delete is known by its `deleted_at`
    /// (kept in the event's `source_deleted_at`; Supabase Auth takes it from its own clock,
    /// after its transaction began, and may fire the trigger twice in that transaction), a hard
    /// delete by any deletion recorded before.
    pub fn deleted_statement(&self, origin: Origin<'_>, policy: DeletedPolicy) -> String {
        let (table, key, id) = (&self.table, &self.key, origin.user_id);
        let removed = match policy {
            DeletedPolicy::Delete => format!(
                "delete from {table} t using gone where t.{key} = gone.id
    returning t.{key} as id, {before} as before",
                before = self.mapped_json("t"),
            ),
            DeletedPolicy::Report => format!(
                "select b.{key} as id, {before} as before from {table} b join gone on b.{key} = gone.id",
                before = self.mapped_json("b"),
            ),
        };
        // Removing a row is news worth an event every time; a report is made once per deletion.
        let (action, news) = match policy {
            DeletedPolicy::Delete => (
                format!(
                    "case when exists (select 1 from removed) then {} else {} end",
                    AuditAction::Deleted.sql(),
                    AuditAction::Reported.sql()
                ),
                "exists (select 1 from removed)",
            ),
            DeletedPolicy::Report => (AuditAction::Reported.sql(), "false"),
        };
        let deleted = DriftKind::Deleted.sql();
        let gone_id = "gone.id";
        let known = known_id(&format!("({id})::uuid"));
        format!(
            "with gone as (
    select ({id})::uuid as id, sd.deleted_at
      from (select) one
      left join auth.users sd on sd.id = {id}
     where case when sd.id is not null then sd.deleted_at is not null
                else ({witnessed} or {known})
                     and not exists (select 1 from {table} c where c.{key} = {id} and {claimed})
           end
),
removed as (
    {removed}
),
audit as (
    insert into usersync.events (user_id, caller, path, kind, action, before, source_deleted_at)
    select gone.id, {caller}, {path}, {deleted}, {action}, (select before from removed),
           gone.deleted_at
      from gone
     where {news}
        or not {reported}
    returning action
)
select exists (select 1 from gone) as gone,
       exists (select 1 from removed) and {deletes} as removed,
       (select action from audit) as action",
            witnessed = origin.witnessed_delete,
            claimed = self.claimed_by_index("c"),
            caller = origin.caller,
            path = origin.path,
            deletes = policy == DeletedPolicy::Delete,
            reported = recorded_by(
                gone_id,
                &format!(
                    "e.kind = {deleted} and (gone.deleted_at is null \
                     or e.source_deleted_at = gone.deleted_at)"
                ),
                &format!("e.kind = {deleted} and e.at >= coalesce(gone.deleted_at, '-infinity')"),
            ),
        )
    }

    /// `namesake_of`: one probe of the target's email index.
    pub(super) fn namesake_of(&self) -> String {
        let (table, key) = (&self.table, &self.key);
        format!(
            "select m.{key} from auth.users s join {table} m on {same}
 where s.id = $1 and m.{key} <> s.id and {stray}
 order by m.{key} limit 1",
            same = self.same_person("s", "m"),
            stray = self.stray("m"),
        )
    }

    /// `orphaned` for one key, with `drift_one`'s index-driven claim.
    pub(super) fn orphan_one(&self) -> String {
        let (table, key) = (&self.table, &self.key);
        format!(
            "select t.{key} as id, {row} as row from {table} t where t.{key} = $1 and {orphaned}",
            row = self.mapped_json("t"),
            orphaned = self.orphaned_with("t", &self.claimed_by_index("t")),
        )
    }

    /// Both sides of one id (see `RenderedSql::user_sides`). The auth side names what an admin
    /// needs to tell why a profile is wrong, and nothing that authenticates: no password hash,
    /// no token, no metadata but what the mapping reads (through `mapped`).
    pub(super) fn user_sides(&self) -> String {
        let (table, key) = (&self.table, &self.key);
        let mapped: Vec<String> = self
            .mapping
            .columns
            .iter()
            .filter(|c| c.is_compared())
            .map(|c| format!("{}, {}", literal(c.name.as_str()), self.typed_expr(c, "s")))
            .collect();
        format!(
            "select (select jsonb_build_object(
                   'email', s.email, 'phone', s.phone, 'created_at', s.created_at,
                   'last_sign_in_at', s.last_sign_in_at, 'deleted_at', s.deleted_at,
                   'is_anonymous', s.is_anonymous, 'is_sso_user', s.is_sso_user,
                   'providers', coalesce((
                       select jsonb_agg(p) from jsonb_array_elements_text(
                           case when jsonb_typeof(s.raw_app_meta_data -> 'providers') = 'array'
                                then s.raw_app_meta_data -> 'providers' end) p), '[]'::jsonb),
                   'role', s.raw_app_meta_data ->> 'role',
                   'mapped', jsonb_build_object({mapped}))
          from auth.users s where s.id = $1) as auth,
       (select jsonb_build_object({key_name}, t.{key}) || {profile}
          from {table} t where t.{key} = $1) as profile",
            mapped = mapped.join(", "),
            key_name = literal(self.mapping.target.key.as_str()),
            profile = self.mapped_json("t"),
        )
    }

    /// The ids holding an email on either side (see `RenderedSql::find_by_email`).
    pub(super) fn find_by_email(&self) -> String {
        // Two arms, one per Supabase Auth index (`same_by_index`): its unique index on `email`
        // is partial (`not is_sso_user`), so an `or` of both would read the whole table.
        let in_source = format!(
            "select s.id from auth.users s where s.email = lower($1) and s.is_sso_user = false
union
select s.id from auth.users s
 where s.instance_id = {GOTRUE_INSTANCE} and lower(s.email) = lower($1)"
        );
        match self.mapping.email_column() {
            Some(email) => format!(
                "{in_source}\nunion\nselect t.{key} from {table} t where lower(t.{email}) = lower($1)",
                key = self.key,
                table = self.table,
                email = email.quoted(),
            ),
            None => in_source,
        }
    }
}
