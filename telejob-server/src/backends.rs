//! Composition of backends from URLs and config: `file://`/directories → `LocalStore`,
//! `s3://` → `S3Store`; `compute = "local"` → `LocalCompute`, `compute = "ec2"` →
//! `Ec2Compute`. The only module that names the backend crates' types: everything else sees
//! `Arc<dyn Store>`, `Arc<dyn Compute>` and what [`Compute::reaper`] and [`Compute::workers`]
//! give.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
#[cfg(feature = "ec2")]
use telejob_aws::{Ec2ComputeBuilder, Ec2Workers};
use telejob_aws::{S3Store, S3StoreBuilder};
use telejob_core::agent::RunStores;
use telejob_core::agent::sandbox::image::{self, BuildOptions};
use telejob_core::agent::sandbox::{CgroupMode, Identity, MachineOptions, SandboxOptions};
use telejob_core::compute::Compute;
use telejob_core::store::Store;
use telejob_core::worker::WorkerBackend;
use telejob_local::{LocalCompute, LocalStore};

use anyhow::Context;

use crate::error::bad;
use crate::http_fetch::HttpFetcher;

/// The `[aws]` table of the config file: region and endpoint for S3 and EC2 (credentials
/// come from the standard AWS chain).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct AwsTable(telejob_aws::AwsOptions);

impl AwsTable {
    /// Region and endpoint given on the command line (`telejob agent`).
    pub fn with(region: Option<String>, endpoint: Option<String>) -> Self {
        let mut o = telejob_aws::AwsOptions::default();
        o.region = region;
        o.endpoint = endpoint;
        Self(o)
    }

    /// These options, signing with a run's own credentials (`json`, as the server wrote them
    /// for the run) instead of the standard chain.
    ///
    /// # Errors
    ///
    /// `json` is not run credentials.
    pub fn with_run_credentials(self, json: &[u8]) -> anyhow::Result<Self> {
        let c: telejob_aws::RunCredentials = serde_json::from_slice(json)
            .map_err(|e| bad(format!("--credentials: not run credentials: {e}")))?;
        Ok(Self(self.0.with_credentials(c.provider())))
    }
}

/// The `[ec2]` table: what an operator configures for runs on EC2 instances (AMI, instance
/// types, network, instance profile; docs/aws.md).
#[cfg(feature = "ec2")]
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct InstanceTable(telejob_aws::Ec2Settings);

/// The `[ec2]` table, kept as written: this binary was built without EC2 (the `ec2` feature),
/// so a config that has one still loads, and using it says how to get EC2.
#[cfg(not(feature = "ec2"))]
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct InstanceTable(#[allow(dead_code)] toml::Table);

/// The error of an EC2 setting on a binary built without EC2.
#[cfg(not(feature = "ec2"))]
fn no_ec2(what: &str) -> anyhow::Error {
    bad(format!(
        "{what}: this telejob was built without EC2; install it with \
         `cargo install --path telejob-server --features ec2` (see docs/aws.md)"
    ))
}

/// What a server's compute is made of: the config's `compute`, `[aws]`, `[s3]`, `[ec2]`, and
/// for local compute the sandbox settings and the scratch directory.
#[derive(Debug, Clone, Default)]
pub struct ComputeSettings {
    /// `compute`: `local` or `ec2`.
    pub compute: Option<String>,
    /// `[aws]`, `[s3]`, `[ec2]`.
    pub aws: AwsConfig,
    /// `run_as`.
    pub run_as: Option<String>,
    /// `uid_range`.
    pub uid_range: Option<String>,
    /// `cgroup`.
    pub cgroup: Option<String>,
    /// `namespaces`.
    pub namespaces: Option<String>,
    /// `scratch_dir`.
    pub scratch_dir: Option<std::path::PathBuf>,
    /// `image`.
    pub image: Option<String>,
    /// `images_dir`.
    pub images_dir: Option<std::path::PathBuf>,
    /// `[images]`.
    pub images: std::collections::BTreeMap<String, std::path::PathBuf>,
    /// `max_concurrent_runs`.
    pub max_concurrent_runs: Option<usize>,
    /// What local runs ask before they publish (the server's records).
    pub fence: Option<Arc<dyn telejob_core::store::PublishFence>>,
}

/// Where runs execute (`compute` in the config, `--compute` on the command line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ComputeKind {
    /// Child processes of this host.
    #[default]
    Local,
    /// A fresh EC2 instance per run (needs `[ec2]` and s3:// stores).
    Ec2,
}

