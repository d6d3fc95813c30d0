//! Embeds telejob's scheduler: a daily job, run now in this process, published to memory.
use std::sync::Arc;
use telejob_core::{Compute, InProcessCompute, JobSpec, JobState, MemorySchedulerStore};
use telejob_core::{MemoryStore, Pipeline, RunStores, Scheduler, SchedulerParts, Store};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let public = Arc::new(MemoryStore::new());
    let stores = RunStores::new(public.clone(), Arc::new(MemoryStore::new()));
    let compute = Arc::new(InProcessCompute::new(Pipeline::new(stores), 4));
    let code = std::env::temp_dir().join("telejob-hello");
    std::fs::create_dir_all(&code)?;
    std::fs::write(
        code.join("run.sh"),
        "mkdir -p output && echo hi > output/hi.txt",
    )?;
    let mut spec = JobSpec::new("hello");
    spec.command = "bash run.sh".into();
    let jobs = Arc::new(MemorySchedulerStore::new());
    jobs.put_job(JobState::new(spec, "me").with_code(code.display().to_string()))?;
    let scheduler = Scheduler::new(SchedulerParts::new(jobs, compute.clone()));
    scheduler.start().await?;
    let id = scheduler.run_now(&"hello".parse()?).await?;
    let run = compute.wait(&id).await?;
    let hi = public.get("hello/data/hi.txt").await?;
    println!(
        "run {} {}: {}",
        run.id,
        run.state,
        String::from_utf8_lossy(&hi)
    );
    scheduler.shutdown().await;
    Ok(())
}
