//! Runs: one row per (job, slot), the run record as JSON, and the scheduler's persistence.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
use telejob_core::Result;
use telejob_core::job::JobName;
use telejob_core::run::{Run, RunState};
use telejob_core::scheduler::persist::{JobState, RunRow, SchedulerStore, Trigger};

use super::conn::{AnyQuery, Db, Exec, Fetch, db_err, decode_err, ts};

/// Why a run counts as late: when it was marked, the job's usual (p95) command duration and the
/// threshold it passed, in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LateMark {
    /// When the run was found late.
    pub at: DateTime<Utc>,
    /// The p95 of the job's last successful command phases.
    pub p95_ms: u64,
    /// The threshold passed: `max(factor × p95, p95 + margin)`.
    pub after_ms: u64,
}

impl Db {
    fn run_from_json(s: &str) -> Result<Run> {
        serde_json::from_str(s).map_err(|e| decode_err("run record", e))
    }

    /// A run and its trigger.
    pub async fn run(&self, id: &str) -> Result<Option<(Run, String)>> {
        let r = sqlx::query("SELECT record, trigger FROM runs WHERE id = $1")
            .bind(id)
            .opt(&self.pool)
            .await?;
        r.map(|r| Ok((Self::run_from_json(r.get(0))?, r.get(1))))
            .transpose()
    }

