//! The backend conformance suite: named checks of the [`Store`] and [`Compute`] contracts
//! ([`STORE_CHECKS`], [`COMPUTE_CHECKS`]), and runners that select them by the backend's declared
//! capabilities. Every backend's tests run them all — `MemoryStore` and `InProcessCompute` here,
//! `LocalStore` and `LocalCompute`, `S3Store` against a local AWS endpoint, and `Ec2Compute`
//! through the end-to-end harness that boots its instances' user data.
//!
//! Each check panics with a message that starts with its name and says which part of the
//! contract it found broken.

use std::time::Duration;

use bytes::Bytes;
use chrono::{TimeZone, Utc};

use crate::compute::{Compute, LaunchOptions};
use crate::job::{JobName, Visibility};
use crate::run::{Manifest, RunId, RunRequest, RunState, keys};
use crate::store::{PutOptions, Store, StoreExt};

/// A gzip tarball of `(path, body, mode)` files.
pub fn tarball(files: &[(&str, &str, u32)]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    for (path, body, mode) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(*mode);
        h.set_mtime(1_400_000_000);
        b.append_data(&mut h, path, body.as_bytes())
            .expect("append to the test tarball");
    }
    b.into_inner().expect("tar").finish().expect("gzip")
}

/// A gzip tarball with `run.sh` (writes `output/hello.txt`, prints to stdout and stderr) and
/// `fail.sh` (exits 3), both executable.
pub fn sample_tarball() -> Vec<u8> {
    tarball(&[
        (
            "run.sh",
            "#!/bin/bash\nset -e\nmkdir -p output/sub\necho \"hello from $TELEJOB_JOB\" > output/hello.txt\necho nested > output/sub/n.txt\necho to-stdout\necho to-stderr >&2\n",
            0o755,
        ),
        ("fail.sh", "#!/bin/bash\necho failing\nexit 3\n", 0o755),
    ])
}

/// Live (non-zombie) processes whose command line holds `token`: to check that nothing a run
/// started outlived it.
pub fn processes_with(token: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let zombie = stat
                .rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'));
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            !zombie && String::from_utf8_lossy(&cmd).contains(token)
        })
        .collect()
}

/// A request for `job` running `command` on `code`.
pub fn request(job: &str, code: &str, command: &str, timeout: Duration) -> RunRequest {
    RunRequest {
        run_id: RunId::new(),
        job: JobName::new(job).expect("valid test job name"),
        code: code.into(),
        command: command.into(),
        output_dir: "output".into(),
        timeout,
        env: Default::default(),
        scheduled_for: Utc
            .with_ymd_and_hms(2014, 3, 8, 12, 0, 0)
            .single()
            .expect("instant"),
        visibility: Visibility::Public,
        dry_run: false,
        owner: None,
        limits: Default::default(),
        secrets: Default::default(),
        instance_type: None,
    }
}

/// The store checks, by name, in the order [`store_conformance`] runs them.
pub const STORE_CHECKS: &[&str] = &[
    "put_get_head",
    "not_found",
    "streaming_put",
    "atomic_put",
    "list_prefixes",
    "json",
    "invalid_keys",
    "delete",
];

/// Runs every store check that `store`'s [`StoreCapabilities`](crate::store::StoreCapabilities)
/// select, each under its own key prefix; returns the names of the checks run.
pub async fn store_conformance(store: &dyn Store) -> Vec<&'static str> {
    let caps = store.capabilities();
    let mut ran = Vec::new();
    let base = || format!("conformance-{}", RunId::new());
    store_put_get_head(store, &base()).await;
    ran.push("put_get_head");
    store_not_found(store, &base()).await;
    ran.push("not_found");
    if caps.streaming_put {
        store_streaming_put(store, &base()).await;
        ran.push("streaming_put");
    }
    if caps.atomic_put {
        store_atomic_put(store, &base()).await;
        ran.push("atomic_put");
    }
    store_list_prefixes(store, &base()).await;
    ran.push("list_prefixes");
    store_json(store, &base()).await;
    ran.push("json");
    store_invalid_keys(store).await;
    ran.push("invalid_keys");
    store_delete(store, &base()).await;
    ran.push("delete");
    ran
}

/// `put` then `get` and `head` return what was written; a second `put` replaces it.
pub async fn store_put_get_head(store: &dyn Store, base: &str) {
    let key = format!("{base}/a/one.txt");
    let put =
        |body: &'static [u8]| store.put(&key, Bytes::from_static(body), PutOptions::default());
    put(b"one").await.expect("put");
    assert_eq!(
        store.get(&key).await.expect("get").as_ref(),
        b"one",
        "put_get_head: get returns what put wrote"
    );
    let meta = store
        .head(&key)
        .await
        .expect("head")
        .expect("put_get_head: head finds the object");
    assert_eq!(meta.size, 3, "put_get_head: head reports the size");
    assert_eq!(meta.key, key, "put_get_head: head reports the key");
    put(b"uno!").await.expect("overwrite");
    assert_eq!(
        store.get(&key).await.expect("get").as_ref(),
        b"uno!",
        "put_get_head: put replaces"
    );
    store.delete(&key).await.expect("delete");
}

