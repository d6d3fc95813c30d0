//! `telejob`: schedule analysis jobs that run on fresh machines and publish their results.
//!
//! This binary composes the library crates: the CLI, the server (API, scheduler, SQLite), and
//! the backends.

mod backends;
mod cli;
mod http_fetch;
mod server;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    telejob_core::sandbox::harden_current_process();
    let args = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TELEJOB_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,aws_config=error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("telejob: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(cli::dispatch(args)) {
        Ok(code) => code,
        Err(e) => {
            // One line, naming the problem; bad input exits 2.
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("telejob: {msg}");
            let bad_input = e
                .downcast_ref::<telejob_core::Error>()
                .is_some_and(telejob_core::Error::is_bad_input)
                || e.downcast_ref::<cli::BadInput>().is_some();
            ExitCode::from(if bad_input { 2 } else { 1 })
        }
    }
}
