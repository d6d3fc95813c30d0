//! The request that starts a run: everything a compute backend needs.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::RunId;
use crate::job::{JobName, Visibility};
use crate::limits::ResourceLimits;

/// Everything a compute backend needs to execute one run. Serializable: EC2 instances receive it
/// as a JSON document.
///
/// Made with [`RunRequest::new`] and the `with_*` setters, so that new settings do not break
/// callers:
///
/// ```
/// use std::time::Duration;
/// use telejob_core::{JobName, RunRequest};
///
/// let req = RunRequest::new(JobName::new("slowsql")?, "slowsql-0.3.tar.gz", "./run.sh")
///     .with_timeout(Duration::from_secs(175 * 60))
///     .with_env("REGION", "eu");
/// assert_eq!(req.output_dir, "output");
/// # Ok::<(), telejob_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RunRequest {
    /// The run's id.
    pub run_id: RunId,
    /// The job.
    pub job: JobName,
    /// Where the code is (path, `file://`, `http(s)://`, `store:KEY`).
    pub code: String,
    /// The bash command line.
    pub command: String,
    /// The output directory, relative to the code root.
    pub output_dir: String,
    /// The timeout.
    #[serde(with = "duration_secs")]
    pub timeout: Duration,
    /// Extra environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The slot this run is for (`TELEJOB_SCHEDULED_FOR`).
    pub scheduled_for: DateTime<Utc>,
    /// Where the output goes.
    #[serde(default)]
    pub visibility: Visibility,
    /// Run the job but only list what would be published.
    #[serde(default)]
    pub dry_run: bool,
    /// The job's owner, for bookkeeping (e.g. instance tags); not used to run the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Resource limits (the job's, with the operator's defaults filled in).
    #[serde(default, skip_serializing_if = "ResourceLimits::is_empty")]
    pub limits: ResourceLimits,
    /// The job's secrets: environment variables whose values are masked in the log.
    #[serde(default, skip_serializing_if = "Secrets::is_empty")]
    pub secrets: Secrets,
    /// The machine type a remote backend launches (EC2: an instance type the operator allows);
    /// `None`: the backend's default. Local runs ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
    /// The image the run's machine starts from; `None`: the host's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

impl RunRequest {
    /// The timeout of a request that sets none: the original service's example, 175 minutes.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(175 * 60);

    /// A request for a run of `job` now, under a fresh id: `command` on the code at `code`
    /// (path, `file://`, `http(s)://`, `store:KEY`), output directory `output`, public output,
    /// the slot the current instant, [`RunRequest::DEFAULT_TIMEOUT`], no limits, no secrets.
    pub fn new(job: JobName, code: impl Into<String>, command: impl Into<String>) -> Self {
        Self {
            run_id: RunId::new(),
            job,
            code: code.into(),
            command: command.into(),
            output_dir: "output".into(),
            timeout: Self::DEFAULT_TIMEOUT,
            env: BTreeMap::new(),
            scheduled_for: Utc::now(),
            visibility: Visibility::Public,
            dry_run: false,
            owner: None,
            limits: ResourceLimits::default(),
            secrets: Secrets::default(),
            instance_type: None,
            image: None,
        }
    }

    /// Sets the run's id.
    pub fn with_run_id(mut self, id: RunId) -> Self {
        self.run_id = id;
        self
    }

    /// Sets the output directory (relative to the code root).
    pub fn with_output_dir(mut self, dir: impl Into<String>) -> Self {
        self.output_dir = dir.into();
        self
    }

    /// Sets the timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Adds an environment variable.
    pub fn with_env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(name.into(), value.into());
        self
    }

    /// Replaces the environment variables.
    pub fn with_envs(mut self, env: BTreeMap<String, String>) -> Self {
        self.env = env;
        self
    }

    /// Sets the slot the run is for (`TELEJOB_SCHEDULED_FOR`).
    pub fn with_scheduled_for(mut self, slot: DateTime<Utc>) -> Self {
        self.scheduled_for = slot;
        self
    }

    /// Sets where the output goes.
    pub fn with_visibility(mut self, v: Visibility) -> Self {
        self.visibility = v;
        self
    }

    /// Runs the job but only lists what would be published.
    pub fn with_dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    /// Sets the owner recorded with the run (for bookkeeping such as instance tags).
    pub fn with_owner(mut self, owner: Option<String>) -> Self {
        self.owner = owner;
        self
    }

    /// Sets the resource limits.
    pub fn with_limits(mut self, limits: ResourceLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets the secrets.
    pub fn with_secrets(mut self, secrets: Secrets) -> Self {
        self.secrets = secrets;
        self
    }

    /// Sets the machine type a remote backend launches.
    pub fn with_instance_type(mut self, t: Option<String>) -> Self {
        self.instance_type = t;
        self
    }

    /// Sets the image the run's machine starts from.
    pub fn with_image(mut self, image: Option<String>) -> Self {
        self.image = image;
        self
    }

    /// Sets where the code is.
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = code.into();
        self
    }
}

/// Secret environment variables (name → value). Their `Debug` shows names only, so a request
/// that is logged never shows a value.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secrets(pub BTreeMap<String, String>);

impl Secrets {
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The values worth masking in a log: those of 4 bytes or more (shorter ones would mask
    /// ordinary text).
    pub fn maskable(&self) -> Vec<Vec<u8>> {
        self.0
            .values()
            .filter(|v| v.len() >= 4)
            .map(|v| v.as_bytes().to_vec())
            .collect()
    }
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

mod duration_secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}
