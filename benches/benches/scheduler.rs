//! Scheduler fire lateness (p50, p99, max) with 1, 1k and 100k jobs, and the memory 10k armed
//! jobs take.
//!
//! Real time, real engine, in-memory persistence and a no-op compute backend: lateness is the
//! wall-clock time from a slot's instant to its `Compute::launch` call. To see many slot
//! boundaries without waiting minutes, the clock is the system clock plus an offset that jumps to
//! just before the next boundary once the engine has handled the previous one.
//!
//! ```sh
//! cargo bench -p telejob-benches --bench scheduler            # full run
//! cargo bench -p telejob-benches --bench scheduler -- --quick # 1k jobs max, fewer boundaries
//! cargo bench -p telejob-benches --bench scheduler -- --jobs 100000 [--daily] # one row only
//! ```
//! Under `cargo test` (no `--bench` flag) it runs a tiny smoke version.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use telejob_benches::percentile;
use telejob_core::compute::{Compute, ComputeCapabilities, LaunchOptions};
use telejob_core::job::{JobSpec, ValidationLimits};
use telejob_core::run::{Run, RunId, RunRequest, RunState};
use telejob_core::schedule::ScheduleSpec;
use telejob_core::scheduler::clock::Clock;
use telejob_core::scheduler::notify::{NoNotifier, NoObserver};
use telejob_core::scheduler::persist::{JobState, MemorySchedulerStore};
use telejob_core::scheduler::{Scheduler, SchedulerParts};

/// System time plus a jumpable offset (microseconds).
#[derive(Debug)]
struct JumpClock {
    offset_us: AtomicI64,
    jumped: tokio::sync::Notify,
}

impl JumpClock {
    fn set_now(&self, virt: DateTime<Utc>) {
        self.offset_us.store(
            (virt - Utc::now()).num_microseconds().unwrap_or(0),
            Ordering::SeqCst,
        );
        self.jumped.notify_waiters();
    }
}

#[async_trait]
impl Clock for JumpClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::microseconds(self.offset_us.load(Ordering::SeqCst))
    }

    async fn sleep_until(&self, t: DateTime<Utc>) {
        loop {
            let jumped = self.jumped.notified();
            let Ok(left) = (t - self.now()).to_std() else {
                return;
            };
            tokio::select! {
                () = tokio::time::sleep(left) => {}
                () = jumped => {}
            }
        }
    }
}

/// Records lateness at launch; every run succeeds at once.
#[derive(Debug)]
struct NoopCompute {
    clock: Arc<JumpClock>,
    lateness_us: Mutex<Vec<i64>>,
}

#[async_trait]
impl Compute for NoopCompute {
    fn capabilities(&self) -> ComputeCapabilities {
        ComputeCapabilities::named("noop")
    }
    async fn launch(&self, req: RunRequest, _opts: LaunchOptions) -> telejob_core::Result<()> {
        let late = (self.clock.now() - req.scheduled_for)
            .num_microseconds()
            .unwrap_or(i64::MAX);
        self.lateness_us.lock().expect("lock").push(late);
        Ok(())
    }
    async fn wait(&self, run: &RunId) -> telejob_core::Result<Run> {
        let req: RunRequest = serde_json::from_value(serde_json::json!({
            "run_id": run, "job": "x", "code": "", "command": "", "output_dir": "o", "timeout": 1.0,
            "scheduled_for": "2000-01-01T00:00:00Z"
        }))
        .expect("request");
        let mut r = Run::pending(&req);
        r.state = RunState::Succeeded;
        r.phases.finished = Some(Utc::now());
        Ok(r)
    }
    async fn cancel(&self, _run: &RunId) -> telejob_core::Result<()> {
        Ok(())
    }
    async fn status(&self, _run: &RunId) -> telejob_core::Result<Option<Run>> {
        Ok(None)
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Where the bench's virtual time starts: one second before a minute boundary.
fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2014, 3, 8, 11, 59, 59)
        .single()
        .expect("instant")
}

/// How the jobs' fire times are spread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// Hourly jobs over the 60 minutes of the hour: n / 60 fire at each minute boundary (the
    /// stress case: with 100k jobs, 1,667 at once). Fewer than 60 jobs fire every minute.
    Hourly,
    /// Daily jobs over the 1,440 minutes of the day: n / 1,440 fire at each boundary (the
    /// shape of 100k daily jobs at their own times of day; 69 at once).
    Daily,
}

impl Shape {
    fn period(self) -> usize {
        match self {
            Self::Hourly => 60,
            Self::Daily => 1440,
        }
    }

    /// The jobs due at boundary `b` (the minutes from 12:00).
    fn due_at(self, n: usize, b: usize) -> usize {
        if n < self.period() {
            n
        } else {
            (0..n)
                .filter(|i| i % self.period() == b % self.period())
                .count()
        }
    }

    /// Job `i`'s cron expression: minute `i % period` from 12:00.
    fn cron(self, n: usize, i: usize) -> String {
        if n < self.period() {
            return "* * * * *".into();
        }
        let m = i % self.period();
        match self {
            Self::Hourly => format!("{m} * * * *"),
            Self::Daily => format!("{} {} * * *", m % 60, (12 + m / 60) % 24),
        }
    }
}

fn jobs(n: usize, shape: Shape) -> Vec<JobState> {
    let t0 = t0();
    (0..n)
        .map(|i| {
            let mut spec = JobSpec::new(format!("job{i}"));
            spec.schedule = ScheduleSpec::cron(shape.cron(n, i));
            JobState {
                spec,
                owner: "bench".into(),
                code: Some("/dev/null".into()),
                paused: false,
                expired: false,
                cursor: t0,
                last_failed: false,
            }
        })
        .collect()
}

