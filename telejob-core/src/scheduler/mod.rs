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
pub mod notify;
pub mod persist;
pub mod slots;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::clock::Clock;
use self::notify::{EventKind, JobEvent, Notifier, SchedulerObserver};
use self::persist::{JobState, RunRow, SchedulerStore, Trigger};
use self::slots::{SlotAction, plan_due};
use crate::compute::{Compute, EventSink, LaunchOptions, RunEvent};
use crate::error::{Error, Result};
use crate::job::{JobName, ValidJob, ValidationLimits};
use crate::policy::OverlapPolicy;
use crate::run::{Run, RunId, RunRequest, RunState};

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
}

/// The scheduler. Cheap to clone; all clones drive the same engine.
#[derive(Debug, Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

impl Scheduler {
    /// A scheduler over `parts`; call [`Scheduler::start`] to load jobs and begin firing.
    pub fn new(parts: SchedulerParts) -> Self {
        Self {
            inner: Arc::new(Inner {
                parts,
                state: Mutex::new(State::default()),
                wake: Notify::new(),
                shutdown: CancellationToken::new(),
                abandoned: CancellationToken::new(),
                tasks: TaskTracker::new(),
            }),
        }
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
            return self.inner.parts.store.update_run(&r).await;
        }
        self.inner.parts.compute.cancel(run).await
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

