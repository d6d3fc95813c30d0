//! telejob-local runs the core conformance suite.

use std::sync::Arc;
use std::time::Duration;

use telejob_core::pipeline::RunStores;
use telejob_core::sandbox::SandboxOptions;
use telejob_core::testing::{compute_conformance, sample_tarball, store_conformance};
use telejob_local::{LocalCompute, LocalStore};

#[tokio::test]
async fn local_store_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = LocalStore::new(dir.path().join("store")).expect("store");
    store_conformance(&store).await;
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
    compute_conformance(
        &compute,
        &code.display().to_string(),
        public.as_ref(),
        private.as_ref(),
    )
    .await;
    assert_eq!(
        std::fs::read_dir(&scratch).expect("scratch").count(),
        0,
        "workspaces are removed"
    );
}
