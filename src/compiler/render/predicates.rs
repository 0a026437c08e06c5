//! The drift predicates, each written once over a few named pieces (`live`, `lonely`,
//! `stray`, `same_person`, `known_user`) and shared by every statement that asks the question,
//! so that sync-one, the status, the listings and a run cannot disagree about what "missing"
//! means.

use super::*;

impl Renderer<'_> {
    /// A source row usersync keeps a target row for.
    pub(super) fn live(&self, s: &str) -> String {
        match self.mapping.anonymous {
            AnonymousPolicy::Sync => format!("{s}.deleted_at is null"),
            AnonymousPolicy::Skip => format!("{s}.deleted_at is null and not {s}.is_anonymous"),
        }
    }

    pub(super) fn no_target_row(&self, s: &str) -> String {
        format!(
            "not exists (select 1 from {} x where x.{} = {s}.id)",
            self.table, self.key
        )
    }

    /// `no_target_row` for a chunk of source rows: one probe of the target's key per row. The
    /// `offset 0` keeps the planner from making it an anti-join, which would hash the whole
    /// target once per chunk.
    pub(super) fn no_target_row_per_row(&self, s: &str) -> String {
        format!(
            "not exists (select 1 from {} x where x.{} = {s}.id offset 0)",
            self.table, self.key
        )
    }

    pub(super) fn not_in_source(&self, t: &str) -> String {
        format!(
            "not exists (select 1 from auth.users a where a.id = {t}.{})",
            self.key
        )
    }

    /// The source half a mismatch can have: live, not SSO (SSO users may share an email), with
    /// an email, and no target row of its id.
    pub(super) fn lonely(&self, s: &str) -> String {
        if self.mapping.email_column().is_none() {
            return "false".into();
        }
        format!(
            "({} and not {s}.is_sso_user and {s}.email is not null and {})",
            self.live(s),
            self.no_target_row(s)
        )
    }

    /// The target half a mismatch can have: an email, and an id no source row has.
    pub(super) fn stray(&self, t: &str) -> String {
        match self.mapping.email_column() {
            None => "false".into(),
            Some(email) => format!(
                "({t}.{} is not null and {})",
                email.quoted(),
                self.not_in_source(t)
            ),
        }
    }

    /// Source `s` and target `t` hold the same email, case-insensitively.
    pub(super) fn same_person(&self, s: &str, t: &str) -> String {
        match self.mapping.email_column() {
            None => "false".into(),
            Some(email) => format!("lower({t}.{}) = lower({s}.email)", email.quoted()),
        }
    }

    /// The audit trail knows target row `t`'s id as an auth user's: usersync wrote the row from
    /// one (see `AuditAction::SOURCE_WRITES`), or recorded that user's deletion. If no auth
    /// user has the id now, that user was deleted.
    pub(super) fn known_user(&self, t: &str) -> String {
        known_id(&format!("{t}.{}", self.key))
    }

    /// A stray target row some lonely source row claims by email. For the whole-table
    /// statements, where the planner hashes `auth.users` once.
    pub(super) fn claimed(&self, t: &str) -> String {
        format!(
            "exists (select 1 from auth.users s2 where {} and {})",
            self.lonely("s2"),
            self.same_person("s2", t)
        )
    }

    /// `claimed` for one target row, through indexes only. usersync cannot index `auth.users`
    /// (it belongs to Supabase Auth), so it probes Supabase Auth's own: the unique index on
    /// `email` (Supabase Auth stores every email lower-cased) and, for an email stored in
    /// another case, the `(instance_id, lower(email))` index Supabase Auth looks users up by,
    /// under its nil instance. Only a source row written by hand, with an email in capitals
    /// and another `instance_id`, is matched by the whole-table statements alone.
    pub(super) fn claimed_by_index(&self, t: &str) -> String {
        let Some(email) = self.mapping.email_column() else {
            return "false".into();
        };
        format!(
            "exists (select 1 from auth.users s2 where {} and {})",
            self.lonely("s2"),
            self.same_by_index("s2", &format!("{t}.{}", email.quoted()))
        )
    }

    /// Source row `s` holds `email` (a target's email, a text expression), as Supabase Auth's
    /// own indexes can find it: stored lower-cased (the unique index on `email`), or in another
    /// case under Supabase Auth's nil instance (its `(instance_id, lower(email))` index).
    pub(super) fn same_by_index(&self, s: &str, email: &str) -> String {
        format!(
            "({s}.email = lower({email}) \
             or ({s}.instance_id = {GOTRUE_INSTANCE} and lower({s}.email) = lower({email})))"
        )
    }

    // --- the kinds, correlated ------------------------------------------------------------------

    /// A lonely source row whose email a stray target row holds: the same person under two ids.
    pub fn mismatched_source(&self, s: &str) -> String {
        format!(
            "({} and exists (select 1 from {} m where {} and {}))",
            self.lonely(s),
            self.table,
            self.stray("m"),
            self.same_person(s, "m")
        )
    }

    /// Live, no target row of its id, and not mismatched. Given the first two, "not mismatched"
    /// is "no stray row holds its email unless it is SSO", written as one top-level
    /// `not exists` so that the planner makes it an anti-join.
    pub fn missing(&self, s: &str) -> String {
        format!(
            "({} and {} and {})",
            self.live(s),
            self.no_target_row(s),
            self.no_stray_namesake(s)
        )
    }

    /// No stray target row holds the email of source row `s` (unless `s` is SSO): given live
    /// and no target row, "not mismatched". One top-level `not exists`, which the planner
    /// makes an anti-join: the right shape for whole-table statements.
    pub(super) fn no_stray_namesake(&self, s: &str) -> String {
        format!(
            "not exists (select 1 from {} m where {} and {} and not {s}.is_sso_user)",
            self.table,
            self.stray("m"),
            self.same_person(s, "m")
        )
    }

    /// `no_stray_namesake` for a chunk of source rows. As an anti-join (or a hashed subplan)
    /// the planner finds every stray row of the whole target once per chunk, so a run would
    /// cost chunks x table size. Inside a `case`, and correlated beyond the email equality
    /// (`m.key <> s.id` always holds for a stray row, which no source row has), it stays a
    /// per-row probe of the `lower(email)` index, when the target has one.
    pub(super) fn no_stray_namesake_per_row(&self, s: &str) -> String {
        match self.mapping.email_column() {
            Some(email) if self.shape.lower_indexed.iter().any(|c| c == email.as_str()) => {
                format!(
                    "case when {s}.is_sso_user or {s}.email is null then true \
                     else not exists (select 1 from {} m where {} and m.{} <> {s}.id and {}) end",
                    self.table,
                    self.same_person(s, "m"),
                    self.key,
                    self.stray("m")
                )
            }
            _ => self.no_stray_namesake(s),
        }
    }

    /// Source `s` and target `t` share the id and an `always` column differs.
    pub fn stale(&self, s: &str, t: &str) -> String {
        let (targets, sources): (Vec<String>, Vec<String>) = self
            .mapping
            .always_columns()
            .map(|c| (format!("{t}.{}", c.name.quoted()), self.typed_expr(c, s)))
            .unzip();
        if targets.is_empty() {
            return "false".into();
        }
        format!(
            "({} and ({}) is distinct from ({}))",
            self.live(s),
            targets.join(", "),
            sources.join(", ")
        )
    }

    /// No source row has its id, it is not mismatched, and the audit trail never knew its id as
    /// an auth user's (if it did, the user was deleted: see `deleted`).
    pub fn orphaned(&self, t: &str) -> String {
        self.orphaned_with(t, &self.claimed(t))
    }

    pub(super) fn orphaned_with(&self, t: &str, claimed: &str) -> String {
        format!(
            "({} and not {claimed} and not {})",
            self.not_in_source(t),
            self.known_user(t)
        )
    }

    /// The auth user is soft-deleted, or gone and known to the audit trail (a hard delete).
    pub fn deleted(&self, t: &str) -> String {
        self.deleted_with(t, &self.claimed(t))
    }

    pub(super) fn deleted_with(&self, t: &str, claimed: &str) -> String {
        format!(
            "(exists (select 1 from auth.users sd where sd.id = {t}.{key} \
             and sd.deleted_at is not null) \
             or ({} and not {claimed} and {}))",
            self.not_in_source(t),
            self.known_user(t),
            key = self.key,
        )
    }

    /// A boolean expression over two versions `o` and `n` of an `auth.users` row: true when the
    /// change may matter to the target (a value an `always` column reads, liveness, or anonymity
    /// under `skip`). Every sign-in bumps `updated_at` and `last_sign_in_at`; unless the mapping
    /// reads those, a sign-in is not a change.
    ///
    /// It compares the raw values the mapping reads, never their casts, so that it cannot fail:
    /// it is the update trigger's `WHEN` clause, evaluated inside the writer's own statement,
    /// where an error would fail a sign-in.
    pub fn changed_predicate(&self, o: &str, n: &str) -> String {
        let differs =
            |value: &dyn Fn(&str) -> String| format!("{} is distinct from {}", value(o), value(n));
        let mut checks = Vec::new();
        for column in self.mapping.always_columns() {
            match &column.source {
                ValueSource::Column(c) => {
                    checks.push(differs(&|r: &str| format!("{r}.{}", c.quoted())))
                }
                ValueSource::UserMetadata(paths) | ValueSource::AppMetadata(paths) => {
                    let json = match &column.source {
                        ValueSource::UserMetadata(_) => "raw_user_meta_data",
                        _ => "raw_app_meta_data",
                    };
                    for path in paths {
                        let path = json_path_literal(path);
                        checks.push(differs(&|r: &str| format!("({r}.{json} #>> {path})")));
                    }
                }
                ValueSource::Constant(_) | ValueSource::Now => {}
            }
        }
        checks.push(differs(&|r: &str| format!("{r}.deleted_at")));
        if self.mapping.anonymous == AnonymousPolicy::Skip {
            checks.push(differs(&|r: &str| format!("{r}.is_anonymous")));
        }
        let mut seen = std::collections::HashSet::new();
        checks.retain(|c| seen.insert(c.clone()));
        checks.join("\n        or ")
    }
}
