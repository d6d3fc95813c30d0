//! Runs: one row per (job, slot), the run record as JSON, and the scheduler's persistence.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
use telejob_core::Result;
use telejob_core::job::JobName;
use telejob_core::run::{Run, RunState};
use telejob_core::scheduler::persist::{JobState, RunRow, SchedulerStore, Trigger};

use super::conn::{Db, db_err, decode_err, inserted, ts};

impl Db {
    fn run_from_json(s: &str) -> Result<Run> {
        serde_json::from_str(s).map_err(|e| decode_err("run record", e))
    }

    /// A run and its trigger.
    pub async fn run(&self, id: &str) -> Result<Option<(Run, String)>> {
        let r = sqlx::query("SELECT record, trigger FROM runs WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        r.map(|r| Ok((Self::run_from_json(r.get(0))?, r.get(1))))
            .transpose()
    }

    /// A job's runs, newest slot first.
    pub async fn runs_of(&self, job: &str, limit: i64) -> Result<Vec<(Run, String)>> {
        let rows = sqlx::query("SELECT record, trigger FROM runs WHERE job = ? ORDER BY scheduled_for DESC, id DESC LIMIT ?")
            .bind(job)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        rows.iter()
            .map(|r| Ok((Self::run_from_json(r.get(0))?, r.get(1))))
            .collect()
    }

    /// Whether the job's latest finished (succeeded, failed, timed out) run failed.
    pub async fn last_failed(&self, job: &str) -> Result<bool> {
        let s: Option<String> = sqlx::query_scalar(
            "SELECT state FROM runs WHERE job = ? AND state IN ('succeeded', 'failed', 'timed_out') ORDER BY created_at DESC LIMIT 1",
        )
        .bind(job)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(matches!(s.as_deref(), Some("failed" | "timed_out")))
    }

    /// Runs that were in flight, marked `interrupted`; returns them.
    /// Runs recorded as in flight, with their trigger and attempt.
    pub async fn in_flight(&self) -> Result<Vec<(Run, Trigger, u32)>> {
        let rows = sqlx::query("SELECT record, trigger, attempt FROM runs WHERE state IN ('pending', 'fetching', 'running', 'publishing')")
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        rows.into_iter()
            .map(|r| {
                let trigger = match r.get::<String, _>(1).as_str() {
                    "scheduled" => Trigger::Scheduled,
                    "retry" => Trigger::Retry,
                    _ => Trigger::Manual,
                };
                Ok((
                    Self::run_from_json(r.get(0))?,
                    trigger,
                    r.get::<i64, _>(2) as u32,
                ))
            })
            .collect()
    }

    /// Marks one in-flight run interrupted.
    pub async fn interrupt(&self, mut run: Run, why: &str) -> Result<Run> {
        run.state = RunState::Interrupted;
        run.error = Some(why.into());
        run.phases.finished = Some(Utc::now());
        self.update_run(&run).await?;
        Ok(run)
    }

    /// Number of runs per state.
    pub async fn run_counts(&self) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query("SELECT state, COUNT(*) FROM runs GROUP BY state")
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}

#[async_trait]
#[async_trait]
impl SchedulerStore for Db {
    async fn secrets(&self, job: &JobName) -> Result<telejob_core::run::Secrets> {
        self.open_secrets(job.as_str()).await
    }

    async fn load_jobs(&self) -> Result<Vec<JobState>> {
        let mut out = Vec::new();
        for j in self.jobs().await? {
            let failed = self.last_failed(&j.spec.name).await?;
            out.push(j.state(failed));
        }
        Ok(out)
    }

    async fn insert_run(&self, row: &RunRow) -> Result<bool> {
        let r = sqlx::query("INSERT INTO runs (id, job, slot_key, trigger, attempt, scheduled_for, state, record, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
            .bind(row.run.id.as_str())
            .bind(row.run.job.as_str())
            .bind(&row.slot_key)
            .bind(row.trigger.as_str())
            .bind(row.attempt)
            .bind(ts(row.run.scheduled_for))
            .bind(row.run.state.as_str())
            .bind(serde_json::to_string(&row.run).unwrap_or_default())
            .bind(ts(Utc::now()))
            .execute(&self.pool)
            .await;
        inserted(r)
    }

    async fn update_run(&self, run: &Run) -> Result<()> {
        sqlx::query("UPDATE runs SET state = ?, record = ? WHERE id = ?")
            .bind(run.state.as_str())
            .bind(serde_json::to_string(run).unwrap_or_default())
            .bind(run.id.as_str())
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn set_cursor(&self, job: &JobName, cursor: DateTime<Utc>) -> Result<()> {
        let r = sqlx::query("UPDATE jobs SET cursor = ? WHERE name = ?")
            .bind(ts(cursor))
            .bind(job.as_str())
            .execute(&self.pool)
            .await;
        self.cache.forget(job.as_str());
        r.map_err(db_err)?;
        Ok(())
    }

    async fn set_expired(&self, job: &JobName) -> Result<()> {
        let r = sqlx::query("UPDATE jobs SET expired = 1 WHERE name = ?")
            .bind(job.as_str())
            .execute(&self.pool)
            .await;
        self.cache.forget(job.as_str());
        r.map_err(db_err)?;
        Ok(())
    }
}
