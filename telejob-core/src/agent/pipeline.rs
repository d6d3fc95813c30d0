//! The agent pipeline: fetch → unpack → run → publish. One implementation serves `telejob run`,
//! scheduled local runs and runs on EC2 instances.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use chrono::{SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::agent::diagnose::{self, host_preamble, machine_preamble};
use crate::agent::fetch::{CodeSource, HashingReader, UrlFetcher, fetch_code};
use crate::agent::publish::{self, PublishPolicy};
use crate::agent::sandbox::exec::{
    Confinement, ExecSpec, ExitKind, Isolation, LimitHit, Machine, execute, job_view,
};
use crate::agent::sandbox::userns::BlockLease;
use crate::agent::sandbox::{Identity, SandboxOptions, UidLease, chown_tree, job_environment};
use crate::agent::unpack::{UnpackLimits, unpack};
use crate::agent::workspace::{RunDir, Workspace, code_root, remove_workspace};
use crate::compute::{EventSink, RunEvent};
use crate::error::{Error, Result};
use crate::job::{Visibility, validate_command, validate_output_dir};
use crate::run::{Manifest, PhaseDurations, Run, RunRequest, RunState, keys};
use crate::store::{PutOptions, Store, StoreExt};

/// Why a run failed, for exit codes and notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The input was wrong: missing or unsafe code, bad spec. Fix the job.
    BadInput,
    /// The job's own doing: non-zero exit, no output directory, a policy limit.
    Job,
    /// Infrastructure: a store or the host failed. Trying again may help.
    System,
}

impl FailureKind {
    fn of(e: &Error) -> Self {
        if e.is_bad_input() {
            Self::BadInput
        } else if matches!(
            e,
            Error::JobFailed(_)
                | Error::OutputDir { .. }
                | Error::Publish { .. }
                | Error::Timeout(_)
                | Error::Cancelled
        ) {
            Self::Job
        } else {
            Self::System
        }
    }
}

/// The public and private stores a run writes to. They may be the same store.
#[derive(Debug, Clone)]
pub struct RunStores {
    /// Published output of public jobs (`<job>/data/`, manifests).
    pub public: Arc<dyn Store>,
    /// Code, logs, status; output of private jobs.
    pub private: Arc<dyn Store>,
}

impl RunStores {
    /// Public output to `public`; code, logs, status and private output to `private`.
    pub fn new(public: Arc<dyn Store>, private: Arc<dyn Store>) -> Self {
        Self { public, private }
    }
}

/// The pipeline with its settings. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// Where runs write.
    pub stores: RunStores,
    /// Fetches URLs the pipeline cannot (http, s3); `None` rejects them.
    pub fetcher: Option<Arc<dyn UrlFetcher>>,
    /// Caps on unpacking.
    pub unpack_limits: UnpackLimits,
    /// What may be published.
    pub publish_policy: PublishPolicy,
    /// Process containment, user, log cap.
    pub sandbox: SandboxOptions,
    /// Where run workspaces are made (each run gets a fresh one, removed afterwards).
    pub scratch_dir: PathBuf,
    /// Commands run attached to this process's terminal, with no log (`telejob worker shell`).
    pub interactive: bool,
    /// Asked before each batch of published files and before the manifest (`None`: always
    /// write).
    pub fence: Option<Arc<dyn crate::store::PublishFence>>,
    /// How often the log of a run in flight is copied to the private store while it grows
    /// (one more second per MiB shipped), so that it can be followed before the run ends.
    pub log_ship_every: std::time::Duration,
    /// Called on a blocking thread with the code directory (a host path) once the command has
    /// ended, however it ended, before anything is published or removed: what `telejob worker
    /// shell --save-to` copies the work back from.
    pub after_command: Option<AfterCommand>,
}

/// A hook given the code directory once a run's command has ended ([`Pipeline::after_command`]).
#[derive(Clone)]
pub struct AfterCommand(Arc<dyn Fn(&Path) + Send + Sync>);

