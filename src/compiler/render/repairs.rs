//! A run's statements: its chunks of pages, and the set-based repairs that re-check their
//! drift as they write and audit what they changed.

use super::*;

/// A chunk of a run: the rows of `alias` whose places in its table are in `[$1, $2)`, two tids
/// as text (a TID range scan reads each page once, where an id range of random uuids touches
/// nearly every page). A chunk is whole pages; a chunk split to find the one row the database
/// refuses narrows down to single rows.
pub(super) fn in_chunk(alias: &str) -> String {
    format!("{alias}.ctid >= $1::text::tid and {alias}.ctid < $2::text::tid")
}

impl Renderer<'_> {
    pub(super) fn repair(&self) -> RepairSql {
        let (table, key) = (&self.table, &self.key);
        RepairSql {
            pages: self.pages(),
            source_rows: format!("select count(*) from auth.users s where {}", in_chunk("s")),
            target_rows: format!("select count(*) from {table} t where {}", in_chunk("t")),
            source_ids: format!("select s.id from auth.users s where {}", in_chunk("s")),
            target_ids: format!("select t.{key} from {table} t where {}", in_chunk("t")),
            source_place: "select s.ctid::text from auth.users s where s.id = $1".into(),
            target_place: format!("select t.ctid::text from {table} t where t.{key} = $1"),
            create_missing: self.create_missing(self.no_stray_namesake_per_row("s")),
            create_missing_known_strays: self.create_missing(
                "(s.is_sso_user or s.email is null or lower(s.email) <> all($6::text[]))".into(),
            ),
            stray_emails: self.stray_emails(),
            update_stale: self.update_stale(),
            refused_users: self.refused_users(),
            delete_deleted: self.delete(DriftKind::Deleted, &|t| self.deleted(t)),
            delete_orphaned: self.delete(DriftKind::Orphaned, &|t| self.orphaned(t)),
            orphans: self.orphans(),
            pairs: self.pairs(),
            rekey_moved: self.rekey_moved(),
            rekey_audit: self.rekey_audit(),
        }
    }

    /// The pages of `auth.users` and of the target.
    fn pages(&self) -> String {
        format!(
            "select pg_relation_size('auth.users') / current_setting('block_size')::bigint,
       pg_relation_size({}) / current_setting('block_size')::bigint",
            literal(&self.mapping.target.qualified())
        )
    }

    /// `missing`, with its two probes made per row for speed: "no target row" through the
    /// primary key (see `Creates`), and "no stray namesake" (`no_namesake`) through the
    /// `lower(email)` index or against a list of emails.
    fn create_missing(&self, no_namesake: String) -> Creates {
        let (table, key) = (&self.table, &self.key);
        let (columns, values) = self.insert_columns("s");
        let names = self.mapped_names();
        let form = |on_conflict: &str| {
            format!(
                "with ins as (
    insert into {table} as t ({key}, {columns})
    select s.id, {values}
      from auth.users s
     where {chunk} and {live} and {no_row}
       and {no_namesake} and {refused} is null
     limit $5{on_conflict}
    returning t.{key} as id, null::jsonb as before, {after} as after
),
audit as (
    {audit}
)
select count(*) from ins",
                chunk = in_chunk("s"),
                live = self.live("s"),
                no_row = self.no_target_row_per_row("s"),
                refused = self.refused_column("s", false),
                after = self.mapped_array("t"),
                audit = chunk_audit(
                    DriftKind::Missing,
                    AuditAction::Created,
                    "ins",
                    Images::AFTER,
                    &names,
                ),
            )
        };
        Creates {
            unguarded: form(""),
            guarded: form(&format!("\n    on conflict ({key}) do nothing")),
        }
    }

    /// The lower-cased emails of the stray target rows.
    fn stray_emails(&self) -> String {
        let table = &self.table;
        format!(
            "select array(select distinct {email} from {table} m where {stray} limit $1)",
            email = match self.mapping.email_column() {
                Some(e) => format!("lower(m.{})", e.quoted()),
                None => "null::text".into(),
            },
            stray = self.stray("m"),
        )
    }

    /// Write the `always` columns of every `stale` row.
    fn update_stale(&self) -> String {
        let (table, key) = (&self.table, &self.key);
        let names = self.mapped_names();
        let sets: Vec<String> = self
            .refreshed_columns()
            .map(|c| {
                let value = match c.source {
                    ValueSource::Now => "now()".to_owned(),
                    _ => self.typed_expr(c, "s"),
                };
                format!("{} = {value}", c.name.quoted())
            })
            .collect();
        // `b` is the same row read through the statement's snapshot: its values before the
        // update, for the audit event.
        format!(
            "with candidates as (
    select t.{key} as id
      from auth.users s join {table} t on t.{key} = s.id
     where {chunk} and {stale} and {refused} is null
     limit $5
),
upd as (
    update {table} as t set {sets}
      from candidates c, auth.users s, {table} b
     where t.{key} = c.id and s.id = c.id and b.{key} = c.id and {stale}
       and {refused} is null
    returning t.{key} as id, {before} as before, {after} as after
),
audit as (
    {audit}
)
select count(*) from upd",
            chunk = in_chunk("s"),
            stale = self.stale("s", "t"),
            refused = self.refused_column("s", true),
            sets = sets.join(", "),
            before = self.mapped_array("b"),
            after = self.mapped_array("t"),
            audit = chunk_audit(
                DriftKind::Stale,
                AuditAction::Updated,
                "upd",
                Images::BOTH,
                &names,
            ),
        )
    }

    /// Delete every row of `kind` (`predicate` over a target alias) in a chunk of the target.
    fn delete(&self, kind: DriftKind, predicate: &dyn Fn(&str) -> String) -> String {
        let (table, key) = (&self.table, &self.key);
        let names = self.mapped_names();
        format!(
            "with gone as (
    delete from {table} t
     where t.{key} in (select c.{key} from {table} c
                        where {chunk} and {candidate} limit $5)
       and {recheck}
    returning t.{key} as id, {before} as before, null::jsonb as after
),
audit as (
    {audit}
)
select count(*) from gone",
            chunk = in_chunk("c"),
            candidate = predicate("c"),
            recheck = predicate("t"),
            before = self.mapped_array("t"),
            audit = chunk_audit(kind, AuditAction::Deleted, "gone", Images::BEFORE, &names),
        )
    }

    /// The `missing` and `stale` users of a chunk whose value for some column the target
    /// cannot store; `None` when the mapping has no such column.
    fn refused_users(&self) -> Option<String> {
        let (table, key) = (&self.table, &self.key);
        let (insert, update) = (
            self.refused_column("s", false),
            self.refused_column("s", true),
        );
        // The refused users of a chunk are few: each part finds them first (`offset 0`
        // keeps the planner from joining the whole chunk to the target before it filters),
        // and only they are then checked for their kind, one index probe each.
        let mut parts = Vec::new();
        if insert != "null::text" {
            parts.push(format!(
                "select s.id, {missing_kind} as kind, s.column_name
  from (select s.*, {insert} as column_name from auth.users s
         where {chunk} and {insert} is not null offset 0) s
 where {missing}",
                chunk = in_chunk("s"),
                missing = self.missing("s"),
                missing_kind = DriftKind::Missing.sql(),
            ));
        }
        if update != "null::text" {
            parts.push(format!(
                "select s.id, {stale_kind} as kind, s.column_name
  from (select s.*, {update} as column_name from auth.users s
         where {chunk} and {update} is not null offset 0) s
  join {table} t on t.{key} = s.id
 where {stale}",
                chunk = in_chunk("s"),
                stale = self.stale("s", "t"),
                stale_kind = DriftKind::Stale.sql(),
            ));
        }
        (!parts.is_empty()).then(|| parts.join("\nunion all\n"))
    }

    /// The `orphaned` rows of a chunk of the target, with their mapped columns.
    fn orphans(&self) -> String {
        let (table, key) = (&self.table, &self.key);
        format!(
            "select t.{key} as id, {row} as row
  from {table} t
 where {chunk} and {orphaned}
 order by t.{key}
 limit $3",
            chunk = in_chunk("t"),
            row = self.mapped_json("t"),
            orphaned = self.orphaned("t"),
        )
    }

    /// The mismatched pairs whose source row is in a chunk of the source.
    fn pairs(&self) -> String {
        let (table, key) = (&self.table, &self.key);
        format!(
            "select s.id as source_id, m.{key} as target_id,
       (select count(*) from {table} m2 where {stray_m2} and {same_m2}) as targets,
       (select count(*) from auth.users s2 where {lonely_s2} and {same_s2}) as sources
  from auth.users s join {table} m on {same}
 where {chunk} and {lonely} and {stray}
 order by s.id, m.{key}",
            chunk = in_chunk("s"),
            stray_m2 = self.stray("m2"),
            same_m2 = self.same_person("s", "m2"),
            lonely_s2 = self.lonely("s2"),
            same_s2 = self.same_person("s2", "m"),
            same = self.same_person("s", "m"),
            lonely = self.lonely("s"),
            stray = self.stray("m"),
        )
    }

    /// A re-key's `old` and `moved` CTEs.
    fn rekey_moved(&self) -> String {
        let (table, key) = (&self.table, &self.key);
        format!(
            "old as (
    select {before} as before from {table} o where o.{key} = $2
),
moved as (
    update {table} t set {key} = $1
     where t.{key} = $2 and {stray}
       and exists (select 1 from auth.users s where s.id = $1 and {lonely} and {same})
    returning t.{key} as id, {after} as after
)",
            before = self.mapped_json("o"),
            stray = self.stray("t"),
            lonely = self.lonely("s"),
            same = self.same_person("s", "t"),
            after = self.mapped_json("t"),
        )
    }

    /// A re-key's audit CTE.
    fn rekey_audit(&self) -> String {
        format!(
            "audit as (
    insert into usersync.events (run_id, user_id, caller, path, kind, action, before, after)
    select $3, id, $4, {batch}, {mismatched}, {rekeyed},
           (select before from old) || jsonb_build_object({key_name}, $2::uuid),
           after || jsonb_build_object({key_name}, $1::uuid)
      from moved
)",
            key_name = literal(self.mapping.target.key.as_str()),
            batch = SyncPath::Batch.sql(),
            mismatched = DriftKind::Mismatched.sql(),
            rekeyed = AuditAction::Rekeyed.sql(),
        )
    }
}
