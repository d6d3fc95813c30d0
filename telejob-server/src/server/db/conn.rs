//! The connection pool, the read cache, and how values and errors cross the SQL boundary.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
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

/// A query run on the pool with its errors as telejob's: `.all(&pool)`, `.opt`, `.one` for
/// `fetch_all`, `fetch_optional`, `fetch_one` and `map_err(db_err)`.
pub(super) trait Fetch<'q> {
    /// What one row is read as.
    type Out;
    /// Every row.
    async fn all(self, pool: &AnyPool) -> Result<Vec<Self::Out>>;
    /// The first row, if any.
    async fn opt(self, pool: &AnyPool) -> Result<Option<Self::Out>>;
    /// Exactly one row.
    async fn one(self, pool: &AnyPool) -> Result<Self::Out>;
}

/// A statement run on the pool with its errors as telejob's (`execute` and `map_err(db_err)`).
pub(super) trait Exec {
    /// Runs the statement.
    async fn exec(self, pool: &AnyPool) -> Result<sqlx::any::AnyQueryResult>;
}

impl<'q> Exec for sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    async fn exec(self, pool: &AnyPool) -> Result<sqlx::any::AnyQueryResult> {
        self.execute(pool).await.map_err(db_err)
    }
}

impl<'q> Fetch<'q> for sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    type Out = sqlx::any::AnyRow;
    async fn all(self, pool: &AnyPool) -> Result<Vec<Self::Out>> {
        self.fetch_all(pool).await.map_err(db_err)
    }
    async fn opt(self, pool: &AnyPool) -> Result<Option<Self::Out>> {
        self.fetch_optional(pool).await.map_err(db_err)
    }
    async fn one(self, pool: &AnyPool) -> Result<Self::Out> {
        self.fetch_one(pool).await.map_err(db_err)
    }
}

impl<'q, O> Fetch<'q> for sqlx::query::QueryScalar<'q, sqlx::Any, O, sqlx::any::AnyArguments<'q>>
where
    O: Send + Unpin + for<'r> sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    type Out = O;
    async fn all(self, pool: &AnyPool) -> Result<Vec<O>> {
        self.fetch_all(pool).await.map_err(db_err)
    }
    async fn opt(self, pool: &AnyPool) -> Result<Option<O>> {
        self.fetch_optional(pool).await.map_err(db_err)
    }
    async fn one(self, pool: &AnyPool) -> Result<O> {
        self.fetch_one(pool).await.map_err(db_err)
    }
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
/// Sound on SQLite because this process is the only writer of the `jobs` and `code_versions`
/// tables, and every write through [`Db`] forgets the job's entries *after* it commits. A read
/// that misses only stores what it read if no write was forgotten meanwhile (`generation`), so
/// an entry is never older than the last write.
///
/// On PostgreSQL other replicas write too, so the cache is off (`keep` keeps nothing): every
/// read is a primary-key lookup in the shared database, and an edit made on one replica is what
/// the next read on any other returns. No invalidation message can be late, because there is
/// nothing to invalidate.
#[derive(Debug, Default)]
pub(super) struct ReadCache {
    inner: std::sync::Mutex<CacheInner>,
    on: bool,
}

#[derive(Debug, Default)]
pub(super) struct CacheInner {
    pub(super) generation: u64,
    pub(super) jobs: HashMap<String, JobRow>,
    pub(super) versions: HashMap<String, Vec<CodeVersion>>,
}

impl ReadCache {
    pub(super) fn new(on: bool) -> Self {
        Self {
            inner: std::sync::Mutex::default(),
            on,
        }
    }

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
        if !self.on || g.generation != seen {
            return;
        }
        let map = pick(&mut g);
        if map.len() >= CACHE_ENTRIES {
            map.clear();
        }
        map.insert(job.to_string(), value);
    }
}

/// Which database a [`Db`] talks to: the SQL the two do not share goes through here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// One file, one server process.
    Sqlite,
    /// A shared database: several replicas.
    Postgres,
}

impl Backend {
    /// The database's clock in milliseconds since 1970, as an SQL expression: lease expiries
    /// are the database's time, so that replicas' clocks never have to agree.
    pub(super) fn now_ms(self) -> &'static str {
        match self {
            Self::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
            Self::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
        }
    }

    /// The locking clause that makes a lease check hold the lease row until commit (SQLite
    /// transactions are serialized already).
    pub(super) fn for_share(self) -> &'static str {
        match self {
            Self::Sqlite => "",
            Self::Postgres => " FOR SHARE",
        }
    }
}

/// Where the server's state lives: `sqlite:PATH` (the default, `<data dir>/telejob.db`) or
/// `postgres://user:password@host:port/database`.
#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    /// An SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL URL.
    Postgres(String),
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

