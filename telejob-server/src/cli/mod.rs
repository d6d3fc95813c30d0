//! The command line.

mod agent;
mod client;
mod exit;
mod package;
mod progress;
mod run;
mod schedule;
mod worker;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// telejob schedules analysis jobs: it fetches a code tarball onto a fresh machine, runs a bash
/// command under a timeout, and publishes the output directory to `<store>/<job>/data/`.
///
/// Test a job locally with `telejob run`, package it with `telejob package`, preview a schedule
/// with `telejob schedule`.
#[derive(Debug, Parser)]
#[command(
    name = "telejob",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a job once, now, with exactly the pipeline scheduled runs use.
    ///
    /// Fetches the code, unpacks it into a fresh workspace, runs the command there under the
    /// timeout (killing everything it started when time is up), and publishes every file of the
    /// output directory to <publish-to>/<job-name>/data/. Exit status: 0 succeeded, 1 the job
    /// failed, 124 timed out, 2 bad input, 130 interrupted.
    Run(Box<run::RunArgs>),
    /// Make a code tarball (.tar.gz) of a directory.
    ///
    /// Files, directories and symlinks (as links) are archived with paths relative to DIR; .git
    /// is left out. The tarball is checked with the same unpacker runs use.
    Package(package::PackageArgs),
    /// Print the next fire times of a schedule.
    ///
    /// Times are printed one per line in UTC (RFC 3339), strictly after --from.
    Schedule(schedule::ScheduleArgs),
    /// Execute one run request (JSON) with the pipeline; used on remote machines.
    Agent(agent::AgentArgs),
    /// Run the server: JSON API, dashboard and scheduler, with its state in SQLite (a data
    /// directory) or PostgreSQL (--database; several replicas, one runs the scheduler).
    ///
    /// On first start it creates the admin user and writes its token to <data-dir>/admin.token
    /// (mode 0600). Stops gracefully on SIGTERM or SIGINT (runs in flight are cancelled).
    Serve(crate::server::ServeArgs),
    /// Manage jobs on a server.
    Jobs {
        #[command(flatten)]
        server: client::ServerArgs,
        #[command(subcommand)]
        cmd: client::JobsCmd,
    },
    /// Inspect runs on a server.
    Runs {
        #[command(flatten)]
        server: client::ServerArgs,
        #[command(subcommand)]
        cmd: client::RunsCmd,
    },
    /// Analysis workers: fresh machines with your SSH key and a hard lifetime, to develop and
    /// test a job before scheduling it (through a server, or --compute ec2 without one).
    Worker(Box<worker::WorkerArgs>),
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        cmd: TokenCmd,
    },
    /// Operate on the server's database.
    Db {
        #[command(subcommand)]
        cmd: DbCmd,
    },
}

#[derive(Debug, Subcommand)]
enum DbCmd {
    /// Copy an installation's whole state (users, token hashes, jobs, code versions, runs,
    /// secrets, sessions…) into an empty database, in one transaction, then check the row
    /// counts of every table. Stop the servers first.
    Copy {
        /// The source: sqlite:PATH (for example sqlite:telejob-data/telejob.db).
        #[arg(long, value_name = "DATABASE")]
        from: crate::server::Location,
        /// The target: postgres://user:password@host:port/database (or sqlite:PATH).
        #[arg(long, value_name = "DATABASE")]
        to: crate::server::Location,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCmd {
    /// Print a new token for USER (created if missing), writing directly to the server's
    /// database: run it on the server's host.
    Create {
        /// The user.
        #[arg(long)]
        user: String,
        /// The server's data directory.
        #[arg(long, env = "TELEJOB_DATA_DIR", default_value = "telejob-data")]
        data_dir: std::path::PathBuf,
        /// The server's database, as `serve` takes it (default: sqlite:<data-dir>/telejob.db).
        #[arg(long, env = "TELEJOB_DATABASE_URL", value_name = "DATABASE")]
        database: Option<crate::server::Location>,
        /// Make the user an admin.
        #[arg(long)]
        admin: bool,
    },
}

/// Runs the chosen subcommand.
pub async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(a) => run::run(*a).await,
        Command::Package(a) => package::package(a).await,
        Command::Schedule(a) => schedule::schedule(a),
        Command::Agent(a) => agent::agent(a).await,
        Command::Serve(a) => crate::server::serve(a).await,
        Command::Jobs { server, cmd } => client::jobs(server, cmd).await,
        Command::Runs { server, cmd } => client::runs(server, cmd).await,
        Command::Worker(a) => worker::worker(*a).await,
        Command::Token {
            cmd:
                TokenCmd::Create {
                    user,
                    data_dir,
                    database,
                    admin,
                },
        } => {
            let token =
                crate::server::create_token(&data_dir, database.as_ref(), &user, admin).await?;
            println!("{token}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Db {
            cmd: DbCmd::Copy { from, to },
        } => {
            for (table, rows) in crate::server::copy_database(&from, &to).await? {
                println!("{table}: {rows}");
            }
            eprintln!("telejob: copied {from} into {to}; every table's row count matches");
            Ok(ExitCode::SUCCESS)
        }
    }
}
