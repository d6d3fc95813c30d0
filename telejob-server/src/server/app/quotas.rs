//! What one owner may hold of the server at once (`[quotas]`): runs waiting for a slot, backfill
//! runs pending, "run now" calls a minute, and (enforced by the scheduler's fair queue) runs at
//! once. Counts come from the database, so every replica sees the same; the call rate is
//! counted per replica.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::errors::JobError;
use crate::server::db::Db;

/// The `[quotas]` table: per-owner caps. Every field is optional; see docs/config.md.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaSettings {
    /// Runs of one owner's jobs at once (the rest wait for their turn).
    pub max_running: usize,
    /// Runs of one owner's jobs waiting to start ("run now", replays, scheduled slots), past
    /// which "run now" and replay are refused.
    pub max_queued: usize,
    /// Backfill runs of one owner's jobs pending, past which a backfill is refused.
    pub max_backfill_pending: usize,
    /// "Run now" and replay calls a minute for one owner's jobs, past which they answer 429.
    pub run_now_per_minute: usize,
}

impl Default for QuotaSettings {
    fn default() -> Self {
        Self {
            max_running: 16,
            max_queued: 100,
            max_backfill_pending: 1000,
            run_now_per_minute: 30,
        }
    }
}

/// The caps in force, with this replica's record of recent "run now" calls.
#[derive(Debug, Default)]
pub struct Quotas {
    /// The caps.
    pub settings: QuotaSettings,
    calls: Mutex<HashMap<String, VecDeque<Instant>>>,
}

const MINUTE: Duration = Duration::from_secs(60);

impl Quotas {
    /// Quotas with these caps.
    pub fn new(settings: QuotaSettings) -> Self {
        Self {
            settings,
            calls: Mutex::default(),
        }
    }

    /// Counts a "run now" or replay call for `owner`'s job: refused with the seconds until the
    /// next is allowed once `run_now_per_minute` calls came within the last minute.
    ///
    /// # Errors
    ///
    /// [`JobError::RateLimited`] past the rate.
    pub fn count_call(&self, owner: &str) -> Result<(), JobError> {
        self.count_call_at(owner, Instant::now())
    }

    fn count_call_at(&self, owner: &str, now: Instant) -> Result<(), JobError> {
        let mut calls = self
            .calls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        calls.retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < MINUTE));
        let q = calls.entry(owner.to_string()).or_default();
        while q.front().is_some_and(|t| now.duration_since(*t) >= MINUTE) {
            q.pop_front();
        }
        let limit = self.settings.run_now_per_minute;
        if q.len() >= limit {
            let oldest = q.front().copied().unwrap_or(now);
            let wait = MINUTE.saturating_sub(now.duration_since(oldest));
            return Err(JobError::RateLimited {
                retry_after: wait.as_secs().max(1),
                message: format!(
                    "{owner}'s jobs were run by hand {limit} times in the last minute \
                     ([quotas] run_now_per_minute = {limit}); try again in {} s",
                    wait.as_secs().max(1)
                ),
            });
        }
        q.push_back(now);
        Ok(())
    }

    /// Checks that `owner` may queue one more run by hand.
    ///
    /// # Errors
    ///
    /// [`JobError::OverQuota`] naming `queued` past `max_queued`; database errors.
    pub async fn check_queued(&self, db: &Db, owner: &str) -> Result<(), JobError> {
        let (_, waiting) = db.pending_of_owner(owner).await?;
        let max = self.settings.max_queued;
        if usize::try_from(waiting).unwrap_or(usize::MAX) >= max {
            return Err(JobError::OverQuota {
                field: "queued",
                message: format!(
                    "{owner}'s jobs have {waiting} runs waiting to start ([quotas] max_queued = \
                     {max}); wait for them or cancel some"
                ),
            });
        }
        Ok(())
    }

    /// Checks that `owner` may add `adding` backfill runs.
    ///
    /// # Errors
    ///
    /// [`JobError::OverQuota`] naming `to` past `max_backfill_pending`; database errors.
    pub async fn check_backfill(
        &self,
        db: &Db,
        owner: &str,
        adding: usize,
    ) -> Result<(), JobError> {
        let (pending, _) = db.pending_of_owner(owner).await?;
        let pending = usize::try_from(pending).unwrap_or(usize::MAX);
        let max = self.settings.max_backfill_pending;
        if pending.saturating_add(adding) > max {
            return Err(JobError::OverQuota {
                field: "to",
                message: format!(
                    "this backfill adds {adding} runs to the {pending} of {owner}'s jobs pending; \
                     at most {max} may be pending ([quotas] max_backfill_pending); backfill a \
                     shorter range or wait for these"
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_past_the_rate_are_refused_until_the_oldest_is_a_minute_old() {
        let q = Quotas::new(QuotaSettings {
            run_now_per_minute: 3,
            ..QuotaSettings::default()
        });
        let t0 = Instant::now();
        for i in 0..3 {
            q.count_call_at("alice", t0 + Duration::from_secs(i))
                .expect("within the rate");
        }
        let Err(JobError::RateLimited { retry_after, .. }) =
            q.count_call_at("alice", t0 + Duration::from_secs(10))
        else {
            panic!("the fourth call in a minute is refused");
        };
        assert_eq!(retry_after, 50);
        q.count_call_at("bob", t0 + Duration::from_secs(10))
            .expect("another owner has a rate of their own");
        q.count_call_at("alice", t0 + Duration::from_secs(61))
            .expect("a minute after the first call, one more is allowed");
    }
}
