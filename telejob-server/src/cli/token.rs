//! `telejob token …`: API tokens made on the server's host.

use std::process::ExitCode;

use clap::Subcommand;

/// `telejob token …`
#[derive(Debug, Subcommand)]
pub enum TokenCmd {
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

/// Runs `telejob token …`.
pub async fn token(cmd: TokenCmd) -> anyhow::Result<ExitCode> {
    let TokenCmd::Create {
        user,
        data_dir,
        database,
        admin,
    } = cmd;
    let token = crate::server::create_token(&data_dir, database.as_ref(), &user, admin).await?;
    say!("{token}");
    Ok(ExitCode::SUCCESS)
}
