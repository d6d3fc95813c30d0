//! `telejob run`: one run now, on this machine or a fresh EC2 instance.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use telejob_core::agent::fetch::CodeSource;
use telejob_core::agent::pipeline::{FailureKind, RunStores};
use telejob_core::agent::sandbox::{CgroupMode, Identity, NamespaceMode, SandboxOptions};
use telejob_core::compute::{Compute, LaunchOptions};
use telejob_core::job::{
    JobName, Visibility, validate_command, validate_env_var, validate_output_dir,
};
use telejob_core::limits::{Bytes, Cpus, Network, ResourceLimits};
use telejob_core::run::{RunRequest, RunState};

use super::progress;
use crate::backends::{self, ComputeKind};
use crate::error::bad;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The code: a tarball (.tar.gz, .tgz, .tar.xz, .tar.zst, .tar.bz2, .tar — detected by
    /// content), a directory, or a file:// or http(s):// URL.
    #[arg(long, value_name = "TARBALL|DIR|URL")]
    pub(super) code: String,
    /// The bash command line, run from the root of the unpacked code. If the archive holds a
    /// single top-level directory, that directory is the root.
    #[arg(long, default_value = "./run.sh")]
    pub(super) command: String,
    /// The directory the command writes its results to, relative to the code root. Every file
    /// in it is published.
    #[arg(long, default_value = "output")]
    pub(super) output_dir: String,
    /// Kill the run (and everything it started) after this long: 90s, 175m, 3h.
    #[arg(long, default_value = "120m", value_parser = parse_timeout, allow_hyphen_values = true)]
    pub(super) timeout: Duration,
    /// Where to publish: a directory or s3://bucket/prefix. Files go to
    /// <DIR>/<job-name>/data/ and the run's manifest to
    /// <DIR>/<job-name>/runs/<run-id>/manifest.json. Default: telejob-output, or the config
    /// file's public_store.
    #[arg(long, value_name = "DIR|URL")]
    pub(super) publish_to: Option<String>,
    /// Where the run's code, log and status go (never published): a directory or
    /// s3://bucket/prefix. Default: telejob-private, or the config file's private_store.
    #[arg(long, value_name = "DIR|URL")]
    pub(super) private_to: Option<String>,
    /// Where the run executes: local (this machine) or ec2 (a fresh instance, configured by the
    /// [ec2] table of --config; stores must be s3://).
    #[arg(long, value_enum, default_value_t = ComputeKind::Local)]
    pub(super) compute: ComputeKind,
    /// A config file, as for `telejob serve`: stores, [aws], [s3], [ec2] (see docs/aws.md).
    #[arg(long, value_name = "FILE")]
    pub(super) config: Option<PathBuf>,
    /// The EC2 instance type (default: the config's; must be in its allowlist).
    #[arg(long, value_name = "TYPE")]
    pub(super) instance_type: Option<String>,
    /// The job's name, also its publish prefix. Default: derived from --code
    /// (slowsql-0.3.tar.gz → slowsql).
    #[arg(long, value_name = "NAME")]
    pub(super) job_name: Option<String>,
    /// An environment variable for the job, KEY=VALUE; repeat for more. Nothing else of this
    /// shell's environment reaches the job but PATH, LANG, LC_* and TZ.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub(super) env: Vec<String>,
    /// Pass the variable NAME of this shell's environment to the job as a secret: its value is
    /// masked in the log and never on the command line. Repeat for more.
    #[arg(long = "secret", value_name = "NAME")]
    pub(super) secrets: Vec<String>,
    /// The slot the run is for (TELEJOB_SCHEDULED_FOR), RFC 3339. Default: now.
    #[arg(long, value_name = "INSTANT")]
    pub(super) scheduled_for: Option<String>,
    /// Run the job, but only list what would be published; upload nothing.
    #[arg(long)]
    pub(super) dry_run: bool,
    /// public: anyone may read the output; private: only the job's owners.
    #[arg(long, value_enum, default_value_t = VisibilityArg::Public)]
    pub(super) visibility: VisibilityArg,
    /// Time between SIGTERM and SIGKILL when the timeout expires.
    #[arg(long, default_value = "10s", value_parser = parse_timeout)]
    pub(super) kill_grace: Duration,
    /// Put the run in a cgroup v2 of its own: auto (where possible), off, required.
    #[arg(long, default_value = "auto", value_name = "auto|off|required")]
    pub(super) cgroup: CgroupMode,
    /// Run the job as this existing user. Default when telejob runs as root: a UID of the run's
    /// own from --uid-range.
    #[arg(long, value_name = "USER", conflicts_with = "uid_range")]
    pub(super) run_as: Option<String>,
    /// The range run UIDs are leased from when telejob runs as root (FIRST-LAST; default
    /// 1879048192-1879113727).
    #[arg(long, value_name = "FIRST-LAST")]
    pub(super) uid_range: Option<String>,
    /// Give the run mount, PID, IPC (and, with --network off, network) namespaces of its own:
    /// auto (where possible: as root), off, required.
    #[arg(long, default_value = "auto", value_name = "auto|off|required")]
    pub(super) namespaces: NamespaceMode,
    #[command(flatten)]
    pub(super) limits: LimitArgs,
    /// The image the run's machine starts from (as root: see `telejob image list`); `host` is
    /// this host's own root file system. Default: the config's image, or `default`, built on
    /// first use.
    #[arg(long, value_name = "NAME")]
    pub(super) image: Option<String>,
    /// Where images are (default: TELEJOB_IMAGES_DIR, the config's images_dir, or
    /// ./telejob-data/images).
    #[arg(long, value_name = "DIR")]
    pub(super) images_dir: Option<PathBuf>,
    /// Don't echo the job's output (it is still logged).
    #[arg(long, short)]
    pub(super) quiet: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(super) enum VisibilityArg {
    Public,
    Private,
}

/// Resource limits as flags: `run` and `jobs create|edit` take the same.
#[derive(Debug, Clone, Copy, Default, Args)]
pub struct LimitArgs {
    /// The most memory a run may use, e.g. 2GiB (needs a memory cgroup).
    #[arg(long, value_name = "SIZE", value_parser = Bytes::parse)]
    pub(super) memory: Option<Bytes>,
    /// CPU time as a number of CPUs, e.g. 1.5 (needs a cpu cgroup).
    #[arg(long, value_name = "N", value_parser = Cpus::parse)]
    pub(super) cpus: Option<Cpus>,
    /// The most processes and threads at once.
    #[arg(long, value_name = "N")]
    pub(super) processes: Option<u32>,
    /// The most space a run's workspace (code, output, home, /tmp) may take, e.g. 10GiB.
    #[arg(long, value_name = "SIZE", value_parser = Bytes::parse)]
    pub(super) disk: Option<Bytes>,
    /// on, or off: runs get loopback only (needs namespaces: telejob runs as root).
    #[arg(long, value_name = "on|off")]
    pub(super) network: Option<Network>,
}

impl LimitArgs {
    /// The limits given.
    pub fn limits(&self) -> ResourceLimits {
        ResourceLimits {
            memory: self.memory,
            cpu: self.cpus,
            processes: self.processes,
            disk: self.disk,
            network: self.network,
        }
    }
}

/// Parses `90s`, `175m`, `3h`, `1h30m`. A bare number is refused, naming the fix: `90` could
/// mean seconds or minutes.
pub fn parse_timeout(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let positive = || "the timeout must be positive: use e.g. 90s, 175m or 3h".to_string();
    if t.starts_with('-') {
        return Err(positive());
    }
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(if t.bytes().all(|b| b == b'0') {
            positive()
        } else {
            format!("{t} has no unit: write {t}m for minutes (or {t}s, {t}h)")
        });
    }
    let d = humantime::parse_duration(t)
        .map_err(|e| format!("{s:?} is not a duration ({e}): use e.g. 90s, 175m or 3h"))?;
    if d.is_zero() {
        return Err(positive());
    }
    Ok(d)
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

pub async fn run(a: RunArgs) -> anyhow::Result<ExitCode> {
    run_with(a, false, None).await
}

pub(super) async fn run_with(
    a: RunArgs,
    interactive: bool,
    after_command: Option<telejob_core::agent::pipeline::AfterCommand>,
) -> anyhow::Result<ExitCode> {
    let cfg = match &a.config {
        Some(p) => crate::config::Config::load(p)?,
        None => crate::config::Config::default(),
    };
    let aws = cfg.aws_config();
    let (publish_to, private_to) = store_urls(&a, &cfg, &aws)?;
    // Catch the common mistakes before anything starts, in one line each.
    let req = request(&a)?;
    let identity = Identity::from_settings(
        a.run_as.as_deref().map(|u| ("--run-as", u)),
        a.uid_range.as_deref().map(|r| ("--uid-range", r)),
    )?;
    let public = backends::store("--publish-to", &publish_to, &aws).await?;
    let private = backends::store("--private-to", &private_to, &aws).await?;
    let local = if a.compute.is_remote() {
        None
    } else {
        let machine =
            super::image::machine_options(a.config.as_deref(), a.images_dir.clone(), None)?;
        let sandbox = SandboxOptions {
            cgroup: a.cgroup,
            namespaces: a.namespaces,
            identity,
            kill_grace: a.kill_grace,
            machine: Some(machine),
            ..SandboxOptions::default()
        };
        if let Some(m) = sandbox.machine_here() {
            crate::backends::ensure_image(&sandbox, req.image.as_deref().unwrap_or(&m.image))?;
        } else if a.image.is_some() {
            return Err(bad(format!(
                "--image: runs here are not machines of their own ({}), so they start from no image: remove --image",
                if a.namespaces == NamespaceMode::Off {
                    "--namespaces off"
                } else {
                    "telejob does not run as root"
                }
            )));
        }
        Some(Arc::new(backends::one_run_compute(
            RunStores::new(public.clone(), private.clone()),
            sandbox,
            interactive,
            after_command,
        )?))
    };
    let compute: Arc<dyn Compute> = match &local {
        Some(l) => l.clone(),
        None => {
            backends::remote_compute(
                &aws,
                &publish_to,
                &private_to,
                a.instance_type.as_deref(),
                Some("telejob-cli"),
            )
            .await?
        }
    };
    let job = req.job.clone();
    if interactive {
        eprintln!(
            "telejob: a fresh worker shell for {job}: the code is here, write results to {}/; it ends in {} (exit to end it sooner)",
            req.output_dir,
            humantime::format_duration(req.timeout)
        );
    } else if std::io::IsTerminal::is_terminal(&std::io::stderr()) || a.compute.is_remote() {
        eprintln!(
            "telejob: run {} of job {job} on {}",
            req.run_id,
            compute.capabilities().name
        );
    }
    compute
        .launch(
            req.clone(),
            LaunchOptions::default().with_events(progress::sink(a.quiet)),
        )
        .await?;
    let run = tokio::select! {
        r = compute.wait(&req.run_id) => r?,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("telejob: interrupted; ending the run");
            compute.cancel(&req.run_id).await?;
            compute.wait(&req.run_id).await?
        }
    };
    let stores = RunStores::new(public, private);
    let bad_input = local
        .as_ref()
        .and_then(|l| l.failure_kind(&req.run_id))
        .is_some_and(|k| k == FailureKind::BadInput);
    Ok(report(&run, &req, &stores, interactive, bad_input))
}

