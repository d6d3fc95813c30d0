//! The scheduler engine: one timer for the earliest next fire (a heap, not a polling loop and not
//! a task per job), exactly-once slots through the persistence trait, and the per-job policies.
//!
//! # Guarantees
//!
//! * A slot's run row is inserted **before** the run is launched, under a key unique per job
//!   (`slot:<instant>`); a second insert fails, so a slot never runs twice — not across restarts,
//!   not when a tick races a manual run (manual runs have keys of their own).
//! * Slots that passed while the scheduler was down follow the job's [`MissedPolicy`]; every slot
//!   not run is recorded as a visible `missed` run, and scheduling never stops because of them.
//! * Overlap: `forbid` records the skipped slot as `missed`, `allow` runs both, `replace` cancels
//!   the running one first. Slots run together by `catch_up` are one batch: the policy applies to
//!   the batch as a whole, not between its slots.
//! * Retries back off exponentially (`retry_backoff_seconds × 2^attempt`); timeouts are retried
//!   only with `retry_on_timeout`.
//! * Start and end dates bound the slots; a job past its end is marked expired.
//!
//! [`MissedPolicy`]: crate::policy::MissedPolicy

pub mod backfill;
pub mod clock;
mod fair;
mod lifecycle;
pub mod notify;
pub mod persist;
mod slots;
mod timer;
mod writer;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::clock::Clock;
use self::notify::{Notifier, SchedulerObserver};
use self::persist::{JobState, RunRow, SchedulerStore, Trigger};
use crate::compute::Compute;
use crate::error::{Error, Result};
use crate::job::{JobName, ValidJob, ValidationLimits};
use crate::run::{Run, RunId, RunState};

/// The scheduler's collaborators.
#[derive(Debug, Clone)]
pub struct SchedulerParts {
    /// Persistence.
    pub store: Arc<dyn SchedulerStore>,
    /// Where runs execute.
    pub compute: Arc<dyn Compute>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Notifications.
    pub notifier: Arc<dyn Notifier>,
    /// Metrics.
    pub observer: Arc<dyn SchedulerObserver>,
    /// Validation bounds for job specs.
    pub limits: ValidationLimits,
    /// Runs of one owner at once (`None`: only the compute's own limit). Runs waiting for a
    /// slot are taken round robin by owner either way.
    pub max_running_per_owner: Option<usize>,
}

impl SchedulerParts {
    /// Parts over `store` and `compute`, with the system clock, no notifications, no metrics
    /// and the default validation bounds.
    pub fn new(store: Arc<dyn SchedulerStore>, compute: Arc<dyn Compute>) -> Self {
        Self {
            store,
            compute,
            clock: Arc::new(clock::SystemClock),
            notifier: Arc::new(notify::NoNotifier),
            observer: Arc::new(notify::NoObserver),
            limits: ValidationLimits::default(),
            max_running_per_owner: None,
        }
    }

    /// Sets how many runs of one owner run at once.
    pub fn with_max_running_per_owner(mut self, n: Option<usize>) -> Self {
        self.max_running_per_owner = n;
        self
    }

    /// Sets the clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Sets where notifications go.
    pub fn with_notifier(mut self, notifier: Arc<dyn Notifier>) -> Self {
        self.notifier = notifier;
        self
    }

    /// Sets the metrics observer.
    pub fn with_observer(mut self, observer: Arc<dyn SchedulerObserver>) -> Self {
        self.observer = observer;
        self
    }

    /// Sets the validation bounds for job specs.
    pub fn with_limits(mut self, limits: ValidationLimits) -> Self {
        self.limits = limits;
        self
    }
}

#[derive(Debug, Clone)]
struct Entry {
    job: Arc<ValidJob>,
    owner: String,
    code: Option<String>,
    paused: bool,
    expired: bool,
    cursor: DateTime<Utc>,
    generation: u64,
    last_failed: bool,
}

