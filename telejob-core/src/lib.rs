//! # telejob-core
//!
//! The heart of telejob, free of any backend, HTTP or SQL:
//!
//! * [`job`] — [`JobSpec`](job::JobSpec), the "Schedule a Job" form as data, and its validation;
//! * [`schedule`] — [`Schedule`](schedule::Schedule): next fire times, previews, DST rules;
//! * [`run`] — [`RunRequest`](run::RunRequest), [`Run`](run::Run) and its states, the manifest;
//! * [`store`] and [`compute`] — the object-safe [`Store`](store::Store) and
//!   [`Compute`](compute::Compute) traits that backends implement;
//! * [`pipeline`] — the one agent pipeline: fetch → unpack → run → publish;
//! * [`unpack`], [`sandbox`], [`publish`] — its hardened steps;
//! * [`inprocess`] and [`store::MemoryStore`] — reference backends;
//! * `objects` (feature `object-store`) — the `Store` adapter over object_store that the
//!   local and S3 backends share;
//! * `testing` (feature `testing`) — the conformance suite every backend runs.
//!
//! ```
//! use telejob_core::job::{JobSpec, ValidationLimits};
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
pub mod archive;
pub mod compute;
pub mod error;
pub mod fetch;
pub mod inprocess;
pub mod job;
pub mod limits;
#[cfg(feature = "object-store")]
pub mod objects;
pub mod pipeline;
pub mod policy;
pub mod publish;
pub mod run;
pub mod sandbox;
pub mod schedule;
pub mod scheduler;
pub mod store;
pub mod unpack;
pub mod worker;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use error::{Error, Result};
