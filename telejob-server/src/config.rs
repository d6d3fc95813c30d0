//! The server's config file (TOML). Every setting is optional; flags and environment variables
//! override the file.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use telejob_core::job::ValidationLimits;
use telejob_core::limits::{Bytes, Cpus, LimitPolicy, LimitSupport, Network, ResourceLimits};

use crate::error::bad;

/// `telejob serve --config FILE`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on (default 127.0.0.1:8080).
    pub listen: Option<String>,
    /// Data directory (default ./telejob-data).
    pub data_dir: Option<PathBuf>,
    /// The address users reach the dashboard at, for the links notifications carry (default
    /// `http://` + `listen`).
    pub public_url: Option<String>,
    /// Where published output goes: a directory or file:// URL (default <data_dir>/public).
    pub public_store: Option<String>,
    /// Runs at once on this host (default: the number of CPUs); more wait in a queue.
    pub max_concurrent_runs: Option<usize>,
    /// The largest timeout a job may have, in minutes (default 1440).
    pub max_timeout_minutes: Option<u32>,
    /// The largest code upload in bytes (default 1 GiB).
    pub max_code_bytes: Option<u64>,
    /// The most an upload may unpack to when it is checked (default 2 GiB; two are checked at
    /// once).
    pub max_upload_unpacked_bytes: Option<u64>,
    /// One existing user every run executes as, instead of a UID of its own per run.
    pub run_as: Option<String>,
    /// The range run UIDs are leased from when telejob runs as root (`FIRST-LAST`, default
    /// 1879048192-1879113727).
    pub uid_range: Option<String>,
    /// `auto` (default), `off` or `required`: a cgroup v2 per run.
    pub cgroup: Option<String>,
    /// `auto` (default), `off` or `required`: mount, PID, IPC and network namespaces per run.
    pub namespaces: Option<String>,
    /// Where run workspaces are made (default: <data_dir>/runs).
    pub scratch_dir: Option<PathBuf>,
    /// The image runs start from unless their job names one (default `default`; `host` for the
    /// host's own root file system).
    pub image: Option<String>,
    /// Where `telejob image build` puts images (default: <data_dir>/images).
    pub images_dir: Option<PathBuf>,
    /// More images, by name: directory trees the operator made (an exported container file
    /// system, say).
    pub images: Option<std::collections::BTreeMap<String, PathBuf>>,
    /// The file holding the key job secrets are encrypted with (64 hex digits, mode 0600;
    /// default <data_dir>/secrets.key, made at the first start). `TELEJOB_SECRETS_KEY` wins.
    pub secrets_key_file: Option<PathBuf>,
    /// Resource limits: defaults for jobs that set none, and `[limits.max]`.
    pub limits: Option<LimitsConfig>,
    /// Email notifications.
    pub smtp: Option<SmtpConfig>,
    /// Where notifications may go (`[notify]`).
    pub notify: Option<NotifyConfig>,
    /// What one owner may hold at once (`[quotas]`).
    pub quotas: Option<crate::server::app::quotas::QuotaSettings>,
    /// Where code, logs and run status go: a directory, file:// or s3:// URL (default
    /// <data_dir>/private).
    pub private_store: Option<String>,
    /// Where runs execute: `local` (default: child processes of this host) or `ec2` (a fresh
    /// instance per run; needs `[ec2]` and s3:// stores).
    pub compute: Option<String>,
    /// Region and endpoint for S3 and EC2 (credentials come from the standard AWS chain).
    pub aws: Option<crate::backends::AwsTable>,
    /// S3 tuning.
    pub s3: Option<crate::backends::S3Tuning>,
    /// EC2 settings (AMI, instance types, network, instance profile).
    pub ec2: Option<crate::backends::InstanceTable>,
    /// Seconds a client has to send a request's headers (default 30).
    pub header_read_timeout_seconds: Option<u64>,
    /// The longest pause, in seconds, allowed in a request body (default 60).
    pub body_read_timeout_seconds: Option<u64>,
    /// Seconds between reaper passes over tagged EC2 instances (default 300).
    pub reap_interval_seconds: Option<u64>,
    /// Where the server's state lives: `sqlite:PATH` (default `sqlite:<data_dir>/telejob.db`)
    /// or `postgres://user:password@host:port/database`, which several replicas can share.
    /// `--database` and `TELEJOB_DATABASE_URL` win.
    pub database: Option<String>,
    /// Seconds a scheduler lease lasts without renewal (default 10, at least 2): a replica
    /// takes over at most this long (plus a tenth) after the leader died.
    pub lease_seconds: Option<u64>,
    /// Set when the local directories of `public_store` and `private_store` are one shared
    /// directory (NFS, for example) seen by every replica: only then does `serve` accept
    /// local stores with PostgreSQL.
    pub shared_stores: Option<bool>,
    /// On-demand prices of EC2 instance types in US dollars per hour, for the cost estimate
    /// shown when an EC2 job is saved; over built-in defaults for common types (us-east-1).
    pub ec2_prices: Option<std::collections::BTreeMap<String, f64>>,
    /// A run is running late once its command has run `late_factor` × its job's usual (p95)
    /// duration, and at least `late_margin_seconds` more than it (defaults 1.5 and 300).
    pub late_factor: Option<f64>,
    /// See `late_factor`.
    pub late_margin_seconds: Option<u64>,
    /// Seconds between two looks for runs running late (default 15).
    pub late_check_seconds: Option<u64>,
    /// The longest total lifetime of an analysis worker, extensions included, in hours
    /// (default 24); the worker's own dead-man shutdown is set to it.
    pub worker_max_lifetime_hours: Option<u64>,
    /// Live workers a user may have at once (default 2).
    pub workers_per_user: Option<usize>,
    /// Seconds between two looks at the workers (default 15).
    pub worker_check_seconds: Option<u64>,
    /// "Your worker ends in …" is sent this many minutes before the end (default 60).
    pub worker_warn_minutes: Option<u64>,
}

