//! `telejob jobs …`: create, list, show, run now, pause, resume, backfill, delete.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::client::{Client, ServerArgs, exit_for, print, run_line};
use crate::error::bad;

/// `telejob jobs …`
#[derive(Debug, Subcommand)]
pub enum JobsCmd {
    /// Create a job from a code tarball (or directory) and schedule it.
    Create(Box<CreateArgs>),
    /// List the jobs you can see.
    List,
    /// Show a job, its schedule and next run.
    Show {
        /// The job.
        name: String,
    },
    /// Run a job now (does not consume a scheduled slot).
    RunNow {
        /// The job.
        name: String,
        /// Wait for the run to finish and exit with its outcome (0, 1, 124).
        #[arg(long)]
        wait: bool,
    },
    /// Pause a job.
    Pause {
        /// The job.
        name: String,
    },
    /// Resume a paused job (slots missed while paused are not made up).
    Resume {
        /// The job.
        name: String,
    },
    /// Run the missed and failed slots of a date range again, each with its own scheduled-for
    /// time, oldest first (at most the job's backfill_concurrency at a time).
    ///
    /// A slot that succeeded is skipped unless --force; a slot with runs gets its next attempt.
    Backfill {
        /// The job.
        name: String,
        /// The first day, YYYY-MM-DD in the job's time zone.
        #[arg(long)]
        from: String,
        /// The last day, included.
        #[arg(long)]
        to: String,
        /// Which slots: missed, failed or missed,failed.
        #[arg(long, default_value = "missed,failed")]
        only: String,
        /// Run slots that succeeded too (as a new attempt).
        #[arg(long)]
        force: bool,
        /// Print the plan and run nothing.
        #[arg(long)]
        dry_run: bool,
        /// Wait for every run and exit 0 only if all succeeded.
        #[arg(long)]
        wait: bool,
    },
    /// Delete a job and what it owns: code versions, logs, run history, private output.
    ///
    /// Its published data is kept, and its name stays reserved to its owner, unless
    /// --purge-public-data deletes that too.
    Delete {
        /// The job.
        name: String,
        /// Delete its published data too (the name is then free for anyone).
        #[arg(long)]
        purge_public_data: bool,
    },
}

/// `telejob jobs create`
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The job's name (lowercase letters, digits, dashes): also its publish prefix.
    #[arg(long)]
    name: String,
    /// The code: a tarball or a directory (packed as `telejob package` does).
    #[arg(long, value_name = "TARBALL|DIR")]
    code: PathBuf,
    /// The bash command line, run from the code root.
    #[arg(long, default_value = "./run.sh")]
    command: String,
    /// The directory whose files are published, relative to the code root.
    #[arg(long, default_value = "output")]
    output_dir: String,
    /// daily, weekly (with --day-of-week), monthly (with --day-of-month) or cron (with --cron).
    #[arg(long, default_value = "daily")]
    frequency: String,
    /// For weekly jobs: monday … sunday.
    #[arg(long)]
    day_of_week: Option<String>,
    /// For monthly jobs: 1–31 (29–31: the last day of shorter months).
    #[arg(long)]
    day_of_month: Option<u8>,
    /// HH:MM in --timezone (default noon: yesterday's data may arrive late).
    #[arg(long, default_value = "12:00")]
    at: String,
    /// A five-field cron expression (with --frequency cron).
    #[arg(long, allow_hyphen_values = true)]
    cron: Option<String>,
    /// IANA time zone (default UTC).
    #[arg(long)]
    timezone: Option<String>,
    /// Minutes after which the run is killed.
    #[arg(long, default_value_t = 120)]
    timeout_minutes: u32,
    /// public or private output.
    #[arg(long, default_value = "public")]
    visibility: String,
    /// More fields as JSON (policies, env, notify…), merged over the flags.
    #[arg(long, value_name = "JSON")]
    extra: Option<String>,
}

