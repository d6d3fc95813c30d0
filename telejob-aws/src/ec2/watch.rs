//! Following one run: its status object in the private store, its instance, its deadline.

use std::time::Duration;

use chrono::Utc;
use telejob_core::compute::{EventSink, RunEvent};
use telejob_core::run::{Run, RunId, RunState, keys};
use telejob_core::store::{Store, StoreExt};

use super::{Ec2Compute, api};

/// How long EC2 may take to show a fresh instance or a termination.
const CONSISTENCY_PATIENCE: Duration = Duration::from_secs(120);

impl Ec2Compute {
    pub(super) fn spawn_watch(&self, id: RunId, initial: Run, events: Option<EventSink>) {
        let me = self.clone();
        tokio::spawn(async move { me.watch(id, initial, events).await });
    }

    /// Ends the run as `state` with `why`: terminates the instance (confirmed), records the
    /// status privately where the agent did not, and publishes the final record.
    async fn conclude(&self, id: &RunId, mut run: Run, state: RunState, why: String) -> Run {
        let instance = self.instance_of(id);
        let mut why = why;
        if let Some(i) = &instance
            && let Err(e) = api::terminate_confirmed(
                &self.inner.client,
                self.inner.retry,
                i,
                CONSISTENCY_PATIENCE,
            )
            .await
        {
            // The reaper and the instance's own dead-man shutdown remain.
            tracing::error!(run = %id, instance = %i, error = %e, "cannot terminate the instance");
            why = format!("{why}; terminating instance {i} failed ({e}), the reaper will retry");
        }
        run.state = state;
        run.error = Some(why);
        run.phases.finished = Some(Utc::now());
        if let Err(e) = self
            .inner
            .private
            .put_json(&keys::status(&run.job, &run.id), &run)
            .await
        {
            tracing::warn!(run = %id, error = %e, "cannot store the run's final status");
        }
        run
    }

    async fn watch(&self, id: RunId, initial: Run, events: Option<EventSink>) {
        let Some((sender, cancel, deadline)) = self
            .lock()
            .get(&id)
            .map(|t| (t.latest.clone(), t.cancel.clone(), t.deadline))
        else {
            return;
        };
        let emit = |e: RunEvent| {
            if let Some(s) = &events {
                s.emit(e);
            }
        };
        let poll = Duration::from_secs(self.inner.settings.poll_seconds.max(1));
        let mut last = initial.clone();
        let mut unseen_since: Option<tokio::time::Instant> = None;
        let fin = loop {
            // 1. The agent's own record.
            if let Some(r) = self.stored_run(&last.job, &last.id).await {
                if r.state != last.state {
                    emit(RunEvent::State(r.state));
                }
                last = r.clone();
                if r.state.is_terminal() {
                    // The agent powers the machine off itself; make sure of it.
                    if let Some(i) = self.instance_of(&id) {
                        let _ = api::terminate_confirmed(
                            &self.inner.client,
                            self.inner.retry,
                            &i,
                            CONSISTENCY_PATIENCE,
                        )
                        .await;
                    }
                    break r;
                }
                sender.send_replace(r);
            }
            // 2. The deadline: the job's timeout plus the margin for boot, fetch and publish.
            if Utc::now() >= deadline {
                let why = format!(
                    "no result within the timeout plus {} s for boot and publish: instance terminated",
                    self.inner.settings.margin_seconds
                );
                break self
                    .conclude(&id, last.clone(), RunState::TimedOut, why)
                    .await;
            }
            // 3. The instance: gone without a final status means the run is lost.
            if let Some(i) = self.instance_of(&id) {
                match api::state_of(&self.inner.client, self.inner.retry, &i).await {
                    Ok(Some((s, why))) if api::ended(&s) => {
                        // The agent writes its status before powering off; look once more.
                        if let Some(r) = self.stored_run(&last.job, &last.id).await
                            && r.state.is_terminal()
                        {
                            break r;
                        }
                        let why = format!(
                            "instance {i} ended ({}{}) before the run reported a result; see the \
                             instance's console output",
                            s.as_str(),
                            why.map(|w| format!(": {w}")).unwrap_or_default()
                        );
                        break self
                            .conclude(&id, last.clone(), RunState::Interrupted, why)
                            .await;
                    }
                    Ok(Some(_)) => unseen_since = None,
                    Ok(None) => {
                        // Eventual consistency: a new instance may be invisible for a while.
                        let since = *unseen_since.get_or_insert_with(tokio::time::Instant::now);
                        if since.elapsed() > CONSISTENCY_PATIENCE {
                            let why = format!(
                                "instance {i} disappeared before the run reported a result"
                            );
                            break self
                                .conclude(&id, last.clone(), RunState::Interrupted, why)
                                .await;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(run = %id, error = %e.message, "cannot describe the instance")
                    }
                }
            }
            tokio::select! {
                () = cancel.cancelled() => {
                    // `forget_all` cancels too, after removing the run: then just stop.
                    if !self.lock().contains_key(&id) {
                        return;
                    }
                    break self.conclude(&id, last.clone(), RunState::Cancelled, "cancelled".into()).await;
                }
                () = tokio::time::sleep(poll) => {}
            }
        };
        // The run request held the job's secrets; the instance that needed it is gone.
        let request = format!("{}request.json", keys::run_prefix(&fin.job, &fin.id));
        if let Err(e) = self.inner.private.delete(&request).await {
            tracing::warn!(run = %id, error = %e, "cannot delete the run request");
        }
        emit(RunEvent::State(fin.state));
        sender.send_replace(fin);
    }
}