impl Config {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| bad(format!("--config {}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| {
            bad(format!(
                "--config {}: {}",
                path.display(),
                e.to_string().replace('\n', " ")
            ))
        })
    }

    /// `[quotas]`, checked.
    ///
    /// # Errors
    ///
    /// A cap of 0.
    pub fn quotas(&self) -> anyhow::Result<crate::server::app::quotas::QuotaSettings> {
        let q = self.quotas.unwrap_or_default();
        for (name, v) in [
            ("max_running", q.max_running),
            ("max_queued", q.max_queued),
            ("max_backfill_pending", q.max_backfill_pending),
            ("run_now_per_minute", q.run_now_per_minute),
        ] {
            if v == 0 {
                return Err(bad(format!(
                    "config [quotas] {name} = 0: give at least 1 (docs/config.md lists the defaults)"
                )));
            }
        }
        Ok(q)
    }

    /// `[notify] allow_private_targets`.
    pub fn allow_private_targets(&self) -> bool {
        self.notify
            .as_ref()
            .is_some_and(|n| n.allow_private_targets)
    }

    /// Save-time warnings and running-late thresholds from these settings, for a compute
    /// that offers `machine_types` (none: jobs may not choose one).
    ///
    /// # Errors
    ///
    /// A late factor below 1, or a negative or non-finite price.
    pub fn advisor(
        &self,
        machine_types: Option<telejob_core::worker::MachineTypes>,
    ) -> anyhow::Result<crate::server::app::advice::Advisor> {
        let mut a = crate::server::app::advice::Advisor {
            machine_types,
            allow_private_targets: self.allow_private_targets(),
            sends_email: self.smtp.is_some(),
            ..Default::default()
        };
        if let Some(f) = self.late_factor {
            if !(f.is_finite() && f >= 1.0) {
                return Err(bad(format!(
                    "config late_factor = {f}: use a number of at least 1 (default 1.5)"
                )));
            }
            a.late_factor = f;
        }
        if let Some(m) = self.late_margin_seconds {
            a.late_margin = std::time::Duration::from_secs(m);
        }
        for (t, p) in self.ec2_prices.iter().flatten() {
            if !(p.is_finite() && *p >= 0.0) {
                return Err(bad(format!(
                    "config ec2_prices.{t:?} = {p}: give US dollars per hour, such as 0.0416"
                )));
            }
            a.prices.insert(t.clone(), *p);
        }
        Ok(a)
    }

    /// The bounds of analysis workers.
    ///
    /// # Errors
    ///
    /// A maximum lifetime of 0 hours.
    pub fn worker_policy(&self) -> anyhow::Result<crate::server::app::workers::WorkerPolicy> {
        let mut p = crate::server::app::workers::WorkerPolicy::default();
        if let Some(h) = self.worker_max_lifetime_hours {
            if h == 0 {
                return Err(bad(
                    "config worker_max_lifetime_hours = 0: give at least 1 (default 24)",
                ));
            }
            p.max_lifetime = std::time::Duration::from_secs(h.saturating_mul(3600));
        }
        if let Some(n) = self.workers_per_user {
            p.per_user = n;
        }
        if let Some(m) = self.worker_warn_minutes {
            p.warn_before = std::time::Duration::from_secs(m.saturating_mul(60));
        }
        Ok(p)
    }

    /// What the server's compute is made of.
    pub fn compute_settings(&self) -> crate::backends::ComputeSettings {
        crate::backends::ComputeSettings {
            compute: self.compute.clone(),
            aws: self.aws_config(),
            run_as: self.run_as.clone(),
            uid_range: self.uid_range.clone(),
            cgroup: self.cgroup.clone(),
            namespaces: self.namespaces.clone(),
            scratch_dir: self.scratch_dir.clone(),
            image: self.image.clone(),
            images_dir: self.images_dir.clone(),
            images: self.images.clone().unwrap_or_default(),
            max_concurrent_runs: self.max_concurrent_runs,
            fence: None,
        }
    }

    /// The AWS parts.
    pub fn aws_config(&self) -> crate::backends::AwsConfig {
        crate::backends::AwsConfig {
            aws: self.aws.clone().unwrap_or_default(),
            s3: self.s3.clone().unwrap_or_default(),
            ec2: self.ec2.clone(),
        }
    }

    /// Validation bounds for job specs; `enforced` is what the compute enforces.
    ///
    /// # Errors
    ///
    /// A `[limits]` table whose defaults are over its maximum or out of range.
    pub fn limits(&self, enforced: LimitSupport) -> anyhow::Result<ValidationLimits> {
        let policy = self.limits.clone().unwrap_or_default().policy();
        policy.validate().map_err(|e| bad(format!("config {e}")))?;
        let dropped = enforced.unenforced(&policy.defaults);
        if !dropped.is_empty() {
            tracing::warn!(
                limits = %dropped.join(", "),
                "this host cannot enforce these default limits; runs go without them"
            );
        }
        Ok(ValidationLimits {
            max_timeout_minutes: self
                .max_timeout_minutes
                .unwrap_or(ValidationLimits::default().max_timeout_minutes),
            resources: LimitPolicy {
                defaults: enforced.keep_enforced(&policy.defaults),
                max: policy.max,
            },
            enforced,
        })
    }
}

