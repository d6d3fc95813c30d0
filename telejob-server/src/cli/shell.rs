//! `telejob worker shell`: a local worker, an interactive shell in a run's sandbox.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use telejob_core::agent::sandbox::{CgroupMode, NamespaceMode};

use super::run::{RunArgs, VisibilityArg, parse_timeout, run_with};
use crate::backends::ComputeKind;
use crate::error::bad;

/// `telejob worker shell`: an interactive shell in a fresh workspace with the code unpacked,
/// in the same sandbox as a run (user, cgroup, namespaces, environment, `TELEJOB_*`
/// variables), killed with everything it started at its lifetime. When it exits, what the
/// output directory would publish is listed, and the workspace is removed.
#[derive(Debug, Args)]
pub struct ShellArgs {
    /// The code: a tarball, a directory, or a file:// or http(s):// URL.
    #[arg(long, value_name = "TARBALL|DIR|URL")]
    code: String,
    /// How long the shell may live; it and everything it started are killed then.
    #[arg(long, default_value = "4h", value_parser = parse_timeout)]
    lifetime: Duration,
    /// The output directory whose files are listed when the shell exits.
    #[arg(long, default_value = "output")]
    output_dir: String,
    /// An environment variable, KEY=VALUE; repeat for more.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// The job name the workspace is for (default: derived from --code).
    #[arg(long, value_name = "NAME")]
    job_name: Option<String>,
    /// Run the shell as this existing user (default as root: a UID of its own).
    #[arg(long, value_name = "USER")]
    run_as: Option<String>,
    /// The image the worker's machine starts from (as root; default: `default`).
    #[arg(long, value_name = "NAME")]
    image: Option<String>,
    /// When the shell ends (or its lifetime does), copy the code directory back here: each
    /// file written whole, files removed in the worker removed, `.git` untouched; a file
    /// changed here during the session is not overwritten (without --force).
    #[arg(long, value_name = "DIR")]
    save_to: Option<PathBuf>,
    /// When the shell ends, pack the code directory into this tarball (checked as `telejob
    /// package` does).
    #[arg(long, value_name = "FILE")]
    package: Option<PathBuf>,
    /// With --save-to or --package: overwrite what changed on this host during the session.
    #[arg(long)]
    force: bool,
}

/// The lifetime warnings of a worker shell: 10 minutes and 1 minute before its end.
fn warn_before_the_end(
    lifetime: Duration,
    keep: &super::keep::Keep,
) -> tokio::task::JoinHandle<()> {
    let start = tokio::time::Instant::now();
    let end = chrono::Utc::now() + chrono::Duration::from_std(lifetime).unwrap_or_default();
    let then = if keep.is_nothing() {
        "exit and keep your work: the workspace is discarded (--save-to and --package keep it)"
    } else {
        "exit, or it ends for you (your work is kept as asked)"
    }
    .to_string();
    tokio::spawn(async move {
        for before in [Duration::from_secs(600), Duration::from_secs(60)] {
            if lifetime <= before {
                continue;
            }
            tokio::time::sleep_until(start + (lifetime - before)).await;
            eprint!(
                "\r\ntelejob: this worker ends in {} (at {} UTC), with everything it started: {then}\r\n",
                humantime::format_duration(before),
                end.format("%H:%M:%S")
            );
        }
    })
}

/// Runs `telejob worker shell`.
pub async fn shell(a: ShellArgs) -> anyhow::Result<ExitCode> {
    if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        return Err(bad(
            "telejob worker shell needs a terminal on stdin; to run a command, use `telejob run --command …`",
        ));
    }
    let mut env = a.env;
    // The terminal's type, so that line editing works; nothing else of this environment.
    if let Ok(t) = std::env::var("TERM")
        && !t.is_empty()
        && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        env.push(format!("TERM={t}"));
    }
    // Nothing is published (a dry run); the run's status and empty log go to a scratch
    // directory removed afterwards.
    let scratch = tempfile::Builder::new()
        .prefix("telejob-shell-")
        .tempdir()
        .map_err(|e| anyhow::anyhow!("cannot make a scratch directory: {e}"))?;
    let place = |sub: &str| scratch.path().join(sub).display().to_string();
    let args = RunArgs {
        code: a.code,
        // The shell's own exit status does not fail the session: its output is listed anyway.
        command: r"PS1='[telejob worker] \w\$ ' bash --noprofile --norc -i; exit 0".into(),
        output_dir: a.output_dir,
        timeout: a.lifetime,
        publish_to: Some(place("public")),
        private_to: Some(place("private")),
        compute: ComputeKind::Local,
        config: None,
        instance_type: None,
        job_name: a.job_name,
        env,
        secrets: Vec::new(),
        scheduled_for: None,
        dry_run: true,
        visibility: VisibilityArg::Public,
        kill_grace: Duration::from_secs(2),
        cgroup: CgroupMode::Auto,
        run_as: a.run_as,
        uid_range: None,
        namespaces: NamespaceMode::Auto,
        limits: super::run::LimitArgs::default(),
        image: a.image,
        images_dir: None,
        quiet: true,
    };
    let keep = super::keep::Keep {
        save_to: a.save_to,
        package: a.package,
        force: a.force,
        since: std::time::SystemTime::now(),
    };
    let kept = Arc::new(std::sync::Mutex::new(None));
    let hook = (!keep.is_nothing()).then(|| {
        let (keep, kept) = (keep.clone(), kept.clone());
        telejob_core::agent::pipeline::AfterCommand::new(move |code: &std::path::Path| {
            let r = keep.keep(code);
            *kept
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(r);
        })
    });
    match (&keep.save_to, &keep.package) {
        (None, None) => eprintln!(
            "telejob: the workspace is discarded when the shell ends: keep your work with --save-to DIR (the code directory copied back) or --package FILE"
        ),
        (Some(d), _) => eprintln!(
            "telejob: when the shell ends, the code directory is saved to {}",
            d.display()
        ),
        (None, Some(f)) => eprintln!(
            "telejob: when the shell ends, the code directory is packed into {}",
            f.display()
        ),
    }
    let warnings = warn_before_the_end(a.lifetime, &keep);
    let r = run_with(args, true, hook).await;
    warnings.abort();
    drop(scratch);
    let outcome = kept
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    match outcome {
        Some(Ok(done)) => {
            for d in done {
                eprintln!("telejob: {d}");
            }
        }
        Some(Err(e)) => {
            eprintln!("telejob: {e}");
            return Ok(ExitCode::from(1));
        }
        None if keep.is_nothing() => eprintln!("telejob: the workspace is discarded"),
        None => {}
    }
    r
}