    /// A job's runs, newest slot first.
    pub async fn runs_of(&self, job: &str, limit: i64) -> Result<Vec<(Run, String)>> {
        let rows = sqlx::query("SELECT record, trigger FROM runs WHERE job = $1 ORDER BY scheduled_for DESC, id DESC LIMIT $2")
            .bind(job)
            .bind(limit)
            .all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((Self::run_from_json(r.get(0))?, r.get(1))))
            .collect()
    }

    /// Every attempt of the job's schedule slots from `from` to `to` (both included): what a
    /// backfill plans from. Manual runs and replays are not slot attempts.
    pub async fn slot_attempts(
        &self,
        job: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<telejob_core::scheduler::backfill::SlotAttempt>> {
        let rows = sqlx::query(
            "SELECT scheduled_for, attempt, state FROM runs \
             WHERE job = $1 AND slot_key LIKE 'slot:%' AND scheduled_for >= $2 AND scheduled_for <= $3",
        )
        .bind(job)
        .bind(ts(from))
        .bind(ts(to))
        .all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let state: String = r.get(2);
                Ok(telejob_core::scheduler::backfill::SlotAttempt {
                    slot: super::conn::parse_ts("runs.scheduled_for", r.get(0))?,
                    attempt: u32::try_from(r.get::<i64, _>(1)).unwrap_or(0),
                    state: serde_json::from_value(serde_json::Value::String(state))
                        .map_err(|e| decode_err("runs.state", e))?,
                })
            })
            .collect()
    }

    /// The command-phase durations of the job's last 20 successful runs, newest first: its
    /// usual duration (see [`telejob_core::advice::Usual`]).
    pub async fn usual_durations(&self, job: &str) -> Result<Vec<std::time::Duration>> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT record FROM runs WHERE job = $1 AND state = 'succeeded' ORDER BY created_at DESC LIMIT 20",
        )
        .bind(job)
        .all(&self.pool)
        .await?;
        let mut out = Vec::new();
        for r in rows {
            let run = Self::run_from_json(&r)?;
            if let (Some(a), Some(b)) = (run.phases.run_started, run.phases.run_ended) {
                out.push((b - a).to_std().unwrap_or_default());
            }
        }
        Ok(out)
    }

    /// Runs whose command is running and that are not marked late yet, with their job.
    pub async fn running_not_late(&self) -> Result<Vec<Run>> {
        let rows: Vec<String> =
            sqlx::query_scalar("SELECT record FROM runs WHERE state = 'running' AND late IS NULL")
                .all(&self.pool)
                .await?;
        rows.iter().map(|r| Self::run_from_json(r)).collect()
    }

    /// Marks a run late, once: `false` when it was marked already.
    pub async fn mark_late(&self, run: &str, late: &LateMark) -> Result<bool> {
        let r = sqlx::query("UPDATE runs SET late = $1 WHERE id = $2 AND late IS NULL")
            .bind(serde_json::to_string(late).unwrap_or_default())
            .bind(run)
            .exec(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// The late marks of a job's runs, by run id (one query).
    pub async fn late_marks(
        &self,
        job: &str,
    ) -> Result<std::collections::HashMap<String, LateMark>> {
        let rows = sqlx::query("SELECT id, late FROM runs WHERE job = $1 AND late IS NOT NULL")
            .bind(job)
            .all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let mark = serde_json::from_str(&r.get::<String, _>(1)).ok()?;
                Some((r.get::<String, _>(0), mark))
            })
            .collect())
    }

    /// A run's late mark, if it has one.
    pub async fn late_mark(&self, run: &str) -> Result<Option<LateMark>> {
        let v: Option<Option<String>> = sqlx::query_scalar("SELECT late FROM runs WHERE id = $1")
            .bind(run)
            .opt(&self.pool)
            .await?;
        Ok(v.flatten().and_then(|v| serde_json::from_str(&v).ok()))
    }

    /// The usual command duration of a job, from its last successful runs (`None` with fewer
    /// than five).
    pub async fn usual(&self, job: &str) -> Result<Option<telejob_core::advice::Usual>> {
        Ok(telejob_core::advice::Usual::of(
            &self.usual_durations(job).await?,
        ))
    }

    /// The jobs with a run in flight that is marked late.
    pub async fn jobs_running_late(&self) -> Result<std::collections::HashSet<String>> {
        let v: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT job FROM runs WHERE late IS NOT NULL AND state IN ('running', 'publishing')",
        )
        .all(&self.pool)
        .await?;
        Ok(v.into_iter().collect())
    }

    /// The id of the job's run with this slot key, if any.
    pub async fn run_with_key(&self, job: &str, slot_key: &str) -> Result<Option<String>> {
        sqlx::query_scalar("SELECT id FROM runs WHERE job = $1 AND slot_key = $2")
            .bind(job)
            .bind(slot_key)
            .opt(&self.pool)
            .await
    }

    /// Whether the job's latest finished (succeeded, failed, timed out) run failed.
    pub async fn last_failed(&self, job: &str) -> Result<bool> {
        let s: Option<String> = sqlx::query_scalar(
            "SELECT state FROM runs WHERE job = $1 AND state IN ('succeeded', 'failed', 'timed_out') ORDER BY created_at DESC LIMIT 1",
        )
        .bind(job)
        .opt(&self.pool)
        .await?;
        Ok(matches!(s.as_deref(), Some("failed" | "timed_out")))
    }

    /// The jobs whose latest finished (succeeded, failed, timed out) run failed: one query for
    /// every job, as [`Db::last_failed`] answers for one.
    pub async fn jobs_last_failed(&self) -> Result<std::collections::HashSet<String>> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT job FROM (SELECT job, state, ROW_NUMBER() OVER (PARTITION BY job ORDER BY created_at DESC) AS n \
             FROM runs WHERE state IN ('succeeded', 'failed', 'timed_out')) latest \
             WHERE n = 1 AND state IN ('failed', 'timed_out')",
        )
        .all(&self.pool)
        .await?;
        Ok(rows.into_iter().collect())
    }

    /// Runs recorded as in flight, with their trigger and attempt.
    pub async fn in_flight(&self) -> Result<Vec<(Run, Trigger, u32)>> {
        let rows = sqlx::query("SELECT record, trigger, attempt FROM runs WHERE state IN ('pending', 'fetching', 'running', 'publishing')")
            .all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|r| {
                let trigger = Trigger::parse(&r.get::<String, _>(1)).unwrap_or(Trigger::Manual);
                Ok((
                    Self::run_from_json(r.get(0))?,
                    trigger,
                    r.get::<i64, _>(2) as u32,
                ))
            })
            .collect()
    }

    /// The ids of a job's runs recorded as in flight.
    pub async fn in_flight_ids(&self, job: &str) -> Result<Vec<String>> {
        sqlx::query_scalar("SELECT id FROM runs WHERE job = $1 AND state IN ('pending', 'fetching', 'running', 'publishing')")
            .bind(job)
            .all(&self.pool)
            .await
    }

    /// Runs of `owner`'s jobs waiting to start (`pending`): `(backfill, other)`.
    pub async fn pending_of_owner(&self, owner: &str) -> Result<(i64, i64)> {
        let r = sqlx::query(
            "SELECT COUNT(CASE WHEN runs.trigger = 'backfill' THEN 1 END), \
                    COUNT(CASE WHEN runs.trigger <> 'backfill' THEN 1 END) \
             FROM runs JOIN jobs ON jobs.name = runs.job \
             WHERE jobs.owner = $1 AND runs.state = 'pending'",
        )
        .bind(owner)
        .one(&self.pool)
        .await?;
        Ok((r.get(0), r.get(1)))
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
            .all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}

