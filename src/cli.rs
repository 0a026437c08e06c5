//! The command line. Every subcommand runs the same library code the HTTP API does.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::auth::mint::{self, Subject};
use crate::compiler::bind::{BindError, BoundMapping};
use crate::compiler::mapping::Mapping;
use crate::config::{
    DatabaseConfig, InspectedDatabaseConfig, JwtConfig, LogConfig, MappingConfig, PolicyConfig,
    ReconcileConfig, ServeConfig,
};
use crate::doctor::Risk;
use crate::repo::email_index::{self, EmailIndex};
use crate::repo::triggers::{self, Uninstalled};
use crate::startup::{self, Application, Unbound};
use crate::sync::reconcile::{Reconciler, StartError};
use crate::sync::user_repair;
use crate::vocabulary::policy::Action;
use crate::vocabulary::run::{Run, RunOptions, RunState};
use crate::vocabulary::DriftKind;
use crate::{db, dev, doctor, sync, telemetry};

#[derive(Debug, Parser)]
#[command(
    name = "usersync",
    version,
    about = "Keeps Supabase's auth.users and your users table in step"
)]
pub struct Cli {
    #[command(flatten)]
    log: LogConfig,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API.
    Serve(Box<ServeConfig>),
    /// Apply the usersync schema's migrations, and build the index on the target's
    /// `lower(email)` that per-user lookups need (safe to repeat).
    Migrate {
        #[command(flatten)]
        database: DatabaseConfig,
        #[command(flatten)]
        mapping: MappingConfig,
    },
    /// Install, remove or print the trigger path on auth.users, rendered from the mapping.
    Triggers {
        #[command(subcommand)]
        action: TriggersAction,
    },
    /// Print drift counts, totals and the last run.
    Status {
        #[command(flatten)]
        database: DatabaseConfig,
        #[command(flatten)]
        mapping: MappingConfig,
    },
    /// Plan, then repair drift chunk by chunk (one run at a time across all replicas); exits
    /// non-zero unless the run succeeds.
    Reconcile(Box<ReconcileArgs>),
    /// Repair one user, by id or by email, as a run of one user: `create`, `update`, `rekey`,
    /// `provision` or `delete`, the configured policy's by default; exits non-zero on a refusal.
    Repair(Box<RepairArgs>),
    /// Name every risk the live project carries for sign-up, sync and deletion; exits non-zero
    /// when it finds one.
    Doctor(DoctorArgs),
    /// Print the OpenAPI document.
    Openapi,
    /// Mint a token with the configured JWT secret, for local use.
    Token(TokenArgs),
    /// Boot a throwaway Postgres with a Supabase-like auth schema and demo users, and serve.
    Dev(dev::DevArgs),
}

#[derive(Debug, Subcommand)]
enum TriggersAction {
    /// Install the triggers and their functions, or refresh them after the mapping, the table
    /// or the deleted policy changed. Installing twice changes nothing.
    Install(TriggersArgs),
    /// Remove the triggers and their functions; nothing of them is left behind.
    Uninstall(DatabaseConfig),
    /// Print the SQL `install` runs: one transaction, safe to re-run, to ship as a Supabase
    /// migration.
    Show(TriggersArgs),
}

#[derive(Debug, Args)]
struct TriggersArgs {
    #[command(flatten)]
    database: DatabaseConfig,
    #[command(flatten)]
    mapping: MappingConfig,
    #[command(flatten)]
    policy: PolicyConfig,
}

#[derive(Debug, Args)]
struct DoctorArgs {
    #[command(flatten)]
    database: InspectedDatabaseConfig,
    #[command(flatten)]
    mapping: MappingConfig,
}

