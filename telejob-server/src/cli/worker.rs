//! `telejob worker …`: analysis workers, through a server or, with `--compute ec2 --config
//! FILE`, straight on EC2 (their state is then the instances' tags).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use serde_json::{Value, json};
use telejob_core::worker::{self, SshPublicKey, WorkerInstance, WorkerLaunch};

use super::client::{Client, ServerArgs, text_or};
use super::out::{Format, OutputArg};
use crate::error::bad;

/// `telejob worker …`
#[derive(Debug, Args)]
pub struct WorkerArgs {
    #[command(subcommand)]
    cmd: WorkerCmd,
}

// `telejob worker launch`'s options (a plain comment: clap would take a doc comment for the
// verb's help, which is the variant's).
#[derive(Debug, Args)]
struct LaunchArgs {
    /// Its name (default: made up).
    #[arg(long)]
    name: Option<String>,
    /// Your OpenSSH public key file (such as ~/.ssh/id_ed25519.pub).
    #[arg(long, value_name = "FILE")]
    ssh_key: PathBuf,
    /// How long it lives (such as 4h, 90m).
    #[arg(long, default_value = "4h")]
    lifetime: String,
    /// An allowed instance type (default: the server's default).
    #[arg(long)]
    instance_type: Option<String>,
    /// A webhook for "ends in 1 hour" and "ended" (default: your profile's).
    #[arg(long)]
    webhook: Option<String>,
    /// An email address for them (repeatable).
    #[arg(long)]
    email: Vec<String>,
    /// Print the worker as launched, without waiting for its address.
    #[arg(long)]
    no_wait: bool,
    #[command(flatten)]
    remote: Remote,
}

/// Where the workers are: a server, or EC2 directly. The options of every verb but `shell`
/// (a local worker, which needs neither).
#[derive(Debug, Clone, Args)]
pub struct Remote {
    #[command(flatten)]
    server: ServerArgs,
    /// Without a server: `ec2` launches and follows workers directly from --config's `[aws]`
    /// and `[ec2]` tables.
    #[arg(long, value_name = "ec2")]
    compute: Option<String>,
    /// The config file (a server's) for --compute ec2.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum WorkerCmd {
    /// Launch a worker: a fresh machine like a run's with your SSH key, ended at its lifetime.
    /// Prints its address and a ready ssh command line once it runs.
    Launch(LaunchArgs),
    /// Your workers.
    List {
        #[command(flatten)]
        output: OutputArg,
        #[command(flatten)]
        remote: Remote,
    },
    /// One worker.
    Show {
        /// The worker.
        name: String,
        #[command(flatten)]
        output: OutputArg,
        #[command(flatten)]
        remote: Remote,
    },
    /// Make a worker live longer (within the server's maximum lifetime from its launch).
    Extend {
        /// The worker.
        name: String,
        /// How much longer (such as 2h).
        #[arg(long)]
        by: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// End a worker now.
    Terminate {
        /// The worker.
        name: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// A local worker: an interactive shell in a fresh workspace with the code unpacked, in
    /// the same sandbox as a run, ended with everything it started at its lifetime; on exit it
    /// lists what the output directory would publish and removes the workspace.
    Shell(super::shell::ShellArgs),
}

/// The text of `--ssh-key FILE`.
fn read_key(path: &std::path::Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).map_err(|e| bad(format!("--ssh-key {}: {e}", path.display())))
}

/// One worker in a line: name, state, type, address, end.
fn line(w: &Value) -> String {
    format!(
        "{:<24} {:<10} {:<12} {:<16} ends {}",
        text_or(w, "name", ""),
        text_or(w, "state", ""),
        text_or(w, "instance_type", ""),
        text_or(w, "address", "-"),
        text_or(w, "deadline", "-")
    )
}

/// Prints workers as `-o` asks.
fn list(all: &[Value], format: Format) {
    if format == Format::Json {
        say!("{}", serde_json::to_string_pretty(all).unwrap_or_default());
        return;
    }
    if all.is_empty() {
        eprintln!("No workers.");
        return;
    }
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|w| {
            let mut row: Vec<String> = ["name", "state", "instance_type", "address", "deadline"]
                .iter()
                .map(|k| super::out::cell(&w[*k]))
                .collect();
            if format == Format::Wide {
                row.extend(["launched_at", "id"].map(|k| super::out::cell(&w[k])));
            }
            row
        })
        .collect();
    let mut header = vec!["NAME", "STATE", "TYPE", "ADDRESS", "ENDS"];
    if format == Format::Wide {
        header.extend(["LAUNCHED", "ID"]);
    }
    super::out::table(&header, &rows);
}