#[async_trait]
impl SchedulerStore for Db {
    async fn secrets(&self, job: &JobName) -> Result<telejob_core::run::Secrets> {
        self.open_secrets(job.as_str()).await
    }

    async fn load_jobs(&self) -> Result<Vec<JobState>> {
        let failed = self.jobs_last_failed().await?;
        Ok(self
            .jobs()
            .await?
            .into_iter()
            .filter(|j| !j.deleting)
            .map(|j| {
                let f = failed.contains(&j.spec.name);
                j.state(f)
            })
            .collect())
    }

    async fn insert_run(&self, row: &RunRow) -> Result<bool> {
        let (holder, epoch) = self.fence_binds();
        let fenced = self.fence.is_some();
        let insert = format!(
            "INSERT INTO runs (id, job, slot_key, trigger, attempt, scheduled_for, state, record, created_at, epoch) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10 WHERE {} ON CONFLICT (job, slot_key) DO NOTHING",
            self.fence_sql(11, 12)
        );
        // The first attempt of a scheduled slot moves the job's cursor up to the slot in the
        // same transaction, so that a crash can never leave a handled slot without its row.
        let moves_cursor = row.trigger == Trigger::Scheduled && row.attempt == 0;
        let r = async {
            let mut tx = self.pool.begin().await?;
            let mut q = bind_row(sqlx::query(&insert), row, ts(Utc::now()), epoch);
            if fenced {
                q = q.bind(holder.clone()).bind(epoch);
            }
            let added = q.execute(&mut *tx).await?.rows_affected() == 1;
            if !added {
                tx.rollback().await?;
                return Ok(None);
            }
            if moves_cursor {
                sqlx::query("UPDATE jobs SET cursor = $1 WHERE name = $2 AND cursor < $1")
                    .bind(ts(row.run.scheduled_for))
                    .bind(row.run.job.as_str())
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(Some(()))
        }
        .await
        .map_err(db_err)?;
        if moves_cursor {
            self.cache.forget(row.run.job.as_str());
        }
        if r.is_some() {
            return Ok(true);
        }
        // Nothing inserted: the slot has its row already, or the lease is lost.
        if !self.fence_holds().await? {
            return Err(self.fenced_out());
        }
        if moves_cursor {
            self.set_cursor_if_behind(row.run.job.as_str(), row.run.scheduled_for)
                .await?;
        }
        Ok(false)
    }

    async fn insert_runs(&self, rows: &[RunRow]) -> Vec<Result<bool>> {
        use futures::StreamExt;
        let (chunks, whole) = chunks_by_job(rows);
        // PostgreSQL takes the chunks on several connections at once when no job's rows span
        // two of them (their cursor moves then touch disjoint job rows, so the transactions
        // cannot wait on each other); SQLite has one writer.
        let at_once = match self.backend {
            super::conn::Backend::Postgres if whole => CHUNKS_AT_ONCE,
            _ => 1,
        };
        let done: Vec<(Vec<usize>, Result<Vec<bool>>)> = futures::stream::iter(chunks)
            .map(|idx| async move {
                let chunk: Vec<&RunRow> = idx.iter().map(|&i| &rows[i]).collect();
                let r = self.insert_chunk(&chunk).await;
                (idx, r)
            })
            .buffer_unordered(at_once)
            .collect()
            .await;
        let mut out: Vec<Option<Result<bool>>> = (0..rows.len()).map(|_| None).collect();
        for (idx, r) in done {
            match r {
                Ok(answers) => {
                    for (i, a) in idx.into_iter().zip(answers) {
                        out[i] = Some(Ok(a));
                    }
                }
                Err(e) => {
                    let msg = e.to_string();
                    for i in idx {
                        out[i] = Some(Err(if e.is_fenced() {
                            telejob_core::Error::fenced(msg.clone())
                        } else {
                            telejob_core::Error::persistence("runs", msg.clone(), e.is_retryable())
                        }));
                    }
                }
            }
        }
        out.into_iter()
            .map(|a| {
                a.unwrap_or_else(|| {
                    Err(telejob_core::Error::persistence("runs", "no answer", true))
                })
            })
            .collect()
    }

    async fn update_runs(&self, runs: &[Run]) -> Result<()> {
        for chunk in runs.chunks(BATCH_ROWS) {
            let values = self.placeholders(chunk.len(), 3, 1);
            let sql = format!(
                "UPDATE runs SET state = v.column2, record = v.column3 FROM (VALUES {values}) AS v \
                 WHERE runs.id = v.column1"
            );
            let mut q = sqlx::query(&sql);
            for run in chunk {
                q = q
                    .bind(run.id.as_str())
                    .bind(run.state.as_str())
                    .bind(serde_json::to_string(run).unwrap_or_default());
            }
            let _turn = self.bulk_write_turn().await;
            q.exec(&self.bulk_pool).await?;
        }
        Ok(())
    }

    async fn update_run(&self, run: &Run) -> Result<()> {
        sqlx::query("UPDATE runs SET state = $1, record = $2 WHERE id = $3")
            .bind(run.state.as_str())
            .bind(serde_json::to_string(run).unwrap_or_default())
            .bind(run.id.as_str())
            .exec(&self.pool)
            .await?;
        Ok(())
    }

    async fn set_cursor(&self, job: &JobName, cursor: DateTime<Utc>) -> Result<()> {
        self.fenced_update(
            "UPDATE jobs SET cursor = $1 WHERE name = $2",
            Some(ts(cursor)),
            job.as_str(),
        )
        .await
    }

    async fn set_expired(&self, job: &JobName) -> Result<()> {
        self.fenced_update(
            "UPDATE jobs SET expired = 1 WHERE name = $1",
            None,
            job.as_str(),
        )
        .await
    }
}

/// Binds `row`'s ten columns in the order of the runs insert: id, job, slot_key, trigger,
/// attempt, scheduled_for, state, record, created_at, epoch.
fn bind_row<'q>(q: AnyQuery<'q>, row: &'q RunRow, created: String, epoch: i64) -> AnyQuery<'q> {
    q.bind(row.run.id.as_str())
        .bind(row.run.job.as_str())
        .bind(&row.slot_key)
        .bind(row.trigger.as_str())
        .bind(i64::from(row.attempt))
        .bind(ts(row.run.scheduled_for))
        .bind(row.run.state.as_str())
        .bind(serde_json::to_string(&row.run).unwrap_or_default())
        .bind(created)
        .bind(epoch)
}

/// Chunks of a batch written at once on PostgreSQL.
const CHUNKS_AT_ONCE: usize = 4;

/// The rows' indices in chunks of at most [`BATCH_ROWS`], each job's rows in one chunk where
/// they fit; `true` when no job's rows span two chunks.
fn chunks_by_job(rows: &[RunRow]) -> (Vec<Vec<usize>>, bool) {
    let mut order: Vec<&str> = Vec::new();
    let mut by_job: std::collections::HashMap<&str, Vec<usize>> = Default::default();
    for (i, r) in rows.iter().enumerate() {
        by_job
            .entry(r.run.job.as_str())
            .or_insert_with(|| {
                order.push(r.run.job.as_str());
                Vec::new()
            })
            .push(i);
    }
    let mut chunks: Vec<Vec<usize>> = Vec::new();
    let mut whole = true;
    let mut current: Vec<usize> = Vec::new();
    for job in order {
        let group = by_job.remove(job).unwrap_or_default();
        if current.len() + group.len() > BATCH_ROWS && !current.is_empty() {
            chunks.push(std::mem::take(&mut current));
        }
        if group.len() > BATCH_ROWS {
            whole = false;
            for part in group.chunks(BATCH_ROWS) {
                chunks.push(part.to_vec());
            }
        } else {
            current.extend(group);
        }
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    (chunks, whole)
}

/// Rows in one statement of a batch: 2,000 rows of ten values (20,002 parameters with the
/// fence's) stay below SQLite's 32,766 and PostgreSQL's 65,535, and keep each fenced
/// transaction short, tens of milliseconds (the lease's renewal, on its own pool, waits for at
/// most one of them). Fewer, larger chunks are what a burst on SQLite's one writer needs: each
/// transaction costs a commit and a turn.
const BATCH_ROWS: usize = 2000;

impl Db {
    /// The `n`th parameter of a batch statement written in order: `$n` on PostgreSQL, a
    /// positional `?` on SQLite, whose parser looks each `$n` (or `?n`) up in a list of the
    /// names so far — quadratic in a batch's 5,000 parameters (130 ms for 500 rows, against
    /// 14 ms positional).
    fn param(&self, n: usize) -> String {
        match self.backend {
            super::conn::Backend::Sqlite => "?".into(),
            super::conn::Backend::Postgres => format!("${n}"),
        }
    }

    /// `(p1, p2, …), (…)`: `rows` groups of `width` parameters numbered from `first`, bound in
    /// that order (see [`Db::param`]).
    fn placeholders(&self, rows: usize, width: usize, first: usize) -> String {
        let mut s = String::with_capacity(rows * width * 6);
        for r in 0..rows {
            if r > 0 {
                s.push_str(", ");
            }
            s.push('(');
            for c in 0..width {
                if c > 0 {
                    s.push_str(", ");
                }
                s.push_str(&self.param(first + r * width + c));
            }
            s.push(')');
        }
        s
    }

    /// The fence condition of a batch statement whose last two parameters, after `n`, are the
    /// fence's holder and epoch.
    fn batch_fence(&self, n: usize) -> String {
        self.fence_condition(&self.param(n + 1), &self.param(n + 2))
    }

    /// One transaction of a batch insert: the rows that are new, and the cursor of each job
    /// with a slot's first attempt among them moved up to its latest such slot — all under
    /// the fence ([`Db::fence_sql`], as for one row). The answer per row, in order.
    async fn insert_chunk(&self, rows: &[&RunRow]) -> Result<Vec<bool>> {
        const WIDTH: usize = 10;
        let (holder, epoch) = self.fence_binds();
        let fenced = self.fence.is_some();
        let n = rows.len() * WIDTH;
        // First without RETURNING: on SQLite every returned row is a message from the
        // connection's thread, and a chunk whose rows are all new (the usual case) needs only
        // the count. When some are not new, the transaction is rolled back and made again with
        // RETURNING, which names the rows this insert stored.
        let insert = format!(
            "INSERT INTO runs (id, job, slot_key, trigger, attempt, scheduled_for, state, record, created_at, epoch) \
             SELECT * FROM (VALUES {}) AS v WHERE {} ON CONFLICT (job, slot_key) DO NOTHING",
            self.placeholders(rows.len(), WIDTH, 1),
            self.batch_fence(n)
        );
        let insert_returning = format!("{insert} RETURNING id");
        // The latest first-attempt slot per job: the cursor it moves to.
        let mut cursors: std::collections::BTreeMap<&str, DateTime<Utc>> = Default::default();
        for row in rows {
            if row.trigger == Trigger::Scheduled && row.attempt == 0 {
                let c = cursors
                    .entry(row.run.job.as_str())
                    .or_insert(row.run.scheduled_for);
                *c = (*c).max(row.run.scheduled_for);
            }
        }
        let m = cursors.len() * 2;
        let cursor_sql = format!(
            "UPDATE jobs SET cursor = v.column2 FROM (VALUES {}) AS v \
             WHERE jobs.name = v.column1 AND jobs.cursor < v.column2 AND {}",
            self.placeholders(cursors.len(), 2, 1),
            self.batch_fence(m)
        );
        let bind_rows = |sql| {
            // When the database takes the rows (after any wait for the writer's turn).
            let created = ts(Utc::now());
            let mut q = sqlx::query(sql);
            for row in rows {
                q = bind_row(q, row, created.clone(), epoch);
            }
            if fenced {
                q = q.bind(holder.clone()).bind(epoch);
            }
            q
        };
        let stored: Option<std::collections::HashSet<String>> = async {
            let _turn = self.bulk_write_turn().await;
            let mut tx = self.bulk_pool.begin().await?;
            let inserted = bind_rows(&insert).execute(&mut *tx).await?.rows_affected();
            let stored = if inserted == rows.len() as u64 {
                None
            } else {
                tx.rollback().await?;
                tx = self.bulk_pool.begin().await?;
                let ids = bind_rows(&insert_returning).fetch_all(&mut *tx).await?;
                Some(ids.iter().map(|r| r.get::<String, _>(0)).collect())
            };
            if !cursors.is_empty() {
                let mut q = sqlx::query(&cursor_sql);
                for (job, slot) in &cursors {
                    q = q.bind(*job).bind(ts(*slot));
                }
                if fenced {
                    q = q.bind(holder.clone()).bind(epoch);
                }
                q.execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(stored)
        }
        .await
        .map_err(db_err)?;
        for job in cursors.keys() {
            self.cache.forget(job);
        }
        let Some(stored) = stored else {
            return Ok(vec![true; rows.len()]);
        };
        // Fewer rows than asked: slots with their row already, or the lease lost.
        if !self.fence_holds().await? {
            return Err(self.fenced_out());
        }
        Ok(rows
            .iter()
            .map(|r| stored.contains(r.run.id.as_str()))
            .collect())
    }

    /// Moves a job's cursor up to `slot` unless it is past it already.
    async fn set_cursor_if_behind(&self, job: &str, slot: DateTime<Utc>) -> Result<()> {
        let q = sqlx::query("UPDATE jobs SET cursor = $1 WHERE name = $2 AND cursor < $1")
            .bind(ts(slot))
            .bind(job);
        self.write_job_row(job, q).await
    }

    /// A scheduler's update of a job row (`sql` binds `value` if any, then the job's name),
    /// done only while its fence holds the lease.
    async fn fenced_update(&self, sql: &str, value: Option<String>, job: &str) -> Result<()> {
        let n = 1 + usize::from(value.is_some());
        let sql = format!("{sql} AND {}", self.fence_sql(n + 1, n + 2));
        let mut q = sqlx::query(&sql);
        if let Some(v) = value {
            q = q.bind(v);
        }
        q = q.bind(job);
        if self.fence.is_some() {
            let (h, e) = self.fence_binds();
            q = q.bind(h).bind(e);
        }
        let r = q.execute(&self.pool).await;
        self.cache.forget(job);
        if r.map_err(db_err)?.rows_affected() == 0 && !self.fence_holds().await? {
            return Err(self.fenced_out());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(jobs: &[(&str, usize)]) -> Vec<RunRow> {
        let mut out = Vec::new();
        for (job, n) in jobs {
            for i in 0..*n {
                let req = telejob_core::run::RunRequest::new(
                    JobName::new(*job).expect("name"),
                    "store:c",
                    "true",
                );
                out.push(RunRow {
                    run: Run::pending(&req),
                    slot_key: format!("manual:{i}"),
                    trigger: Trigger::Manual,
                    attempt: 0,
                });
            }
        }
        out
    }

    #[test]
    fn a_batch_is_chunked_with_each_jobs_rows_together_where_they_fit() {
        let most = BATCH_ROWS * 3 / 5;
        let r = rows(&[("a", most), ("b", most), ("c", 1), ("a2", BATCH_ROWS - 1)]);
        let (chunks, whole) = chunks_by_job(&r);
        assert!(whole);
        let jobs = |c: &Vec<usize>| {
            let mut j: Vec<&str> = c.iter().map(|&i| r[i].run.job.as_str()).collect();
            j.dedup();
            j
        };
        assert_eq!(
            chunks.iter().map(jobs).collect::<Vec<_>>(),
            [vec!["a"], vec!["b", "c"], vec!["a2"]]
        );
        let mut all: Vec<usize> = chunks.concat();
        all.sort_unstable();
        assert_eq!(all, (0..r.len()).collect::<Vec<_>>(), "every row once");
        // A job with more rows than a chunk holds is split, and the batch says so.
        let r = rows(&[("big", BATCH_ROWS + 1), ("x", 2)]);
        let (chunks, whole) = chunks_by_job(&r);
        assert!(!whole);
        assert!(chunks.iter().all(|c| c.len() <= BATCH_ROWS));
        assert_eq!(chunks.concat().len(), r.len());
    }
}
