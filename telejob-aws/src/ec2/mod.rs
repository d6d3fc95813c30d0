//! `Ec2Compute`: one fresh EC2 instance per run.
//!
//! A launch uploads the run request (and, once per binary, the `telejob` agent) to the private
//! store, then starts an instance whose user data fetches both through pre-signed URLs and runs
//! `telejob agent`. The agent writes status, log and manifest to the stores as every run does;
//! a watcher here follows the status object and the instance, enforces the deadline from outside
//! and makes sure the instance is gone when the run is over. A reaper ends instances nobody
//! follows any more.

mod api;
mod reaper;
pub mod session;
mod settings;
mod userdata;
mod watch;
mod worker;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_ec2::Client;
use aws_sdk_ec2::types::{
    HttpTokensState, IamInstanceProfileSpecification, InstanceMetadataOptionsRequest, InstanceType,
    ResourceType, ShutdownBehavior, Tag, TagSpecification,
};
use chrono::{DateTime, SecondsFormat, Utc};
use telejob_core::compute::{Compute, ComputeCapabilities, EventSink, LaunchOptions};
use telejob_core::job::JobName;
use telejob_core::run::{Run, RunId, RunRequest, keys};
use telejob_core::store::{PutOptions, Store, StoreExt};
use telejob_core::{Error, Result};
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

pub use session::RunCredentials;
pub use settings::{Ec2ComputeBuilder, Ec2Settings};
pub use worker::{Ec2Workers, user_data as worker_user_data};

use crate::s3::S3Store;
use api::RetryPolicy;

/// Tag keys on every instance.
pub mod tags {
    /// The job's name.
    pub const JOB: &str = "telejob:job";
    /// The run id (also the launch's ClientToken).
    pub const RUN: &str = "telejob:run";
    /// The job's owner.
    pub const OWNER: &str = "telejob:owner";
    /// Who launched it (a server's or the CLI's name); the reaper ends only its own.
    pub const LAUNCHER: &str = "telejob:launcher";
    /// When the run must be over (RFC 3339); any reaper ends the instance after that.
    pub const DEADLINE: &str = "telejob:deadline";
    /// An analysis worker's name (workers carry no run tag: the run reaper leaves them alone).
    pub const WORKER: &str = "telejob:worker";
}

/// One instance of the settings' image, as runs and workers launch it: terminate on shutdown,
/// IMDSv2 only with one hop, the settings' subnet and security groups, tagged with `tags` and
/// the settings' extra tags, with `user_data` (base64-encoded here).
#[derive(Debug, Clone)]
struct OneInstance {
    instance_type: String,
    token: String,
    user_data: String,
    profile: Option<IamInstanceProfileSpecification>,
    tags: TagSpecification,
}

impl OneInstance {
    fn new(
        s: &Ec2Settings,
        instance_type: &str,
        token: &str,
        user_data: &str,
        profile: Option<&str>,
        mut tags: Vec<Tag>,
    ) -> Self {
        for (k, v) in &s.extra_tags {
            tags.push(Tag::builder().key(k).value(v).build());
        }
        Self {
            instance_type: instance_type.to_string(),
            token: token.to_string(),
            user_data: base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                user_data,
            ),
            profile: profile.map(profile_spec),
            tags: TagSpecification::builder()
                .resource_type(ResourceType::Instance)
                .set_tags(Some(tags))
                .build(),
        }
    }

    /// The `RunInstances` call (`ClientToken` = the token, so a retried call starts nothing
    /// more where EC2 honours it).
    fn call(
        &self,
        client: &Client,
        s: &Ec2Settings,
    ) -> aws_sdk_ec2::operation::run_instances::builders::RunInstancesFluentBuilder {
        client
            .run_instances()
            .image_id(&s.ami)
            .instance_type(InstanceType::from(self.instance_type.as_str()))
            .min_count(1)
            .max_count(1)
            .client_token(&self.token)
            .user_data(&self.user_data)
            .instance_initiated_shutdown_behavior(ShutdownBehavior::Terminate)
            .set_subnet_id(s.subnet_id.clone())
            .set_security_group_ids(
                (!s.security_group_ids.is_empty()).then(|| s.security_group_ids.clone()),
            )
            .set_iam_instance_profile(self.profile.clone())
            .metadata_options(imds_v2_only())
            .tag_specifications(self.tags.clone())
    }
}

/// An instance profile by name, or by ARN.
fn profile_spec(p: &str) -> IamInstanceProfileSpecification {
    let b = IamInstanceProfileSpecification::builder();
    if p.starts_with("arn:") {
        b.arn(p)
    } else {
        b.name(p)
    }
    .build()
}

