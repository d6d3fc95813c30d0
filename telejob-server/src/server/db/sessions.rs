//! Dashboard sessions: the hash of the id, the user, the CSRF token, when last used.

use chrono::{DateTime, Utc};
use sqlx::Row;
use telejob_core::Result;

use super::conn::{Db, Exec, Fetch, parse_ts, ts};
use super::rows::User;

impl Db {
    /// Stores a new session, and drops those unused since `expired_before`.
    ///
    /// # Errors
    ///
    /// A database failure.
    pub async fn insert_session(
        &self,
        id_hash: &str,
        user: &str,
        csrf: &str,
        now: DateTime<Utc>,
        expired_before: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query("DELETE FROM sessions WHERE last_used < $1")
            .bind(ts(expired_before))
            .exec(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO sessions (id_hash, \"user\", csrf, last_used) VALUES ($1, $2, $3, $4)",
        )
        .bind(id_hash)
        .bind(user)
        .bind(csrf)
        .bind(ts(now))
        .exec(&self.pool)
        .await?;
        Ok(())
    }

    /// The session `id_hash`: its user (as the users table says now), CSRF token, last use.
    ///
    /// # Errors
    ///
    /// A database failure.
    pub async fn session(&self, id_hash: &str) -> Result<Option<(User, String, DateTime<Utc>)>> {
        let r = sqlx::query(
            "SELECT u.name, u.is_admin, s.csrf, s.last_used FROM sessions s JOIN users u ON u.name = s.\"user\" WHERE s.id_hash = $1",
        )
        .bind(id_hash)
        .opt(&self.pool)
        .await?;
        r.map(|r| {
            Ok((
                User {
                    name: r.get(0),
                    is_admin: (r.get::<i64, _>(1) != 0),
                },
                r.get(2),
                parse_ts("last_used", &r.get::<String, _>(3))?,
            ))
        })
        .transpose()
    }

    /// Records a use of session `id_hash`.
    ///
    /// # Errors
    ///
    /// A database failure.
    pub async fn touch_session(&self, id_hash: &str, now: DateTime<Utc>) -> Result<()> {
        sqlx::query("UPDATE sessions SET last_used = $1 WHERE id_hash = $2")
            .bind(ts(now))
            .bind(id_hash)
            .exec(&self.pool)
            .await?;
        Ok(())
    }

    /// Ends session `id_hash`.
    ///
    /// # Errors
    ///
    /// A database failure.
    pub async fn delete_session(&self, id_hash: &str) -> Result<()> {
        sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
            .bind(id_hash)
            .exec(&self.pool)
            .await?;
        Ok(())
    }
}
