//! A run's life in the engine: its row recorded before launch, launched, followed to its end,
//! then notified and retried per the job's policy.

use chrono::{DateTime, Utc};

use super::notify::EventKind;
use super::persist::{RunRow, Trigger};
use super::{Entry, NewRun, Scheduler, Timer};
use crate::compute::{EventSink, LaunchOptions, RunEvent};
use crate::error::{Error, Result};
use crate::job::JobName;
use crate::run::{Run, RunId, RunRequest, RunState};
use tokio_util::sync::CancellationToken;

/// Why a run stopped waiting for its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The run was cancelled.
    Cancelled,
    /// The scheduler stops.
    Shutdown,
}

impl Scheduler {
    pub(super) fn request(&self, entry: &Entry, slot: DateTime<Utc>, id: RunId) -> RunRequest {
        let spec = entry.job.spec();
        RunRequest::new(
            entry.job.name().clone(),
            entry.code.clone().unwrap_or_default(),
            spec.command.clone(),
        )
        .with_run_id(id)
        .with_output_dir(spec.output_dir.clone())
        .with_timeout(entry.job.timeout())
        .with_envs(spec.env.clone())
        .with_scheduled_for(slot)
        .with_visibility(spec.output_visibility)
        .with_owner((!entry.owner.is_empty()).then(|| entry.owner.clone()))
        .with_limits(self.inner.parts.limits.resources.effective(&spec.limits))
        .with_instance_type(spec.instance_type.clone())
        .with_image(spec.image.clone())
    }

    /// Inserts the run row, then launches. `Ok(None)` when the slot key exists already.
    pub(super) async fn launch(&self, job: &JobName, new: NewRun) -> Result<Option<RunId>> {
        let (trigger, attempt) = (new.trigger, new.attempt);
        let Some((entry, req, run)) = self.record(job, new).await? else {
            return Ok(None); // this slot already has its run: exactly once
        };
        let run_id = req.run_id.clone();
        self.begin(entry, req, run, trigger, attempt, None);
        Ok(Some(run_id))
    }

