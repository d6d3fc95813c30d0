//! `telejob serve`'s settings, resolved once: flags over environment over the config file over
//! the defaults — every default in one place ([`defaults`]), which docs/config.md is checked
//! against ([`documented_defaults`]).

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use super::ServeArgs;
use super::app::cluster::LeaseSettings;
use super::db::Location;
use super::http::listen::Timeouts;
use crate::config::Config;
use crate::error::bad;

/// The defaults of the settings `serve` resolves itself (those of the stores' and backends'
/// own settings live with them and are documented there).
pub mod defaults {
    /// `listen`.
    pub const LISTEN: &str = "127.0.0.1:8080";
    /// `data_dir`.
    pub const DATA_DIR: &str = "telejob-data";
    /// `lease_seconds`.
    pub const LEASE_SECONDS: u64 = 10;
    /// The shortest `lease_seconds`.
    pub const MIN_LEASE_SECONDS: u64 = 2;
    /// `max_code_bytes`.
    pub const MAX_CODE_BYTES: u64 = 1 << 30;
    /// `max_upload_unpacked_bytes`.
    pub const MAX_UPLOAD_UNPACKED_BYTES: u64 = 2 << 30;
    /// `late_check_seconds`.
    pub const LATE_CHECK_SECONDS: u64 = 15;
    /// `worker_check_seconds`.
    pub const WORKER_CHECK_SECONDS: u64 = 15;
    /// `reap_interval_seconds`.
    pub const REAP_INTERVAL_SECONDS: u64 = 300;
    /// The shortest `reap_interval_seconds`.
    pub const MIN_REAP_INTERVAL_SECONDS: u64 = 10;
    /// `header_read_timeout_seconds`.
    pub const HEADER_READ_TIMEOUT_SECONDS: u64 = 30;
    /// `body_read_timeout_seconds`.
    pub const BODY_READ_TIMEOUT_SECONDS: u64 = 60;
}

/// Every default of [`defaults`] as docs/config.md's table states it: `(config key, value)`.
#[cfg(test)]
pub fn documented_defaults() -> Vec<(&'static str, String)> {
    use defaults as d;
    vec![
        ("listen", d::LISTEN.to_string()),
        ("data_dir", format!("./{}", d::DATA_DIR)),
        ("public_url", "http://<listen>".to_string()),
        ("lease_seconds", d::LEASE_SECONDS.to_string()),
        ("max_code_bytes", d::MAX_CODE_BYTES.to_string()),
        (
            "max_upload_unpacked_bytes",
            d::MAX_UPLOAD_UNPACKED_BYTES.to_string(),
        ),
        ("late_check_seconds", d::LATE_CHECK_SECONDS.to_string()),
        (
            "reap_interval_seconds",
            d::REAP_INTERVAL_SECONDS.to_string(),
        ),
        (
            "header_read_timeout_seconds",
            d::HEADER_READ_TIMEOUT_SECONDS.to_string(),
        ),
        (
            "body_read_timeout_seconds",
            d::BODY_READ_TIMEOUT_SECONDS.to_string(),
        ),
        ("database", "sqlite:<data_dir>/telejob.db".to_string()),
        ("public_store", "<data_dir>/public".to_string()),
        ("private_store", "<data_dir>/private".to_string()),
        (
            "image",
            telejob_core::agent::sandbox::image::DEFAULT_IMAGE.to_string(),
        ),
        ("images_dir", "<data_dir>/images".to_string()),
    ]
}

/// What `serve` runs with.
#[derive(Debug)]
pub struct Settings {
    /// The config file (or its defaults): what the backends, limits and notifications read.
    pub config: Config,
    /// The data directory, made (mode 0700) and absolute.
    pub data_dir: PathBuf,
    /// The address to listen on.
    pub listen: String,
    /// The dashboard's address as users reach it (no trailing `/`).
    pub public_url: String,
    /// The database.
    pub database: Location,
    /// Where published output goes.
    pub public_store: String,
    /// Where code, logs and run status go.
    pub private_store: String,
    /// The scheduler lease.
    pub lease: LeaseSettings,
    /// The largest code upload.
    pub max_code_bytes: u64,
    /// Between two looks for runs running late.
    pub late_check: Duration,
    /// Between two looks at the workers.
    pub worker_check: Duration,
    /// Between two reaper passes.
    pub reap_every: Duration,
    /// The listener's read timeouts.
    pub timeouts: Timeouts,
    /// Schedule the bundled example job.
    pub example: bool,
}

