//! The compute interface: where runs execute.

use std::fmt::{self, Debug};
use std::sync::Arc;

use async_trait::async_trait;

use crate::error::Result;
use crate::run::{Run, RunId, RunRequest, RunState};

/// What a compute backend can do, declared up front.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ComputeCapabilities {
    /// A short name (`local`, `ec2`).
    pub name: &'static str,
    /// Runs execute on another machine (code and output travel through the store).
    pub remote: bool,
    /// `cancel` stops a run that is in flight.
    pub cancel: bool,
    /// `reattach` finds runs launched by an earlier process (they outlive it).
    pub reattach: bool,
    /// How many runs may execute at once; more wait in a queue. `None`: no limit.
    pub max_concurrent: Option<usize>,
    /// Every process a run starts is confined and killed with it (cgroup), rather than tracked
    /// best-effort.
    pub contained: bool,
    /// The resource limits runs get (`limits.*` of a job); others are refused at save time.
    pub limits: crate::limits::LimitSupport,
    /// The machine types runs may ask for (`instance_type` of a job); `None`: the backend runs
    /// on one kind of machine and jobs may not choose.
    pub machine_types: Option<crate::worker::MachineTypes>,
    /// [`Compute::reaper`] gives a [`Reaper`] for machines nobody needs.
    pub reaper: bool,
    /// [`Compute::workers`] gives a [`WorkerBackend`](crate::worker::WorkerBackend) for
    /// analysis workers on machines like the runs'.
    pub workers: bool,
    /// Runs get store credentials of their own that cannot be revoked and stay valid after the
    /// run ends, for this long after its launch (`None`: nothing of a run can write once it has
    /// ended). A server keeps a deleted job's name reserved until they have expired.
    pub run_credentials: Option<CredentialLifetime>,
}

/// How long the store credentials a backend gives each run stay valid: the run's timeout plus
/// `margin`, within `min..=max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CredentialLifetime {
    /// Added to the run's timeout.
    pub margin: std::time::Duration,
    /// The shortest lifetime.
    pub min: std::time::Duration,
    /// The longest lifetime.
    pub max: std::time::Duration,
}

impl CredentialLifetime {
    /// The lifetime of the credentials of a run with `timeout`.
    pub fn for_timeout(&self, timeout: std::time::Duration) -> std::time::Duration {
        (timeout + self.margin).clamp(self.min, self.max.max(self.min))
    }
}

impl ComputeCapabilities {
    /// Capabilities for a backend called `name`, with nothing declared yet.
    pub fn named(name: &'static str) -> Self {
        Self {
            name,
            remote: false,
            cancel: false,
            reattach: false,
            max_concurrent: None,
            contained: false,
            limits: crate::limits::LimitSupport::default(),
            machine_types: None,
            reaper: false,
            workers: false,
            run_credentials: None,
        }
    }
}

/// Something that happened during a run, for live progress displays.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RunEvent {
    /// The run entered a state.
    State(RunState),
    /// A chunk of the run's output (stdout and stderr interleaved), possibly not line-aligned.
    Output(bytes::Bytes),
    /// A file was published (path relative to the output directory, size).
    Published {
        /// The file's path relative to the output directory.
        path: String,
        /// Its size in bytes.
        size: u64,
    },
    /// A warning that does not fail the run (a skipped file, a truncated log).
    Warning(String),
}

/// A callback that receives [`RunEvent`]s. It must not block.
#[derive(Clone)]
pub struct EventSink(Arc<dyn Fn(RunEvent) + Send + Sync>);

impl EventSink {
    /// Wraps a callback.
    pub fn new(f: impl Fn(RunEvent) + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    /// Delivers an event.
    pub fn emit(&self, e: RunEvent) {
        (self.0)(e);
    }
}

impl Debug for EventSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EventSink(..)")
    }
}

/// Options for [`Compute::launch`]. `Default` is a plain launch.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct LaunchOptions {
    /// Receives live events, where the backend can deliver them.
    pub events: Option<EventSink>,
}

