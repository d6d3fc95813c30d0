//! Replicas: any number of `telejob serve` processes on one database serve the API and the
//! dashboard; the one holding the scheduler lease runs the scheduler.
//!
//! * **Lease** ([`crate::server::db::Fence`]): a row with holder, epoch and expiry on the
//!   database's clock, renewed every `lease/5`. A leader stops firing at 4/5 of the lease after
//!   its last renewal *began*, whether or not the database answers, so it has stopped before the
//!   row can expire and another replica take over. Every slot insert is conditional on the
//!   leader's epoch still holding the lease, so a stale leader's insert fails.
//! * **Takeover**: followers try every `lease/10`; a free or expired lease is taken, and so is
//!   one whose holder was a process of this very host that no longer exists (a restart does not
//!   wait for the lease to expire). The new leader re-adopts remote (EC2) runs, marks local
//!   runs of the old leader `interrupted` (retried per policy), and starts the reaper.
//! * **Changes** made on any replica reach the leader through the `job_changes` table, polled
//!   every half second by the leader: `job` (re-read the row), `run` (run now), `cancel`.
//!   Polling, not LISTEN/NOTIFY, so that SQLite and PostgreSQL behave alike and a missed
//!   notification cannot lose a change; the feed's gaps (a sequence number taken by a
//!   transaction that commits later) are waited for up to [`GAP_WAIT`].

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use telejob_aws::Ec2Compute;
use telejob_core::job::JobName;
use telejob_core::run::RunId;
use telejob_core::scheduler::persist::{RunRow, Trigger};
use telejob_core::scheduler::{Scheduler, SchedulerParts};
use tokio_util::sync::CancellationToken;

use super::db::{ChangeKind, Db, Fence, JobRow, LeaseRow};
use super::metrics::Metrics;

/// How long a change feed gap (a sequence number not yet visible) is waited for.
pub const GAP_WAIT: Duration = Duration::from_secs(10);

/// How long a follower waits for the leader to record a run it was asked to start.
const RUN_NOW_WAIT: Duration = Duration::from_secs(10);

/// What this replica does now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Holds the lease and runs the scheduler.
    Leader,
    /// Serves the API and the dashboard; another replica schedules.
    Follower,
}

/// Settings of the lease.
#[derive(Debug, Clone, Copy)]
pub struct LeaseSettings {
    /// How long a lease lasts without renewal; takeover comes at most this long (plus a
    /// tenth) after the leader's death.
    pub ttl: Duration,
}

impl Default for LeaseSettings {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(10),
        }
    }
}

struct Leading {
    fence: Fence,
    scheduler: Scheduler,
    timer: tokio::task::JoinHandle<()>,
    reaper: Option<tokio::task::JoinHandle<()>>,
    /// Last moment this replica may fire: 4/5 of the lease after its last renewal began.
    valid_until: Instant,
}

/// Where this replica is in the change feed.
#[derive(Debug, Default)]
struct FeedCursor {
    /// Every change at or below it has been seen (or its gap given up on).
    watermark: i64,
    /// Changes above the watermark already seen.
    seen: BTreeSet<i64>,
    /// Since when the first gap above the watermark has been open.
    gap_since: Option<Instant>,
}

impl FeedCursor {
    fn saw(&mut self, seq: i64) {
        self.seen.insert(seq);
        self.advance();
    }

    fn advance(&mut self) {
        while self.seen.remove(&(self.watermark + 1)) {
            self.watermark += 1;
        }
        if self.seen.is_empty() {
            self.gap_since = None;
            return;
        }
        let since = *self.gap_since.get_or_insert_with(Instant::now);
        if since.elapsed() > GAP_WAIT {
            // A sequence number taken by a transaction that rolled back: never coming.
            self.watermark += 1;
            self.gap_since = None;
            self.advance();
        }
    }
}

