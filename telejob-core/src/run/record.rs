//! What a run leaves behind: its published files, the manifest, and how it was made.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{RunId, RunRequest};
use crate::job::JobName;

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
