//! The backend conformance suite: named checks of the [`Store`](crate::store::Store),
//! [`Compute`](crate::compute::Compute) and [`SchedulerStore`](crate::SchedulerStore) contracts
//! ([`STORE_CHECKS`], [`COMPUTE_CHECKS`], [`SCHEDULER_STORE_CHECKS`]), and runners that select
//! them by the backend's declared capabilities. Every backend's tests run them all —
//! `MemoryStore`, `InProcessCompute` and `MemorySchedulerStore` here, `LocalStore` and
//! `LocalCompute`, `S3Store` against a local AWS endpoint, `Ec2Compute` through the end-to-end
//! harness that boots its instances' user data, and the server's database on SQLite and
//! PostgreSQL.
//!
//! Each check panics with a message that starts with its name and says which part of the
//! contract it found broken. The checks that need a tarball (the compute checks, [`tarball`])
//! need the `agent` feature too.

#[cfg(feature = "agent")]
mod compute;
mod fixtures;
mod scheduler_store;
mod store;

#[cfg(feature = "agent")]
pub use compute::*;
pub use fixtures::*;
pub use scheduler_store::*;
pub use store::*;