impl Settings {
    /// Resolves `serve`'s arguments: reads the config file, makes the data directory, and
    /// checks every setting that does not need the database or the network.
    ///
    /// # Errors
    ///
    /// A setting out of range or unreadable, naming it.
    pub fn resolve(a: ServeArgs) -> anyhow::Result<Self> {
        let cfg = match &a.config {
            Some(p) => Config::load(p)?,
            None => Config::default(),
        };
        let data_dir = a
            .data_dir
            .or(cfg.data_dir.clone())
            .unwrap_or_else(|| PathBuf::from(defaults::DATA_DIR));
        let listen = a
            .listen
            .or(cfg.listen.clone())
            .unwrap_or_else(|| defaults::LISTEN.into());
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("--data-dir {}", data_dir.display()))?;
        std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("--data-dir {}", data_dir.display()))?;
        let data_dir = std::fs::canonicalize(&data_dir)?;
        let database = match (a.database, &cfg.database) {
            (Some(l), _) => l,
            (None, Some(s)) => s
                .parse()
                .map_err(|e| bad(format!("config database = {s:?}: {e}")))?,
            (None, None) => Location::Sqlite(data_dir.join("telejob.db")),
        };
        let public_store = cfg
            .public_store
            .clone()
            .unwrap_or_else(|| data_dir.join("public").display().to_string());
        let private_store = cfg
            .private_store
            .clone()
            .unwrap_or_else(|| data_dir.join("private").display().to_string());
        let lease = match cfg.lease_seconds {
            None => LeaseSettings {
                ttl: Duration::from_secs(defaults::LEASE_SECONDS),
            },
            Some(n) if n >= defaults::MIN_LEASE_SECONDS => LeaseSettings {
                ttl: Duration::from_secs(n),
            },
            Some(n) => {
                return Err(bad(format!(
                    "config lease_seconds = {n}: use at least {} (default {})",
                    defaults::MIN_LEASE_SECONDS,
                    defaults::LEASE_SECONDS
                )));
            }
        };
        let secs = |v: Option<u64>, default: u64| Duration::from_secs(v.unwrap_or(default));
        let public_url = match &cfg.public_url {
            Some(u) if u.starts_with("http://") || u.starts_with("https://") => {
                u.trim_end_matches('/').to_string()
            }
            Some(u) => {
                return Err(bad(format!(
                    "config public_url = {u:?}: give the http:// or https:// address users reach the dashboard at"
                )));
            }
            None => format!("http://{listen}"),
        };
        let s = Self {
            public_url,
            listen,
            database,
            public_store,
            private_store,
            lease,
            max_code_bytes: cfg.max_code_bytes.unwrap_or(defaults::MAX_CODE_BYTES),
            late_check: secs(cfg.late_check_seconds, defaults::LATE_CHECK_SECONDS)
                .max(Duration::from_secs(1)),
            worker_check: secs(cfg.worker_check_seconds, defaults::WORKER_CHECK_SECONDS)
                .max(Duration::from_secs(1)),
            reap_every: secs(cfg.reap_interval_seconds, defaults::REAP_INTERVAL_SECONDS)
                .max(Duration::from_secs(defaults::MIN_REAP_INTERVAL_SECONDS)),
            timeouts: Timeouts {
                header_read: secs(
                    cfg.header_read_timeout_seconds,
                    defaults::HEADER_READ_TIMEOUT_SECONDS,
                ),
                body_read: secs(
                    cfg.body_read_timeout_seconds,
                    defaults::BODY_READ_TIMEOUT_SECONDS,
                ),
            },
            example: a.example,
            data_dir,
            config: cfg,
        };
        s.check_shared_stores()?;
        Ok(s)
    }

    /// Several replicas must see the same code, logs and output: with a shared database,
    /// local stores are accepted only when the operator says the directory is shared.
    fn check_shared_stores(&self) -> anyhow::Result<()> {
        if !self.database.is_shared() || self.config.shared_stores == Some(true) {
            return Ok(());
        }
        let at = &self.database;
        for (key, url) in [
            ("public_store", &self.public_store),
            ("private_store", &self.private_store),
        ] {
            if !url.starts_with("s3://") {
                return Err(bad(format!(
                    "{key} = {url:?} is a directory of this host, but the database {at} is shared by replicas: set {key} to an s3:// store, or set shared_stores = true in the config if every replica sees this same directory"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docs_config_md_states_every_default_of_serve() {
        let doc = include_str!("../../../docs/config.md");
        // Rows of the settings table: | setting | flag / environment | config key | default |
        let rows: Vec<Vec<&str>> = doc
            .lines()
            .filter(|l| l.starts_with('|'))
            .map(|l| l.split('|').map(str::trim).collect())
            .filter(|c: &Vec<&str>| c.len() >= 6)
            .collect();
        for (key, value) in documented_defaults() {
            let row = rows
                .iter()
                .find(|c| c[3].contains(&format!("`{key}`")))
                .unwrap_or_else(|| panic!("docs/config.md has no row for `{key}`"));
            assert!(
                row[4].contains(&format!("`{value}`")),
                "docs/config.md's row for `{key}` does not give the default `{value}`: {row:?}"
            );
        }
    }
}
