//! `telejob serve`: the HTTP API, the scheduler and SQLite persistence on one host.

mod api;
mod db;
mod example;
mod jobs;
mod listen;
mod metrics;
mod notify;
mod secrets;
mod sessions;
mod state;
mod tokens;
mod ui;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use telejob_aws::Ec2Compute;
use telejob_core::compute::Compute;
use telejob_core::pipeline::RunStores;
use telejob_core::sandbox::{CgroupMode, Identity, RunAs, SandboxOptions, UidRange};
use telejob_core::scheduler::clock::SystemClock;
use telejob_core::scheduler::{Scheduler, SchedulerParts};
use telejob_local::LocalCompute;

use crate::backends;

use crate::config::Config;
use crate::error::bad;
use crate::http_fetch::HttpFetcher;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Where the database, the admin token, code, logs and published output live.
    #[arg(long, env = "TELEJOB_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Address to listen on (port 0 picks a free port; the address is printed).
    #[arg(long, env = "TELEJOB_LISTEN", value_name = "ADDR")]
    listen: Option<String>,
    /// A TOML config file (see docs/config.md); flags and environment override it.
    #[arg(long, env = "TELEJOB_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Schedule the bundled slowsql example job every minute (owner: admin), to watch telejob work.
    #[arg(long)]
    example: bool,
}

/// The local compute backend from the config file and environment.
fn local_compute(
    cfg: &Config,
    stores: RunStores,
    data_dir: &std::path::Path,
) -> anyhow::Result<LocalCompute> {
    let identity = match (&cfg.run_as, &cfg.uid_range) {
        (Some(_), Some(_)) => {
            return Err(bad(
                "config: run_as and uid_range exclude each other; keep one",
            ));
        }
        (Some(u), None) => {
            Identity::Fixed(RunAs::lookup(u).map_err(|e| bad(format!("config run_as: {e}")))?)
        }
        (None, Some(r)) => Identity::Dynamic(UidRange::parse("config uid_range", r)?),
        (None, None) => Identity::default_for_current_user(),
    };
    if let Identity::Dynamic(range) = &identity {
        range.check_against_accounts()?;
    }
    let mode = |setting: &str, v: &Option<String>| -> anyhow::Result<CgroupMode> {
        match v.as_deref() {
            None => Ok(CgroupMode::Auto),
            Some(o) => o
                .parse::<CgroupMode>()
                .map_err(|e| bad(format!("config {setting}: {e}"))),
        }
    };
    let mut builder = LocalCompute::builder(stores)
        .with_sandbox(SandboxOptions {
            cgroup: mode("cgroup", &cfg.cgroup)?,
            namespaces: mode("namespaces", &cfg.namespaces)?,
            identity,
            ..SandboxOptions::default()
        })
        .with_fetcher(Arc::new(HttpFetcher::new()?))
        .with_scratch_dir(
            cfg.scratch_dir
                .clone()
                .unwrap_or_else(|| data_dir.join("runs")),
        );
    if let Some(n) = cfg.max_concurrent_runs {
        builder = builder.with_max_concurrent(n);
    }
    // Environment variables override the file.
    let builder = builder.from_env().map_err(|e| bad(e.to_string()))?;
    Ok(builder.build())
}

