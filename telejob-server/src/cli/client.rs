//! Client verbs against a telejob server: `telejob jobs …`, `telejob runs …`, `telejob token …`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use telejob_core::run::RunState;

use crate::error::bad;

/// Where the server is and who we are.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// The server's URL.
    #[arg(
        long,
        env = "TELEJOB_SERVER",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    server: String,
    /// An API token. Default: TELEJOB_TOKEN, else the admin token of --data-dir.
    #[arg(long, env = "TELEJOB_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// A server data directory whose admin.token to use when no token is given.
    #[arg(
        long,
        env = "TELEJOB_DATA_DIR",
        default_value = "telejob-data",
        global = true
    )]
    data_dir: PathBuf,
}

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
}

pub(super) struct Client {
    pub(super) http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    pub(super) fn new(a: &ServerArgs) -> anyhow::Result<Self> {
        let token = match &a.token {
            Some(t) => t.clone(),
            None => {
                let f = a.data_dir.join("admin.token");
                std::fs::read_to_string(&f).map(|s| s.trim().to_string()).map_err(|_| {
                    bad(format!(
                        "no token: pass --token or set TELEJOB_TOKEN (or point --data-dir at the server's data directory; {} is not readable)",
                        f.display()
                    ))
                })?
            }
        };
        Ok(Self {
            http: reqwest::Client::new(),
            base: a.server.trim_end_matches('/').to_string(),
            token,
        })
    }

    pub(super) async fn send(
        &self,
        req: reqwest::RequestBuilder,
    ) -> anyhow::Result<reqwest::Response> {
        let r = req
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {}", self.base))?;
        if r.status().is_success() {
            return Ok(r);
        }
        let status = r.status();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        let msg = body["error"]
            .as_str()
            .map_or_else(|| status.to_string(), str::to_string);
        if status.is_client_error() {
            Err(bad(format!("{msg} (HTTP {})", status.as_u16())))
        } else {
            Err(anyhow::anyhow!("{msg} (HTTP {})", status.as_u16()))
        }
    }

    pub(super) async fn json(&self, req: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        Ok(self.send(req).await?.json().await?)
    }

    pub(super) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

fn print(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn run_line(r: &Value) -> String {
    format!(
        "{}  {:<11} {:<9} {}{}",
        r["id"].as_str().unwrap_or(""),
        r["state"].as_str().unwrap_or(""),
        r["trigger"].as_str().unwrap_or(""),
        r["scheduled_for"].as_str().unwrap_or(""),
        r["error"]
            .as_str()
            .map(|e| format!("  {e}"))
            .unwrap_or_default()
    )
}

fn exit_for(run: &Value) -> ExitCode {
    match serde_json::from_value::<RunState>(run["state"].clone()) {
        Ok(state) => super::exit::code(state, false),
        Err(_) => ExitCode::from(1),
    }
}

pub async fn jobs(a: ServerArgs, cmd: JobsCmd) -> anyhow::Result<ExitCode> {
    let c = Client::new(&a)?;
    match cmd {
        JobsCmd::Create(x) => {
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
                let extra: Value = serde_json::from_str(&extra)
                    .map_err(|e| bad(format!("--extra: not JSON: {e}")))?;
                for (k, v) in extra
                    .as_object()
                    .ok_or_else(|| bad("--extra: give a JSON object"))?
                {
                    body[k] = v.clone();
                }
            }
            let code = if x.code.is_dir() {
                let mut buf = Vec::new();
                telejob_core::archive::pack_dir(&x.code, &mut buf)?;
                buf
            } else {
                std::fs::read(&x.code)
                    .map_err(|e| bad(format!("--code {}: {e}", x.code.display())))?
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
            println!(
                "created {name}: {}; next run {}",
                job["schedule_description"].as_str().unwrap_or(""),
                job["next_run"].as_str().unwrap_or("-")
            );
        }
        JobsCmd::List => {
            let jobs = c.json(c.http.get(c.url("/api/jobs"))).await?;
            for j in jobs.as_array().into_iter().flatten() {
                println!(
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
            println!("{id}");
            if wait {
                loop {
                    let run = c
                        .json(c.http.get(c.url(&format!("/api/runs/{id}?wait=300"))))
                        .await?;
                    let terminal = !matches!(
                        run["state"].as_str(),
                        Some("pending" | "fetching" | "running" | "publishing")
                    );
                    if terminal {
                        eprintln!("{}", run_line(&run));
                        return Ok(exit_for(&run));
                    }
                }
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
            let plan = c
                .json(
                    c.http
                        .post(c.url(&format!("/api/jobs/{name}/backfill")))
                        .json(&body),
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
                println!(
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
                    let run = loop {
                        let run = c
                            .json(c.http.get(c.url(&format!("/api/runs/{id}?wait=300"))))
                            .await?;
                        if !matches!(
                            run["state"].as_str(),
                            Some("pending" | "fetching" | "running" | "publishing")
                        ) {
                            break run;
                        }
                    };
                    eprintln!("{}", run_line(&run));
                    all_ok &= run["state"].as_str() == Some("succeeded");
                }
                return Ok(if all_ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                });
            }
        }
        JobsCmd::Pause { name } => {
            c.send(c.http.post(c.url(&format!("/api/jobs/{name}/pause"))))
                .await?;
            println!("paused {name}");
        }
        JobsCmd::Resume { name } => {
            c.send(c.http.post(c.url(&format!("/api/jobs/{name}/resume"))))
                .await?;
            println!("resumed {name}");
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
                println!("deleted {name} and its published data");
            } else {
                println!("deleted {name}; its published data is kept and the name stays yours");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
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
            for r in runs.as_array().into_iter().flatten() {
                println!("{}", run_line(r));
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
            println!("{new}");
            if wait > 0 {
                print(
                    &c.json(c.http.get(c.url(&format!("/api/runs/{new}?wait={wait}"))))
                        .await?,
                );
            }
        }
        RunsCmd::Log { id } => {
            let body = c
                .send(c.http.get(c.url(&format!("/api/runs/{id}/log"))))
                .await?
                .bytes()
                .await?;
            use std::io::Write;
            std::io::stdout().write_all(&body)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