/// Lateness of every fire in milliseconds, sorted, and the time arming all jobs took.
async fn lateness(n: usize, shape: Shape, boundaries: u32) -> (Vec<f64>, Duration) {
    let start = t0();
    let clock = Arc::new(JumpClock {
        offset_us: AtomicI64::new(0),
        jumped: tokio::sync::Notify::new(),
    });
    clock.set_now(start);
    let store = Arc::new(MemorySchedulerStore::new());
    for j in jobs(n, shape) {
        store.put_job(j).expect("job");
    }
    let compute = Arc::new(NoopCompute {
        clock: clock.clone(),
        lateness_us: Mutex::new(Vec::new()),
    });
    let s = Scheduler::new(SchedulerParts {
        store,
        compute: compute.clone(),
        clock: clock.clone(),
        notifier: Arc::new(NoNotifier),
        observer: Arc::new(NoObserver),
        limits: ValidationLimits::default(),
        max_running_per_owner: None,
    });
    let t = Instant::now();
    s.start().await.expect("start");
    let armed = t.elapsed();
    // Arming takes a while with many jobs: start the clock just before the first boundary now.
    clock.set_now(start);
    let mut want = 0;
    for b in 0..boundaries {
        // Wait until this boundary's fires are all launched, then jump to just before the next.
        want += shape.due_at(n, b as usize);
        let deadline = Instant::now() + Duration::from_secs(120);
        while compute.lateness_us.lock().expect("lock").len() < want && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // 50 ms before the next boundary (`start` is 1 s before the first).
        clock.set_now(
            start
                + chrono::Duration::minutes(i64::from(b) + 1)
                + chrono::Duration::milliseconds(950),
        );
    }
    s.shutdown().await;
    let mut v: Vec<f64> = compute
        .lateness_us
        .lock()
        .expect("lock")
        .iter()
        .map(|us| *us as f64 / 1000.0)
        .collect();
    v.sort_by(f64::total_cmp);
    (v, armed)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bench = args.iter().any(|a| a == "--bench");
    let quick = args.iter().any(|a| a == "--quick");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // `--jobs N` measures N jobs only (for profiling one size).
    let only: Option<usize> = args
        .iter()
        .position(|a| a == "--jobs")
        .and_then(|i| args.get(i + 1)?.parse().ok());
    let daily_only = args.iter().any(|a| a == "--daily");
    let sizes: Vec<(usize, Shape)> = if let Some(n) = only {
        vec![(
            n,
            if daily_only {
                Shape::Daily
            } else {
                Shape::Hourly
            },
        )]
    } else if !bench {
        vec![
            (1, Shape::Hourly),
            (120, Shape::Hourly),
            (2880, Shape::Daily),
        ]
    } else if quick {
        vec![(1, Shape::Hourly), (1000, Shape::Hourly)]
    } else {
        vec![
            (1, Shape::Hourly),
            (1000, Shape::Hourly),
            (100_000, Shape::Daily),
            (100_000, Shape::Hourly),
        ]
    };
    // Small counts get more boundaries, so that p99 is not just the slowest of a few fires.
    let boundaries = |n: usize| match (bench, n) {
        (false, _) => 2,
        (true, n) if n <= 1000 => 100,
        (true, _) => 10,
    };
    // Memory of 10k armed jobs (engine + in-memory store), idle.
    let before = rss_kib();
    let n = if bench { 10_000 } else { 500 };
    let held = rt.block_on(async {
        let store = Arc::new(MemorySchedulerStore::new());
        for j in jobs(n, Shape::Hourly) {
            store.put_job(j).expect("job");
        }
        // The jobs' cursors are in 2014: on the system clock every job would have twelve years
        // of missed hourly slots to plan and record, so this clock starts where they do.
        let clock = Arc::new(JumpClock {
            offset_us: AtomicI64::new(0),
            jumped: tokio::sync::Notify::new(),
        });
        clock.set_now(t0());
        let s = Scheduler::new(SchedulerParts {
            store: store.clone(),
            compute: Arc::new(NoopCompute {
                clock: clock.clone(),
                lateness_us: Mutex::new(Vec::new()),
            }),
            clock,
            notifier: Arc::new(NoNotifier),
            observer: Arc::new(NoObserver),
            limits: ValidationLimits::default(),
            max_running_per_owner: None,
        });
        s.start().await.expect("start");
        tokio::time::sleep(Duration::from_millis(200)).await;
        (s, store)
    });
    let after = rss_kib();
    println!(
        "idle memory of {n} armed jobs: {:.1} MiB (RSS growth)",
        (after.saturating_sub(before)) as f64 / 1024.0
    );
    rt.block_on(held.0.shutdown());
    drop(held);
    println!("scheduler fire lateness (ms; 100 slot boundaries up to 1k jobs, 10 above)");
    println!(
        "{:>8} {:>7} {:>9} {:>8} {:>10} {:>10} {:>10} {:>12}",
        "jobs", "shape", "at once", "fires", "p50", "p99", "max", "arm time"
    );
    for (n, shape) in sizes {
        let (v, armed) = rt.block_on(lateness(n, shape, boundaries(n)));
        println!(
            "{n:>8} {:>7} {:>9} {:>8} {:>10.3} {:>10.3} {:>10.3} {:>10.1}ms",
            format!("{shape:?}").to_lowercase(),
            shape.due_at(n, 0),
            v.len(),
            percentile(&v, 0.5),
            percentile(&v, 0.99),
            percentile(&v, 1.0),
            armed.as_secs_f64() * 1000.0
        );
    }
}
