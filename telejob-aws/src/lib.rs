//! # telejob-aws
//!
//! telejob's AWS backends, built on the official SDKs and object_store:
//!
//! * [`S3Store`] — a [`Store`](telejob_core::store::Store) in any S3-compatible bucket (AWS,
//!   MinIO, a local test endpoint), with concurrent, retried requests and multipart uploads for
//!   large objects.
//! * [`Ec2Compute`] — a [`Compute`](telejob_core::compute::Compute) that starts one fresh EC2
//!   instance per run. The instance fetches the `telejob` binary and the run request through
//!   pre-signed URLs and runs `telejob agent` — the same pipeline as a local run — then shuts
//!   down (and so terminates). Launches are idempotent, every instance is tagged with its run,
//!   deadlines are enforced from outside too, and a reaper ends instances nobody needs.
//!
//! Credentials always come from the standard AWS chain; see [`AwsOptions`].
//!
//! [`Ec2Compute`] and [`Ec2Workers`] are behind the default `ec2` feature: the EC2 SDK is by far
//! the largest crate telejob builds (nine minutes of a first build on two cores), and S3 alone
//! does not need it.
//!
//! With the `testing` feature, [`testing::Moto`] starts a local AWS endpoint for tests.
#![warn(missing_docs)]

mod config;
mod credentials;
#[cfg(feature = "ec2")]
pub mod ec2;
mod s3;
#[cfg(feature = "testing")]
pub mod testing;

pub use config::AwsOptions;
pub use credentials::RunCredentials;
#[cfg(feature = "ec2")]
pub use ec2::{Ec2Compute, Ec2ComputeBuilder, Ec2Settings, Ec2Workers, worker_user_data};
pub use s3::{DEFAULT_MAX_CONCURRENCY, DEFAULT_PART_SIZE, S3Store, S3StoreBuilder};
