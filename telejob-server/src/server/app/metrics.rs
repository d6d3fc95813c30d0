//! Prometheus metrics: runs by state, fire lateness, run durations, queue depth, and the
//! scheduler lease (leader, renewals, takeovers).

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use telejob_core::run::Run;
use telejob_core::scheduler::notify::SchedulerObserver;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

/// The server's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    lateness: Histogram,
    durations: Histogram,
    queue: Gauge,
    queued: AtomicI64,
    runs: Family<StateLabel, Gauge>,
    active: Gauge,
    /// 1 while this replica holds the scheduler lease.
    pub leader: Gauge,
    /// Lease renewals that succeeded.
    pub renewals: prometheus_client::metrics::counter::Counter,
    /// Times this replica took the lease over.
    pub takeovers: prometheus_client::metrics::counter::Counter,
    /// Times this replica gave the lease up or lost it.
    pub step_downs: prometheus_client::metrics::counter::Counter,
    /// Runs marked running late.
    pub late: prometheus_client::metrics::counter::Counter,
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let lateness = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        let durations = Histogram::new(exponential_buckets(0.1, 2.0, 20));
        let queue = Gauge::default();
        let runs = Family::<StateLabel, Gauge>::default();
        let active = Gauge::default();
        let mut r = Registry::with_prefix("telejob");
        r.register(
            "fire_lateness_seconds",
            "How late scheduled slots fired",
            lateness.clone(),
        );
        r.register(
            "run_duration_seconds",
            "Durations of finished runs",
            durations.clone(),
        );
        r.register(
            "queue_depth",
            "Runs launched but waiting for a concurrency slot",
            queue.clone(),
        );
        r.register("runs", "Runs recorded, by state", runs.clone());
        r.register("active_runs", "Runs in flight", active.clone());
        let leader = Gauge::default();
        let renewals = prometheus_client::metrics::counter::Counter::default();
        let takeovers = prometheus_client::metrics::counter::Counter::default();
        let step_downs = prometheus_client::metrics::counter::Counter::default();
        r.register(
            "leader",
            "1 while this replica holds the scheduler lease and runs the scheduler",
            leader.clone(),
        );
        r.register(
            "lease_renewals",
            "Scheduler lease renewals by this replica",
            renewals.clone(),
        );
        r.register(
            "lease_takeovers",
            "Times this replica took the scheduler lease",
            takeovers.clone(),
        );
        r.register(
            "lease_step_downs",
            "Times this replica stopped scheduling (lease lost, or given up at shutdown)",
            step_downs.clone(),
        );
        let late = prometheus_client::metrics::counter::Counter::default();
        r.register(
            "runs_late",
            "Runs that passed their job's usual duration by the margin (running_late)",
            late.clone(),
        );
        Self {
            registry: Mutex::new(r),
            lateness,
            durations,
            queue,
            queued: AtomicI64::new(0),
            runs,
            active,
            leader,
            renewals,
            takeovers,
            step_downs,
            late,
        }
    }

    /// The exposition text, with run counts and in-flight runs as of now.
    pub fn render(&self, counts: &[(String, i64)], active: usize) -> String {
        for (state, n) in counts {
            self.runs
                .get_or_create(&StateLabel {
                    state: state.clone(),
                })
                .set(*n);
        }
        self.active.set(i64::try_from(active).unwrap_or(i64::MAX));
        let mut out = String::new();
        let reg = self
            .registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if prometheus_client::encoding::text::encode(&mut out, &reg).is_err() {
            out.clear();
        }
        out
    }
}

impl SchedulerObserver for Metrics {
    fn fired(&self, lateness: std::time::Duration) {
        self.lateness.observe(lateness.as_secs_f64());
    }

    fn finished(&self, run: &Run) {
        if let (Some(a), Some(b)) = (run.phases.fetch_started, run.phases.finished) {
            self.durations
                .observe((b - a).to_std().unwrap_or_default().as_secs_f64());
        }
    }

    fn queued(&self, delta: i64) {
        let n = self.queued.fetch_add(delta, Ordering::Relaxed) + delta;
        self.queue.set(n.max(0));
    }
}
