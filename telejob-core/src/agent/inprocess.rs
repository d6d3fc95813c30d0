//! A compute backend that runs the pipeline as tasks of this process: the reference backend, and
//! the engine behind `telejob-local`'s `LocalCompute`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;

use crate::agent::pipeline::{FailureKind, Pipeline};
use crate::agent::sandbox::CgroupMode;
use crate::compute::{Compute, ComputeCapabilities, LaunchOptions, RunEvent};
use crate::error::{Error, Result};
use crate::run::{Run, RunId, RunRequest, RunState};

struct Entry {
    latest: watch::Receiver<Run>,
    cancel: CancellationToken,
    failure: Arc<Mutex<Option<FailureKind>>>,
}

/// Runs each launched request through a [`Pipeline`] on a tokio task, at most `max_concurrent`
/// at once (the rest wait in launch order).
#[derive(Clone)]
pub struct InProcessCompute {
    pipeline: Pipeline,
    permits: Arc<Semaphore>,
    max_concurrent: usize,
    runs: Arc<Mutex<HashMap<RunId, Entry>>>,
    name: &'static str,
}

impl std::fmt::Debug for InProcessCompute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessCompute")
            .field("name", &self.name)
            .field("max_concurrent", &self.max_concurrent)
            .finish_non_exhaustive()
    }
}

impl InProcessCompute {
    /// Runs requests through `pipeline`, `max_concurrent` at once (at least 1).
    pub fn new(pipeline: Pipeline, max_concurrent: usize) -> Self {
        let n = max_concurrent.max(1);
        Self {
            pipeline,
            permits: Arc::new(Semaphore::new(n)),
            max_concurrent: n,
            runs: Arc::new(Mutex::new(HashMap::new())),
            name: "in-process",
        }
    }

    /// Sets the name reported in capabilities.
    pub fn named(mut self, name: &'static str) -> Self {
        self.name = name;
        self
    }

    /// The pipeline runs go through.
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// How a finished run failed, if it did (bad input, the job, the system).
    pub fn failure_kind(&self, run: &RunId) -> Option<FailureKind> {
        self.lock().get(run).and_then(|e| {
            *e.failure
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RunId, Entry>> {
        self.runs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl Compute for InProcessCompute {
    fn capabilities(&self) -> ComputeCapabilities {
        let mut c = ComputeCapabilities::named(self.name);
        c.cancel = true;
        c.max_concurrent = Some(self.max_concurrent);
        c.contained = self.pipeline.sandbox.cgroup == CgroupMode::Required;
        c.limits = self.pipeline.sandbox.limit_support();
        c
    }

    async fn launch(&self, req: RunRequest, opts: LaunchOptions) -> Result<()> {
        let (tx, rx) = watch::channel(Run::pending(&req));
        let cancel = CancellationToken::new();
        let failure = Arc::new(Mutex::new(None));
        {
            let mut runs = self.lock();
            if runs.contains_key(&req.run_id) {
                return Ok(()); // idempotent: one execution per run id
            }
            runs.insert(
                req.run_id.clone(),
                Entry {
                    latest: rx,
                    cancel: cancel.clone(),
                    failure: failure.clone(),
                },
            );
        }
        let (pipeline, permits) = (self.pipeline.clone(), self.permits.clone());
        let tx = Arc::new(tx);
        let user_events = opts.events.clone();
        let tx2 = tx.clone();
        let sink = crate::compute::EventSink::new(move |e: RunEvent| {
            if let RunEvent::State(s) = &e {
                tx2.send_modify(|r| r.state = *s);
            }
            if let Some(u) = &user_events {
                u.emit(e);
            }
        });
        tokio::spawn(async move {
            let _permit = tokio::select! {
                p = permits.acquire_owned() => p.ok(),
                () = cancel.cancelled() => None,
            };
            let out = if cancel.is_cancelled() {
                let mut run = Run::pending(&req);
                run.state = RunState::Cancelled;
                run.error = Some(Error::Cancelled.to_string());
                run.phases.finished = Some(chrono::Utc::now());
                run
            } else {
                let o = pipeline.run(&req, Some(sink), cancel).await;
                *failure
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = o.failure;
                o.run
            };
            tx.send_replace(out);
        });
        Ok(())
    }

    async fn wait(&self, run: &RunId) -> Result<Run> {
        let mut rx = self
            .lock()
            .get(run)
            .map(|e| e.latest.clone())
            .ok_or_else(|| Error::NotFound(format!("run {run}")))?;
        let done = rx
            .wait_for(|r| r.state.is_terminal() && r.phases.finished.is_some())
            .await
            .map_err(|_| Error::Compute {
                op: "wait",
                reason: "the run's task ended without a result".into(),
                retryable: false,
                source: None,
            })?;
        Ok(done.clone())
    }

    async fn cancel(&self, run: &RunId) -> Result<()> {
        if let Some(e) = self.lock().get(run) {
            e.cancel.cancel();
        }
        Ok(())
    }

    async fn status(&self, run: &RunId) -> Result<Option<Run>> {
        Ok(self.lock().get(run).map(|e| e.latest.borrow().clone()))
    }

    fn images(&self) -> Option<Vec<String>> {
        self.pipeline
            .sandbox
            .machine_here()
            .map(|m| m.images.names())
    }
}
