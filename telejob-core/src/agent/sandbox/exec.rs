//! Running the job's command under its timeout, and ending everything it started.

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::cgroup::{LimitEvents, LimitGroups, RunCgroup};
use super::log::{LogStats, Masker, capture};
use super::supervise::{self, Namespaces, Plan};
use super::tracker::ProcessTracker;
use super::{CgroupMode, SandboxOptions};
use crate::compute::{EventSink, RunEvent};
use crate::error::{Error, Result};
use crate::limits::{Bytes, Network, ResourceLimits};

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    /// It exited with this code.
    Exited(i32),
    /// A signal not sent by telejob ended it.
    Signaled(i32),
    /// The timeout expired and the run was killed.
    TimedOut,
    /// The run was cancelled and killed.
    Cancelled,
    /// A resource limit ended it.
    OverLimit(LimitHit),
}

/// The limit that ended a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitHit {
    /// The kernel killed a process for memory.
    Memory(Bytes),
    /// The run could not start another process.
    Processes(u32),
    /// The workspace grew past its limit (or a file past the file-size floor).
    Disk(Bytes),
    /// A machine's disk was full when its command failed.
    DiskFull(Bytes),
}

impl std::fmt::Display for LimitHit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Memory(b) => write!(f, "out of memory: limit {b} (limits.memory)"),
            Self::Processes(n) => {
                write!(f, "too many processes: limit {n} (limits.processes)")
            }
            Self::Disk(b) => write!(f, "workspace over {b} (limits.disk)"),
            Self::DiskFull(b) => write!(f, "workspace full: limit {b} (limits.disk)"),
        }
    }
}

/// How the run's processes were contained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Containment {
    /// A cgroup v2 of its own.
    Cgroup,
    /// Process group plus `/proc` tracking (the fallback).
    Tracked,
}

/// The result of [`execute`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutcome {
    /// How the command ended.
    pub exit: ExitKind,
    /// The log.
    pub log: LogStats,
    /// How processes were contained.
    pub containment: Containment,
    /// Processes still found after the final kill (should be zero).
    pub survivors: usize,
    /// What the limit controllers counted.
    pub limit_events: LimitEvents,
}

/// The run's own namespaces. Its work directory appears at [`JOB_ROOT`] (the only place it may
/// write), and its `tmp`, `var-tmp` and `shm` subdirectories over `/tmp`, `/var/tmp` and
/// `/dev/shm`.
#[derive(Debug, Clone)]
pub struct Isolation {
    /// The run's work directory on the host.
    pub work_dir: PathBuf,
}

/// Where the job sees host path `p`: under [`JOB_ROOT`] when `p` is in an isolated run's work
/// directory, else where it is.
pub fn job_view(isolation: Option<&Isolation>, p: &std::path::Path) -> PathBuf {
    match isolation.map(|iso| p.strip_prefix(&iso.work_dir)) {
        Some(Ok(rel)) => std::path::Path::new(JOB_ROOT).join(rel),
        _ => p.to_path_buf(),
    }
}

pub use super::supervise::{JOB_ROOT, PRIVATE_DIRS};

/// How one run is confined, beyond the host-wide [`SandboxOptions`].
#[derive(Debug, Clone, Default)]
pub struct Confinement {
    /// The UID and GID to run as; `None` runs as telejob itself.
    pub ids: Option<(u32, u32)>,
    /// The ids are this run's alone, so `RLIMIT_NPROC` counts only its processes.
    pub dedicated_ids: bool,
    /// Mount, PID, IPC (and, with `network = off`, network) namespaces; `None`: the host's.
    pub isolation: Option<Isolation>,
    /// Resource limits.
    pub limits: ResourceLimits,
    /// The directory `limits.disk` measures (runs without a disk of their own).
    pub disk_root: Option<PathBuf>,
    /// The run is a machine of its own (an image, root in a user namespace, its own network
    /// and disk); `isolation` then says where its work directory is.
    pub machine: Option<std::sync::Arc<Machine>>,
    /// A host directory the job reads at [`PUBLISHED_VIEW`] (its own published data), bound
    /// read-only in its namespaces (isolated runs only).
    pub published: Option<PathBuf>,
}

