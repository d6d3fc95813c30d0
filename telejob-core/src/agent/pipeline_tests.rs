use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::agent::inprocess::InProcessCompute;
use crate::store::MemoryStore;
use crate::testing::{exists, request, sample_tarball};

struct Fx {
    tmp: tempfile::TempDir,
    public: Arc<MemoryStore>,
    private: Arc<MemoryStore>,
    pipeline: Pipeline,
}

impl Fx {
    fn new() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let public = Arc::new(MemoryStore::new());
        let private = Arc::new(MemoryStore::new());
        let mut pipeline = Pipeline::new(RunStores {
            public: public.clone(),
            private: private.clone(),
        });
        pipeline.scratch_dir = tmp.path().join("scratch");
        pipeline.sandbox.kill_grace = Duration::from_millis(300);
        Self {
            tmp,
            public,
            private,
            pipeline,
        }
    }

    /// Writes a tarball with `files` (path, body, mode) and returns its path.
    fn tarball(&self, name: &str, files: &[(&str, &str, u32)]) -> String {
        let path = self.tmp.path().join(name);
        std::fs::write(&path, crate::testing::tarball(files)).expect("write");
        path.display().to_string()
    }

    /// The sample tarball ([`sample_tarball`]) written out: its path.
    fn sample(&self) -> String {
        let path = self.tmp.path().join("sample.tgz");
        std::fs::write(&path, sample_tarball()).expect("write");
        path.display().to_string()
    }

    /// A request of job `job` to run `./run.sh` of the sample tarball under 30 s.
    fn sample_request(&self, job: &str) -> RunRequest {
        request(job, &self.sample(), "./run.sh", Duration::from_secs(30))
    }

    /// A request of job `job` to run `./run.sh` holding `script` under 30 s (the tarball
    /// written as `<job>.tgz`).
    fn script_request(&self, job: &str, script: &str) -> RunRequest {
        let code = self.tarball(&format!("{job}.tgz"), &[("run.sh", script, 0o755)]);
        request(job, &code, "./run.sh", Duration::from_secs(30))
    }

    /// A new fixture and its [`Fx::script_request`].
    fn with_script(job: &str, script: &str) -> (Self, RunRequest) {
        let fx = Self::new();
        let req = fx.script_request(job, script);
        (fx, req)
    }

    /// Runs `./run.sh` holding `script` as job `job`, under 30 s.
    async fn script(&self, job: &str, script: &str) -> (RunRequest, RunOutcome) {
        let req = self.script_request(job, script);
        let out = self.run(&req).await;
        (req, out)
    }

    /// Runs `command` as job `job` on the code at `path` (a file or directory), under 30 s.
    async fn run_at(&self, job: &str, path: &std::path::Path, command: &str) -> RunOutcome {
        let code = path.display().to_string();
        self.run(&request(job, &code, command, Duration::from_secs(30)))
            .await
    }

    async fn run(&self, req: &RunRequest) -> RunOutcome {
        self.pipeline.run(req, None, CancellationToken::new()).await
    }

    fn scratch_is_empty(&self) -> bool {
        std::fs::read_dir(&self.pipeline.scratch_dir)
            .map(|mut d| d.next().is_none())
            .unwrap_or(true)
    }

    async fn data_keys(&self, job: &str) -> Vec<String> {
        self.public
            .list(&format!("{job}/data/"))
            .await
            .expect("list")
            .into_iter()
            .map(|m| m.key)
            .collect()
    }
}

/// Asserts that `out` is a failed run whose error mentions `words`.
#[track_caller]
fn assert_failed_with(out: &RunOutcome, words: &str) {
    assert_eq!(out.run.state, RunState::Failed, "{:?}", out.error);
    let error = out.run.error.as_deref().unwrap_or_default();
    assert!(error.contains(words), "{words:?} in {error:?}");
}

#[tokio::test]
async fn reference_backends_pass_the_compute_conformance_suite() {
    let fx = Fx::new();
    let compute = InProcessCompute::new(fx.pipeline.clone(), 4);
    let ran = crate::testing::compute_conformance(
        &compute,
        &fx.sample(),
        fx.public.as_ref(),
        fx.private.as_ref(),
    )
    .await;
    assert_eq!(ran, crate::testing::COMPUTE_CHECKS);
    assert!(fx.scratch_is_empty(), "workspaces are removed");
}

