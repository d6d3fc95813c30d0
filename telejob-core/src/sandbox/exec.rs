//! Running the job's command under its timeout, and ending everything it started.

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::cgroup::{RunCgroup, join_in_child};
use super::log::{LogStats, capture};
use super::tracker::ProcessTracker;
use super::{CgroupMode, RunAs, SandboxOptions};
use crate::compute::{EventSink, RunEvent};
use crate::error::{Error, Result};

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
    let bash = ["/bin/bash", "/usr/bin/bash"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("bash");
    let mut cmd = tokio::process::Command::new(bash);
    cmd.arg("-c")
        .arg(&spec.command)
        .current_dir(&spec.cwd)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::from(OwnedFd::from(writer)))
        .stderr(Stdio::from(OwnedFd::from(writer2)))
        .process_group(0)
        .kill_on_drop(true);
    if let Some(RunAs { uid, gid, .. }) = opts.run_as {
        cmd.uid(uid).gid(gid);
    }
    let procs_fd = cgroup.as_ref().map(RunCgroup::procs_fd);
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe calls
    // (write(2) to an fd opened before the fork, prctl(2)).
    unsafe {
        cmd.pre_exec(move || {
            if let Some(fd) = procs_fd {
                join_in_child(fd)?;
            }
            // If telejob itself dies, the job's main process goes with it.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| Error::spawn("bash", e))?;
    // Our copies of the pipe's write end are gone with `cmd`; the job holds the only ones.
    drop(cmd);
    let pid = child.id().map_or(0, |p| p as i32);
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
    let log_task = tokio::spawn(async move { capture(pipe, &log_path, cap, events, stop).await });

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
        // The main process is done: whatever it left behind goes too.
        _ => kill_rest(&group, &mut child).await,
    };
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
    // Removing the cgroup waits for the kernel to let its last processes go (up to a second):
    // not on the runtime's threads.
    if let Err(e) = tokio::task::spawn_blocking(move || drop(group)).await {
        tracing::error!(run = %spec.run_id, error = %e, "removing the run's cgroup did not finish");
    }
    Ok(ExecOutcome {
        exit,
        log,
        containment,
        survivors,
    })
}
