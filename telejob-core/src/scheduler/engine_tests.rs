//! The engine with an injected clock (tokio's paused time) and a scripted compute backend.

use std::sync::Mutex as StdMutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

use super::clock::TokioClock;
use super::notify::NoObserver;
use super::notify::{EventKind, JobEvent};
use super::persist::MemorySchedulerStore;
use super::*;
use crate::compute::{ComputeCapabilities, LaunchOptions, RunEvent};
use crate::job::JobSpec;
use crate::policy::{MissedPolicy, OverlapPolicy};
use crate::run::RunRequest;
use crate::schedule::ScheduleSpec;

/// Runs "succeed after N seconds" (`ok N`), "fail after N seconds" (`fail N`) or "time out after
/// N seconds" (`timeout N`) in virtual time.
#[derive(Debug, Default)]
struct Scripted {
    runs: StdMutex<HashMap<RunId, (watch::Receiver<Run>, CancellationToken)>>,
    launched: StdMutex<Vec<RunRequest>>,
}

#[async_trait]
impl Compute for Scripted {
    fn capabilities(&self) -> ComputeCapabilities {
        let mut c = ComputeCapabilities::named("scripted");
        c.cancel = true;
        c
    }

    async fn launch(&self, req: RunRequest, opts: LaunchOptions) -> Result<()> {
        let (tx, rx) = watch::channel(Run::pending(&req));
        let cancel = CancellationToken::new();
        self.runs
            .lock()
            .expect("lock")
            .insert(req.run_id.clone(), (rx, cancel.clone()));
        self.launched.lock().expect("lock").push(req.clone());
        let mut words = req.command.split_whitespace();
        let (verb, secs) = (
            words.next().unwrap_or("ok").to_string(),
            words.next().and_then(|s| s.parse().ok()).unwrap_or(1),
        );
        tokio::spawn(async move {
            if let Some(ev) = &opts.events {
                ev.emit(RunEvent::State(RunState::Running));
            }
            let mut run = Run::pending(&req);
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(secs)) => {
                    run.state = match verb.as_str() {
                        "fail" => RunState::Failed,
                        "timeout" => RunState::TimedOut,
                        _ => RunState::Succeeded,
                    };
                }
                () = cancel.cancelled() => run.state = RunState::Cancelled,
            }
            run.phases.finished = Some(Utc::now());
            if let Some(ev) = &opts.events {
                ev.emit(RunEvent::State(run.state));
            }
            tx.send_replace(run);
        });
        Ok(())
    }

    async fn wait(&self, run: &RunId) -> Result<Run> {
        let mut rx = self
            .runs
            .lock()
            .expect("lock")
            .get(run)
            .map(|(r, _)| r.clone())
            .ok_or_else(|| Error::NotFound(run.to_string()))?;
        let r = rx
            .wait_for(|r| r.phases.finished.is_some())
            .await
            .map_err(|_| Error::Cancelled)?;
        Ok(r.clone())
    }

    async fn cancel(&self, run: &RunId) -> Result<()> {
        if let Some((_, c)) = self.runs.lock().expect("lock").get(run) {
            c.cancel();
        }
        Ok(())
    }

    async fn status(&self, run: &RunId) -> Result<Option<Run>> {
        Ok(self
            .runs
            .lock()
            .expect("lock")
            .get(run)
            .map(|(r, _)| r.borrow().clone()))
    }
}

#[derive(Debug, Default)]
struct Recorder(StdMutex<Vec<JobEvent>>);

#[async_trait]
impl Notifier for Recorder {
    async fn notify(&self, event: JobEvent) {
        self.0.lock().expect("lock").push(event);
    }
}

use crate::testing::at as t;

struct Fx {
    store: Arc<MemorySchedulerStore>,
    compute: Arc<Scripted>,
    events: Arc<Recorder>,
    clock: Arc<TokioClock>,
}

