//! Time for the scheduler: the system clock, or a tokio-driven clock for tests.

use std::fmt::Debug;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

/// A source of "now" and a way to sleep until an instant. Object-safe.
#[async_trait]
pub trait Clock: Send + Sync + Debug + 'static {
    /// The current instant.
    fn now(&self) -> DateTime<Utc>;
    /// Returns at (or just after) `t`.
    async fn sleep_until(&self, t: DateTime<Utc>);
}

/// The system clock. Sleeps in steps of at most a minute, so a wall-clock jump (NTP, suspend) is
/// noticed within a minute.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

#[async_trait]
impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    async fn sleep_until(&self, t: DateTime<Utc>) {
        loop {
            let left = t - Utc::now();
            let Ok(left) = left.to_std() else { return };
            if left.is_zero() {
                return;
            }
            tokio::time::sleep(left.min(std::time::Duration::from_secs(60))).await;
        }
    }
}

/// A clock that follows tokio's timer from a fixed start: with `tokio::time::pause` (or
/// `#[tokio::test(start_paused = true)]`) time advances only as tasks sleep, so schedule tests are
/// exact and instant.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    start: DateTime<Utc>,
    origin: tokio::time::Instant,
}

impl TokioClock {
    /// A clock that reads `start` now.
    pub fn starting_at(start: DateTime<Utc>) -> Self {
        Self {
            start,
            origin: tokio::time::Instant::now(),
        }
    }
}

#[async_trait]
impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = self.origin.elapsed();
        self.start + chrono::Duration::from_std(elapsed).unwrap_or(chrono::Duration::MAX)
    }

    async fn sleep_until(&self, t: DateTime<Utc>) {
        if let Ok(d) = (t - self.start).to_std() {
            tokio::time::sleep_until(self.origin + d).await;
        }
    }
}
