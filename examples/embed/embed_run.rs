//! Embeds telejob: runs the bundled slowsql example once through `LocalCompute`, publishing to a
//! temporary directory, and prints the run record.
//!
//! ```sh
//! cargo run -p telejob-examples --example embed_run
//! ```

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use telejob_core::agent::pipeline::RunStores;
use telejob_core::compute::{Compute, LaunchOptions};
use telejob_core::job::JobName;
use telejob_core::run::RunRequest;
use telejob_core::store::Store;
use telejob_local::{LocalCompute, LocalStore};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let out = tempfile::tempdir()?;
    let public = Arc::new(LocalStore::new(out.path().join("public"))?);
    let private = Arc::new(LocalStore::new(out.path().join("private"))?);
    let compute = LocalCompute::builder(RunStores {
        public: public.clone(),
        private,
    })
    .build();

    // A directory is packed and unpacked exactly like a tarball would be.
    let code = concat!(env!("CARGO_MANIFEST_DIR"), "/../slowsql");
    let req = RunRequest::new(JobName::new("slowsql")?, code, "./run.sh")
        .with_timeout(Duration::from_secs(175 * 60))
        .with_scheduled_for(
            Utc.with_ymd_and_hms(2014, 3, 8, 12, 0, 0)
                .single()
                .expect("valid instant"),
        );
    compute
        .launch(req.clone(), LaunchOptions::default())
        .await?;
    let run = compute.wait(&req.run_id).await?;
    println!("{} {}", run.id, run.state);
    for f in &run.published {
        println!(
            "  {} ({} bytes) -> {}",
            f.path,
            f.size,
            public.locate(&f.key)
        );
    }
    anyhow::ensure!(
        run.state == telejob_core::run::RunState::Succeeded,
        "run failed: {:?}",
        run.error
    );
    Ok(())
}
