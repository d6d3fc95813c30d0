//! `LocalCompute`: runs on this host.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use telejob_core::agent::fetch::UrlFetcher;
use telejob_core::agent::inprocess::InProcessCompute;
use telejob_core::agent::pipeline::{FailureKind, Pipeline, RunStores};
use telejob_core::agent::publish::PublishPolicy;
use telejob_core::agent::sandbox::{
    CgroupMode, Identity, MachineOptions, NamespaceMode, SandboxOptions,
};
use telejob_core::agent::unpack::UnpackLimits;
use telejob_core::compute::{Compute, ComputeCapabilities, LaunchOptions};
use telejob_core::run::{Run, RunId, RunRequest};
use telejob_core::{Error, Result};

/// Runs the pipeline on this host: each run in a fresh workspace under the scratch directory,
/// through a supervisor that ends it if telejob dies; where the host allows (telejob runs as
/// root), as a UID of its own, in mount, PID, IPC (and, with `network = off`, network)
/// namespaces, with its resource limits in cgroups. At most `max_concurrent` runs at once; the
/// rest queue in launch order.
#[derive(Debug, Clone)]
pub struct LocalCompute {
    inner: InProcessCompute,
}

/// Builds a [`LocalCompute`].
#[derive(Debug, Clone)]
pub struct LocalComputeBuilder {
    pipeline: Pipeline,
    max_concurrent: usize,
}

impl LocalComputeBuilder {
    /// Runs at most `n` runs at once (default: the number of CPUs).
    pub fn with_max_concurrent(mut self, n: usize) -> Self {
        self.max_concurrent = n.max(1);
        self
    }

    /// Sets the sandbox (cgroup mode, user, kill grace, log cap).
    pub fn with_sandbox(mut self, s: SandboxOptions) -> Self {
        self.pipeline.sandbox = s;
        self
    }

    /// Runs are machines of their own where this host allows it (telejob runs as root with
    /// namespaces): root of a user namespace on a throwaway overlay of an image, with a network
    /// and a disk of their own. Elsewhere they stay restricted processes of the host.
    pub fn with_machines(mut self, m: MachineOptions) -> Self {
        self.pipeline.sandbox.machine = Some(m);
        self
    }

    /// The sandbox runs will have, as set so far.
    pub fn sandbox(&self) -> &SandboxOptions {
        &self.pipeline.sandbox
    }