/// Where an isolated run sees its job's published data (read-only): `TELEJOB_PUBLISHED_DIR`.
pub const PUBLISHED_VIEW: &str = "/run/telejob/work/published";

/// pasta attaching to a run's network namespace, on a thread of its own.
pub type PastaStart = tokio::task::JoinHandle<std::io::Result<super::network::Pasta>>;

/// A run's machine, as the pipeline prepared it: see [`super::init`].
#[derive(Debug)]
pub struct Machine {
    /// The run directory: the supervisor's working directory, holding `lower`, `root` and
    /// `disk` (with `upper`, `ovwork` and `work`).
    pub run_dir: PathBuf,
    /// The root file system's lower layer.
    pub image: super::image::ImageRoot,
    /// The run's user namespace.
    pub userns: super::userns::RunUserNs,
    /// The machine's host name.
    pub hostname: String,
    /// Outbound network (pasta); without it, loopback only.
    pub outbound: bool,
    /// The run's network namespace, made at prepare time (owned by `userns`); `None`: the
    /// supervisor makes one (loopback only).
    pub netns: Option<OwnedFd>,
    /// pasta starting on `netns` while the code is fetched: joined before the job may start.
    pub network: std::sync::Mutex<Option<PastaStart>>,
    /// The size of `/dev/shm`.
    pub shm_bytes: u64,
}

/// One command to execute.
#[derive(Debug)]
pub struct ExecSpec {
    /// The bash command line.
    pub command: String,
    /// Working directory (the code root).
    pub cwd: PathBuf,
    /// The complete environment (nothing else is inherited).
    pub env: Vec<(OsString, OsString)>,
    /// The timeout.
    pub timeout: Duration,
    /// The run id, used to name the cgroup and mark processes.
    pub run_id: String,
    /// Where the log goes.
    pub log_path: PathBuf,
    /// Live events.
    pub events: Option<EventSink>,
    /// Fires to cancel the run.
    pub cancel: CancellationToken,
    /// Identity, namespaces, limits.
    pub confinement: Confinement,
    /// Values (secrets) replaced by `***` in the log and the live output.
    pub mask: Vec<Vec<u8>>,
    /// What the log says first (what the run's machine is), before the command's output.
    pub preamble: String,
    /// Attached to this process's terminal (an interactive shell: `telejob worker shell`):
    /// stdin, stdout and stderr are the terminal's, the job's process group is made the
    /// terminal's foreground group while it runs, and no log is written.
    pub interactive: bool,
}

enum Group {
    Cgroup(RunCgroup, ProcessTracker),
    Tracked(ProcessTracker),
}

impl Group {
    fn signal(&self, sig: i32) {
        match self {
            Self::Cgroup(cg, t) => {
                cg.signal(sig);
                // The process group too: cheap, and covers a kernel that refused the move.
                // SAFETY: kill(2) on the job's process group; no memory is involved.
                unsafe { libc::kill(-t_pgid(t), sig) };
            }
            Self::Tracked(t) => {
                t.signal(sig);
            }
        }
    }

    fn alive(&self) -> usize {
        match self {
            Self::Cgroup(cg, _) => cg.pids().len(),
            Self::Tracked(t) => t.pids().len(),
        }
    }

    fn containment(&self) -> Containment {
        match self {
            Self::Cgroup(..) => Containment::Cgroup,
            Self::Tracked(_) => Containment::Tracked,
        }
    }
}

fn t_pgid(t: &ProcessTracker) -> i32 {
    t.pgid()
}

#[cfg(test)]
#[path = "exec_tests.rs"]
mod tests;

