//! The scheduler lease: taken when free, expired or held by a dead process of this host;
//! renewed every fifth of its life; given up (or lost) with the scheduler stopped in time.
//! Taking it recovers what earlier leaders left in flight.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use telejob_core::scheduler::Scheduler;
use telejob_core::scheduler::persist::Trigger;

use super::holder::holder_is_dead_here;
use super::state::{Cluster, FeedCursor, Leading, locked};
use crate::server::db::Fence;

impl Cluster {
    /// Renews the lease, giving it up when it cannot be renewed before 4/5 of it has passed.
    pub(super) async fn renew(&self) {
        let Some((fence, valid_until)) = self
            .lock()
            .as_ref()
            .map(|l| (l.fence.clone(), l.valid_until))
        else {
            return;
        };
        let began = Instant::now();
        let left = valid_until.saturating_duration_since(began);
        let ttl_ms = i64::try_from(self.settings.ttl.as_millis()).unwrap_or(i64::MAX);
        match tokio::time::timeout(left, self.db.renew_lease(&fence, ttl_ms)).await {
            Ok(Ok(true)) => {
                self.metrics.renewals.inc();
                if let Some(l) = self.lock().as_mut() {
                    l.valid_until = began + self.settings.ttl * 4 / 5;
                }
            }
            Ok(Ok(false)) => self.step_down("another replica holds the lease now").await,
            Ok(Err(e)) if Instant::now() < valid_until => {
                tracing::warn!(error = %e, "cannot renew the scheduler lease; retrying");
            }
            Ok(Err(e)) => {
                self.step_down(&format!("the lease could not be renewed: {e}"))
                    .await;
            }
            Err(_) => {
                self.step_down("the database did not answer before the lease ran out")
                    .await;
            }
        }
    }

    pub(super) async fn try_lead(&self) {
        let ttl = self.settings.ttl;
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let began = Instant::now();
        let Ok(Ok(lease)) = tokio::time::timeout(ttl / 2, self.db.lease()).await else {
            return;
        };
        *locked(&self.last_lease) = Some(lease.clone());
        let dead = (lease.remaining_ms > 0 && holder_is_dead_here(&lease.holder)).then(|| Fence {
            holder: lease.holder.clone(),
            epoch: lease.epoch,
        });
        if lease.remaining_ms > 0 && dead.is_none() {
            return;
        }
        let acquired = tokio::time::timeout(
            ttl / 2,
            self.db.acquire_lease(&self.id, ttl_ms, dead.as_ref()),
        )
        .await;
        let Ok(Ok(Some(epoch))) = acquired else {
            return;
        };
        let fence = Fence {
            holder: self.id.clone(),
            epoch,
        };
        // Recovery and loading every job can outlast a lease: keep renewing meanwhile.
        let valid = Mutex::new(began + ttl * 4 / 5);
        let keep = async {
            loop {
                tokio::time::sleep(ttl / 5).await;
                let t = Instant::now();
                if let Ok(Ok(true)) =
                    tokio::time::timeout(ttl / 5, self.db.renew_lease(&fence, ttl_ms)).await
                {
                    self.metrics.renewals.inc();
                    *locked(&valid) = t + ttl * 4 / 5;
                }
            }
        };
        let led = tokio::select! {
            r = self.lead(fence.clone()) => r,
            () = keep => unreachable!("renews for ever"),
        };
        let valid_until = *locked(&valid);
        if let Some(l) = self.lock().as_mut() {
            l.valid_until = valid_until;
        }
        match led {
            Ok(()) => {
                self.metrics.takeovers.inc();
                self.metrics.leader.set(1);
                tracing::info!(epoch, "took the scheduler lease");
                eprintln!("telejob: this replica now runs the scheduler (lease epoch {epoch})");
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot start the scheduler; giving the lease up");
                let _ = self.db.release_lease(&fence).await;
            }
        }
        *locked(&self.last_lease) = self.db.lease().await.ok();
    }

