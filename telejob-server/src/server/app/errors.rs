//! Why an operation on a job or a worker did not happen, shared by the API and the dashboard.

/// Why a job operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// No such job, or one the caller may not see.
    #[error("no such job")]
    NotFound,
    /// The caller may see the job but not do this to it.
    #[error("only the job's owner and maintainers may do this")]
    Forbidden,
    /// The name is taken.
    #[error("a job named {0:?} exists already; choose another name")]
    NameTaken(String),
    /// The name belonged to a deleted job whose published data was kept.
    #[error(
        "{0:?} belonged to a deleted job whose published data was kept; choose another name (an admin can release it)"
    )]
    NameReserved(String),
    /// The name belonged to a deleted job whose runs' credentials may still write under it.
    #[error(
        "{name:?} belonged to a deleted job whose runs hold store credentials valid until {until}; the name is free after that"
    )]
    NameHeld {
        /// The name.
        name: String,
        /// When the last of those credentials expires.
        until: String,
    },
    /// The job is being deleted: its runs are stopping and it takes no more changes.
    #[error("job {0:?} is being deleted; its runs are still stopping: delete it again in a minute")]
    Deleting(String),
    /// The upload is larger than the server accepts.
    #[error("the code is larger than {0} bytes; keep data out of the code tarball")]
    TooLarge(u64),
    /// The upload did not arrive whole.
    #[error("upload interrupted: {0}")]
    Interrupted(String),
    /// The owner holds as much as `[quotas]` allows (`field`: what to change).
    #[error("{field}: {message}")]
    OverQuota {
        /// The request field that asks for too much.
        field: &'static str,
        /// What is held and the cap.
        message: String,
    },
    /// Too many calls of this kind came within a minute.
    #[error("{message}")]
    RateLimited {
        /// Seconds until the next call is allowed.
        retry_after: u64,
        /// The rate and when to try again.
        message: String,
    },
    /// A field is invalid (`InvalidJob`/`InvalidJobs`, with the fields to fix).
    #[error(transparent)]
    Invalid(telejob_core::Error),
    /// The database, a store or the scheduler failed.
    #[error(transparent)]
    Failed(telejob_core::Error),
}

impl From<telejob_core::Error> for JobError {
    fn from(e: telejob_core::Error) -> Self {
        match e {
            telejob_core::Error::InvalidJob { .. } | telejob_core::Error::InvalidJobs(_) => {
                Self::Invalid(e)
            }
            e => Self::Failed(e),
        }
    }
}

impl From<std::io::Error> for JobError {
    fn from(e: std::io::Error) -> Self {
        Self::Failed(telejob_core::Error::io("code upload", e))
    }
}
