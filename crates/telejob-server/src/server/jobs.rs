//! Job operations shared by the API, the dashboard and the example seeding, so that each does
//! the same thing to the database, the stores and the scheduler.

use bytes::Bytes;
use sha2::{Digest, Sha256};
use telejob_core::job::JobName;
use telejob_core::store::PutOptions;

use super::api::AppState;

/// The private-store key of a job's code version.
pub fn code_key(job: &str, sha256: &str) -> String {
    format!("{job}/code/{sha256}.tar")
}

/// Stores a code version (held in memory) and makes it the job's current one.
///
/// # Errors
///
/// Store or database errors.
pub async fn store_code(
    s: &AppState,
    job: &str,
    code: &Bytes,
    by: &str,
) -> telejob_core::Result<()> {
    let sha = hex::encode(Sha256::digest(code));
    let key = code_key(job, &sha);
    s.stores
        .private
        .put(&key, code.clone(), PutOptions::default())
        .await?;
    s.db.add_code(job, &sha, &key, code.len() as u64, by).await
}

/// Pauses or resumes a job, in the database and the scheduler.
///
/// # Errors
///
/// An invalid name, database or scheduler errors.
pub async fn set_paused(s: &AppState, job: &str, paused: bool) -> telejob_core::Result<()> {
    s.db.set_paused(job, paused).await?;
    s.scheduler
        .set_paused(&JobName::new(job.to_string())?, paused)
        .await
}

/// Deletes a job: cancels its runs in flight, disarms it, removes its rows.
///
/// # Errors
///
/// An invalid name, compute or database errors.
pub async fn delete(s: &AppState, job: &str) -> telejob_core::Result<()> {
    let name = JobName::new(job.to_string())?;
    for r in s.scheduler.active_runs().remove(&name).unwrap_or_default() {
        s.scheduler.cancel_run(&r).await?;
    }
    s.scheduler.remove(&name);
    s.db.delete_job(job).await
}
