//! `telejob runs …`: list, show, log, replay, cancel.

use std::process::ExitCode;

use clap::Subcommand;

use super::client::{Client, ServerArgs, print, run_line};

/// `telejob runs …`
#[derive(Debug, Subcommand)]
pub enum RunsCmd {
    /// A job's runs, newest first.
    List {
        /// The job.
        job: String,
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// One run in full.
    Show {
        /// The run id.
        id: String,
        /// Wait up to this many seconds for it to finish.
        #[arg(long, default_value_t = 0)]
        wait: u64,
    },
    /// A run's log (owners and maintainers).
    Log {
        /// The run id.
        id: String,
    },
    /// Run again exactly what a run ran: its code version, command, output directory,
    /// environment, timeout and scheduled-for time (the job's current secrets apply). Prints
    /// the new run's id.
    Replay {
        /// The run to replay.
        id: String,
        /// Wait up to this many seconds for the replay to finish, and print it.
        #[arg(long, default_value_t = 0)]
        wait: u64,
    },
    /// Cancel a run in flight (owners and maintainers): its processes are ended and it is
    /// recorded `cancelled`. Waits for that and prints the run's line.
    Cancel {
        /// The run id.
        id: String,
    },
}

pub async fn runs(a: ServerArgs, cmd: RunsCmd) -> anyhow::Result<ExitCode> {
    let c = Client::new(&a)?;
    match cmd {
        RunsCmd::List { job, limit } => {
            let runs = c
                .json(
                    c.http
                        .get(c.url(&format!("/api/jobs/{job}/runs?limit={limit}"))),
                )
                .await?;
            if runs.as_array().is_none_or(Vec::is_empty) {
                eprintln!("No runs of {job} yet.");
            }
            for r in runs.as_array().into_iter().flatten() {
                say!("{}", run_line(r));
            }
        }
        RunsCmd::Show { id, wait } => print(
            &c.json(c.http.get(c.url(&format!("/api/runs/{id}?wait={wait}"))))
                .await?,
        ),
        RunsCmd::Replay { id, wait } => {
            let r = c
                .json(c.http.post(c.url(&format!("/api/runs/{id}/replay"))))
                .await?;
            let new = r["run_id"].as_str().unwrap_or_default().to_string();
            say!("{new}");
            if wait > 0 {
                print(
                    &c.json(c.http.get(c.url(&format!("/api/runs/{new}?wait={wait}"))))
                        .await?,
                );
            }
        }
        RunsCmd::Cancel { id } => {
            c.send(c.http.post(c.url(&format!("/api/runs/{id}/cancel"))))
                .await?;
            let run = c.wait_run(&id).await?;
            say!("{}", run_line(&run));
        }
        RunsCmd::Log { id } => {
            let body = c
                .send(c.http.get(c.url(&format!("/api/runs/{id}/log"))))
                .await?
                .bytes()
                .await?;
            super::out::bytes(&body);
        }
    }
    Ok(ExitCode::SUCCESS)
}
