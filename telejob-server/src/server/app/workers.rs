//! Analysis workers, as the server offers them: launch (checked: key, lifetime, type, the
//! per-user cap, a free name), list, extend, terminate — owner-checked like jobs — and the
//! leader's watch that ends them at their deadline, warns an hour before, notices instances that
//! went away, and re-adopts what it launched before a restart.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use telejob_core::job::JobName;
use telejob_core::policy::NotifySpec;
use telejob_core::scheduler::notify::{EventKind, JobEvent, Notifier};
use telejob_core::worker::{self, SshPublicKey, WorkerBackend, WorkerInstance, WorkerLaunch};

use crate::server::app::cluster::Cluster;
use crate::server::app::errors::JobError;
use crate::server::db::{Db, User, WorkerInsert, WorkerRow};

type Result<T, E = JobError> = std::result::Result<T, E>;

/// The operator's bounds.
#[derive(Debug, Clone)]
pub struct WorkerPolicy {
    /// The longest total lifetime, extensions included.
    pub max_lifetime: Duration,
    /// Live workers a user may have at once.
    pub per_user: usize,
    /// "Your worker ends in …" goes out this long before the deadline.
    pub warn_before: Duration,
}

impl Default for WorkerPolicy {
    fn default() -> Self {
        Self {
            max_lifetime: worker::DEFAULT_MAX_LIFETIME,
            per_user: worker::DEFAULT_PER_USER,
            warn_before: Duration::from_secs(3600),
        }
    }
}

/// Workers on this server: on the compute's machines when it offers them (EC2), none
/// otherwise.
#[derive(Debug, Clone)]
pub struct Workers {
    /// The compute's workers; `None` on a server with local compute.
    pub backend: Option<Arc<dyn WorkerBackend>>,
    /// The bounds.
    pub policy: WorkerPolicy,
    /// Workers a request of this replica is terminating now: the watch leaves them to it, so
    /// that their end is recorded as the request's, not as "its instance is gone".
    pub terminating: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

/// `POST /api/workers`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaunchRequest {
    /// The name (default: made up from the owner's).
    #[serde(default)]
    pub name: Option<String>,
    /// The OpenSSH public key the login user accepts.
    pub ssh_key: String,
    /// How long it lives, such as `4h` (default 4 hours, at most the operator's maximum).
    #[serde(default)]
    pub lifetime: Option<String>,
    /// One of the allowed instance types (default: the `[ec2]` default).
    #[serde(default)]
    pub instance_type: Option<String>,
    /// Where its notifications go (default: the owner's profile).
    #[serde(default)]
    pub notify: Option<NotifySpec>,
}

/// A worker as the API and the dashboard show it.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerView {
    /// Its name.
    pub name: String,
    /// Its owner.
    pub owner: String,
    /// `launching`, `pending`, `running`, `ending` or `ended`.
    pub state: String,
    /// The EC2 instance.
    pub instance_id: Option<String>,
    /// The instance type.
    pub instance_type: String,
    /// Where to reach it.
    pub address: Option<String>,
    /// The `ssh` command line, once it has an address.
    pub ssh: Option<String>,
    /// The login user.
    pub login: &'static str,
    /// When it was launched.
    pub created_at: DateTime<Utc>,
    /// When it ends.
    pub deadline: DateTime<Utc>,
    /// The latest an extension may set.
    pub max_deadline: DateTime<Utc>,
    /// Seconds left.
    pub seconds_left: i64,
    /// When it ended.
    pub ended_at: Option<DateTime<Utc>>,
    /// Why it ended.
    pub end_reason: Option<String>,
}

impl From<&WorkerRow> for WorkerView {
    fn from(w: &WorkerRow) -> Self {
        Self {
            name: w.name.clone(),
            owner: w.owner.clone(),
            state: w.state.clone(),
            instance_id: w.instance_id.clone(),
            instance_type: w.instance_type.clone(),
            address: w.address.clone(),
            ssh: w
                .address
                .as_ref()
                .filter(|_| !w.ended())
                .map(|a| format!("ssh {}@{a}", worker::LOGIN_USER)),
            login: worker::LOGIN_USER,
            created_at: w.created_at,
            deadline: w.deadline,
            max_deadline: w.max_deadline,
            seconds_left: if w.ended() {
                0
            } else {
                (w.deadline - Utc::now()).num_seconds().max(0)
            },
            ended_at: w.ended_at,
            end_reason: w.end_reason.clone(),
        }
    }
}