/// This replica's part in the cluster.
pub struct Cluster {
    id: String,
    db: Db,
    settings: LeaseSettings,
    parts: SchedulerParts,
    ec2: Option<Ec2Compute>,
    reap_every: Duration,
    metrics: Arc<Metrics>,
    leading: Mutex<Option<Leading>>,
    feed: Mutex<FeedCursor>,
    last_lease: Mutex<Option<LeaseRow>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("id", &self.id)
            .field("role", &self.role())
            .finish_non_exhaustive()
    }
}

/// A mutex's guard; a panic elsewhere while it was held leaves data that is still usable here.
fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Cancels a job's runs in flight and forgets the job.
/// No leader recorded what a follower handed over in time.
fn no_leader(op: &'static str) -> telejob_core::Error {
    telejob_core::Error::Compute {
        op,
        reason: "no scheduler recorded the run within 10 s (is a leader up?); try again".into(),
        retryable: true,
        source: None,
    }
}

async fn disarm(s: &Scheduler, job: &JobName) -> telejob_core::Result<()> {
    for r in s.active_runs().remove(job).unwrap_or_default() {
        s.cancel_run(&r).await?;
    }
    s.remove(job);
    Ok(())
}

/// This process's name in the lease: host, boot, PID namespace and PID, plus a random part.
fn holder_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    let mut r = [0u8; 4];
    let _ = getrandom::fill(&mut r);
    format!(
        "{host}/{}/{}/{}",
        machine_scope(),
        std::process::id(),
        hex::encode(r)
    )
}

/// What two processes must share for one to tell whether the other's PID is alive: the boot
/// and the PID namespace.
fn machine_scope() -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().chars().take(8).collect::<String>())
        .unwrap_or_default();
    let pidns = std::fs::read_link("/proc/self/ns/pid")
        .ok()
        .and_then(|p| {
            p.to_str()
                .and_then(|s| s.strip_prefix("pid:["))
                .map(|s| s.trim_end_matches(']').to_string())
        })
        .unwrap_or_default();
    format!("{boot}-{pidns}")
}