#[tokio::test]
async fn the_job_gets_its_slot_and_runs_in_a_single_top_level_directory() {
    let fx = Fx::new();
    let script = "mkdir -p output; echo \"$TELEJOB_SCHEDULED_FOR $TELEJOB_RUN_ID $(basename $PWD)\" > output/env.txt; test \"$TELEJOB_OUTPUT_DIR\" = \"$PWD/output\"";
    let code = fx.tarball("proj.tgz", &[("proj-1.0/run.sh", script, 0o755)]);
    let req = request("slot", &code, "./run.sh", Duration::from_secs(30));
    let out = fx.run(&req).await;
    assert_eq!(out.run.state, RunState::Succeeded, "{:?}", out.error);
    let body = fx.public.get("slot/data/env.txt").await.expect("published");
    assert_eq!(
        String::from_utf8_lossy(&body),
        format!("2014-03-08T12:00:00Z {} proj-1.0\n", req.run_id)
    );
}

#[tokio::test]
async fn a_missing_output_directory_fails_the_run_as_the_jobs_fault() {
    let fx = Fx::new();
    let (_, out) = fx.script("noout", "echo no output").await;
    assert_eq!(out.run.state, RunState::Failed);
    assert_eq!(out.failure, Some(FailureKind::Job));
    let err = out.run.error.expect("error");
    assert!(err.contains("did not create it"), "{err}");
    assert!(fx.scratch_is_empty());
}

#[tokio::test]
async fn bad_code_is_bad_input_and_leaves_nothing_behind() {
    let fx = Fx::new();
    let missing = fx.tmp.path().join("nope.tgz").display().to_string();
    let not_tar = fx.tmp.path().join("x.tgz");
    std::fs::write(&not_tar, b"<html>not found</html>").expect("write");
    for code in [
        missing,
        not_tar.display().to_string(),
        "ftp://example.invalid/x.tgz".to_string(),
    ] {
        let out = fx
            .run(&request("bad", &code, "./run.sh", Duration::from_secs(30)))
            .await;
        assert_eq!(out.run.state, RunState::Failed, "{code}");
        assert_eq!(
            out.failure,
            Some(FailureKind::BadInput),
            "{code}: {:?}",
            out.error
        );
        assert!(fx.data_keys("bad").await.is_empty());
        assert!(fx.scratch_is_empty(), "{code}: workspace left behind");
    }
}

#[tokio::test]
async fn an_unsafe_archive_names_the_entry() {
    let fx = Fx::new();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    h.set_link_name("/etc/passwd").expect("link");
    h.set_path("passwd").expect("path");
    h.set_cksum();
    b.append(&h, &[][..]).expect("append");
    let path = fx.tmp.path().join("evil.tar");
    std::fs::write(&path, b.into_inner().expect("tar")).expect("write");
    let out = fx.run_at("evil", &path, "true").await;
    assert_eq!(out.failure, Some(FailureKind::BadInput));
    assert!(
        matches!(out.error, Some(Error::UnsafeArchive { ref entry, .. }) if entry == "passwd"),
        "{:?}",
        out.error
    );
    assert!(fx.scratch_is_empty());
}

#[tokio::test]
async fn links_to_secrets_in_the_output_are_not_published() {
    let fx = Fx::new();
    let (_, out) = fx
        .script(
            "links",
                "mkdir -p output/d; echo data > output/a.csv; ln -s /etc/passwd output/passwd; ln -s a.csv output/latest.csv; \
                 ln -s ../run.sh output/code; ln -s d output/dirlink; mkfifo output/fifo; echo k > output/.env; echo x > output/d/id_rsa",
        )
        .await;
    assert_eq!(out.run.state, RunState::Succeeded, "{:?}", out.error);
    assert_eq!(
        fx.data_keys("links").await,
        vec!["links/data/a.csv", "links/data/latest.csv"]
    );
    assert_eq!(
        fx.public
            .get("links/data/latest.csv")
            .await
            .expect("get")
            .as_ref(),
        b"data\n"
    );
    let skipped: Vec<&str> = out.run.skipped.iter().map(|s| s.path.as_str()).collect();
    for s in ["passwd", "code", "dirlink", "fifo", ".env", "d/id_rsa"] {
        assert!(
            skipped.contains(&s),
            "{s} should be reported as skipped: {skipped:?}"
        );
    }
}