    /// Inserts the run row of a run about to start; `Ok(None)` when the slot key exists.
    pub(super) async fn record(
        &self,
        job: &JobName,
        new: NewRun,
    ) -> Result<Option<(Entry, RunRequest, Run)>> {
        let NewRun {
            slot,
            key: slot_key,
            trigger,
            attempt,
            id,
            replay,
        } = new;
        let entry = self
            .lock()
            .jobs
            .get(job)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("job {job}")))?;
        let mut req = self.request(&entry, slot, id.unwrap_or_default());
        let replay_of = replay.map(|r| {
            req.command = r.snapshot.command;
            req.output_dir = r.snapshot.output_dir;
            req.env = r.snapshot.env;
            req.timeout = std::time::Duration::from_secs(r.snapshot.timeout_seconds);
            req.code = r.code;
            r.of
        });
        let mut run = Run::pending(&req);
        run.replay_of = replay_of;
        let row = RunRow {
            run: run.clone(),
            slot_key,
            trigger,
            attempt,
        };
        if !self.inner.parts.store.insert_run(&row).await? {
            return Ok(None);
        }
        Ok(Some((entry, req, run)))
    }

    /// Queues a recorded run for its fair turn at a slot, then launches it and follows it on a
    /// task of its own; `permit` (a backfill's share) is held until the run ends. Returns at
    /// once: a burst of runs is handed over without waiting for any of them.
    pub(super) fn begin(
        &self,
        entry: Entry,
        req: RunRequest,
        mut run: Run,
        trigger: Trigger,
        attempt: u32,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
    ) {
        let me = self.clone();
        if req.code.is_empty() {
            self.inner.tasks.spawn(async move {
                run.state = RunState::Failed;
                run.error = Some("the job has no code yet: upload a code tarball first".into());
                run.phases.finished = Some(me.inner.parts.clock.now());
                if let Err(e) = me.save_run(&run).await {
                    tracing::warn!(run = %run.id, error = %e, "cannot record the run's end");
                }
                me.finished(&entry, run, trigger, attempt).await;
                drop(permit);
            });
            return;
        }
        let job = entry.job.name().clone();
        let run_id = req.run_id.clone();
        let wait = CancellationToken::new();
        {
            let mut st = self.lock();
            st.active
                .entry(job.clone())
                .or_default()
                .push(run_id.clone());
            st.waiting.insert(run_id.clone(), wait.clone());
        }
        self.inner.parts.observer.queued(1);
        self.inner.tasks.spawn(async move {
            let slot = match me.turn(&entry, &run_id, &wait).await {
                Ok(slot) => slot,
                Err(stop) => {
                    me.inner.parts.observer.queued(-1);
                    me.forget_active(entry.job.name(), &run_id);
                    if stop == Stop::Cancelled {
                        me.not_started(&entry, run, trigger, attempt).await;
                    }
                    return; // else the row stays in flight for the next start
                }
            };
            me.launch_now(entry, req, run, trigger, attempt).await;
            drop(slot);
            drop(permit);
        });
    }

    /// Waits for the run's fair turn at a slot; an error when the run was cancelled or the
    /// scheduler stops first.
    async fn turn(
        &self,
        entry: &Entry,
        run: &RunId,
        wait: &CancellationToken,
    ) -> std::result::Result<super::fair::Slot, Stop> {
        let slot = tokio::select! {
            s = self.inner.gate.acquire(&entry.owner, run.as_str()) => s,
            () = wait.cancelled() => return Err(Stop::Cancelled),
            () = self.inner.shutdown.cancelled() => {
                self.lock().waiting.remove(run);
                return Err(Stop::Shutdown);
            }
        };
        // Cancelled at the very moment its turn came: the cancel took it off the list.
        match self.lock().waiting.remove(run) {
            Some(_) => Ok(slot),
            None => Err(Stop::Cancelled),
        }
    }

    /// Records a run cancelled while it waited for a slot.
    async fn not_started(&self, entry: &Entry, mut run: Run, trigger: Trigger, attempt: u32) {
        run.state = RunState::Cancelled;
        run.error = Some("cancelled before it started".into());
        run.phases.finished = Some(self.inner.parts.clock.now());
        if let Err(e) = self.save_run(&run).await {
            tracing::warn!(run = %run.id, error = %e, "cannot record the run's end");
        }
        self.finished(entry, run, trigger, attempt).await;
    }

    /// Launches a run whose turn came and follows it to its end.
    async fn launch_now(
        &self,
        entry: Entry,
        mut req: RunRequest,
        run: Run,
        trigger: Trigger,
        attempt: u32,
    ) {
        let job = entry.job.name().clone();
        let run_id = req.run_id.clone();
        // Read when the run starts, not when it was queued: a secret changed meanwhile counts.
        match self.inner.parts.store.secrets(&job).await {
            Ok(secrets) => req.secrets = secrets,
            Err(e) => {
                let why = format!("cannot read the job's secrets: {e}");
                return self.not_launched(entry, run, why, trigger, attempt).await;
            }
        }
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<RunState>();
        let sink = EventSink::new(move |e| {
            if let RunEvent::State(s) = e {
                let _ = tx.send(s);
            }
        });
        if let Err(e) = self
            .inner
            .parts
            .compute
            .launch(req, LaunchOptions::default().with_events(sink))
            .await
        {
            let why = format!("launch failed: {e}");
            return self.not_launched(entry, run, why, trigger, attempt).await;
        }
        self.monitor(job, run_id, run, rx, trigger, attempt).await;
    }

    /// Records a run that had its turn but could not be launched, and why.
    async fn not_launched(
        &self,
        entry: Entry,
        mut run: Run,
        why: String,
        trigger: Trigger,
        attempt: u32,
    ) {
        self.inner.parts.observer.queued(-1);
        run.state = RunState::Failed;
        run.error = Some(why);
        run.phases.finished = Some(self.inner.parts.clock.now());
        if let Err(e) = self.save_run(&run).await {
            tracing::warn!(run = %run.id, error = %e, "cannot record the run's end");
        }
        self.forget_active(entry.job.name(), &run.id);
        self.finished(&entry, run, trigger, attempt).await;
    }

    /// A queued backfill run's turn: launched, unless it was cancelled or its job removed.
    pub(super) async fn start_queued(
        &self,
        job: &JobName,
        mut run: Run,
        attempt: u32,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) {
        let (queued, entry) = {
            let mut st = self.lock();
            (
                st.queued.remove(&run.id).is_some(),
                st.jobs.get(job).cloned(),
            )
        };
        if !queued {
            return; // cancelled while it waited
        }
        let Some(entry) = entry else {
            run.state = RunState::Cancelled;
            run.error = Some("the job was deleted before this backfill run started".into());
            run.phases.finished = Some(self.inner.parts.clock.now());
            if let Err(e) = self.save_run(&run).await {
                tracing::warn!(run = %run.id, error = %e, "cannot record the run's end");
            }
            return;
        };
        // The job as it is now: what the run records it ran with.
        let req = self.request(&entry, run.scheduled_for, run.id.clone());
        run.provenance = Some(crate::run::Provenance::of(&req));
        self.begin(entry, req, run, Trigger::Backfill, attempt, Some(permit));
    }

    pub(super) fn forget_active(&self, job: &JobName, run: &RunId) {
        let mut st = self.lock();
        if let Some(v) = st.active.get_mut(job) {
            v.retain(|r| r != run);
            if v.is_empty() {
                st.active.remove(job);
            }
        }
    }

    /// Follows a run to its end, recording each phase, then its outcome.
    pub(super) async fn monitor(
        &self,
        job: JobName,
        id: RunId,
        mut run: Run,
        mut states: tokio::sync::mpsc::UnboundedReceiver<RunState>,
        trigger: Trigger,
        attempt: u32,
    ) {
        let compute = self.inner.parts.compute.clone();
        let mut queued = true;
        let wait = compute.wait(&id);
        tokio::pin!(wait);
        let fin = loop {
            tokio::select! {
                () = self.inner.abandoned.cancelled() => return,
                Some(s) = states.recv() => {
                    if queued {
                        queued = false;
                        self.inner.parts.observer.queued(-1);
                    }
                    if !s.is_terminal() {
                        run.state = s;
                        let now = self.inner.parts.clock.now();
                        match s {
                            RunState::Fetching => run.phases.fetch_started = Some(now),
                            RunState::Running => run.phases.run_started = Some(now),
                            RunState::Publishing => run.phases.publish_started = Some(now),
                            _ => {}
                        }
                        if let Err(e) = self.save_run(&run).await {
                            tracing::warn!(run = %id, error = %e, "cannot record the run's phase");
                        }
                    }
                }
                r = &mut wait => break r,
            }
        };
        if queued {
            self.inner.parts.observer.queued(-1);
        }
        let replay_of = run.replay_of.clone();
        let mut fin = match fin {
            Ok(r) => r,
            Err(e) => {
                run.state = RunState::Failed;
                run.error = Some(format!("lost track of the run: {e}"));
                run.phases.finished = Some(self.inner.parts.clock.now());
                run
            }
        };
        // The backend's record knows the request, not what the scheduler knows of the run.
        fin.replay_of = fin.replay_of.or(replay_of);
        if let Err(e) = self.save_run(&fin).await {
            tracing::error!(run = %id, error = %e, "cannot record the run's outcome");
        }
        self.forget_active(&job, &id);
        let Some(entry) = self.lock().jobs.get(&job).cloned() else {
            return;
        };
        self.finished(&entry, fin, trigger, attempt).await;
    }

    /// Notifications and retries once a run has its final state.
    pub(super) async fn finished(&self, entry: &Entry, run: Run, trigger: Trigger, attempt: u32) {
        self.inner.parts.observer.finished(&run);
        let job = entry.job.name().clone();
        let spec = entry.job.spec();
        let failed = matches!(run.state, RunState::Failed | RunState::TimedOut);
        let was_failed = {
            let mut st = self.lock();
            match st.jobs.get_mut(&job) {
                Some(e)
                    if matches!(
                        run.state,
                        RunState::Succeeded | RunState::Failed | RunState::TimedOut
                    ) =>
                {
                    std::mem::replace(&mut e.last_failed, failed)
                }
                Some(e) => e.last_failed,
                None => false,
            }
        };
        let notify = spec.notify.clone();
        let retryable = matches!(run.state, RunState::Failed | RunState::Interrupted)
            || (run.state == RunState::TimedOut && spec.retry_on_timeout);
        let scheduled = matches!(trigger, Trigger::Scheduled | Trigger::Retry);
        let retry = retryable && scheduled && attempt < spec.max_retries;
        let delay = u64::from(spec.retry_backoff_seconds).saturating_mul(1 << attempt.min(20));
        let why = match run.state {
            RunState::TimedOut => {
                let m = spec.timeout_minutes;
                format!(
                    "timed out after {m} minute{}",
                    if m == 1 { "" } else { "s" }
                )
            }
            _ => format!("failed: {}", run.error.clone().unwrap_or_default()),
        };
        match run.state {
            RunState::Failed | RunState::TimedOut if retry => {
                let msg = format!(
                    "run {} {why}; retry {} of {} in {}",
                    run.id,
                    attempt + 1,
                    spec.max_retries,
                    humantime::format_duration(std::time::Duration::from_secs(delay))
                );
                self.event(EventKind::Retrying, &job, Some(run.clone()), msg, notify)
                    .await;
            }
            RunState::Failed => {
                let msg = format!("run {} {why}", run.id);
                self.event(EventKind::Failed, &job, Some(run.clone()), msg, notify)
                    .await;
            }
            RunState::TimedOut => {
                let msg = format!("run {} {why}", run.id);
                self.event(EventKind::TimedOut, &job, Some(run.clone()), msg, notify)
                    .await;
            }
            RunState::Succeeded if was_failed => {
                let msg = format!("run {} succeeded after earlier failures", run.id);
                self.event(EventKind::Recovered, &job, Some(run.clone()), msg, notify)
                    .await;
            }
            _ => {}
        }
        if retry {
            let at = self.inner.parts.clock.now()
                + chrono::Duration::seconds(delay.min(i64::MAX as u64) as i64);
            self.lock().push(
                at,
                Timer::Retry {
                    job,
                    slot: run.scheduled_for,
                    attempt: attempt + 1,
                },
            );
            self.inner.wake.notify_one();
        }
    }
}