/// Runs the server until SIGTERM or SIGINT.
pub async fn serve(a: ServeArgs) -> anyhow::Result<ExitCode> {
    let cfg = match &a.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    let data_dir = a
        .data_dir
        .or(cfg.data_dir.clone())
        .unwrap_or_else(|| PathBuf::from("telejob-data"));
    let listen = a
        .listen
        .or(cfg.listen.clone())
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("--data-dir {}", data_dir.display()))?;
    std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("--data-dir {}", data_dir.display()))?;
    let data_dir = std::fs::canonicalize(&data_dir)?;
    // Bind first: a taken port must stop the start before anything is created.
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("--listen {listen}"))?;

    let secret_box = secrets::SecretBox::load(&data_dir, cfg.secrets_key_file.as_deref())?;
    let db = db::Db::open(&data_dir.join("telejob.db"))
        .await?
        .with_secret_box(secret_box);
    let token_file = data_dir.join("admin.token");
    if !db.has_admin().await? {
        let tokens = tokens::Tokens::load(&db).await?;
        let token = tokens
            .create(&db, "admin", true, Some("first start"))
            .await?;
        write_secret(&token_file, &token)?;
        eprintln!(
            "telejob: created the admin user; sign in with this token (also in {}, mode 0600):\n    {token}",
            token_file.display()
        );
    }
    let tokens = tokens::Tokens::load(&db).await?;

    let aws = cfg.aws_config();
    let public_url = cfg
        .public_store
        .clone()
        .unwrap_or_else(|| data_dir.join("public").display().to_string());
    let private_url = cfg
        .private_store
        .clone()
        .unwrap_or_else(|| data_dir.join("private").display().to_string());
    let stores = RunStores {
        public: backends::store("config public_store", &public_url, &aws).await?,
        private: backends::store("config private_store", &private_url, &aws).await?,
    };
    let (compute, ec2): (Arc<dyn Compute>, Option<Ec2Compute>) = match cfg.compute.as_deref() {
        None | Some("local") => {
            let local = local_compute(&cfg, stores.clone(), &data_dir)?;
            // Workspaces of runs this host was running when telejob last stopped.
            let p = local.pipeline().clone();
            let swept = tokio::task::spawn_blocking(move || p.remove_orphaned_workspaces())
                .await
                .map_err(|e| telejob_core::Error::task("removing interrupted workspaces", e))?;
            if swept > 0 {
                eprintln!("telejob: removed {swept} workspace(s) of interrupted runs");
            }
            (Arc::new(local), None)
        }
        Some("ec2") => {
            let c = backends::ec2_compute(&aws, &public_url, &private_url, None, None).await?;
            (Arc::new(c.clone()), Some(c))
        }
        Some(o) => {
            return Err(bad(format!("config compute = {o:?}: use local or ec2")));
        }
    };

    let compute_limits = compute.capabilities().limits;

    // Recovery. Local runs that were in flight when telejob stopped died with it: they are
    // interrupted, and whatever of them still runs on this host is killed. Remote runs go on
    // without us: they are reattached if their machine (or their result) is found.
    let mut adopted = Vec::new();
    for (run, trigger, attempt) in db.in_flight().await? {
        if compute.reattach(&run).await.unwrap_or_else(|e| {
            tracing::error!(run = %run.id, error = %e, "cannot reattach the run");
            false
        }) {
            eprintln!("telejob: run {} of {} reattached", run.id, run.job);
            adopted.push((run, trigger, attempt));
            continue;
        }
        let id = run.id.as_str().to_string();
        let killed =
            tokio::task::spawn_blocking(move || telejob_core::sandbox::kill_leftovers(&id))
                .await
                .map_err(|e| telejob_core::Error::task("killing a run's leftover processes", e))?;
        let run = db
            .interrupt(
                run,
                "interrupted: telejob stopped while the run was in flight; its processes were killed at restart",
            )
            .await?;
        tracing::warn!(run = %run.id, job = %run.job, killed, "run interrupted by a restart");
        eprintln!(
            "telejob: run {} of {} was in flight at the last stop: marked interrupted",
            run.id, run.job
        );
    }
    // After reattaching, so that the reaper leaves reattached runs alone.
    let reaper = ec2.map(|c| {
        c.spawn_reaper(std::time::Duration::from_secs(
            cfg.reap_interval_seconds.unwrap_or(300).max(10),
        ))
    });

    let metrics = Arc::new(metrics::Metrics::new());
    let limits = cfg.limits(compute_limits)?;
    let scheduler = Scheduler::new(SchedulerParts {
        store: Arc::new(db.clone()),
        compute,
        clock: Arc::new(SystemClock),
        notifier: Arc::new(notify::ServerNotifier::new(db.clone(), cfg.smtp.clone())?),
        observer: metrics.clone(),
        limits,
    });
    let timer = scheduler.start().await?;
    for (run, trigger, attempt) in adopted {
        scheduler.adopt(run, trigger, attempt);
    }
    let state = state::AppState {
        db: db.clone(),
        tokens,
        scheduler: scheduler.clone(),
        stores,
        limits,
        max_code_bytes: cfg.max_code_bytes.unwrap_or(1 << 30),
        metrics,
        sessions: sessions::Sessions::new(db.clone()),
    };
    if a.example {
        example::ensure(&state).await?;
    }
    let addr = listener.local_addr()?;
    println!("telejob: listening on http://{addr}");
    eprintln!("telejob: dashboard at http://{addr}/ (sign in with a token)");
    eprintln!(
        "telejob: data in {}; admin token in {}",
        data_dir.display(),
        token_file.display()
    );
    let app = api::router(state.clone()).merge(ui::router(state));
    let timeouts = listen::Timeouts {
        header_read: cfg.header_read_timeout_seconds.map_or(
            listen::Timeouts::default().header_read,
            std::time::Duration::from_secs,
        ),
        body_read: cfg.body_read_timeout_seconds.map_or(
            listen::Timeouts::default().body_read,
            std::time::Duration::from_secs,
        ),
    };
    listen::serve(listener, app, timeouts, shutdown_signal()).await?;
    eprintln!("telejob: shutting down: cancelling runs in flight");
    scheduler.shutdown().await;
    timer.abort();
    if let Some(r) = reaper {
        r.abort();
    }
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Writes a secret file readable by its owner only.
pub fn write_secret(path: &std::path::Path, content: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| path.display().to_string())?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    writeln!(f, "{content}")?;
    Ok(())
}

/// `telejob token create`: a new token for a user, made directly in the server's database.
pub async fn create_token(
    data_dir: &std::path::Path,
    user: &str,
    admin: bool,
) -> anyhow::Result<String> {
    let db_path = data_dir.join("telejob.db");
    if !db_path.exists() {
        return Err(bad(format!(
            "--data-dir {}: no telejob database there; start `telejob serve` once first",
            data_dir.display()
        )));
    }
    let db = db::Db::open(&db_path).await?;
    let tokens = tokens::Tokens::load(&db).await?;
    tokens
        .create(&db, user, admin, Some("telejob token create"))
        .await
}
