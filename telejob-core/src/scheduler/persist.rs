//! What the scheduler persists, behind a trait: jobs' scheduling state and run rows.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Debug;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::job::{JobName, JobSpec};
use crate::run::{Run, RunId};

/// A job as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobState {
    /// The spec.
    pub spec: JobSpec,
    /// The owning user.
    pub owner: String,
    /// Where the current code version is (`store:<key>`, a path or URL); `None` until uploaded.
    pub code: Option<String>,
    /// Paused jobs fire no slots (missed slots are not made up on resume).
    pub paused: bool,
    /// Past its end date.
    pub expired: bool,
    /// The last slot handled; slots after it are due.
    pub cursor: DateTime<Utc>,
    /// Whether the job's last finished run failed (for "recovered" notifications).
    pub last_failed: bool,
}

impl JobState {
    /// A job of `owner` as first saved: no code yet, not paused, due from now on.
    pub fn new(spec: JobSpec, owner: impl Into<String>) -> Self {
        Self {
            spec,
            owner: owner.into(),
            code: None,
            paused: false,
            expired: false,
            cursor: Utc::now(),
            last_failed: false,
        }
    }

    /// Sets where the code is (`store:<key>`, a path or URL).
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }
}

/// Why a run exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// A slot of the schedule.
    Scheduled,
    /// A retry of a failed scheduled run.
    Retry,
    /// Run now, by a user.
    Manual,
    /// A new run of exactly what an earlier run ran (its code, spec snapshot and slot).
    Replay,
    /// A past slot run again on request (a backfill), as its next attempt.
    Backfill,
}

impl Trigger {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Retry => "retry",
            Self::Manual => "manual",
            Self::Replay => "replay",
            Self::Backfill => "backfill",
        }
    }

    /// The trigger named `s` (as [`Trigger::as_str`] writes it).
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Scheduled,
            Self::Retry,
            Self::Manual,
            Self::Replay,
            Self::Backfill,
        ]
        .into_iter()
        .find(|t| t.as_str() == s)
    }
}

/// A run row to insert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRow {
    /// The run record.
    pub run: Run,
    /// Unique per job: `slot:<instant>` (attempt 0), `slot:<instant>#retry<n>`, `manual:<run id>`.
    /// A second insert of the same key fails, so a slot can never run twice.
    pub slot_key: String,
    /// Why it runs.
    pub trigger: Trigger,
    /// 0 for the first attempt.
    pub attempt: u32,
}

impl RunRow {
    /// The key of `slot`'s attempt `attempt`.
    pub fn slot_key(slot: DateTime<Utc>, attempt: u32) -> String {
        let s = slot.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        if attempt == 0 {
            format!("slot:{s}")
        } else {
            format!("slot:{s}#retry{attempt}")
        }
    }
}

/// The scheduler's persistence. Object-safe.
///
/// # Contract
///
/// `insert_run` is atomic and returns `false`, storing nothing, when the job already has a row
/// with the same `slot_key` — across processes and restarts. The first attempt of a scheduled
/// slot (`Trigger::Scheduled`, attempt 0) also moves the job's cursor up to the slot, in the
/// same transaction as the row: a crash never leaves a handled slot without its row, nor a row
/// behind the cursor.
///
/// A store may refuse every write (an error, never `Ok(false)`) once its process has lost the
/// right to schedule, such as a lease another process took over: such writes are fenced.
#[async_trait]
pub trait SchedulerStore: Send + Sync + Debug + 'static {
    /// Every job to arm.
    async fn load_jobs(&self) -> Result<Vec<JobState>>;
    /// Inserts a run row (moving the cursor for a slot's first attempt, see above); `Ok(false)`
    /// if the job has one with this slot key.
    async fn insert_run(&self, row: &RunRow) -> Result<bool>;
    /// Inserts many rows, each as [`SchedulerStore::insert_run`] inserts one: the answer per
    /// row, in order (`Ok(true)` stored, `Ok(false)` the job has a row with that key, `Err` not
    /// stored — such a row may be inserted again alone, it is never stored twice). This is how
    /// slots due at one instant are recorded: a store writes them in as few fenced transactions
    /// as its limits allow. The default inserts them one by one.
    async fn insert_runs(&self, rows: &[RunRow]) -> Vec<Result<bool>> {
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            out.push(self.insert_run(row).await);
        }
        out
    }
    /// Saves a run's latest record.
    async fn update_run(&self, run: &Run) -> Result<()>;
    /// Saves many runs' latest records (at most one record per run), as
    /// [`SchedulerStore::update_run`] saves one. On an error some may be saved; saving them
    /// again is harmless. The default saves them one by one.
    async fn update_runs(&self, runs: &[Run]) -> Result<()> {
        for run in runs {
            self.update_run(run).await?;
        }
        Ok(())
    }
    /// Records the last slot handled for a job.
    async fn set_cursor(&self, job: &JobName, cursor: DateTime<Utc>) -> Result<()>;
    /// Marks a job expired.
    async fn set_expired(&self, job: &JobName) -> Result<()>;
    /// The job's secrets, readable, for a run about to start (default: none).
    async fn secrets(&self, job: &JobName) -> Result<crate::run::Secrets> {
        let _ = job;
        Ok(crate::run::Secrets::default())
    }
}

