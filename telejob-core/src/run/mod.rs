//! Runs: one execution of a job, and the request that starts it.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::job::JobName;

mod record;
mod request;

pub use record::{
    Manifest, PhaseDurations, Provenance, PublishedFile, SkippedFile, SpecSnapshot, TELEJOB_VERSION,
};
pub use request::{RunRequest, Secrets};

/// A run's unique id: a UUIDv7, so ids sort by creation time. Also usable as an EC2 ClientToken.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(String);

impl RunId {
    /// A fresh id.
    pub fn new() -> Self {
        Self(uuid_v7().to_string())
    }

    /// Wraps an existing id. Returns `None` unless it is 1–64 ASCII letters, digits and dashes, so
    /// it is safe in object keys, file names and tags.
    pub fn parse(s: &str) -> Option<Self> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        ok.then(|| Self(s.to_string()))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for RunId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A fresh UUID version 7 (RFC 9562): the Unix time in milliseconds, then a 12-bit counter
/// that keeps the ids this process makes in one millisecond in order ("method 1"), then 62
/// random bits. The randomness comes from the standard library's OS-seeded hasher keys, so the
/// model half needs no random-number crate (and no libc).
pub(crate) fn uuid_v7() -> uuid::Uuid {
    use std::hash::{BuildHasher, RandomState};
    use std::sync::Mutex;
    static LAST: Mutex<(u64, u16)> = Mutex::new((0, 0));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let (millis, counter) = {
        let mut last = LAST
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // The clock going back, or a full counter, borrows from the next millisecond.
        *last = if now > last.0 {
            (now, 0)
        } else if last.1 < 0x0fff {
            (last.0, last.1 + 1)
        } else {
            (last.0 + 1, 0)
        };
        *last
    };
    let random = RandomState::new().hash_one((now, counter, std::process::id()));
    let mut bytes = [0u8; 10];
    bytes[..2].copy_from_slice(&counter.to_be_bytes());
    bytes[2..].copy_from_slice(&random.to_be_bytes());
    uuid::Builder::from_unix_timestamp_millis(millis, &bytes).into_uuid()
}

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Recorded, not started.
    Pending,
    /// Fetching and unpacking the code.
    Fetching,
    /// The command runs.
    Running,
    /// Uploading the output.
    Publishing,
    /// The command exited 0 and everything was published.
    Succeeded,
    /// The command exited non-zero, or fetch, unpack or publish failed.
    Failed,
    /// The timeout expired; everything the run started was killed.
    TimedOut,
    /// Cancelled by a user or a shutdown.
    Cancelled,
    /// The host went away while the run was in flight (found after a restart).
    Interrupted,
    /// The slot passed while the scheduler could not run it.
    Missed,
}

impl RunState {
    /// Whether the run is over.
    pub fn is_terminal(self) -> bool {
        !matches!(
            self,
            Self::Pending | Self::Fetching | Self::Running | Self::Publishing
        )
    }

    /// The lowercase name used in JSON and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Fetching => "fetching",
            Self::Running => "running",
            Self::Publishing => "publishing",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::TimedOut => "timed_out",
            Self::Cancelled => "cancelled",
            Self::Interrupted => "interrupted",
            Self::Missed => "missed",
        }
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When each phase of a run started and ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseTimes {
    /// The run was recorded.
    pub created_at: Option<DateTime<Utc>>,
    /// Fetch and unpack began.
    pub fetch_started: Option<DateTime<Utc>>,
    /// The command started.
    pub run_started: Option<DateTime<Utc>>,
    /// The command ended.
    pub run_ended: Option<DateTime<Utc>>,
    /// Publishing began.
    pub publish_started: Option<DateTime<Utc>>,
    /// The run reached its final state.
    pub finished: Option<DateTime<Utc>>,
}

/// What a run did: its state, timings and results. Stored privately as
/// `<job>/runs/<run-id>/status.json` and updated at every phase change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// The run's id.
    pub id: RunId,
    /// The job.
    pub job: JobName,
    /// The slot it is for.
    pub scheduled_for: DateTime<Utc>,
    /// Where it stands.
    pub state: RunState,
    /// Phase timestamps.
    pub phases: PhaseTimes,
    /// The command's exit code, once it exited on its own.
    pub exit_code: Option<i32>,
    /// The signal that ended the command, if one did.
    pub signal: Option<i32>,
    /// What went wrong, in one line, for failed runs.
    pub error: Option<String>,
    /// SHA-256 of the code archive.
    pub code_sha256: Option<String>,
    /// Private key of the run's log.
    pub log_key: Option<String>,
    /// Whether the log hit its size cap.
    pub log_truncated: bool,
    /// The files published, or in a dry run the files that would be.
    #[serde(default)]
    pub published: Vec<PublishedFile>,
    /// Files of the output directory that were not published, and why.
    #[serde(default)]
    pub skipped: Vec<SkippedFile>,
    /// Key of the manifest, once written.
    pub manifest_key: Option<String>,
    /// Whether this was a dry run.
    #[serde(default)]
    pub dry_run: bool,
    /// What it ran with and where (absent in records made before telejob recorded it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Provenance>,
    /// The run this one replays, for a replay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_of: Option<RunId>,
}

impl Run {
    /// A pending run for `req`.
    pub fn pending(req: &RunRequest) -> Self {
        Self {
            id: req.run_id.clone(),
            job: req.job.clone(),
            scheduled_for: req.scheduled_for,
            state: RunState::Pending,
            phases: PhaseTimes {
                created_at: Some(Utc::now()),
                ..PhaseTimes::default()
            },
            exit_code: None,
            signal: None,
            error: None,
            code_sha256: None,
            log_key: None,
            log_truncated: false,
            published: Vec::new(),
            skipped: Vec::new(),
            manifest_key: None,
            dry_run: req.dry_run,
            provenance: Some(Provenance::of(req)),
            replay_of: None,
        }
    }

    /// Total bytes published.
    pub fn published_bytes(&self) -> u64 {
        self.published.iter().map(|f| f.size).sum()
    }
}

/// Key layout shared by every store and reader.
pub mod keys {
    use super::RunId;
    use crate::job::JobName;

    /// `<job>/data/` — where a job's output goes.
    pub fn data_prefix(job: &JobName) -> String {
        format!("{job}/data/")
    }
    /// `<job>/runs/<run>/` — a run's records.
    pub fn run_prefix(job: &JobName, run: &RunId) -> String {
        format!("{job}/runs/{run}/")
    }
    /// The manifest, next to the data.
    pub fn manifest(job: &JobName, run: &RunId) -> String {
        format!("{}manifest.json", run_prefix(job, run))
    }
    /// The run's status (private).
    pub fn status(job: &JobName, run: &RunId) -> String {
        format!("{}status.json", run_prefix(job, run))
    }
    /// The run's log (private).
    pub fn log(job: &JobName, run: &RunId) -> String {
        format!("{}log.txt", run_prefix(job, run))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_version_7_unique_and_in_creation_order() {
        let ids: Vec<uuid::Uuid> = (0..20_000).map(|_| uuid_v7()).collect();
        assert!(ids.iter().all(|u| u.get_version_num() == 7));
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "ids made one after the other sort in that order"
        );
        let first = ids[0].get_timestamp().expect("v7 has a time").to_unix();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        assert!(now.abs_diff(first.0) <= 2, "the time part is now");
        assert!(RunId::parse(RunId::new().as_str()).is_some());
    }
}
