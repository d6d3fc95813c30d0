//! What operators configure for EC2 runs (`[ec2]`), and the builder of [`Ec2Compute`].

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_ec2::Client;
use serde::Deserialize;
use telejob_core::{Error, Result};
use tokio::sync::OnceCell;

use super::api::RetryPolicy;
use super::{Ec2Compute, Inner};
use crate::config::AwsOptions;
use crate::s3::S3Store;

/// What an operator configures for EC2 runs (the `[ec2]` table of the server's config file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Ec2Settings {
    /// The AMI: any 64-bit Linux with bash, curl or wget, and a glibc at least as new as the
    /// build host's (Ubuntu 24.04 or Debian 12 work with the release binary).
    pub ami: String,
    /// The instance type runs use unless asked otherwise (default `t3.small`).
    #[serde(default = "default_type")]
    pub instance_type: String,
    /// The instance types runs may ask for (default: only `instance_type`).
    #[serde(default)]
    pub allowed_instance_types: Vec<String>,
    /// The subnet (default: the account's default VPC).
    pub subnet_id: Option<String>,
    /// Security groups (default: the VPC's default group). Jobs need outbound HTTPS only.
    #[serde(default)]
    pub security_group_ids: Vec<String>,
    /// The IAM role (ARN) the server assumes for each run, with a session policy that allows
    /// only that run's own objects (docs/aws.md): the run's credentials. Required: runs are
    /// root of their instance and get no instance profile.
    pub run_role: Option<String>,
    /// No longer used: runs are root of their instance, so an instance profile would give the
    /// job its credentials. Setting it is an error that says to set `run_role`.
    #[serde(default)]
    pub instance_profile: Option<String>,
    /// The instance profile analysis workers get (default none: a worker holds no
    /// credentials, and never the runs' or the server's).
    pub worker_instance_profile: Option<String>,
    /// An SSH key pair name, for debugging (default none).
    pub key_name: Option<String>,
    /// Time allowed beyond the job's timeout for boot, fetch and publish (default 900 s).
    #[serde(default = "default_margin")]
    pub margin_seconds: u64,
    /// How often a run's status and instance are checked (default 10 s).
    #[serde(default = "default_poll")]
    pub poll_seconds: u64,
    /// This launcher's name, tagged on its instances; the reaper ends only instances with its
    /// own name (or any past their deadline). Default `telejob`.
    #[serde(default = "default_launcher")]
    pub launcher: String,
    /// The `telejob` binary instances run (default: this executable). It must suit the AMI's
    /// architecture and C library.
    pub agent_binary: Option<PathBuf>,
    /// Extra tags on every instance (cost allocation, ownership).
    #[serde(default)]
    pub extra_tags: BTreeMap<String, String>,
    /// Run jobs even on an image with neither `iptables` nor `nft`, where they can reach
    /// instance metadata (default false: such a run fails, saying why). Runs hold no instance
    /// profile, so metadata offers them only their own user data.
    #[serde(default)]
    pub allow_metadata_access: bool,
}

fn default_type() -> String {
    "t3.small".into()
}
fn default_margin() -> u64 {
    900
}
fn default_poll() -> u64 {
    10
}
fn default_launcher() -> String {
    "telejob".into()
}

impl Ec2Settings {
    /// Settings for `ami` with every default.
    pub fn new(ami: impl Into<String>) -> Self {
        Self {
            ami: ami.into(),
            instance_type: default_type(),
            allowed_instance_types: Vec::new(),
            subnet_id: None,
            security_group_ids: Vec::new(),
            run_role: None,
            instance_profile: None,
            worker_instance_profile: None,
            key_name: None,
            margin_seconds: default_margin(),
            poll_seconds: default_poll(),
            launcher: default_launcher(),
            agent_binary: None,
            extra_tags: BTreeMap::new(),
            allow_metadata_access: false,
        }
    }

