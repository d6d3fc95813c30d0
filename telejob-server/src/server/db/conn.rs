//! The connection pool, the read cache, and how values and errors cross the SQL boundary.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use telejob_core::{Error, Result};

use super::rows::{CodeVersion, JobRow};

/// Fixed-width RFC 3339, so text order is time order.
pub fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Reads a timestamp written by [`ts`]; anything else is a decode error, never a made-up time.
pub(super) fn parse_ts(column: &str, s: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| decode_err(column, format!("timestamp {s:?}: {e}")))
}

/// A database error, retryable when the database was busy or unreachable.
pub(super) fn db_err(e: sqlx::Error) -> Error {
    let retryable = matches!(
        e,
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed
    );
    Error::persistence("query", e, retryable)
}

/// A stored value this version cannot read.
pub(super) fn decode_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::persistence("decode", format!("{what}: {e}"), false)
}

/// Whether an `INSERT` added its row: `Ok(false)` when a unique key already held it.
pub(super) fn inserted<T>(r: std::result::Result<T, sqlx::Error>) -> Result<bool> {
    match r {
        Ok(_) => Ok(true),
        Err(sqlx::Error::Database(d)) if d.is_unique_violation() => Ok(false),
        Err(e) => Err(db_err(e)),
    }
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
pub(super) struct ReadCache {
    inner: std::sync::Mutex<CacheInner>,
}

#[derive(Debug, Default)]
pub(super) struct CacheInner {
    pub(super) generation: u64,
    pub(super) jobs: HashMap<String, JobRow>,
    pub(super) versions: HashMap<String, Vec<CodeVersion>>,
}

impl ReadCache {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn forget(&self, job: &str) {
        let mut g = self.lock();
        g.generation += 1;
        g.jobs.remove(job);
        g.versions.remove(job);
    }

    #[cfg(test)]
    pub(super) fn generation(&self) -> u64 {
        self.lock().generation
    }

    pub(super) fn keep<T>(
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
    pub(super) pool: SqlitePool,
    pub(super) cache: Arc<ReadCache>,
    /// Opens job secrets for runs; without it, jobs with secrets cannot run.
    pub(super) secret_box: Option<Arc<crate::server::secrets::SecretBox>>,
}

impl Db {
    /// Opens (creating if needed) `path` and applies the embedded migrations.
    ///
    /// # Errors
    ///
    /// Database errors.
    pub async fn open(path: &Path) -> Result<Self> {
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .map_err(|e| Error::persistence("open", e, false))?
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
            .map_err(|e| Error::persistence("migrate", e, false))?;
        Ok(Self {
            pool,
            cache: Arc::default(),
            secret_box: None,
        })
    }

    /// This database with the key that opens job secrets.
    pub fn with_secret_box(mut self, b: crate::server::secrets::SecretBox) -> Self {
        self.secret_box = Some(Arc::new(b));
        self
    }
}