impl AfterCommand {
    /// Wraps `f`.
    pub fn new(f: impl Fn(&Path) + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }
}

impl std::fmt::Debug for AfterCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AfterCommand")
    }
}

/// The outcome of [`Pipeline::run`]: the run record and, for failed runs, the error.
#[derive(Debug)]
pub struct RunOutcome {
    /// The final run record (also stored as the run's status).
    pub run: Run,
    /// What went wrong, for runs that did not succeed.
    pub error: Option<Error>,
    /// How the failure is classified.
    pub failure: Option<FailureKind>,
}

struct Ctx<'a> {
    req: &'a RunRequest,
    events: Option<EventSink>,
    run: Run,
    durations: PhaseDurations,
}

impl Ctx<'_> {
    fn emit(&self, e: RunEvent) {
        if let Some(s) = &self.events {
            s.emit(e);
        }
    }
}

impl Pipeline {
    /// A pipeline writing to `stores`, with default limits and sandbox, workspaces in the system
    /// temp directory.
    pub fn new(stores: RunStores) -> Self {
        Self {
            stores,
            fetcher: None,
            unpack_limits: UnpackLimits::default(),
            publish_policy: PublishPolicy::default(),
            sandbox: SandboxOptions::default(),
            scratch_dir: std::env::temp_dir(),
            interactive: false,
            fence: None,
            log_ship_every: std::time::Duration::from_secs(2),
            after_command: None,
        }
    }

    /// Asks `fence` before each batch of published files and before the manifest.
    pub fn with_fence(mut self, fence: Arc<dyn crate::store::PublishFence>) -> Self {
        self.fence = Some(fence);
        self
    }

    /// Runs commands attached to this process's terminal (an interactive shell), without a log.
    pub fn attached_to_terminal(mut self) -> Self {
        self.interactive = true;
        self
    }

    /// Adds a fetcher for URLs.
    pub fn with_fetcher(mut self, f: Arc<dyn UrlFetcher>) -> Self {
        self.fetcher = Some(f);
        self
    }

    /// Sets the sandbox options.
    pub fn with_sandbox(mut self, s: SandboxOptions) -> Self {
        self.sandbox = s;
        self
    }

    /// Runs `req` to the end: fetch, unpack into a fresh workspace, run the command under the
    /// timeout, publish (or, for a dry run, list) the output, write the manifest last, store log
    /// and status privately, remove the workspace. Never panics on bad input; every failure ends
    /// in the returned record.
    pub async fn run(
        &self,
        req: &RunRequest,
        events: Option<EventSink>,
        cancel: CancellationToken,
    ) -> RunOutcome {
        let mut ctx = Ctx {
            req,
            events,
            run: Run::pending(req),
            durations: PhaseDurations::default(),
        };
        let result = self.run_inner(&mut ctx, &cancel).await;
        let (error, failure) = match result {
            Ok(()) => (None, None),
            Err(e) => {
                let kind = FailureKind::of(&e);
                if ctx.run.state != RunState::TimedOut && ctx.run.state != RunState::Cancelled {
                    ctx.run.state = if matches!(e, Error::Cancelled) {
                        RunState::Cancelled
                    } else {
                        RunState::Failed
                    };
                }
                ctx.run.error = Some(e.to_string());
                (Some(e), Some(kind))
            }
        };
        ctx.run.phases.finished = Some(Utc::now());
        ctx.emit(RunEvent::State(ctx.run.state));
        self.save_status(&ctx.run).await;
        RunOutcome {
            run: ctx.run,
            error,
            failure,
        }
    }

    async fn set_state(&self, ctx: &mut Ctx<'_>, state: RunState) {
        ctx.run.state = state;
        ctx.emit(RunEvent::State(state));
        self.save_status(&ctx.run).await;
    }

    async fn save_status(&self, run: &Run) {
        if let Err(e) = self
            .stores
            .private
            .put_json(&keys::status(&run.job, &run.id), run)
            .await
        {
            tracing::warn!(run = %run.id, error = %e, "could not store the run status");
        }
    }