#[tokio::test]
async fn an_output_directory_that_links_outside_publishes_nothing() {
    let fx = Fx::new();
    let (_, out) = fx.script("outlink", "ln -s /etc output").await;
    assert_failed_with(&out, "outside the code");
    assert!(fx.data_keys("outlink").await.is_empty());
}

#[tokio::test]
async fn dry_runs_list_but_do_not_upload() {
    let fx = Fx::new();
    let mut req = fx.sample_request("dry");
    req.dry_run = true;
    let out = fx.run(&req).await;
    assert_eq!(out.run.state, RunState::Succeeded);
    let listed: Vec<(&str, u64)> = out
        .run
        .published
        .iter()
        .map(|f| (f.key.as_str(), f.size))
        .collect();
    assert_eq!(
        listed,
        vec![("dry/data/hello.txt", 15), ("dry/data/sub/n.txt", 7)]
    );
    assert!(
        fx.public.list("").await.expect("list").is_empty(),
        "nothing public in a dry run"
    );
    assert!(out.run.manifest_key.is_none());
}

#[tokio::test]
async fn private_output_goes_to_the_private_store_only() {
    let fx = Fx::new();
    let mut req = fx.sample_request("secret");
    req.visibility = Visibility::Private;
    let out = fx.run(&req).await;
    assert_eq!(out.run.state, RunState::Succeeded);
    assert!(fx.public.list("").await.expect("list").is_empty());
    assert!(exists(&*fx.private, "secret/data/hello.txt").await);
}

#[tokio::test]
async fn a_directory_source_is_packed_and_run_the_same_way() {
    let fx = Fx::new();
    let dir = fx.tmp.path().join("src");
    std::fs::create_dir_all(dir.join(".git")).expect("mkdir");
    std::fs::write(dir.join(".git/config"), "secret").expect("write");
    std::fs::write(dir.join("run.sh"), "mkdir output; ls -a > output/ls.txt").expect("write");
    let out = fx.run_at("dir", &dir, "bash run.sh").await;
    assert_eq!(out.run.state, RunState::Succeeded, "{:?}", out.error);
    let ls = fx.public.get("dir/data/ls.txt").await.expect("get");
    let ls = String::from_utf8_lossy(&ls);
    assert!(ls.contains("run.sh") && !ls.contains(".git"), "{ls}");
}

#[tokio::test]
async fn timeouts_and_failures_publish_nothing_and_keep_the_log() {
    let (fx, req) = Fx::with_script(
        "slow",
        "mkdir output; echo partial > output/x; echo working; sleep 600",
    );
    let req = req.with_timeout(Duration::from_secs(1));
    let out = fx.run(&req).await;
    assert_eq!(out.run.state, RunState::TimedOut);
    assert!(matches!(out.error, Some(Error::Timeout(_))));
    assert!(fx.data_keys("slow").await.is_empty());
    let log = fx
        .private
        .get(&keys::log(&req.job, &req.run_id))
        .await
        .expect("log");
    assert!(String::from_utf8_lossy(&log).contains("working"));
    assert!(fx.scratch_is_empty());
}

