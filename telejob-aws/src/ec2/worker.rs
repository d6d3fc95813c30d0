//! Analysis workers on EC2: a fresh instance from the runs' `[ec2]` settings (AMI, subnet,
//! security groups, allowed types) with its owner's SSH key installed for the login user
//! [`LOGIN_USER`](telejob_core::worker::LOGIN_USER), no instance profile unless the operator
//! opts in, terminate-on-shutdown and a dead-man shutdown. Its state is its tags: `telejob:worker`
//! (its name), `telejob:owner`, `telejob:deadline` — so that any process (a server after a
//! restart, the CLI without a server, the reaper) knows it.

use std::time::Duration;

use async_trait::async_trait;

use aws_sdk_ec2::Client;
use aws_sdk_ec2::types::{Instance, Tag};
use chrono::{DateTime, SecondsFormat, Utc};
use telejob_core::worker::{
    LOGIN_USER, MachineTypes, SshPublicKey, WorkerBackend, WorkerInstance, WorkerLaunch,
};
use telejob_core::{Error, Result};

use super::api::{self, RetryPolicy};
use super::userdata::sh_quote;
use super::{Ec2Compute, Ec2Settings, tags};
use crate::config::AwsOptions;

/// A worker as EC2 reports it.
fn worker_of(i: &Instance) -> Option<WorkerInstance> {
    Some(WorkerInstance {
        instance_id: i.instance_id()?.to_string(),
        name: api::tag(i, tags::WORKER)?.to_string(),
        owner: api::tag(i, tags::OWNER).unwrap_or("").to_string(),
        deadline: api::deadline(i),
        state: i
            .state()
            .and_then(|s| s.name())
            .map(|n| n.as_str().to_string())
            .unwrap_or_default(),
        address: i
            .public_ip_address()
            .or(i.public_dns_name().filter(|d| !d.is_empty()))
            .or(i.private_ip_address())
            .map(str::to_string),
        instance_type: i
            .instance_type()
            .map(|t| t.as_str().to_string())
            .unwrap_or_default(),
        launched_at: i
            .launch_time()
            .and_then(|t| DateTime::from_timestamp(t.secs(), t.subsec_nanos())),
    })
}

/// Launches, lists, extends and ends workers.
#[derive(Debug, Clone)]
pub struct Ec2Workers {
    client: Client,
    settings: Ec2Settings,
    retry: RetryPolicy,
}

impl Ec2Compute {
    /// The workers of this EC2 account and settings, through this backend's client.
    pub fn ec2_workers(&self) -> Ec2Workers {
        Ec2Workers {
            client: self.inner.client.clone(),
            settings: self.inner.settings.clone(),
            retry: self.inner.retry,
        }
    }
}

/// The user data a worker boots with: installs `key` for the login user (who may use `sudo`)
/// and sets the dead-man shutdown. It holds no secret. `${TELEJOB_WORKER_ROOT:-}` prefixes the
/// files it writes (tests point it at a scratch directory).
pub fn user_data(name: &str, owner: &str, key: &SshPublicKey, hard_stop: Duration) -> String {
    let minutes = hard_stop.as_secs().div_ceil(60).max(1);
    format!(
        r#"#!/bin/bash
# telejob: analysis worker {name} of {owner}. Installs the owner's SSH key for {user} (who may
# use sudo) and powers off after at most {minutes} minutes (the instance terminates on shutdown).
set -eu
shutdown -h +{minutes} 'telejob: worker lifetime reached' || true
root="${{TELEJOB_WORKER_ROOT:-}}"
id {user} >/dev/null 2>&1 || useradd --create-home --home-dir /home/{user} --shell /bin/bash {user}
install -d -m 0700 "$root/home/{user}/.ssh"
printf '%s\n' {key} > "$root/home/{user}/.ssh/authorized_keys"
chmod 0600 "$root/home/{user}/.ssh/authorized_keys"
chown -R {user}:{user} "$root/home/{user}/.ssh"
install -d -m 0755 "$root/etc/sudoers.d"
printf '%s\n' '{user} ALL=(ALL) NOPASSWD:ALL' > "$root/etc/sudoers.d/90-telejob-{user}"
chmod 0440 "$root/etc/sudoers.d/90-telejob-{user}"
echo "telejob: worker {name} is ready for {user}"
"#,
        name = name,
        owner = owner.replace(['\n', '\r'], " "),
        user = LOGIN_USER,
        key = sh_quote(key.as_str()),
    )
}

impl Ec2Workers {
    /// Workers from `[ec2]` settings and AWS options, without a run backend (the CLI's
    /// `--compute ec2`).
    pub async fn new(settings: Ec2Settings, aws: &AwsOptions) -> Result<Self> {
        if settings.ami.trim().is_empty() {
            return Err(Error::config("ec2.ami", "set the AMI id, e.g. ami-0abc…"));
        }
        let sdk = aws.load().await;
        Ok(Self {
            client: Client::new(&sdk),
            settings,
            retry: RetryPolicy::default(),
        })
    }

    /// The settings.
    pub fn settings(&self) -> &Ec2Settings {
        &self.settings
    }

    async fn find(&self, name: Option<&str>) -> Result<Vec<WorkerInstance>> {
        let found = api::find_live(&self.client, self.retry, tags::WORKER, name)
            .await
            .map_err(|e| e.into_error("list workers"))?;
        Ok(found.iter().filter_map(worker_of).collect())
    }

    /// The machine types workers may ask for (those of the runs).
    fn types(&self) -> MachineTypes {
        self.settings.machine_types()
    }
}

#[async_trait]
impl WorkerBackend for Ec2Workers {
    fn machine_types(&self) -> MachineTypes {
        self.types()
    }