    async fn run_inner(&self, ctx: &mut Ctx<'_>, cancel: &CancellationToken) -> Result<()> {
        let req = ctx.req;
        validate_command(&req.command)?;
        validate_output_dir(&req.output_dir)?;
        if req.timeout.is_zero() {
            return Err(Error::invalid(
                "timeout",
                "the timeout must be positive, e.g. 90s, 175m, 3h",
            ));
        }
        let source = CodeSource::parse(&req.code)?;

        let mut run_dir = RunDir::create(&self.scratch_dir)?;
        // The UIDs are the run's until its files are gone: released with the directory.
        if let Some((m, _)) = self.sandbox.machine_image(req.image.as_deref()) {
            let blocks = m.blocks.clone();
            run_dir.block = Some(
                tokio::task::spawn_blocking(move || blocks.lease())
                    .await
                    .map_err(|e| Error::task("leasing a UID block", e))??,
            );
        } else if let Identity::Dynamic(range) = &self.sandbox.identity {
            let r = range.clone();
            run_dir.lease = Some(
                tokio::task::spawn_blocking(move || r.lease())
                    .await
                    .map_err(|e| Error::task("leasing a run UID", e))??,
            );
        }
        let leased = run_dir.lease.as_ref().map(UidLease::uid);
        let block = run_dir.block.as_ref().map(BlockLease::base);
        let result = self
            .in_workspace(ctx, cancel, &source, run_dir.path(), leased, block)
            .await;
        // Up to millions of entries: not on the runtime's threads, which the scheduler and the API
        // share.
        if let Err(e) = tokio::task::spawn_blocking(move || remove_workspace(run_dir)).await {
            tracing::error!(error = %e, "removing the run workspace did not finish");
        }
        result
    }

