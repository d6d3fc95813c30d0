//! Running-late alerts: the leader looks at every run whose command is running, and marks (once)
//! and notifies the ones past their job's usual duration by the margin — well before the
//! timeout. Jobs with fewer than five successful runs have no usual duration and no alert.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use telejob_core::advice::{Usual, words};
use telejob_core::scheduler::notify::{EventKind, JobEvent, Notifier};

use crate::server::app::advice::Advisor;
use crate::server::app::cluster::Cluster;
use crate::server::app::metrics::Metrics;
use crate::server::db::{Db, LateMark};

/// What the watch needs.
#[derive(Debug, Clone)]
pub struct LateWatch {
    /// The database.
    pub db: Db,
    /// Only the leader looks.
    pub cluster: Arc<Cluster>,
    /// The thresholds.
    pub advisor: Arc<Advisor>,
    /// Where alerts go.
    pub notifier: Arc<dyn Notifier>,
    /// `telejob_runs_late_total`.
    pub metrics: Arc<Metrics>,
    /// How often to look.
    pub every: Duration,
}

impl LateWatch {
    /// Looks every `every` until the process ends.
    pub async fn run(self) {
        loop {
            tokio::time::sleep(self.every).await;
            if self.cluster.scheduler().is_none() {
                continue;
            }
            if let Err(e) = self.look().await {
                tracing::warn!(error = %e, "cannot check for runs running late");
            }
        }
    }

    /// One look: marks and notifies every run past its threshold. Returns how many.
    ///
    /// # Errors
    ///
    /// Database errors.
    pub async fn look(&self) -> telejob_core::Result<usize> {
        let now = Utc::now();
        let mut usual: HashMap<String, Option<Usual>> = HashMap::new();
        let mut marked = 0;
        for run in self.db.running_not_late().await? {
            let Some(started) = run.phases.run_started else {
                continue;
            };
            let job = run.job.to_string();
            if !usual.contains_key(&job) {
                let u = self.db.usual(&job).await?;
                usual.insert(job.clone(), u);
            }
            let Some(u) = usual.get(&job).copied().flatten() else {
                continue;
            };
            let after = u.late_after(self.advisor.late_factor, self.advisor.late_margin);
            let running = (now - started).to_std().unwrap_or_default();
            if running <= after {
                continue;
            }
            let mark = LateMark {
                at: now,
                p95_ms: u64::try_from(u.p95.as_millis()).unwrap_or(u64::MAX),
                after_ms: u64::try_from(after.as_millis()).unwrap_or(u64::MAX),
            };
            if !self.db.mark_late(run.id.as_str(), &mark).await? {
                continue; // marked by an earlier look: the alert went out then
            }
            marked += 1;
            self.metrics.late.inc();
            let notify = self
                .db
                .job(&job)
                .await?
                .map(|j| j.spec.notify)
                .unwrap_or_default();
            let message = format!(
                "run {} is running late: its command has run {}, past {} (the job's usual run is {} at p95); it is killed at its timeout",
                run.id,
                words(running),
                words(after),
                words(u.p95)
            );
            tracing::warn!(run = %run.id, job = %job, "{message}");
            self.notifier
                .notify(JobEvent {
                    kind: EventKind::RunningLate,
                    job: run.job.clone(),
                    run: Some(run),
                    at: now,
                    message,
                    notify,
                })
                .await;
        }
        Ok(marked)
    }
}
