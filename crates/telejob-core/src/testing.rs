//! The backend conformance suite. Every backend crate's tests call every function here; the
//! in-memory reference backends of this crate do too.
//!
//! The checks panic with a message that names the contract they found broken.

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
    }
}

/// Checks the [`Store`] contract.
pub async fn store_conformance(store: &dyn Store) {
    let base = format!("conformance-{}", RunId::new());
    let k = |s: &str| format!("{base}/{s}");

    // put / get / head / overwrite
    store
        .put(
            &k("a/one.txt"),
            Bytes::from_static(b"one"),
            PutOptions::default(),
        )
        .await
        .expect("put");
    assert_eq!(
        store.get(&k("a/one.txt")).await.expect("get").as_ref(),
        b"one",
        "get returns what put wrote"
    );
    let meta = store
        .head(&k("a/one.txt"))
        .await
        .expect("head")
        .expect("head finds the object");
    assert_eq!(meta.size, 3, "head reports the size");
    assert_eq!(meta.key, k("a/one.txt"), "head reports the key");
    store
        .put(
            &k("a/one.txt"),
            Bytes::from_static(b"uno!"),
            PutOptions::default(),
        )
        .await
        .expect("overwrite");
    assert_eq!(
        store.get(&k("a/one.txt")).await.expect("get").as_ref(),
        b"uno!",
        "put replaces"
    );

    // missing objects
    assert!(
        matches!(
            store.get(&k("missing")).await,
            Err(crate::Error::NotFound(_))
        ),
        "get of a missing key is NotFound"
    );
    assert_eq!(
        store.head(&k("missing")).await.expect("head of missing"),
        None,
        "head of a missing key is None"
    );
    store
        .delete(&k("missing"))
        .await
        .expect("delete of a missing key succeeds");

    // streaming, including an empty and a multi-megabyte object
    let big: Vec<u8> = (0..5 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let n = store
        .put_stream(
            &k("big.bin"),
            Box::new(std::io::Cursor::new(big.clone())),
            PutOptions::default(),
        )
        .await
        .expect("put_stream");
    assert_eq!(n, big.len() as u64, "put_stream returns the size");
    assert_eq!(
        store.get(&k("big.bin")).await.expect("get big").as_ref(),
        &big[..],
        "streamed content intact"
    );
    let mut r = store.get_stream(&k("big.bin")).await.expect("get_stream");
    let mut back = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut r, &mut back)
        .await
        .expect("read stream");
    assert_eq!(back, big, "get_stream content intact");
    store
        .put_stream(
            &k("empty"),
            Box::new(std::io::Cursor::new(Vec::new())),
            PutOptions::default(),
        )
        .await
        .expect("empty put_stream");
    assert_eq!(
        store.head(&k("empty")).await.expect("head").map(|m| m.size),
        Some(0),
        "empty objects exist"
    );

    // list: sorted, prefix-exact
    store
        .put(
            &k("a/two.txt"),
            Bytes::from_static(b"2"),
            PutOptions::default(),
        )
        .await
        .expect("put");
    store
        .put(&k("ab/x"), Bytes::from_static(b"x"), PutOptions::default())
        .await
        .expect("put");
    let listed: Vec<String> = store
        .list(&k("a/"))
        .await
        .expect("list")
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(
        listed,
        vec![k("a/one.txt"), k("a/two.txt")],
        "list returns the prefix's objects, sorted"
    );

    // JSON helpers
    store
        .put_json(&k("j.json"), &serde_json::json!({"x": 1}))
        .await
        .expect("put_json");
    let v: serde_json::Value = store.get_json(&k("j.json")).await.expect("get_json");
    assert_eq!(v["x"], 1, "JSON round trip");

    // invalid keys are refused, never rewritten
    for bad in ["", "/abs", "a/../b", "a//b", "ctl\u{1}x"] {
        assert!(
            store
                .put(bad, Bytes::from_static(b"x"), PutOptions::default())
                .await
                .is_err(),
            "invalid key {bad:?} must be refused"
        );
    }

    // delete
    for key in [
        k("a/one.txt"),
        k("a/two.txt"),
        k("ab/x"),
        k("big.bin"),
        k("empty"),
        k("j.json"),
    ] {
        store.delete(&key).await.expect("delete");
    }
    assert!(
        store.list(&base).await.expect("list").is_empty(),
        "delete removes objects"
    );
}

/// Checks the [`Compute`] contract. `code` is a location of [`sample_tarball`] that this backend
/// can fetch; `public` and `private` are the stores its runs write to.
pub async fn compute_conformance(
    compute: &dyn Compute,
    code: &str,
    public: &dyn Store,
    private: &dyn Store,
) {
    let t = Duration::from_secs(60);

    // A successful run publishes every file and the manifest, and stores status and log.
    let req = request("conformance-ok", code, "./run.sh", t);
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
    assert_eq!(
        compute
            .status(&RunId::new())
            .await
            .expect("status of unknown"),
        None,
        "unknown run ids are None"
    );

    // A failing command fails the run, publishes nothing, keeps the log.
    let req = request("conformance-fail", code, "./fail.sh", t);
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

    // A timeout ends the run as timed_out, quickly.
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

    // Cancel ends a run in flight.
    if compute.capabilities().cancel {
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
}