/// What a replay runs instead of the job's current spec and code.
#[derive(Debug)]
struct Replay {
    snapshot: crate::run::SpecSnapshot,
    code: String,
    of: RunId,
}

/// A run to record: its slot, the key unique per job, why and which attempt it is, its id
/// (default: a new one) and, for a replay, what it replays.
#[derive(Debug)]
struct NewRun {
    slot: DateTime<Utc>,
    key: String,
    trigger: Trigger,
    attempt: u32,
    id: Option<RunId>,
    replay: Option<Replay>,
}

impl NewRun {
    /// Attempt `attempt` of `slot`, keyed as such.
    fn slot(slot: DateTime<Utc>, attempt: u32, trigger: Trigger) -> Self {
        Self {
            slot,
            key: RunRow::slot_key(slot, attempt),
            trigger,
            attempt,
            id: None,
            replay: None,
        }
    }
}

/// Where a recorded run waits for one of the run slots (`max_concurrent_runs`, shared between
/// owners in turn).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct QueuePosition {
    /// 1 for the next run to start when a slot frees.
    pub position: usize,
    /// Runs waiting in all.
    pub waiting: usize,
}

/// Jobs whose slots are handled at once when many fire together.
const FIRE_CONCURRENCY: usize = 64;

#[derive(Debug, Clone)]
enum Timer {
    Fire {
        job: JobName,
        generation: u64,
    },
    Retry {
        job: JobName,
        slot: DateTime<Utc>,
        attempt: u32,
    },
}

#[derive(Debug, Default)]
struct State {
    jobs: HashMap<JobName, Entry>,
    heap: BinaryHeap<Reverse<(DateTime<Utc>, u64)>>,
    timers: HashMap<u64, Timer>,
    seq: u64,
    active: HashMap<JobName, Vec<RunId>>,
    /// Backfill runs recorded and waiting for their turn.
    queued: HashMap<RunId, Run>,
    /// Runs waiting for a slot, and how to call their wait off.
    waiting: HashMap<RunId, CancellationToken>,
}

impl State {
    fn push(&mut self, at: DateTime<Utc>, t: Timer) {
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq)));
        self.timers.insert(self.seq, t);
    }
}

#[derive(Debug)]
struct Inner {
    parts: SchedulerParts,
    state: Mutex<State>,
    wake: Notify,
    shutdown: CancellationToken,
    /// Cancelled by [`Scheduler::abandon`]: monitors stop without recording anything.
    abandoned: CancellationToken,
    tasks: TaskTracker,
    /// The slots runs wait for, shared fairly between owners.
    gate: Arc<fair::Gate>,
    /// Run records on their way to the store, by group commit.
    writer: writer::RunWriter,
}

/// The scheduler. Cheap to clone; all clones drive the same engine.
#[derive(Debug, Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

impl Scheduler {
    /// A scheduler over `parts`; call [`Scheduler::start`] to load jobs and begin firing.
    pub fn new(parts: SchedulerParts) -> Self {
        let gate = fair::Gate::new(
            parts.compute.capabilities().max_concurrent,
            parts.max_running_per_owner,
        );
        Self {
            inner: Arc::new(Inner {
                gate,
                writer: writer::RunWriter::new(parts.store.clone()),
                parts,
                state: Mutex::new(State::default()),
                wake: Notify::new(),
                shutdown: CancellationToken::new(),
                abandoned: CancellationToken::new(),
                tasks: TaskTracker::new(),
            }),
        }
    }