    /// Launches a worker and returns it as EC2 first reports it (usually `pending`, without an
    /// address yet). A live worker of that name is refused.
    ///
    /// # Errors
    ///
    /// The `name` field when a live worker has it, `instance_type` when it is not allowed, or
    /// EC2 errors. Nothing is left running when the launch fails.
    async fn launch(&self, w: &WorkerLaunch<'_>) -> Result<WorkerInstance> {
        telejob_core::worker::validate_name(w.name)?;
        let s = &self.settings;
        let instance_type = w.instance_type.unwrap_or(&s.instance_type).to_string();
        let types = self.types();
        if !types.allows(&instance_type) {
            return Err(Error::invalid(
                "instance_type",
                format!(
                    "{instance_type} is not allowed here; allowed: {}",
                    types.allowed_list()
                ),
            ));
        }
        if self.get(w.name).await?.is_some() {
            return Err(Error::invalid(
                "name",
                format!("a live worker is named {:?}; choose another name", w.name),
            ));
        }
        let t = |k: &str, v: &str| Tag::builder().key(k).value(v).build();
        let tags = vec![
            t("Name", &format!("telejob worker {}", w.name)),
            t(tags::WORKER, w.name),
            t(tags::OWNER, w.owner),
            t(tags::LAUNCHER, &s.launcher),
            t(
                tags::DEADLINE,
                &w.deadline.to_rfc3339_opts(SecondsFormat::Secs, true),
            ),
        ];
        // One token per launch: a retried call never starts a second instance.
        let launch = super::OneInstance::new(
            s,
            &instance_type,
            &format!("worker-{}-{}", w.name, w.deadline.timestamp()),
            &user_data(w.name, w.owner, w.key, w.hard_stop),
            s.worker_instance_profile.as_deref(),
            tags,
        );
        let out = api::with_retries(self.retry, "RunInstances", || {
            launch.call(&self.client, s).send()
        })
        .await
        .map_err(|e| e.into_error("launch worker"))?;
        out.instances()
            .first()
            .and_then(worker_of)
            .ok_or_else(|| Error::Compute {
                op: "launch worker",
                reason: "EC2 started no instance".into(),
                retryable: true,
                source: None,
            })
    }

    /// Every live worker (not terminated), of every owner.
    ///
    /// # Errors
    ///
    /// EC2 errors.
    async fn list(&self) -> Result<Vec<WorkerInstance>> {
        self.find(None).await
    }

    /// The live worker named `name`.
    ///
    /// # Errors
    ///
    /// EC2 errors.
    async fn get(&self, name: &str) -> Result<Option<WorkerInstance>> {
        Ok(self.find(Some(name)).await?.into_iter().next())
    }

    /// Moves a worker's deadline tag.
    ///
    /// # Errors
    ///
    /// EC2 errors.
    async fn set_deadline(&self, instance_id: &str, deadline: DateTime<Utc>) -> Result<()> {
        let tag = Tag::builder()
            .key(tags::DEADLINE)
            .value(deadline.to_rfc3339_opts(SecondsFormat::Secs, true))
            .build();
        let client = &self.client;
        api::with_retries(self.retry, "CreateTags", || {
            client
                .create_tags()
                .resources(instance_id)
                .tags(tag.clone())
                .send()
        })
        .await
        .map_err(|e| e.into_error("extend worker"))?;
        Ok(())
    }

    /// Ends a worker and confirms it is going.
    ///
    /// # Errors
    ///
    /// EC2 errors.
    async fn terminate(&self, instance_id: &str) -> Result<()> {
        api::terminate_confirmed(
            &self.client,
            self.retry,
            instance_id,
            Duration::from_secs(30),
        )
        .await
    }

    /// The state of an instance (`running`, `terminated`, …); `None` when EC2 does not know
    /// it (yet, or any more).
    ///
    /// # Errors
    ///
    /// EC2 errors.
    async fn state(&self, instance_id: &str) -> Result<Option<String>> {
        Ok(api::state_of(&self.client, self.retry, instance_id)
            .await
            .map_err(|e| e.into_error("describe worker"))?
            .map(|(s, _)| s.as_str().to_string()))
    }

    /// Ends every worker past its deadline tag (whoever launched it: the CLI without a server,
    /// a server whose database is gone), except those named in `followed` (their follower ends
    /// them). Returns the ones ended.
    ///
    /// # Errors
    ///
    /// EC2 errors listing them; a failure to end one is logged and retried on the next pass.
    async fn reap(
        &self,
        followed: &std::collections::HashSet<String>,
    ) -> Result<Vec<WorkerInstance>> {
        let now = Utc::now();
        let mut ended = Vec::new();
        for w in self.list().await? {
            if w.deadline.is_some_and(|d| d <= now) && !followed.contains(&w.name) {
                tracing::warn!(worker = %w.name, instance = %w.instance_id, "ending a worker past its deadline");
                match self.terminate(&w.instance_id).await {
                    Ok(()) => ended.push(w),
                    Err(e) => {
                        tracing::error!(worker = %w.name, error = %e, "cannot end the worker");
                    }
                }
            }
        }
        Ok(ended)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_data_quotes_the_key_and_rounds_the_dead_man_up() {
        let key = SshPublicKey::parse(
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILM+rvN+ot98qgEN796jTiQfZfG1KaT0PtFDJ/XFSqti it's me",
        )
        .expect("key");
        let ud = user_data("dev", "alice", &key, Duration::from_secs(3601));
        assert!(ud.contains("shutdown -h +61 "), "{ud}");
        assert!(ud.contains(r"'ssh-ed25519 AAAA"), "{ud}");
        assert!(ud.contains(r"it'\''s me'"), "{ud}");
        assert!(!ud.contains("AWS_"), "no credentials travel in user data");
    }
}