/// IMDSv2 only, one hop: no metadata for containers or forwarded requests.
fn imds_v2_only() -> InstanceMetadataOptionsRequest {
    InstanceMetadataOptionsRequest::builder()
        .http_tokens(HttpTokensState::Required)
        .http_put_response_hop_limit(1)
        .build()
}

/// A run this process follows.
#[derive(Debug)]
struct Tracked {
    instance: Option<String>,
    /// The instance type the run asked for (or the default).
    instance_type: String,
    deadline: DateTime<Utc>,
    latest: tokio::sync::watch::Sender<Run>,
    cancel: CancellationToken,
}

#[derive(Debug)]
struct Inner {
    client: Client,
    sts: aws_sdk_sts::Client,
    run_role: String,
    settings: Ec2Settings,
    instance_type: String,
    public: S3Store,
    private: S3Store,
    s3_region: Option<String>,
    s3_endpoint: Option<String>,
    retry: RetryPolicy,
    runs: Mutex<HashMap<RunId, Tracked>>,
    agent_key: OnceCell<String>,
}

/// A compute backend that runs each run on its own fresh EC2 instance. See the module docs.
#[derive(Debug, Clone)]
pub struct Ec2Compute {
    inner: Arc<Inner>,
}

/// How long pre-signed URLs in user data stay valid: the instance fetches at boot.
const PRESIGN_FOR: Duration = Duration::from_secs(3600);

impl Ec2Compute {
    /// `run` with its machine in its provenance: the instance, its AMI and type (the agent on
    /// the instance only knows its host name).
    fn with_machine(&self, mut run: Run) -> Run {
        let instance = self
            .lock()
            .get(&run.id)
            .and_then(|t| Some((t.instance.clone()?, t.instance_type.clone())));
        if let (Some(p), Some((i, kind))) = (run.provenance.as_mut(), instance) {
            p.compute = Some(format!(
                "ec2 instance {i} ({}, {kind})",
                self.inner.settings.ami
            ));
        }
        run
    }

