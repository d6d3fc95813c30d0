//! The agent half of telejob: what executes a run on a machine (feature `agent`, on by default).
//!
//! * [`pipeline`] — the one pipeline every run goes through: fetch → unpack → run → publish;
//! * [`fetch`], [`unpack`], [`archive`], [`publish`] — its hardened steps (hostile tarballs,
//!   links in the output, content types);
//! * [`sandbox`] — what a run executes in: environment allowlist, identity, namespaces,
//!   cgroups, limits, the capped and masked log;
//! * [`inprocess`] — [`InProcessCompute`](inprocess::InProcessCompute), the reference compute
//!   backend that runs the pipeline as tasks of this process.
//!
//! The model half of the crate (jobs, schedules, runs, the traits, the scheduler) never imports
//! this module; without the feature, the crate builds without tar, the compressors and libc.

pub mod archive;
mod diagnose;
pub mod fetch;
pub mod inprocess;
pub mod pipeline;
pub mod publish;
pub mod sandbox;
pub mod unpack;
mod workspace;

pub use inprocess::InProcessCompute;
pub use pipeline::{FailureKind, Pipeline, RunOutcome, RunStores};
pub use sandbox::SandboxOptions;
