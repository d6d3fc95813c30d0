//! SQLite persistence: users and tokens, jobs, code versions, runs, notifications.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use telejob_core::job::{JobName, JobSpec};
use telejob_core::run::{Run, RunState};
use telejob_core::scheduler::persist::{JobState, RunRow, SchedulerStore, Trigger};
use telejob_core::{Error, Result};

/// Fixed-width RFC 3339, so text order is time order.
pub fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn parse_ts(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

fn db_err(e: sqlx::Error) -> Error {
    Error::Store {
        op: "database",
        key: String::new(),
        reason: e.to_string(),
        retryable: matches!(e, sqlx::Error::PoolTimedOut | sqlx::Error::Io(_)),
    }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// A user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The name.
    pub name: String,
    /// Admins may do anything and create tokens for others.
    pub is_admin: bool,
}

/// A job row.
#[derive(Debug, Clone)]
pub struct JobRow {
    /// The spec.
    pub spec: JobSpec,
    /// The owner.
    pub owner: String,
    /// The current code's private key.
    pub code_key: Option<String>,
    /// Paused.
    pub paused: bool,
    /// Expired.
    pub expired: bool,
    /// Last slot handled.
    pub cursor: DateTime<Utc>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Updated.
    pub updated_at: DateTime<Utc>,
}

impl JobRow {
    /// Whether `user` may edit, run, pause, delete it and read its logs.
    pub fn can_manage(&self, user: &User) -> bool {
        user.is_admin || self.owner == user.name || self.spec.maintainers.contains(&user.name)
    }

    /// Whether `user` may see it at all: public jobs are visible to every user.
    pub fn can_see(&self, user: &User) -> bool {
        self.spec.output_visibility == telejob_core::job::Visibility::Public
            || self.can_manage(user)
    }

    /// As the scheduler sees it.
    pub fn state(&self, last_failed: bool) -> JobState {
        JobState {
            spec: self.spec.clone(),
            owner: self.owner.clone(),
            code: self.code_key.as_ref().map(|k| format!("store:{k}")),
            paused: self.paused,
            expired: self.expired,
            cursor: self.cursor,
            last_failed,
        }
    }
}

/// A code version.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CodeVersion {
    /// SHA-256 of the tarball.
    pub sha256: String,
    /// Private-store key.
    pub key: String,
    /// Bytes.
    pub size: i64,
    /// Who uploaded it.
    pub uploaded_by: String,
    /// When.
    pub uploaded_at: String,
}

/// Most entries each map of [`ReadCache`] holds; a full map starts over.
const CACHE_ENTRIES: usize = 1024;

/// Job rows and code-version lists as last read, so that reading a job (the dashboard's and the
/// CLI's most frequent call) does not hand a query to SQLite's connection thread and back.
///
/// Sound because this process is the only writer of the `jobs` and `code_versions` tables, and
/// every write through [`Db`] forgets the job's entries *after* it commits. A read that misses
/// only stores what it read if no write was forgotten meanwhile (`generation`), so an entry is
/// never older than the last write.
#[derive(Debug, Default)]
struct ReadCache {
    inner: std::sync::Mutex<CacheInner>,
}

#[derive(Debug, Default)]
struct CacheInner {
    generation: u64,
    jobs: HashMap<String, JobRow>,
    versions: HashMap<String, Vec<CodeVersion>>,
}

impl ReadCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn forget(&self, job: &str) {
        let mut g = self.lock();
        g.generation += 1;
        g.jobs.remove(job);
        g.versions.remove(job);
    }

    #[cfg(test)]
    fn generation(&self) -> u64 {
        self.lock().generation
    }

    fn keep<T>(
        &self,
        seen: u64,
        pick: impl FnOnce(&mut CacheInner) -> &mut HashMap<String, T>,
        job: &str,
        value: T,
    ) {
        let mut g = self.lock();
        if g.generation != seen {
            return;
        }
        let map = pick(&mut g);
        if map.len() >= CACHE_ENTRIES {
            map.clear();
        }
        map.insert(job.to_string(), value);
    }
}

/// The database.
#[derive(Debug, Clone)]
pub struct Db {
    pool: SqlitePool,
    cache: Arc<ReadCache>,
}