    /// Starts scheduling under `fence`: recovery of the runs earlier leaders left in flight,
    /// then the scheduler and the reaper.
    pub(super) async fn lead(&self, fence: Fence) -> anyhow::Result<()> {
        let feed_start = self.db.last_change().await?;
        let compute = self.parts.compute.clone();
        let mut adopted = Vec::new();
        let mut interrupted = Vec::new();
        // Every run in flight belongs to an earlier leader: only leaders launch. Remote runs
        // go on without it and are reattached; local runs died with it (or were killed when
        // it lost the lease), and whatever of them still runs on this host is killed.
        for (run, trigger, attempt) in self.db.in_flight().await? {
            if compute.reattach(&run).await.unwrap_or_else(|e| {
                tracing::error!(run = %run.id, error = %e, "cannot reattach the run");
                false
            }) {
                eprintln!("telejob: run {} of {} reattached", run.id, run.job);
                adopted.push((run, trigger, attempt));
                continue;
            }
            let id = run.id.as_str().to_string();
            let killed = tokio::task::spawn_blocking(move || {
                telejob_core::agent::sandbox::kill_leftovers(&id)
            })
            .await
            .unwrap_or(false);
            let run = self
                .db
                .interrupt(
                    run,
                    "interrupted: the server running it stopped (or lost the scheduler lease) while it was in flight",
                )
                .await?;
            tracing::warn!(run = %run.id, job = %run.job, killed, "run interrupted");
            eprintln!(
                "telejob: run {} of {} was in flight under an earlier scheduler: marked interrupted",
                run.id, run.job
            );
            interrupted.push((run, trigger, attempt));
        }
        let mut parts = self.parts.clone();
        parts.store = Arc::new(self.db.fenced(fence.clone()));
        let scheduler = Scheduler::new(parts);
        let timer = scheduler.start().await?;
        for (run, trigger, attempt) in adopted {
            scheduler.adopt(run, trigger, attempt);
        }
        for (run, trigger, attempt) in interrupted {
            if trigger != Trigger::Manual {
                scheduler.recovered(run, trigger, attempt).await;
            }
        }
        // After reattaching, so that the reaper leaves reattached runs alone.
        let reaper = self
            .parts
            .compute
            .reaper()
            .map(|r| telejob_core::compute::spawn_reaper(r, self.reap_every));
        *locked(&self.feed) = FeedCursor::starting_at(feed_start);
        *self.lock() = Some(Leading {
            fence,
            scheduler,
            timer,
            reaper,
            valid_until: Instant::now(),
        });
        Ok(())
    }

    /// Stops scheduling at once, leaving runs in flight for the next leader.
    pub(super) async fn step_down(&self, why: &str) {
        let Some(l) = self.lock().take() else {
            return;
        };
        self.metrics.leader.set(0);
        self.metrics.step_downs.inc();
        tracing::warn!(reason = why, "stopped running the scheduler");
        eprintln!("telejob: this replica stopped running the scheduler: {why}");
        l.timer.abort();
        if let Some(r) = l.reaper {
            r.abort();
        }
        // Not awaited: cancelling local runs must not wait on a database that may be gone.
        tokio::spawn(async move { l.scheduler.abandon().await });
    }

    /// Graceful stop: local runs are cancelled and their end recorded, remote runs go on; the
    /// lease is released so that another replica takes over at once.
    pub(super) async fn shutdown(&self) {
        let Some(l) = self.lock().take() else {
            return;
        };
        self.metrics.leader.set(0);
        eprintln!("telejob: shutting down: cancelling runs in flight");
        l.scheduler.shutdown().await;
        l.timer.abort();
        if let Some(r) = l.reaper {
            r.abort();
        }
        if let Err(e) = self.db.release_lease(&l.fence).await {
            tracing::warn!(error = %e, "cannot release the scheduler lease");
        }
    }
}
