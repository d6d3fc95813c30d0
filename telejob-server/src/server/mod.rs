//! `telejob serve`: the HTTP API, the dashboard and the scheduler, on SQLite (one process) or
//! PostgreSQL (several replicas, one of which runs the scheduler: see [`cluster`]).

pub mod advice;
mod api;
mod cluster;
mod db;
mod errors;
mod example;
mod jobs;
mod late;
mod listen;
mod metrics;
mod notify;
mod secrets;
mod sessions;
mod state;
mod tokens;
mod ui;
pub mod workers;

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
use telejob_core::scheduler::SchedulerParts;
use telejob_core::scheduler::clock::SystemClock;
use telejob_local::LocalCompute;

use crate::backends;

use crate::config::Config;
use crate::error::bad;
use crate::http_fetch::HttpFetcher;

pub use db::Location;

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
    /// Where the state lives: sqlite:PATH (default sqlite:<data-dir>/telejob.db) or
    /// postgres://user:password@host:port/database, which several replicas can share.
    #[arg(long, env = "TELEJOB_DATABASE_URL", value_name = "DATABASE")]
    database: Option<Location>,
    /// Schedule the bundled slowsql example job every minute (owner: admin), to watch telejob work.
    #[arg(long)]
    example: bool,
}

/// The database from `--database`, the config file, or the data directory.
fn location(
    flag: Option<&Location>,
    cfg: &Config,
    data_dir: &std::path::Path,
) -> anyhow::Result<Location> {
    if let Some(l) = flag {
        return Ok(l.clone());
    }
    match &cfg.database {
        Some(s) => s
            .parse()
            .map_err(|e| bad(format!("config database = {s:?}: {e}"))),
        None => Ok(Location::Sqlite(data_dir.join("telejob.db"))),
    }
}

/// Several replicas must see the same code, logs and output: with a shared database, local
/// stores are accepted only when the operator says the directory is shared.
fn check_shared_stores(cfg: &Config, at: &Location, urls: [(&str, &str); 2]) -> anyhow::Result<()> {
    if !at.is_shared() || cfg.shared_stores == Some(true) {
        return Ok(());
    }
    for (key, url) in urls {
        if !url.starts_with("s3://") {
            return Err(bad(format!(
                "{key} = {url:?} is a directory of this host, but the database {at} is shared by replicas: set {key} to an s3:// store, or set shared_stores = true in the config if every replica sees this same directory"
            )));
        }
    }
    Ok(())
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

    let at = location(a.database.as_ref(), &cfg, &data_dir)?;
    let public_url = cfg
        .public_store
        .clone()
        .unwrap_or_else(|| data_dir.join("public").display().to_string());
    let private_url = cfg
        .private_store
        .clone()
        .unwrap_or_else(|| data_dir.join("private").display().to_string());
    check_shared_stores(
        &cfg,
        &at,
        [
            ("public_store", &public_url),
            ("private_store", &private_url),
        ],
    )?;
    let secret_box = secrets::SecretBox::load(&data_dir, cfg.secrets_key_file.as_deref())?;
    let db = db::Db::connect(&at).await?;
    db.check_secrets_key(&secret_box.key_id()).await?;
    let db = db.with_secret_box(secret_box);
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

    let notifier: Arc<dyn telejob_core::scheduler::notify::Notifier> =
        Arc::new(notify::ServerNotifier::new(db.clone(), cfg.smtp.clone())?);
    let advisor = Arc::new(cfg.advisor()?);
    let workers = Arc::new(workers::Workers {
        ec2: ec2.as_ref().map(Ec2Compute::workers),
        policy: cfg.worker_policy()?,
    });
    let compute_limits = compute.capabilities().limits;
    let metrics = Arc::new(metrics::Metrics::new());
    let limits = cfg.limits(compute_limits)?;
    let lease = match cfg.lease_seconds {
        None => cluster::LeaseSettings::default(),
        Some(n) if n >= 2 => cluster::LeaseSettings {
            ttl: std::time::Duration::from_secs(n),
        },
        Some(n) => {
            return Err(bad(format!(
                "config lease_seconds = {n}: use at least 2 (default 10)"
            )));
        }
    };
    // The scheduler runs on whichever replica holds the lease (on SQLite: this process, as
    // soon as an earlier one's lease is free). Recovery of runs left in flight happens there.
    let cluster = cluster::Cluster::new(
        db.clone(),
        lease,
        SchedulerParts {
            store: Arc::new(db.clone()),
            compute,
            clock: Arc::new(SystemClock),
            notifier: notifier.clone(),
            observer: metrics.clone(),
            limits,
        },
        ec2,
        std::time::Duration::from_secs(cfg.reap_interval_seconds.unwrap_or(300).max(10)),
        metrics.clone(),
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let lease_task = tokio::spawn(cluster.clone().run(stop.clone()));
    // Become leader before answering, when the lease is free: a single server schedules from
    // its first request on.
    cluster.settle().await;
    let state = state::AppState {
        db: db.clone(),
        tokens,
        cluster: cluster.clone(),
        stores,
        limits,
        max_code_bytes: cfg.max_code_bytes.unwrap_or(1 << 30),
        metrics,
        sessions: sessions::Sessions::new(db.clone()),
        advisor: advisor.clone(),
        workers: workers.clone(),
        notifier: notifier.clone(),
    };
    tokio::spawn(
        late::LateWatch {
            db: db.clone(),
            cluster: cluster.clone(),
            advisor,
            notifier: notifier.clone(),
            metrics: state.metrics.clone(),
            every: std::time::Duration::from_secs(cfg.late_check_seconds.unwrap_or(15).max(1)),
        }
        .run(),
    );
    tokio::spawn(
        workers::WorkerWatch {
            db: db.clone(),
            cluster: cluster.clone(),
            workers,
            notifier,
            every: std::time::Duration::from_secs(cfg.worker_check_seconds.unwrap_or(15).max(1)),
        }
        .run(),
    );
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
    stop.cancel();
    if let Err(e) = lease_task.await {
        tracing::error!(error = %e, "the lease task failed");
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
    database: Option<&Location>,
    user: &str,
    admin: bool,
) -> anyhow::Result<String> {
    let at = database
        .cloned()
        .unwrap_or_else(|| Location::Sqlite(data_dir.join("telejob.db")));
    if let Location::Sqlite(p) = &at
        && !p.exists()
    {
        return Err(bad(format!(
            "--data-dir {}: no telejob database there; start `telejob serve` once first (or give --database)",
            data_dir.display()
        )));
    }
    let db = db::Db::connect(&at).await?;
    let tokens = tokens::Tokens::load(&db).await?;
    tokens
        .create(&db, user, admin, Some("telejob token create"))
        .await
}

/// `telejob db copy`: every table of `from` into the empty database `to`, counts checked.
pub async fn copy_database(
    from: &Location,
    to: &Location,
) -> anyhow::Result<Vec<(&'static str, i64)>> {
    if from == to {
        return Err(bad(
            "--to: the same database as --from; copy into another one",
        ));
    }
    if let Location::Sqlite(p) = from
        && !p.exists()
    {
        return Err(bad(format!("--from {from}: no such file")));
    }
    let src = db::Db::connect(from).await?;
    let dst = db::Db::connect(to).await?;
    let copied = src.copy_into(&dst).await?;
    src.close().await;
    dst.close().await;
    Ok(copied)
}
