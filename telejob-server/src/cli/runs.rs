//! `telejob runs …`: list, show, log, replay, cancel.

use std::process::ExitCode;

use clap::Subcommand;

use super::client::{Client, ServerArgs, print, run_line};
use super::out::{Format, OutputArg};

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
        #[command(flatten)]
        output: OutputArg,
    },
    /// One run in full.
    Show {
        /// The run id.
        id: String,
        /// Wait up to this many seconds for it to finish.
        #[arg(long, default_value_t = 0)]
        wait: u64,
        #[command(flatten)]
        output: OutputArg,
    },
    /// A run's log (owners and maintainers); a run in flight has one a few seconds behind.
    Log {
        /// The run id.
        id: String,
        /// Keep printing as the run prints, until it ends; then exit with its outcome (0
        /// succeeded, 1 failed, 124 timed out).
        #[arg(short, long)]
        follow: bool,
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
        RunsCmd::List { job, limit, output } => {
            let runs = c
                .json(
                    c.http
                        .get(c.url(&format!("/api/jobs/{job}/runs?limit={limit}"))),
                )
                .await?;
            let runs = runs.as_array().cloned().unwrap_or_default();
            if output.output == Format::Json {
                print(&serde_json::Value::Array(runs));
            } else if runs.is_empty() {
                eprintln!("No runs of {job} yet.");
            } else {
                list(&runs, output.output);
            }
        }
        RunsCmd::Show { id, wait, output } => super::out::show(
            &c.json(c.http.get(c.url(&format!("/api/runs/{id}?wait={wait}"))))
                .await?,
            output.output,
        ),
        RunsCmd::Replay { id, wait } => {
            let new = c.start_run(&format!("/api/runs/{id}/replay")).await?;
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
        RunsCmd::Log { id, follow: true } => {
            let mut r = c
                .send(
                    c.http
                        .get(c.url(&format!("/api/runs/{id}/log?follow=true"))),
                )
                .await?;
            while let Some(part) = r.chunk().await? {
                super::out::bytes(&part);
            }
            let run = c.wait_run(&id).await?;
            return Ok(super::client::exit_for(&run));
        }
        RunsCmd::Log { id, follow: false } => {
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

/// `runs list` as a table; wide adds when it ran, its exit status and what it published.
fn list(runs: &[serde_json::Value], format: Format) {
    let text = |r: &serde_json::Value, k: &str| super::out::cell(&r[k]);
    let mut header = vec!["ID", "STATE", "TRIGGER", "SCHEDULED FOR"];
    if format == Format::Wide {
        header.extend(["STARTED", "FINISHED", "EXIT", "FILES"]);
    }
    header.push("ERROR");
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            let mut row = vec![
                text(r, "id"),
                text(r, "state"),
                text(r, "trigger"),
                text(r, "scheduled_for"),
            ];
            if format == Format::Wide {
                row.extend([
                    super::out::cell(&r["phases"]["run_started"]),
                    super::out::cell(&r["phases"]["finished"]),
                    text(r, "exit_code"),
                    r["published"].as_array().map_or(0, Vec::len).to_string(),
                ]);
            }
            row.push(r["error"].as_str().unwrap_or("").to_string());
            row
        })
        .collect();
    super::out::table(&header, &rows);
}
