//! # telejob-core
//!
//! The heart of telejob, free of any backend, HTTP or SQL. Two halves:
//!
//! **The model** (always built):
//!
//! * [`job`] — [`JobSpec`], the "Schedule a Job" form as data, and its validation;
//! * [`schedule`] — [`Schedule`]: next fire times, previews, DST rules;
//! * [`run`] — [`RunRequest`], [`Run`] and its states, the manifest;
//! * [`store`] and [`compute`] — the object-safe [`Store`] and [`Compute`] traits that backends
//!   implement, with [`Reaper`] and [`WorkerBackend`] for what only some backends do;
//! * [`scheduler`] — the [`Scheduler`] engine over the [`SchedulerStore`] persistence trait;
//! * [`limits`], [`policy`], [`advice`], [`worker`] — resource limits, per-job policies,
//!   save-time warnings, analysis workers.
//!
//! **The agent** ([`agent`], feature `agent`, on by default): the pipeline that executes a run
//! (fetch → unpack → run → publish), its sandbox, and [`InProcessCompute`], the reference
//! backend. Without the feature the crate builds without tar, the compressors and libc: enough
//! to validate jobs and schedule them against a backend of your own.
//!
//! Features `object-store` (the [`Store`] adapter over object_store that the local and S3
//! backends share) and `testing` (the conformance suite every backend runs) are off by default.
//!
//! ## Embedding
//!
//! A scheduler that runs a job in this process and publishes to memory
//! (`examples/embed/embed_scheduler.rs`, `cargo run -p telejob-examples --example
//! embed_scheduler`):
//!
//! ```no_run
#![doc = include_str!("../../examples/embed/embed_scheduler.rs")]
//! ```
//!
//! Validating a spec needs only the model half:
//!
//! ```
//! use telejob_core::{JobSpec, ValidationLimits};
//! use chrono::{TimeZone, Utc};
//!
//! let mut spec = JobSpec::new("slowsql");
//! spec.timeout_minutes = 175;
//! let job = spec.validate(&ValidationLimits::default()).unwrap();
//! let from = Utc.with_ymd_and_hms(2014, 3, 8, 13, 0, 0).unwrap();
//! assert_eq!(job.schedule().describe(), "daily at 12:00 UTC");
//! assert_eq!(job.schedule().next_after(from).unwrap().to_rfc3339(), "2014-03-09T12:00:00+00:00");
//! ```
#![warn(missing_docs)]

pub mod advice;
#[cfg(feature = "agent")]
pub mod agent;
pub mod compute;
pub mod error;
pub mod job;
pub mod limits;
#[cfg(feature = "object-store")]
pub mod objects;
pub mod policy;
pub mod run;
pub mod schedule;
pub mod scheduler;
pub mod store;
pub mod worker;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

/// This test binary is also the init of the machines its tests start (see
/// [`agent::sandbox::run_if_init`]): before libtest's `main`, it becomes one when asked to.
#[cfg(all(test, feature = "agent"))]
#[ctor::ctor]
fn test_binary_as_init() {
    agent::sandbox::run_if_init();
}

#[cfg(feature = "agent")]
pub use agent::{InProcessCompute, Pipeline, RunStores, SandboxOptions};
pub use compute::{Compute, ComputeCapabilities, LaunchOptions, Reaper};
pub use error::{Error, Result};
pub use job::{JobName, JobSpec, ValidJob, ValidationLimits};
pub use run::{Run, RunId, RunRequest, RunState};
pub use schedule::Schedule;
pub use scheduler::persist::{JobState, MemorySchedulerStore, SchedulerStore};
pub use scheduler::{Scheduler, SchedulerParts};
pub use store::{MemoryStore, Store, StoreExt};
pub use worker::WorkerBackend;