impl ComputeKind {
    /// The kind the config's `compute` names.
    ///
    /// # Errors
    ///
    /// [`BadInput`](crate::error::BadInput) for any other value.
    pub fn from_config(v: Option<&str>) -> anyhow::Result<Self> {
        match v {
            None | Some("local") => Ok(Self::Local),
            Some("ec2") => Ok(Self::Ec2),
            Some(o) => Err(bad(format!("config compute = {o:?}: use local or ec2"))),
        }
    }

    /// Runs execute on other machines, reading and writing through S3.
    pub fn is_remote(self) -> bool {
        self == Self::Ec2
    }
}

/// What a server runs on.
#[derive(Debug)]
pub struct Backends {
    /// Where runs write.
    pub stores: RunStores,
    /// Where runs execute; its [`Compute::reaper`] and [`Compute::workers`] say what else it
    /// offers.
    pub compute: Arc<dyn Compute>,
    /// Workspaces of interrupted runs removed at start (local compute).
    pub swept: usize,
}

impl Backends {
    /// The stores at `public` and `private` and the compute `cfg` asks for. Local compute
    /// removes the workspaces of runs this host was running when telejob last stopped.
    ///
    /// # Errors
    ///
    /// A store or compute setting that is wrong, naming it.
    pub async fn for_server(
        cfg: &ComputeSettings,
        data_dir: &Path,
        public: &str,
        private: &str,
    ) -> anyhow::Result<Self> {
        let aws = &cfg.aws;
        let stores = RunStores {
            public: store("config public_store", public, aws).await?,
            private: store("config private_store", private, aws).await?,
        };
        match ComputeKind::from_config(cfg.compute.as_deref())? {
            ComputeKind::Local => {
                let local = server_local_compute(cfg, stores.clone(), data_dir)?;
                let p = local.pipeline().clone();
                let swept = tokio::task::spawn_blocking(move || p.remove_orphaned_workspaces())
                    .await
                    .map_err(|e| telejob_core::Error::task("removing interrupted workspaces", e))?;
                Ok(Self {
                    stores,
                    compute: Arc::new(local),
                    swept,
                })
            }
            ComputeKind::Ec2 => Ok(Self {
                compute: remote_compute(aws, public, private, None, None).await?,
                stores,
                swept: 0,
            }),
        }
    }
}

/// This host's compute for one run now (`telejob run`, `telejob worker shell`): one at a time,
/// sandboxed as `sandbox` says, attached to this terminal when `interactive`.
///
/// # Errors
///
/// When the HTTP client for code URLs cannot be made.
pub fn one_run_compute(
    stores: RunStores,
    sandbox: SandboxOptions,
    interactive: bool,
    after_command: Option<telejob_core::agent::pipeline::AfterCommand>,
) -> anyhow::Result<LocalCompute> {
    let mut b = LocalCompute::builder(stores)
        .with_sandbox(sandbox)
        .with_max_concurrent(1)
        .with_fetcher(Arc::new(HttpFetcher::new()?));
    if interactive {
        b = b.attached_to_terminal();
    }
    if let Some(f) = after_command {
        b = b.after_command(f);
    }
    Ok(b.build())
}

/// The local compute backend of a server, from its config file and the environment.
fn server_local_compute(
    cfg: &ComputeSettings,
    stores: RunStores,
    data_dir: &Path,
) -> anyhow::Result<LocalCompute> {
    let identity = Identity::from_settings(
        cfg.run_as.as_deref().map(|u| ("config run_as", u)),
        cfg.uid_range.as_deref().map(|r| ("config uid_range", r)),
    )?;
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
        .with_machines(machine_options(cfg, data_dir)?)
        .with_scratch_dir(
            cfg.scratch_dir
                .clone()
                .unwrap_or_else(|| data_dir.join("runs")),
        );
    if let Some(n) = cfg.max_concurrent_runs {
        builder = builder.with_max_concurrent(n);
    }
    if let Some(f) = &cfg.fence {
        builder = builder.with_fence(f.clone());
    }
    // Environment variables override the file.
    let builder = builder.from_env().map_err(|e| bad(e.to_string()))?;
    settle_default_image(builder)
}

/// Says once, at start, what runs are: where they cannot be machines of their own, what they
/// lack; where they can, the default image is built on first use, and where it cannot be
/// (no mmdebstrap), runs start from the host's own root (`image = host`) until it is, as the
/// line printed says.
fn settle_default_image(
    builder: telejob_local::LocalComputeBuilder,
) -> anyhow::Result<LocalCompute> {
    let sandbox = builder.sandbox().clone();
    let default = sandbox.machine_here().map(|m| m.image.clone());
    match default {
        Some(name) if name != image::HOST_IMAGE => match ensure_image(&sandbox, &name) {
            Ok(()) => Ok(builder.build()),
            Err(e) if name == image::DEFAULT_IMAGE => {
                let why = if which("mmdebstrap") {
                    format!("{e:#}")
                } else {
                    "image default is not built and mmdebstrap is not installed".into()
                };
                eprintln!(
                    "telejob: {why}: runs start from the host's own root file system (image = host) until `apt-get install mmdebstrap` and `telejob image build`"
                );
                let mut m = sandbox.machine.clone().expect("machines are here");
                m.image = image::HOST_IMAGE.into();
                Ok(builder.with_machines(m).build())
            }
            Err(e) => Err(e),
        },
        _ => {
            if let Some(why) = sandbox.not_isolated(None) {
                eprintln!("telejob: {why}");
            }
            Ok(builder.build())
        }
    }
}