#[derive(Debug, Args)]
struct ReconcileArgs {
    #[command(flatten)]
    database: DatabaseConfig,
    #[command(flatten)]
    mapping: MappingConfig,
    #[command(flatten)]
    reconcile: ReconcileConfig,
    /// Plan only: count the drift and list the re-keys; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// A kind to reconcile; repeat for several. All five by default.
    #[arg(long = "kind", value_name = "KIND")]
    kinds: Vec<DriftKind>,
    /// The most rows to repair.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    limit: Option<u64>,
    /// Let the run delete more than USERSYNC_MAX_DELETE_SHARE of the target.
    #[arg(long)]
    allow_mass_delete: bool,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("who").required(true).args(["user", "email"])))]
struct RepairArgs {
    #[command(flatten)]
    database: DatabaseConfig,
    #[command(flatten)]
    mapping: MappingConfig,
    #[command(flatten)]
    reconcile: ReconcileConfig,
    /// The auth user's id, or the profile's key.
    #[arg(long, value_name = "ID")]
    user: Option<Uuid>,
    /// The user's email, in any case: the auth user who holds it (or the one profile, when no
    /// auth user does).
    #[arg(long, value_name = "EMAIL")]
    email: Option<String>,
    /// The repair; the configured policy's for the user's drift when absent.
    #[arg(long, value_name = "ACTION")]
    action: Option<Action>,
    /// Say what would be done, and do nothing.
    #[arg(long)]
    dry_run: bool,
}

/// `serve`'s JWT settings, the secret required, each said the way a minter reads it.
#[derive(Debug, Args)]
#[command(mut_arg("jwt_secret", |secret| secret.required(true).help(
    "The project's JWT secret: at least 32 characters, checked as `serve` checks it (a token \
     signed with a shorter one would be refused by the service it was minted for)")))]
#[command(mut_arg("jwt_issuer", |issuer| issuer.help("Issuer claim for user tokens")))]
struct TokenArgs {
    /// A user access token for this user id.
    #[arg(long, conflicts_with = "service", required_unless_present = "service")]
    sub: Option<Uuid>,
    /// A service_role token.
    #[arg(long)]
    service: bool,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    ttl: u64,
    #[command(flatten)]
    jwt: JwtConfig,
}

/// Parses the command line (and `.env`) and runs the command; any failure is one line on
/// stderr and a non-zero exit.
pub async fn run() -> ExitCode {
    let _ = dotenvy::dotenv();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return report_parse_error(e),
    };
    telemetry::init(cli.log.format(std::io::stderr().is_terminal()));
    match execute(cli.command).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("usersync: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

async fn execute(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(config) => {
            let pool = db::pool(&config.database.pool_settings());
            let app = Application::build(&config, pool).await?;
            app.run_until_stopped(startup::shutdown_signal()).await?;
        }
        Command::Migrate { database, mapping } => {
            let pool = db::pool(&database.pool_settings());
            db::migrate(&pool).await?;
            println!("usersync schema is up to date");
            let mapping = Mapping::load(mapping.mapping.as_deref())?;
            match startup::bind(&pool, mapping).await {
                Ok(bound) => println!("{}", ensure_email_index(&pool, &bound).await?),
                // The app may create its table after usersync's schema: the index waits for
                // `triggers install` or the next `migrate`.
                Err(
                    e @ (Unbound::Source(_)
                    | Unbound::Bind(BindError::Mapping(_) | BindError::Privilege(_))),
                ) => {
                    println!("email index not built: {e}")
                }
                Err(e) => return Err(e.into()),
            }
        }
        Command::Triggers { action } => run_triggers(action).await?,
        Command::Doctor(args) => return doctor(args).await,
        Command::Status { database, mapping } => {
            let pool = db::pool(&database.pool_settings());
            let bound = startup::bind(&pool, Mapping::load(mapping.mapping.as_deref())?).await?;
            let status = sync::status::status(&pool, &bound).await?;
            print!("{}", render_status(&status));
        }
        Command::Reconcile(args) => return reconcile(*args).await,
        Command::Repair(args) => return repair(*args).await,
        Command::Openapi => {
            println!("{}", crate::http::openapi_document().to_pretty_json()?);
        }
        Command::Token(args) => {
            let secret = args.jwt.jwt_secret.expect("clap requires it");
            let subject = match args.sub {
                Some(id) => Subject::User(id),
                None => Subject::Service,
            };
            println!(
                "{}",
                mint::mint(&secret, subject, args.jwt.jwt_issuer.as_deref(), args.ttl)?
            );
        }
        Command::Dev(args) => dev::run(args).await?,
    }
    Ok(ExitCode::SUCCESS)
}

