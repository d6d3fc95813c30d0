//! The timer: one loop over the heap of due times; fires, retries, missed slots, expiry.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use futures::StreamExt;

use super::notify::{EventKind, JobEvent};
use super::persist::{RunRow, Trigger};
use super::slots::{SlotAction, plan_due};
use super::{Entry, FIRE_CONCURRENCY, NewRun, Scheduler, Timer, effective_cursor, next_fire};
use crate::error::Result;
use crate::job::JobName;
use crate::policy::OverlapPolicy;
use crate::run::{Run, RunId, RunRequest, RunState};

/// Jobs of a burst planned and recorded together: a batch of about this many rows is a few
/// store transactions, and the first is written after this many jobs are planned, not all.
const FIRE_GROUP: usize = 1000;

/// Groups of a burst in flight at once (being planned or written); they launch in order once
/// all are stored.
const FIRE_GROUPS_AT_ONCE: usize = 4;

/// A job's fire, planned: its due slots, and the cursor and next fire after them.
#[derive(Debug)]
pub(super) struct FirePlan {
    generation: u64,
    entry: Entry,
    actions: Vec<SlotAction>,
    cursor: DateTime<Utc>,
    next: Option<DateTime<Utc>>,
}

/// A group of a burst, recorded: its plans, its rows with what follows each (by plan), and
/// the store's answer per row.
struct Group {
    plans: Vec<FirePlan>,
    batch: Vec<RunRow>,
    thens: Vec<(usize, Then)>,
    answers: Vec<Result<bool>>,
}

/// A row to record, and what follows once it is stored.
#[derive(Debug)]
pub(super) struct Recorded {
    row: RunRow,
    then: Then,
}

#[derive(Debug)]
enum Then {
    /// A missed slot: the event says why.
    Missed(String),
    /// A run to launch (its pending record is the row's).
    Launch(Box<RunRequest>),
}