/// A missing key: `get` is `NotFound`, `head` is `None`, `delete` succeeds.
pub async fn store_not_found(store: &dyn Store, base: &str) {
    let key = format!("{base}/missing");
    assert!(
        matches!(store.get(&key).await, Err(crate::Error::NotFound(_))),
        "not_found: get of a missing key is NotFound"
    );
    assert!(
        store.get_stream(&key).await.is_err(),
        "not_found: get_stream of a missing key fails"
    );
    assert_eq!(
        store.head(&key).await.expect("head of missing"),
        None,
        "not_found: head of a missing key is None"
    );
    store
        .delete(&key)
        .await
        .expect("not_found: delete of a missing key succeeds");
}

/// `put_stream` of an empty and of a multi-megabyte object (several parts where the store
/// uploads in parts); `get` and `get_stream` return them whole.
pub async fn store_streaming_put(store: &dyn Store, base: &str) {
    let (big_key, empty_key) = (format!("{base}/big.bin"), format!("{base}/empty"));
    let big: Vec<u8> = (0..11 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let n = store
        .put_stream(
            &big_key,
            Box::new(std::io::Cursor::new(big.clone())),
            PutOptions::default(),
        )
        .await
        .expect("put_stream");
    assert_eq!(
        n,
        big.len() as u64,
        "streaming_put: put_stream returns the size"
    );
    assert!(
        store.get(&big_key).await.expect("get big").as_ref() == &big[..],
        "streaming_put: streamed content intact"
    );
    let mut r = store.get_stream(&big_key).await.expect("get_stream");
    let mut back = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut r, &mut back)
        .await
        .expect("read stream");
    assert!(back == big, "streaming_put: get_stream content intact");
    store
        .put_stream(
            &empty_key,
            Box::new(std::io::Cursor::new(Vec::new())),
            PutOptions::default(),
        )
        .await
        .expect("empty put_stream");
    assert_eq!(
        store.head(&empty_key).await.expect("head").map(|m| m.size),
        Some(0),
        "streaming_put: empty objects exist"
    );
    for k in [big_key, empty_key] {
        store.delete(&k).await.expect("delete");
    }
}

/// A reader that yields `good` bytes, then fails.
struct FailingReader {
    good: std::io::Cursor<Vec<u8>>,
}

impl tokio::io::AsyncRead for FailingReader {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.good.position() < self.good.get_ref().len() as u64 {
            return std::pin::Pin::new(&mut self.good).poll_read(cx, buf);
        }
        std::task::Poll::Ready(Err(std::io::Error::other("the upload broke off")))
    }
}

/// A `put_stream` whose reader fails leaves the key as it was: the old object, or none.
pub async fn store_atomic_put(store: &dyn Store, base: &str) {
    let (old_key, new_key) = (format!("{base}/kept"), format!("{base}/never"));
    store
        .put(&old_key, Bytes::from_static(b"old"), PutOptions::default())
        .await
        .expect("put");
    for (key, size) in [(&old_key, 100usize), (&new_key, 100), (&new_key, 9 << 20)] {
        let reader = FailingReader {
            good: std::io::Cursor::new(vec![7u8; size]),
        };
        assert!(
            store
                .put_stream(key, Box::new(reader), PutOptions::default())
                .await
                .is_err(),
            "atomic_put: a failing reader fails the put"
        );
    }
    assert_eq!(
        store.get(&old_key).await.expect("get").as_ref(),
        b"old",
        "atomic_put: a failed put leaves the old object"
    );
    assert_eq!(
        store.head(&new_key).await.expect("head"),
        None,
        "atomic_put: a failed put leaves no object"
    );
    store.delete(&old_key).await.expect("delete");
}

/// `list(prefix)` returns exactly the objects under the prefix (not `ab/` for `a/`), sorted.
pub async fn store_list_prefixes(store: &dyn Store, base: &str) {
    let k = |s: &str| format!("{base}/{s}");
    for key in ["a/two.txt", "a/one.txt", "a/deeper/x", "ab/x", "b"] {
        store
            .put(&k(key), Bytes::from_static(b"x"), PutOptions::default())
            .await
            .expect("put");
    }
    let listed = |p: String| async move {
        store
            .list(&p)
            .await
            .expect("list")
            .into_iter()
            .map(|m| m.key)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        listed(k("a/")).await,
        vec![k("a/deeper/x"), k("a/one.txt"), k("a/two.txt")],
        "list_prefixes: the prefix's objects, sorted"
    );
    assert_eq!(
        listed(k("a")).await,
        vec![k("a/deeper/x"), k("a/one.txt"), k("a/two.txt"), k("ab/x")],
        "list_prefixes: a prefix need not end at a /"
    );
    assert!(
        listed(k("nothing/")).await.is_empty(),
        "list_prefixes: an empty prefix lists nothing"
    );
    for key in ["a/two.txt", "a/one.txt", "a/deeper/x", "ab/x", "b"] {
        store.delete(&k(key)).await.expect("delete");
    }
}