impl std::fmt::Display for Location {
    /// The location with any password left out.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(p) => write!(f, "sqlite:{}", p.display()),
            Self::Postgres(u) => match reqwest::Url::parse(u) {
                Ok(mut url) => {
                    if url.password().is_some() {
                        let _ = url.set_password(Some("***"));
                    }
                    write!(f, "{url}")
                }
                Err(_) => f.write_str("postgres://(unparsable)"),
            },
        }
    }
}

impl std::str::FromStr for Location {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            reqwest::Url::parse(s).map_err(|e| format!("not a PostgreSQL URL: {e}"))?;
            return Ok(Self::Postgres(s.to_string()));
        }
        let path = s
            .strip_prefix("sqlite://")
            .or_else(|| s.strip_prefix("sqlite:"))
            .ok_or_else(|| "use sqlite:PATH or postgres://user@host:port/database".to_string())?;
        if path.is_empty() {
            return Err(
                "sqlite: needs a file path, as in sqlite:/var/lib/telejob/telejob.db".into(),
            );
        }
        Ok(Self::Sqlite(PathBuf::from(path)))
    }
}

impl Location {
    /// Whether several servers can share it.
    pub fn is_shared(&self) -> bool {
        matches!(self, Self::Postgres(_))
    }
}

/// The lease a scheduler's writes are conditional on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// Who holds it.
    pub holder: String,
    /// Its epoch at the takeover.
    pub epoch: i64,
}

/// SQLite's page cache on the batch writer's connection, KiB (at most; filled as pages are
/// read).
const BULK_CACHE_KIB: u32 = 65_536;

/// The database.
#[derive(Debug, Clone)]
pub struct Db {
    pub(super) pool: AnyPool,
    /// The scheduler lease's own connection: renewing it never waits behind run I/O for one of
    /// the pool's.
    pub(super) lease_pool: AnyPool,
    pub(super) backend: Backend,
    pub(super) cache: Arc<ReadCache>,
    /// Opens job secrets for runs; without it, jobs with secrets cannot run.
    pub(super) secret_box: Option<Arc<crate::server::db::secret_box::SecretBox>>,
    /// Set on the scheduler's handle: its slot inserts hold only while this lease is held.
    pub(super) fence: Option<Fence>,
    /// SQLite's batch writes (a burst's chunks, group-committed run records) take turns here
    /// rather than at the file lock, whose busy handler sleeps and retries: a chunk that
    /// waits behind another starts the moment it ends.
    pub(super) bulk_writes: Arc<tokio::sync::Mutex<()>>,
    /// Where batch writes go: on SQLite one connection of their own, whose page cache keeps
    /// the run indexes a burst writes to (another connection's write would make a pool
    /// connection's cache stale); on PostgreSQL the pool.
    pub(super) bulk_pool: AnyPool,
    /// SQLite's checkpoints, in the background (see [`Checkpointer`]); held only to stop them
    /// with the last handle.
    _checkpointer: Option<Arc<Checkpointer>>,
}

/// Checkpoints an SQLite write-ahead log once a second, off the writers' path: with SQLite's
/// own automatic checkpoint, the commit that crosses 1,000 pages copies the log into the
/// database itself, and a burst's chunk that happens to be that commit waits for it (the p99
/// of 10,000 runs at noon: 493 ms with it, 296 ms without). A passive checkpoint never waits
/// for a writer or a reader.
#[derive(Debug)]
struct Checkpointer(tokio::task::JoinHandle<()>);

impl Checkpointer {
    /// How often the log is copied back.
    const EVERY: std::time::Duration = std::time::Duration::from_secs(1);

    fn start(pool: AnyPool) -> Self {
        Self(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Self::EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !pool.is_closed() {
                tick.tick().await;
                if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                    .execute(&pool)
                    .await
                {
                    tracing::debug!(error = %e, "background checkpoint");
                }
            }
        }))
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A query with its parameters bound.
pub(super) type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// A path as sqlx's SQLite URL parser reads it back (it percent-decodes).
fn sqlite_url(path: &Path) -> String {
    let mut out = String::from("sqlite://");
    for c in path.display().to_string().chars() {
        match c {
            '%' => out.push_str("%25"),
            '?' => out.push_str("%3F"),
            '#' => out.push_str("%23"),
            c => out.push(c),
        }
    }
    out.push_str("?mode=rwc");
    out
}

impl Db {
    #[cfg(test)]
    /// Opens (creating if needed) the SQLite file `path` and applies the embedded migrations.
    ///
    /// # Errors
    ///
    /// As [`Db::connect`].
    pub async fn open(path: &Path) -> Result<Self> {
        Self::connect(&Location::Sqlite(path.to_path_buf())).await
    }