    /// The run in its directory `dir`: [`prepare`](Self::prepare),
    /// [`fetch_and_unpack`](Self::fetch_and_unpack), [`execute`](Self::execute),
    /// [`publish`](Self::publish).
    async fn in_workspace(
        &self,
        ctx: &mut Ctx<'_>,
        cancel: &CancellationToken,
        source: &CodeSource,
        dir: &Path,
        leased: Option<u32>,
        block: Option<u32>,
    ) -> Result<()> {
        let mut ws = match block {
            Some(base) => self.prepare_machine(ctx, dir, base).await?,
            None => self.prepare(ctx, dir, leased)?,
        };
        let sha = self.fetch_and_unpack(ctx, source, &mut ws).await?;
        let executed = self.execute(ctx, cancel, &ws).await;
        if let Some(f) = self.after_command.clone() {
            let code = ws.root.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || (f.0)(&code)).await {
                tracing::error!(error = %e, "the after-command hook did not finish");
            }
        }
        executed?;
        self.publish(ctx, &ws, sha).await?;
        ctx.run.state = RunState::Succeeded;
        Ok(())
    }

    /// Makes the workspace's directories and decides how the run is confined: its namespaces,
    /// its user, the limits this host enforces (a warning for the others). The run directory
    /// is telejob's (0700; 0711 when the job must pass through it by path), with the log and
    /// the archive 0600; `work/` is the job's own and all it can write.
    fn prepare(&self, ctx: &mut Ctx<'_>, dir: &Path, leased: Option<u32>) -> Result<Workspace> {
        let req = ctx.req;
        let mut ws = Workspace::lay_out(dir)?;
        ws.isolation = self.isolation(&ws.work)?;
        let ids = match (&self.sandbox.identity, leased) {
            (Identity::Fixed(u), _) => Some((u.uid, u.gid)),
            (_, Some(uid)) => Some((uid, uid)),
            _ => None,
        };
        let user = match &self.sandbox.identity {
            Identity::Fixed(u) => Some(u.name.clone()),
            Identity::Dynamic(_) => leased.map(|uid| format!("telejob-{uid}")),
            Identity::Current => None,
        };
        let support = self.limit_support_told(ctx);
        if req.limits.network == Some(crate::limits::Network::Off) && !support.network {
            return Err(Error::spawn(
                "limits.network = off needs network namespaces, which this host does not give \
                 telejob (it must run as root); the run did not start",
                std::io::Error::from(std::io::ErrorKind::Unsupported),
            ));
        }
        ws.ids = ids;
        ws.user = user;
        ws.limits = support.keep_enforced(&req.limits);
        ws.dedicated_ids = leased.is_some();
        ws.preamble = match &self.sandbox.own_host {
            Some(host) => diagnose::own_host_preamble(host, &ws.limits),
            None => host_preamble(
                self.sandbox.not_isolated(req.image.as_deref()).as_deref(),
                &ws.limits,
            ),
        };
        Ok(ws)
    }

    /// What this host can enforce of the run's limits; a warning in the run's events names
    /// each one it asks for that cannot be.
    fn limit_support_told(&self, ctx: &Ctx<'_>) -> crate::limits::LimitSupport {
        let support = self.sandbox.limit_support();
        let unenforced = support.unenforced(&ctx.req.limits);
        if !unenforced.is_empty() {
            ctx.emit(RunEvent::Warning(format!(
                "this host cannot enforce {}; the run goes on without",
                unenforced.join(", ")
            )));
        }
        support
    }

    /// [`prepare`](Self::prepare) for a machine: its disk and directories on UID block `base`,
    /// its user namespace, the image it starts from.
    async fn prepare_machine(&self, ctx: &mut Ctx<'_>, dir: &Path, base: u32) -> Result<Workspace> {
        let req = ctx.req;
        let (m, image_name) = self
            .sandbox
            .machine_image(req.image.as_deref())
            .ok_or_else(|| Error::config("namespaces", "runs cannot be machines here"))?;
        let image = m.images.resolve(&image_name)?;
        let support = self.limit_support_told(ctx);
        let limits = support.keep_enforced(&req.limits);
        let outbound = limits.network != Some(crate::limits::Network::Off);
        if outbound && let Some(why) = crate::agent::sandbox::network::outbound_unavailable() {
            return Err(Error::spawn(
                format!("limits.network = on: {why}; the run did not start"),
                std::io::Error::from(std::io::ErrorKind::Unsupported),
            ));
        }
        let (d, disk) = (dir.to_path_buf(), limits.disk.map(|b| b.0));
        let (mut ws, userns, netns) = tokio::task::spawn_blocking(move || -> Result<_> {
            let ws = Workspace::lay_out_machine(&d, disk, base)?;
            let ns = crate::agent::sandbox::userns::RunUserNs::create(base)
                .map_err(|e| Error::spawn("making the run's user namespace", e))?;
            let net = if outbound {
                let userns = ns
                    .try_clone_fd()
                    .map_err(|e| Error::spawn("making the run's network namespace", e))?;
                let netns = crate::agent::sandbox::network::make_netns(&userns)
                    .map_err(|e| Error::spawn("making the run's network namespace", e))?;
                Some((userns, netns))
            } else {
                None
            };
            Ok((ws, ns, net))
        })
        .await
        .map_err(|e| Error::task("preparing the run's machine", e))??;
        // pasta starts now, while the code is fetched and unpacked: its own start (tens of
        // milliseconds) is then off the run's critical path.
        let (netns, network) = match netns {
            Some((userns, netns)) => {
                let (run, ns) = (
                    req.run_id.to_string(),
                    netns
                        .try_clone()
                        .map_err(|e| Error::spawn("making the run's network namespace", e))?,
                );
                let start = tokio::task::spawn_blocking(move || {
                    crate::agent::sandbox::network::Pasta::attach(&run, &userns, &ns)
                });
                (Some(netns), Some(start))
            }
            None => (None, None),
        };
        ws.isolation = Some(Isolation {
            work_dir: ws.work.clone(),
        });
        ws.limits = limits;
        let id = req.run_id.as_str();
        let hostname: String = format!("{}-{}", req.job, &id[id.len().saturating_sub(8)..])
            .chars()
            .take(63)
            .collect();
        let description = crate::agent::sandbox::image::describe(&image_name, &image);
        ws.preamble = machine_preamble(&description, base, outbound, &limits);
        ws.machine = Some(std::sync::Arc::new(Machine {
            run_dir: dir.to_path_buf(),
            image,
            userns,
            hostname,
            outbound,
            netns,
            network: std::sync::Mutex::new(network),
            shm_bytes: limits
                .memory
                .map_or(64 << 20, |m| (m.0 / 2).clamp(1 << 20, 1 << 30)),
        }));
        Ok(ws)
    }

    /// Fetches the code into the run directory, unpacks it into the workspace (hashing the
    /// archive as it goes), finds the code root, and hands `work/` to the run's user. Returns
    /// the archive's SHA-256.
    async fn fetch_and_unpack(
        &self,
        ctx: &mut Ctx<'_>,
        source: &CodeSource,
        ws: &mut Workspace,
    ) -> Result<String> {
        ctx.run.phases.fetch_started = Some(Utc::now());
        self.set_state(ctx, RunState::Fetching).await;
        let t = Instant::now();
        let archive = fetch_code(
            source,
            &ws.dir,
            self.stores.private.as_ref(),
            self.fetcher.as_deref(),
            self.unpack_limits.max_total_bytes,
        )
        .await?;
        ctx.durations.fetch_ms = ms(t);
        let t = Instant::now();
        let (limits, code) = (self.unpack_limits, ws.code.clone());
        let sha = tokio::task::spawn_blocking(move || -> Result<String> {
            let file = std::fs::File::open(&archive).map_err(|e| Error::io(&archive, e))?;
            let mut hashing =
                HashingReader::new(std::io::BufReader::with_capacity(256 * 1024, file));
            unpack(&mut hashing, &code, &limits)?;
            std::io::copy(&mut hashing, &mut std::io::sink())
                .map_err(|e| Error::io(&archive, e))?;
            Ok(hashing.finish().0)
        })
        .await
        .map_err(|e| Error::task("unpacking the code", e))??;
        ctx.durations.unpack_ms = ms(t);
        ctx.run.code_sha256 = Some(sha.clone());
        if let Some(p) = ctx.run.provenance.as_mut() {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "unknown".into());
            p.compute = Some(format!("host {host}"));
        }
        ws.root = code_root(&ws.code);
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m))
                .map_err(|e| Error::io(p, e))
        };
        if let Some((uid, gid)) = ws.ids {
            let w = ws.work.clone();
            tokio::task::spawn_blocking(move || chown_tree(&w, uid, gid))
                .await
                .map_err(|e| Error::task("handing the workspace to the run", e))??;
            if ws.isolation.is_none() {
                mode(&ws.dir, 0o711)?;
            }
        }
        for d in [&ws.work, &ws.home, &ws.tmp] {
            mode(d, 0o700)?;
        }
        Ok(sha)
    }

    /// Runs the command under the timeout in the run's sandbox, keeps the log whatever
    /// happens, and turns how the command ended into the run's outcome.
    async fn execute(
        &self,
        ctx: &mut Ctx<'_>,
        cancel: &CancellationToken,
        ws: &Workspace,
    ) -> Result<()> {
        let req = ctx.req;
        // What the job sees: the work directory at JOB_ROOT inside its namespaces.
        let view = |p: &Path| job_view(ws.isolation.as_ref(), p);
        let output_abs = view(&ws.root.join(&req.output_dir));
        let mut telejob_env = vec![
            ("TELEJOB_JOB", req.job.to_string()),
            ("TELEJOB_RUN_ID", req.run_id.to_string()),
            (
                "TELEJOB_SCHEDULED_FOR",
                req.scheduled_for.to_rfc3339_opts(SecondsFormat::Secs, true),
            ),
            ("TELEJOB_OUTPUT_DIR", output_abs.display().to_string()),
        ];
        let (published, past) = self.past_output(req, ws);
        telejob_env.extend(past);
        let job_tmp = if ws.isolation.is_some() {
            PathBuf::from("/tmp")
        } else {
            ws.tmp.clone()
        };
        let mut job_env = req.env.clone();
        job_env.extend(req.secrets.0.clone());
        let env = job_environment(
            &job_env,
            &telejob_env,
            &view(&ws.home),
            &job_tmp,
            ws.user.as_deref(),
        );
        ctx.run.phases.run_started = Some(Utc::now());
        self.set_state(ctx, RunState::Running).await;
        let t = Instant::now();
        let shipped = CancellationToken::new();
        let shipper = self.ship_log(keys::log(&req.job, &req.run_id), &ws.log, &shipped);
        let exec = execute(
            ExecSpec {
                command: req.command.clone(),
                cwd: ws.root.clone(),
                env,
                timeout: req.timeout,
                run_id: req.run_id.to_string(),
                log_path: ws.log.clone(),
                events: ctx.events.clone(),
                cancel: cancel.clone(),
                mask: req.secrets.maskable(),
                interactive: self.interactive,
                preamble: ws.preamble.clone(),
                confinement: Confinement {
                    ids: ws.ids,
                    dedicated_ids: ws.dedicated_ids,
                    isolation: ws.isolation.clone(),
                    limits: ws.limits,
                    // A machine's disk is a file system of its limit: nothing to measure.
                    disk_root: ws.machine.is_none().then(|| ws.work.clone()),
                    machine: ws.machine.clone(),
                    published,
                },
            },
            &self.sandbox,
        );
        let (exec, ()) = tokio::join!(
            async {
                let exec = exec.await;
                shipped.cancel();
                exec
            },
            shipper
        );
        ctx.durations.run_ms = ms(t);
        ctx.run.phases.run_ended = Some(Utc::now());
        // The log is kept whatever happened.
        if ws.log.exists() {
            self.store_log(ctx, &ws.log).await;
        }
        let exec = exec?;
        ctx.run.log_truncated = exec.log.truncated();
        match exec.exit {
            ExitKind::Exited(0) => {
                ctx.run.exit_code = Some(0);
                Ok(())
            }
            ExitKind::Exited(code) => {
                ctx.run.exit_code = Some(code);
                let tail = diagnose::log_tail(&ws.log);
                // Full now, or full while the job held files it had deleted.
                if let (Some(disk), Some(limit)) = (&ws.disk, ws.limits.disk)
                    && (disk.is_full() || tail.contains("No space left on device"))
                {
                    return Err(Error::JobFailed(format!(
                        "{}; the command exited with status {code}",
                        LimitHit::DiskFull(limit)
                    )));
                }
                // Refused forks: the pids controller, or RLIMIT_NPROC first (counted per user
                // namespace, it can fire before the cgroup's count does).
                if let Some(n) = ws.limits.processes
                    && diagnose::forks_refused(&tail)
                {
                    return Err(Error::JobFailed(format!(
                        "{}; the command exited with status {code}",
                        LimitHit::Processes(n)
                    )));
                }
                let hint = diagnose::hint(
                    code,
                    &tail,
                    ws.machine.is_some() || self.sandbox.own_host.is_some(),
                );
                Err(Error::JobFailed(format!(
                    "the command exited with status {code}{hint}; see the run log"
                )))
            }
            ExitKind::Signaled(sig) => {
                ctx.run.signal = Some(sig);
                Err(Error::JobFailed(format!(
                    "the command was killed by signal {sig}; see the run log"
                )))
            }
            ExitKind::TimedOut => {
                ctx.run.state = RunState::TimedOut;
                Err(Error::Timeout(req.timeout))
            }
            ExitKind::Cancelled => {
                ctx.run.state = RunState::Cancelled;
                Err(Error::Cancelled)
            }
            ExitKind::OverLimit(hit) => Err(Error::JobFailed(format!("{hit}; the run was killed"))),
        }
    }

    /// Publishes the output directory (for a dry run, lists it), then the manifest last.
    async fn publish(&self, ctx: &mut Ctx<'_>, ws: &Workspace, sha: String) -> Result<()> {
        let req = ctx.req;
        ctx.run.phases.publish_started = Some(Utc::now());
        self.set_state(ctx, RunState::Publishing).await;
        let t = Instant::now();
        let prefix = keys::data_prefix(&req.job);
        let (root, out_dir, policy, prefix2) = (
            ws.root.clone(),
            req.output_dir.clone(),
            self.publish_policy.clone(),
            prefix.clone(),
        );
        let plan =
            tokio::task::spawn_blocking(move || publish::plan(&root, &out_dir, &prefix2, &policy))
                .await
                .map_err(|e| Error::task("planning the publish", e))??;
        for s in &plan.skipped {
            ctx.emit(RunEvent::Warning(format!(
                "not published: {}: {}",
                s.path, s.reason
            )));
        }
        if plan.files.is_empty() {
            ctx.emit(RunEvent::Warning(format!(
                "the output directory {} is empty; nothing to publish",
                req.output_dir
            )));
        }
        ctx.run.skipped = plan.skipped.clone();
        let store = self.output_store(req.visibility);
        if req.dry_run {
            ctx.run.published = publish::describe(&plan, &prefix).await?;
            return Ok(());
        }
        let fence = self.fence.as_deref().map(|fence| publish::Fence {
            fence,
            job: &req.job,
            run: &req.run_id,
        });
        ctx.run.published = publish::upload(
            &plan,
            store.as_ref(),
            &prefix,
            self.publish_policy.concurrency,
            ctx.events.as_ref(),
            fence,
        )
        .await?;
        ctx.durations.publish_ms = ms(t);
        let manifest = Manifest {
            job: req.job.clone(),
            run_id: req.run_id.clone(),
            scheduled_for: req.scheduled_for,
            command: req.command.clone(),
            code_sha256: sha,
            data_prefix: prefix,
            files: ctx.run.published.clone(),
            skipped: ctx.run.skipped.clone(),
            total_bytes: ctx.run.published_bytes(),
            durations: ctx.durations.clone(),
            exit_code: 0,
            published_at: Utc::now(),
            spec_sha256: ctx.run.provenance.as_ref().map(|p| p.spec_sha256.clone()),
            telejob_version: Some(crate::run::TELEJOB_VERSION.to_string()),
        };
        if let Some(f) = fence {
            f.check().await?;
        }
        let key = keys::manifest(&req.job, &req.run_id);
        store
            .put_json(&key, &manifest)
            .await
            .map_err(|e| Error::publish_with(format!("writing the manifest: {e}"), e))?;
        ctx.run.manifest_key = Some(key);
        Ok(())
    }

    /// The run's namespaces, where the host and the options allow them.
    fn isolation(&self, work: &Path) -> Result<Option<Isolation>> {
        use crate::agent::sandbox::CgroupMode as Mode;
        let available = crate::agent::sandbox::supervise::namespaces_available();
        match self.sandbox.namespaces {
            Mode::Off => Ok(None),
            Mode::Auto if !available => Ok(None),
            Mode::Required if !available => Err(Error::config(
                "namespaces",
                "namespaces = required, but this host does not give telejob mount, PID, IPC and \
                 network namespaces (telejob must run as root on Linux)",
            )),
            _ => Ok(Some(Isolation {
                work_dir: work.to_path_buf(),
            })),
        }
    }

    /// Removes run directories under the scratch directory that no telejob process holds: those
    /// of runs interrupted by a crash or `kill -9`. Returns how many were removed.
    pub fn remove_orphaned_workspaces(&self) -> usize {
        RunDir::sweep(&self.scratch_dir)
    }

    /// Where the job reads what it published before: a host directory to bind read-only into
    /// its namespaces (its own `<job>/data/` in a local store), and the `TELEJOB_PUBLISHED_DIR`
    /// and `TELEJOB_PUBLIC_URL` it is told (the same data as a `file://` URL, or its public S3
    /// URL).
    fn past_output(
        &self,
        req: &RunRequest,
        ws: &Workspace,
    ) -> (Option<PathBuf>, Vec<(&'static str, String)>) {
        let located = self
            .output_store(req.visibility)
            .locate(&format!("{}/data/", req.job));
        let mut env = Vec::new();
        if Path::new(&located).is_absolute() {
            let dir = PathBuf::from(&located);
            let view = if ws.isolation.is_some() {
                // The mount point, telejob's and read-only: with nothing published yet it stays
                // an empty directory the job cannot write to (the store is not touched).
                use std::os::unix::fs::PermissionsExt;
                let mount_point = ws.work.join("published");
                let made = std::fs::create_dir(&mount_point).and_then(|()| {
                    std::fs::set_permissions(&mount_point, std::fs::Permissions::from_mode(0o555))
                });
                if let Err(e) = made {
                    tracing::warn!(run = %req.run_id, error = %e, "no view of the job's published data");
                    return (None, env);
                }
                PathBuf::from(crate::agent::sandbox::exec::PUBLISHED_VIEW)
            } else {
                // Not isolated, the job is this host's process: it reads the store's own path.
                dir.clone()
            };
            env.push(("TELEJOB_PUBLISHED_DIR", view.display().to_string()));
            env.push(("TELEJOB_PUBLIC_URL", format!("file://{}/", view.display())));
            let bind = (ws.isolation.is_some() && dir.is_dir()).then_some(dir);
            return (bind, env);
        }
        if req.visibility == Visibility::Public
            && let Some((bucket, key)) = located
                .strip_prefix("s3://")
                .and_then(|r| r.split_once('/'))
        {
            env.push((
                "TELEJOB_PUBLIC_URL",
                format!("https://{bucket}.s3.amazonaws.com/{key}"),
            ));
        }
        (None, env)
    }

    fn output_store(&self, v: Visibility) -> Arc<dyn Store> {
        match v {
            Visibility::Public => self.stores.public.clone(),
            Visibility::Private => self.stores.private.clone(),
        }
    }

    /// Copies the log at `path` to `key` while it grows, until `done` (the full log is stored
    /// after that, by [`Self::store_log`]). An interactive command has no log to ship.
    async fn ship_log(&self, key: String, path: &Path, done: &CancellationToken) {
        if self.interactive {
            return;
        }
        let mut shipped = 0u64;
        loop {
            let wait = self.log_ship_every + std::time::Duration::from_millis(shipped >> 10);
            tokio::select! {
                () = done.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            let len = tokio::fs::metadata(path).await.map_or(0, |m| m.len());
            if len == shipped {
                continue;
            }
            let Ok(log) = tokio::fs::read(path).await else {
                continue;
            };
            let opts = PutOptions::default().with_content_type("text/plain; charset=utf-8");
            if self
                .stores
                .private
                .put(&key, log.into(), opts)
                .await
                .is_ok()
            {
                shipped = len;
            }
        }
    }

    async fn store_log(&self, ctx: &mut Ctx<'_>, path: &Path) {
        let key = keys::log(&ctx.req.job, &ctx.req.run_id);
        let r = match tokio::fs::File::open(path).await {
            Ok(f) => self
                .stores
                .private
                .put_stream(
                    &key,
                    Box::new(f),
                    PutOptions::default().with_content_type("text/plain; charset=utf-8"),
                )
                .await
                .map(|_| ()),
            Err(e) => Err(Error::io(path, e)),
        };
        match r {
            Ok(()) => ctx.run.log_key = Some(key),
            Err(e) => {
                tracing::warn!(run = %ctx.req.run_id, error = %e, "could not store the run log")
            }
        }
    }
}

fn ms(t: Instant) -> u64 {
    t.elapsed().as_millis().try_into().unwrap_or(u64::MAX)
}

#[cfg(test)]
#[path = "pipeline_tests.rs"]
mod tests;
