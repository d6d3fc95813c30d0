//! The publish fence of local runs: before each batch of published files and before the
//! manifest, a run asks the database whether it may still write; a job being deleted, or a run
//! no longer recorded, writes nothing more.

use async_trait::async_trait;
use telejob_core::job::JobName;
use telejob_core::run::RunId;
use telejob_core::store::PublishFence;

use crate::server::db::Db;

/// Answers from the database every replica shares.
#[derive(Debug, Clone)]
pub struct DbFence {
    db: Db,
}

impl DbFence {
    /// A fence over `db`.
    pub fn new(db: Db) -> Self {
        Self { db }
    }
}

#[async_trait]
impl PublishFence for DbFence {
    async fn check(&self, job: &JobName, run: &RunId) -> telejob_core::Result<()> {
        if self.db.may_publish(job.as_str(), run.as_str()).await? {
            Ok(())
        } else {
            Err(telejob_core::Error::publish(format!(
                "job {job} is being deleted (or run {run} is no longer recorded): nothing more is published"
            )))
        }
    }
}