    /// The instance types runs and workers may ask for.
    pub fn machine_types(&self) -> telejob_core::worker::MachineTypes {
        telejob_core::worker::MachineTypes {
            default: self.instance_type.clone(),
            allowed: self.allowed_instance_types.clone(),
        }
    }
}

/// Builds an [`Ec2Compute`].
#[derive(Debug, Clone)]
pub struct Ec2ComputeBuilder {
    settings: Ec2Settings,
    aws: AwsOptions,
    public: S3Store,
    private: S3Store,
    instance_type: Option<String>,
    retry: RetryPolicy,
}

impl Ec2ComputeBuilder {
    /// A builder: runs publish to `public`; code, requests, status and logs live in `private`.
    pub fn new(settings: Ec2Settings, public: S3Store, private: S3Store) -> Self {
        Self {
            settings,
            aws: AwsOptions::default(),
            public,
            private,
            instance_type: None,
            retry: RetryPolicy::default(),
        }
    }

    /// Region, endpoint and credentials for EC2 (default: the standard chain).
    pub fn with_aws(mut self, aws: AwsOptions) -> Self {
        self.aws = aws;
        self
    }

    /// Runs use `instance_type`, which must be in the operator's allowlist.
    pub fn with_instance_type(mut self, t: impl Into<String>) -> Self {
        self.instance_type = Some(t.into());
        self
    }

    /// Retries throttling and capacity errors `attempts` times, backing off from `base` up to
    /// `cap` with full jitter (default 6 attempts, 0.5 s to 20 s).
    pub fn with_retries(mut self, attempts: u32, base: Duration, cap: Duration) -> Self {
        self.retry = RetryPolicy {
            attempts: attempts.max(1),
            base,
            cap,
        };
        self
    }

    /// Checks the settings and makes the EC2 client. Nothing is sent yet.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the setting that is wrong.
    pub async fn build(self) -> Result<Ec2Compute> {
        let s = &self.settings;
        if s.ami.trim().is_empty() {
            return Err(Error::config("ec2.ami", "set the AMI id, e.g. ami-0abc…"));
        }
        let instance_type = self
            .instance_type
            .unwrap_or_else(|| s.instance_type.clone());
        if !s.machine_types().allows(&instance_type) {
            return Err(Error::invalid(
                "instance_type",
                format!(
                    "{instance_type} is not allowed here; allowed: {}",
                    s.machine_types().allowed_list()
                ),
            ));
        }
        if s.launcher.is_empty() || s.launcher.len() > 128 {
            return Err(Error::config(
                "ec2.launcher",
                "give a name of 1-128 characters",
            ));
        }
        if s.instance_profile.is_some() {
            return Err(Error::config(
                "ec2.instance_profile",
                "runs no longer get an instance profile (the job is root of its instance and \
                 would hold its credentials): remove it and set ec2.run_role to a role the \
                 server may assume (docs/aws.md)",
            ));
        }
        let Some(run_role) = s.run_role.clone().filter(|r| r.starts_with("arn:")) else {
            return Err(Error::config(
                "ec2.run_role",
                "set the ARN of the role each run's credentials come from, e.g. \
                 arn:aws:iam::123456789012:role/telejob-run (docs/aws.md)",
            ));
        };
        let sdk = self.aws.load().await;
        let client = Client::new(&sdk);
        let sts = aws_sdk_sts::Client::new(&sdk);
        let s3_region = Some(self.private.region().to_string());
        let s3_endpoint = self.private.endpoint().map(str::to_string);
        Ok(Ec2Compute {
            inner: Arc::new(Inner {
                client,
                sts,
                run_role,
                settings: self.settings,
                instance_type,
                public: self.public,
                private: self.private,
                s3_region,
                s3_endpoint,
                retry: self.retry,
                runs: Mutex::new(HashMap::new()),
                agent_key: OnceCell::new(),
            }),
        })
    }
}
