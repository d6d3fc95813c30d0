//! The command line.

#[macro_use]
mod out;

mod agent;
mod client;
mod db;
mod exit;
mod image;
mod jobs;
mod keep;
mod package;
mod progress;
mod run;
mod runs;
mod schedule;
mod shell;
mod token;
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
        cmd: jobs::JobsCmd,
    },
    /// Inspect runs on a server.
    Runs {
        #[command(flatten)]
        server: client::ServerArgs,
        #[command(subcommand)]
        cmd: runs::RunsCmd,
    },
    /// Analysis workers: fresh machines with your SSH key and a hard lifetime, to develop and
    /// test a job before scheduling it (through a server, or --compute ec2 without one).
    Worker(Box<worker::WorkerArgs>),
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        cmd: token::TokenCmd,
    },
    /// The images runs start from (as root, each run is a machine of its own on a throwaway
    /// copy of one).
    Image {
        #[command(subcommand)]
        cmd: image::ImageCmd,
    },
    /// Operate on the server's database.
    Db {
        #[command(subcommand)]
        cmd: db::DbCmd,
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
        Command::Jobs { server, cmd } => jobs::jobs(server, cmd).await,
        Command::Runs { server, cmd } => runs::runs(server, cmd).await,
        Command::Worker(a) => worker::worker(*a).await,
        Command::Token { cmd } => token::token(cmd).await,
        Command::Image { cmd } => image::image(cmd),
        Command::Db { cmd } => db::db(cmd).await,
    }
}