    /// Where workspaces are made (default: the system temp directory).
    pub fn with_scratch_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.pipeline.scratch_dir = dir.into();
        self
    }

    /// Caps on unpacking.
    pub fn with_unpack_limits(mut self, l: UnpackLimits) -> Self {
        self.pipeline.unpack_limits = l;
        self
    }

    /// What may be published.
    pub fn with_publish_policy(mut self, p: PublishPolicy) -> Self {
        self.pipeline.publish_policy = p;
        self
    }

    /// Runs commands attached to this process's terminal, without a log (an interactive shell:
    /// `telejob worker shell`).
    pub fn attached_to_terminal(mut self) -> Self {
        self.pipeline.interactive = true;
        self
    }

    /// Calls `f` with the code directory once each command has ended, before the workspace is
    /// removed (`telejob worker shell --save-to`).
    pub fn after_command(mut self, f: telejob_core::agent::pipeline::AfterCommand) -> Self {
        self.pipeline.after_command = Some(f);
        self
    }

    /// Asks `fence` before each batch of published files and before the manifest (a server's
    /// records: nothing is written for a job being deleted).
    pub fn with_fence(mut self, fence: Arc<dyn telejob_core::store::PublishFence>) -> Self {
        self.pipeline.fence = Some(fence);
        self
    }

    /// Fetches code URLs (http, s3, …).
    pub fn with_fetcher(mut self, f: Arc<dyn UrlFetcher>) -> Self {
        self.pipeline.fetcher = Some(f);
        self
    }

    /// Reads settings from the environment: `TELEJOB_MAX_CONCURRENT`, `TELEJOB_RUN_AS` (one user
    /// for every run), `TELEJOB_UID_RANGE` (`FIRST-LAST`), `TELEJOB_CGROUP` and
    /// `TELEJOB_NAMESPACES` (`auto`, `off`, `required`), `TELEJOB_SCRATCH_DIR`,
    /// `TELEJOB_IMAGES_DIR` (where images are) and `TELEJOB_IMAGE` (the image runs use unless
    /// their job names one): either makes runs machines where the host allows.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the variable when a value is not understood.
    pub fn from_env(mut self) -> Result<Self> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        if let Some(v) = var("TELEJOB_MAX_CONCURRENT") {
            let n = v.trim().parse().map_err(|_| {
                Error::config(
                    "TELEJOB_MAX_CONCURRENT",
                    format!("{v:?} is not a number: use e.g. 2"),
                )
            })?;
            self = self.with_max_concurrent(n);
        }
        let (run_as, uid_range) = (var("TELEJOB_RUN_AS"), var("TELEJOB_UID_RANGE"));
        if run_as.is_some() || uid_range.is_some() {
            self.pipeline.sandbox.identity = Identity::from_settings(
                run_as.as_deref().map(|v| ("TELEJOB_RUN_AS", v)),
                uid_range.as_deref().map(|v| ("TELEJOB_UID_RANGE", v)),
            )?;
        }
        if let Some(v) = var("TELEJOB_NAMESPACES") {
            self.pipeline.sandbox.namespaces = v
                .parse::<NamespaceMode>()
                .map_err(|e| Error::config("TELEJOB_NAMESPACES", e.to_string()))?;
        }
        if let Some(v) = var("TELEJOB_CGROUP") {
            self.pipeline.sandbox.cgroup = v
                .parse::<CgroupMode>()
                .map_err(|e| Error::config("TELEJOB_CGROUP", e.to_string()))?;
        }
        if let Some(v) = var("TELEJOB_SCRATCH_DIR") {
            self.pipeline.scratch_dir = v.into();
        }
        let (dir, image) = (var("TELEJOB_IMAGES_DIR"), var("TELEJOB_IMAGE"));
        if dir.is_some() || image.is_some() {
            let mut m = self.pipeline.sandbox.machine.take().unwrap_or_else(|| {
                MachineOptions::new(dir.clone().unwrap_or_else(|| "images".into()))
            });
            if let Some(d) = dir {
                m.images.dir = d.into();
            }
            if let Some(i) = image {
                if !telejob_core::agent::sandbox::image::valid_name(&i) {
                    return Err(Error::config(
                        "TELEJOB_IMAGE",
                        format!(
                            "{i:?} cannot name an image: use lowercase letters, digits and dashes, or host"
                        ),
                    ));
                }
                m.image = i;
            }
            self.pipeline.sandbox.machine = Some(m);
        }
        Ok(self)
    }

    /// The compute.
    pub fn build(self) -> LocalCompute {
        LocalCompute {
            inner: InProcessCompute::new(self.pipeline, self.max_concurrent).named("local"),
        }
    }
}

impl LocalCompute {
    /// A builder writing to `stores`, with safe defaults: cgroups and namespaces where possible,
    /// a UID of its own per run when running as root, 10 s kill grace, 10 MiB log cap.
    pub fn builder(stores: RunStores) -> LocalComputeBuilder {
        let sandbox = SandboxOptions {
            identity: Identity::default_for_current_user(),
            ..SandboxOptions::default()
        };
        LocalComputeBuilder {
            pipeline: Pipeline::new(stores).with_sandbox(sandbox),
            max_concurrent: std::thread::available_parallelism().map_or(2, |n| n.get()),
        }
    }

    /// How a finished run failed (bad input, the job, the system), if it did.
    pub fn failure_kind(&self, run: &RunId) -> Option<FailureKind> {
        self.inner.failure_kind(run)
    }

    /// The pipeline runs go through.
    pub fn pipeline(&self) -> &Pipeline {
        self.inner.pipeline()
    }
}

#[async_trait]
impl Compute for LocalCompute {
    fn capabilities(&self) -> ComputeCapabilities {
        self.inner.capabilities()
    }

    async fn launch(&self, req: RunRequest, opts: LaunchOptions) -> Result<()> {
        self.inner.launch(req, opts).await
    }

    async fn wait(&self, run: &RunId) -> Result<Run> {
        self.inner.wait(run).await
    }

    async fn cancel(&self, run: &RunId) -> Result<()> {
        self.inner.cancel(run).await
    }

    async fn status(&self, run: &RunId) -> Result<Option<Run>> {
        self.inner.status(run).await
    }

    fn images(&self) -> Option<Vec<String>> {
        self.inner.images()
    }
}
