//! telejob-local runs the core conformance suite.

use std::sync::Arc;
use std::time::Duration;

use telejob_core::agent::pipeline::RunStores;
use telejob_core::agent::sandbox::SandboxOptions;
use telejob_core::testing::{
    COMPUTE_CHECKS, STORE_CHECKS, compute_conformance, sample_tarball, store_conformance,
};
use telejob_local::{LocalCompute, LocalStore};

#[tokio::test]
async fn local_store_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = LocalStore::new(dir.path().join("store")).expect("store");
    assert_eq!(store_conformance(&store).await, STORE_CHECKS);
}

#[tokio::test]
async fn local_store_writes_plain_files_under_its_root() {
    use telejob_core::store::{PutOptions, Store};
    let dir = tempfile::tempdir().expect("tempdir");
    let store = LocalStore::from_url(&format!("file://{}", dir.path().display())).expect("store");
    store
        .put("job/data/x.csv", "a,b\n".into(), PutOptions::default())
        .await
        .expect("put");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("job/data/x.csv")).expect("file"),
        "a,b\n"
    );
    assert!(LocalStore::from_url("s3://bucket/x").is_err());
}

#[tokio::test]
async fn local_compute_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let public = Arc::new(LocalStore::new(dir.path().join("public")).expect("store"));
    let private = Arc::new(LocalStore::new(dir.path().join("private")).expect("store"));
    let code = dir.path().join("sample.tar.gz");
    std::fs::write(&code, sample_tarball()).expect("write");
    let scratch = dir.path().join("scratch");
    let compute = LocalCompute::builder(RunStores {
        public: public.clone(),
        private: private.clone(),
    })
    .with_scratch_dir(&scratch)
    .with_sandbox(SandboxOptions {
        kill_grace: Duration::from_millis(500),
        ..SandboxOptions::default()
    })
    .build();
    let ran = compute_conformance(
        &compute,
        &code.display().to_string(),
        public.as_ref(),
        private.as_ref(),
    )
    .await;
    assert_eq!(ran, COMPUTE_CHECKS);
    assert_eq!(
        std::fs::read_dir(&scratch).expect("scratch").count(),
        0,
        "workspaces are removed"
    );
}

#[test]
fn settings_come_from_the_environment_with_errors_naming_the_variable() {
    // Each case sets one variable in a child process, so the test's own environment is untouched.
    let exe = std::env::current_exe().expect("exe");
    for (var, value, ok) in [
        ("TELEJOB_CGROUP", "off", true),
        ("TELEJOB_CGROUP", "sometimes", false),
        ("TELEJOB_MAX_CONCURRENT", "two", false),
    ] {
        let out = std::process::Command::new(&exe)
            .args(["--exact", "from_env_probe", "--nocapture"])
            .env("TELEJOB_FROM_ENV_PROBE", "1")
            .env(var, value)
            .output()
            .expect("run the probe");
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(text.contains("probe: ok"), ok, "{var}={value}: {text}");
        if !ok {
            assert!(text.contains(var), "the error names {var}: {text}");
        }
    }
}

#[test]
fn from_env_probe() {
    if std::env::var_os("TELEJOB_FROM_ENV_PROBE").is_none() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(LocalStore::new(dir.path()).expect("store"));
    match LocalCompute::builder(RunStores {
        public: store.clone(),
        private: store,
    })
    .from_env()
    {
        Ok(_) => println!("probe: ok"),
        Err(e) => println!("probe: error: {e}"),
    }
}
