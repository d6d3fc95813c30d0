//! `tj-run-overhead TARBALL [RUNS]`: trigger → command start of a local run, through the same
//! pipeline scheduled runs use (fetch, hostile-safe unpack into a fresh workspace, sandbox,
//! spawn). The command records `$EPOCHREALTIME` (a bash builtin: no fork) as its first act.
//! Prints the per-run overheads in milliseconds as one JSON line.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use telejob_core::agent::pipeline::{Pipeline, RunStores};
use telejob_core::job::JobName;
use telejob_core::objects::ObjectStoreAdapter;
use telejob_core::run::{RunRequest, RunState};
use telejob_core::store::Store;
use telejob_local::LocalStore;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let tarball = args.next().expect("usage: tj-run-overhead TARBALL [RUNS]");
    let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    let tmp = tempfile::tempdir().expect("tempdir");
    let public: Arc<ObjectStoreAdapter> =
        Arc::new(LocalStore::new(tmp.path().join("public")).expect("store"));
    let private: Arc<dyn Store> =
        Arc::new(LocalStore::new(tmp.path().join("private")).expect("store"));
    let pipeline = Pipeline::new(RunStores {
        public: public.clone(),
        private,
    });
    let mut out = Vec::new();
    for _ in 0..runs {
        let req = RunRequest::new(
            JobName::new("overhead").expect("name"),
            tarball.clone(),
            "mkdir -p output && printf %s \"$EPOCHREALTIME\" > output/t",
        )
        .with_timeout(Duration::from_secs(60));
        let t0 = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs_f64();
        let o = pipeline.run(&req, None, CancellationToken::new()).await;
        assert_eq!(o.run.state, RunState::Succeeded, "{:?}", o.run.error);
        let t = public.get("overhead/data/t").await.expect("start time");
        let started: f64 = String::from_utf8_lossy(&t)
            .trim()
            .parse()
            .expect("EPOCHREALTIME");
        out.push((started - t0) * 1e3);
    }
    let list: Vec<String> = out.iter().map(|v| format!("{v:.3}")).collect();
    println!("{{\"overhead_ms\":[{}]}}", list.join(","));
}