/// Runs a `telejob worker` command.
pub async fn worker(a: WorkerArgs) -> anyhow::Result<ExitCode> {
    let remote = match &a.cmd {
        WorkerCmd::Shell(_) => None,
        WorkerCmd::Launch(LaunchArgs { remote, .. })
        | WorkerCmd::List { remote, .. }
        | WorkerCmd::Show { remote, .. }
        | WorkerCmd::Extend { remote, .. }
        | WorkerCmd::Terminate { remote, .. } => Some(remote.clone()),
    };
    let Some(remote) = remote else {
        let WorkerCmd::Shell(s) = a.cmd else {
            unreachable!("only shell has no remote")
        };
        return super::shell::shell(s).await;
    };
    match remote.compute.as_deref() {
        None => through_server(remote, a.cmd).await,
        Some("ec2") => direct(remote, a.cmd).await,
        Some(o) => Err(bad(format!(
            "--compute {o}: use ec2 (or no --compute, to go through a server); a local worker is `telejob worker shell`"
        ))),
    }
}

async fn through_server(remote: Remote, cmd: WorkerCmd) -> anyhow::Result<ExitCode> {
    let c = Client::new(&remote.server)?;
    match cmd {
        WorkerCmd::Launch(l) => {
            let key = read_key(&l.ssh_key)?;
            let mut body = json!({"ssh_key": key, "lifetime": l.lifetime});
            if let Some(n) = l.name {
                body["name"] = json!(n);
            }
            if let Some(t) = l.instance_type {
                body["instance_type"] = json!(t);
            }
            if l.webhook.is_some() || !l.email.is_empty() {
                body["notify"] = json!({"webhook": l.webhook, "email": l.email});
            }
            let w = c
                .json(c.http.post(c.url("/api/workers")).json(&body))
                .await?;
            let name = w["name"].as_str().unwrap_or_default().to_string();
            eprintln!("launched worker {name}; waiting for its address…");
            let w = if l.no_wait {
                w
            } else {
                let deadline = Instant::now() + Duration::from_secs(600);
                loop {
                    let w = c
                        .json(c.http.get(c.url(&format!("/api/workers/{name}"))))
                        .await?;
                    if w["state"] == "running" && w["address"].is_string() {
                        break w;
                    }
                    if w["state"] == "ended" || Instant::now() > deadline {
                        return Err(anyhow::anyhow!(
                            "worker {name} did not come up: {}",
                            w["end_reason"]
                                .as_str()
                                .unwrap_or("still not running after 10 minutes")
                        ));
                    }
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            };
            say!("{}", line(&w));
            if let Some(ssh) = w["ssh"].as_str() {
                say!("{ssh}");
            }
        }
        WorkerCmd::List { output: o, .. } => {
            let all = c.json(c.http.get(c.url("/api/workers"))).await?;
            list(all.as_array().map_or(&[], Vec::as_slice), o.output);
        }
        WorkerCmd::Show { name, output, .. } => super::out::show(
            &c.json(c.http.get(c.url(&format!("/api/workers/{name}"))))
                .await?,
            output.output,
        ),
        WorkerCmd::Extend { name, by, .. } => {
            let w = c
                .json(
                    c.http
                        .post(c.url(&format!("/api/workers/{name}/extend")))
                        .json(&json!({ "by": by })),
                )
                .await?;
            say!("{}", line(&w));
        }
        WorkerCmd::Terminate { name, .. } => {
            let w = c
                .json(c.http.delete(c.url(&format!("/api/workers/{name}"))))
                .await?;
            say!("{}", line(&w));
        }
        WorkerCmd::Shell(_) => unreachable!("handled above"),
    }
    Ok(ExitCode::SUCCESS)
}

/// [`line`] for a worker as EC2 knows it (the same fields).
fn instance_line(w: &WorkerInstance) -> String {
    line(&serde_json::to_value(w).unwrap_or_default())
}

async fn direct(remote: Remote, cmd: WorkerCmd) -> anyhow::Result<ExitCode> {
    let path = remote
        .config
        .ok_or_else(|| bad("--compute ec2 needs --config FILE with [aws] and [ec2] tables"))?;
    let cfg = crate::config::Config::load(&path)?;
    if cfg.ec2.is_none() {
        return Err(bad(format!(
            "--config {}: add an [ec2] table",
            path.display()
        )));
    }
    let policy = cfg.worker_policy()?;
    let ec2 = crate::backends::remote_workers(&cfg.aws_config()).await?;
    let found = |name: &str, w: Option<WorkerInstance>| {
        w.ok_or_else(|| bad(format!("no live worker is named {name:?}")))
    };
    match cmd {
        WorkerCmd::Launch(l) => {
            let key = SshPublicKey::parse(&read_key(&l.ssh_key)?)?;
            let life = worker::parse_lifetime("lifetime", &l.lifetime)?;
            worker::check_lifetime("lifetime", life, policy.max_lifetime)?;
            let name = l.name.unwrap_or_else(worker::made_up_name);
            let owner = std::env::var("USER").unwrap_or_else(|_| "cli".into());
            let mut w = ec2
                .launch(&WorkerLaunch {
                    name: &name,
                    owner: &owner,
                    key: &key,
                    deadline: chrono::Utc::now()
                        + chrono::Duration::from_std(life).unwrap_or_default(),
                    hard_stop: policy.max_lifetime,
                    instance_type: l.instance_type.as_deref(),
                })
                .await?;
            let deadline = Instant::now() + Duration::from_secs(600);
            while !l.no_wait && (w.state != "running" || w.address.is_none()) {
                if Instant::now() > deadline {
                    return Err(anyhow::anyhow!(
                        "worker {name} is not running after 10 minutes"
                    ));
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
                w = found(&name, ec2.get(&name).await?)?;
            }
            say!("{}", instance_line(&w));
            if let Some(ssh) = w.ssh_command() {
                say!("{ssh}");
            }
        }
        WorkerCmd::List { output: o, .. } => {
            let all: Vec<Value> = ec2
                .list()
                .await?
                .iter()
                .map(|w| serde_json::to_value(w).unwrap_or_default())
                .collect();
            list(&all, o.output);
        }
        WorkerCmd::Show { name, output, .. } => super::out::show(
            &serde_json::to_value(found(&name, ec2.get(&name).await?)?)?,
            output.output,
        ),
        WorkerCmd::Extend { name, by, .. } => {
            let w = found(&name, ec2.get(&name).await?)?;
            let by = worker::parse_lifetime("by", &by)?;
            let now = chrono::Utc::now();
            let deadline = w.deadline.unwrap_or(now).max(now)
                + chrono::Duration::from_std(by).unwrap_or_default();
            let total = (deadline - w.launched_at.unwrap_or(now))
                .to_std()
                .unwrap_or_default();
            worker::check_lifetime("by", total, policy.max_lifetime)?;
            ec2.set_deadline(&w.instance_id, deadline).await?;
            let w = found(&name, ec2.get(&name).await?)?;
            say!("{}", instance_line(&w));
        }
        WorkerCmd::Terminate { name, .. } => {
            let w = found(&name, ec2.get(&name).await?)?;
            ec2.terminate(&w.instance_id).await?;
            say!("terminated worker {name} ({})", w.instance_id);
        }
        WorkerCmd::Shell(_) => unreachable!("handled above"),
    }
    Ok(ExitCode::SUCCESS)
}