fn invalid(field: &str, msg: impl Into<String>) -> JobError {
    JobError::Invalid(telejob_core::Error::invalid(field, msg))
}

fn std_to_chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

impl Workers {
    fn backend(&self) -> Result<&dyn WorkerBackend> {
        self.backend.as_deref().ok_or_else(|| {
            invalid(
                "compute",
                "workers need EC2 (compute = \"ec2\"): this server runs jobs on its own host; for a local worker, run `telejob worker shell --code <TARBALL|DIR>`",
            )
        })
    }

    /// Launches a worker for `user`.
    ///
    /// # Errors
    ///
    /// The field at fault (`ssh_key`, `lifetime`, `instance_type`, `name`, `workers` for the
    /// cap, `compute` on a local server), or EC2 errors (nothing is left running then).
    pub async fn launch(&self, db: &Db, user: &User, req: &LaunchRequest) -> Result<WorkerRow> {
        let backend = self.backend()?;
        let key = SshPublicKey::parse(&req.ssh_key)?;
        let lifetime = match &req.lifetime {
            Some(l) => worker::parse_lifetime("lifetime", l)?,
            None => worker::DEFAULT_LIFETIME.min(self.policy.max_lifetime),
        };
        worker::check_lifetime("lifetime", lifetime, self.policy.max_lifetime)?;
        let types = backend.machine_types();
        let instance_type = req
            .instance_type
            .clone()
            .unwrap_or_else(|| types.default.clone());
        if !types.allows(&instance_type) {
            return Err(invalid(
                "instance_type",
                format!(
                    "{instance_type} is not allowed here; allowed: {}",
                    types.allowed_list()
                ),
            ));
        }
        if let Some(n) = &req.notify {
            n.validate()?;
        }
        let name = match &req.name {
            Some(n) => {
                worker::validate_name(n)?;
                n.clone()
            }
            None => worker::made_up_name(),
        };
        let now = Utc::now();
        let mut id = [0u8; 8];
        let _ = getrandom::fill(&mut id);
        let mut row = WorkerRow {
            id: hex::encode(id),
            name: name.clone(),
            owner: user.name.clone(),
            instance_id: None,
            instance_type: instance_type.clone(),
            ssh_key: key.as_str().to_string(),
            state: "launching".into(),
            address: None,
            created_at: now,
            deadline: now + std_to_chrono(lifetime),
            max_deadline: now + std_to_chrono(self.policy.max_lifetime),
            ended_at: None,
            end_reason: None,
            notify: req.notify.clone().unwrap_or_default(),
            warned: false,
        };
        match db.insert_worker_within(&row, self.policy.per_user).await? {
            WorkerInsert::Inserted => {}
            WorkerInsert::NameTaken => {
                return Err(invalid(
                    "name",
                    format!("a live worker is named {name:?}; choose another name"),
                ));
            }
            WorkerInsert::AtCap(live) => {
                return Err(invalid(
                    "workers",
                    format!(
                        "you have {live} live workers, the most this server allows per user; terminate one first"
                    ),
                ));
            }
        }
        let launched = backend
            .launch(&WorkerLaunch {
                name: &name,
                owner: &user.name,
                key: &key,
                deadline: row.deadline,
                hard_stop: self.policy.max_lifetime,
                instance_type: Some(&instance_type),
            })
            .await;
        match launched {
            Ok(i) => {
                row.instance_id = Some(i.instance_id);
                row.state = i.state;
                row.address = i.address;
                db.update_worker(&row).await?;
                Ok(row)
            }
            Err(e) => {
                db.end_worker(&row.id, &format!("the launch failed: {e}"))
                    .await?;
                Err(e.into())
            }
        }
    }

    /// The worker `name` if `user` may see it (its owner, admins).
    ///
    /// # Errors
    ///
    /// [`JobError::NotFound`] otherwise.
    pub async fn visible(&self, db: &Db, user: &User, name: &str) -> Result<WorkerRow> {
        match db.worker(name).await? {
            Some(w) if w.owner == user.name || user.is_admin => Ok(w),
            _ => Err(JobError::NotFound),
        }
    }