/// The JSON conveniences round-trip.
pub async fn store_json(store: &dyn Store, base: &str) {
    let key = format!("{base}/j.json");
    store
        .put_json(&key, &serde_json::json!({"x": 1}))
        .await
        .expect("put_json");
    let v: serde_json::Value = store.get_json(&key).await.expect("get_json");
    assert_eq!(v["x"], 1, "json: round trip");
    store.delete(&key).await.expect("delete");
}

/// Invalid keys are refused by every operation, never rewritten.
pub async fn store_invalid_keys(store: &dyn Store) {
    for bad in ["", "/abs", "a/../b", "a//b", "ctl\u{1}x", "back\\slash"] {
        assert!(
            store
                .put(bad, Bytes::from_static(b"x"), PutOptions::default())
                .await
                .is_err(),
            "invalid_keys: put of {bad:?} must be refused"
        );
        assert!(
            store.get(bad).await.is_err() && store.head(bad).await.is_err(),
            "invalid_keys: reads of {bad:?} must be refused"
        );
    }
}

/// `delete` removes the object and nothing else.
pub async fn store_delete(store: &dyn Store, base: &str) {
    let (gone, kept) = (format!("{base}/gone"), format!("{base}/gone2"));
    for k in [&gone, &kept] {
        store
            .put(k, Bytes::from_static(b"x"), PutOptions::default())
            .await
            .expect("put");
    }
    store.delete(&gone).await.expect("delete");
    assert_eq!(
        store.head(&gone).await.expect("head"),
        None,
        "delete: removed"
    );
    assert!(
        store.head(&kept).await.expect("head").is_some(),
        "delete: a key sharing the prefix stays"
    );
    store.delete(&kept).await.expect("delete");
    assert!(
        store.list(base).await.expect("list").is_empty(),
        "delete: nothing left"
    );
}

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
    let req = request("conformance-ok", code, "./run.sh", Duration::from_secs(60));
    compute
        .launch(req.clone(), LaunchOptions::default())
        .await
        .expect("launch");
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
        public
            .head(&format!("{data}sub/n.txt"))
            .await
            .expect("head")
            .is_some(),
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
        same_store
            || public
                .head(&keys::log(&req.job, &req.run_id))
                .await
                .expect("head")
                .is_none(),
        "logs never go to the public store"
    );
    let status: crate::run::Run = private
        .get_json(&keys::status(&req.job, &req.run_id))
        .await
        .expect("status is stored");
    assert_eq!(status.state, RunState::Succeeded, "stored status is final");
    let again = compute
        .status(&req.run_id)
        .await
        .expect("status")
        .expect("known run");
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

/// A failing command fails the run, publishes nothing, keeps the log.
pub async fn compute_failure(
    compute: &dyn Compute,
    code: &str,
    public: &dyn Store,
    private: &dyn Store,
) {
    let req = request(
        "conformance-fail",
        code,
        "./fail.sh",
        Duration::from_secs(60),
    );
    compute
        .launch(req.clone(), LaunchOptions::default())
        .await
        .expect("launch");
    let run = compute.wait(&req.run_id).await.expect("wait");
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
        public
            .head(&keys::manifest(&req.job, &req.run_id))
            .await
            .expect("head")
            .is_none(),
        "no manifest for a failed run"
    );
    assert!(
        private
            .head(&keys::log(&req.job, &req.run_id))
            .await
            .expect("head")
            .is_some(),
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
    let req = request(
        "conformance-cancel",
        code,
        "echo started; sleep 600",
        Duration::from_secs(600),
    );
    compute
        .launch(req.clone(), LaunchOptions::default())
        .await
        .expect("launch");
    // Wait until it runs.
    loop {
        let s = compute
            .status(&req.run_id)
            .await
            .expect("status")
            .expect("known");
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
        let req = request(
            "conformance-reattach",
            code,
            "./run.sh",
            Duration::from_secs(60),
        );
        compute
            .launch(req.clone(), LaunchOptions::default())
            .await
            .expect("launch");
        let run = compute.wait(&req.run_id).await.expect("wait");
        assert!(
            compute.reattach(&run).await.expect("reattach"),
            "reattach: a launched run is found again"
        );
        let again = compute
            .status(&req.run_id)
            .await
            .expect("status")
            .expect("reattach: a reattached run has a status");
        assert_eq!(again.state, run.state, "reattach: the final state");
    }
}
