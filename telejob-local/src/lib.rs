//! # telejob-local
//!
//! telejob's backends for one host:
//!
//! * [`LocalStore`] — a [`Store`](telejob_core::store::Store) on the filesystem (via
//!   `object_store`'s `LocalFileSystem`): atomic writes, streamed uploads;
//! * [`LocalCompute`] — a [`Compute`](telejob_core::compute::Compute) that runs the pipeline on
//!   this host, each run in a fresh workspace, in its own process group and (where the host
//!   allows) cgroup, as an unprivileged user when telejob runs as root.
//!
//! ```no_run
//! # async fn demo() -> telejob_core::Result<()> {
//! use std::sync::Arc;
//! use telejob_core::agent::pipeline::RunStores;
//! use telejob_local::{LocalCompute, LocalStore};
//!
//! let public = Arc::new(LocalStore::new("/srv/telejob/public")?);
//! let private = Arc::new(LocalStore::new("/srv/telejob/private")?);
//! let compute = LocalCompute::builder(RunStores { public, private }).with_max_concurrent(2).build();
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod compute;
mod store;

pub use compute::{LocalCompute, LocalComputeBuilder};
pub use store::LocalStore;