/// Whether `holder` names a process of this host (same boot, same PID namespace) that no longer
/// exists (or is a zombie).
fn holder_is_dead_here(holder: &str) -> bool {
    let mut parts = holder.rsplitn(3, '/');
    let (_, pid, rest) = (parts.next(), parts.next(), parts.next());
    let (Some(pid), Some(rest)) = (pid, rest) else {
        return false;
    };
    let Some(scope) = rest.rsplit('/').next() else {
        return false;
    };
    if scope != machine_scope() || pid.parse::<u32>().is_err() {
        return false;
    }
    // Gone, or a zombie its parent has not reaped yet: either way it holds nothing any more.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

impl Cluster {
    /// A replica over `db` whose scheduler, when it leads, is made of `parts` (its store is
    /// replaced by the fenced database).
    pub fn new(
        db: Db,
        settings: LeaseSettings,
        parts: SchedulerParts,
        ec2: Option<Ec2Compute>,
        reap_every: Duration,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(Self {
            id: holder_id(),
            db,
            settings,
            parts,
            ec2,
            reap_every,
            metrics,
            leading: Mutex::new(None),
            feed: Mutex::new(FeedCursor::default()),
            last_lease: Mutex::new(None),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Leading>> {
        locked(&self.leading)
    }

    /// This replica's name in the lease.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Leader or follower.
    pub fn role(&self) -> Role {
        if self.lock().is_some() {
            Role::Leader
        } else {
            Role::Follower
        }
    }

    /// Who held the lease at the last look (empty before any leader), without asking the
    /// database.
    pub fn lease_holder(&self) -> Option<String> {
        locked(&self.last_lease).as_ref().map(|l| l.holder.clone())
    }

    /// The scheduler, while this replica leads.
    pub fn scheduler(&self) -> Option<Scheduler> {
        self.lock().as_ref().map(|l| l.scheduler.clone())
    }

    /// Runs in flight on the leader, per job (empty on followers).
    pub fn active_runs(&self) -> HashMap<JobName, Vec<RunId>> {
        self.scheduler()
            .map(|s| s.active_runs())
            .unwrap_or_default()
    }

    /// When the job fires next, from its row alone (any replica can answer).
    pub fn next_fire(&self, j: &JobRow) -> Option<DateTime<Utc>> {
        let job = j.spec.validate(&self.parts.limits).ok()?;
        telejob_core::scheduler::next_fire_of(&job, j.paused, j.expired, j.cursor)
    }

    /// A job's row changed (or the job is gone): the leader's scheduler follows, on this
    /// replica at once, on another through the change feed.
    ///
    /// # Errors
    ///
    /// Database errors, or a spec the scheduler refuses.
    pub async fn job_changed(&self, name: &str) -> telejob_core::Result<()> {
        self.db
            .record_change(name, &ChangeKind::Job, &self.id)
            .await?;
        if let Some(s) = self.scheduler() {
            self.apply_job(&s, name).await?;
        }
        Ok(())
    }

    async fn apply_job(&self, s: &Scheduler, name: &str) -> telejob_core::Result<()> {
        let job = JobName::new(name.to_string())?;
        match self.db.job_fresh(name).await? {
            Some(row) => s.upsert(row.state(self.db.last_failed(name).await?)).await,
            None => disarm(s, &job).await,
        }
    }

    /// Cancels the runs of a job about to be deleted: at once on the leader, through the
    /// change feed from a follower (for the runs the database has in flight).
    ///
    /// # Errors
    ///
    /// The compute backend's, or database errors.
    pub async fn cancel_job_runs(&self, name: &str) -> telejob_core::Result<()> {
        let job = JobName::new(name.to_string())?;
        if let Some(s) = self.scheduler() {
            return disarm(&s, &job).await;
        }
        for id in self.db.in_flight_ids(name).await? {
            self.db
                .record_change(name, &ChangeKind::Cancel(id), &self.id)
                .await?;
        }
        Ok(())
    }

    /// Runs a job now: on the leader directly; from a follower, through the change feed,
    /// answering once the leader has recorded the run.
    ///
    /// # Errors
    ///
    /// The scheduler's, or a leader that did not record the run within 10 s.
    pub async fn run_now(&self, name: &str) -> telejob_core::Result<RunId> {
        let job = JobName::new(name.to_string())?;
        if let Some(s) = self.scheduler() {
            return s.run_now(&job).await;
        }
        let id = RunId::new();
        self.db
            .record_change(name, &ChangeKind::RunNow(id.to_string()), &self.id)
            .await?;
        self.wait_recorded(id).await
    }

    /// Replays run `of` of job `job` as a new run: on the leader directly; from a follower,
    /// through the change feed, answering once the leader has recorded the run.
    ///
    /// # Errors
    ///
    /// As [`Cluster::run_now`], or a run that cannot be replayed.
    pub async fn replay(&self, job: &str, of: &str) -> telejob_core::Result<RunId> {
        let id = RunId::new();
        if let Some(s) = self.scheduler() {
            return self.replay_on(&s, job, of, id).await;
        }
        let change = ChangeKind::Replay {
            id: id.to_string(),
            of: of.to_string(),
        };
        self.db.record_change(job, &change, &self.id).await?;
        self.wait_recorded(id).await
    }

    /// The leader's part of a backfill handed over by a follower.
    async fn backfill_on(
        &self,
        s: &Scheduler,
        job: &str,
        slots: &[(DateTime<Utc>, u32, String)],
    ) -> telejob_core::Result<()> {
        let slots = slots
            .iter()
            .filter_map(|(t, a, id)| Some((*t, *a, RunId::parse(id)?)))
            .collect();
        let concurrency = self
            .db
            .job_fresh(job)
            .await?
            .map_or(1, |j| j.spec.backfill_concurrency);
        s.backfill(&JobName::new(job.to_string())?, slots, concurrency)
            .await
            .map(|_| ())
    }

    /// The leader's part of a replay: the original run and the key of the code it ran.
    async fn replay_on(
        &self,
        s: &Scheduler,
        job: &str,
        of: &str,
        id: RunId,
    ) -> telejob_core::Result<RunId> {
        let (run, _) = self
            .db
            .run(of)
            .await?
            .ok_or_else(|| telejob_core::Error::NotFound(format!("run {of}")))?;
        let sha = run.code_sha256.clone().unwrap_or_default();
        let key = self
            .db
            .code_version(job, &sha)
            .await?
            .map(|v| v.key)
            .ok_or_else(|| {
                telejob_core::Error::invalid(
                    "run",
                    format!("the code version run {of} ran ({sha}) has been deleted"),
                )
            })?;
        s.replay(
            &JobName::new(job.to_string())?,
            &run,
            format!("store:{key}"),
            id,
        )
        .await
    }

    /// Backfills `slots` of a job (each its slot, attempt and run id): on the leader directly;
    /// from a follower through the change feed, answering once the leader has recorded them.
    /// Returns the ids recorded (a slot attempt another run took first is left out).
    ///
    /// # Errors
    ///
    /// As [`Cluster::run_now`].
    pub async fn backfill(
        &self,
        job: &str,
        slots: Vec<(DateTime<Utc>, u32, RunId)>,
        concurrency: u32,
    ) -> telejob_core::Result<Vec<RunId>> {
        let name = JobName::new(job.to_string())?;
        if let Some(s) = self.scheduler() {
            return s.backfill(&name, slots, concurrency).await;
        }
        let Some(last) = slots.iter().max_by_key(|s| s.0).cloned() else {
            return Ok(Vec::new());
        };
        let change = ChangeKind::Backfill(
            slots
                .iter()
                .map(|(t, a, id)| (*t, *a, id.to_string()))
                .collect(),
        );
        self.db.record_change(job, &change, &self.id).await?;
        // The leader records the rows oldest first: once the newest slot's attempt has a row,
        // every one has.
        let deadline = Instant::now() + RUN_NOW_WAIT;
        let last_key = RunRow::slot_key(last.0, last.1);
        while self.db.run_with_key(job, &last_key).await?.is_none() {
            if Instant::now() >= deadline {
                return Err(no_leader("backfill"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut ours = Vec::new();
        for (t, a, id) in slots {
            let key = RunRow::slot_key(t, a);
            if self.db.run_with_key(job, &key).await?.as_deref() == Some(id.as_str()) {
                ours.push(id);
            }
        }
        Ok(ours)
    }

    /// Waits until the leader has recorded run `id` (handed over through the feed).
    async fn wait_recorded(&self, id: RunId) -> telejob_core::Result<RunId> {
        let deadline = Instant::now() + RUN_NOW_WAIT;
        while Instant::now() < deadline {
            if self.db.run(id.as_str()).await?.is_some() {
                return Ok(id);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(no_leader("run now"))
    }

    /// Cancels a run in flight: on the leader directly, else through the change feed.
    ///
    /// # Errors
    ///
    /// The compute backend's, or database errors.
    pub async fn cancel_run(&self, job: &str, run: &RunId) -> telejob_core::Result<()> {
        if let Some(s) = self.scheduler() {
            return s.cancel_run(run).await;
        }
        self.db
            .record_change(job, &ChangeKind::Cancel(run.to_string()), &self.id)
            .await
    }

    /// Tries for the lease once, now (at start, so that a lone server schedules from its first
    /// request on).
    pub async fn settle(&self) {
        if self.role() == Role::Follower {
            self.try_lead().await;
        }
    }

    /// Competes for the lease and, while leading, follows the change feed; until `stop`, then
    /// gives the lease up (local runs are cancelled and recorded, remote ones go on).
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let ttl = self.settings.ttl;
        let (renew_every, try_every) = (ttl / 5, ttl / 10);
        let mut next_renew = Instant::now();
        let mut next_prune = Instant::now();
        loop {
            let leading = self.role() == Role::Leader;
            let step = if leading {
                Duration::from_millis(500).min(try_every)
            } else {
                try_every
            };
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(step) => {}
            }
            if leading {
                if Instant::now() >= next_renew {
                    next_renew = Instant::now() + renew_every;
                    self.renew().await;
                }
                if let Some(s) = self.scheduler() {
                    self.follow_feed(&s).await;
                }
                if Instant::now() >= next_prune {
                    next_prune = Instant::now() + Duration::from_secs(600);
                    let _ = self
                        .db
                        .prune_changes(Utc::now() - chrono::Duration::hours(1))
                        .await;
                }
            } else {
                self.try_lead().await;
            }
        }
        self.shutdown().await;
    }

    /// Renews the lease, giving it up when it cannot be renewed before 4/5 of it has passed.
    async fn renew(&self) {
        let Some((fence, valid_until)) = self
            .lock()
            .as_ref()
            .map(|l| (l.fence.clone(), l.valid_until))
        else {
            return;
        };
        let began = Instant::now();
        let left = valid_until.saturating_duration_since(began);
        let ttl_ms = i64::try_from(self.settings.ttl.as_millis()).unwrap_or(i64::MAX);
        match tokio::time::timeout(left, self.db.renew_lease(&fence, ttl_ms)).await {
            Ok(Ok(true)) => {
                self.metrics.renewals.inc();
                if let Some(l) = self.lock().as_mut() {
                    l.valid_until = began + self.settings.ttl * 4 / 5;
                }
            }
            Ok(Ok(false)) => self.step_down("another replica holds the lease now").await,
            Ok(Err(e)) if Instant::now() < valid_until => {
                tracing::warn!(error = %e, "cannot renew the scheduler lease; retrying");
            }
            Ok(Err(e)) => {
                self.step_down(&format!("the lease could not be renewed: {e}"))
                    .await;
            }
            Err(_) => {
                self.step_down("the database did not answer before the lease ran out")
                    .await;
            }
        }
    }

    async fn try_lead(&self) {
        let ttl = self.settings.ttl;
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let began = Instant::now();
        let Ok(Ok(lease)) = tokio::time::timeout(ttl / 2, self.db.lease()).await else {
            return;
        };
        *locked(&self.last_lease) = Some(lease.clone());
        let dead = (lease.remaining_ms > 0 && holder_is_dead_here(&lease.holder)).then(|| Fence {
            holder: lease.holder.clone(),
            epoch: lease.epoch,
        });
        if lease.remaining_ms > 0 && dead.is_none() {
            return;
        }
        let acquired = tokio::time::timeout(
            ttl / 2,
            self.db.acquire_lease(&self.id, ttl_ms, dead.as_ref()),
        )
        .await;
        let Ok(Ok(Some(epoch))) = acquired else {
            return;
        };
        let fence = Fence {
            holder: self.id.clone(),
            epoch,
        };
        // Recovery and loading every job can outlast a lease: keep renewing meanwhile.
        let valid = Mutex::new(began + ttl * 4 / 5);
        let keep = async {
            loop {
                tokio::time::sleep(ttl / 5).await;
                let t = Instant::now();
                if let Ok(Ok(true)) =
                    tokio::time::timeout(ttl / 5, self.db.renew_lease(&fence, ttl_ms)).await
                {
                    self.metrics.renewals.inc();
                    *locked(&valid) = t + ttl * 4 / 5;
                }
            }
        };
        let led = tokio::select! {
            r = self.lead(fence.clone()) => r,
            () = keep => unreachable!("renews for ever"),
        };
        let valid_until = *locked(&valid);
        if let Some(l) = self.lock().as_mut() {
            l.valid_until = valid_until;
        }
        match led {
            Ok(()) => {
                self.metrics.takeovers.inc();
                self.metrics.leader.set(1);
                tracing::info!(epoch, "took the scheduler lease");
                eprintln!("telejob: this replica now runs the scheduler (lease epoch {epoch})");
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot start the scheduler; giving the lease up");
                let _ = self.db.release_lease(&fence).await;
            }
        }
        *locked(&self.last_lease) = self.db.lease().await.ok();
    }

    /// Starts scheduling under `fence`: recovery of the runs earlier leaders left in flight,
    /// then the scheduler and the reaper.
    async fn lead(&self, fence: Fence) -> anyhow::Result<()> {
        let feed_start = self.db.last_change().await?;
        let compute = self.parts.compute.clone();
        let mut adopted = Vec::new();
        let mut interrupted = Vec::new();
        // Every run in flight belongs to an earlier leader: only leaders launch. Remote runs
        // go on without it and are reattached; local runs died with it (or were killed when
        // it lost the lease), and whatever of them still runs on this host is killed.
        for (run, trigger, attempt) in self.db.in_flight().await? {
            if compute.reattach(&run).await.unwrap_or_else(|e| {
                tracing::error!(run = %run.id, error = %e, "cannot reattach the run");
                false
            }) {
                eprintln!("telejob: run {} of {} reattached", run.id, run.job);
                adopted.push((run, trigger, attempt));
                continue;
            }
            let id = run.id.as_str().to_string();
            let killed =
                tokio::task::spawn_blocking(move || telejob_core::sandbox::kill_leftovers(&id))
                    .await
                    .unwrap_or(false);
            let run = self
                .db
                .interrupt(
                    run,
                    "interrupted: the server running it stopped (or lost the scheduler lease) while it was in flight",
                )
                .await?;
            tracing::warn!(run = %run.id, job = %run.job, killed, "run interrupted");
            eprintln!(
                "telejob: run {} of {} was in flight under an earlier scheduler: marked interrupted",
                run.id, run.job
            );
            interrupted.push((run, trigger, attempt));
        }
        let mut parts = self.parts.clone();
        parts.store = Arc::new(self.db.fenced(fence.clone()));
        let scheduler = Scheduler::new(parts);
        let timer = scheduler.start().await?;
        for (run, trigger, attempt) in adopted {
            scheduler.adopt(run, trigger, attempt);
        }
        for (run, trigger, attempt) in interrupted {
            if trigger != Trigger::Manual {
                scheduler.recovered(run, trigger, attempt).await;
            }
        }
        // After reattaching, so that the reaper leaves reattached runs alone.
        let reaper = self.ec2.as_ref().map(|c| c.spawn_reaper(self.reap_every));
        *locked(&self.feed) = FeedCursor {
            watermark: feed_start,
            ..FeedCursor::default()
        };
        *self.lock() = Some(Leading {
            fence,
            scheduler,
            timer,
            reaper,
            valid_until: Instant::now(),
        });
        Ok(())
    }

    /// Applies the changes other replicas made since the last look.
    async fn follow_feed(&self, s: &Scheduler) {
        let from = locked(&self.feed).watermark;
        let Ok(Ok(changes)) =
            tokio::time::timeout(Duration::from_secs(2), self.db.changes_after(from, 1000)).await
        else {
            return;
        };
        for c in changes {
            let new = {
                let mut f = locked(&self.feed);
                let new = c.seq > f.watermark && !f.seen.contains(&c.seq);
                f.saw(c.seq);
                new
            };
            if !new || c.origin == self.id {
                continue;
            }
            let run_id = |id: &str| {
                RunId::parse(id).ok_or_else(|| telejob_core::Error::NotFound(format!("run {id:?}")))
            };
            let r = match &c.kind {
                ChangeKind::Job => self.apply_job(s, &c.job).await,
                ChangeKind::RunNow(id) => match (JobName::new(c.job.clone()), run_id(id)) {
                    (Ok(job), Ok(id)) => s.run_now_as(&job, id).await.map(|_| ()),
                    (Err(e), _) | (_, Err(e)) => Err(e),
                },
                ChangeKind::Cancel(id) => match run_id(id) {
                    Ok(id) => s.cancel_run(&id).await,
                    Err(e) => Err(e),
                },
                ChangeKind::Replay { id, of } => match run_id(id) {
                    Ok(id) => self.replay_on(s, &c.job, of, id).await.map(|_| ()),
                    Err(e) => Err(e),
                },
                ChangeKind::Backfill(slots) => self.backfill_on(s, &c.job, slots).await,
            };
            if let Err(e) = r {
                tracing::warn!(job = %c.job, change = ?c.kind, error = %e, "a change from another replica failed");
            }
        }
        locked(&self.feed).advance();
    }

    /// Stops scheduling at once, leaving runs in flight for the next leader.
    async fn step_down(&self, why: &str) {
        let Some(l) = self.lock().take() else {
            return;
        };
        self.metrics.leader.set(0);
        self.metrics.step_downs.inc();
        tracing::warn!(reason = why, "stopped running the scheduler");
        eprintln!("telejob: this replica stopped running the scheduler: {why}");
        l.timer.abort();
        if let Some(r) = l.reaper {
            r.abort();
        }
        // Not awaited: cancelling local runs must not wait on a database that may be gone.
        tokio::spawn(async move { l.scheduler.abandon().await });
    }

    /// Graceful stop: local runs are cancelled and their end recorded, remote runs go on; the
    /// lease is released so that another replica takes over at once.
    async fn shutdown(&self) {
        let Some(l) = self.lock().take() else {
            return;
        };
        self.metrics.leader.set(0);
        eprintln!("telejob: shutting down: cancelling runs in flight");
        l.scheduler.shutdown().await;
        l.timer.abort();
        if let Some(r) = l.reaper {
            r.abort();
        }
        if let Err(e) = self.db.release_lease(&l.fence).await {
            tracing::warn!(error = %e, "cannot release the scheduler lease");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_holder_is_dead_only_when_its_process_here_is_gone() {
        let me = holder_id();
        assert!(!holder_is_dead_here(&me), "{me}: this process is alive");
        let scope = machine_scope();
        // A PID that cannot exist (above pid_max) on this host: dead.
        assert!(holder_is_dead_here(&format!("h/{scope}/4194305/abcd")));
        // Another boot or PID namespace: unknown, so alive until its lease expires.
        assert!(!holder_is_dead_here("h/other-4026531836/4194305/abcd"));
        assert!(!holder_is_dead_here(""));
        assert!(!holder_is_dead_here("garbage"));
        // A zombie (killed, not yet reaped) holds nothing.
        let mut child = std::process::Command::new("true").spawn().expect("spawn");
        let pid = child.id();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !holder_is_dead_here(&format!("h/{scope}/{pid}/abcd")) {
            assert!(
                Instant::now() < deadline,
                "the exited child never read as dead"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.wait();
    }

    #[test]
    fn the_feed_cursor_waits_for_a_gap_then_moves_past_it() {
        let mut f = FeedCursor {
            watermark: 10,
            ..FeedCursor::default()
        };
        f.saw(11);
        assert_eq!(f.watermark, 11);
        f.saw(13);
        assert_eq!(f.watermark, 11, "12 may still commit");
        f.saw(12);
        assert_eq!(f.watermark, 13);
        f.saw(15);
        f.gap_since = Some(Instant::now() - GAP_WAIT - Duration::from_secs(1));
        f.advance();
        assert_eq!(f.watermark, 15, "a gap older than GAP_WAIT is given up on");
        assert!(f.seen.is_empty());
    }
}
