//! The change feed: what any replica changed that the leader's scheduler must follow.

use chrono::{DateTime, Utc};
use sqlx::Row;
use telejob_core::Result;

use super::conn::{Db, Exec, Fetch, ts};

/// What changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeKind {
    /// The job's row changed (created, edited, paused, resumed, new code) or it was deleted:
    /// re-read it.
    Job,
    /// Run the job now, as this run id.
    RunNow(String),
    /// Cancel this run.
    Cancel(String),
    /// Replay run `of` as new run `id`.
    Replay {
        /// The new run's id.
        id: String,
        /// The run replayed.
        of: String,
    },
    /// Backfill these slots: each its slot, the attempt it becomes and its run's id.
    Backfill(Vec<(DateTime<Utc>, u32, String)>),
}

/// One entry of the feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Its position in the feed.
    pub seq: i64,
    /// The job.
    pub job: String,
    /// What to do.
    pub kind: ChangeKind,
    /// The replica that made it.
    pub origin: String,
    /// When.
    pub at: DateTime<Utc>,
}

impl Db {
    /// Appends a change to the feed.
    ///
    /// # Errors
    ///
    /// Database errors.
    pub async fn record_change(&self, job: &str, kind: &ChangeKind, origin: &str) -> Result<()> {
        let (k, run) = match kind {
            ChangeKind::Job => ("job", None),
            ChangeKind::RunNow(r) => ("run", Some(r.clone())),
            ChangeKind::Cancel(r) => ("cancel", Some(r.clone())),
            // Run ids hold no spaces.
            ChangeKind::Replay { id, of } => ("replay", Some(format!("{id} {of}"))),
            ChangeKind::Backfill(slots) => (
                "backfill",
                Some(serde_json::to_string(slots).unwrap_or_default()),
            ),
        };
        sqlx::query(
            "INSERT INTO job_changes (job, kind, run_id, origin, at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(job)
        .bind(k)
        .bind(run)
        .bind(origin)
        .bind(ts(Utc::now()))
        .exec(&self.pool)
        .await?;
        Ok(())
    }

    /// Changes after `seq`, oldest first, at most `limit`.
    ///
    /// # Errors
    ///
    /// Database errors.
    pub async fn changes_after(&self, seq: i64, limit: i64) -> Result<Vec<Change>> {
        let rows = sqlx::query(
            "SELECT seq, job, kind, run_id, origin, at FROM job_changes WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(seq)
        .bind(limit)
        .all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                let run: Option<String> = r.get(3);
                let kind = match (r.get::<String, _>(2).as_str(), run) {
                    ("run", Some(id)) => ChangeKind::RunNow(id),
                    ("cancel", Some(id)) => ChangeKind::Cancel(id),
                    ("replay", Some(ids)) => match ids.split_once(' ') {
                        Some((id, of)) => ChangeKind::Replay {
                            id: id.to_string(),
                            of: of.to_string(),
                        },
                        None => ChangeKind::Job,
                    },
                    ("backfill", Some(slots)) => serde_json::from_str(&slots)
                        .map(ChangeKind::Backfill)
                        .unwrap_or(ChangeKind::Job),
                    _ => ChangeKind::Job,
                };
                Ok(Change {
                    seq: r.get(0),
                    job: r.get(1),
                    kind,
                    origin: r.get(4),
                    at: super::conn::parse_ts("job_changes.at", &r.get::<String, _>(5))?,
                })
            })
            .collect()
    }

    /// The newest position of the feed (0 when empty).
    ///
    /// # Errors
    ///
    /// Database errors.
    pub async fn last_change(&self) -> Result<i64> {
        let n: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM job_changes")
            .one(&self.pool)
            .await?;
        Ok(n.unwrap_or(0))
    }

    /// Forgets changes older than `before`.
    ///
    /// # Errors
    ///
    /// Database errors.
    pub async fn prune_changes(&self, before: DateTime<Utc>) -> Result<u64> {
        let r = sqlx::query("DELETE FROM job_changes WHERE at < $1")
            .bind(ts(before))
            .exec(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }
}
