//! What the server adds to [`telejob_core::advice`]: the job's history, the EC2 price table,
//! the instance-type allowlist, and the script check of uploaded code.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use telejob_core::advice::{self, Context, Price, Usual, Warning};
use telejob_core::job::JobSpec;
use telejob_core::worker::MachineTypes;

/// On-demand prices in US dollars per hour (us-east-1, Linux), the defaults of `[ec2_prices]`.
pub const DEFAULT_PRICES: &[(&str, f64)] = &[
    ("t3.nano", 0.0052),
    ("t3.micro", 0.0104),
    ("t3.small", 0.0208),
    ("t3.medium", 0.0416),
    ("t3.large", 0.0832),
    ("t3.xlarge", 0.1664),
    ("t3.2xlarge", 0.3328),
    ("m5.large", 0.096),
    ("m5.xlarge", 0.192),
    ("m5.2xlarge", 0.384),
    ("m6i.large", 0.096),
    ("m6i.xlarge", 0.192),
    ("c5.large", 0.085),
    ("c5.xlarge", 0.17),
    ("c6i.large", 0.085),
    ("r5.large", 0.126),
    ("r5.xlarge", 0.252),
    ("r6i.large", 0.126),
];

/// Save-time warnings and running-late thresholds, as this server's config sets them.
#[derive(Debug, Clone)]
pub struct Advisor {
    /// The machine types jobs may choose from, when the compute offers several (EC2).
    pub machine_types: Option<MachineTypes>,
    /// The images jobs may name, asked of the compute when a job is saved.
    pub images: ImageList,
    /// Prices per hour, by instance type.
    pub prices: BTreeMap<String, f64>,
    /// A run is late past `max(factor × p95, p95 + margin)`.
    pub late_factor: f64,
    /// See `late_factor`.
    pub late_margin: Duration,
    /// Webhooks may target the server's own networks (`[notify] allow_private_targets`).
    pub allow_private_targets: bool,
    /// The server can send email (`[smtp]` is configured).
    pub sends_email: bool,
}

impl Default for Advisor {
    fn default() -> Self {
        Self {
            machine_types: None,
            images: ImageList::default(),
            prices: DEFAULT_PRICES
                .iter()
                .map(|(k, v)| ((*k).to_string(), *v))
                .collect(),
            late_factor: 1.5,
            late_margin: Duration::from_secs(300),
            allow_private_targets: false,
            sends_email: false,
        }
    }
}

impl Advisor {
    /// Refuses an instance type the server cannot give: any on local compute, one outside the
    /// allowlist on EC2.
    ///
    /// # Errors
    ///
    /// The `instance_type` field, with what to do.
    pub fn check(&self, spec: &JobSpec) -> telejob_core::Result<()> {
        self.check_image(spec)?;
        let Some(t) = &spec.instance_type else {
            return Ok(());
        };
        match &self.machine_types {
            None => Err(telejob_core::Error::invalid(
                "instance_type",
                "this server runs jobs on its own host (compute = local): remove instance_type",
            )),
            Some(e) if t == &e.default || e.allowed.contains(t) => Ok(()),
            Some(e) => Err(telejob_core::Error::invalid(
                "instance_type",
                format!(
                    "{t} is not allowed here; allowed: {}",
                    if e.allowed.is_empty() {
                        e.default.clone()
                    } else {
                        e.allowed.join(", ")
                    }
                ),
            )),
        }
    }

    /// Refuses an image the compute does not have (or any, when runs do not start from this
    /// host's images).
    fn check_image(&self, spec: &JobSpec) -> telejob_core::Result<()> {
        let Some(i) = &spec.image else {
            return Ok(());
        };
        match self.images.now() {
            None => Err(telejob_core::Error::invalid(
                "image",
                "this server's runs do not start from images of its host (EC2 runs start from the AMI; without root, runs see the host): remove image",
            )),
            Some(names) if names.contains(i) => Ok(()),
            Some(names) => Err(telejob_core::Error::invalid(
                "image",
                format!(
                    "this server has no image {i:?}; choose one of {}",
                    names.join(", ")
                ),
            )),
        }
    }

    /// The warnings of a valid spec, against the job's `usual` duration when its history
    /// says (`Db::usual`).
    pub fn warnings(
        &self,
        usual: Option<Usual>,
        spec: &JobSpec,
        limits: &telejob_core::job::ValidationLimits,
    ) -> Vec<Warning> {
        let Ok(job) = spec.validate(limits) else {
            return Vec::new();
        };
        let price = self.machine_types.as_ref().map(|e| {
            let t = spec
                .instance_type
                .clone()
                .unwrap_or_else(|| e.default.clone());
            Price {
                usd_per_hour: self.prices.get(&t).copied(),
                instance_type: t,
            }
        });
        advice::warnings(
            &job,
            &Context {
                usual,
                price,
                now: None,
            },
        )
    }
}

/// The script check of uploaded code: the command's first word, when it is a path into the
/// code, must be there and executable. Reads the archive's listing, not its contents.
pub async fn script_warnings(code: &Path, command: &str) -> Vec<Warning> {
    let (code, command) = (code.to_path_buf(), command.to_string());
    tokio::task::spawn_blocking(move || {
        let f = std::fs::File::open(&code).ok()?;
        // A listing reads through the tar data: bounded, so that a bomb is not inflated.
        let listing = telejob_core::agent::archive::list(std::io::BufReader::new(f), 8 << 30)
            .ok()
            .flatten()?;
        advice::script_warning(&command, |p| listing.mode_of(p))
    })
    .await
    .ok()
    .flatten()
    .into_iter()
    .collect()
}

/// The images a job may name, as the compute has them now (`None`: runs do not start from
/// images of this host).
#[derive(Clone, Default)]
pub struct ImageList(Option<std::sync::Arc<dyn Fn() -> Option<Vec<String>> + Send + Sync>>);

impl ImageList {
    /// The images of `compute`, asked each time.
    pub fn of(compute: std::sync::Arc<dyn telejob_core::compute::Compute>) -> Self {
        Self(Some(std::sync::Arc::new(move || compute.images())))
    }

    /// The names now.
    pub fn now(&self) -> Option<Vec<String>> {
        self.0.as_ref().and_then(|f| f())
    }
}

impl std::fmt::Debug for ImageList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ImageList").field(&self.now()).finish()
    }
}
