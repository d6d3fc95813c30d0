//! What a replica's part in the cluster holds: its role, the lease it leads under, where it is
//! in the change feed.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use telejob_core::scheduler::{Scheduler, SchedulerParts};

use crate::server::app::metrics::Metrics;
use crate::server::db::{Db, Fence, LeaseRow};

/// What this replica does now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Holds the lease and runs the scheduler.
    Leader,
    /// Serves the API and the dashboard; another replica schedules.
    Follower,
}

/// Settings of the lease.
#[derive(Debug, Clone, Copy)]
pub struct LeaseSettings {
    /// How long a lease lasts without renewal; takeover comes at most this long (plus a
    /// tenth) after the leader's death.
    pub ttl: Duration,
}

impl Default for LeaseSettings {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(crate::server::settings::defaults::LEASE_SECONDS),
        }
    }
}

pub(super) struct Leading {
    pub(super) fence: Fence,
    pub(super) scheduler: Scheduler,
    pub(super) timer: tokio::task::JoinHandle<()>,
    pub(super) reaper: Option<tokio::task::JoinHandle<()>>,
    /// Last moment this replica may fire: 4/5 of the lease after its last renewal began.
    pub(super) valid_until: Instant,
}

/// How long a change feed gap (a sequence number not yet visible) is waited for.
pub const GAP_WAIT: Duration = Duration::from_secs(10);

/// Where this replica is in the change feed.
#[derive(Debug, Default)]
pub(super) struct FeedCursor {
    /// Every change at or below it has been seen (or its gap given up on).
    pub(super) watermark: i64,
    /// Changes above the watermark already seen.
    pub(super) seen: BTreeSet<i64>,
    /// Since when the first gap above the watermark has been open.
    pub(super) gap_since: Option<Instant>,
}

impl FeedCursor {
    /// A cursor that has seen every change up to `watermark`.
    pub(super) fn starting_at(watermark: i64) -> Self {
        Self {
            watermark,
            ..Self::default()
        }
    }

    pub(super) fn saw(&mut self, seq: i64) {
        self.seen.insert(seq);
        self.advance();
    }

    pub(super) fn advance(&mut self) {
        while self.seen.remove(&(self.watermark + 1)) {
            self.watermark += 1;
        }
        if self.seen.is_empty() {
            self.gap_since = None;
            return;
        }
        let since = *self.gap_since.get_or_insert_with(Instant::now);
        if since.elapsed() > GAP_WAIT {
            // A sequence number taken by a transaction that rolled back: never coming.
            self.watermark += 1;
            self.gap_since = None;
            self.advance();
        }
    }
}

/// This replica's part in the cluster.
pub struct Cluster {
    pub(super) id: String,
    pub(super) db: Db,
    pub(super) settings: LeaseSettings,
    pub(super) parts: SchedulerParts,
    pub(super) reap_every: Duration,
    pub(super) metrics: Arc<Metrics>,
    pub(super) leading: Mutex<Option<Leading>>,
    pub(super) feed: Mutex<FeedCursor>,
    pub(super) last_lease: Mutex<Option<LeaseRow>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("id", &self.id)
            .field("role", &self.role())
            .finish_non_exhaustive()
    }
}

/// A mutex's guard; a panic elsewhere while it was held leaves data that is still usable here.
pub(super) fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
