//! The reaper: ends tagged instances that nobody needs — their run is finished, unknown to this
//! launcher, or past its deadline. Run at start-up (after reattaching) and periodically.

use std::time::Duration;

use chrono::Utc;
use telejob_core::Result;
use telejob_core::job::JobName;
use telejob_core::run::RunId;

use super::{Ec2Compute, api, tags};

/// Why the reaper ended an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReapReason {
    /// The run's status says it is over.
    Finished,
    /// This launcher does not follow the run (launched by a process that is gone, and not
    /// reattached).
    Unknown,
    /// The deadline tag has passed.
    PastDeadline,
}

/// One instance the reaper terminated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reaped {
    /// The instance.
    pub instance_id: String,
    /// Its run, from the tag.
    pub run_id: String,
    /// Why.
    pub reason: ReapReason,
}

impl Ec2Compute {
    /// One pass: terminates every live instance tagged with a telejob run that is past its
    /// deadline (whoever launched it), or that this launcher launched and whose run is finished
    /// or not followed by this process. Instances of runs in flight here are left alone.
    ///
    /// # Errors
    ///
    /// [`Error::Compute`] when the instances cannot be listed; failures to terminate one instance
    /// are logged and retried on the next pass.
    pub async fn reap(&self) -> Result<Vec<Reaped>> {
        let instances = api::find_tagged(&self.inner.client, self.inner.retry, None)
            .await
            .map_err(|e| e.into_error("reap"))?;
        let now = Utc::now();
        let mut out = Vec::new();
        for i in &instances {
            let (Some(id), Some(run)) = (i.instance_id(), api::tag(i, tags::RUN)) else {
                continue;
            };
            let deadline = api::deadline(i);
            let mine = api::tag(i, tags::LAUNCHER) == Some(self.inner.settings.launcher.as_str());
            let followed = RunId::parse(run).is_some_and(|r| {
                self.lock()
                    .get(&r)
                    .is_some_and(|t| !t.latest.borrow().state.is_terminal())
            });
            let reason = if deadline.is_some_and(|d| d <= now) {
                Some(ReapReason::PastDeadline)
            } else if !mine || followed {
                None
            } else if self.finished(i, run).await {
                Some(ReapReason::Finished)
            } else {
                Some(ReapReason::Unknown)
            };
            let Some(reason) = reason else { continue };
            tracing::warn!(instance = id, run, ?reason, "reaping instance");
            match api::terminate_confirmed(
                &self.inner.client,
                self.inner.retry,
                id,
                Duration::from_secs(30),
            )
            .await
            {
                Ok(()) => out.push(Reaped {
                    instance_id: id.to_string(),
                    run_id: run.to_string(),
                    reason,
                }),
                Err(e) => tracing::error!(instance = id, error = %e, "reaper cannot terminate"),
            }
        }
        Ok(out)
    }

    async fn finished(&self, i: &aws_sdk_ec2::types::Instance, run: &str) -> bool {
        let (Some(job), Some(run)) = (
            api::tag(i, tags::JOB).and_then(|j| JobName::new(j).ok()),
            RunId::parse(run),
        ) else {
            return false;
        };
        self.stored_run(&job, &run)
            .await
            .is_some_and(|r| r.state.is_terminal())
    }

    /// Runs [`reap`](Self::reap) now and then every `every`, until the task is aborted.
    pub fn spawn_reaper(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                match me.reap().await {
                    Ok(r) if !r.is_empty() => tracing::warn!(count = r.len(), "reaped instances"),
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "reaper pass failed"),
                }
                tokio::time::sleep(every).await;
            }
        })
    }
}