pub async fn jobs(a: ServerArgs, cmd: JobsCmd) -> anyhow::Result<ExitCode> {
    let c = Client::new(&a)?;
    match cmd {
        JobsCmd::Create(x) => create(&c, *x).await?,
        JobsCmd::List => {
            let jobs = c.json(c.http.get(c.url("/api/jobs"))).await?;
            if jobs.as_array().is_none_or(Vec::is_empty) {
                // On standard error, as kubectl does: a script counting lines counts none.
                eprintln!("No jobs.");
            }
            for j in jobs.as_array().into_iter().flatten() {
                say!(
                    "{:<24} {:<8} {:<40} next {}",
                    j["name"].as_str().unwrap_or(""),
                    if j["paused"].as_bool() == Some(true) {
                        "paused"
                    } else if j["expired"].as_bool() == Some(true) {
                        "expired"
                    } else {
                        "active"
                    },
                    j["schedule_description"].as_str().unwrap_or(""),
                    j["next_run"].as_str().unwrap_or("-")
                );
            }
        }
        JobsCmd::Show { name } => print(
            &c.json(c.http.get(c.url(&format!("/api/jobs/{name}"))))
                .await?,
        ),
        JobsCmd::RunNow { name, wait } => {
            let r = c
                .json(c.http.post(c.url(&format!("/api/jobs/{name}/runs"))))
                .await?;
            let id = r["run_id"].as_str().unwrap_or_default().to_string();
            say!("{id}");
            if wait {
                let run = c.wait_run(&id).await?;
                eprintln!("{}", run_line(&run));
                return Ok(exit_for(&run));
            }
        }
        JobsCmd::Backfill {
            name,
            from,
            to,
            only,
            force,
            dry_run,
            wait,
        } => {
            let body =
                json!({"from": from, "to": to, "only": only, "force": force, "dry_run": dry_run});
            return backfill(&c, &name, &body, dry_run, wait).await;
        }
        JobsCmd::Pause { name } => {
            c.send(c.http.post(c.url(&format!("/api/jobs/{name}/pause"))))
                .await?;
            say!("paused {name}");
        }
        JobsCmd::Resume { name } => {
            c.send(c.http.post(c.url(&format!("/api/jobs/{name}/resume"))))
                .await?;
            say!("resumed {name}");
        }
        JobsCmd::Delete {
            name,
            purge_public_data,
        } => {
            let public = if purge_public_data { "purge" } else { "keep" };
            c.send(
                c.http
                    .delete(c.url(&format!("/api/jobs/{name}?public_data={public}"))),
            )
            .await?;
            if purge_public_data {
                say!("deleted {name} and its published data");
            } else {
                say!("deleted {name}; its published data is kept and the name stays yours");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `jobs create`: the job, then its code; a job whose code upload fails is deleted again.
async fn create(c: &Client, x: CreateArgs) -> anyhow::Result<()> {
    let mut schedule = json!({"frequency": x.frequency, "time_of_day": x.at});
    if let Some(d) = x.day_of_week {
        schedule["day_of_week"] = json!(d);
    }
    if let Some(d) = x.day_of_month {
        schedule["day_of_month"] = json!(d);
    }
    if let Some(e) = x.cron {
        schedule["cron"] = json!(e);
        schedule["frequency"] = json!("cron");
        schedule.as_object_mut().map(|o| o.remove("time_of_day"));
    }
    if let Some(tz) = x.timezone {
        schedule["timezone"] = json!(tz);
    }
    let mut body = json!({
        "name": x.name, "command": x.command, "output_dir": x.output_dir, "schedule": schedule,
        "timeout_minutes": x.timeout_minutes, "output_visibility": x.visibility,
    });
    if let Some(extra) = x.extra {
        let extra: Value =
            serde_json::from_str(&extra).map_err(|e| bad(format!("--extra: not JSON: {e}")))?;
        for (k, v) in extra
            .as_object()
            .ok_or_else(|| bad("--extra: give a JSON object"))?
        {
            body[k] = v.clone();
        }
    }
    let code = if x.code.is_dir() {
        let mut buf = Vec::new();
        telejob_core::agent::archive::pack_dir(&x.code, &mut buf)?;
        buf
    } else {
        std::fs::read(&x.code).map_err(|e| bad(format!("--code {}: {e}", x.code.display())))?
    };
    let job = c.json(c.http.post(c.url("/api/jobs")).json(&body)).await?;
    let name = job["name"].as_str().unwrap_or_default().to_string();
    let up = c
        .json(
            c.http
                .put(c.url(&format!("/api/jobs/{name}/code")))
                .body(code),
        )
        .await;
    let up = match up {
        Ok(up) => up,
        Err(e) => {
            // Leave nothing half-made behind.
            let _ = c
                .send(
                    c.http
                        .delete(c.url(&format!("/api/jobs/{name}?public_data=purge"))),
                )
                .await;
            return Err(e);
        }
    };
    // Warnings never block: what the spec and the code say, on stderr.
    for w in [&job["warnings"], &up["warnings"]]
        .into_iter()
        .filter_map(Value::as_array)
        .flatten()
    {
        eprintln!(
            "warning: {}: {}",
            w["field"].as_str().unwrap_or(""),
            w["message"].as_str().unwrap_or("")
        );
    }
    let job = c
        .json(c.http.get(c.url(&format!("/api/jobs/{name}"))))
        .await?;
    say!(
        "created {name}: {}; next run {}",
        job["schedule_description"].as_str().unwrap_or(""),
        job["next_run"].as_str().unwrap_or("-")
    );
    Ok(())
}

/// `jobs backfill`: the plan, and (with `wait`) every run's outcome.
async fn backfill(
    c: &Client,
    name: &str,
    body: &Value,
    dry_run: bool,
    wait: bool,
) -> anyhow::Result<ExitCode> {
    let plan = c
        .json(
            c.http
                .post(c.url(&format!("/api/jobs/{name}/backfill")))
                .json(body),
        )
        .await?;
    let mut ids = Vec::new();
    for slot in plan["slots"].as_array().into_iter().flatten() {
        let what = match (slot["run_id"].as_str(), slot["skip"].as_str()) {
            (Some(id), _) => {
                ids.push(id.to_string());
                format!("run {id}")
            }
            (None, Some(why)) => format!("skipped: {why}"),
            (None, None) => "would run".into(),
        };
        say!(
            "{}  {:<9} attempt {:<2} {what}",
            slot["slot"].as_str().unwrap_or(""),
            slot["status"].as_str().unwrap_or(""),
            slot["attempt"].as_u64().unwrap_or(0),
        );
    }
    if dry_run {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "{name}: {} backfill runs started, at most {} at a time",
        ids.len(),
        plan["concurrency"].as_u64().unwrap_or(1)
    );
    if wait {
        let mut all_ok = true;
        for id in ids {
            let run = c.wait_run(&id).await?;
            eprintln!("{}", run_line(&run));
            all_ok &= run["state"].as_str() == Some("succeeded");
        }
        return Ok(if all_ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    Ok(ExitCode::SUCCESS)
}