impl Scheduler {
    pub(super) async fn run_loop(&self) {
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
            // Timers of different jobs are handled concurrently; one job's in order. By name,
            // so that a burst's rows reach the store in the order of its (job, slot) index:
            // a B-tree insert in key order touches each page once, in random order every page
            // again.
            let mut by_job: BTreeMap<JobName, Vec<Timer>> = BTreeMap::new();
            for timer in due {
                let job = match &timer {
                    Timer::Fire { job, .. } | Timer::Retry { job, .. } => job.clone(),
                };
                by_job.entry(job).or_default().push(timer);
            }
            self.handle_burst(by_job.into_values().collect(), now).await;
        }
    }

    /// Handles the timers that came due together. The jobs' fires are planned in memory and
    /// their slots recorded together, in one call to the store ([`SchedulerStore::insert_runs`]:
    /// ten thousand jobs due at noon are a few transactions, not ten thousand), then launched
    /// without waiting for any run; retries follow, each job's in order.
    ///
    /// [`SchedulerStore::insert_runs`]: super::persist::SchedulerStore::insert_runs
    pub(super) async fn handle_burst(&self, groups: Vec<Vec<Timer>>, now: DateTime<Utc>) {
        let mut fires = Vec::new();
        let mut others = Vec::new();
        for timers in groups {
            let (f, o): (Vec<Timer>, Vec<Timer>) = timers
                .into_iter()
                .partition(|t| matches!(t, Timer::Fire { .. }));
            fires.extend(f.into_iter().filter_map(|t| match t {
                Timer::Fire { job, generation } => Some((job, generation)),
                Timer::Retry { .. } => None,
            }));
            if !o.is_empty() {
                others.push(o);
            }
        }
        self.fire_all(fires, now).await;
        futures::stream::iter(others)
            .for_each_concurrent(FIRE_CONCURRENCY, |timers| async move {
                for timer in timers {
                    self.handle(timer, now).await;
                }
            })
            .await;
    }

    pub(super) async fn handle(&self, timer: Timer, now: DateTime<Utc>) {
        match timer {
            Timer::Fire { job, generation } => self.fire_all(vec![(job, generation)], now).await,
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

    /// Fires every `(job, generation)` due at `now`: plans each job's due slots and records
    /// their rows in batches of [`FIRE_GROUP`] jobs, up to [`FIRE_GROUPS_AT_ONCE`] at once (a
    /// batch is planned while the one before it is written; PostgreSQL writes several at
    /// once), then launches the runs recorded and moves and re-arms each job. Nothing launches
    /// before the whole burst is stored: the launches' own writes would delay its last rows.
    pub(super) async fn fire_all(&self, fires: Vec<(JobName, u64)>, now: DateTime<Utc>) {
        let mut fires = fires.into_iter();
        let groups = std::iter::from_fn(|| {
            let group: Vec<_> = fires.by_ref().take(FIRE_GROUP).collect();
            (!group.is_empty()).then_some(group)
        });
        let recorded: Vec<_> = futures::stream::iter(groups)
            .map(|group| self.record_group(group, now))
            .buffered(FIRE_GROUPS_AT_ONCE)
            .collect()
            .await;
        for group in recorded {
            self.launch_group(group).await;
        }
    }

    /// Plans a group of jobs due at `now` and records their rows in one batch.
    async fn record_group(&self, fires: Vec<(JobName, u64)>, now: DateTime<Utc>) -> Group {
        let mut plans = Vec::with_capacity(fires.len());
        let mut rows: Vec<(usize, Recorded)> = Vec::new();
        for (job, generation) in fires {
            let Some(plan) = self.plan(job, generation, now) else {
                continue; // replaced, paused or removed since armed
            };
            let p = plans.len();
            for r in self.rows_of(&plan, now).await {
                rows.push((p, r));
            }
            plans.push(plan);
        }
        let (batch, thens): (Vec<RunRow>, Vec<(usize, Then)>) =
            rows.into_iter().map(|(p, r)| (r.row, (p, r.then))).unzip();
        let answers = if batch.is_empty() {
            Vec::new()
        } else {
            self.inner.parts.store.insert_runs(&batch).await
        };
        Group {
            plans,
            batch,
            thens,
            answers,
        }
    }

    /// What follows a group's batch: each row stored is launched (or its missed event told),
    /// a row the batch did not store for another reason than a lost lease is tried alone;
    /// then each job moves on.
    async fn launch_group(&self, group: Group) {
        let Group {
            plans,
            batch,
            thens,
            answers,
        } = group;
        for ((row, (p, then)), answer) in batch.into_iter().zip(thens).zip(answers) {
            let job = plans[p].entry.job.name().clone();
            let answer = match answer {
                // Not stored (the batch failed, and not because the lease is lost): alone, it
                // is stored once or refused.
                Err(e) if !e.is_fenced() => {
                    tracing::warn!(job = %job, error = %e, "slot not recorded in its batch; alone");
                    self.inner.parts.store.insert_run(&row).await
                }
                ok => ok,
            };
            match answer {
                Ok(true) => self.recorded(&plans[p].entry, row, then).await,
                Ok(false) => {} // this slot already has its run: exactly once
                Err(e) => tracing::error!(job = %job, error = %e, "slot not handled"),
            }
        }
        for plan in plans {
            self.advance(plan).await;
        }
    }

    /// The due slots of `job` at `now`, if its timer is still current.
    fn plan(&self, job: JobName, generation: u64, now: DateTime<Utc>) -> Option<FirePlan> {
        let entry = self
            .lock()
            .jobs
            .get(&job)
            .filter(|e| e.generation == generation && !e.paused && !e.expired)
            .cloned()?;
        let spec = entry.job.spec();
        let (actions, cursor, next) = plan_due(
            entry.job.schedule(),
            effective_cursor(&entry),
            now,
            spec.end_at,
            spec.missed,
            spec.catch_up_limit,
        );
        Some(FirePlan {
            generation,
            entry,
            actions,
            cursor,
            next,
        })
    }

    /// The rows a plan records: a missed row per missed slot (or slot skipped by the overlap
    /// policy), a pending row per slot to run. Applies `replace` (cancels the job's runs).
    async fn rows_of(&self, plan: &FirePlan, now: DateTime<Utc>) -> Vec<Recorded> {
        let entry = &plan.entry;
        let job = entry.job.name();
        let spec = entry.job.spec();
        let mut out = Vec::with_capacity(plan.actions.len());
        // Slots run in one batch (catch-up) are not held back by each other's overlap.
        let mut first_run = true;
        for a in &plan.actions {
            match *a {
                SlotAction::Miss(slot) => {
                    let why = format!(
                        "missed: telejob was not running at {} (missed = {:?})",
                        slot.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        spec.missed
                    );
                    out.push(self.missed_row(entry, slot, why));
                }
                SlotAction::Run(slot) => {
                    self.inner
                        .parts
                        .observer
                        .fired((now - slot).to_std().unwrap_or_default());
                    if std::mem::replace(&mut first_run, false) {
                        let active = self.lock().active.get(job).cloned().unwrap_or_default();
                        if !active.is_empty() {
                            match spec.overlap {
                                OverlapPolicy::Forbid => {
                                    let why = format!(
                                        "skipped: run {} of this job was still going (overlap = forbid)",
                                        active.first().map(RunId::to_string).unwrap_or_default()
                                    );
                                    out.push(self.missed_row(entry, slot, why));
                                    continue;
                                }
                                OverlapPolicy::Replace => {
                                    for r in &active {
                                        if let Err(e) = self.inner.parts.compute.cancel(r).await {
                                            tracing::warn!(run = %r, error = %e, "cannot cancel the run it replaces");
                                        }
                                    }
                                }
                                OverlapPolicy::Allow => {}
                            }
                        }
                    }
                    let req = self.request(entry, slot, RunId::new());
                    out.push(Recorded {
                        row: RunRow {
                            run: Run::pending(&req),
                            slot_key: RunRow::slot_key(slot, 0),
                            trigger: Trigger::Scheduled,
                            attempt: 0,
                        },
                        then: Then::Launch(Box::new(req)),
                    });
                }
            }
        }
        out
    }

    /// What follows a row once it is stored: the missed event, or the launch.
    async fn recorded(&self, entry: &Entry, row: RunRow, then: Then) {
        match then {
            Then::Missed(why) => {
                self.event(
                    EventKind::Missed,
                    entry.job.name(),
                    Some(row.run),
                    why,
                    entry.job.spec().notify.clone(),
                )
                .await;
            }
            Then::Launch(req) => {
                self.begin(entry.clone(), *req, row.run, Trigger::Scheduled, 0, None);
            }
        }
    }

    /// After a fire: the cursor past the planned slots, the next fire armed (or the job
    /// expired).
    async fn advance(&self, plan: FirePlan) {
        let FirePlan {
            generation,
            entry,
            actions,
            cursor,
            next,
        } = plan;
        let job = entry.job.name();
        let last_slot = actions.last().map(|a| match a {
            SlotAction::Miss(t) | SlotAction::Run(t) => *t,
        });
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

    pub(super) async fn expire(&self, job: &JobName, notify: crate::policy::NotifySpec) {
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

    pub(super) async fn event(
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

    /// The row of a slot that does not run, and why.
    fn missed_row(&self, entry: &Entry, slot: DateTime<Utc>, why: String) -> Recorded {
        let req = self.request(entry, slot, RunId::new());
        let mut run = Run::pending(&req);
        run.state = RunState::Missed;
        run.error = Some(why.clone());
        run.phases.finished = Some(self.inner.parts.clock.now());
        Recorded {
            row: RunRow {
                run,
                slot_key: RunRow::slot_key(slot, 0),
                trigger: Trigger::Scheduled,
                attempt: 0,
            },
            then: Then::Missed(why),
        }
    }

    pub(super) async fn record_missed(
        &self,
        job: &JobName,
        slot: DateTime<Utc>,
        why: String,
    ) -> Result<()> {
        let Some(entry) = self.lock().jobs.get(job).cloned() else {
            return Ok(());
        };
        let rec = self.missed_row(&entry, slot, why);
        if self.inner.parts.store.insert_run(&rec.row).await? {
            self.recorded(&entry, rec.row, rec.then).await;
        }
        Ok(())
    }

    /// A slot (or a retry of it) is due: apply the overlap policy, then launch.
    pub(super) async fn fire_slot(
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
}
