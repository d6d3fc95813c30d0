//! The [`Compute`] checks.

use std::time::Duration;

use super::fixtures::request;
use crate::compute::{Compute, LaunchOptions};
use crate::run::{Manifest, RunId, RunRequest, RunState, keys};
use crate::store::{Store, StoreExt};

/// The compute checks, by name, in the order [`compute_conformance`] runs them.
pub const COMPUTE_CHECKS: &[&str] = &[
    "run_publishes",
    "unknown_status",
    "failure",
    "timeout",
    "cancel",
    "reattach",
];

/// Runs every compute check that `compute`'s capabilities select; returns the names of the
/// checks run. `code` is a location of [`sample_tarball`] that this backend can fetch; `public`
/// and `private` are the stores its runs write to.
pub async fn compute_conformance(
    compute: &dyn Compute,
    code: &str,
    public: &dyn Store,
    private: &dyn Store,
) -> Vec<&'static str> {
    let caps = compute.capabilities();
    let mut ran = Vec::new();
    compute_run_publishes(compute, code, public, private).await;
    ran.push("run_publishes");
    compute_unknown_status(compute).await;
    ran.push("unknown_status");
    compute_failure(compute, code, public, private).await;
    ran.push("failure");
    compute_timeout(compute, code).await;
    ran.push("timeout");
    if caps.cancel {
        compute_cancel(compute, code).await;
        ran.push("cancel");
    }
    compute_reattach(compute, code).await;
    ran.push("reattach");
    ran
}

/// A successful run (launched twice: one execution) publishes every file and the manifest, and
/// stores its status and log privately.
pub async fn compute_run_publishes(
    compute: &dyn Compute,
    code: &str,
    public: &dyn Store,
    private: &dyn Store,
) {
    let req = launch(
        compute,
        request("conformance-ok", code, "./run.sh", Duration::from_secs(60)),
    )
    .await;
    // Launching the same run again never starts a second execution.
    compute
        .launch(req.clone(), LaunchOptions::default())
        .await
        .expect("second launch is accepted");
    let run = compute.wait(&req.run_id).await.expect("wait");
    assert_eq!(
        run.state,
        RunState::Succeeded,
        "run succeeded: {:?}",
        run.error
    );
    assert_eq!(run.exit_code, Some(0));
    let data = keys::data_prefix(&req.job);
    let hello = public
        .get(&format!("{data}hello.txt"))
        .await
        .expect("hello.txt is published");
    assert_eq!(
        hello.as_ref(),
        b"hello from conformance-ok\n",
        "TELEJOB_JOB reaches the job"
    );
    assert!(
        exists(public, &format!("{data}sub/n.txt")).await,
        "nested files are published"
    );
    let manifest: Manifest = public
        .get_json(&keys::manifest(&req.job, &req.run_id))
        .await
        .expect("manifest is written");
    let paths: Vec<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        ["hello.txt", "sub/n.txt"],
        "manifest lists the files, sorted"
    );
    assert_eq!(manifest.files[0].size, hello.len() as u64);
    assert_eq!(
        manifest.code_sha256.len(),
        64,
        "manifest has the code's sha256"
    );
    let log = private
        .get(&keys::log(&req.job, &req.run_id))
        .await
        .expect("log is stored privately");
    let log = String::from_utf8_lossy(&log);
    assert!(
        log.contains("to-stdout") && log.contains("to-stderr"),
        "log has stdout and stderr: {log}"
    );
    let same_store = std::ptr::addr_eq(public as *const dyn Store, private as *const dyn Store);
    assert!(
        same_store || !exists(public, &keys::log(&req.job, &req.run_id)).await,
        "logs never go to the public store"
    );
    let status: crate::run::Run = private
        .get_json(&keys::status(&req.job, &req.run_id))
        .await
        .expect("status is stored");
    assert_eq!(status.state, RunState::Succeeded, "stored status is final");
    let again = known_status(compute, &req.run_id).await;
    assert_eq!(again.state, RunState::Succeeded);
}

/// `status` of a run id nobody launched is `None`.
pub async fn compute_unknown_status(compute: &dyn Compute) {
    assert_eq!(
        compute
            .status(&RunId::new())
            .await
            .expect("status of unknown"),
        None,
        "unknown_status: unknown run ids are None"
    );
}