/// The images runs start from and the default one, from `image`, `images_dir` and `[images]`.
///
/// # Errors
///
/// [`BadInput`](crate::error::BadInput) naming the key for a name that cannot be an image's.
pub fn machine_options(cfg: &ComputeSettings, data_dir: &Path) -> anyhow::Result<MachineOptions> {
    let mut m = MachineOptions::new(
        cfg.images_dir
            .clone()
            .unwrap_or_else(|| data_dir.join("images")),
    );
    for name in cfg.images.keys() {
        if !image::valid_name(name) || name == image::HOST_IMAGE {
            return Err(bad(format!(
                "config [images] {name:?}: an image name is lowercase letters, digits and dashes, and not host"
            )));
        }
    }
    m.images.named.clone_from(&cfg.images);
    if let Some(i) = &cfg.image {
        if !image::valid_name(i) {
            return Err(bad(format!(
                "config image = {i:?}: name an image (lowercase letters, digits and dashes), or host"
            )));
        }
        m.image.clone_from(i);
    }
    Ok(m)
}

/// `[s3]`: tuning of S3 stores.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Tuning {
    /// Requests in flight at once per store (default 32).
    pub max_concurrency: Option<usize>,
    /// Multipart part size in MiB (default 8, at least 5).
    pub part_size_mib: Option<usize>,
    /// Path-style requests (default: on with a custom endpoint, off on AWS).
    pub path_style: Option<bool>,
}

/// The AWS parts of a config file.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AwsConfig {
    /// Region and endpoint for S3 and EC2.
    #[serde(default)]
    pub aws: AwsTable,
    /// S3 tuning.
    #[serde(default)]
    pub s3: S3Tuning,
    /// EC2 settings; required for `compute = "ec2"`.
    pub ec2: Option<InstanceTable>,
}

/// An S3 store for `url` (`s3://bucket/prefix`).
pub async fn s3_store(url: &str, cfg: &AwsConfig) -> anyhow::Result<S3Store> {
    let mut b = S3StoreBuilder::from_url(url)?.with_aws(cfg.aws.0.clone().or_env("S3"));
    if let Some(n) = cfg.s3.max_concurrency {
        b = b.with_max_concurrency(n);
    }
    if let Some(m) = cfg.s3.part_size_mib {
        b = b.with_part_size(m << 20);
    }
    if let Some(p) = cfg.s3.path_style {
        b = b.with_path_style(p);
    }
    Ok(b.build().await?)
}

/// What kind of store a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// `s3://bucket/prefix`.
    S3,
    /// `file:///dir` or a plain directory.
    Local,
}

/// The kind of store `url` names; `setting` (`--publish-to`, `config public_store`) is named in
/// the error for any other scheme.
///
/// # Errors
///
/// [`BadInput`](crate::error::BadInput) for a URL scheme that is no store.
pub fn store_kind(setting: &str, url: &str) -> anyhow::Result<StoreKind> {
    match url.split_once("://") {
        Some(("s3", _)) => Ok(StoreKind::S3),
        Some(("file", _)) | None => Ok(StoreKind::Local),
        Some((scheme, _)) => Err(bad(format!(
            "{setting} {url}: {scheme}:// is not a store; use a directory or s3://bucket/prefix"
        ))),
    }
}

/// Checks that `url` is an S3 store, as EC2 runs need.
///
/// # Errors
///
/// [`BadInput`](crate::error::BadInput) naming `setting` otherwise.
pub fn require_s3(setting: &str, url: &str) -> anyhow::Result<()> {
    if store_kind(setting, url)? == StoreKind::S3 {
        Ok(())
    } else {
        Err(bad(format!(
            "{setting} {url}: EC2 runs read and write through S3; use s3://bucket/prefix"
        )))
    }
}

