//! `usersync doctor` against a database seeded with every risk it names, and a healthy one.

use crate::helpers::*;
use usersync::vocabulary::policy::DeletedPolicy;

/// What projects really ship: the documented trigger recipe without an exception handler or a
/// fixed search_path, a helper function used by RLS policies, foreign keys that block deletes,
/// and RLS on the target.
const RISKY: &str = r"
create function public.handle_new_user() returns trigger
language plpgsql security definer
as $$
begin
  insert into public.users (id, email) values (new.id, new.email);
  return new;
end
$$;
create trigger on_auth_user_created after insert on auth.users
  for each row execute function public.handle_new_user();

create function public.is_admin() returns boolean language sql stable
as $$ select coalesce(auth.jwt() -> 'app_metadata' ->> 'role', '') = 'admin' $$;

create table public.posts (
  id bigint primary key,
  author_id uuid not null references auth.users (id)
);
create table public.comments (
  id bigint primary key,
  user_id uuid references public.users (id) on delete restrict
);

alter table public.users enable row level security;
";

#[test]
fn doctor_names_every_risk_one_line_each_and_fails() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let db = TestDb::new().await;
        sqlx::raw_sql(RISKY).execute(&db.pool).await.unwrap();
        // usersync connects as a role that RLS applies to: neither owner nor BYPASSRLS.
        let role = NO_RLS_BYPASS_ROLE;
        sqlx::raw_sql(&format!(
            "grant select, insert, update on public.users to {role};"
        ))
        .execute(&db.pool)
        .await
        .unwrap();

        let (code, stdout, stderr) =
            usersync_cli(&["doctor"], &[("DATABASE_URL", &db.url_as(role))]);

        assert_eq!(code, 1, "{stdout}\n{stderr}");
        let lines: Vec<&str> = stdout.lines().collect();
        let expected = [
            ("unsafe-trigger:", "on_auth_user_created"),
            ("search-path:", "public.handle_new_user()"),
            ("search-path:", "public.is_admin()"),
            (
                "blocking-foreign-key:",
                "public.posts.posts_author_id_fkey references auth.users",
            ),
            (
                "blocking-foreign-key:",
                "public.comments.comments_user_id_fkey references public.users",
            ),
            ("target-rls:", role),
            ("source-rls:", role),
            ("missing-privilege:", "TRIGGER on table auth.users"),
            ("missing-privilege:", "CREATE on database"),
            ("missing-privilege:", "DELETE on table public.users"),
            (
                "missing-privilege:",
                "UPDATE on table public.comments, needed to re-key",
            ),
        ];
        for (kind, subject) in expected {
            assert!(
                lines
                    .iter()
                    .any(|l| l.starts_with(kind) && l.contains(subject)),
                "no `{kind}` line about {subject} in:\n{stdout}"
            );
        }
        assert_eq!(lines.len(), expected.len(), "one line per risk:\n{stdout}");
        let handle_new_user = lines
            .iter()
            .find(|l| l.starts_with("search-path:") && l.contains("handle_new_user"))
            .unwrap();
        assert!(
            handle_new_user.contains("supabase_auth_admin")
                && handle_new_user.contains("security definer")
        );
    });
}

#[test]
fn doctor_is_silent_on_a_healthy_project_with_the_usersync_triggers() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let db = TestDb::new().await;
        install_triggers(&db.pool, None, DeletedPolicy::Report).await;
        sqlx::raw_sql(
            "create table public.posts (
               id bigint primary key,
               author_id uuid references auth.users (id) on delete cascade,
               editor_id uuid references public.users (id) on delete set null
             );
             create function public.is_admin() returns boolean language sql stable
               set search_path = ''
               as $$ select coalesce(auth.jwt() -> 'app_metadata' ->> 'role', '') = 'admin' $$;
             -- RLS that the connecting role (a superuser here) bypasses.
             alter table public.users enable row level security;",
        )
        .execute(&db.pool)
        .await
        .unwrap();

        let (code, stdout, stderr) = usersync_cli(&["doctor"], &[("DATABASE_URL", &db.url())]);
        assert_eq!(code, 0, "{stdout}\n{stderr}");
        assert_eq!(stdout.trim(), "no risks found");
    });
}

#[test]
fn doctor_names_the_transaction_pooler_instead_of_refusing_it() {
    let (code, stdout, _) = usersync_cli(
        &["doctor"],
        &[(
            "DATABASE_URL",
            "postgres://postgres@127.0.0.1:6543/postgres",
        )],
    );
    assert_ne!(code, 0);
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("transaction-pooler:") && l.contains("6543")),
        "{stdout}"
    );
}

#[test]
fn doctor_names_a_target_without_an_index_on_lower_email_and_migrate_builds_one() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let db = TestDb::new().await;
        sqlx::raw_sql("drop index public.users_email_lower_idx")
            .execute(&db.pool)
            .await
            .unwrap();
        let env = [("DATABASE_URL", db.url())];
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (code, stdout, _) = usersync_cli(&["doctor"], &env);
        assert_eq!(code, 1, "{stdout}");
        assert!(
            stdout.lines().any(|l| l.starts_with("email-index:")
                && l.contains(
                    "create index concurrently if not exists usersync_users_email_lower_idx"
                )),
            "{stdout}"
        );

        let (code, stdout, stderr) = usersync_cli(&["migrate"], &env);
        assert_eq!(code, 0, "{stderr}");
        assert!(
            stdout.contains("built usersync_users_email_lower_idx"),
            "{stdout}"
        );
        let (code, stdout, _) = usersync_cli(&["doctor"], &env);
        assert_eq!((code, stdout.trim()), (0, "no risks found"));
    });
}