impl Fx {
    fn new(start: &str) -> Self {
        Self {
            store: Arc::new(MemorySchedulerStore::new()),
            compute: Arc::new(Scripted::default()),
            events: Arc::new(Recorder::default()),
            clock: Arc::new(TokioClock::starting_at(t(start))),
        }
    }

    fn scheduler(&self) -> Scheduler {
        Scheduler::new(SchedulerParts {
            store: self.store.clone(),
            compute: self.compute.clone(),
            clock: self.clock.clone(),
            notifier: self.events.clone(),
            observer: Arc::new(NoObserver),
            limits: ValidationLimits::default(),
            max_running_per_owner: None,
        })
    }

    /// A scheduler over the fixture, started.
    /// A scheduler started at `now` over one job `name` that runs `command` daily at noon,
    /// its cursor at 11:00 on 2014-03-08.
    async fn started_noon(now: &str, name: &str, command: &str) -> (Self, Scheduler) {
        let fx = Self::new(now);
        fx.add(noon(name, command), "2014-03-08T11:00:00Z");
        let s = fx.started().await;
        (fx, s)
    }

    async fn started(&self) -> Scheduler {
        let s = self.scheduler();
        s.start().await.expect("start");
        s
    }

    fn add(&self, spec: JobSpec, cursor: &str) {
        self.store
            .put_job(JobState {
                spec,
                owner: "alice".into(),
                code: Some("/code.tgz".into()),
                paused: false,
                expired: false,
                cursor: t(cursor),
                last_failed: false,
            })
            .expect("job");
    }

    /// (slot, state) of every run of `job`.
    fn runs(&self, job: &str) -> Vec<(String, RunState)> {
        self.store
            .runs(job)
            .into_iter()
            .map(|(_, r)| {
                (
                    r.scheduled_for.format("%m-%dT%H:%M:%S").to_string(),
                    r.state,
                )
            })
            .collect()
    }

    fn events(&self) -> Vec<EventKind> {
        self.events
            .0
            .lock()
            .expect("lock")
            .iter()
            .map(|e| e.kind)
            .collect()
    }
}

/// A job daily at noon running `command`.
fn noon(name: &str, command: &str) -> JobSpec {
    job(
        name,
        ScheduleSpec::daily(crate::schedule::TimeOfDay::NOON),
        command,
    )
}

/// [`noon`] with `retries` retries, 60 s apart at first.
fn retried(name: &str, command: &str, retries: u32) -> JobSpec {
    let mut spec = noon(name, command);
    spec.max_retries = retries;
    spec.retry_backoff_seconds = 60;
    spec
}

fn job(name: &str, schedule: ScheduleSpec, command: &str) -> JobSpec {
    let mut s = JobSpec::new(name);
    s.schedule = schedule;
    s.command = command.into();
    s
}

