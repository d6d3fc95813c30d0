//! `telejob jobs …`: create, list, show, get, apply, edit, code, run now, pause, resume,
//! backfill, delete.

mod apply;
mod settings;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::client::{Client, ServerArgs, exit_for, run_line};
use super::out::{Format, OutputArg};
use crate::error::bad;
pub use apply::{ApplyArgs, EditArgs, GetArgs};
pub use settings::SettingsArgs;

/// `telejob jobs …`
#[derive(Debug, Subcommand)]
pub enum JobsCmd {
    /// Create a job from a code tarball (or directory) and schedule it.
    Create(Box<CreateArgs>),
    /// List the jobs you can see.
    List(OutputArg),
    /// Show a job: its settings, state, schedule, next run and code versions.
    Show {
        /// The job.
        name: String,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Print a job's settings as a file `jobs apply -f` takes unchanged.
    Get(GetArgs),
    /// Create or update jobs from a file (TOML or JSON; `-` reads standard input): prints what
    /// changes, and changes nothing when the file says what the job already is.
    Apply(ApplyArgs),
    /// Change some of a job's settings; the others stay as they are.
    Edit(Box<EditArgs>),
    /// Upload a new code version of a job (a tarball, or a directory packed as `telejob
    /// package` does); it becomes the current one.
    Code {
        /// The job.
        name: String,
        /// The tarball or directory.
        #[arg(value_name = "TARBALL|DIR")]
        code: PathBuf,
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
    #[command(flatten)]
    settings: SettingsArgs,
}

pub async fn jobs(a: ServerArgs, cmd: JobsCmd) -> anyhow::Result<ExitCode> {
    let c = Client::new(&a)?;
    match cmd {
        JobsCmd::Create(x) => create(&c, *x).await?,
        JobsCmd::List(o) => list(&c, o.output).await?,
        JobsCmd::Show { name, output } => super::out::show(
            &c.json(c.http.get(c.url(&format!("/api/jobs/{name}"))))
                .await?,
            output.output,
        ),
        JobsCmd::Get(a) => apply::get(&c, a).await?,
        JobsCmd::Apply(a) => apply::apply(&c, a).await?,
        JobsCmd::Edit(a) => apply::edit(&c, *a).await?,
        JobsCmd::Code { name, code } => {
            let up = upload(&c, &name, read_code(&code)?, &code).await?;
            warn(&[&up]);
            say!(
                "{name}: code {} is current",
                up["sha256"].as_str().unwrap_or("")
            );
        }
        JobsCmd::RunNow { name, wait } => {
            let id = c.start_run(&format!("/api/jobs/{name}/runs")).await?;
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

/// `jobs list`.
async fn list(c: &Client, format: Format) -> anyhow::Result<()> {
    let jobs = c.json(c.http.get(c.url("/api/jobs"))).await?;
    let jobs = jobs.as_array().cloned().unwrap_or_default();
    if format == Format::Json {
        super::client::print(&Value::Array(jobs));
        return Ok(());
    }
    if jobs.is_empty() {
        // On standard error, as kubectl does: a script counting lines counts none.
        eprintln!("No jobs.");
        return Ok(());
    }
    let state = |j: &Value| {
        if j["paused"].as_bool() == Some(true) {
            "paused"
        } else if j["expired"].as_bool() == Some(true) {
            "expired"
        } else {
            "active"
        }
    };
    let text = |j: &Value, k: &str| j[k].as_str().unwrap_or("-").to_string();
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|j| {
            let mut row = vec![
                text(j, "name"),
                state(j).into(),
                text(j, "schedule_description"),
                text(j, "next_run"),
            ];
            if format == Format::Wide {
                row.extend([
                    text(j, "owner"),
                    text(j, "output_visibility"),
                    format!("{}m", j["timeout_minutes"].as_u64().unwrap_or(0)),
                    text(j, "command"),
                ]);
            }
            row
        })
        .collect();
    let mut header = vec!["NAME", "STATE", "SCHEDULE", "NEXT RUN"];
    if format == Format::Wide {
        header.extend(["OWNER", "VISIBILITY", "TIMEOUT", "COMMAND"]);
    }
    super::out::table(&header, &rows);
    Ok(())
}

/// The bytes of `--code`: a tarball as it is, a directory packed.
fn read_code(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    if path.is_dir() {
        let mut buf = Vec::new();
        telejob_core::agent::archive::pack_dir(path, &mut buf)?;
        Ok(buf)
    } else {
        std::fs::read(path).map_err(|e| bad(format!("code {}: {e}", path.display())))
    }
}

/// Uploads `code` (read from `from`) as job `name`'s new current code version, named after
/// its file (a directory as `DIR/`).
async fn upload(
    c: &Client,
    name: &str,
    code: Vec<u8>,
    from: &std::path::Path,
) -> anyhow::Result<Value> {
    let mut file = from
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if from.is_dir() {
        file.push('/');
    }
    // A header carries visible ASCII: the name as it is in `filename*` (RFC 5987, UTF-8,
    // percent-encoded), and its ASCII characters alone in `filename` for other readers.
    let ascii: String = file
        .chars()
        .filter(|c| (c.is_ascii_graphic() || *c == ' ') && *c != '"' && *c != '\\')
        .collect();
    let encoded: String = form_urlencoded::byte_serialize(file.as_bytes()).collect();
    let mut req = c
        .http
        .put(c.url(&format!("/api/jobs/{name}/code")))
        .body(code);
    if !file.trim().is_empty() {
        req = req.header(
            reqwest::header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}"),
        );
    }
    c.json(req).await
}

/// Prints the `warnings` of each answer on standard error: they never block.
fn warn(answers: &[&Value]) {
    for w in answers
        .iter()
        .filter_map(|a| a["warnings"].as_array())
        .flatten()
    {
        eprintln!(
            "warning: {}: {}",
            w["field"].as_str().unwrap_or(""),
            w["message"].as_str().unwrap_or("")
        );
    }
}

/// `jobs create`: the job, then its code; a job whose code upload fails is deleted again.
async fn create(c: &Client, x: CreateArgs) -> anyhow::Result<()> {
    let mut body = settings::without_nulls(Value::Object(x.settings.patch()?));
    body["name"] = json!(x.name);
    let code = read_code(&x.code)?;
    let job = match c.json(c.http.post(c.url("/api/jobs")).json(&body)).await {
        Ok(job) => job,
        Err(e) if e.to_string().contains("exists already") => {
            return Err(bad(format!(
                "{e}; to change it: telejob jobs edit {n} --timeout 3h … (or jobs apply -f FILE), and telejob jobs code {n} DIR for new code",
                n = x.name
            )));
        }
        Err(e) => return Err(e),
    };
    let name = job["name"].as_str().unwrap_or_default().to_string();
    let up = match upload(c, &name, code, &x.code).await {
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
    warn(&[&job, &up]);
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