async fn run_triggers(action: TriggersAction) -> anyhow::Result<()> {
    let bind = |args: &TriggersArgs| {
        let pool = db::pool(&args.database.pool_settings());
        let mapping = Mapping::load(args.mapping.mapping.as_deref());
        async move { anyhow::Ok((startup::bind(&pool, mapping?).await?, pool)) }
    };
    match action {
        TriggersAction::Install(args) => {
            let (bound, pool) = bind(&args).await?;
            println!("{}", ensure_email_index(&pool, &bound).await?);
            triggers::install(&pool, &bound, args.policy.deleted).await?;
            println!(
                "usersync triggers installed: auth.users -> {} (deleted users: {})",
                bound.mapping.target.qualified(),
                args.policy.deleted.as_str()
            );
        }
        TriggersAction::Uninstall(database) => {
            match triggers::uninstall(&db::pool(&database.pool_settings())).await? {
                Uninstalled::Removed => println!("usersync triggers removed"),
                Uninstalled::Neutralised { owner, drop } => println!(
                "usersync triggers neutralised: they stay on auth.users and do nothing, because \
                 only its owner may drop them; to drop them, run as {owner}: {drop}"
            ),
            }
        }
        TriggersAction::Show(args) => {
            let (bound, _) = bind(&args).await?;
            print!(
                "{}",
                crate::compiler::render::triggers::install_sql(&bound, args.policy.deleted)
            );
        }
    }
    Ok(())
}

/// Builds usersync's index on the target's `lower(email)` where the target has none, and says
/// so in one line.
async fn ensure_email_index(db: &sqlx::PgPool, bound: &BoundMapping) -> anyhow::Result<String> {
    let target = bound.mapping.target.qualified();
    Ok(match email_index::ensure(db, &bound.mapping).await {
        Ok(EmailIndex::NotNeeded) => format!("email index: not needed ({target} maps no email)"),
        Ok(EmailIndex::Present(name)) => format!("email index: {target} has {name}"),
        Ok(EmailIndex::Built(name)) => format!("email index: built {name} on {target}"),
        // Only the table's owner may index it: say what to run, and go on.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42501") => format!(
            "email index: not built ({}); until the table's owner runs `{};`, every first \
             sync reads the whole of {target}",
            e.message(),
            crate::compiler::render::email_index::create_sql(&bound.mapping, true)
                .unwrap_or_default()
        ),
        Err(e) => return Err(e.into()),
    })
}

/// Prints one line per risk (or "no risks found"); fails when it found any.
async fn doctor(args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let mut risks = Vec::new();
    let url = &args.database.url;
    if url.through_transaction_pooler() {
        risks.push(Risk::TransactionPooler);
    }
    let mapping = Mapping::load(args.mapping.mapping.as_deref())?;
    // One connection, made once: a database that cannot be reached is reported at once.
    let inspected = match PgConnection::connect_with(&url.options).await {
        Ok(mut conn) => doctor::inspect(&mut conn, &mapping).await,
        Err(e) => Err(e),
    };
    for risk in risks.iter().chain(inspected.iter().flatten()) {
        println!("{risk}");
    }
    let found = risks.len() + inspected?.len();
    if found == 0 {
        println!("no risks found");
        return Ok(ExitCode::SUCCESS);
    }
    Ok(ExitCode::FAILURE)
}

/// The error and its causes on one line, each said once: a cause whose text the line already
/// holds is left out (sqlx's database error repeats its source's message after a prefix of its
/// own, and usersync's errors quote the message they wrap).
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain().map(|c| c.to_string()) {
        let said = |text: &str| line.contains(text);
        let after_prefix = cause
            .split_once(": ")
            .map_or(cause.as_str(), |(_, rest)| rest);
        if said(&cause) || said(after_prefix) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&cause);
    }
    line.replace('\n', " ")
}