#[tokio::test]
async fn a_failing_store_fails_the_publish_and_writes_no_manifest() {
    #[derive(Debug)]
    struct Broken(MemoryStore);
    #[async_trait::async_trait]
    impl Store for Broken {
        fn capabilities(&self) -> crate::store::StoreCapabilities {
            self.0.capabilities()
        }
        fn locate(&self, key: &str) -> String {
            self.0.locate(key)
        }
        async fn put(&self, key: &str, data: bytes::Bytes, o: PutOptions) -> Result<()> {
            self.0.put(key, data, o).await
        }
        async fn put_stream(
            &self,
            key: &str,
            r: crate::store::ByteReader,
            o: PutOptions,
        ) -> Result<u64> {
            if key.ends_with("n.txt") {
                return Err(Error::Store {
                    op: "put",
                    key: key.into(),
                    reason: "disk on fire".into(),
                    retryable: true,
                    source: None,
                });
            }
            self.0.put_stream(key, r, o).await
        }
        async fn get(&self, key: &str) -> Result<bytes::Bytes> {
            self.0.get(key).await
        }
        async fn get_stream(&self, key: &str) -> Result<crate::store::ByteReader> {
            self.0.get_stream(key).await
        }
        async fn head(&self, key: &str) -> Result<Option<crate::store::ObjectMeta>> {
            self.0.head(key).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<crate::store::ObjectMeta>> {
            self.0.list(prefix).await
        }
        async fn delete(&self, key: &str) -> Result<()> {
            self.0.delete(key).await
        }
    }
    let mut fx = Fx::new();
    let broken = Arc::new(Broken(MemoryStore::new()));
    fx.pipeline.stores.public = broken.clone();
    let req = fx.sample_request("broken");
    let out = fx.run(&req).await;
    assert_failed_with(&out, "disk on fire");
    assert!(!exists(&*broken, &keys::manifest(&req.job, &req.run_id)).await);
}

#[tokio::test]
async fn runs_beyond_the_concurrency_limit_wait_in_a_queue() {
    let fx = Fx::new();
    let code = fx.tarball("c.tgz", &[("run.sh", "true", 0o755)]);
    let compute = InProcessCompute::new(fx.pipeline.clone(), 1);
    let first = request("q1", &code, "sleep 600.5151", Duration::from_secs(600));
    let second = request("q2", &code, "mkdir output", Duration::from_secs(60));
    let (tx, mut running) = tokio::sync::mpsc::unbounded_channel();
    let sink = crate::compute::EventSink::new(move |e| {
        if e == crate::compute::RunEvent::State(RunState::Running) {
            let _ = tx.send(());
        }
    });
    use crate::compute::{Compute, LaunchOptions};
    compute
        .launch(first.clone(), LaunchOptions::default().with_events(sink))
        .await
        .expect("launch");
    running.recv().await.expect("the first run starts");
    compute
        .launch(second.clone(), LaunchOptions::default())
        .await
        .expect("launch");
    tokio::task::yield_now().await;
    let queued = crate::testing::known_status(&compute, &second.run_id).await;
    assert_eq!(
        queued.state,
        RunState::Pending,
        "the second run waits for a slot"
    );
    compute.cancel(&first.run_id).await.expect("cancel");
    assert_eq!(
        compute.wait(&first.run_id).await.expect("wait").state,
        RunState::Cancelled
    );
    assert_eq!(
        compute.wait(&second.run_id).await.expect("wait").state,
        RunState::Succeeded
    );
}

/// Removing a run's workspace (here 50k files, ~1.5 s on this project's machines) happens off the
/// runtime's threads: a timer on the same single-threaded runtime, like the scheduler's, keeps
/// firing on time meanwhile. Before the fix the removal stalled the runtime for its whole length.
#[tokio::test(flavor = "current_thread")]
async fn removing_a_big_workspace_does_not_stall_the_runtime() {
    let (fx, req) = Fx::with_script(
        "many",
        "#!/bin/bash\nset -e\nmkdir -p output many\n(cd many && seq 1 50000 | xargs touch)\necho ok > output/x\n",
    );
    let req = req.with_timeout(Duration::from_secs(120));
    let done = CancellationToken::new();
    let probe = tokio::spawn({
        let done = done.clone();
        async move {
            let tick = Duration::from_millis(10);
            let mut worst = Duration::ZERO;
            while !done.is_cancelled() {
                let t = std::time::Instant::now();
                tokio::time::sleep(tick).await;
                worst = worst.max(t.elapsed().saturating_sub(tick));
            }
            worst
        }
    });
    let out = fx.run(&req).await;
    done.cancel();
    let worst = probe.await.expect("probe");
    assert_eq!(out.run.state, RunState::Succeeded, "{:?}", out.run.error);
    assert!(fx.scratch_is_empty(), "the workspace is removed");
    assert!(
        worst < Duration::from_millis(400),
        "a timer fired {worst:?} late while the run ended"
    );
}

#[tokio::test]
async fn secrets_reach_the_job_and_are_masked_in_its_log() {
    let (fx, mut req) = Fx::with_script(
        "sec",
        "mkdir -p output; echo \"token=$API_TOKEN\"; printf %s \"$API_TOKEN\" | wc -c > output/len.txt",
    );
    req.secrets
        .0
        .insert("API_TOKEN".into(), "hunter2-abc".into());
    assert!(
        !format!("{req:?}").contains("hunter2"),
        "Debug shows names only"
    );
    let out = fx.run(&req).await;
    assert_eq!(out.run.state, RunState::Succeeded, "{:?}", out.error);
    let len = fx.public.get("sec/data/len.txt").await.expect("published");
    assert_eq!(String::from_utf8_lossy(&len).trim(), "11");
    let log = fx
        .private
        .get(out.run.log_key.as_deref().expect("log key"))
        .await
        .expect("log");
    let log = String::from_utf8_lossy(&log);
    assert!(log.contains("token=***"), "{log}");
    assert!(!log.contains("hunter2"), "{log}");
}

#[tokio::test]
async fn the_log_of_a_run_in_flight_is_in_the_store_before_it_ends() {
    let mut fx = Fx::new();
    fx.pipeline.log_ship_every = Duration::from_millis(100);
    let req = fx.script_request("live", "mkdir -p output; echo first; sleep 3; echo second");
    let key = keys::log(&req.job, &req.run_id);
    let run = fx.run(&req);
    let watch = async {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(3) {
            if let Ok(log) = fx.private.get(&key).await {
                return String::from_utf8_lossy(&log).into_owned();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        String::new()
    };
    let (out, early) = tokio::join!(run, watch);
    assert!(
        early.contains("first") && !early.contains("second"),
        "{early:?}"
    );
    assert_eq!(out.run.state, RunState::Succeeded, "{:?}", out.error);
    let log = fx.private.get(&key).await.expect("log");
    assert!(
        String::from_utf8_lossy(&log).contains("second"),
        "the full log last"
    );
}

#[tokio::test]
async fn a_sweep_removes_only_abandoned_workspaces() {
    let fx = Fx::new();
    let scratch = fx.pipeline.scratch_dir.clone();
    let held = RunDir::create(&scratch).expect("run dir");
    // A crash: the directory stays, its lock dies with the process.
    let abandoned = RunDir::create(&scratch).expect("run dir").abandon();
    std::fs::write(abandoned.join("left.txt"), "x").expect("write");
    assert_eq!(fx.pipeline.remove_orphaned_workspaces(), 1);
    assert!(!abandoned.exists());
    assert!(held.path().exists(), "a run in flight keeps its workspace");
}

#[tokio::test]
async fn a_run_records_what_it_ran_with_and_its_manifest_says_how_the_data_was_made() {
    let (fx, mut req) =
        Fx::with_script("prov", "mkdir -p output; echo \"$GREETING\" > output/a.txt");
    req.env.insert("GREETING".into(), "hello".into());
    req.secrets.0.insert("TOKEN".into(), "s3cr3t-value".into());
    let out = fx.run(&req).await;
    assert_eq!(out.run.state, RunState::Succeeded, "{:?}", out.error);
    let p = out.run.provenance.clone().expect("provenance");
    assert_eq!(p.spec.command, "./run.sh");
    assert_eq!(p.spec.output_dir, req.output_dir);
    assert_eq!(p.spec.timeout_seconds, 30);
    assert_eq!(
        p.spec.env.get("GREETING").map(String::as_str),
        Some("hello")
    );
    assert_eq!(p.spec_sha256, p.spec.sha256());
    assert_eq!(p.telejob_version, crate::run::TELEJOB_VERSION);
    assert!(
        p.compute.as_deref().is_some_and(|c| c.starts_with("host ")),
        "{p:?}"
    );
    let json = serde_json::to_string(&out.run).expect("json");
    assert!(
        !json.contains("s3cr3t-value"),
        "a secret in the run record: {json}"
    );
    // The public manifest carries the hashes and the version, not the snapshot.
    let m: crate::run::Manifest = serde_json::from_slice(
        &fx.public
            .get(&keys::manifest(&req.job, &req.run_id))
            .await
            .expect("manifest"),
    )
    .expect("parse");
    assert_eq!(m.spec_sha256.as_deref(), Some(p.spec_sha256.as_str()));
    assert_eq!(
        m.telejob_version.as_deref(),
        Some(crate::run::TELEJOB_VERSION)
    );
    assert_eq!(Some(m.code_sha256), out.run.code_sha256);
    // The hash follows every part of the snapshot, and only it.
    let mut other = req.clone();
    assert_eq!(crate::run::SpecSnapshot::of(&other).sha256(), p.spec_sha256);
    other.env.insert("GREETING".into(), "bye".into());
    assert_ne!(crate::run::SpecSnapshot::of(&other).sha256(), p.spec_sha256);
    let mut other = req.clone();
    other.timeout = Duration::from_secs(31);
    assert_ne!(crate::run::SpecSnapshot::of(&other).sha256(), p.spec_sha256);
    let mut other = req.clone();
    other.secrets.0.insert("MORE".into(), "x".into());
    other.run_id = crate::run::RunId::new();
    assert_eq!(crate::run::SpecSnapshot::of(&other).sha256(), p.spec_sha256);
}