/// Waits until the group is empty or `within` passes; polls the kernel's view every few ms.
async fn wait_empty(group: &Group, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if group.alive() == 0 {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Ends every process of the run: TERM, up to `grace` for them to exit, then KILL.
async fn end_all(group: &Group, child: &mut tokio::process::Child, grace: Duration) -> usize {
    group.signal(libc::SIGTERM);
    let _ = child.try_wait();
    wait_empty(group, grace).await;
    kill_rest(group, child).await
}

/// SIGKILL for whatever is left; returns how many processes survived (should be 0).
async fn kill_rest(group: &Group, child: &mut tokio::process::Child) -> usize {
    for _ in 0..5 {
        group.signal(libc::SIGKILL);
        let _ = child.start_kill();
        let _ = child.wait().await;
        if wait_empty(group, Duration::from_millis(500)).await {
            return 0;
        }
    }
    group.alive()
}

/// Runs `spec.command` with `bash -c` and returns how it ended.
///
/// The command gets a process group (and, where the host allows, a cgroup) of its own, no stdin,
/// stdout and stderr interleaved through one pipe into the log. At the timeout or on cancel:
/// SIGTERM to everything the run started, `grace` to exit, then SIGKILL. When the main process
/// exits on its own, whatever it left running is killed too. A process that keeps the output pipe
/// open cannot hang the run.
///
/// # Errors
///
/// [`Error::Spawn`] when the command cannot be started; [`Error::Io`] for log failures.
pub async fn execute(spec: ExecSpec, opts: &SandboxOptions) -> Result<ExecOutcome> {
    let conf = &spec.confinement;
    let no_network = conf.limits.network == Some(Network::Off);
    if no_network && conf.isolation.is_none() {
        return Err(Error::spawn(
            "limits.network = off needs a network namespace, which telejob cannot make here",
            std::io::Error::from(std::io::ErrorKind::Unsupported),
        ));
    }
    let (reader, writer) = std::io::pipe().map_err(|e| Error::spawn("cannot create a pipe", e))?;
    let writer2 = writer
        .try_clone()
        .map_err(|e| Error::spawn("cannot dup a pipe", e))?;
    let cgroup = match opts.cgroup {
        CgroupMode::Off => None,
        CgroupMode::Auto => match RunCgroup::create(&spec.run_id) {
            Ok(cg) => Some(cg),
            Err(e) => {
                tracing::debug!(error = %e, "no cgroup for the run; using process-group tracking");
                None
            }
        },
        CgroupMode::Required => Some(RunCgroup::create(&spec.run_id).map_err(|e| {
            Error::spawn(
                "a cgroup v2 is required (sandbox.cgroup = required) but cannot be made",
                e,
            )
        })?),
    };
    let limit_groups = if opts.cgroup == CgroupMode::Off {
        LimitGroups::default()
    } else {
        LimitGroups::create(&spec.run_id, cgroup.as_ref(), &conf.limits)
            .map_err(|e| Error::spawn("cannot apply the run's resource limits", e))?
    };
    let mut cmd = match &conf.machine {
        // The exec'd init: this program again, in init mode (see `init`).
        Some(m) => {
            let mut c = tokio::process::Command::new("/proc/self/exe");
            c.arg0("telejob-init")
                .arg(super::init::INIT_ARG)
                .current_dir(&m.run_dir)
                .env_clear();
            c
        }
        None => {
            let bash = ["/bin/bash", "/usr/bin/bash"]
                .into_iter()
                .find(|p| std::path::Path::new(p).exists())
                .unwrap_or("bash");
            let mut c = tokio::process::Command::new(bash);
            c.arg("-c")
                .arg(&spec.command)
                .current_dir(&spec.cwd)
                .env_clear()
                .envs(spec.env.iter().map(|(k, v)| (k, v)));
            c
        }
    };
    cmd.process_group(0).kill_on_drop(true);
    if spec.interactive {
        cmd.stdin(Stdio::inherit())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit());
        drop((writer, writer2));
    } else {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(OwnedFd::from(writer)))
            .stderr(Stdio::from(OwnedFd::from(writer2)));
    }
    let mut plan = plan(&spec, cgroup.as_ref(), &limit_groups)
        .map_err(|e| Error::spawn("cannot prepare the run's sandbox", e))?;
    let handshake = match &conf.machine {
        Some(m) => Some(
            machine_plan(&spec, m, &mut plan)
                .map_err(|e| Error::spawn("cannot prepare the run's machine", e))?,
        ),
        None => None,
    };
    let report = supervise::install(&mut cmd, plan)
        .map_err(|e| Error::spawn("cannot prepare the run's supervisor", e))?;
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::spawn("the run's supervisor", e))?;
    // Our copies of the pipe's write end are gone with `cmd`; the job holds the only ones.
    drop(cmd);
    let pid = child.id().map_or(0, |p| p as i32);
    // A machine with network on: pasta started on its namespace while the code was fetched;
    // once it is ready, the init may start the job.
    let mut network_error = None;
    let _pasta = match (handshake, &conf.machine) {
        (Some(h), Some(m)) => {
            let start = m
                .network
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            let pasta = match start {
                Some(j) => j
                    .await
                    .map_err(|e| Error::task("attaching the run's network", e))?
                    .map(Some),
                None => Ok(None),
            };
            match pasta {
                Ok(p) => {
                    h.go();
                    p
                }
                Err(e) => {
                    // A closed go-ahead: the init fails, saying the link is missing.
                    network_error = Some(e);
                    None
                }
            }
        }
        _ => None,
    };
    let terminal = spec.interactive.then(|| Foreground::give(pid)).flatten();
    let tracker = ProcessTracker::new(pid, &spec.run_id);
    let group = match cgroup {
        Some(cg) => Group::Cgroup(cg, tracker),
        None => Group::Tracked(tracker),
    };
    let pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(OwnedFd::from(reader))
        .map_err(|e| Error::spawn("cannot watch the output pipe", e))?;
    let stop_log = CancellationToken::new();
    let cap = opts.log_cap_bytes;
    let log_path = spec.log_path.clone();
    let events = spec.events.clone();
    let stop = stop_log.clone();
    let masker = Masker::new(spec.mask.clone());
    let preamble = spec.preamble.clone();
    let log_task = tokio::spawn(async move {
        capture(pipe, &log_path, &preamble, cap, events, stop, masker).await
    });

    let exit = tokio::select! {
        status = child.wait() => match status {
            Ok(s) => match (s.code(), std::os::unix::process::ExitStatusExt::signal(&s)) {
                (Some(c), _) => ExitKind::Exited(c),
                (None, Some(sig)) => ExitKind::Signaled(sig),
                (None, None) => ExitKind::Exited(-1),
            },
            Err(e) => return Err(Error::spawn("waiting for the command", e)),
        },
        () = tokio::time::sleep(spec.timeout) => ExitKind::TimedOut,
        () = spec.cancel.cancelled() => ExitKind::Cancelled,
        bytes = disk_over(conf.disk_root.as_deref(), conf.limits.disk) => {
            ExitKind::OverLimit(LimitHit::Disk(bytes))
        }
    };
    if let Some(ev) = &spec.events
        && exit == ExitKind::TimedOut
    {
        ev.emit(RunEvent::Warning(format!(
            "timed out after {:?}; ending every process of the run",
            spec.timeout
        )));
    }
    let survivors = match exit {
        ExitKind::TimedOut | ExitKind::Cancelled => {
            end_all(&group, &mut child, opts.kill_grace).await
        }
        ExitKind::OverLimit(_) => kill_rest(&group, &mut child).await,
        // The main process is done: whatever it left behind goes too.
        _ => kill_rest(&group, &mut child).await,
    };
    drop(terminal);
    // Everything is dead, so the pipe is closed — unless a process escaped; don't wait for it.
    let mut log_task = log_task;
    let joined = match tokio::time::timeout(Duration::from_secs(2), &mut log_task).await {
        Ok(j) => j,
        Err(_) => {
            tracing::warn!(run = %spec.run_id, "output pipe still open after every process was killed");
            stop_log.cancel();
            log_task.await
        }
    };
    let log = joined
        .map_err(|e| Error::task("copying the run's output to its log", e))?
        .map_err(|e| Error::io(&spec.log_path, e))?;
    if survivors > 0 {
        tracing::warn!(run = %spec.run_id, survivors, "processes survived the final kill");
    }
    let containment = group.containment();
    let limit_events = limit_groups.events();
    let exit = blame_limits(exit, limit_events, &conf.limits);
    // Removing the cgroups waits for the kernel to let its last processes go (up to a second):
    // not on the runtime's threads.
    if let Err(e) = tokio::task::spawn_blocking(move || drop((group, limit_groups))).await {
        tracing::error!(run = %spec.run_id, error = %e, "removing the run's cgroup did not finish");
    }
    if let Some(e) = network_error {
        return Err(Error::spawn("starting the run's network (pasta)", e));
    }
    if let Some((step, e)) = tokio::task::spawn_blocking(move || report.failure())
        .await
        .map_err(|e| Error::task("reading the sandbox's report", e))?
    {
        return Err(Error::spawn(
            format!("setting up the run's sandbox: {step}"),
            e,
        ));
    }
    Ok(ExecOutcome {
        exit,
        log,
        containment,
        survivors,
        limit_events,
    })
}

