//! `tj-run-overhead TARBALL [RUNS] [--images DIR] [--network on|off] [--disk BYTES]`: trigger →
//! command start of a local run, through the same pipeline scheduled runs use (fetch,
//! hostile-safe unpack into a fresh workspace, sandbox, spawn). The command records
//! `$EPOCHREALTIME` (a bash builtin: no fork) as its first act. Prints the per-run overheads in
//! milliseconds as one JSON line.
//!
//! With `--images DIR` (root only) every run is a machine of its own on DIR's default image:
//! UID block, user namespace, overlay root, its own network (`--network on`: pasta) and, with
//! `--disk`, an ext4 file system of that size. Without, runs are restricted processes of the
//! host, as before machines.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use telejob_core::agent::pipeline::{Pipeline, RunStores};
use telejob_core::agent::sandbox::{Identity, MachineOptions, SandboxOptions, run_if_init};
use telejob_core::job::JobName;
use telejob_core::limits::{Bytes, Network, ResourceLimits};
use telejob_core::objects::ObjectStoreAdapter;
use telejob_core::run::{RunRequest, RunState};
use telejob_core::store::Store;
use telejob_local::LocalStore;
use tokio_util::sync::CancellationToken;

fn main() {
    // A machine's init is this binary, re-executed.
    run_if_init();
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(measure());
}

async fn measure() {
    let mut args = std::env::args().skip(1);
    let tarball = args.next().expect(
        "usage: tj-run-overhead TARBALL [RUNS] [--images DIR] [--network on|off] [--disk BYTES]",
    );
    let mut runs = 20usize;
    let (mut images, mut limits) = (None, ResourceLimits::default());
    while let Some(a) = args.next() {
        match a.as_str() {
            "--images" => images = args.next(),
            "--network" => {
                limits.network = Some(match args.next().as_deref() {
                    Some("off") => Network::Off,
                    _ => Network::On,
                })
            }
            "--disk" => limits.disk = args.next().and_then(|b| b.parse().ok()).map(Bytes),
            n => runs = n.parse().expect("RUNS is a number"),
        }
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let public: Arc<ObjectStoreAdapter> =
        Arc::new(LocalStore::new(tmp.path().join("public")).expect("store"));
    let private: Arc<dyn Store> =
        Arc::new(LocalStore::new(tmp.path().join("private")).expect("store"));
    let mut pipeline = Pipeline::new(RunStores {
        public: public.clone(),
        private,
    });
    if let Some(dir) = images {
        pipeline = pipeline.with_sandbox(SandboxOptions {
            identity: Identity::default_for_current_user(),
            machine: Some(MachineOptions::new(dir)),
            ..SandboxOptions::default()
        });
    }
    let mut out = Vec::new();
    for _ in 0..runs {
        let req = RunRequest::new(
            JobName::new("overhead").expect("name"),
            tarball.clone(),
            "t=$EPOCHREALTIME; mkdir -p output && printf %s \"$t\" > output/t",
        )
        .with_timeout(Duration::from_secs(60))
        .with_limits(limits);
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