    /// Connects to the database at `at` (creating an SQLite file if needed) and brings its
    /// schema up to date.
    ///
    /// # Errors
    ///
    /// A database that cannot be reached, or whose schema is newer than this binary (one line,
    /// naming the location without its password).
    pub async fn connect(at: &Location) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let (url, backend) = match at {
            Location::Sqlite(p) => (sqlite_url(p), Backend::Sqlite),
            Location::Postgres(u) => (u.clone(), Backend::Postgres),
        };
        // `cache_kib`: SQLite's page cache per connection (its default is 2,000 KiB).
        let opts = |max: u32, cache_kib: u32| {
            AnyPoolOptions::new()
                .max_connections(max)
                .acquire_timeout(std::time::Duration::from_secs(10))
                .after_connect(move |conn, _| {
                    Box::pin(async move {
                        if backend == Backend::Sqlite {
                            use sqlx::Executor;
                            conn.execute(
                                format!(
                                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                                     PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000; \
                                     PRAGMA wal_autocheckpoint = 0; PRAGMA cache_size = -{cache_kib};"
                                )
                                .as_str(),
                            )
                            .await?;
                        }
                        Ok(())
                    })
                })
        };
        // One connection first, so that the reason a database cannot be reached (refused,
        // unknown host, bad password) is what the operator reads, not the pool's timeout.
        let cannot = |why: String| {
            Error::persistence(
                "connect",
                format!("cannot open the database at {at}: {why}"),
                false,
            )
        };
        match tokio::time::timeout(
            std::time::Duration::from_secs(10),
            <sqlx::AnyConnection as sqlx::Connection>::connect(&url),
        )
        .await
        {
            Ok(Ok(c)) => {
                let _ = sqlx::Connection::close(c).await;
            }
            Ok(Err(e)) => return Err(cannot(e.to_string())),
            Err(_) => return Err(cannot("no answer within 10 s".into())),
        }
        let open = |max: u32, cache_kib: u32| {
            let url = url.clone();
            async move {
                opts(max, cache_kib).connect(&url).await.map_err(|e| {
                    Error::persistence(
                        "connect",
                        format!("cannot open the database at {at}: {e}"),
                        false,
                    )
                })
            }
        };
        let pool = open(if backend == Backend::Sqlite { 8 } else { 16 }, 2_000).await?;
        let migrator = match backend {
            Backend::Sqlite => &*super::migrations::SQLITE_MIGRATIONS,
            Backend::Postgres => &*super::migrations::POSTGRES_MIGRATIONS,
        };
        migrator.run(&pool).await.map_err(|e| {
            use sqlx::migrate::MigrateError;
            let why = match e {
                MigrateError::VersionMissing(v) => format!(
                    "the database at {at} has schema version {v}, newer than this telejob knows: upgrade telejob (or point --database elsewhere)"
                ),
                MigrateError::VersionMismatch(v) => format!(
                    "the database at {at} has a schema migration {v} that differs from this telejob's: it was made by another build"
                ),
                e => format!("cannot bring the database at {at} up to date: {e}"),
            };
            Error::persistence("migrate", why, false)
        })?;
        let lease_pool = open(1, 2_000).await?;
        let bulk_pool = match backend {
            // Room for the run indexes a burst of 100,000 rows touches.
            Backend::Sqlite => open(1, BULK_CACHE_KIB).await?,
            Backend::Postgres => pool.clone(),
        };
        let checkpointer =
            (backend == Backend::Sqlite).then(|| Arc::new(Checkpointer::start(pool.clone())));
        Ok(Self {
            pool,
            lease_pool,
            backend,
            cache: Arc::new(ReadCache::new(backend == Backend::Sqlite)),
            secret_box: None,
            fence: None,
            bulk_writes: Arc::default(),
            bulk_pool,
            _checkpointer: checkpointer,
        })
    }

    #[cfg(test)]
    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// This database with the key that opens job secrets.
    pub fn with_secret_box(mut self, b: crate::server::db::secret_box::SecretBox) -> Self {
        self.secret_box = Some(Arc::new(b));
        self
    }

    /// The turn of a batch write on SQLite (see [`Db::bulk_writes`]); none needed on
    /// PostgreSQL, whose row locks let batches of different jobs run at once.
    pub(super) async fn bulk_write_turn(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match self.backend {
            Backend::Sqlite => Some(self.bulk_writes.lock().await),
            Backend::Postgres => None,
        }
    }

    /// Runs `q`, a write of job `job`'s row, and drops the row from the read cache (whether
    /// the write took or not: the cache is never ahead of the database).
    pub(super) async fn write_job_row(&self, job: &str, q: AnyQuery<'_>) -> Result<()> {
        let r = q.execute(&self.pool).await;
        self.cache.forget(job);
        r.map_err(db_err)?;
        Ok(())
    }

    /// Closes the connections.
    pub async fn close(&self) {
        self.pool.close().await;
        self.lease_pool.close().await;
        self.bulk_pool.close().await;
    }
}