/// The terminal's foreground given to a job's process group, taken back when dropped.
struct Foreground {
    ours: libc::pid_t,
}

impl Foreground {
    /// Makes process group `pgid` the foreground of the terminal on stdin, if stdin is one.
    fn give(pgid: i32) -> Option<Self> {
        // SAFETY: isatty, getpgrp, signal and tcsetpgrp on descriptor 0; no memory involved.
        // SIGTTOU is ignored around tcsetpgrp so that a background caller is not stopped.
        unsafe {
            if libc::isatty(0) != 1 {
                return None;
            }
            let ours = libc::getpgrp();
            let old = libc::signal(libc::SIGTTOU, libc::SIG_IGN);
            let ok = libc::tcsetpgrp(0, pgid) == 0;
            libc::signal(libc::SIGTTOU, old);
            ok.then_some(Self { ours })
        }
    }
}

impl Drop for Foreground {
    fn drop(&mut self) {
        // SAFETY: as in `give`.
        unsafe {
            let old = libc::signal(libc::SIGTTOU, libc::SIG_IGN);
            libc::tcsetpgrp(0, self.ours);
            libc::signal(libc::SIGTTOU, old);
        }
    }
}

/// The supervisor's plan for `spec`.
fn plan(
    spec: &ExecSpec,
    cgroup: Option<&RunCgroup>,
    limits: &LimitGroups,
) -> std::io::Result<Plan> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &std::path::Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::other(format!("{} holds a NUL byte", p.display())))
    };
    let conf = &spec.confinement;
    let mut plan = Plan {
        namespaces: Namespaces {
            private: conf.isolation.is_some(),
            no_network: conf.limits.network == Some(Network::Off),
        },
        chdir: Some(c(&job_view(conf.isolation.as_ref(), &spec.cwd))?),
        ids: conf.ids,
        ..Plan::default()
    };
    if let Some(iso) = &conf.isolation {
        plan.work_dir = Some((c(&iso.work_dir)?, c(std::path::Path::new(JOB_ROOT))?));
        for (sub, dst) in PRIVATE_DIRS {
            let src = std::path::Path::new(JOB_ROOT).join(sub);
            plan.binds.push((c(&src)?, c(std::path::Path::new(dst))?));
        }
        if let Some(p) = &conf.published {
            // A machine binds it onto its work directory (relative to the run directory)
            // before that goes into the machine; a host run at its view directly.
            let target = if conf.machine.is_some() {
                PathBuf::from("disk/work/published")
            } else {
                PathBuf::from(PUBLISHED_VIEW)
            };
            plan.read_only.push((c(p)?, c(&target)?));
        }
    }
    if let Some(cg) = cgroup {
        plan.cgroup_procs.push(cg.procs_fd()?);
        plan.cgroup_kill = cg.kill_fd();
    }
    plan.cgroup_procs.extend(limits.procs_fds()?);
    if let (Some(n), true) = (conf.limits.processes, conf.dedicated_ids) {
        plan.rlimits.push((libc::RLIMIT_NPROC, u64::from(n)));
    }
    if let (Some(d), None) = (conf.limits.disk, &conf.machine) {
        // The floor under the workspace measurement: no single file grows past the limit.
        // (A machine's disk is a file system of that size: the limit is the disk itself.)
        plan.rlimits.push((libc::RLIMIT_FSIZE, d.0));
    }
    Ok(plan)
}

