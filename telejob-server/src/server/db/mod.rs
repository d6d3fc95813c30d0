//! Persistence (SQLite, or PostgreSQL for several replicas), by table group: users and tokens, jobs and code versions, runs (the
//! scheduler's persistence), notifications.

mod changes;
mod conn;
mod copy;
mod jobs;
mod lease;
mod migrations;
mod notifications;
mod rows;
mod runs;
pub mod secret_box;
mod secrets;
mod sessions;

#[cfg(test)]
mod tests;
mod users;
mod workers;

pub use changes::ChangeKind;
pub use conn::{Backend, Db, Fence, Location, ts};
pub use lease::LeaseRow;
pub use rows::{CodeVersion, JobRow, Tombstone, User};
pub use runs::LateMark;
pub use secret_box::SecretBox;
pub use secrets::SecretInfo;
pub use workers::{WorkerInsert, WorkerRow};