async fn advance_to(fx: &Fx, to: &str) {
    let d = (t(to) - fx.clock.now()).to_std().expect("forward");
    tokio::time::sleep(d).await;
    // Let the tasks woken at the deadline record what they did.
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_daily_job_fires_once_a_day_on_time() {
    let (fx, s) = Fx::started_noon("2014-03-08T11:00:00Z", "daily", "ok 60").await;
    advance_to(&fx, "2014-03-10T13:00:00Z").await;
    let want: Vec<(String, RunState)> = ["03-08", "03-09", "03-10"]
        .iter()
        .map(|d| (format!("{d}T12:00:00"), RunState::Succeeded))
        .collect();
    assert_eq!(fx.runs("daily"), want);
    let launched = fx.compute.launched.lock().expect("lock").len();
    assert_eq!(launched, 3);
    s.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_slot_never_runs_twice_across_a_restart() {
    let (fx, s1) = Fx::started_noon("2014-03-08T11:59:00Z", "once", "ok 10").await;
    advance_to(&fx, "2014-03-08T12:00:30Z").await;
    s1.shutdown().await;
    // A second scheduler over the same store: the cursor says the slot is handled, and even a
    // forced re-insert of the slot is refused.
    let mut js = fx.store.job("once").expect("job");
    js.cursor = t("2014-03-08T11:00:00Z");
    fx.store.put_job(js).expect("rewind the cursor");
    let s2 = fx.started().await;
    advance_to(&fx, "2014-03-08T12:05:00Z").await;
    assert_eq!(
        fx.runs("once"),
        vec![("03-08T12:00:00".into(), RunState::Succeeded)]
    );
    assert_eq!(
        fx.compute.launched.lock().expect("lock").len(),
        1,
        "launched once"
    );
    s2.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn missed_slots_after_downtime_follow_the_policy_and_are_recorded() {
    for (policy, want_runs) in [
        (MissedPolicy::Latest, 1),
        (MissedPolicy::Skip, 0),
        (MissedPolicy::CatchUp, 2),
    ] {
        // Down since the 4th: the 5th, 6th, 7th and (1 h late) 8th are due at start.
        let fx = Fx::new("2014-03-08T13:00:00Z");
        let mut spec = noon("m", "ok 5");
        spec.missed = policy;
        spec.catch_up_limit = 2;
        fx.add(spec, "2014-03-04T12:00:00Z");
        let s = fx.started().await;
        advance_to(&fx, "2014-03-08T13:10:00Z").await;
        let runs = fx.runs("m");
        assert_eq!(
            runs.len(),
            4,
            "{policy:?}: every due slot is recorded: {runs:?}"
        );
        let ran = runs
            .iter()
            .filter(|(_, s)| *s == RunState::Succeeded)
            .count();
        let missed = runs.iter().filter(|(_, s)| *s == RunState::Missed).count();
        assert_eq!(
            (ran, missed),
            (want_runs, 4 - want_runs),
            "{policy:?}: {runs:?}"
        );
        assert_eq!(
            fx.events()
                .iter()
                .filter(|k| **k == EventKind::Missed)
                .count(),
            4 - want_runs
        );
        // Scheduling goes on.
        assert_eq!(
            s.next_fire(&JobName::new("m").expect("name")),
            Some(t("2014-03-09T12:00:00Z"))
        );
        s.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn overlap_policies() {
    use RunState::*;
    let every_minute = ScheduleSpec::cron("* * * * *");
    for (policy, want) in [
        (OverlapPolicy::Forbid, vec![Succeeded, Missed]),
        (OverlapPolicy::Allow, vec![Succeeded, Succeeded]),
        (OverlapPolicy::Replace, vec![Cancelled, Succeeded]),
    ] {
        let fx = Fx::new("2014-03-08T12:00:30Z");
        let mut spec = job("o", every_minute.clone(), "ok 90");
        spec.overlap = policy;
        fx.add(spec, "2014-03-08T12:00:30Z");
        let s = fx.started().await;
        // Slots at 12:01 and 12:02; the first run lasts 90 s.
        advance_to(&fx, "2014-03-08T12:02:30Z").await;
        let mut js = fx.store.job("o").expect("job");
        js.paused = true;
        s.upsert(js).await.expect("pause");
        advance_to(&fx, "2014-03-08T12:10:00Z").await;
        let states: Vec<RunState> = fx.runs("o").into_iter().map(|(_, s)| s).collect();
        assert_eq!(states, want, "{policy:?}");
        s.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn failures_retry_with_exponential_backoff_and_timeouts_only_when_asked() {
    let fx = Fx::new("2014-03-08T11:59:00Z");
    fx.add(retried("r", "fail 1", 2), "2014-03-08T11:00:00Z");
    let mut spec = noon("t", "timeout 1");
    spec.max_retries = 2;
    fx.add(spec, "2014-03-08T11:00:00Z");
    let s = fx.started().await;
    advance_to(&fx, "2014-03-08T12:30:00Z").await;
    let launched: Vec<(String, String)> = fx
        .compute
        .launched
        .lock()
        .expect("lock")
        .iter()
        .map(|r| {
            (
                r.job.to_string(),
                r.scheduled_for.format("%H:%M").to_string(),
            )
        })
        .collect();
    let r_runs = launched.iter().filter(|(j, _)| j == "r").count();
    assert_eq!(r_runs, 3, "first attempt and two retries: {launched:?}");
    assert_eq!(
        launched.iter().filter(|(j, _)| j == "t").count(),
        1,
        "timeouts are not retried by default"
    );
    // Retries keep the slot they are for, and every attempt is its own row.
    let rows = fx.store.runs("r");
    assert!(
        rows.iter()
            .all(|(_, r)| r.scheduled_for == t("2014-03-08T12:00:00Z"))
    );
    let keys: Vec<&str> = rows.iter().map(|(row, _)| row.slot_key.as_str()).collect();
    assert!(
        keys.contains(&"slot:2014-03-08T12:00:00Z#retry2"),
        "{keys:?}"
    );
    // The slot's final outcome is told once; the attempts before it are retries.
    let of_r: Vec<EventKind> = fx
        .events
        .0
        .lock()
        .expect("lock")
        .iter()
        .filter(|e| e.job.as_str() == "r")
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        of_r,
        [EventKind::Retrying, EventKind::Retrying, EventKind::Failed]
    );
    s.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn retries_wait_out_their_backoff() {
    let fx = Fx::new("2014-03-08T11:59:00Z");
    fx.add(retried("b", "fail 1", 2), "2014-03-08T11:00:00Z");
    let s = fx.started().await;
    // Attempt 0 at 12:00:00 fails at :01; retry 1 at 12:01:01 fails at :02; retry 2 at 12:03:02.
    advance_to(&fx, "2014-03-08T12:03:00Z").await;
    assert_eq!(fx.store.runs("b").len(), 2);
    advance_to(&fx, "2014-03-08T12:03:05Z").await;
    assert_eq!(fx.store.runs("b").len(), 3);
    s.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn end_dates_expire_jobs_and_start_dates_hold_them() {
    let fx = Fx::new("2014-03-08T00:00:00Z");
    let mut spec = noon("e", "ok 1");
    spec.start_at = Some(t("2014-03-09T00:00:00Z"));
    spec.end_at = Some(t("2014-03-10T23:00:00Z"));
    fx.add(spec, "2014-03-08T00:00:00Z");
    let s = fx.started().await;
    advance_to(&fx, "2014-03-12T00:00:00Z").await;
    let slots: Vec<String> = fx.runs("e").into_iter().map(|(s, _)| s).collect();
    assert_eq!(slots, vec!["03-09T12:00:00", "03-10T12:00:00"]);
    assert!(fx.store.job("e").expect("job").expired);
    assert!(fx.events().contains(&EventKind::Expired));
    s.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn pause_resume_and_run_now() {
    let (fx, s) = Fx::started_noon("2014-03-08T11:00:00Z", "p", "ok 1").await;
    let name = JobName::new("p").expect("name");
    s.set_paused(&name, true).await.expect("pause");
    advance_to(&fx, "2014-03-09T11:00:00Z").await;
    assert!(fx.runs("p").is_empty(), "paused jobs do not fire");
    s.set_paused(&name, false).await.expect("resume");
    // A manual run does not consume the next slot.
    let id = s.run_now(&name).await.expect("run now");
    advance_to(&fx, "2014-03-09T12:10:00Z").await;
    let runs = fx.store.runs("p");
    assert_eq!(
        runs.len(),
        2,
        "the manual run and the 9th's slot; the 8th is not made up: {runs:?}"
    );
    assert!(
        runs.iter()
            .any(|(row, r)| r.id == id && row.trigger == Trigger::Manual)
    );
    s.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn failure_then_recovery_notifies_once_each() {
    let (fx, s) = Fx::started_noon("2014-03-08T11:00:00Z", "n", "fail 1").await;
    advance_to(&fx, "2014-03-08T13:00:00Z").await;
    let mut js = fx.store.job("n").expect("job");
    js.spec.command = "ok 1".into();
    js.cursor = t("2014-03-08T13:00:00Z");
    s.upsert(js).await.expect("edit");
    advance_to(&fx, "2014-03-10T13:00:00Z").await;
    assert_eq!(fx.events(), vec![EventKind::Failed, EventKind::Recovered]);
    s.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_cancels_runs_in_flight_and_records_it() {
    let (fx, s) = Fx::started_noon("2014-03-08T11:59:59Z", "s", "ok 3600").await;
    advance_to(&fx, "2014-03-08T12:00:10Z").await;
    assert_eq!(
        fx.runs("s"),
        vec![("03-08T12:00:00".into(), RunState::Running)]
    );
    s.shutdown().await;
    assert_eq!(
        fx.runs("s"),
        vec![("03-08T12:00:00".into(), RunState::Cancelled)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_shared_between_worker_threads_fires_every_job_once() {
    // Real time: the minute boundary is 0.3 s away, where 301 jobs come due together and are
    // split between the two workers (an odd count, so the shares differ in size).
    let fx = Fx::new("2014-03-08T11:59:59.700Z");
    let n = 301;
    for i in 0..n {
        fx.add(
            job(&format!("j{i}"), ScheduleSpec::cron("* * * * *"), "ok 0"),
            "2014-03-08T11:59:59Z",
        );
    }
    let s = fx.started().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while fx.compute.launched.lock().expect("lock").len() < n
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.shutdown().await;
    let launched = fx.compute.launched.lock().expect("lock").clone();
    assert_eq!(launched.len(), n, "every job fired");
    for i in 0..n {
        let name = format!("j{i}");
        let runs = fx.runs(&name);
        assert_eq!(runs.len(), 1, "{name}: {runs:?}");
        assert_eq!(runs[0].0, "03-08T12:00:00", "{name}");
    }
}

#[tokio::test(start_paused = true)]
async fn an_abandoning_scheduler_kills_its_runs_but_records_nothing_more() {
    let (fx, s) = Fx::started_noon("2014-03-08T11:59:59Z", "a", "ok 3600").await;
    advance_to(&fx, "2014-03-08T12:00:10Z").await;
    let (_, run) = fx.store.runs("a").pop().expect("a run");
    s.abandon().await;
    // The run was killed, but its row stays in flight for the next owner to interrupt.
    advance_to(&fx, "2014-03-08T12:00:20Z").await;
    let status = crate::testing::known_status(&*fx.compute, &run.id).await;
    assert_eq!(
        status.state,
        RunState::Cancelled,
        "the local run was killed"
    );
    assert_eq!(
        fx.runs("a"),
        vec![("03-08T12:00:00".into(), RunState::Running)],
        "nothing recorded after abandoning"
    );
    // No more fires either.
    advance_to(&fx, "2014-03-09T12:00:10Z").await;
    assert_eq!(fx.runs("a").len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_recovered_interrupted_run_is_retried_per_policy_and_a_manual_one_is_not() {
    let fx = Fx::new("2014-03-08T12:00:30Z");
    fx.add(retried("i", "ok 1", 1), "2014-03-08T12:00:00Z");
    let s = fx.started().await;
    let mut run = Run::pending(
        &RunRequest::new(JobName::new("i").expect("name"), "/code.tgz", "ok 1")
            .with_timeout(Duration::from_secs(60))
            .with_scheduled_for(t("2014-03-08T12:00:00Z")),
    );
    run.state = RunState::Interrupted;
    s.recovered(run.clone(), Trigger::Scheduled, 0).await;
    s.recovered(run, Trigger::Manual, 0).await;
    advance_to(&fx, "2014-03-08T12:02:30Z").await;
    let keys: Vec<String> = fx
        .store
        .runs("i")
        .into_iter()
        .map(|(row, r)| format!("{} {:?}", row.slot_key, r.state))
        .collect();
    assert_eq!(
        keys,
        vec!["slot:2014-03-08T12:00:00Z#retry1 Succeeded".to_string()],
        "one retry, for the scheduled run only"
    );
    s.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_backfill_runs_its_slots_oldest_first_at_most_n_at_a_time() {
    let fx = Fx::new("2014-03-10T00:00:00Z");
    let mut spec = noon("bf", "ok 100");
    spec.backfill_concurrency = 2;
    fx.add(spec, "2014-03-10T00:00:00Z");
    let s = fx.started().await;
    let slots: Vec<_> = (3..=7)
        .rev() // given newest first: the engine still runs the oldest first
        .map(|d| (t(&format!("2014-03-0{d}T12:00:00Z")), 0, RunId::new()))
        .collect();
    let fourth = slots[3].2.clone(); // 03-04
    let ids = s
        .backfill(&JobName::new("bf").expect("name"), slots.clone(), 2)
        .await
        .expect("backfill");
    assert_eq!(ids.len(), 5, "every row recorded at once");
    assert_eq!(fx.runs("bf").len(), 5);
    // A second backfill of the same attempts records nothing: exactly once.
    let again = s
        .backfill(&JobName::new("bf").expect("name"), slots, 2)
        .await
        .expect("backfill");
    assert!(again.is_empty());
    advance_to(&fx, "2014-03-10T00:00:10Z").await;
    let launched = |fx: &Fx| -> Vec<String> {
        fx.compute
            .launched
            .lock()
            .expect("lock")
            .iter()
            .map(|r| r.scheduled_for.format("%d").to_string())
            .collect()
    };
    assert_eq!(launched(&fx), ["03", "04"], "two at a time, oldest first");
    // A queued one is cancelled before its turn... then 03-04's share frees for 03-05.
    let queued = ids[2].clone();
    s.cancel_run(&queued).await.expect("cancel queued");
    s.cancel_run(&fourth).await.expect("cancel running");
    advance_to(&fx, "2014-03-10T00:00:20Z").await;
    assert_eq!(launched(&fx), ["03", "04", "06"]);
    advance_to(&fx, "2014-03-10T00:05:00Z").await;
    assert_eq!(launched(&fx), ["03", "04", "06", "07"]);
    use RunState::*;
    assert_eq!(
        fx.runs("bf").into_iter().map(|r| r.1).collect::<Vec<_>>(),
        [Succeeded, Cancelled, Cancelled, Succeeded, Succeeded]
    );
    let rows = fx.store.runs("bf");
    assert!(rows.iter().all(|(r, _)| r.trigger == Trigger::Backfill));
    assert_eq!(
        fx.store.job("bf").expect("job").cursor,
        t("2014-03-10T00:00:00Z"),
        "a backfill never moves the schedule's cursor"
    );
    s.shutdown().await;
}

/// A memory store that records its batch calls and can refuse a batch's rows.
#[derive(Debug, Default)]
struct BatchSpy {
    mem: MemorySchedulerStore,
    /// Rows per `insert_runs` call.
    batches: StdMutex<Vec<usize>>,
    singles: std::sync::atomic::AtomicUsize,
    /// Refuse every other row of a batch, unstored: `Some(false)` as a passing fault (to be
    /// retried alone), `Some(true)` as fenced.
    refuse: Option<bool>,
}

#[async_trait]
impl SchedulerStore for BatchSpy {
    async fn load_jobs(&self) -> Result<Vec<JobState>> {
        self.mem.load_jobs().await
    }
    async fn insert_run(&self, row: &RunRow) -> Result<bool> {
        self.singles
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if self.refuse == Some(true) {
            return Err(Error::fenced("lease lost"));
        }
        self.mem.insert_run(row).await
    }
    async fn insert_runs(&self, rows: &[RunRow]) -> Vec<Result<bool>> {
        self.batches.lock().expect("lock").push(rows.len());
        let mut out = Vec::new();
        for (i, row) in rows.iter().enumerate() {
            out.push(match self.refuse {
                Some(fenced) if i % 2 == 1 => Err(if fenced {
                    Error::fenced("lease lost")
                } else {
                    Error::persistence("query", "database is locked", false)
                }),
                _ => self.mem.insert_run(row).await,
            });
        }
        out
    }
    async fn update_run(&self, run: &Run) -> Result<()> {
        self.mem.update_run(run).await
    }
    async fn set_cursor(&self, job: &JobName, cursor: DateTime<Utc>) -> Result<()> {
        self.mem.set_cursor(job, cursor).await
    }
    async fn set_expired(&self, job: &JobName) -> Result<()> {
        self.mem.set_expired(job).await
    }
}

/// 300 every-minute jobs due at 12:00 over `spy`: the scheduler, started, and the compute.
async fn burst_over(spy: Arc<BatchSpy>) -> (Scheduler, Arc<Scripted>) {
    let clock = Arc::new(TokioClock::starting_at(t("2014-03-08T11:59:30Z")));
    for i in 0..300 {
        spy.mem
            .put_job(JobState {
                spec: job(&format!("b{i}"), ScheduleSpec::cron("* * * * *"), "ok 1"),
                owner: format!("owner{}", i % 3),
                code: Some("/code.tgz".into()),
                paused: false,
                expired: false,
                cursor: t("2014-03-08T11:59:00Z"),
                last_failed: false,
            })
            .expect("job");
    }
    let compute = Arc::new(Scripted::default());
    let s = Scheduler::new(SchedulerParts {
        store: spy,
        compute: compute.clone(),
        clock: clock.clone(),
        notifier: Arc::new(Recorder::default()),
        observer: Arc::new(NoObserver),
        limits: ValidationLimits::default(),
        max_running_per_owner: None,
    });
    s.start().await.expect("start");
    let d = (t("2014-03-08T12:00:00.500Z") - clock.now())
        .to_std()
        .expect("forward");
    tokio::time::sleep(d).await;
    for _ in 0..200 {
        tokio::task::yield_now().await;
    }
    (s, compute)
}

fn runs_per_job(mem: &MemorySchedulerStore) -> Vec<usize> {
    (0..300).map(|i| mem.runs(&format!("b{i}")).len()).collect()
}

#[tokio::test(start_paused = true)]
async fn jobs_due_at_one_instant_are_recorded_in_one_batch_and_each_runs_once() {
    let spy = Arc::new(BatchSpy::default());
    let (s, compute) = burst_over(spy.clone()).await;
    assert_eq!(
        *spy.batches.lock().expect("lock"),
        [300],
        "the burst's 300 slots are one batch"
    );
    assert_eq!(
        spy.singles.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no slot of the burst is inserted alone"
    );
    assert_eq!(compute.launched.lock().expect("lock").len(), 300);
    assert!(runs_per_job(&spy.mem).iter().all(|n| *n == 1));
    for i in 0..300 {
        assert_eq!(
            spy.mem.job(&format!("b{i}")).expect("job").cursor,
            t("2014-03-08T12:00:00Z"),
            "the cursor moved with the batch"
        );
    }
    s.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn rows_a_batch_could_not_store_are_inserted_alone_once_unless_the_lease_is_lost() {
    let spy = Arc::new(BatchSpy {
        refuse: Some(false),
        ..BatchSpy::default()
    });
    let (s, compute) = burst_over(spy.clone()).await;
    assert_eq!(
        spy.singles.load(std::sync::atomic::Ordering::SeqCst),
        150,
        "the 150 rows the batch refused are inserted alone"
    );
    assert_eq!(compute.launched.lock().expect("lock").len(), 300);
    assert!(
        runs_per_job(&spy.mem).iter().all(|n| *n == 1),
        "every slot runs once"
    );
    s.shutdown().await;

    // Fenced: the rows are not tried again (the lease is another scheduler's).
    let spy = Arc::new(BatchSpy {
        refuse: Some(true),
        ..BatchSpy::default()
    });
    let (s, compute) = burst_over(spy.clone()).await;
    assert_eq!(spy.singles.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert_eq!(compute.launched.lock().expect("lock").len(), 150);
    s.shutdown().await;
}