/// telejob's end of the supervisor's handshake for a machine: the go-ahead for the job once its
/// network is attached.
struct Handshake {
    go: Option<std::fs::File>,
}

impl Handshake {
    /// Lets the init start the job (dropped instead, the go-ahead closes and the init fails).
    fn go(mut self) {
        use std::io::Write;
        // A closed read end: the init ended before it (its report says why).
        if let Some(go) = self.go.as_mut() {
            let _ = go.write_all(b"1");
        }
    }
}

/// The machine part of the supervisor's plan, and telejob's end of its handshake.
fn machine_plan(spec: &ExecSpec, m: &Machine, plan: &mut Plan) -> std::io::Result<Handshake> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let conf = &spec.confinement;
    let mut job = super::init::JobPlan::bash(
        &spec.command,
        &spec.env,
        job_view(conf.isolation.as_ref(), &spec.cwd),
    );
    // The resource type is u32 with glibc, c_int with musl.
    #[allow(clippy::unnecessary_cast)]
    let rlimits = std::mem::take(&mut plan.rlimits)
        .into_iter()
        .map(|(r, v)| (r as u32, v))
        .collect();
    job.rlimits = rlimits;
    let init = super::init::InitPlan {
        root: PathBuf::from("root"),
        hostname: m.hostname.clone(),
        resolv_conf: m
            .outbound
            .then(|| std::fs::read_to_string("/etc/resolv.conf").ok())
            .flatten(),
        shm_bytes: m.shm_bytes,
        wait_for_network: m.outbound,
        job,
    };
    let memfd = super::init::plan_fd(&init)?;
    let (go_r, go_w) = if m.outbound {
        let (r, w) = std::io::pipe()?;
        (
            Some(OwnedFd::from(r)),
            Some(std::fs::File::from(OwnedFd::from(w))),
        )
    } else {
        (None, None)
    };
    // `host` runs are restricted processes of the host, never machines.
    let super::image::ImageRoot::Tree(tree) = &m.image else {
        return Err(std::io::Error::other("the host image is not a machine's"));
    };
    let image = CString::new(tree.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("the image's path holds a NUL byte"))?;
    plan.machine = Some(super::supervise::MachinePlan {
        image,
        overlay: c"lowerdir=lower,upperdir=disk/upper,workdir=disk/ovwork".to_owned(),
        userns: m.userns.try_clone_fd()?,
        plan: memfd.into(),
        go: go_r,
        netns: m.netns.as_ref().map(OwnedFd::try_clone).transpose()?,
    });
    plan.ids = None;
    plan.namespaces = Namespaces::default();
    Ok(Handshake { go: go_w })
}

