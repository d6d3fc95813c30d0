//! Runs: one execution of a job, and the request that starts it.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::job::{JobName, Visibility};
use crate::limits::ResourceLimits;

/// A run's unique id: a UUIDv7, so ids sort by creation time. Also usable as an EC2 ClientToken.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(String);

impl RunId {
    /// A fresh id.
    pub fn new() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
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

/// Everything a compute backend needs to execute one run. Serializable: EC2 instances receive it
/// as a JSON document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRequest {
    /// The run's id.
    pub run_id: RunId,
    /// The job.
    pub job: JobName,
    /// Where the code is (path, `file://`, `http(s)://`, `store:KEY`).
    pub code: String,
    /// The bash command line.
    pub command: String,
    /// The output directory, relative to the code root.
    pub output_dir: String,
    /// The timeout.
    #[serde(with = "duration_secs")]
    pub timeout: Duration,
    /// Extra environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The slot this run is for (`TELEJOB_SCHEDULED_FOR`).
    pub scheduled_for: DateTime<Utc>,
    /// Where the output goes.
    #[serde(default)]
    pub visibility: Visibility,
    /// Run the job but only list what would be published.
    #[serde(default)]
    pub dry_run: bool,
    /// The job's owner, for bookkeeping (e.g. instance tags); not used to run the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Resource limits (the job's, with the operator's defaults filled in).
    #[serde(default, skip_serializing_if = "ResourceLimits::is_empty")]
    pub limits: ResourceLimits,
    /// The job's secrets: environment variables whose values are masked in the log.
    #[serde(default, skip_serializing_if = "Secrets::is_empty")]
    pub secrets: Secrets,
    /// The machine type a remote backend launches (EC2: an instance type the operator allows);
    /// `None`: the backend's default. Local runs ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
}

/// Secret environment variables (name → value). Their `Debug` shows names only, so a request
/// that is logged never shows a value.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secrets(pub BTreeMap<String, String>);

impl Secrets {
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The values worth masking in a log: those of 4 bytes or more (shorter ones would mask
    /// ordinary text).
    pub fn maskable(&self) -> Vec<Vec<u8>> {
        self.0
            .values()
            .filter(|v| v.len() >= 4)
            .map(|v| v.as_bytes().to_vec())
            .collect()
    }
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

mod duration_secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
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

/// One published (or, in a dry run, publishable) file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedFile {
    /// Path relative to the output directory, `/`-separated.
    pub path: String,
    /// The object key it went to.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the content, hex.
    pub sha256: String,
}

/// A file of the output directory that was not published, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedFile {
    /// Path relative to the output directory (lossy if not UTF-8).
    pub path: String,
    /// Why it was skipped.
    pub reason: String,
}

/// Durations of the phases, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseDurations {
    /// Fetching the code.
    pub fetch_ms: u64,
    /// Unpacking it.
    pub unpack_ms: u64,
    /// Running the command.
    pub run_ms: u64,
    /// Publishing the output.
    pub publish_ms: u64,
}

/// The record of a complete publish, written last to `<job>/runs/<run-id>/manifest.json` next to
/// the data: a reader that finds it knows the data set of that run is complete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The job.
    pub job: JobName,
    /// The run.
    pub run_id: RunId,
    /// The slot the run was for.
    pub scheduled_for: DateTime<Utc>,
    /// The command line.
    pub command: String,
    /// SHA-256 of the code archive, hex.
    pub code_sha256: String,
    /// The prefix the files went under (`<job>/data/`).
    pub data_prefix: String,
    /// The files, sorted by path.
    pub files: Vec<PublishedFile>,
    /// Files left out, with the reason.
    pub skipped: Vec<SkippedFile>,
    /// Sum of the files' sizes.
    pub total_bytes: u64,
    /// Phase durations.
    pub durations: PhaseDurations,
    /// The command's exit code.
    pub exit_code: i32,
    /// When the manifest was written.
    pub published_at: DateTime<Utc>,
    /// SHA-256 of the run's spec snapshot ([`SpecSnapshot::sha256`]): two data sets with the
    /// same code and spec hashes and slot were made the same way.
    #[serde(default)]
    pub spec_sha256: Option<String>,
    /// The telejob version that made the data set.
    #[serde(default)]
    pub telejob_version: Option<String>,
}

/// The version of telejob (of this crate) that runs are recorded with.
pub const TELEJOB_VERSION: &str = env!("CARGO_PKG_VERSION");

/// What a run ran with, as the job stood when the run was made: enough to run it again the
/// same way. Environment values are kept; secrets never are (they are not part of it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecSnapshot {
    /// The bash command line.
    pub command: String,
    /// The output directory, relative to the workspace.
    pub output_dir: String,
    /// Environment variables set for the job (values included; never secrets).
    pub env: BTreeMap<String, String>,
    /// The timeout, in seconds.
    pub timeout_seconds: u64,
}

impl SpecSnapshot {
    /// The snapshot of `req`.
    pub fn of(req: &RunRequest) -> Self {
        Self {
            command: req.command.clone(),
            output_dir: req.output_dir.clone(),
            env: req.env.clone(),
            timeout_seconds: req.timeout.as_secs(),
        }
    }

    /// SHA-256 of its canonical JSON (fields in declaration order, variables by name), hex.
    pub fn sha256(&self) -> String {
        use sha2::Digest;
        let json = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(sha2::Sha256::digest(&json))
    }
}

/// Where and how a run was made, recorded privately with the run (run page, API).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    /// The spec as it ran.
    pub spec: SpecSnapshot,
    /// [`SpecSnapshot::sha256`] of it.
    pub spec_sha256: String,
    /// The telejob version that made the run.
    pub telejob_version: String,
    /// Where it ran (`host <name>`, or the backend's description of its machine), once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute: Option<String>,
}

impl Provenance {
    /// The provenance of a run of `req`, before it runs anywhere.
    pub fn of(req: &RunRequest) -> Self {
        let spec = SpecSnapshot::of(req);
        Self {
            spec_sha256: spec.sha256(),
            spec,
            telejob_version: TELEJOB_VERSION.to_string(),
            compute: None,
        }
    }
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