/// Help and version print as usual; a bad setting becomes one line that names its variable.
fn report_parse_error(error: clap::Error) -> ExitCode {
    match error.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => error.exit(),
        _ => {}
    }
    let arg = match error.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        Some(ContextValue::Strings(list)) => Some(list.join(", ")),
        _ => None,
    };
    let line = match (error.kind(), arg) {
        (ErrorKind::MissingRequiredArgument, Some(arg)) => {
            format!("missing setting: {} is not set", setting_name(&arg))
        }
        (ErrorKind::ValueValidation | ErrorKind::InvalidValue, Some(arg)) => {
            let reason = error
                .source()
                .map(|s| s.to_string())
                .unwrap_or_else(|| "invalid value".into());
            format!("invalid setting: {}: {reason}", setting_name(&arg))
        }
        _ => error
            .render()
            .to_string()
            .lines()
            .next()
            .unwrap_or("invalid command line")
            .trim_start_matches("error: ")
            .to_owned(),
    };
    eprintln!("usersync: {line}");
    ExitCode::from(2)
}

/// `--listen <USERSYNC_LISTEN>` → `USERSYNC_LISTEN (--listen)`: the variable is the documented
/// name, the flag the alternative.
fn setting_name(arg: &str) -> String {
    match (arg.find('<'), arg.find('>')) {
        (Some(open), Some(close)) if close > open => {
            let var = &arg[open + 1..close];
            let flag = arg[..open].trim();
            format!("{var} ({flag})")
        }
        _ => arg.to_owned(),
    }
}

use std::error::Error as _;

