//! Jobs and their code versions.

use chrono::{DateTime, Utc};
use sqlx::Row;
use telejob_core::Result;
use telejob_core::job::JobSpec;

use super::conn::{Db, Exec, Fetch, db_err, decode_err, inserted, parse_ts, ts};
use super::rows::{CodeVersion, JobRow, Tombstone};

impl Db {
    fn job_from_row(r: &sqlx::any::AnyRow) -> Result<JobRow> {
        let name: String = r.get("name");
        let spec: JobSpec = serde_json::from_str(r.get::<&str, _>("spec"))
            .map_err(|e| decode_err(&format!("job {name:?}"), e))?;
        Ok(JobRow {
            spec,
            owner: r.get("owner"),
            code_key: r.get("code_key"),
            paused: (r.get::<i64, _>("paused") != 0),
            expired: (r.get::<i64, _>("expired") != 0),
            cursor: parse_ts("jobs.cursor", r.get("cursor"))?,
            created_at: parse_ts("jobs.created_at", r.get("created_at"))?,
            updated_at: parse_ts("jobs.updated_at", r.get("updated_at"))?,
            deleting: r.get::<Option<String>, _>("deleting_since").is_some(),
            code_warnings: r
                .get::<Option<String>, _>("code_warnings")
                .and_then(|t| serde_json::from_str::<Vec<serde_json::Value>>(&t).ok())
                .unwrap_or_default()
                .into_iter()
                .filter_map(|w| {
                    Some(telejob_core::advice::Warning {
                        field: w["field"].as_str()?.to_string(),
                        message: w["message"].as_str()?.to_string(),
                    })
                })
                .collect(),
        })
    }

    /// Records what job `job`'s current code says about its command.
    pub async fn set_code_warnings(
        &self,
        job: &str,
        warnings: &[telejob_core::advice::Warning],
    ) -> Result<()> {
        let text =
            (!warnings.is_empty()).then(|| serde_json::to_string(warnings).unwrap_or_default());
        sqlx::query("UPDATE jobs SET code_warnings = $1 WHERE name = $2")
            .bind(text)
            .bind(job)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        self.cache.forget(job);
        Ok(())
    }

    /// Inserts a job; `Ok(false)` if the name is taken.
    pub async fn insert_job(
        &self,
        spec: &JobSpec,
        owner: &str,
        cursor: DateTime<Utc>,
    ) -> Result<bool> {
        let now = ts(Utc::now());
        let r = sqlx::query("INSERT INTO jobs (name, owner, spec, paused, expired, cursor, created_at, updated_at) VALUES ($1, $2, $3, 0, 0, $4, $5, $6)")
            .bind(&spec.name)
            .bind(owner)
            .bind(serde_json::to_string(spec).unwrap_or_default())
            .bind(ts(cursor))
            .bind(&now)
            .bind(&now)
            .execute(&self.pool)
            .await;
        self.cache.forget(&spec.name);
        inserted(r)
    }

    /// Replaces a job's spec and moves its cursor.
    pub async fn update_job_spec(&self, spec: &JobSpec, cursor: DateTime<Utc>) -> Result<()> {
        let q = sqlx::query(
            "UPDATE jobs SET spec = $1, cursor = $2, expired = 0, updated_at = $3 WHERE name = $4",
        )
        .bind(serde_json::to_string(spec).unwrap_or_default())
        .bind(ts(cursor))
        .bind(ts(Utc::now()))
        .bind(&spec.name);
        self.write_job_row(&spec.name, q).await
    }

    /// Sets the paused flag; resuming moves the cursor up to `now`, so that slots that passed
    /// while paused are not made up.
    pub async fn set_paused(&self, job: &str, paused: bool, now: DateTime<Utc>) -> Result<()> {
        let q = sqlx::query("UPDATE jobs SET paused = $1, updated_at = $2, cursor = CASE WHEN $1 = 0 AND cursor < $2 THEN $2 ELSE cursor END WHERE name = $3")
            .bind(i64::from(paused))
            .bind(ts(now))
            .bind(job);
        self.write_job_row(job, q).await
    }

    /// A job (from the read cache when it holds it).
    pub async fn job(&self, name: &str) -> Result<Option<JobRow>> {
        let seen = {
            let g = self.cache.lock();
            if let Some(j) = g.jobs.get(name) {
                return Ok(Some(j.clone()));
            }
            g.generation
        };
        let row = self.job_fresh(name).await?;
        if let Some(j) = &row {
            self.cache.keep(seen, |c| &mut c.jobs, name, j.clone());
        }
        Ok(row)
    }

    /// A job, read from the database (and not kept): for the reply to a write.
    pub async fn job_fresh(&self, name: &str) -> Result<Option<JobRow>> {
        let r = sqlx::query("SELECT * FROM jobs WHERE name = $1")
            .bind(name)
            .opt(&self.pool)
            .await?;
        r.as_ref().map(Self::job_from_row).transpose()
    }

    /// Every job, by name.
    pub async fn jobs(&self) -> Result<Vec<JobRow>> {
        let rows = sqlx::query("SELECT * FROM jobs ORDER BY name")
            .all(&self.pool)
            .await?;
        rows.iter().map(Self::job_from_row).collect()
    }

    /// Marks a job as being deleted: from now on its runs publish nothing more
    /// ([`Db::may_publish`]).
    pub async fn mark_deleting(&self, name: &str) -> Result<()> {
        let q = sqlx::query(
            "UPDATE jobs SET deleting_since = $1 WHERE name = $2 AND deleting_since IS NULL",
        )
        .bind(ts(Utc::now()))
        .bind(name);
        self.write_job_row(name, q).await
    }

