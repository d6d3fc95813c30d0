//! Job events for notifications.

use std::fmt::Debug;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::job::JobName;
use crate::policy::NotifySpec;
use crate::run::Run;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A slot's run failed for good (its last attempt).
    Failed,
    /// A run failed and will be retried (its slot's final outcome comes later, once).
    Retrying,
    /// A run timed out.
    TimedOut,
    /// A slot was missed (downtime, or overlap = forbid).
    Missed,
    /// The job passed its end date.
    Expired,
    /// The first success after failures.
    Recovered,
    /// A run passed its job's usual duration by the configured margin, before its timeout.
    RunningLate,
    /// An analysis worker ends within the hour (the event's `job` is the worker's name).
    WorkerEndingSoon,
    /// An analysis worker ended (the event's `job` is the worker's name).
    WorkerEnded,
}

/// One event of one job, with where to send it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobEvent {
    /// What happened.
    pub kind: EventKind,
    /// The job.
    pub job: JobName,
    /// The run concerned, if any.
    pub run: Option<Run>,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// In words.
    pub message: String,
    /// Where the job's notifications go.
    #[serde(skip)]
    pub notify: NotifySpec,
}

impl JobEvent {
    /// A key unique to this event, for sending each event once.
    pub fn dedupe_key(&self) -> String {
        match &self.run {
            Some(r) => format!("{}:{}:{:?}", self.job, r.id, self.kind),
            None => format!("{}:{}:{:?}", self.job, self.at.timestamp(), self.kind),
        }
    }
}

/// Receives job events. Must not block the scheduler: slow delivery belongs in a task.
#[async_trait]
pub trait Notifier: Send + Sync + Debug + 'static {
    /// Delivers (or queues) one event.
    async fn notify(&self, event: JobEvent);
}

/// Drops every event.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoNotifier;

#[async_trait]
impl Notifier for NoNotifier {
    async fn notify(&self, _event: JobEvent) {}
}

/// Observes the scheduler for metrics. Every method defaults to nothing.
pub trait SchedulerObserver: Send + Sync + Debug + 'static {
    /// A slot fired `lateness` after its time.
    fn fired(&self, _lateness: std::time::Duration) {}
    /// A run finished.
    fn finished(&self, _run: &Run) {}
    /// Runs launched but not started (waiting for a concurrency slot) changed.
    fn queued(&self, _delta: i64) {}
}

/// Observes nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoObserver;

impl SchedulerObserver for NoObserver {}