    async fn run_loop(&self) {
        loop {
            let next = self.lock().heap.peek().map(|r| r.0.0);
            let clock = self.inner.parts.clock.clone();
            tokio::select! {
                () = self.inner.shutdown.cancelled() => return,
                () = self.inner.wake.notified() => continue,
                () = async move {
                    match next {
                        Some(t) => clock.sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                } => {}
            }
            let now = self.inner.parts.clock.now();
            let due: Vec<Timer> = {
                let mut st = self.lock();
                let mut due = Vec::new();
                while let Some(Reverse((t, seq))) = st.heap.peek().copied() {
                    if t > now {
                        break;
                    }
                    st.heap.pop();
                    if let Some(timer) = st.timers.remove(&seq) {
                        due.push(timer);
                    }
                }
                due
            };
            // Timers of different jobs are handled concurrently; one job's in order.
            let mut by_job: HashMap<JobName, Vec<Timer>> = HashMap::new();
            for timer in due {
                let job = match &timer {
                    Timer::Fire { job, .. } | Timer::Retry { job, .. } => job.clone(),
                };
                by_job.entry(job).or_default().push(timer);
            }
            self.handle_burst(by_job.into_values().collect(), now).await;
        }
    }

    /// Handles the timers that came due together, each job's in order, different jobs
    /// concurrently. A burst (many jobs at one instant) is shared out between the runtime's
    /// worker threads, so that its last job does not wait for all the others on one thread.
    async fn handle_burst(&self, groups: Vec<Vec<Timer>>, now: DateTime<Utc>) {
        let workers = tokio::runtime::Handle::current()
            .metrics()
            .num_workers()
            .clamp(1, groups.len().max(1));
        let run = |me: Scheduler, part: Vec<Vec<Timer>>| async move {
            futures::stream::iter(part)
                .for_each_concurrent(FIRE_CONCURRENCY.div_ceil(workers), |timers| {
                    let me = &me;
                    async move {
                        for timer in timers {
                            me.handle(timer, now).await;
                        }
                    }
                })
                .await;
        };
        if workers == 1 {
            return run(self.clone(), groups).await;
        }
        let per = groups.len().div_ceil(workers);
        let mut parts = tokio::task::JoinSet::new();
        let mut groups = groups.into_iter();
        loop {
            let part: Vec<Vec<Timer>> = groups.by_ref().take(per).collect();
            if part.is_empty() {
                break;
            }
            parts.spawn(run(self.clone(), part));
        }
        while let Some(r) = parts.join_next().await {
            if let Err(e) = r {
                tracing::error!(error = %e, "a share of due timers failed");
            }
        }
    }

    async fn handle(&self, timer: Timer, now: DateTime<Utc>) {
        match timer {
            Timer::Fire { job, generation } => self.fire(&job, generation, now).await,
            Timer::Retry { job, slot, attempt } => {
                if let Err(e) = self
                    .fire_slot(&job, slot, attempt, Trigger::Retry, true)
                    .await
                {
                    tracing::error!(job = %job, error = %e, "retry not launched");
                }
            }
        }
    }

    async fn fire(&self, job: &JobName, generation: u64, now: DateTime<Utc>) {
        let Some(entry) = self
            .lock()
            .jobs
            .get(job)
            .filter(|e| e.generation == generation && !e.paused && !e.expired)
            .cloned()
        else {
            return; // replaced, paused or removed since armed
        };
        let spec = entry.job.spec();
        let (actions, cursor, next) = plan_due(
            entry.job.schedule(),
            effective_cursor(&entry),
            now,
            spec.end_at,
            spec.missed,
            spec.catch_up_limit,
        );
        let last_slot = actions.last().map(|a| match a {
            SlotAction::Miss(t) | SlotAction::Run(t) => *t,
        });
        // Slots run in one batch (catch-up) are not held back by each other's overlap.
        let mut first_run = true;
        for a in actions {
            let r = match a {
                SlotAction::Miss(slot) => {
                    let why = format!(
                        "missed: telejob was not running at {} (missed = {:?})",
                        slot.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        spec.missed
                    );
                    self.record_missed(job, slot, why).await
                }
                SlotAction::Run(slot) => {
                    self.inner
                        .parts
                        .observer
                        .fired((now - slot).to_std().unwrap_or_default());
                    let check = std::mem::replace(&mut first_run, false);
                    self.fire_slot(job, slot, 0, Trigger::Scheduled, check)
                        .await
                }
            };
            if let Err(e) = r {
                tracing::error!(job = %job, error = %e, "slot not handled");
            }
        }
        // Each slot's first row moved the stored cursor up to that slot with it, in one
        // transaction (a crash between the two can lose no slot); a separate write is needed
        // only when the planning passed slots after the last one it made a row for.
        if cursor != entry.cursor {
            if last_slot != Some(cursor)
                && let Err(e) = self.inner.parts.store.set_cursor(job, cursor).await
            {
                tracing::error!(job = %job, error = %e, "cannot store the job's cursor");
            }
            if let Some(e) = self
                .lock()
                .jobs
                .get_mut(job)
                .filter(|e| e.generation == generation)
            {
                e.cursor = cursor;
            }
        }
        // Re-arm, with the next slot the planning found (the cursor is the last due slot, so
        // it is the entry's next fire).
        let mut expire = None;
        {
            let mut st = self.lock();
            if let Some(e) = st.jobs.get(job).filter(|e| e.generation == generation) {
                debug_assert_eq!(next, next_fire(e), "planned next fire of {job}");
                match next {
                    Some(t) => st.push(
                        t,
                        Timer::Fire {
                            job: job.clone(),
                            generation,
                        },
                    ),
                    None => expire = Some(e.job.spec().notify.clone()),
                }
            }
        }
        if let Some(n) = expire {
            self.expire(job, n).await;
        }
    }

    async fn expire(&self, job: &JobName, notify: crate::policy::NotifySpec) {
        if let Some(e) = self.lock().jobs.get_mut(job) {
            e.expired = true;
        }
        if let Err(e) = self.inner.parts.store.set_expired(job).await {
            tracing::error!(job = %job, error = %e, "cannot mark the job expired");
        }
        self.event(
            EventKind::Expired,
            job,
            None,
            "the job passed its end date and will not run again".into(),
            notify,
        )
        .await;
    }

    async fn event(
        &self,
        kind: EventKind,
        job: &JobName,
        run: Option<Run>,
        message: String,
        notify: crate::policy::NotifySpec,
    ) {
        let ev = JobEvent {
            kind,
            job: job.clone(),
            run,
            at: self.inner.parts.clock.now(),
            message,
            notify,
        };
        self.inner.parts.notifier.notify(ev).await;
    }

    async fn record_missed(&self, job: &JobName, slot: DateTime<Utc>, why: String) -> Result<()> {
        let Some(entry) = self.lock().jobs.get(job).cloned() else {
            return Ok(());
        };
        let req = self.request(&entry, slot, RunId::new());
        let mut run = Run::pending(&req);
        run.state = RunState::Missed;
        run.error = Some(why.clone());
        run.phases.finished = Some(self.inner.parts.clock.now());
        let row = RunRow {
            run: run.clone(),
            slot_key: RunRow::slot_key(slot, 0),
            trigger: Trigger::Scheduled,
            attempt: 0,
        };
        if self.inner.parts.store.insert_run(&row).await? {
            self.event(
                EventKind::Missed,
                job,
                Some(run),
                why,
                entry.job.spec().notify.clone(),
            )
            .await;
        }
        Ok(())
    }

    /// A slot (or a retry of it) is due: apply the overlap policy, then launch.
    async fn fire_slot(
        &self,
        job: &JobName,
        slot: DateTime<Utc>,
        attempt: u32,
        trigger: Trigger,
        check_overlap: bool,
    ) -> Result<()> {
        let (policy, active) = {
            let st = self.lock();
            let Some(e) = st.jobs.get(job) else {
                return Ok(());
            };
            (
                e.job.spec().overlap,
                st.active.get(job).cloned().unwrap_or_default(),
            )
        };
        if check_overlap && !active.is_empty() {
            match policy {
                OverlapPolicy::Forbid => {
                    let why = format!(
                        "skipped: run {} of this job was still going (overlap = forbid)",
                        active.first().map(RunId::to_string).unwrap_or_default()
                    );
                    return if attempt == 0 {
                        self.record_missed(job, slot, why).await
                    } else {
                        Ok(())
                    };
                }
                OverlapPolicy::Replace => {
                    for r in &active {
                        self.inner.parts.compute.cancel(r).await?;
                    }
                }
                OverlapPolicy::Allow => {}
            }
        }
        self.launch(job, NewRun::slot(slot, attempt, trigger))
            .await
            .map(|_| ())
    }

    fn request(&self, entry: &Entry, slot: DateTime<Utc>, id: RunId) -> RunRequest {
        let spec = entry.job.spec();
        RunRequest {
            run_id: id,
            job: entry.job.name().clone(),
            code: entry.code.clone().unwrap_or_default(),
            command: spec.command.clone(),
            output_dir: spec.output_dir.clone(),
            timeout: entry.job.timeout(),
            env: spec.env.clone(),
            scheduled_for: slot,
            visibility: spec.output_visibility,
            dry_run: false,
            owner: (!entry.owner.is_empty()).then(|| entry.owner.clone()),
            limits: self.inner.parts.limits.resources.effective(&spec.limits),
            secrets: Default::default(),
            instance_type: spec.instance_type.clone(),
        }
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

    /// Inserts the run row, then launches. `Ok(None)` when the slot key exists already.
    async fn launch(&self, job: &JobName, new: NewRun) -> Result<Option<RunId>> {
        let (trigger, attempt) = (new.trigger, new.attempt);
        let Some((entry, req, run)) = self.record(job, new).await? else {
            return Ok(None); // this slot already has its run: exactly once
        };
        let run_id = req.run_id.clone();
        self.begin(entry, req, run, trigger, attempt, None).await?;
        Ok(Some(run_id))
    }

    /// Inserts the run row of a run about to start; `Ok(None)` when the slot key exists.
    async fn record(&self, job: &JobName, new: NewRun) -> Result<Option<(Entry, RunRequest, Run)>> {
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

    /// Launches a recorded run and follows it; `permit` (a backfill's share) is held until the
    /// run ends.
    async fn begin(
        &self,
        entry: Entry,
        mut req: RunRequest,
        mut run: Run,
        trigger: Trigger,
        attempt: u32,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> Result<()> {
        let job = entry.job.name().clone();
        let job = &job;
        let run_id = req.run_id.clone();
        if req.code.is_empty() {
            run.state = RunState::Failed;
            run.error = Some("the job has no code yet: upload a code tarball first".into());
            run.phases.finished = Some(self.inner.parts.clock.now());
            self.inner.parts.store.update_run(&run).await?;
            self.finished(&entry, run, trigger, attempt).await;
            return Ok(());
        }
        match self.inner.parts.store.secrets(job).await {
            Ok(secrets) => req.secrets = secrets,
            Err(e) => {
                run.state = RunState::Failed;
                run.error = Some(format!("cannot read the job's secrets: {e}"));
                run.phases.finished = Some(self.inner.parts.clock.now());
                self.inner.parts.store.update_run(&run).await?;
                self.finished(&entry, run, trigger, attempt).await;
                return Ok(());
            }
        }
        self.lock()
            .active
            .entry(job.clone())
            .or_default()
            .push(run_id.clone());
        self.inner.parts.observer.queued(1);
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
            self.inner.parts.observer.queued(-1);
            run.state = RunState::Failed;
            run.error = Some(format!("launch failed: {e}"));
            run.phases.finished = Some(self.inner.parts.clock.now());
            self.inner.parts.store.update_run(&run).await?;
            self.forget_active(job, &run_id);
            self.finished(&entry, run, trigger, attempt).await;
            return Ok(());
        }
        let me = self.clone();
        let job2 = job.clone();
        self.inner.tasks.spawn(async move {
            me.monitor(job2, run_id, run, rx, trigger, attempt).await;
            drop(permit);
        });
        Ok(())
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

    /// A queued backfill run's turn: launched, unless it was cancelled or its job removed.
    async fn start_queued(
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
            if let Err(e) = self.inner.parts.store.update_run(&run).await {
                tracing::warn!(run = %run.id, error = %e, "cannot record the run's end");
            }
            return;
        };
        // The job as it is now: what the run records it ran with.
        let req = self.request(&entry, run.scheduled_for, run.id.clone());
        run.provenance = Some(crate::run::Provenance::of(&req));
        let id = run.id.clone();
        if let Err(e) = self
            .begin(entry, req, run, Trigger::Backfill, attempt, Some(permit))
            .await
        {
            tracing::error!(run = %id, error = %e, "backfill run not launched");
        }
    }

    fn forget_active(&self, job: &JobName, run: &RunId) {
        let mut st = self.lock();
        if let Some(v) = st.active.get_mut(job) {
            v.retain(|r| r != run);
            if v.is_empty() {
                st.active.remove(job);
            }
        }
    }

    /// Follows a run to its end, recording each phase, then its outcome.
    async fn monitor(
        &self,
        job: JobName,
        id: RunId,
        mut run: Run,
        mut states: tokio::sync::mpsc::UnboundedReceiver<RunState>,
        trigger: Trigger,
        attempt: u32,
    ) {
        let store = self.inner.parts.store.clone();
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
                        if let Err(e) = store.update_run(&run).await {
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
        if let Err(e) = store.update_run(&fin).await {
            tracing::error!(run = %id, error = %e, "cannot record the run's outcome");
        }
        self.forget_active(&job, &id);
        let Some(entry) = self.lock().jobs.get(&job).cloned() else {
            return;
        };
        self.finished(&entry, fin, trigger, attempt).await;
    }

    /// Notifications and retries once a run has its final state.
    async fn finished(&self, entry: &Entry, run: Run, trigger: Trigger, attempt: u32) {
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
        match run.state {
            RunState::Failed => {
                let msg = format!(
                    "run {} failed: {}",
                    run.id,
                    run.error.clone().unwrap_or_default()
                );
                self.event(EventKind::Failed, &job, Some(run.clone()), msg, notify)
                    .await;
            }
            RunState::TimedOut => {
                let msg = format!(
                    "run {} timed out after {} minutes",
                    run.id, spec.timeout_minutes
                );
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
        let retryable = matches!(run.state, RunState::Failed | RunState::Interrupted)
            || (run.state == RunState::TimedOut && spec.retry_on_timeout);
        let scheduled = matches!(trigger, Trigger::Scheduled | Trigger::Retry);
        if retryable && scheduled && attempt < spec.max_retries {
            let delay = u64::from(spec.retry_backoff_seconds).saturating_mul(1 << attempt.min(20));
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
