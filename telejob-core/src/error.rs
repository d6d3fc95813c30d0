//! The one error type of telejob.

use std::path::PathBuf;

/// Everything that can go wrong in telejob, with enough context to tell the user what to do.
///
/// Backends map their private errors into these variants. [`Error::is_retryable`] tells whether
/// trying the same operation again may succeed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A job field is invalid. `reason` says what to do about it.
    #[error("{field}: {reason}")]
    InvalidJob {
        /// The field name as users see it (`name`, `schedule.day_of_week`, …).
        field: String,
        /// What is wrong and how to fix it.
        reason: String,
    },

    /// A setting of telejob itself (config file, environment variable, backend builder, store
    /// URL) is invalid. `reason` says what to do about it.
    #[error("{setting}: {reason}")]
    Config {
        /// The setting as the operator wrote it (`TELEJOB_CGROUP`, `ec2.ami`, a store URL, …).
        setting: String,
        /// What is wrong and how to fix it.
        reason: String,
    },

    /// Several job fields are invalid; every problem is listed.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    InvalidJobs(Vec<Error>),

    /// The code could not be fetched (missing file, HTTP error, unknown URL scheme).
    #[error("code {source_name}: {reason}")]
    Fetch {
        /// The code location as given.
        source_name: String,
        /// What went wrong.
        reason: String,
        /// Whether fetching again may succeed (network errors, 5xx).
        retryable: bool,
        /// The underlying error, when there is one.
        #[source]
        source: Option<BoxError>,
    },

    /// The code archive is not one telejob can read.
    #[error("code archive: {0}")]
    UnsupportedArchive(String),

    /// The archive holds an entry that would break the workspace invariant or a limit.
    #[error("unsafe archive entry {entry:?}: {reason}")]
    UnsafeArchive {
        /// The entry path as it stands in the archive.
        entry: String,
        /// The rule the entry breaks.
        reason: String,
    },

    /// The job's command could not be started at all.
    #[error("cannot start the command: {what}: {source}")]
    Spawn {
        /// The step that failed (`bash`, `the output pipe`, `the cgroup`, …).
        what: String,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },

    /// The job's command failed (non-zero exit, killed by a signal).
    #[error("{0}")]
    JobFailed(String),

    /// The run exceeded its timeout and was killed.
    #[error("timed out after {0:?}; every process of the run was killed")]
    Timeout(std::time::Duration),

    /// The run was cancelled.
    #[error("cancelled")]
    Cancelled,

    /// The output directory is missing or not usable.
    #[error("output directory {path:?}: {reason}")]
    OutputDir {
        /// The output directory as configured (relative to the code root).
        path: String,
        /// What is wrong with it.
        reason: String,
    },

    /// Publishing the output failed; the run's manifest was not written, so readers know the set is
    /// incomplete.
    #[error("publish failed: {reason}")]
    Publish {
        /// What could not be published, and why.
        reason: String,
        /// The underlying error, when there is one.
        #[source]
        source: Option<BoxError>,
    },

    /// A store operation failed.
    #[error("store {op} {key:?}: {reason}")]
    Store {
        /// The operation (`put`, `get`, `list`, …).
        op: &'static str,
        /// The object key.
        key: String,
        /// What went wrong.
        reason: String,
        /// Whether the operation may succeed when tried again.
        retryable: bool,
        /// The underlying error, when there is one.
        #[source]
        source: Option<BoxError>,
    },

    /// An object that was asked for does not exist.
    #[error("no object at {0:?}")]
    NotFound(String),

    /// A compute backend operation failed.
    #[error("compute {op}: {reason}")]
    Compute {
        /// The operation (`launch`, `cancel`, …).
        op: &'static str,
        /// What went wrong.
        reason: String,
        /// Whether the operation may succeed when tried again.
        retryable: bool,
        /// The underlying error, when there is one.
        #[source]
        source: Option<BoxError>,
    },

    /// The persistent state behind the scheduler (the server's database) failed, or holds a
    /// record this version cannot read.
    #[error("database {op}: {source}")]
    Persistence {
        /// The operation (`open`, `migrate`, `query`, `decode`, …).
        op: &'static str,
        /// The underlying error.
        #[source]
        source: BoxError,
        /// Whether the operation may succeed when tried again (a busy or unreachable database).
        retryable: bool,
    },

    /// A task telejob started on another thread panicked or was cancelled.
    #[error("{what}: the task did not finish: {source}")]
    Task {
        /// What the task was doing.
        what: &'static str,
        /// Why it did not finish.
        #[source]
        source: tokio::task::JoinError,
    },

    /// An I/O error on a local path.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Builds an [`Error::InvalidJob`].
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidJob {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Builds an [`Error::Config`].
    pub fn config(setting: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Config {
            setting: setting.into(),
            reason: reason.into(),
        }
    }

    /// Builds an [`Error::UnsafeArchive`].
    pub fn unsafe_entry(entry: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::UnsafeArchive {
            entry: entry.into(),
            reason: reason.into(),
        }
    }

    /// Builds an [`Error::Spawn`].
    pub fn spawn(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Spawn {
            what: what.into(),
            source,
        }
    }

    /// Builds an [`Error::Publish`] with no underlying error (a limit, a rule).
    pub fn publish(reason: impl Into<String>) -> Self {
        Self::Publish {
            reason: reason.into(),
            source: None,
        }
    }

    /// Builds an [`Error::Publish`] caused by `source`.
    pub fn publish_with(reason: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Publish {
            reason: reason.into(),
            source: Some(source.into()),
        }
    }

    /// Builds an [`Error::Persistence`].
    pub fn persistence(op: &'static str, source: impl Into<BoxError>, retryable: bool) -> Self {
        Self::Persistence {
            op,
            source: source.into(),
            retryable,
        }
    }

    /// The error of a scheduler's write refused because its process lost the right to
    /// schedule (another process took the lease over): see [`Error::is_fenced`].
    pub fn fenced(source: impl Into<BoxError>) -> Self {
        Self::persistence("fence", source, false)
    }

    /// Whether this is a write refused by the fence ([`Error::fenced`]): trying it again, in
    /// any form, is refused too.
    pub fn is_fenced(&self) -> bool {
        matches!(self, Self::Persistence { op: "fence", .. })
    }

    /// Builds an [`Error::Task`].
    pub fn task(what: &'static str, source: tokio::task::JoinError) -> Self {
        Self::Task { what, source }
    }

    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    /// Whether trying the same operation again may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Fetch { retryable, .. }
            | Self::Store { retryable, .. }
            | Self::Compute { retryable, .. }
            | Self::Persistence { retryable, .. } => *retryable,
            Self::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::Interrupted | std::io::ErrorKind::TimedOut
            ),
            _ => false,
        }
    }

    /// Whether the error is the user's input (job spec, code, archive) rather than the run or the
    /// infrastructure. The CLI exits 2 for these.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            Self::InvalidJob { .. }
                | Self::InvalidJobs(_)
                | Self::Config { .. }
                | Self::Fetch {
                    retryable: false,
                    ..
                }
                | Self::UnsupportedArchive(_)
                | Self::UnsafeArchive { .. }
        )
    }

    /// The field errors of a validation failure, flattened.
    pub fn field_errors(&self) -> Vec<(&str, &str)> {
        match self {
            Self::InvalidJob { field, reason } => vec![(field.as_str(), reason.as_str())],
            Self::InvalidJobs(all) => all.iter().flat_map(Self::field_errors).collect(),
            _ => Vec::new(),
        }
    }
}

/// A boxed error, the `source` of variants whose cause comes from a backend.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// telejob's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