/// A failed or killed run whose limit controllers fired failed because of that limit.
fn blame_limits(exit: ExitKind, ev: LimitEvents, l: &ResourceLimits) -> ExitKind {
    let failed =
        matches!(exit, ExitKind::Exited(c) if c != 0) || matches!(exit, ExitKind::Signaled(_));
    if !failed {
        return exit;
    }
    if let (true, Some(m)) = (ev.oom_kills > 0, l.memory) {
        return ExitKind::OverLimit(LimitHit::Memory(m));
    }
    if let (true, Some(p)) = (ev.pids_max > 0, l.processes) {
        return ExitKind::OverLimit(LimitHit::Processes(p));
    }
    // A process killed at the file-size floor: bash itself, or a command whose status bash
    // passed on (128 + SIGXFSZ).
    let xfsz = matches!(exit, ExitKind::Signaled(libc::SIGXFSZ))
        || matches!(exit, ExitKind::Exited(c) if c == 128 + libc::SIGXFSZ);
    if let (true, Some(d)) = (xfsz, l.disk) {
        return ExitKind::OverLimit(LimitHit::Disk(d));
    }
    exit
}

/// Resolves with the limit once the tree under `root` takes more than `limit` bytes; never
/// without both. Measures with a walk every second, or less often when a walk is slow (at most a
/// tenth of the time goes to measuring).
async fn disk_over(root: Option<&std::path::Path>, limit: Option<Bytes>) -> Bytes {
    let (Some(root), Some(limit)) = (root, limit) else {
        return std::future::pending().await;
    };
    let mut pause = Duration::from_secs(1);
    loop {
        tokio::time::sleep(pause).await;
        let r = root.to_path_buf();
        let started = std::time::Instant::now();
        let used = tokio::task::spawn_blocking(move || disk_usage(&r))
            .await
            .unwrap_or(0);
        if used > limit.0 {
            return limit;
        }
        pause = (started.elapsed() * 10).max(Duration::from_secs(1));
    }
}

/// Bytes allocated to the files under `root` (hard links counted once), without following links.
pub fn disk_usage(root: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    walkdir::WalkDir::new(root)
        .follow_links(false)
        .into_iter()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.nlink() <= 1 || seen.insert((m.dev(), m.ino())))
        .map(|m| m.blocks() * 512)
        .sum()
}
