//! `telejob serve`: the HTTP API, the dashboard and the scheduler, on SQLite (one process) or
//! PostgreSQL (several replicas, one of which runs the scheduler: see [`app::cluster`]).
//!
//! The layers, top down: [`http`] (API, dashboard, listener) over [`app`] (the services: the
//! one write path for jobs, workers, the cluster, notifications, watches) over `db` (SQLite and
//! PostgreSQL) and the config. `serve` is [`Settings::resolve`] (every default, checked before
//! anything starts), [`build`] (connect, compose, start the background work) and
//! [`Server::run`] (listen until SIGTERM or SIGINT).

mod admin;
pub mod app;
mod db;
pub mod http;
pub mod settings;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use telejob_core::scheduler::SchedulerParts;
use telejob_core::scheduler::clock::SystemClock;
use tokio_util::sync::CancellationToken;

use crate::backends::Backends;

pub use admin::{copy_database, create_token, write_secret};
pub use db::Location;
pub use settings::Settings;

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

/// Runs the server until SIGTERM or SIGINT.
pub async fn serve(a: ServeArgs) -> anyhow::Result<ExitCode> {
    let settings = Settings::resolve(a)?;
    build(settings).await?.run(shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// A server built and started (scheduler, watches), not yet listening.
#[derive(Debug)]
pub struct Server {
    listener: tokio::net::TcpListener,
    state: app::state::AppState,
    settings: Settings,
    token_file: PathBuf,
    stop: CancellationToken,
    lease_task: tokio::task::JoinHandle<()>,
}

/// Binds the listener, connects the database (making the admin on the first start), composes
/// the backends and the services, and starts the lease, the watches and (with `--example`) the
/// example job.
///
/// # Errors
///
/// A taken port (before anything is created), a database or store that cannot be opened, a
/// setting the backends refuse.
pub async fn build(settings: Settings) -> anyhow::Result<Server> {
    let cfg = &settings.config;
    let data_dir = &settings.data_dir;
    // Bind first: a taken port must stop the start before anything is created.
    let listener = tokio::net::TcpListener::bind(&settings.listen)
        .await
        .with_context(|| format!("--listen {}", settings.listen))?;
    let secret_box = db::SecretBox::load(data_dir, cfg.secrets_key_file.as_deref())?;
    let db = db::Db::connect(&settings.database).await?;
    db.check_secrets_key(&secret_box.key_id()).await?;
    let db = db.with_secret_box(secret_box);
    let token_file = data_dir.join("admin.token");
    if !db.has_admin().await? {
        let tokens = app::tokens::Tokens::load(&db).await?;
        let token = tokens
            .create(&db, "admin", true, Some("first start"))
            .await?;
        write_secret(&token_file, &token)?;
        eprintln!(
            "telejob: created the admin user; sign in with this token (also in {}, mode 0600):\n    {token}",
            token_file.display()
        );
    }
    let tokens = app::tokens::Tokens::load(&db).await?;
    let mut compute_settings = cfg.compute_settings();
    compute_settings.fence = Some(Arc::new(app::fence::DbFence::new(db.clone())));
    let backends = Backends::for_server(
        &compute_settings,
        data_dir,
        &settings.public_store,
        &settings.private_store,
    )
    .await?;
    if backends.swept > 0 {
        eprintln!(
            "telejob: removed {} workspace(s) of interrupted runs",
            backends.swept
        );
    }
    let Backends {
        stores, compute, ..
    } = backends;
    let capabilities = compute.capabilities();
    let notifier: Arc<dyn telejob_core::scheduler::notify::Notifier> =
        Arc::new(app::notify::ServerNotifier::new(
            db.clone(),
            app::notify::RunLinks {
                // Unset, the address bound (a port 0 given is known only now).
                public_url: match (&cfg.public_url, listener.local_addr()) {
                    (None, Ok(addr)) => format!("http://{addr}"),
                    _ => settings.public_url.clone(),
                },
                logs: stores.private.clone(),
            },
            cfg.smtp.clone(),
            cfg.allow_private_targets(),
        )?);
    let mut advisor = cfg.advisor(capabilities.machine_types.clone())?;
    advisor.images = app::advice::ImageList::of(compute.clone());
    let advisor = Arc::new(advisor);
    let workers = Arc::new(app::workers::Workers {
        backend: compute.workers(),
        policy: cfg.worker_policy()?,
        terminating: Arc::default(),
    });
    let metrics = Arc::new(app::metrics::Metrics::new());
    let limits = cfg.limits(capabilities.limits)?;
    let quotas = cfg.quotas()?;
    // The scheduler runs on whichever replica holds the lease (on SQLite: this process, as
    // soon as an earlier one's lease is free). Recovery of runs left in flight happens there.
    let cluster = app::cluster::Cluster::new(
        db.clone(),
        settings.lease,
        SchedulerParts {
            store: Arc::new(db.clone()),
            compute,
            clock: Arc::new(SystemClock),
            notifier: notifier.clone(),
            observer: Arc::new(app::published::IndexWriter {
                metrics: metrics.clone(),
                public: stores.public.clone(),
                db: db.clone(),
            }),
            limits,
            max_running_per_owner: Some(quotas.max_running),
        },
        settings.reap_every,
        metrics.clone(),
    );
    let stop = CancellationToken::new();
    let lease_task = tokio::spawn(cluster.clone().run(stop.clone()));
    // Become leader before answering, when the lease is free: a single server schedules from
    // its first request on.
    cluster.settle().await;
    let state = app::state::AppState {
        quotas: Arc::new(app::quotas::Quotas::new(quotas)),
        db: db.clone(),
        tokens,
        cluster: cluster.clone(),
        stores,
        limits,
        max_code_bytes: settings.max_code_bytes,
        uploads: Arc::new(
            app::uploads::Uploads::new(
                data_dir,
                cfg.max_upload_unpacked_bytes
                    .unwrap_or(settings::defaults::MAX_UPLOAD_UNPACKED_BYTES),
            )
            .with_context(|| format!("{}", data_dir.join("uploads").display()))?,
        ),
        metrics,
        sessions: app::sessions::Sessions::new(db.clone()),
        drafts: Arc::default(),
        advisor: advisor.clone(),
        workers: workers.clone(),
        notifier: notifier.clone(),
    };
    tokio::spawn(
        app::late::LateWatch {
            db: db.clone(),
            cluster: cluster.clone(),
            advisor,
            notifier: notifier.clone(),
            metrics: state.metrics.clone(),
            every: settings.late_check,
        }
        .run(),
    );
    tokio::spawn(
        app::workers::WorkerWatch {
            db: db.clone(),
            cluster: cluster.clone(),
            workers,
            notifier,
            every: settings.worker_check,
        }
        .run(),
    );
    if settings.example {
        // The client verbs find this server as it was started: its data directory (for the
        // admin token) and address, when they are not the defaults.
        let mut flags = String::new();
        if std::fs::canonicalize(settings::defaults::DATA_DIR)
            .ok()
            .as_ref()
            != Some(&settings.data_dir)
        {
            flags.push_str(&format!(" --data-dir {}", settings.data_dir.display()));
        }
        if let Ok(addr) = listener.local_addr()
            && addr.to_string() != settings::defaults::LISTEN
        {
            flags.push_str(&format!(" --server http://{addr}"));
        }
        app::example::ensure(&state, &flags).await?;
    }
    Ok(Server {
        listener,
        state,
        settings,
        token_file,
        stop,
        lease_task,
    })
}

impl Server {
    /// The application (API and dashboard), for requests served in this process.
    pub fn router(&self) -> axum::Router {
        http::router(self.state.clone())
    }

    /// Listens until `shutdown` resolves, then stops the scheduler (local runs in flight are
    /// cancelled and recorded) and gives the lease up.
    ///
    /// # Errors
    ///
    /// Errors of the listener.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
        let addr = self.listener.local_addr()?;
        println!("telejob: listening on http://{addr}");
        eprintln!("telejob: dashboard at http://{addr}/ (sign in with a token)");
        eprintln!(
            "telejob: data in {}; admin token in {}",
            self.settings.data_dir.display(),
            self.token_file.display()
        );
        let router = self.router();
        http::listen::serve(self.listener, router, self.settings.timeouts, shutdown).await?;
        self.stop.cancel();
        if let Err(e) = self.lease_task.await {
            tracing::error!(error = %e, "the lease task failed");
        }
        Ok(())
    }
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