impl LaunchOptions {
    /// Sends live events to `sink`.
    pub fn with_events(mut self, sink: EventSink) -> Self {
        self.events = Some(sink);
        self
    }
}

/// A compute backend. Object-safe: use it as `Arc<dyn Compute>`.
///
/// # Contract
///
/// * `launch` returns once the run is accepted (queued or started), not when it ends. Launching a
///   run id that is already known returns without starting a second execution.
/// * `wait` returns the final [`Run`] (a terminal state) of a launched run.
/// * `cancel` ends a run in flight and everything it started; the run ends `cancelled`. Cancelling
///   a finished run is a no-op.
/// * `status` gives the latest known [`Run`], or `None` for an unknown id.
///
/// The conformance suite (`testing` feature) checks all of this.
#[async_trait]
pub trait Compute: Send + Sync + Debug + 'static {
    /// What this backend can do.
    fn capabilities(&self) -> ComputeCapabilities;

    /// Starts (or queues) a run.
    async fn launch(&self, req: RunRequest, opts: LaunchOptions) -> Result<()>;

    /// Waits for a launched run to end.
    async fn wait(&self, run: &RunId) -> Result<Run>;

    /// Ends a run in flight.
    async fn cancel(&self, run: &RunId) -> Result<()>;

    /// The latest known state of a run.
    async fn status(&self, run: &RunId) -> Result<Option<Run>>;

    /// Resumes following `run`, launched by an earlier process (before a restart), so that
    /// [`wait`](Self::wait), [`cancel`](Self::cancel) and [`status`](Self::status) work on it
    /// again. `Ok(false)` when the run cannot be found: it is lost, and the caller records it as
    /// interrupted. The default knows no earlier runs: local runs die with their process.
    async fn reattach(&self, run: &Run) -> Result<bool> {
        let _ = run;
        Ok(false)
    }

    /// The reaper of machines this backend launched that nobody needs any more, when it has
    /// one ([`ComputeCapabilities::reaper`]). The default has none: local runs die with their
    /// process.
    fn reaper(&self) -> Option<Arc<dyn Reaper>> {
        None
    }

    /// Analysis workers on machines like this backend's runs, when it offers them
    /// ([`ComputeCapabilities::workers`]).
    fn workers(&self) -> Option<Arc<dyn crate::worker::WorkerBackend>> {
        None
    }

    /// The images a job may name (its `image`) as of now, when runs start from images of this
    /// host's; `None` when they do not (runs on EC2 start from the AMI; runs that are not
    /// machines of their own see the host).
    fn images(&self) -> Option<Vec<String>> {
        None
    }
}

/// Why a [`Reaper`] ended a machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReapReason {
    /// The run's status says it is over.
    Finished,
    /// This launcher does not follow the run (launched by a process that is gone, and not
    /// reattached).
    Unknown,
    /// The machine's deadline has passed.
    PastDeadline,
}

/// One machine a [`Reaper`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reaped {
    /// The machine (an EC2 instance id).
    pub instance_id: String,
    /// Its run.
    pub run_id: String,
    /// Why.
    pub reason: ReapReason,
}

/// Ends machines of runs that nobody needs: finished, unknown to this launcher, or past their
/// deadline. Backends whose runs outlive their launcher have one ([`Compute::reaper`]).
///
/// # Contract
///
/// `reap` leaves machines of runs this process follows and that are in time alone; it may be
/// called at any moment, and repeatedly.
#[async_trait]
pub trait Reaper: Send + Sync + Debug + 'static {
    /// One pass; returns what it ended.
    async fn reap(&self) -> Result<Vec<Reaped>>;
}

/// Runs `reaper` now and then every `every`, until the task is aborted.
pub fn spawn_reaper(
    reaper: Arc<dyn Reaper>,
    every: std::time::Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match reaper.reap().await {
                Ok(r) if !r.is_empty() => tracing::warn!(count = r.len(), "reaped machines"),
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "reaper pass failed"),
            }
            tokio::time::sleep(every).await;
        }
    })
}