    /// The EC2 client, for callers that need more than this backend does.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// The settings.
    pub fn settings(&self) -> &Ec2Settings {
        &self.inner.settings
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RunId, Tracked>> {
        self.inner
            .runs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn margin(&self) -> Duration {
        Duration::from_secs(self.inner.settings.margin_seconds)
    }

    /// The instance running `run`, if one was launched or found.
    pub fn instance_of(&self, run: &RunId) -> Option<String> {
        self.lock().get(run).and_then(|t| t.instance.clone())
    }

    /// Uploads the agent binary once (content-addressed) and returns its key.
    async fn agent_key(&self) -> Result<String> {
        self.inner
            .agent_key
            .get_or_try_init(|| async {
                let path = match &self.inner.settings.agent_binary {
                    Some(p) => p.clone(),
                    None => std::env::current_exe().map_err(|e| Error::io("current_exe", e))?,
                };
                let bytes = tokio::fs::read(&path).await.map_err(|e| {
                    Error::config("ec2.agent_binary", format!("{}: {e}", path.display()))
                })?;
                let sha = {
                    use sha2::Digest;
                    hex::encode(sha2::Sha256::digest(&bytes))
                };
                let key = format!("_telejob/agent/{sha}/telejob");
                if self.inner.private.head(&key).await?.is_none() {
                    self.inner
                        .private
                        .put(&key, bytes.into(), PutOptions::default())
                        .await?;
                }
                Ok(key)
            })
            .await
            .cloned()
    }

    fn tags(&self, req: &RunRequest, deadline: DateTime<Utc>) -> Vec<Tag> {
        let t = |k: &str, v: &str| Tag::builder().key(k).value(v).build();
        vec![
            t("Name", &format!("telejob {} {}", req.job, req.run_id)),
            t(tags::JOB, req.job.as_str()),
            t(tags::RUN, req.run_id.as_str()),
            t(tags::OWNER, req.owner.as_deref().unwrap_or("")),
            t(tags::LAUNCHER, &self.inner.settings.launcher),
            t(
                tags::DEADLINE,
                &deadline.to_rfc3339_opts(SecondsFormat::Secs, true),
            ),
        ]
    }

    /// The instance type of a run: the one it asks for, if the operator allows it, else the
    /// default.
    fn type_for(&self, req: &RunRequest) -> Result<String> {
        let s = &self.inner.settings;
        match &req.instance_type {
            None => Ok(self.inner.instance_type.clone()),
            Some(t) if s.machine_types().allows(t) => Ok(t.clone()),
            Some(t) => Err(Error::invalid(
                "instance_type",
                format!(
                    "{t} is not allowed here; allowed: {}",
                    s.machine_types().allowed_list()
                ),
            )),
        }
    }

    /// Starts the instance for `req`, or finds the one a previous attempt started.
    async fn start_instance(&self, req: &RunRequest, deadline: DateTime<Utc>) -> Result<String> {
        let run = req.run_id.as_str();
        let instance_type = self.type_for(req)?;
        // ClientToken makes RunInstances idempotent on AWS; not every endpoint honours it, so
        // look for an instance already tagged with this run first.
        let existing = api::find_tagged(&self.inner.client, self.inner.retry, Some(run))
            .await
            .map_err(|e| e.into_error("launch"))?;
        if let Some(id) = existing.iter().find_map(|i| i.instance_id()) {
            tracing::info!(
                run,
                instance = id,
                "found this run's instance from an earlier attempt"
            );
            return Ok(id.to_string());
        }
        let staged = telejob_core::agent::fetch::stage_code(&*self.inner.private, req).await?;
        let request_key = format!("{}request.json", keys::run_prefix(&req.job, &req.run_id));
        self.inner.private.put_json(&request_key, &staged).await?;
        // The run's own credentials (see `session`): for its timeout plus the margin.
        let s = &self.inner.settings;
        let policy = session::session_policy(&self.inner.public, &self.inner.private, &staged);
        let length = session::session_length(&staged, Duration::from_secs(s.margin_seconds));
        let creds = session::assume(
            &self.inner.sts,
            &self.inner.run_role,
            &staged,
            &policy,
            length,
        )
        .await?;
        let credentials_key = format!(
            "{}credentials.json",
            keys::run_prefix(&req.job, &req.run_id)
        );
        self.inner
            .private
            .put_json(&credentials_key, &creds)
            .await?;
        let agent_key = self.agent_key().await?;
        let private = &self.inner.private;
        let (credentials_url, agent_url, request_url) = (
            private.presign_get(&credentials_key, PRESIGN_FOR).await?,
            private.presign_get(&agent_key, PRESIGN_FOR).await?,
            private.presign_get(&request_key, PRESIGN_FOR).await?,
        );
        let dead_man =
            (deadline - Utc::now()).to_std().unwrap_or_default() + Duration::from_secs(120);
        let user_data = userdata::script(&userdata::Bootstrap {
            run_id: run,
            job: req.job.as_str(),
            agent_url: &agent_url,
            request_url: &request_url,
            credentials_url: &credentials_url,
            public_url: &self.inner.public.url(),
            private_url: &self.inner.private.url(),
            s3_endpoint: self.inner.s3_endpoint.as_deref(),
            s3_region: self.inner.s3_region.as_deref(),
            dead_man,
            allow_metadata_access: s.allow_metadata_access,
        });
        // No instance profile: the job is root of the instance.
        let launch = OneInstance::new(
            s,
            &instance_type,
            run,
            &user_data,
            None,
            self.tags(req, deadline),
        );
        let client = &self.inner.client;
        let id = api::retrying(self.inner.retry, "RunInstances", |attempt| {
            let call = launch.call(client, s).set_key_name(s.key_name.clone());
            async move {
                // A failed attempt may still have started an instance (a lost response): look
                // before launching again.
                if attempt > 0
                    && let Ok(found) = api::find_tagged(client, self.inner.retry, Some(run)).await
                    && let Some(id) = found.iter().find_map(|i| i.instance_id())
                {
                    return Ok(id.to_string());
                }
                let out = call.send().await.map_err(api::classify)?;
                out.instances()
                    .first()
                    .and_then(|i| i.instance_id())
                    .map(str::to_string)
                    .ok_or_else(|| api::ApiError {
                        code: None,
                        message: "RunInstances returned no instance".into(),
                        retryable: true,
                    })
            }
        })
        .await
        .map_err(|e| e.into_error("launch"))?;
        Ok(id)
    }

    /// The run's status object as the agent (or a watcher) last wrote it; `None` when there is
    /// none yet or it cannot be read (logged).
    async fn stored_run(&self, job: &JobName, run: &RunId) -> Option<Run> {
        match self
            .inner
            .private
            .get_json::<Run>(&keys::status(job, run))
            .await
        {
            Ok(r) if r.id == *run => Some(r),
            Ok(_) | Err(Error::NotFound(_)) => None,
            Err(e) => {
                tracing::warn!(%run, error = %e, "cannot read the run's status");
                None
            }
        }
    }

    /// Ends every run this process follows without cancelling them (for tests and embedding
    /// programs that stop following runs, e.g. before a restart).
    pub fn forget_all(&self) {
        for (_, t) in self.lock().drain() {
            t.cancel.cancel();
        }
    }
}

#[async_trait]
impl Compute for Ec2Compute {
    fn capabilities(&self) -> ComputeCapabilities {
        let mut c = ComputeCapabilities::named("ec2");
        c.remote = true;
        c.cancel = true;
        c.reattach = true;
        c.contained = true;
        // The agent runs as root on a fresh Linux instance: a UID and namespaces of its own for
        // the job, the workspace measured. Memory and CPU are the instance type's.
        c.limits = telejob_core::limits::LimitSupport {
            processes: true,
            disk: true,
            network: true,
            ..Default::default()
        };
        c.machine_types = Some(self.inner.settings.machine_types());
        c.reaper = true;
        c.workers = true;
        c.run_credentials = Some(session::lifetime(Duration::from_secs(
            self.inner.settings.margin_seconds,
        )));
        c
    }

    fn reaper(&self) -> Option<Arc<dyn telejob_core::compute::Reaper>> {
        Some(Arc::new(self.clone()))
    }

    fn workers(&self) -> Option<Arc<dyn telejob_core::worker::WorkerBackend>> {
        Some(Arc::new(self.ec2_workers()))
    }

    async fn launch(&self, req: RunRequest, opts: LaunchOptions) -> Result<()> {
        let deadline = Utc::now()
            + chrono::Duration::from_std(req.timeout + self.margin())
                .map_err(|_| Error::invalid("timeout", "too long"))?;
        let pending = Run::pending(&req);
        let instance_type = self.type_for(&req)?;
        {
            let mut runs = self.lock();
            if runs.contains_key(&req.run_id) {
                return Ok(()); // launched before: never a second instance
            }
            // Registered before the instance exists, so the reaper leaves it alone.
            runs.insert(
                req.run_id.clone(),
                Tracked {
                    instance: None,
                    instance_type,
                    deadline,
                    latest: tokio::sync::watch::Sender::new(pending.clone()),
                    cancel: CancellationToken::new(),
                },
            );
        }
        let id = match self.start_instance(&req, deadline).await {
            Ok(id) => id,
            Err(e) => {
                self.lock().remove(&req.run_id);
                return Err(e);
            }
        };
        tracing::info!(run = %req.run_id, job = %req.job, instance = %id, "instance launched");
        if let Some(t) = self.lock().get_mut(&req.run_id) {
            t.instance = Some(id.clone());
        }
        self.spawn_watch(req.run_id.clone(), pending, opts.events);
        Ok(())
    }

    async fn wait(&self, run: &RunId) -> Result<Run> {
        let mut rx = self
            .lock()
            .get(run)
            .map(|t| t.latest.subscribe())
            .ok_or_else(|| Error::NotFound(format!("run {run}")))?;
        let r = rx
            .wait_for(|r| r.state.is_terminal())
            .await
            .map_err(|_| Error::Compute {
                op: "wait",
                reason: format!("stopped following run {run}"),
                retryable: false,
                source: None,
            })?;
        let r = r.clone();
        Ok(self.with_machine(r))
    }

    async fn cancel(&self, run: &RunId) -> Result<()> {
        if let Some(t) = self.lock().get(run) {
            t.cancel.cancel();
        }
        Ok(())
    }

    async fn status(&self, run: &RunId) -> Result<Option<Run>> {
        let r = self.lock().get(run).map(|t| t.latest.borrow().clone());
        Ok(r.map(|r| self.with_machine(r)))
    }

    async fn reattach(&self, run: &Run) -> Result<bool> {
        if self.lock().contains_key(&run.id) {
            return Ok(true);
        }
        let found = api::find_tagged(&self.inner.client, self.inner.retry, Some(run.id.as_str()))
            .await
            .map_err(|e| e.into_error("reattach"))?;
        let stored = self.stored_run(&run.job, &run.id).await;
        let instance = found
            .iter()
            .find_map(|i| Some((i.instance_id()?.to_string(), api::deadline(i))));
        let finished = stored.as_ref().is_some_and(|r| r.state.is_terminal());
        if instance.is_none() && !finished {
            return Ok(false);
        }
        let (id, deadline) = match instance {
            Some((id, d)) => (Some(id), d),
            None => (None, None),
        };
        let latest = stored.unwrap_or_else(|| run.clone());
        self.lock().insert(
            run.id.clone(),
            Tracked {
                instance: id,
                instance_type: self.inner.instance_type.clone(),
                deadline: deadline.unwrap_or_else(Utc::now),
                latest: tokio::sync::watch::Sender::new(latest.clone()),
                cancel: CancellationToken::new(),
            },
        );
        tracing::info!(run = %run.id, "reattached to a run launched before a restart");
        self.spawn_watch(run.id.clone(), latest, None::<EventSink>);
        Ok(true)
    }
}
