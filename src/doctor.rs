//! `usersync doctor`: inspects a live project and names every risk it carries for sign-up,
//! sync and deletion, one line each, the way Supabase's own troubleshooting pages describe them.

use std::fmt;

use sqlx::PgConnection;

use crate::compiler::mapping::Mapping;
use crate::repo::doctor as catalog;
use crate::repo::{access, email_index};

/// One risk found, with what it breaks and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Risk {
    /// A trigger on `auth.users` whose function cannot catch its own errors: one failure rolls
    /// back every sign-up (or, for an update trigger, every sign-in).
    UnsafeTrigger {
        trigger: String,
        function: String,
        language: String,
    },
    /// A function whose `search_path` is its caller's: behind an `auth.users` trigger it runs
    /// with `supabase_auth_admin`'s (`auth`), and a security definer one can be hijacked.
    SearchPath {
        function: String,
        security_definer: bool,
        behind_auth_trigger: bool,
    },
    /// A foreign key that makes deleting a user (or a profile) fail.
    BlockingForeignKey {
        constraint: String,
        table: String,
        references: String,
        on_delete: String,
    },
    /// Row level security on the target applies to the role usersync connects as.
    TargetRls {
        target: String,
        role: String,
        forced: bool,
    },
    /// The connection goes through Supabase's transaction-mode pooler.
    TransactionPooler,
    /// Row level security on `auth.users` applies to the role usersync connects as: it sees
    /// no user, or only some (see `sync::source`).
    SourceRls { role: String },
    /// The role lacks a privilege usersync needs for `purpose`.
    MissingPrivilege {
        role: String,
        purpose: String,
        privilege: String,
        object: String,
    },
    /// The target has no index on `lower(email)`: every first sync reads the whole table.
    EmailIndex { target: String, create: String },
}

impl fmt::Display for Risk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Risk::UnsafeTrigger {
                trigger,
                function,
                language,
            } => {
                let why = if language == "plpgsql" {
                    "has no EXCEPTION handler".to_owned()
                } else {
                    format!("is written in {language}, which cannot catch errors")
                };
                write!(
                    f,
                    "unsafe-trigger: trigger {trigger} on auth.users runs {function}, which {why}: \
                     one error in it fails every sign-up with \"Database error saving new user\"; \
                     catch every error (or let `usersync triggers install` do the sync)"
                )
            }
            Risk::SearchPath {
                function,
                security_definer,
                behind_auth_trigger,
            } => {
                let mut why = String::new();
                if *behind_auth_trigger {
                    why.push_str(
                        "; a trigger on auth.users runs it as supabase_auth_admin, whose \
                         search_path is `auth`, so unqualified names fail",
                    );
                }
                if *security_definer {
                    why.push_str(
                        "; it is security definer, so a caller's search_path can hijack it",
                    );
                }
                write!(
                    f,
                    "search-path: function {function} has no fixed search_path{why}; add \
                     `set search_path = ''` and qualify every name"
                )
            }
            Risk::BlockingForeignKey {
                constraint,
                table,
                references,
                on_delete,
            } => {
                let what = if references == "auth.users" {
                    "deleting the user fails with \"Database error deleting user\""
                } else {
                    "deleting or re-keying a profile fails"
                };
                write!(
                    f,
                    "blocking-foreign-key: {table}.{constraint} references {references} with \
                     on delete {on_delete}: {what}; use on delete cascade or set null"
                )
            }
            Risk::TargetRls {
                target,
                role,
                forced,
            } => {
                let (how, fix) = if *forced {
                    ("forced", "or drop FORCE and connect as the table's owner")
                } else {
                    ("enabled", "or as the table's owner")
                };
                write!(
                    f,
                    "target-rls: row level security is {how} on {target} and applies to {role}, \
                     the role usersync connects as: syncs would not see or write its rows; \
                     connect as a role with BYPASSRLS (such as postgres) {fix}"
                )
            }
            Risk::SourceRls { role } => write!(
                f,
                "source-rls: row level security on auth.users applies to {role}, the role \
                 usersync connects as (no BYPASSRLS, not the owner): it sees none of the users, \
                 or only some, and every profile would look orphaned (status and runs refuse to \
                 go on); connect as a role with BYPASSRLS, such as hosted Supabase's postgres"
            ),
            Risk::MissingPrivilege {
                role,
                purpose,
                privilege,
                object,
            } => {
                let fix = if object == "schema auth" {
                    format!(
                        "connect as postgres: on hosted Supabase nobody but the platform can \
                         `grant {privilege} on {object} to {role}`"
                    )
                } else {
                    format!("`grant {privilege} on {object} to {role};`")
                };
                write!(
                    f,
                    "missing-privilege: {role} has no {} on {object}, needed to {purpose}; {fix}",
                    privilege.to_uppercase()
                )
            }
            Risk::EmailIndex { target, create } => write!(
                f,
                "email-index: {target} has no index on lower(email): every first sync (each \
                 sign-up through the trigger) reads the whole table; run `usersync migrate`, \
                 or `{create};`"
            ),
            Risk::TransactionPooler => write!(
                f,
                "transaction-pooler: DATABASE_URL points at port 6543, Supabase's \
                 transaction-mode pooler, which cannot run prepared statements: use the direct \
                 connection or the session-mode pooler (port 5432)"
            ),
        }
    }
}

/// Every risk the live database carries for `mapping`'s target.
pub async fn inspect(db: &mut PgConnection, mapping: &Mapping) -> sqlx::Result<Vec<Risk>> {
    let target = &mapping.target;
    let target_name = format!("{}.{}", target.schema, target.table);
    let mut risks = Vec::new();
    if let Some(access) = access::source_access(&mut *db).await? {
        if access.row_security {
            risks.push(Risk::SourceRls { role: access.role });
        }
    }
    let role: String = sqlx::query_scalar("select current_user::text")
        .fetch_one(&mut *db)
        .await?;
    for p in access::privileges(&mut *db, &target_name).await? {
        if !p.held {
            risks.push(Risk::MissingPrivilege {
                role: role.clone(),
                purpose: p.purpose,
                privilege: p.privilege,
                object: p.object,
            });
        }
    }
    let has_target = catalog::target_rls(&mut *db, &target_name).await?.is_some();
    if has_target && email_index::find(&mut *db, mapping).await?.is_none() {
        if let Some(create) = crate::compiler::render::email_index::create_sql(mapping, true) {
            risks.push(Risk::EmailIndex {
                target: target_name.clone(),
                create,
            });
        }
    }
    for t in catalog::auth_triggers(&mut *db).await? {
        if !(t.language == "plpgsql" && t.catches) {
            risks.push(Risk::UnsafeTrigger {
                trigger: t.trigger,
                function: t.function,
                language: t.language,
            });
        }
    }
    for f in catalog::functions_without_search_path(&mut *db).await? {
        risks.push(Risk::SearchPath {
            function: f.function,
            security_definer: f.security_definer,
            behind_auth_trigger: f.behind_auth_trigger,
        });
    }
    for k in catalog::blocking_foreign_keys(&mut *db, &target_name).await? {
        risks.push(Risk::BlockingForeignKey {
            constraint: k.constraint,
            table: k.table,
            references: k.references,
            on_delete: k.on_delete,
        });
    }
    if let Some(rls) = catalog::target_rls(&mut *db, &target_name).await? {
        if rls.enabled && !rls.bypasses && (!rls.owns || rls.forced) {
            risks.push(Risk::TargetRls {
                target: target_name,
                role: rls.role,
                forced: rls.forced,
            });
        }
    }
    Ok(risks)
}
