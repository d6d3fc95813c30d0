//! Composition of backends from URLs and config: `file://`/directories → `LocalStore`,
//! `s3://` → `S3Store`; `compute = "ec2"` → `Ec2Compute`. The only place that knows both.

use std::sync::Arc;

use serde::Deserialize;
use telejob_aws::{
    AwsOptions, Ec2Compute, Ec2ComputeBuilder, Ec2Settings, S3Store, S3StoreBuilder,
};
use telejob_core::store::Store;
use telejob_local::LocalStore;

use anyhow::Context;

use crate::error::bad;

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
    pub aws: AwsOptions,
    /// S3 tuning.
    #[serde(default)]
    pub s3: S3Tuning,
    /// EC2 settings; required for `compute = "ec2"`.
    pub ec2: Option<Ec2Settings>,
}

/// An S3 store for `url` (`s3://bucket/prefix`).
pub async fn s3_store(url: &str, cfg: &AwsConfig) -> anyhow::Result<S3Store> {
    let mut b = S3StoreBuilder::from_url(url)?.with_aws(cfg.aws.clone().or_env("S3"));
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

/// An `Ec2Compute` publishing to `public` with records in `private` (both `s3://` URLs).
pub async fn ec2_compute(
    cfg: &AwsConfig,
    public: &str,
    private: &str,
    instance_type: Option<&str>,
    launcher: Option<&str>,
) -> anyhow::Result<Ec2Compute> {
    let mut settings = cfg.ec2.clone().ok_or_else(|| {
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
    .with_aws(cfg.aws.clone().or_env("EC2"));
    if let Some(t) = instance_type {
        b = b.with_instance_type(t);
    }
    Ok(b.build().await?)
}
