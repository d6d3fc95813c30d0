//! `telejob`: schedule analysis jobs that run on fresh machines and publish their results.
//!
//! This binary composes the library crates: the CLI, the server (API, scheduler, SQLite), and
//! the backends.

mod backends;
mod cli;
mod config;
mod error;
mod http_fetch;
mod server;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // A run's init is this binary started again: it must not parse arguments or start threads.
    telejob_core::agent::sandbox::run_if_init();
    telejob_core::agent::sandbox::harden_current_process();
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
            let msg = one_line(&e);
            eprintln!("telejob: {msg}");
            let bad_input = e
                .downcast_ref::<telejob_core::Error>()
                .is_some_and(telejob_core::Error::is_bad_input)
                || e.downcast_ref::<error::BadInput>().is_some();
            ExitCode::from(if bad_input { 2 } else { 1 })
        }
    }
}

/// The error and its causes on one line, each cause once: errors that keep their source often
/// say it in their own message too.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string().replace('\n', " ");
        if line.contains(text.trim()) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(text.trim());
    }
    line
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn causes_are_said_once() {
        let io = std::io::Error::other("disk full");
        let e = anyhow::Error::new(telejob_core::Error::io("/x", io)).context("--publish-to /x");
        assert_eq!(one_line(&e), "--publish-to /x: /x: disk full");
        let plain = anyhow::anyhow!("first\nsecond");
        assert_eq!(one_line(&plain), "first second");
    }
}