    /// Whether run `run` of job `job` may still write published output: the run is recorded
    /// under that job, and the job is not being deleted.
    pub async fn may_publish(&self, job: &str, run: &str) -> Result<bool> {
        let r = sqlx::query(
            "SELECT 1 FROM runs JOIN jobs ON jobs.name = runs.job \
             WHERE runs.id = $1 AND runs.job = $2 AND jobs.deleting_since IS NULL",
        )
        .bind(run)
        .bind(job)
        .opt(&self.pool)
        .await?;
        Ok(r.is_some())
    }

    /// Deletes a job, its runs and code versions; with `tombstone_owner`, reserves the name to
    /// that user in the same transaction (until `free_after`, when given).
    pub async fn delete_job(
        &self,
        name: &str,
        tombstone_owner: Option<&str>,
        free_after: Option<DateTime<Utc>>,
    ) -> Result<()> {
        let r = async {
            let mut tx = self.pool.begin().await?;
            for q in [
                "DELETE FROM runs WHERE job = $1",
                "DELETE FROM code_versions WHERE job = $1",
                "DELETE FROM notifications WHERE job = $1",
                "DELETE FROM job_secrets WHERE job = $1",
                "DELETE FROM jobs WHERE name = $1",
            ] {
                sqlx::query(q).bind(name).execute(&mut *tx).await?;
            }
            if let Some(owner) = tombstone_owner {
                sqlx::query(
                    "INSERT INTO tombstones (name, owner, deleted_at, free_after) VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, deleted_at = excluded.deleted_at, free_after = excluded.free_after",
                )
                .bind(name)
                .bind(owner)
                .bind(ts(Utc::now()))
                .bind(free_after.map(ts))
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await
        }
        .await;
        self.cache.forget(name);
        r.map_err(db_err)
    }

    fn tombstone_from_row(r: &sqlx::any::AnyRow) -> Tombstone {
        Tombstone {
            name: r.get(0),
            owner: r.get(1),
            deleted_at: r.get(2),
            free_after: r.get(3),
        }
    }

    /// The tombstone of a deleted job whose published data was kept.
    pub async fn tombstone(&self, name: &str) -> Result<Option<Tombstone>> {
        let r = sqlx::query(
            "SELECT name, owner, deleted_at, free_after FROM tombstones WHERE name = $1",
        )
        .bind(name)
        .opt(&self.pool)
        .await?;
        Ok(r.as_ref().map(Self::tombstone_from_row))
    }

    /// Every tombstone, by name.
    pub async fn tombstones(&self) -> Result<Vec<Tombstone>> {
        let rows =
            sqlx::query("SELECT name, owner, deleted_at, free_after FROM tombstones ORDER BY name")
                .all(&self.pool)
                .await?;
        Ok(rows.iter().map(Self::tombstone_from_row).collect())
    }

    /// Removes a tombstone (the name is free again).
    pub async fn remove_tombstone(&self, name: &str) -> Result<()> {
        sqlx::query("DELETE FROM tombstones WHERE name = $1")
            .bind(name)
            .exec(&self.pool)
            .await?;
        Ok(())
    }

    /// Records a code version and makes it current.
    pub async fn add_code(
        &self,
        job: &str,
        sha: &str,
        key: &str,
        size: u64,
        by: &str,
    ) -> Result<()> {
        let r = async {
            let mut tx = self.pool.begin().await?;
            sqlx::query("INSERT INTO code_versions (job, sha256, key, size, uploaded_by, uploaded_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (job, sha256) DO NOTHING")
                .bind(job)
                .bind(sha)
                .bind(key)
                .bind(size as i64)
                .bind(by)
                .bind(ts(Utc::now()))
                .execute(&mut *tx)
                .await?;
            sqlx::query("UPDATE jobs SET code_key = $1, updated_at = $2 WHERE name = $3")
                .bind(key)
                .bind(ts(Utc::now()))
                .bind(job)
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        }
        .await;
        self.cache.forget(job);
        r.map_err(db_err)
    }

    /// Records the name of the file code version `sha256` of `job` was uploaded as, if it has
    /// none yet (the same bytes uploaded again keep their first name).
    pub async fn name_code_version(&self, job: &str, sha256: &str, file_name: &str) -> Result<()> {
        sqlx::query(
            "UPDATE code_versions SET file_name = $1 WHERE job = $2 AND sha256 = $3 AND file_name IS NULL",
        )
        .bind(file_name)
        .bind(job)
        .bind(sha256)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        self.cache.forget(job);
        Ok(())
    }

    /// The code version of `job` with this SHA-256, if it is still recorded.
    pub async fn code_version(&self, job: &str, sha256: &str) -> Result<Option<CodeVersion>> {
        Ok(self
            .code_versions(job)
            .await?
            .into_iter()
            .find(|v| v.sha256 == sha256))
    }

    /// A job's code versions, newest first.
    pub async fn code_versions(&self, job: &str) -> Result<Vec<CodeVersion>> {
        let seen = {
            let g = self.cache.lock();
            if let Some(v) = g.versions.get(job) {
                return Ok(v.clone());
            }
            g.generation
        };
        let rows = sqlx::query("SELECT sha256, key, size, uploaded_by, uploaded_at, file_name FROM code_versions WHERE job = $1 ORDER BY uploaded_at DESC")
            .bind(job)
            .all(&self.pool)
            .await?;
        let versions: Vec<CodeVersion> = rows
            .into_iter()
            .map(|r| CodeVersion {
                sha256: r.get(0),
                key: r.get(1),
                size: r.get(2),
                uploaded_by: r.get(3),
                uploaded_at: r.get(4),
                file_name: r.get(5),
            })
            .collect();
        self.cache
            .keep(seen, |c| &mut c.versions, job, versions.clone());
        Ok(versions)
    }
}
