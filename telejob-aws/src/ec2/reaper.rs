//! The reaper: ends tagged instances that nobody needs — their run is finished, unknown to this
//! launcher, or past its deadline. Run at start-up (after reattaching) and periodically.

use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use telejob_core::Result;
use telejob_core::compute::{ReapReason, Reaped, Reaper};
use telejob_core::job::JobName;
use telejob_core::run::RunId;

use super::{Ec2Compute, api, tags};

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
}
#[async_trait]
impl Reaper for Ec2Compute {
    async fn reap(&self) -> Result<Vec<Reaped>> {
        Ec2Compute::reap(self).await
    }
}