/// Launches `req` on `compute`; the request.
async fn launch(compute: &dyn Compute, req: RunRequest) -> RunRequest {
    compute
        .launch(req.clone(), LaunchOptions::default())
        .await
        .expect("launch");
    req
}

/// Launches `command` as job `job` on `code` under 60 s and waits for it to end: the request and
/// the run.
async fn finished(
    compute: &dyn Compute,
    job: &str,
    code: &str,
    command: &str,
) -> (RunRequest, crate::run::Run) {
    let req = launch(
        compute,
        request(job, code, command, Duration::from_secs(60)),
    )
    .await;
    let run = compute.wait(&req.run_id).await.expect("wait");
    (req, run)
}

/// What `compute` reports of the run `id`, which it must know.
///
/// # Panics
///
/// When the status cannot be read or the run is unknown.
pub async fn known_status(compute: &dyn Compute, id: &RunId) -> crate::run::Run {
    compute
        .status(id)
        .await
        .expect("status")
        .unwrap_or_else(|| panic!("run {id} is unknown to {}", compute.capabilities().name))
}

/// Whether `store` holds `key`.
///
/// # Panics
///
/// When the store cannot answer.
pub async fn exists(store: &dyn Store, key: &str) -> bool {
    store.head(key).await.expect("head").is_some()
}

/// A failing command fails the run, publishes nothing, keeps the log.
pub async fn compute_failure(
    compute: &dyn Compute,
    code: &str,
    public: &dyn Store,
    private: &dyn Store,
) {
    let (req, run) = finished(compute, "conformance-fail", code, "./fail.sh").await;
    assert_eq!(run.state, RunState::Failed);
    assert_eq!(run.exit_code, Some(3));
    assert!(
        public
            .list(&keys::data_prefix(&req.job))
            .await
            .expect("list")
            .is_empty(),
        "a failed run publishes nothing"
    );
    assert!(
        !exists(public, &keys::manifest(&req.job, &req.run_id)).await,
        "no manifest for a failed run"
    );
    assert!(
        exists(private, &keys::log(&req.job, &req.run_id)).await,
        "a failed run keeps its log"
    );
}

/// A timeout ends the run as `timed_out`, quickly.
pub async fn compute_timeout(compute: &dyn Compute, code: &str) {
    let req = request(
        "conformance-timeout",
        code,
        "sleep 600",
        Duration::from_secs(1),
    );
    let started = std::time::Instant::now();
    compute
        .launch(req.clone(), LaunchOptions::default())
        .await
        .expect("launch");
    let run = compute.wait(&req.run_id).await.expect("wait");
    assert_eq!(run.state, RunState::TimedOut);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the timeout is enforced ({:?})",
        started.elapsed()
    );
}

/// `cancel` ends a run in flight as `cancelled`; cancelling it again is a no-op.
pub async fn compute_cancel(compute: &dyn Compute, code: &str) {
    let req = launch(
        compute,
        request(
            "conformance-cancel",
            code,
            "echo started; sleep 600",
            Duration::from_secs(600),
        ),
    )
    .await;
    // Wait until it runs.
    loop {
        let s = known_status(compute, &req.run_id).await;
        if s.state == RunState::Running || s.state.is_terminal() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    compute.cancel(&req.run_id).await.expect("cancel");
    let run = compute.wait(&req.run_id).await.expect("wait");
    assert_eq!(
        run.state,
        RunState::Cancelled,
        "cancel ends the run as cancelled"
    );
    compute
        .cancel(&req.run_id)
        .await
        .expect("cancelling a finished run is a no-op");
}

/// `reattach` of a run nobody launched is `Ok(false)`; a backend that declares `reattach`
/// follows a launched run again and reports its final state.
pub async fn compute_reattach(compute: &dyn Compute, code: &str) {
    let never = request("conformance-never", code, "true", Duration::from_secs(60));
    assert!(
        !compute
            .reattach(&crate::run::Run::pending(&never))
            .await
            .expect("reattach of an unknown run"),
        "reattach: a run that was never launched is not found"
    );
    if compute.capabilities().reattach {
        let (req, run) = finished(compute, "conformance-reattach", code, "./run.sh").await;
        assert!(
            compute.reattach(&run).await.expect("reattach"),
            "reattach: a launched run is found again"
        );
        let again = known_status(compute, &req.run_id).await;
        assert_eq!(again.state, run.state, "reattach: the final state");
    }
}