/// The `[limits]` table: each key a default for jobs that set no such limit (over the built-in
/// defaults: memory 4GiB, processes 4096, disk 20GiB, network on), and `[limits.max]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Default memory.
    pub memory: Option<Bytes>,
    /// Default CPUs.
    pub cpu: Option<Cpus>,
    /// Default process count.
    pub processes: Option<u32>,
    /// Default workspace size.
    pub disk: Option<Bytes>,
    /// Default network (`on` or `off`).
    pub network: Option<Network>,
    /// The most a job may ask for; `network = "off"` forbids `on`.
    pub max: Option<ResourceLimits>,
}

impl LimitsConfig {
    /// The policy: these defaults over the built-in ones, and the maximum.
    pub fn policy(self) -> LimitPolicy {
        let given = ResourceLimits {
            memory: self.memory,
            cpu: self.cpu,
            processes: self.processes,
            disk: self.disk,
            network: self.network,
        };
        LimitPolicy {
            defaults: given.or(&LimitPolicy::builtin_defaults()),
            max: self.max.unwrap_or_default(),
        }
    }
}

/// `[notify]`: where notifications may go.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// Webhooks may target loopback, link-local, private and unique-local addresses (default
    /// false: the outside only; see `server::app::targets`).
    #[serde(default)]
    pub allow_private_targets: bool,
}

/// SMTP settings (the `[smtp]` table of the config file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    /// The relay host.
    pub host: String,
    /// Its port (default 587).
    #[serde(default = "default_port")]
    pub port: u16,
    /// `starttls` (default), `tls`, or `none` (plain, for a local relay).
    #[serde(default = "default_tls")]
    pub tls: String,
    /// User name, if the relay needs one.
    #[serde(default)]
    pub username: Option<String>,
    /// Password; better given as TELEJOB_SMTP_PASSWORD.
    #[serde(default)]
    pub password: Option<String>,
    /// The sender address.
    pub from: String,
}

fn default_port() -> u16 {
    587
}
fn default_tls() -> String {
    "starttls".into()
}