    /// The workers `user` may see (admins: every one), live first.
    ///
    /// # Errors
    ///
    /// Database errors.
    pub async fn list(&self, db: &Db, user: &User) -> Result<Vec<WorkerRow>> {
        let mut all: Vec<WorkerRow> = db
            .workers()
            .await?
            .into_iter()
            .filter(|w| w.owner == user.name || user.is_admin)
            .collect();
        all.sort_by_key(|w| (w.ended(), std::cmp::Reverse(w.created_at)));
        Ok(all)
    }

    /// Moves a live worker's deadline `by` later (from now if it is past), within its maximum.
    ///
    /// # Errors
    ///
    /// As [`Workers::visible`]; the `by` field past the maximum; `name` for an ended worker.
    pub async fn extend(&self, db: &Db, user: &User, name: &str, by: &str) -> Result<WorkerRow> {
        let mut w = self.visible(db, user, name).await?;
        if w.ended() {
            return Err(invalid("name", format!("worker {name} has ended")));
        }
        let by = worker::parse_lifetime("by", by)?;
        let deadline = w.deadline.max(Utc::now()) + std_to_chrono(by);
        let total = (deadline - w.created_at).to_std().unwrap_or_default();
        worker::check_lifetime("by", total, self.policy.max_lifetime)?;
        if let Some(i) = &w.instance_id {
            self.backend()?.set_deadline(i, deadline).await?;
        }
        w.deadline = deadline;
        w.warned = false;
        db.update_worker(&w).await?;
        Ok(w)
    }

    /// Ends a worker now.
    ///
    /// # Errors
    ///
    /// As [`Workers::visible`], or EC2 errors.
    pub async fn terminate(
        &self,
        db: &Db,
        notifier: &dyn Notifier,
        user: &User,
        name: &str,
    ) -> Result<WorkerRow> {
        let w = self.visible(db, user, name).await?;
        if w.ended() {
            return Ok(w);
        }
        let lock = || {
            self.terminating
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        lock().insert(w.id.clone());
        let ended = async {
            if let Some(i) = &w.instance_id {
                self.backend()?.terminate(i).await?;
            }
            self.ended(db, notifier, &w, &format!("terminated by {}", user.name))
                .await?;
            Ok::<_, JobError>(())
        }
        .await;
        lock().remove(&w.id);
        ended?;
        Ok(db.worker(name).await?.unwrap_or(w))
    }

    /// Whether a request of this replica is terminating the worker `id` now.
    fn is_terminating(&self, id: &str) -> bool {
        self.terminating
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(id)
    }

    /// Records the end (once) and tells the owner.
    async fn ended(
        &self,
        db: &Db,
        notifier: &dyn Notifier,
        w: &WorkerRow,
        why: &str,
    ) -> telejob_core::Result<()> {
        if db.end_worker(&w.id, why).await? {
            let msg = format!("your worker {} ended: {why}", w.name);
            notify(db, notifier, w, EventKind::WorkerEnded, msg).await;
        }
        Ok(())
    }
}

/// Sends a worker event to the worker's channels, else its owner's defaults.
async fn notify(db: &Db, notifier: &dyn Notifier, w: &WorkerRow, kind: EventKind, message: String) {
    let to = if w.notify.is_empty() {
        db.user_notify(&w.owner).await.unwrap_or_default()
    } else {
        w.notify.clone()
    };
    let Ok(name) = JobName::new(w.name.clone()) else {
        return;
    };
    notifier
        .notify(JobEvent {
            kind,
            job: name,
            run: None,
            at: Utc::now(),
            message,
            notify: to,
        })
        .await;
}

/// The leader's watch over workers.
#[derive(Debug, Clone)]
pub struct WorkerWatch {
    /// The database.
    pub db: Db,
    /// Only the leader watches.
    pub cluster: Arc<Cluster>,
    /// The workers.
    pub workers: Arc<Workers>,
    /// Where notifications go.
    pub notifier: Arc<dyn Notifier>,
    /// How often to look.
    pub every: Duration,
}

impl WorkerWatch {
    /// Looks every `every` until the process ends.
    pub async fn run(self) {
        if self.workers.backend.is_none() {
            return;
        }
        loop {
            if self.cluster.scheduler().is_some()
                && let Err(e) = self.look().await
            {
                tracing::warn!(error = %e, "worker watch pass failed");
            }
            tokio::time::sleep(self.every).await;
        }
    }