/// A store for `url` (`s3://bucket/prefix`, `file:///dir` or a directory), given as `setting`.
///
/// # Errors
///
/// A URL that names no store, or a store that cannot be opened; both name `setting`.
pub async fn store(setting: &str, url: &str, cfg: &AwsConfig) -> anyhow::Result<Arc<dyn Store>> {
    let opened: anyhow::Result<Arc<dyn Store>> = match store_kind(setting, url)? {
        StoreKind::S3 => s3_store(url, cfg)
            .await
            .map(|s| Arc::new(s.store()) as Arc<dyn Store>),
        StoreKind::Local => LocalStore::from_url(url)
            .map(|s| Arc::new(s) as Arc<dyn Store>)
            .map_err(Into::into),
    };
    opened.with_context(|| format!("{setting} {url}"))
}

/// Compute on remote machines (EC2) publishing to `public` with records in `private` (both
/// `s3://` URLs), on `instance_type` unless a job asks for another, tagged as `launcher`'s.
pub async fn remote_compute(
    cfg: &AwsConfig,
    public: &str,
    private: &str,
    instance_type: Option<&str>,
    launcher: Option<&str>,
) -> anyhow::Result<Arc<dyn Compute>> {
    #[cfg(not(feature = "ec2"))]
    {
        let _ = (cfg, public, private, instance_type, launcher);
        Err(no_ec2("compute = \"ec2\""))
    }
    #[cfg(feature = "ec2")]
    {
        let mut settings = cfg.ec2.clone().map(|t| t.0).ok_or_else(|| {
            bad("config: EC2 runs need an [ec2] table with at least ami = \"ami-…\" (see docs/aws.md)")
        })?;
        require_s3("public store", public)?;
        require_s3("private store", private)?;
        if let Some(l) = launcher {
            settings.launcher = l.to_string();
        }
        let mut b = Ec2ComputeBuilder::new(
            settings,
            s3_store(public, cfg).await?,
            s3_store(private, cfg).await?,
        )
        .with_aws(cfg.aws.0.clone().or_env("EC2"));
        if let Some(t) = instance_type {
            b = b.with_instance_type(t);
        }
        Ok(Arc::new(b.build().await?))
    }
}

/// Analysis workers on EC2 without a server, from `cfg`'s `[aws]` and `[ec2]` tables (the CLI's
/// `telejob worker --compute ec2`).
///
/// # Errors
///
/// No `[ec2]` table, or settings EC2 refuses.
pub async fn remote_workers(cfg: &AwsConfig) -> anyhow::Result<Arc<dyn WorkerBackend>> {
    #[cfg(not(feature = "ec2"))]
    {
        let _ = cfg;
        Err(no_ec2("telejob worker --compute ec2"))
    }
    #[cfg(feature = "ec2")]
    {
        let settings = cfg
            .ec2
            .clone()
            .ok_or_else(|| bad("config: add an [ec2] table"))?;
        Ok(Arc::new(Ec2Workers::new(settings.0, &cfg.aws.0).await?))
    }
}

/// Builds image `name`, printing one progress line (rewritten in place on a terminal).
///
/// # Errors
///
/// The build failed (the message says why).
pub fn build_image(m: &MachineOptions, name: &str, opts: &BuildOptions) -> anyhow::Result<PathBuf> {
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    eprintln!(
        "telejob: building image {name} (Debian {}, {} packages) into {} with mmdebstrap; this takes a minute or two",
        opts.suite,
        opts.include.len(),
        m.images.dir.join(name).display()
    );
    let dir = image::build(&m.images, name, opts, |line| {
        if tty {
            let short: String = line.chars().take(100).collect();
            eprint!("\r\x1b[2K  {short}");
            let _ = std::io::stderr().flush();
        }
    });
    if tty {
        eprint!("\r\x1b[2K");
    }
    let dir = dir.map_err(|e| anyhow::anyhow!("telejob image build {name}: {e}"))?;
    eprintln!("telejob: image {name} is ready");
    Ok(dir)
}

/// Makes sure runs with `sandbox` can start from `name`: nothing to do when they are not
/// machines of their own or the image is here; the default image is built on first use; any
/// other missing image is bad input, in one line.
///
/// # Errors
///
/// An image this host does not have and cannot build, or a build that failed.
pub fn ensure_image(sandbox: &SandboxOptions, name: &str) -> anyhow::Result<()> {
    let Some(m) = sandbox.machine_here() else {
        return Ok(());
    };
    match m.images.resolve(name) {
        Ok(_) => Ok(()),
        Err(_) if name == image::DEFAULT_IMAGE && which("mmdebstrap") => {
            build_image(m, name, &BuildOptions::default()).map(|_| ())
        }
        Err(e) if name == image::DEFAULT_IMAGE => Err(bad(format!(
            "{e}; or run on the host's own root file system with --image host (config image = \"host\")"
        ))),
        Err(e) => Err(bad(format!("--{e}"))),
    }
}

/// Whether `program` is on `PATH`.
fn which(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|d| {
            std::fs::metadata(d.join(program)).is_ok_and(|m| {
                std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
            })
        })
    })
}
