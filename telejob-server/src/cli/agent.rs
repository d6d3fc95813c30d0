//! `telejob agent`: the pipeline entry on remote machines.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use telejob_core::agent::pipeline::{FailureKind, Pipeline, RunStores};
use telejob_core::agent::sandbox::{CgroupMode, Identity, SandboxOptions};
use telejob_core::run::{Run, RunRequest, RunState, keys};
use telejob_core::store::PutOptions;
use tokio_util::sync::CancellationToken;

use crate::backends::{self, AwsConfig};
use crate::error::bad;
use crate::http_fetch::HttpFetcher;

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The run request, a JSON file (as written by the server).
    #[arg(long, value_name = "FILE")]
    request: PathBuf,
    /// The public store: a directory or s3://bucket/prefix.
    #[arg(long, value_name = "DIR|URL")]
    public: String,
    /// The private store (code, logs, status): a directory or s3://bucket/prefix.
    #[arg(long, value_name = "DIR|URL")]
    private: String,
    /// A custom S3 endpoint (S3-compatible stores); default AWS. Credentials come from
    /// `--credentials`, else the standard chain.
    #[arg(long, value_name = "URL")]
    s3_endpoint: Option<String>,
    /// The S3 region (default: the standard chain).
    #[arg(long, value_name = "REGION")]
    s3_region: Option<String>,
    /// This run's own credentials, a JSON file (access_key_id, secret_access_key,
    /// session_token, expires) as the server wrote it: on EC2, scoped to this run's objects.
    #[arg(long, value_name = "FILE")]
    credentials: Option<PathBuf>,
    /// Describes the machine for the run log's first line (e.g. "EC2 instance i-0abc").
    #[arg(
        long,
        value_name = "TEXT",
        default_value = "this host, launched for the run"
    )]
    machine: String,
    /// Do not run the job: record it as failed with REASON (the machine cannot run it safely).
    #[arg(long, value_name = "REASON")]
    refuse: Option<String>,
}

pub async fn agent(a: AgentArgs) -> anyhow::Result<ExitCode> {
    let body = std::fs::read(&a.request).with_context(|| a.request.display().to_string())?;
    let req: RunRequest = serde_json::from_slice(&body)
        .map_err(|e| bad(format!("--request: not a run request: {e}")))?;
    let mut aws = backends::AwsTable::with(a.s3_region.clone(), a.s3_endpoint.clone());
    if let Some(path) = &a.credentials {
        let text = std::fs::read(path).with_context(|| path.display().to_string())?;
        aws = aws.with_run_credentials(&text)?;
    }
    let cfg = AwsConfig {
        aws,
        ..AwsConfig::default()
    };
    let stores = RunStores {
        public: backends::store("--public", &a.public, &cfg).await?,
        private: backends::store("--private", &a.private, &cfg).await?,
    };
    if let Some(reason) = a.refuse {
        let mut run = Run::pending(&req);
        run.state = RunState::Failed;
        run.error = Some(format!("refused to run: {reason}"));
        run.phases.finished = Some(chrono::Utc::now());
        let key = keys::status(&req.job, &req.run_id);
        stores
            .private
            .put(
                &key,
                serde_json::to_vec(&run)?.into(),
                PutOptions::default(),
            )
            .await?;
        eprintln!("telejob: {}", run.error.as_deref().unwrap_or_default());
        return Ok(super::exit::code(run.state, false));
    }
    // The machine is the run's own (launched for it, thrown away after): the job runs as the
    // agent's user, root, as on a worker; the run's cgroup still ends everything it started.
    let pipeline = Pipeline::new(stores)
        .with_fetcher(Arc::new(HttpFetcher::new()?))
        .with_sandbox(SandboxOptions {
            identity: Identity::Current,
            namespaces: CgroupMode::Off,
            own_host: Some(a.machine.clone()),
            ..SandboxOptions::default()
        });
    let cancel = CancellationToken::new();
    let c2 = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            c2.cancel();
        }
    });
    let out = pipeline.run(&req, None, cancel).await;
    say!("{}", serde_json::to_string_pretty(&out.run)?);
    Ok(super::exit::code(
        out.run.state,
        out.failure == Some(FailureKind::BadInput),
    ))
}