    /// One pass.
    ///
    /// # Errors
    ///
    /// Database or EC2 errors listing workers.
    pub async fn look(&self) -> telejob_core::Result<()> {
        let Some(backend) = self.workers.backend.as_deref() else {
            return Ok(());
        };
        let live: HashMap<String, WorkerInstance> = backend
            .list()
            .await?
            .into_iter()
            .map(|w| (w.name.clone(), w))
            .collect();
        let now = Utc::now();
        let rows: Vec<WorkerRow> = self
            .db
            .workers()
            .await?
            .into_iter()
            .filter(|w| !w.ended())
            .collect();
        let followed = rows.iter().map(|w| w.name.clone()).collect();
        for w in rows {
            if self.workers.is_terminating(&w.id) {
                continue;
            }
            let name = w.name.clone();
            if let Err(e) = self.follow(backend, w, &live, now).await {
                tracing::warn!(worker = %name, error = %e, "cannot follow the worker this pass");
            }
        }
        // Workers past their deadline tag that no row follows (launched by the CLI, or by a
        // server whose database is gone).
        backend.reap(&followed).await?;
        Ok(())
    }

    /// One worker's part of a pass.
    async fn follow(
        &self,
        backend: &dyn WorkerBackend,
        mut w: WorkerRow,
        live: &HashMap<String, WorkerInstance>,
        now: DateTime<Utc>,
    ) -> telejob_core::Result<()> {
        let instance = live.get(&w.name).filter(|i| i.owner == w.owner);
        match (&w.instance_id, instance) {
            // Launched before a restart, its row not updated yet: adopted by its tags.
            (None, Some(i)) => {
                w.instance_id = Some(i.instance_id.clone());
            }
            (None, None) if now - w.created_at > chrono::Duration::minutes(5) => {
                self.workers
                    .ended(&self.db, &*self.notifier, &w, "its launch never completed")
                    .await?;
                return Ok(());
            }
            (None, None) => return Ok(()),
            // Not live: gone for good, unless EC2 does not list it yet (just launched).
            (Some(id), None) => {
                let state = backend.state(id).await?;
                let gone = match state.as_deref() {
                    Some("terminated" | "shutting-down") => true,
                    Some(_) => false,
                    None => now - w.created_at > chrono::Duration::minutes(2),
                };
                // A terminate request of this replica may have ended it meanwhile: its
                // reason is the one to record.
                if !gone || self.workers.is_terminating(&w.id) {
                    return Ok(());
                }
                self.workers
                    .ended(
                        &self.db,
                        &*self.notifier,
                        &w,
                        "its instance is gone (terminated, or shut down at its maximum lifetime)",
                    )
                    .await?;
                return Ok(());
            }
            (Some(_), Some(_)) => {}
        }
        if let Some(i) = instance {
            w.state.clone_from(&i.state);
            w.address.clone_from(&i.address);
        }
        if now >= w.deadline {
            if let Some(id) = &w.instance_id
                && let Err(e) = backend.terminate(id).await
            {
                tracing::error!(worker = %w.name, error = %e, "cannot end the worker at its deadline");
                return Ok(());
            }
            self.workers
                .ended(&self.db, &*self.notifier, &w, "its lifetime ended")
                .await?;
            return Ok(());
        }
        self.db.update_worker(&w).await?;
        let warn_at = w.deadline - std_to_chrono(self.workers.policy.warn_before);
        if now >= warn_at && self.db.claim_worker_warning(&w.id).await? {
            let left = (w.deadline - now).num_minutes().max(1);
            let msg = format!(
                "your worker {} ends in {left} minutes, at {}; extend it with `telejob worker extend {} --by 2h`",
                w.name,
                w.deadline.format("%Y-%m-%d %H:%M UTC"),
                w.name
            );
            notify(
                &self.db,
                &*self.notifier,
                &w,
                EventKind::WorkerEndingSoon,
                msg,
            )
            .await;
        }
        Ok(())
    }
}
