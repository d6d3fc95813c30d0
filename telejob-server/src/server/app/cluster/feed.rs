//! The change feed: what other replicas changed, in order, as the leader applies it.

use std::time::Duration;

use telejob_core::job::JobName;
use telejob_core::run::RunId;
use telejob_core::scheduler::Scheduler;

use super::state::{Cluster, locked};
use crate::server::db::ChangeKind;

impl Cluster {
    /// Applies the changes other replicas made since the last look.
    pub(super) async fn follow_feed(&self, s: &Scheduler) {
        let from = locked(&self.feed).watermark;
        let Ok(Ok(changes)) =
            tokio::time::timeout(Duration::from_secs(2), self.db.changes_after(from, 1000)).await
        else {
            return;
        };
        for c in changes {
            let new = {
                let mut f = locked(&self.feed);
                let new = c.seq > f.watermark && !f.seen.contains(&c.seq);
                f.saw(c.seq);
                new
            };
            if !new || c.origin == self.id {
                continue;
            }
            let run_id = |id: &str| {
                RunId::parse(id).ok_or_else(|| telejob_core::Error::NotFound(format!("run {id:?}")))
            };
            let r = match &c.kind {
                ChangeKind::Job => self.apply_job(s, &c.job).await,
                ChangeKind::RunNow(id) => match (JobName::new(c.job.clone()), run_id(id)) {
                    (Ok(job), Ok(id)) => s.run_now_as(&job, id).await.map(|_| ()),
                    (Err(e), _) | (_, Err(e)) => Err(e),
                },
                ChangeKind::Cancel(id) => match run_id(id) {
                    Ok(id) => s.cancel_run(&id).await,
                    Err(e) => Err(e),
                },
                ChangeKind::Replay { id, of } => match run_id(id) {
                    Ok(id) => self.replay_on(s, &c.job, of, id).await.map(|_| ()),
                    Err(e) => Err(e),
                },
                ChangeKind::Backfill(slots) => self.backfill_on(s, &c.job, slots).await,
            };
            if let Err(e) = r {
                tracing::warn!(job = %c.job, change = ?c.kind, error = %e, "a change from another replica failed");
            }
        }
        locked(&self.feed).advance();
    }
}

#[cfg(test)]
mod tests {
    use super::super::state::{FeedCursor, GAP_WAIT};
    use std::time::{Duration, Instant};

    #[test]
    fn the_feed_cursor_waits_for_a_gap_then_moves_past_it() {
        let mut f = FeedCursor {
            watermark: 10,
            ..FeedCursor::default()
        };
        f.saw(11);
        assert_eq!(f.watermark, 11);
        f.saw(13);
        assert_eq!(f.watermark, 11, "12 may still commit");
        f.saw(12);
        assert_eq!(f.watermark, 13);
        f.saw(15);
        f.gap_since = Some(Instant::now() - GAP_WAIT - Duration::from_secs(1));
        f.advance();
        assert_eq!(f.watermark, 15, "a gap older than GAP_WAIT is given up on");
        assert!(f.seen.is_empty());
    }
}
