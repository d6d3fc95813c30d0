//! What any replica asks of the scheduler: on the leader, done at once; from a follower, handed
//! over through the change feed and answered once the leader has recorded it.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use telejob_core::job::JobName;
use telejob_core::run::RunId;
use telejob_core::scheduler::Scheduler;
use telejob_core::scheduler::persist::RunRow;

use super::state::Cluster;
use crate::server::db::ChangeKind;

/// How long a follower waits for the leader to record a run it was asked to start.
const RUN_NOW_WAIT: Duration = Duration::from_secs(10);

/// No leader recorded what a follower handed over in time.
fn no_leader(op: &'static str) -> telejob_core::Error {
    telejob_core::Error::Compute {
        op,
        reason: "no scheduler recorded the run within 10 s (is a leader up?); try again".into(),
        retryable: true,
        source: None,
    }
}

/// Cancels a job's runs in flight and forgets the job.
async fn disarm(s: &Scheduler, job: &JobName) -> telejob_core::Result<()> {
    for r in s.active_runs().remove(job).unwrap_or_default() {
        s.cancel_run(&r).await?;
    }
    s.remove(job);
    Ok(())
}

impl Cluster {
    /// A job's row changed (or the job is gone): the leader's scheduler follows, on this
    /// replica at once, on another through the change feed.
    ///
    /// # Errors
    ///
    /// Database errors, or a spec the scheduler refuses.
    pub async fn job_changed(&self, name: &str) -> telejob_core::Result<()> {
        self.db
            .record_change(name, &ChangeKind::Job, &self.id)
            .await?;
        if let Some(s) = self.scheduler() {
            self.apply_job(&s, name).await?;
        }
        Ok(())
    }

    pub(super) async fn apply_job(&self, s: &Scheduler, name: &str) -> telejob_core::Result<()> {
        let job = JobName::new(name.to_string())?;
        match self.db.job_fresh(name).await? {
            Some(row) if !row.deleting => {
                s.upsert(row.state(self.db.last_failed(name).await?)).await
            }
            _ => disarm(s, &job).await,
        }
    }

    /// Cancels the runs of a job about to be deleted: at once on the leader, through the
    /// change feed from a follower (for the runs the database has in flight).
    ///
    /// # Errors
    ///
    /// The compute backend's, or database errors.
    pub async fn cancel_job_runs(&self, name: &str) -> telejob_core::Result<()> {
        let job = JobName::new(name.to_string())?;
        if let Some(s) = self.scheduler() {
            return disarm(&s, &job).await;
        }
        for id in self.db.in_flight_ids(name).await? {
            self.db
                .record_change(name, &ChangeKind::Cancel(id), &self.id)
                .await?;
        }
        Ok(())
    }

    /// Runs a job now: on the leader directly; from a follower, through the change feed,
    /// answering once the leader has recorded the run.
    ///
    /// # Errors
    ///
    /// The scheduler's, or a leader that did not record the run within 10 s.
    pub async fn run_now(&self, name: &str) -> telejob_core::Result<RunId> {
        let job = JobName::new(name.to_string())?;
        if let Some(s) = self.scheduler() {
            return s.run_now(&job).await;
        }
        let id = RunId::new();
        self.db
            .record_change(name, &ChangeKind::RunNow(id.to_string()), &self.id)
            .await?;
        self.wait_recorded(id).await
    }

    /// Replays run `of` of job `job` as a new run: on the leader directly; from a follower,
    /// through the change feed, answering once the leader has recorded the run.
    ///
    /// # Errors
    ///
    /// As [`Cluster::run_now`], or a run that cannot be replayed.
    pub async fn replay(&self, job: &str, of: &str) -> telejob_core::Result<RunId> {
        let id = RunId::new();
        if let Some(s) = self.scheduler() {
            return self.replay_on(&s, job, of, id).await;
        }
        let change = ChangeKind::Replay {
            id: id.to_string(),
            of: of.to_string(),
        };
        self.db.record_change(job, &change, &self.id).await?;
        self.wait_recorded(id).await
    }

