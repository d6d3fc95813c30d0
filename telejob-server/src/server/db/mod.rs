//! SQLite persistence, by table group: users and tokens, jobs and code versions, runs (the
//! scheduler's persistence), notifications.

mod conn;
mod jobs;
mod notifications;
mod rows;
mod runs;
mod secrets;
mod sessions;

#[cfg(test)]
mod tests;
mod users;

pub use conn::{Db, ts};
pub use rows::{CodeVersion, JobRow, Tombstone, User};