impl Db {
    /// Opens (creating if needed) `path` and applies the embedded migrations.
    ///
    /// # Errors
    ///
    /// Database errors.
    pub async fn open(path: &Path) -> Result<Self> {
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .map_err(db_err)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(std::time::Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(opts)
            .await
            .map_err(db_err)?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(|e| Error::Store {
                op: "migrate",
                key: path.display().to_string(),
                reason: e.to_string(),
                retryable: false,
            })?;
        Ok(Self {
            pool,
            cache: Arc::default(),
        })
    }

    // ---- users and tokens ----

    /// Creates a user if missing; sets the admin flag when `admin` is true.
    pub async fn ensure_user(&self, name: &str, admin: bool) -> Result<()> {
        sqlx::query("INSERT INTO users (name, is_admin, created_at) VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE SET is_admin = MAX(is_admin, excluded.is_admin)")
            .bind(name)
            .bind(admin)
            .bind(ts(Utc::now()))
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    /// Stores a token hash for a user.
    pub async fn add_token(&self, user: &str, hash: &str, label: Option<&str>) -> Result<()> {
        sqlx::query("INSERT INTO tokens (hash, user, label, created_at) VALUES (?, ?, ?, ?)")
            .bind(hash)
            .bind(user)
            .bind(label)
            .bind(ts(Utc::now()))
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    /// Every (token hash, user).
    pub async fn all_tokens(&self) -> Result<Vec<(String, User)>> {
        let rows = sqlx::query(
            "SELECT t.hash, u.name, u.is_admin FROM tokens t JOIN users u ON u.name = t.user",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(rows
            .into_iter()
            .map(|r| {
                (
                    r.get::<String, _>(0),
                    User {
                        name: r.get(1),
                        is_admin: r.get::<bool, _>(2),
                    },
                )
            })
            .collect())
    }

    /// The user of a token hash.
    pub async fn token_user(&self, hash: &str) -> Result<Option<User>> {
        let r = sqlx::query("SELECT u.name, u.is_admin FROM tokens t JOIN users u ON u.name = t.user WHERE t.hash = ?")
            .bind(hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(r.map(|r| User {
            name: r.get(0),
            is_admin: r.get::<bool, _>(1),
        }))
    }

    /// Whether any admin exists.
    pub async fn has_admin(&self) -> Result<bool> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE is_admin = 1")
            .fetch_one(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(n > 0)
    }

    // ---- jobs ----

    fn job_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<JobRow> {
        let spec: JobSpec =
            serde_json::from_str(r.get::<&str, _>("spec")).map_err(|e| Error::Store {
                op: "decode",
                key: r.get::<String, _>("name"),
                reason: e.to_string(),
                retryable: false,
            })?;
        Ok(JobRow {
            spec,
            owner: r.get("owner"),
            code_key: r.get("code_key"),
            paused: r.get::<bool, _>("paused"),
            expired: r.get::<bool, _>("expired"),
            cursor: parse_ts(r.get("cursor")),
            created_at: parse_ts(r.get("created_at")),
            updated_at: parse_ts(r.get("updated_at")),
        })
    }

    /// Inserts a job; `Ok(false)` if the name is taken.
    pub async fn insert_job(
        &self,
        spec: &JobSpec,
        owner: &str,
        cursor: DateTime<Utc>,
    ) -> Result<bool> {
        let now = ts(Utc::now());
        let r = sqlx::query("INSERT INTO jobs (name, owner, spec, paused, expired, cursor, created_at, updated_at) VALUES (?, ?, ?, 0, 0, ?, ?, ?)")
            .bind(&spec.name)
            .bind(owner)
            .bind(serde_json::to_string(spec).unwrap_or_default())
            .bind(ts(cursor))
            .bind(&now)
            .bind(&now)
            .execute(&self.pool)
            .await;
        self.cache.forget(&spec.name);
        match r {
            Ok(_) => Ok(true),
            Err(e) if is_unique_violation(&e) => Ok(false),
            Err(e) => Err(db_err(e)),
        }
    }

    /// Replaces a job's spec and moves its cursor.
    pub async fn update_job_spec(&self, spec: &JobSpec, cursor: DateTime<Utc>) -> Result<()> {
        let r = sqlx::query(
            "UPDATE jobs SET spec = ?, cursor = ?, expired = 0, updated_at = ? WHERE name = ?",
        )
        .bind(serde_json::to_string(spec).unwrap_or_default())
        .bind(ts(cursor))
        .bind(ts(Utc::now()))
        .bind(&spec.name)
        .execute(&self.pool)
        .await;
        self.cache.forget(&spec.name);
        r.map_err(db_err)?;
        Ok(())
    }

    /// Sets the paused flag.
    pub async fn set_paused(&self, job: &str, paused: bool) -> Result<()> {
        let r = sqlx::query("UPDATE jobs SET paused = ?, updated_at = ? WHERE name = ?")
            .bind(paused)
            .bind(ts(Utc::now()))
            .bind(job)
            .execute(&self.pool)
            .await;
        self.cache.forget(job);
        r.map_err(db_err)?;
        Ok(())
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
        let r = sqlx::query("SELECT * FROM jobs WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        r.as_ref().map(Self::job_from_row).transpose()
    }

    /// Every job, by name.
    pub async fn jobs(&self) -> Result<Vec<JobRow>> {
        let rows = sqlx::query("SELECT * FROM jobs ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        rows.iter().map(Self::job_from_row).collect()
    }

    /// Deletes a job, its runs and code versions.
    pub async fn delete_job(&self, name: &str) -> Result<()> {
        let r = async {
            let mut tx = self.pool.begin().await?;
            for q in [
                "DELETE FROM runs WHERE job = ?",
                "DELETE FROM code_versions WHERE job = ?",
                "DELETE FROM jobs WHERE name = ?",
            ] {
                sqlx::query(q).bind(name).execute(&mut *tx).await?;
            }
            tx.commit().await
        }
        .await;
        self.cache.forget(name);
        r.map_err(db_err)
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
            sqlx::query("INSERT OR IGNORE INTO code_versions (job, sha256, key, size, uploaded_by, uploaded_at) VALUES (?, ?, ?, ?, ?, ?)")
                .bind(job)
                .bind(sha)
                .bind(key)
                .bind(size as i64)
                .bind(by)
                .bind(ts(Utc::now()))
                .execute(&mut *tx)
                .await?;
            sqlx::query("UPDATE jobs SET code_key = ?, updated_at = ? WHERE name = ?")
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

    /// A job's code versions, newest first.
    pub async fn code_versions(&self, job: &str) -> Result<Vec<CodeVersion>> {
        let seen = {
            let g = self.cache.lock();
            if let Some(v) = g.versions.get(job) {
                return Ok(v.clone());
            }
            g.generation
        };
        let rows = sqlx::query("SELECT sha256, key, size, uploaded_by, uploaded_at FROM code_versions WHERE job = ? ORDER BY uploaded_at DESC")
            .bind(job)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        let versions: Vec<CodeVersion> = rows
            .into_iter()
            .map(|r| CodeVersion {
                sha256: r.get(0),
                key: r.get(1),
                size: r.get(2),
                uploaded_by: r.get(3),
                uploaded_at: r.get(4),
            })
            .collect();
        self.cache
            .keep(seen, |c| &mut c.versions, job, versions.clone());
        Ok(versions)
    }

    // ---- runs ----

    fn run_from_json(s: &str) -> Result<Run> {
        serde_json::from_str(s).map_err(|e| Error::Store {
            op: "decode",
            key: "run".into(),
            reason: e.to_string(),
            retryable: false,
        })
    }

    /// A run and its trigger.
    pub async fn run(&self, id: &str) -> Result<Option<(Run, String)>> {
        let r = sqlx::query("SELECT record, trigger FROM runs WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        r.map(|r| Ok((Self::run_from_json(r.get(0))?, r.get(1))))
            .transpose()
    }

    /// A job's runs, newest slot first.
    pub async fn runs_of(&self, job: &str, limit: i64) -> Result<Vec<(Run, String)>> {
        let rows = sqlx::query("SELECT record, trigger FROM runs WHERE job = ? ORDER BY scheduled_for DESC, id DESC LIMIT ?")
            .bind(job)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        rows.iter()
            .map(|r| Ok((Self::run_from_json(r.get(0))?, r.get(1))))
            .collect()
    }

    /// Whether the job's latest finished (succeeded, failed, timed out) run failed.
    pub async fn last_failed(&self, job: &str) -> Result<bool> {
        let s: Option<String> = sqlx::query_scalar(
            "SELECT state FROM runs WHERE job = ? AND state IN ('succeeded', 'failed', 'timed_out') ORDER BY created_at DESC LIMIT 1",
        )
        .bind(job)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(matches!(s.as_deref(), Some("failed" | "timed_out")))
    }

    /// Runs that were in flight, marked `interrupted`; returns them.
    /// Runs recorded as in flight, with their trigger and attempt.
    pub async fn in_flight(&self) -> Result<Vec<(Run, Trigger, u32)>> {
        let rows = sqlx::query("SELECT record, trigger, attempt FROM runs WHERE state IN ('pending', 'fetching', 'running', 'publishing')")
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        rows.into_iter()
            .map(|r| {
                let trigger = match r.get::<String, _>(1).as_str() {
                    "scheduled" => Trigger::Scheduled,
                    "retry" => Trigger::Retry,
                    _ => Trigger::Manual,
                };
                Ok((
                    Self::run_from_json(r.get(0))?,
                    trigger,
                    r.get::<i64, _>(2) as u32,
                ))
            })
            .collect()
    }

    /// Marks one in-flight run interrupted.
    pub async fn interrupt(&self, mut run: Run, why: &str) -> Result<Run> {
        run.state = RunState::Interrupted;
        run.error = Some(why.into());
        run.phases.finished = Some(Utc::now());
        self.update_run(&run).await?;
        Ok(run)
    }

    /// Number of runs per state.
    pub async fn run_counts(&self) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query("SELECT state, COUNT(*) FROM runs GROUP BY state")
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    // ---- notifications ----

    /// Claims an event key; `false` if it was claimed before (each event is sent once).
    pub async fn claim_notification(&self, key: &str, job: &str, kind: &str) -> Result<bool> {
        let r = sqlx::query(
            "INSERT INTO notifications (key, job, kind, created_at) VALUES (?, ?, ?, ?)",
        )
        .bind(key)
        .bind(job)
        .bind(kind)
        .bind(ts(Utc::now()))
        .execute(&self.pool)
        .await;
        match r {
            Ok(_) => Ok(true),
            Err(e) if is_unique_violation(&e) => Ok(false),
            Err(e) => Err(db_err(e)),
        }
    }

    /// Records a delivery attempt.
    pub async fn notification_attempt(&self, key: &str, error: Option<&str>) -> Result<()> {
        let sent = error.is_none().then(|| ts(Utc::now()));
        sqlx::query("UPDATE notifications SET attempts = attempts + 1, last_error = ?, sent_at = COALESCE(?, sent_at) WHERE key = ?")
            .bind(error)
            .bind(sent)
            .bind(key)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }
}

#[async_trait]
impl SchedulerStore for Db {
    async fn load_jobs(&self) -> Result<Vec<JobState>> {
        let mut out = Vec::new();
        for j in self.jobs().await? {
            let failed = self.last_failed(&j.spec.name).await?;
            out.push(j.state(failed));
        }
        Ok(out)
    }

    async fn insert_run(&self, row: &RunRow) -> Result<bool> {
        let r = sqlx::query("INSERT INTO runs (id, job, slot_key, trigger, attempt, scheduled_for, state, record, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
            .bind(row.run.id.as_str())
            .bind(row.run.job.as_str())
            .bind(&row.slot_key)
            .bind(row.trigger.as_str())
            .bind(row.attempt)
            .bind(ts(row.run.scheduled_for))
            .bind(row.run.state.as_str())
            .bind(serde_json::to_string(&row.run).unwrap_or_default())
            .bind(ts(Utc::now()))
            .execute(&self.pool)
            .await;
        match r {
            Ok(_) => Ok(true),
            Err(e) if is_unique_violation(&e) => Ok(false),
            Err(e) => Err(db_err(e)),
        }
    }

    async fn update_run(&self, run: &Run) -> Result<()> {
        sqlx::query("UPDATE runs SET state = ?, record = ? WHERE id = ?")
            .bind(run.state.as_str())
            .bind(serde_json::to_string(run).unwrap_or_default())
            .bind(run.id.as_str())
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn set_cursor(&self, job: &JobName, cursor: DateTime<Utc>) -> Result<()> {
        let r = sqlx::query("UPDATE jobs SET cursor = ? WHERE name = ?")
            .bind(ts(cursor))
            .bind(job.as_str())
            .execute(&self.pool)
            .await;
        self.cache.forget(job.as_str());
        r.map_err(db_err)?;
        Ok(())
    }

    async fn set_expired(&self, job: &JobName) -> Result<()> {
        let r = sqlx::query("UPDATE jobs SET expired = 1 WHERE name = ?")
            .bind(job.as_str())
            .execute(&self.pool)
            .await;
        self.cache.forget(job.as_str());
        r.map_err(db_err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use telejob_core::run::RunRequest;
    use telejob_core::scheduler::persist::Trigger;

    fn row(job: &str, key: &str) -> RunRow {
        let req: RunRequest = serde_json::from_value(serde_json::json!({
            "run_id": telejob_core::run::RunId::new(), "job": job, "code": "store:x", "command": "true",
            "output_dir": "output", "timeout": 60.0, "scheduled_for": "2014-03-08T12:00:00Z"
        }))
        .expect("request");
        RunRow {
            run: Run::pending(&req),
            slot_key: key.into(),
            trigger: Trigger::Scheduled,
            attempt: 0,
        }
    }

    #[tokio::test]
    async fn job_reads_follow_every_write_through_the_cache() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("t.db")).await.expect("db");
        db.ensure_user("ann", false).await.expect("user");
        let at = |h| parse_ts(&format!("2014-03-08T{h:02}:00:00Z"));
        let mut spec = JobSpec::new("j");
        assert!(db.insert_job(&spec, "ann", at(1)).await.expect("insert"));
        let job = || async { db.job("j").await.expect("read").expect("job") };
        // Each read below comes after a read that filled the cache.
        assert!(!job().await.paused);
        db.set_paused("j", true).await.expect("pause");
        assert!(job().await.paused, "pause");
        spec.command = "echo two".into();
        db.update_job_spec(&spec, at(2)).await.expect("update");
        let j = job().await;
        assert_eq!((j.spec.command.as_str(), j.cursor), ("echo two", at(2)));
        let name = JobName::new("j").expect("name");
        db.set_cursor(&name, at(3)).await.expect("cursor");
        assert_eq!(job().await.cursor, at(3), "cursor");
        db.set_expired(&name).await.expect("expire");
        assert!(job().await.expired, "expired");
        assert!(db.code_versions("j").await.expect("versions").is_empty());
        db.add_code("j", "abc", "code/j/abc.tar", 10, "ann")
            .await
            .expect("code");
        assert_eq!(db.code_versions("j").await.expect("versions").len(), 1);
        assert_eq!(job().await.code_key.as_deref(), Some("code/j/abc.tar"));
        db.delete_job("j").await.expect("delete");
        assert!(db.job("j").await.expect("read").is_none(), "deleted");
        assert!(db.code_versions("j").await.expect("versions").is_empty());
        // A read that raced a write does not store what it read.
        let seen = db.cache.generation();
        db.cache.forget("j");
        db.cache.keep(seen, |c| &mut c.jobs, "j", j);
        assert!(
            db.job("j").await.expect("read").is_none(),
            "stale entry kept"
        );
    }

    #[tokio::test]
    async fn a_slot_key_is_inserted_once_even_under_concurrency() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("t.db")).await.expect("db");
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let db = db.clone();
            tasks.push(tokio::spawn(async move {
                db.insert_run(&row("j", "slot:2014-03-08T12:00:00Z")).await
            }));
        }
        let mut inserted = 0;
        for t in tasks {
            if t.await.expect("join").expect("insert") {
                inserted += 1;
            }
        }
        assert_eq!(inserted, 1);
        assert!(
            db.insert_run(&row("other", "slot:2014-03-08T12:00:00Z"))
                .await
                .expect("insert"),
            "keys are per job"
        );
        assert!(
            db.insert_run(&row("j", "manual:abc"))
                .await
                .expect("insert"),
            "manual runs have their own keys"
        );
    }

    #[tokio::test]
    async fn in_flight_runs_become_interrupted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("t.db")).await.expect("db");
        let r = row("j", "slot:a");
        db.insert_run(&r).await.expect("insert");
        let mut done = row("j", "slot:b");
        done.run.state = RunState::Succeeded;
        db.insert_run(&done).await.expect("insert");
        let in_flight = db.in_flight().await.expect("in flight");
        assert_eq!(in_flight.len(), 1);
        let (run, trigger, attempt) = in_flight.into_iter().next().expect("one");
        assert_eq!((trigger, attempt), (r.trigger, r.attempt));
        db.interrupt(run, "restart").await.expect("interrupt");
        let (back, _) = db
            .run(r.run.id.as_str())
            .await
            .expect("get")
            .expect("exists");
        assert_eq!(back.state, RunState::Interrupted);
        let (other, _) = db
            .run(done.run.id.as_str())
            .await
            .expect("get")
            .expect("exists");
        assert_eq!(other.state, RunState::Succeeded);
    }
}