/// The stores of `--publish-to` and `--private-to` (or the config's, or the defaults), checked
/// for the compute: remote runs read and write through S3.
fn store_urls(
    a: &RunArgs,
    cfg: &crate::config::Config,
    aws: &backends::AwsConfig,
) -> anyhow::Result<(String, String)> {
    let publish_to = a
        .publish_to
        .clone()
        .or(cfg.public_store.clone())
        .unwrap_or_else(|| "telejob-output".into());
    let private_to = a
        .private_to
        .clone()
        .or(cfg.private_store.clone())
        .unwrap_or_else(|| "telejob-private".into());
    if a.compute.is_remote() && aws.ec2.is_none() {
        return Err(bad(
            "--compute ec2 needs --config FILE with an [ec2] table (at least ami = \"ami-…\"); see docs/aws.md",
        ));
    }
    for (flag, url) in [("--publish-to", &publish_to), ("--private-to", &private_to)] {
        backends::store_kind(flag, url)?;
        if a.compute.is_remote() {
            backends::require_s3(flag, url)?;
        }
    }
    Ok((publish_to, private_to))
}

/// The run request the flags describe; every flag checked, each mistake one line naming it.
fn request(a: &RunArgs) -> anyhow::Result<RunRequest> {
    validate_command(&a.command).map_err(|e| bad(format!("--{e}")))?;
    if let Some(i) = &a.image
        && !telejob_core::agent::sandbox::image::valid_name(i)
    {
        return Err(bad(format!(
            "--image {i:?}: name an image (lowercase letters, digits and dashes), or host"
        )));
    }
    validate_output_dir(&a.output_dir).map_err(|e| {
        bad(format!(
            "--{}",
            e.to_string().replace("output_dir", "output-dir")
        ))
    })?;
    if let CodeSource::Path(p) = CodeSource::parse(&a.code)?
        && !p.exists()
    {
        return Err(bad(format!(
            "--code {}: no such file or directory; give a code tarball, a directory or a URL",
            p.display()
        )));
    }
    let job = match &a.job_name {
        Some(n) => JobName::new(n.clone()).map_err(|e| bad(format!("--job-name: {e}")))?,
        None => JobName::derive_from(&a.code),
    };
    let mut env = BTreeMap::new();
    for kv in &a.env {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| bad(format!("--env {kv:?}: use KEY=VALUE")))?;
        validate_env_var(k, v).map_err(|e| bad(format!("--env {e}")))?;
        env.insert(k.to_string(), v.to_string());
    }
    let mut secrets = telejob_core::run::Secrets::default();
    for name in &a.secrets {
        let value = std::env::var(name).map_err(|_| {
            bad(format!(
                "--secret {name}: no such variable in this shell; export {name}=… first"
            ))
        })?;
        validate_env_var(name, &value).map_err(|e| bad(format!("--secret {e}")))?;
        secrets.0.insert(name.clone(), value);
    }
    let scheduled_for =
        crate::error::instant_or_now("--scheduled-for", a.scheduled_for.as_deref())?;
    let limits = a.limits.limits();
    if let Err(errs) = limits.validate() {
        return Err(bad(format!(
            "--{}",
            errs[0].to_string().trim_start_matches("limits.")
        )));
    }
    // A relative code path is taken from the current directory.
    let code = if !a.code.contains("://") && !a.code.starts_with("store:") {
        std::path::absolute(PathBuf::from(&a.code))
            .map_or(a.code.clone(), |p| p.display().to_string())
    } else {
        a.code.clone()
    };
    Ok(RunRequest::new(job, code, a.command.clone())
        .with_output_dir(a.output_dir.clone())
        .with_timeout(a.timeout)
        .with_envs(env)
        .with_scheduled_for(scheduled_for)
        .with_visibility(match a.visibility {
            VisibilityArg::Public => Visibility::Public,
            VisibilityArg::Private => Visibility::Private,
        })
        .with_dry_run(a.dry_run)
        .with_limits(limits)
        .with_secrets(secrets)
        .with_image(a.image.clone()))
}