    /// The leader's part of a backfill handed over by a follower.
    pub(super) async fn backfill_on(
        &self,
        s: &Scheduler,
        job: &str,
        slots: &[(DateTime<Utc>, u32, String)],
    ) -> telejob_core::Result<()> {
        let slots = slots
            .iter()
            .filter_map(|(t, a, id)| Some((*t, *a, RunId::parse(id)?)))
            .collect();
        let concurrency = self
            .db
            .job_fresh(job)
            .await?
            .map_or(1, |j| j.spec.backfill_concurrency);
        s.backfill(&JobName::new(job.to_string())?, slots, concurrency)
            .await
            .map(|_| ())
    }

    /// The leader's part of a replay: the original run and the key of the code it ran.
    pub(super) async fn replay_on(
        &self,
        s: &Scheduler,
        job: &str,
        of: &str,
        id: RunId,
    ) -> telejob_core::Result<RunId> {
        let (run, _) = self
            .db
            .run(of)
            .await?
            .ok_or_else(|| telejob_core::Error::NotFound(format!("run {of}")))?;
        let sha = run.code_sha256.clone().unwrap_or_default();
        let key = self
            .db
            .code_version(job, &sha)
            .await?
            .map(|v| v.key)
            .ok_or_else(|| {
                telejob_core::Error::invalid(
                    "run",
                    format!("the code version run {of} ran ({sha}) has been deleted"),
                )
            })?;
        s.replay(
            &JobName::new(job.to_string())?,
            &run,
            format!("store:{key}"),
            id,
        )
        .await
    }

    /// Backfills `slots` of a job (each its slot, attempt and run id): on the leader directly;
    /// from a follower through the change feed, answering once the leader has recorded them.
    /// Returns the ids recorded (a slot attempt another run took first is left out).
    ///
    /// # Errors
    ///
    /// As [`Cluster::run_now`].
    pub async fn backfill(
        &self,
        job: &str,
        slots: Vec<(DateTime<Utc>, u32, RunId)>,
        concurrency: u32,
    ) -> telejob_core::Result<Vec<RunId>> {
        let name = JobName::new(job.to_string())?;
        if let Some(s) = self.scheduler() {
            return s.backfill(&name, slots, concurrency).await;
        }
        let Some(last) = slots.iter().max_by_key(|s| s.0).cloned() else {
            return Ok(Vec::new());
        };
        let change = ChangeKind::Backfill(
            slots
                .iter()
                .map(|(t, a, id)| (*t, *a, id.to_string()))
                .collect(),
        );
        self.db.record_change(job, &change, &self.id).await?;
        // The leader records the rows oldest first: once the newest slot's attempt has a row,
        // every one has.
        let deadline = Instant::now() + RUN_NOW_WAIT;
        let last_key = RunRow::slot_key(last.0, last.1);
        while self.db.run_with_key(job, &last_key).await?.is_none() {
            if Instant::now() >= deadline {
                return Err(no_leader("backfill"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut ours = Vec::new();
        for (t, a, id) in slots {
            let key = RunRow::slot_key(t, a);
            if self.db.run_with_key(job, &key).await?.as_deref() == Some(id.as_str()) {
                ours.push(id);
            }
        }
        Ok(ours)
    }

    /// Waits until the leader has recorded run `id` (handed over through the feed).
    async fn wait_recorded(&self, id: RunId) -> telejob_core::Result<RunId> {
        let deadline = Instant::now() + RUN_NOW_WAIT;
        while Instant::now() < deadline {
            if self.db.run(id.as_str()).await?.is_some() {
                return Ok(id);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(no_leader("run now"))
    }

    /// Cancels a run in flight: on the leader directly, else through the change feed.
    ///
    /// # Errors
    ///
    /// The compute backend's, or database errors.
    pub async fn cancel_run(&self, job: &str, run: &RunId) -> telejob_core::Result<()> {
        if let Some(s) = self.scheduler() {
            return s.cancel_run(run).await;
        }
        self.db
            .record_change(job, &ChangeKind::Cancel(run.to_string()), &self.id)
            .await
    }
}
