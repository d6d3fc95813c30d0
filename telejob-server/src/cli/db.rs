//! `telejob db …`: operations on a server's database, from its host.

use std::process::ExitCode;

use clap::Subcommand;

/// `telejob db …`
#[derive(Debug, Subcommand)]
pub enum DbCmd {
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

/// Runs `telejob db …`.
pub async fn db(cmd: DbCmd) -> anyhow::Result<ExitCode> {
    let DbCmd::Copy { from, to } = cmd;
    for (table, rows) in crate::server::copy_database(&from, &to).await? {
        say!("{table}: {rows}");
    }
    eprintln!("telejob: copied {from} into {to}; every table's row count matches");
    Ok(ExitCode::SUCCESS)
}