/// Prints what the run did and returns its exit status.
fn report(
    run: &telejob_core::run::Run,
    req: &RunRequest,
    stores: &RunStores,
    interactive: bool,
    bad_input: bool,
) -> ExitCode {
    let job = &req.job;
    let data_store = match req.visibility {
        Visibility::Public => stores.public.as_ref(),
        Visibility::Private => stores.private.as_ref(),
    };
    let data_dir = data_store.locate(&format!("{job}/data"));
    if let Some(log) = run.log_key.as_ref().filter(|_| !interactive) {
        eprintln!("telejob: log: {}", stores.private.locate(log));
    }
    match run.state {
        RunState::Succeeded => {
            let verb = if run.dry_run {
                "would publish"
            } else {
                "published"
            };
            let files = format!(
                "{} file{} ({})",
                run.published.len(),
                if run.published.len() == 1 { "" } else { "s" },
                human_bytes(run.published_bytes())
            );
            if interactive {
                say!(
                    "as a run, {}/ would publish {files} to <store>/{job}/data/:",
                    req.output_dir
                );
            } else {
                say!("{verb} {files} to {data_dir}/");
            }
            for f in &run.published {
                say!("  {:>10}  {}", human_bytes(f.size), f.path);
            }
            for s in &run.skipped {
                say!("  not published: {} ({})", s.path, s.reason);
            }
            if let Some(m) = run.manifest_key.as_ref().filter(|_| !interactive) {
                say!("manifest: {}", data_store.locate(m));
            }
            super::exit::code(run.state, false)
        }
        RunState::TimedOut => {
            eprintln!("telejob: {}", run.error.as_deref().unwrap_or("timed out"));
            super::exit::code(run.state, false)
        }
        RunState::Cancelled => super::exit::code(run.state, false),
        _ => {
            let msg = run.error.as_deref().unwrap_or("the run failed");
            eprintln!("telejob: {msg}");
            super::exit::code(run.state, bad_input)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_take_units() {
        assert_eq!(parse_timeout("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_timeout("175m"), Ok(Duration::from_secs(175 * 60)));
        assert_eq!(parse_timeout("3h"), Ok(Duration::from_secs(3 * 3600)));
        assert_eq!(parse_timeout("1h30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_timeout("5").is_err_and(|e| e.contains("5m")));
        for bad in ["0", "0s", "-5m", "soon", ""] {
            assert!(parse_timeout(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_bytes(12), "12 B");
        assert_eq!(human_bytes(2048), "2.0 KiB");
    }
}
