//! What the tables hold, as the rest of the server sees it.

use chrono::{DateTime, Utc};
use telejob_core::job::JobSpec;
use telejob_core::scheduler::persist::JobState;

/// A user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The name.
    pub name: String,
    /// Admins may do anything and create tokens for others.
    pub is_admin: bool,
}

/// A job row.
#[derive(Debug, Clone)]
pub struct JobRow {
    /// The spec.
    pub spec: JobSpec,
    /// The owner.
    pub owner: String,
    /// The current code's private key.
    pub code_key: Option<String>,
    /// Paused.
    pub paused: bool,
    /// Expired.
    pub expired: bool,
    /// Last slot handled.
    pub cursor: DateTime<Utc>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Updated.
    pub updated_at: DateTime<Utc>,
    /// Being deleted: its runs are stopping and publish nothing more.
    pub deleting: bool,
    /// What its current code says about its command (a script missing from it, or not
    /// executable): its runs will fail.
    pub code_warnings: Vec<telejob_core::advice::Warning>,
}

impl JobRow {
    /// Whether `user` may edit, run, pause, delete it and read its logs.
    pub fn can_manage(&self, user: &User) -> bool {
        user.is_admin || self.owner == user.name || self.spec.maintainers.contains(&user.name)
    }

    /// Whether `user` may see it at all: public jobs are visible to every user.
    pub fn can_see(&self, user: &User) -> bool {
        self.spec.output_visibility == telejob_core::job::Visibility::Public
            || self.can_manage(user)
    }

    /// As the scheduler sees it.
    pub fn state(&self, last_failed: bool) -> JobState {
        JobState {
            spec: self.spec.clone(),
            owner: self.owner.clone(),
            code: self.code_key.as_ref().map(|k| format!("store:{k}")),
            paused: self.paused,
            expired: self.expired,
            cursor: self.cursor,
            last_failed,
        }
    }
}

/// A deleted job whose name is reserved to its owner: its published data was kept, or its runs'
/// credentials may still write under the name (until `free_after`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Tombstone {
    /// The job's name.
    pub name: String,
    /// Who owned it (and may create it again).
    pub owner: String,
    /// When it was deleted.
    pub deleted_at: String,
    /// For a purged job whose runs' credentials outlive them: when the name is free again
    /// (`None`: its published data was kept, and the name is its owner's until released).
    pub free_after: Option<String>,
}

/// A code version.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CodeVersion {
    /// SHA-256 of the tarball.
    pub sha256: String,
    /// Private-store key.
    pub key: String,
    /// Bytes.
    pub size: i64,
    /// Who uploaded it.
    pub uploaded_by: String,
    /// When.
    pub uploaded_at: String,
    /// The name of the file it was uploaded as, when one was given.
    pub file_name: Option<String>,
}