/// `usersync reconcile`: the same engine the API runs, in this process, with a progress bar
/// on a terminal and a summary table at the end.
async fn reconcile(args: ReconcileArgs) -> anyhow::Result<ExitCode> {
    args.reconcile.check().map_err(anyhow::Error::msg)?;
    let pool = db::pool(&args.database.pool_settings());
    let bound = startup::bind(&pool, Mapping::load(args.mapping.mapping.as_deref())?).await?;
    let reconciler = Reconciler::new(
        pool,
        std::sync::Arc::new(bound),
        args.reconcile.policies(),
        args.reconcile.walking(),
        args.reconcile.admin_api(),
    );
    let options = RunOptions {
        dry_run: args.dry_run,
        kinds: if args.kinds.is_empty() {
            DriftKind::ALL.to_vec()
        } else {
            args.kinds
        },
        limit: args.limit,
        allow_mass_delete: args.allow_mass_delete,
        ..RunOptions::default()
    };
    let active = match reconciler.start("cli", options).await {
        Ok(active) => active,
        Err(StartError::InProgress { run_id }) => {
            let which = run_id.map(|id| format!(" ({id})")).unwrap_or_default();
            anyhow::bail!("another reconciliation run is in progress{which}");
        }
        Err(StartError::Database(e)) => return Err(e.into()),
    };
    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::new(0)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {bar:40} {pos}/{len} rows, {per_sec}, eta {eta} {msg}",
        )
        .expect("the template is valid"),
    );
    let progress_bar = bar.clone();
    let walker = reconciler.clone();
    let run = reconciler
        .execute(active, &move |run: &Run| {
            if let Some(plan) = &run.plan {
                progress_bar.set_length(walker.rows_to_walk(&run.options, plan));
            }
            progress_bar.set_position(run.progress.walked);
            progress_bar.set_message(format!("{} repaired", run.progress.total_repaired()));
        })
        .await;
    bar.finish_and_clear();
    print!("{}", render_run(&run));
    Ok(if run.state == RunState::Succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn repair(args: RepairArgs) -> anyhow::Result<ExitCode> {
    args.reconcile.check().map_err(anyhow::Error::msg)?;
    let pool = db::pool(&args.database.pool_settings());
    let bound = std::sync::Arc::new(
        startup::bind(&pool, Mapping::load(args.mapping.mapping.as_deref())?).await?,
    );
    let reconciler = Reconciler::new(
        pool.clone(),
        bound.clone(),
        args.reconcile.policies(),
        args.reconcile.walking(),
        args.reconcile.admin_api(),
    );
    let id = match (args.user, &args.email) {
        (Some(id), _) => id,
        (None, Some(email)) => user_repair::user_by_email(&pool, &bound, email).await?,
        (None, None) => unreachable!("clap requires --user or --email"),
    };
    let outcome = user_repair::repair_user(
        &reconciler,
        &pool,
        &bound,
        id,
        args.action,
        args.dry_run,
        "cli",
    )
    .await?;
    println!(
        "{} {} {} ({} drift)",
        if outcome.dry_run {
            "would"
        } else {
            "repaired:"
        },
        outcome.action.as_str(),
        outcome.user_id,
        outcome.kind.as_str()
    );
    print!("{}", render_run(&outcome.run));
    Ok(ExitCode::SUCCESS)
}

/// A run as a table: per kind, the action, the drift planned and what was repaired or failed.
fn render_run(run: &Run) -> String {
    let mut out = format!(
        "run {} {}{}\n",
        run.id,
        run.state.as_str(),
        if run.options.dry_run {
            " (dry run)"
        } else {
            ""
        }
    );
    out.push_str(&format!(
        "{:<12}{:<11}{:>10}{:>10}{:>8}\n",
        "kind", "action", "drifted", "repaired", "failed"
    ));
    if let Some(plan) = &run.plan {
        for (kind, planned) in &plan.kinds {
            out.push_str(&format!(
                "{:<12}{:<11}{:>10}{:>10}{:>8}\n",
                kind.as_str(),
                planned.action.as_str(),
                planned.count,
                run.progress.repaired.get(kind).copied().unwrap_or(0),
                run.progress.failed.get(kind).copied().unwrap_or(0),
            ));
        }
        for rekey in &plan.rekeys {
            let moves: Vec<String> = rekey
                .references
                .iter()
                .map(|r| format!("{}.{} ({} rows)", r.table, r.column, r.rows))
                .collect();
            out.push_str(&format!(
                "rekey {} -> {}: {}{}\n",
                rekey.target_id,
                rekey.source_id,
                if moves.is_empty() {
                    "no references".to_owned()
                } else {
                    moves.join(", ")
                },
                rekey
                    .refused
                    .as_deref()
                    .map(|r| format!(" REFUSED: {r}"))
                    .unwrap_or_default()
            ));
        }
        if plan.deletes > 0 {
            out.push_str(&format!(
                "deletes {} of {} target rows (at most {} without --allow-mass-delete)\n",
                plan.deletes, plan.target_total, plan.max_deletes
            ));
        }
    }
    for failure in &run.progress.failures {
        out.push_str(&format!(
            "failed {} {}: {}\n",
            failure.kind.as_str(),
            failure.id,
            failure.reason
        ));
    }
    if let Some(error) = &run.error {
        out.push_str(&format!("error: {error}\n"));
    }
    out
}

fn render_status(status: &sync::status::Status) -> String {
    let c = &status.counts;
    let d = &c.drift;
    let rows = [
        ("source users (auth.users)", c.source_total),
        ("target users", c.target_total),
    ]
    .into_iter()
    .chain(DriftKind::ALL.map(|kind| (kind.as_str(), d.of(kind))))
    .chain([("dead letters pending", c.dead_letters_pending)]);
    let mut out = String::new();
    for (label, value) in rows {
        out.push_str(&format!("{label:<28}{value:>12}\n"));
    }
    let last = match &status.last_run {
        Some(run) => format!(
            "{} ({}, started {})",
            run.id,
            run.state.as_str(),
            run.started_at
        ),
        None => "never".to_owned(),
    };
    out.push_str(&format!("{:<28}{last}\n", "last run"));
    out
}
