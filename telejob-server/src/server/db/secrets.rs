//! Job secrets: sealed values, their names and when they were set.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;
use telejob_core::Result;
use telejob_core::run::Secrets;

use super::conn::{Db, Exec, Fetch, db_err, parse_ts, ts};
use crate::server::db::secret_box::{SEAL_OVERHEAD, Sealed, SecretChanges, check_totals};

/// A secret as the API shows it: its name and when it was set, never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretInfo {
    /// The variable name.
    pub name: String,
    /// When its value was last set.
    #[serde(serialize_with = "ser_ts")]
    pub set_at: DateTime<Utc>,
}

fn ser_ts<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&ts(*t))
}

impl Db {
    /// Applies `changes` to job `job`'s secrets (sealed with the server's key) in one
    /// transaction.
    ///
    /// # Errors
    ///
    /// No secrets key, or a database failure.
    pub async fn change_secrets(&self, job: &str, changes: &SecretChanges) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let b = self.secret_box.as_ref().ok_or_else(|| {
            telejob_core::Error::config("secrets", "this server has no secrets key")
        })?;
        let mut sealed = Vec::new();
        for (name, value) in changes {
            let s = match value {
                Some(v) => Some(
                    b.seal(job, name, v)
                        .map_err(|e| telejob_core::Error::config("secrets", e.to_string()))?,
                ),
                None => None,
            };
            sealed.push((name, s));
        }
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        for (name, s) in sealed {
            match s {
                Some(Sealed { nonce, ciphertext }) => {
                    sqlx::query("INSERT INTO job_secrets (job, name, nonce, ciphertext, set_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (job, name) DO UPDATE SET nonce = excluded.nonce, ciphertext = excluded.ciphertext, set_at = excluded.set_at")
                        .bind(job)
                        .bind(name)
                        .bind(nonce)
                        .bind(ciphertext)
                        .bind(ts(Utc::now()))
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?;
                }
                None => {
                    sqlx::query("DELETE FROM job_secrets WHERE job = $1 AND name = $2")
                        .bind(job)
                        .bind(name)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?;
                }
            }
        }
        // What the job now holds, checked before anything is committed: the masker of every
        // run builds one automaton over these values.
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, COALESCE(SUM(LENGTH(ciphertext)), 0) AS bytes FROM job_secrets WHERE job = $1",
        )
        .bind(job)
        .fetch_one(&mut *tx)
        .await
        .map_err(db_err)?;
        let (n, sealed_bytes): (i64, i64) = (
            row.try_get("n").map_err(db_err)?,
            row.try_get("bytes").map_err(db_err)?,
        );
        let bytes = sealed_bytes.saturating_sub(n * i64::from(SEAL_OVERHEAD));
        check_totals(
            usize::try_from(n).unwrap_or(usize::MAX),
            usize::try_from(bytes).unwrap_or(usize::MAX),
        )?;
        tx.commit().await.map_err(db_err)
    }

    /// The names of job `job`'s secrets and when each was set.
    ///
    /// # Errors
    ///
    /// A database failure.
    pub async fn secret_names(&self, job: &str) -> Result<Vec<SecretInfo>> {
        let rows = sqlx::query("SELECT name, set_at FROM job_secrets WHERE job = $1 ORDER BY name")
            .bind(job)
            .all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(SecretInfo {
                    name: r.get(0),
                    set_at: parse_ts("set_at", &r.get::<String, _>(1))?,
                })
            })
            .collect()
    }

    /// Job `job`'s secrets, opened, for a run.
    ///
    /// # Errors
    ///
    /// No secrets key, a value that does not open, or a database failure.
    pub async fn open_secrets(&self, job: &str) -> Result<Secrets> {
        let rows = sqlx::query("SELECT name, nonce, ciphertext FROM job_secrets WHERE job = $1")
            .bind(job)
            .all(&self.pool)
            .await?;
        if rows.is_empty() {
            return Ok(Secrets::default());
        }
        let b = self.secret_box.as_ref().ok_or_else(|| {
            telejob_core::Error::config("secrets", "this server has no secrets key")
        })?;
        let mut out = Secrets::default();
        for r in rows {
            let name: String = r.get(0);
            let sealed = Sealed {
                nonce: r.get(1),
                ciphertext: r.get(2),
            };
            let v = b
                .open(job, &name, &sealed)
                .map_err(|e| telejob_core::Error::config("secrets", e.to_string()))?;
            out.0.insert(name, v);
        }
        Ok(out)
    }

    /// Checks that `key_id` is the key this database's secrets were sealed with, recording it
    /// when none was. On SQLite (one server) a new key is accepted while no secret is stored;
    /// on PostgreSQL every replica must have the first one's key, secrets or not.
    ///
    /// # Errors
    ///
    /// Another key sealed the stored secrets (one line, naming the fix); database errors.
    pub async fn check_secrets_key(&self, key_id: &str) -> Result<()> {
        let stored: Option<String> =
            sqlx::query_scalar("SELECT value FROM settings WHERE name = 'secrets_key_id'")
                .opt(&self.pool)
                .await?;
        if stored.as_deref() == Some(key_id) {
            return Ok(());
        }
        let sealed: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM job_secrets")
            .one(&self.pool)
            .await?;
        let shared = self.backend == super::Backend::Postgres;
        if stored.is_some() && (sealed > 0 || shared) {
            return Err(telejob_core::Error::config(
                "secrets",
                format!(
                    "this server's secrets key (id {key_id}) is not the database's (id {}, which sealed its {sealed} secret(s)): give every replica the same TELEJOB_SECRETS_KEY or secrets_key_file",
                    stored.unwrap_or_default()
                ),
            ));
        }
        sqlx::query(
            "INSERT INTO settings (name, value) VALUES ('secrets_key_id', $1) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        )
        .bind(key_id)
        .exec(&self.pool)
        .await?;
        Ok(())
    }
}
