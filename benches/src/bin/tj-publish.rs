//! `tj-publish DIR s3://bucket/prefix [--endpoint URL] [--concurrency N]`: telejob's publish step
//! (plan + upload through `S3Store`, exactly as a run publishes its output directory), as a
//! command for the comparison with `aws s3 sync` and `rclone copy` (`benches/peers/run.py`).
//! Credentials come from the standard AWS chain.

use std::path::Path;
use std::process::ExitCode;

use telejob_aws::S3StoreBuilder;
use telejob_core::agent::publish::{PublishPolicy, plan, upload};

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(url)) = (args.next(), args.next()) else {
        eprintln!("usage: tj-publish DIR s3://bucket/prefix [--endpoint URL] [--concurrency N]");
        return ExitCode::from(2);
    };
    let mut endpoint = None;
    let mut policy = PublishPolicy {
        max_total_bytes: u64::MAX,
        max_files: u64::MAX,
        ..PublishPolicy::default()
    };
    while let Some(flag) = args.next() {
        match (flag.as_str(), args.next()) {
            ("--endpoint", Some(v)) => endpoint = Some(v),
            ("--concurrency", Some(v)) => match v.parse() {
                Ok(n) => policy.concurrency = n,
                Err(_) => {
                    eprintln!("tj-publish: --concurrency {v}: not a number");
                    return ExitCode::from(2);
                }
            },
            _ => {
                eprintln!("tj-publish: unknown argument {flag}");
                return ExitCode::from(2);
            }
        }
    }
    match publish(Path::new(&dir), &url, endpoint, &policy).await {
        Ok(n) => {
            println!("{n} files");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tj-publish: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn publish(
    dir: &Path,
    url: &str,
    endpoint: Option<String>,
    policy: &PublishPolicy,
) -> telejob_core::Result<usize> {
    let mut b = S3StoreBuilder::from_url(url)?;
    if let Some(e) = endpoint {
        b = b.with_endpoint(e);
    }
    let store = b.from_env().build().await?;
    let dir = std::fs::canonicalize(dir).map_err(|e| telejob_core::Error::io(dir, e))?;
    let (root, name) = match (dir.parent(), dir.file_name()) {
        (Some(p), Some(n)) => (p.to_path_buf(), n.to_string_lossy().into_owned()),
        _ => {
            return Err(telejob_core::Error::invalid(
                "dir",
                "give a directory below /",
            ));
        }
    };
    let p = plan(&root, &name, "", policy)?;
    let files = upload(&p, &*store, "", policy.concurrency, None, None).await?;
    Ok(files.len())
}
