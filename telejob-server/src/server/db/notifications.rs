//! Notification events, each claimed once, with their delivery attempts.

use chrono::Utc;
use telejob_core::Result;

use super::conn::{Db, Exec, inserted, ts};

impl Db {
    /// Claims an event key; `false` if it was claimed before (each event is sent once).
    pub async fn claim_notification(&self, key: &str, job: &str, kind: &str) -> Result<bool> {
        let r = sqlx::query(
            "INSERT INTO notifications (key, job, kind, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(key)
        .bind(job)
        .bind(kind)
        .bind(ts(Utc::now()))
        .execute(&self.pool)
        .await;
        inserted(r)
    }

    /// Records a delivery attempt.
    pub async fn notification_attempt(&self, key: &str, error: Option<&str>) -> Result<()> {
        let sent = error.is_none().then(|| ts(Utc::now()));
        sqlx::query("UPDATE notifications SET attempts = attempts + 1, last_error = $1, sent_at = COALESCE($2, sent_at) WHERE key = $3")
            .bind(error)
            .bind(sent)
            .bind(key)
            .exec(&self.pool)
            .await?;
        Ok(())
    }
}
