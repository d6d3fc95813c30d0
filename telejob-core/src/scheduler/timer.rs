//! The timer: one loop over the heap of due times; fires, retries, missed slots, expiry.

use std::cmp::Reverse;
use std::collections::HashMap;

use chrono::{DateTime, Utc};
use futures::StreamExt;

use super::notify::{EventKind, JobEvent};
use super::persist::{RunRow, Trigger};
use super::slots::{SlotAction, plan_due};
use super::{FIRE_CONCURRENCY, NewRun, Scheduler, Timer, effective_cursor, next_fire};
use crate::error::Result;
use crate::job::JobName;
use crate::policy::OverlapPolicy;
use crate::run::{Run, RunId, RunState};

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
    pub(super) async fn handle_burst(&self, groups: Vec<Vec<Timer>>, now: DateTime<Utc>) {
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

    pub(super) async fn handle(&self, timer: Timer, now: DateTime<Utc>) {
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

    pub(super) async fn fire(&self, job: &JobName, generation: u64, now: DateTime<Utc>) {
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

    pub(super) async fn record_missed(
        &self,
        job: &JobName,
        slot: DateTime<Utc>,
        why: String,
    ) -> Result<()> {
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
