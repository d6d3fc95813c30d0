//! Replicas: any number of `telejob serve` processes on one database serve the API and the
//! dashboard; the one holding the scheduler lease runs the scheduler.
//!
//! * **Lease** ([`crate::server::db::Fence`]): a row with holder, epoch and expiry on the
//!   database's clock, renewed every `lease/5`. A leader stops firing at 4/5 of the lease after
//!   its last renewal *began*, whether or not the database answers, so it has stopped before the
//!   row can expire and another replica take over. Every slot insert is conditional on the
//!   leader's epoch still holding the lease, so a stale leader's insert fails.
//! * **Takeover**: followers try every `lease/10`; a free or expired lease is taken, and so is
//!   one whose holder was a process of this very host that no longer exists (a restart does not
//!   wait for the lease to expire). The new leader re-adopts remote (EC2) runs, marks local
//!   runs of the old leader `interrupted` (retried per policy), and starts the reaper.
//! * **Changes** made on any replica reach the leader through the `job_changes` table, polled
//!   every half second by the leader: `job` (re-read the row), `run` (run now), `cancel`.
//!   Polling, not LISTEN/NOTIFY, so that SQLite and PostgreSQL behave alike and a missed
//!   notification cannot lose a change; the feed's gaps (a sequence number taken by a
//!   transaction that commits later) are waited for up to [`feed::GAP_WAIT`].
//!
//! The parts: [`lease`] (taking, renewing and giving up the lease; recovery on takeover),
//! [`feed`] (the change feed the leader follows), [`routing`] (what any replica asks: done on
//! the leader directly, handed over through the feed from a follower).

mod feed;
mod holder;
mod lease;
mod routing;
mod state;

use holder::holder_id;
pub use state::{Cluster, LeaseSettings, Role};
use state::{FeedCursor, Leading, locked};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use telejob_core::job::JobName;
use telejob_core::run::RunId;
use telejob_core::scheduler::{Scheduler, SchedulerParts};
use tokio_util::sync::CancellationToken;

use crate::server::app::metrics::Metrics;
use crate::server::db::{Db, JobRow};

impl Cluster {
    /// A replica over `db` whose scheduler, when it leads, is made of `parts` (its store is
    /// replaced by the fenced database).
    pub fn new(
        db: Db,
        settings: LeaseSettings,
        parts: SchedulerParts,
        reap_every: Duration,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(Self {
            id: holder_id(),
            db,
            settings,
            parts,
            reap_every,
            metrics,
            leading: Mutex::new(None),
            feed: Mutex::new(FeedCursor::default()),
            last_lease: Mutex::new(None),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Leading>> {
        locked(&self.leading)
    }

    /// This replica's name in the lease.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Leader or follower.
    pub fn role(&self) -> Role {
        if self.lock().is_some() {
            Role::Leader
        } else {
            Role::Follower
        }
    }

    /// Who held the lease at the last look (empty before any leader), without asking the
    /// database.
    pub fn lease_holder(&self) -> Option<String> {
        locked(&self.last_lease).as_ref().map(|l| l.holder.clone())
    }

    /// The scheduler, while this replica leads.
    pub fn scheduler(&self) -> Option<Scheduler> {
        self.lock().as_ref().map(|l| l.scheduler.clone())
    }

    /// Runs in flight on the leader, per job (empty on followers).
    pub fn active_runs(&self) -> HashMap<JobName, Vec<RunId>> {
        self.scheduler()
            .map(|s| s.active_runs())
            .unwrap_or_default()
    }

    /// What the compute runs execute on can do.
    pub fn compute_capabilities(&self) -> telejob_core::compute::ComputeCapabilities {
        self.parts.compute.capabilities()
    }

    /// When the job fires next, from its row alone (any replica can answer).
    pub fn next_fire(&self, j: &JobRow) -> Option<DateTime<Utc>> {
        let job = j.spec.validate(&self.parts.limits).ok()?;
        telejob_core::scheduler::next_fire_of(&job, j.paused, j.expired, j.cursor)
    }

    /// Tries for the lease once, now (at start, so that a lone server schedules from its first
    /// request on).
    pub async fn settle(&self) {
        if self.role() == Role::Follower {
            self.try_lead().await;
        }
    }

    /// Competes for the lease and, while leading, follows the change feed; until `stop`, then
    /// gives the lease up (local runs are cancelled and recorded, remote ones go on).
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let ttl = self.settings.ttl;
        let (renew_every, try_every) = (ttl / 5, ttl / 10);
        let mut next_renew = Instant::now();
        let mut next_prune = Instant::now();
        loop {
            let leading = self.role() == Role::Leader;
            let step = if leading {
                Duration::from_millis(500).min(try_every)
            } else {
                try_every
            };
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(step) => {}
            }
            if leading {
                if Instant::now() >= next_renew {
                    next_renew = Instant::now() + renew_every;
                    self.renew().await;
                }
                if let Some(s) = self.scheduler() {
                    self.follow_feed(&s).await;
                }
                if Instant::now() >= next_prune {
                    next_prune = Instant::now() + Duration::from_secs(600);
                    let _ = self
                        .db
                        .prune_changes(Utc::now() - chrono::Duration::hours(1))
                        .await;
                }
            } else {
                self.try_lead().await;
            }
        }
        self.shutdown().await;
    }
}