/// An in-memory [`SchedulerStore`], the reference for tests and embedding.
#[derive(Debug, Default)]
pub struct MemorySchedulerStore {
    inner: Mutex<MemInner>,
}

#[derive(Debug, Default)]
struct MemInner {
    jobs: BTreeMap<JobName, JobState>,
    runs: BTreeMap<RunId, (RunRow, Run)>,
    keys: HashSet<(JobName, String)>,
}

impl MemorySchedulerStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemInner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds or replaces a job.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidJob`] if the spec's name is invalid.
    pub fn put_job(&self, job: JobState) -> Result<()> {
        let name = JobName::new(job.spec.name.clone())?;
        self.lock().jobs.insert(name, job);
        Ok(())
    }

    /// Every run of `job`, oldest slot first.
    pub fn runs(&self, job: &str) -> Vec<(RunRow, Run)> {
        let mut v: Vec<_> = self
            .lock()
            .runs
            .values()
            .filter(|(r, _)| r.run.job.as_str() == job)
            .cloned()
            .collect();
        v.sort_by(|a, b| (a.1.scheduled_for, &a.1.id).cmp(&(b.1.scheduled_for, &b.1.id)));
        v
    }

    /// The latest record of run `id`.
    pub fn run(&self, id: &RunId) -> Option<Run> {
        self.lock().runs.get(id).map(|(_, r)| r.clone())
    }

    /// A job's state.
    pub fn job(&self, job: &str) -> Option<JobState> {
        self.lock()
            .jobs
            .values()
            .find(|j| j.spec.name == job)
            .cloned()
    }
}

#[async_trait]
impl SchedulerStore for MemorySchedulerStore {
    async fn load_jobs(&self) -> Result<Vec<JobState>> {
        Ok(self.lock().jobs.values().cloned().collect())
    }

    async fn insert_run(&self, row: &RunRow) -> Result<bool> {
        let mut g = self.lock();
        if !g.keys.insert((row.run.job.clone(), row.slot_key.clone())) {
            return Ok(false);
        }
        g.runs
            .insert(row.run.id.clone(), (row.clone(), row.run.clone()));
        if row.trigger == Trigger::Scheduled
            && row.attempt == 0
            && let Some(j) = g.jobs.get_mut(&row.run.job)
        {
            j.cursor = j.cursor.max(row.run.scheduled_for);
        }
        Ok(true)
    }

    async fn update_run(&self, run: &Run) -> Result<()> {
        let mut g = self.lock();
        let e = g
            .runs
            .get_mut(&run.id)
            .ok_or_else(|| Error::NotFound(format!("run {}", run.id)))?;
        e.1 = run.clone();
        Ok(())
    }

    async fn set_cursor(&self, job: &JobName, cursor: DateTime<Utc>) -> Result<()> {
        if let Some(j) = self.lock().jobs.get_mut(job) {
            j.cursor = cursor;
        }
        Ok(())
    }

    async fn set_expired(&self, job: &JobName) -> Result<()> {
        if let Some(j) = self.lock().jobs.get_mut(job) {
            j.expired = true;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{
        SCHEDULER_STORE_CHECKS, SchedulerStoreFixture, scheduler_store_conformance,
    };

    struct Fx(MemorySchedulerStore);

    #[async_trait]
    impl SchedulerStoreFixture for Fx {
        fn store(&self) -> &dyn SchedulerStore {
            &self.0
        }
        async fn add_job(&self, job: JobState) {
            self.0.put_job(job).expect("put_job");
        }
        async fn run(&self, id: &RunId) -> Option<Run> {
            self.0.run(id)
        }
    }

    #[tokio::test]
    async fn the_memory_store_keeps_the_scheduler_store_contract() {
        let ran = scheduler_store_conformance(&Fx(MemorySchedulerStore::new())).await;
        assert_eq!(ran, SCHEDULER_STORE_CHECKS);
    }
}
