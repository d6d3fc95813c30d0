//! # telejob-aws
//!
//! telejob's AWS backends — `Ec2Compute` (one instance per run, self-terminating, tagged,
//! idempotent launch, reaper) and `S3Store` (any S3-compatible endpoint) — are not implemented
//! yet. This crate holds their place in the workspace so the binary's wiring and the crate
//! boundaries stay as designed; it exports nothing.
#![warn(missing_docs)]