    /// Saves a run's latest record (batched with the others saved at the same time).
    async fn save_run(&self, run: &Run) -> Result<()> {
        self.inner.writer.save(run).await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Loads every job, arms its next fire (slots missed while down come due at once and follow
    /// the job's missed-slot policy) and starts the timer task.
    ///
    /// # Errors
    ///
    /// What the store's `load_jobs` returns.
    pub async fn start(&self) -> Result<tokio::task::JoinHandle<()>> {
        for js in self.inner.parts.store.load_jobs().await? {
            let name = js.spec.name.clone();
            if let Err(e) = self.upsert(js).await {
                tracing::error!(job = %name, error = %e, "job not armed: its stored spec is invalid");
            }
        }
        let me = self.clone();
        Ok(tokio::spawn(async move { me.run_loop().await }))
    }

    /// Adds or replaces a job and (re-)arms it. Its cursor says which slots are already handled.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidJobs`] when the spec does not validate.
    pub async fn upsert(&self, js: JobState) -> Result<()> {
        let job = js.spec.validate(&self.inner.parts.limits)?;
        let name = job.name().clone();
        let mut expire = None;
        {
            let mut st = self.lock();
            let generation = st.jobs.get(&name).map_or(1, |e| e.generation + 1);
            // The engine's own view of the last outcome is newer than the store's.
            let last_failed = st.jobs.get(&name).map_or(js.last_failed, |e| e.last_failed);
            let entry = Entry {
                job: Arc::new(job),
                owner: js.owner,
                code: js.code,
                paused: js.paused,
                expired: js.expired,
                cursor: js.cursor,
                generation,
                last_failed,
            };
            if !entry.paused && !entry.expired {
                match next_fire(&entry) {
                    Some(t) => st.push(
                        t,
                        Timer::Fire {
                            job: name.clone(),
                            generation,
                        },
                    ),
                    None => expire = Some(entry.job.spec().notify.clone()),
                }
            }
            st.jobs.insert(name.clone(), entry);
        }
        if let Some(notify) = expire {
            self.expire(&name, notify).await;
        }
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Forgets a job (its runs in flight go on).
    pub fn remove(&self, job: &JobName) {
        self.lock().jobs.remove(job);
        self.inner.wake.notify_one();
    }

    /// Pauses or resumes a job. Resuming starts from now: slots that passed while paused are not
    /// made up.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for an unknown job; store errors.
    pub async fn set_paused(&self, job: &JobName, paused: bool) -> Result<()> {
        let now = self.inner.parts.clock.now();
        let state = {
            let st = self.lock();
            let e = st
                .jobs
                .get(job)
                .ok_or_else(|| Error::NotFound(format!("job {job}")))?;
            JobState {
                spec: e.job.spec().clone(),
                owner: e.owner.clone(),
                code: e.code.clone(),
                paused,
                expired: e.expired,
                cursor: if paused { e.cursor } else { e.cursor.max(now) },
                last_failed: e.last_failed,
            }
        };
        if !paused {
            self.inner.parts.store.set_cursor(job, state.cursor).await?;
        }
        self.upsert(state).await
    }

    /// The next fire time of a job, if it is armed.
    pub fn next_fire(&self, job: &JobName) -> Option<DateTime<Utc>> {
        let st = self.lock();
        st.jobs
            .get(job)
            .filter(|e| !e.paused && !e.expired)
            .and_then(next_fire)
    }

    /// Runs a job now. A manual run has its own key and never consumes a scheduled slot.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for an unknown job; launch errors.
    pub async fn run_now(&self, job: &JobName) -> Result<RunId> {
        self.run_now_as(job, RunId::new()).await
    }

    /// Runs a job now as run `id` (an id another process chose and waits for).
    ///
    /// # Errors
    ///
    /// As [`Scheduler::run_now`]; a second call with the same id records nothing.
    pub async fn run_now_as(&self, job: &JobName, id: RunId) -> Result<RunId> {
        use chrono::SubsecRound;
        let now = self.inner.parts.clock.now().trunc_subsecs(0);
        let key = format!("manual:{id}");
        let new = NewRun {
            key,
            id: Some(id.clone()),
            ..NewRun::slot(now, 0, Trigger::Manual)
        };
        self.launch(job, new).await?.ok_or_else(|| Error::Compute {
            op: "launch",
            reason: "the run was not recorded".into(),
            retryable: true,
            source: None,
        })?;
        Ok(id)
    }

    /// Cancels a run in flight.
    ///
    /// # Errors
    ///
    /// The compute backend's.
    pub async fn cancel_run(&self, run: &RunId) -> Result<()> {
        let queued = self.lock().queued.remove(run);
        if let Some(mut r) = queued {
            r.state = RunState::Cancelled;
            r.error = Some("cancelled before it started".into());
            r.phases.finished = Some(self.inner.parts.clock.now());
            return self.save_run(&r).await;
        }
        let waiting = self.lock().waiting.remove(run);
        if let Some(t) = waiting {
            t.cancel();
            return Ok(());
        }
        self.inner.parts.compute.cancel(run).await
    }

    /// Where run `id` waits for a run slot, if it does: see [`QueuePosition`].
    pub fn queue_position(&self, id: &RunId) -> Option<QueuePosition> {
        let (position, waiting) = self.inner.gate.position(id.as_str())?;
        Some(QueuePosition { position, waiting })
    }

    /// Runs in flight, per job, with backfill runs waiting for their turn.
    pub fn active_runs(&self) -> HashMap<JobName, Vec<RunId>> {
        let st = self.lock();
        let mut all = st.active.clone();
        for r in st.queued.values() {
            all.entry(r.job.clone()).or_default().push(r.id.clone());
        }
        all
    }

    /// Follows a run that an earlier process launched and the compute backend has
    /// [reattached](crate::compute::Compute::reattach): it counts as active for its job's overlap
    /// policy, and its outcome is recorded, notified and retried like any other run's.
    pub fn adopt(&self, run: Run, trigger: Trigger, attempt: u32) {
        let (job, id) = (run.job.clone(), run.id.clone());
        self.lock()
            .active
            .entry(job.clone())
            .or_default()
            .push(id.clone());
        self.inner.parts.observer.queued(1);
        // Phase changes of an adopted run are not streamed; its outcome comes from `wait`.
        let (_, rx) = tokio::sync::mpsc::unbounded_channel::<RunState>();
        let me = self.clone();
        self.inner
            .tasks
            .spawn(async move { me.monitor(job, id, run, rx, trigger, attempt).await });
    }

    /// Stops firing and waits until the final state of every run in flight is recorded. Local
    /// runs are cancelled first; runs on remote machines
    /// ([`ComputeCapabilities::remote`](crate::compute::ComputeCapabilities)) go on, stay
    /// in flight in the store, and are reattached by the next start.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        if self.inner.parts.compute.capabilities().remote {
            self.inner.tasks.close();
            return;
        }
        let active: Vec<RunId> = self.lock().active.values().flatten().cloned().collect();
        for r in active {
            let _ = self.inner.parts.compute.cancel(&r).await;
        }
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }

    /// Stops at once, for a process that lost the right to schedule (another process has
    /// taken over): no more fires, local runs in flight are killed, and nothing more is
    /// recorded about any run, so that the runs stay in flight in the store for the new owner
    /// to re-adopt (remote runs) or mark interrupted (local runs) — see
    /// [`Scheduler::recovered`].
    pub async fn abandon(&self) {
        self.inner.shutdown.cancel();
        self.inner.abandoned.cancel();
        if !self.inner.parts.compute.capabilities().remote {
            let active: Vec<RunId> = self.lock().active.values().flatten().cloned().collect();
            for r in active {
                let _ = self.inner.parts.compute.cancel(&r).await;
            }
        }
        self.inner.tasks.close();
    }

    /// Handles a run an earlier process left in flight and that is now recorded as
    /// [`RunState::Interrupted`]: it is retried per the job's policy (`max_retries`), like a
    /// failed run.
    pub async fn recovered(&self, run: Run, trigger: Trigger, attempt: u32) {
        let Some(entry) = self.lock().jobs.get(&run.job).cloned() else {
            return;
        };
        self.finished(&entry, run, trigger, attempt).await;
    }

    /// Runs again, as new run `id`, exactly what run `of` ran: the code at `code` (the
    /// version it ran), its spec snapshot and its slot. The job's current secrets, limits and
    /// visibility apply. Recorded with trigger `replay` and a link to `of`; never retried.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for an unknown job; [`Error::InvalidJob`] when `of` has no
    /// recorded spec snapshot; launch errors.
    pub async fn replay(&self, job: &JobName, of: &Run, code: String, id: RunId) -> Result<RunId> {
        let snapshot = of
            .provenance
            .as_ref()
            .map(|p| p.spec.clone())
            .ok_or_else(|| {
                Error::invalid(
                    "run",
                    format!("run {} was made before telejob recorded what runs ran with; it cannot be replayed", of.id),
                )
            })?;
        let key = format!("replay:{id}");
        let replay = Replay {
            snapshot,
            code,
            of: of.id.clone(),
        };
        let new = NewRun {
            key,
            id: Some(id.clone()),
            replay: Some(replay),
            ..NewRun::slot(of.scheduled_for, 0, Trigger::Replay)
        };
        self.launch(job, new).await?.ok_or_else(|| Error::Compute {
            op: "launch",
            reason: "the replay was not recorded".into(),
            retryable: true,
            source: None,
        })?;
        Ok(id)
    }

    /// Backfills `slots` of a job (each its slot, the attempt it becomes, and the id its run
    /// gets), oldest first, at most `concurrency` at a time. Every row is recorded before this
    /// returns (pending until its turn); a slot whose attempt exists already is left out.
    /// Returns the ids recorded. Backfill runs are never retried.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for an unknown job; store errors (rows recorded before the error
    /// still run).
    pub async fn backfill(
        &self,
        job: &JobName,
        mut slots: Vec<(DateTime<Utc>, u32, RunId)>,
        concurrency: u32,
    ) -> Result<Vec<RunId>> {
        slots.sort_by_key(|s| s.0);
        let mut recorded = Vec::new();
        let mut err = None;
        for (slot, attempt, id) in slots {
            match self
                .record(
                    job,
                    NewRun {
                        id: Some(id),
                        ..NewRun::slot(slot, attempt, Trigger::Backfill)
                    },
                )
                .await
            {
                Ok(Some((_, req, run))) => {
                    self.lock().queued.insert(req.run_id.clone(), run.clone());
                    recorded.push((run, attempt));
                }
                Ok(None) => {}
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        let ids = recorded.iter().map(|(r, _)| r.id.clone()).collect();
        let me = self.clone();
        let job = job.clone();
        let share = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1) as usize));
        self.inner.tasks.spawn(async move {
            for (run, attempt) in recorded {
                let permit = tokio::select! {
                    () = me.inner.shutdown.cancelled() => return,
                    p = share.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                };
                me.start_queued(&job, run, attempt, permit).await;
            }
        });
        match err {
            Some(e) => Err(e),
            None => Ok(ids),
        }
    }
}

/// When a job as stored fires next (`None` when paused, expired, or past its end date),
/// computed from its spec and cursor alone, so that any process can answer without running
/// the scheduler.
pub fn next_fire_of(
    job: &ValidJob,
    paused: bool,
    expired: bool,
    cursor: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    if paused || expired {
        return None;
    }
    let cursor = match job.spec().start_at {
        Some(s) => cursor.max(s - chrono::Duration::seconds(1)),
        None => cursor,
    };
    let t = job.schedule().next_after(cursor)?;
    match job.spec().end_at {
        Some(end) if t > end => None,
        _ => Some(t),
    }
}

/// The cursor, moved up to just before the start date.
fn effective_cursor(e: &Entry) -> DateTime<Utc> {
    match e.job.spec().start_at {
        Some(s) => e.cursor.max(s - chrono::Duration::seconds(1)),
        None => e.cursor,
    }
}

/// The next fire of an entry, or `None` when it has none before its end date.
fn next_fire(e: &Entry) -> Option<DateTime<Utc>> {
    next_fire_of(&e.job, false, false, e.cursor)
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
