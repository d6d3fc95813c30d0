//! The one place that changes jobs. The JSON API, the dashboard and the example seeding are thin
//! adapters over these functions, so each checks the same rights and does the same thing to the
//! database, the stores and the scheduler.

use std::io::Write;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use telejob_core::job::JobSpec;
use telejob_core::run::RunId;
use telejob_core::scheduler::backfill::{self, BackfillRequest, PlannedSlot};
use telejob_core::store::{PutOptions, Store};

use crate::server::app::state::AppState;
use crate::server::db::secret_box::SecretChanges;
use crate::server::db::{JobRow, User};

pub use crate::server::app::errors::JobError;

type Result<T, E = JobError> = std::result::Result<T, E>;

/// The private-store key of a job's code version.
pub fn code_key(job: &str, sha256: &str) -> String {
    format!("{job}/code/{sha256}.tar")
}

/// The fields of a job's view that are not settings (`GET`'s answer can be sent back as it is):
/// its owner, state, descriptions, times, code versions, warnings, and the names of its
/// secrets (a list; secrets are changed with an object of `NAME: "value"`).
pub fn without_view_fields(
    mut fields: serde_json::Map<String, serde_json::Value>,
) -> serde_json::Map<String, serde_json::Value> {
    for k in [
        "owner",
        "paused",
        "expired",
        "schedule_description",
        "cron_line",
        "next_run",
        "code_sha256",
        "code_warnings",
        "created_at",
        "updated_at",
        "code_versions",
        "warnings",
    ] {
        fields.remove(k);
    }
    if fields
        .get("secrets")
        .is_some_and(serde_json::Value::is_array)
    {
        fields.remove("secrets");
    }
    fields
}

/// A job `user` may see (public jobs are visible to every user).
///
/// # Errors
///
/// [`JobError::NotFound`] when there is no such job or `user` may not see it.
pub async fn visible(s: &AppState, user: &User, name: &str) -> Result<JobRow> {
    match s.db.job(name).await? {
        Some(j) if j.can_see(user) => Ok(j),
        _ => Err(JobError::NotFound),
    }
}

/// A job `user` may manage (edit, run, pause, delete, read logs).
///
/// # Errors
///
/// [`JobError::NotFound`] if invisible to `user`, [`JobError::Forbidden`] if only visible.
pub async fn managed(s: &AppState, user: &User, name: &str) -> Result<JobRow> {
    let j = managed_even_deleting(s, user, name).await?;
    if j.deleting {
        return Err(JobError::Deleting(name.to_string()));
    }
    Ok(j)
}

/// As [`managed`], also for a job being deleted.
async fn managed_even_deleting(s: &AppState, user: &User, name: &str) -> Result<JobRow> {
    let j = visible(s, user, name).await?;
    if j.can_manage(user) {
        Ok(j)
    } else {
        Err(JobError::Forbidden)
    }
}

/// A code tarball received in full, hashed, and checked to be an archive telejob can open. Only
/// [`stage_stream`] and [`stage_bytes`] make one.
#[derive(Debug)]
pub struct StagedCode {
    file: tempfile::NamedTempFile,
    sha256: String,
    size: u64,
    file_name: Option<String>,
}

impl StagedCode {
    /// The staged file.
    pub fn path(&self) -> &std::path::Path {
        self.file.path()
    }

    /// Names the file it was uploaded as: its last path component, without control characters,
    /// at most 255 characters (the dashboard shows it).
    pub fn named(mut self, file_name: &str) -> Self {
        // A packed directory is named `DIR/`: its name, and the slash that says what it was.
        let dir = file_name.ends_with('/');
        let trimmed = file_name.trim_end_matches('/');
        let base = trimmed.rsplit(['/', '\\']).next().unwrap_or_default();
        let mut clean: String = base.chars().filter(|c| !c.is_control()).take(254).collect();
        if clean.trim().is_empty() {
            self.file_name = None;
            return self;
        }
        if dir {
            clean.push('/');
        }
        self.file_name = Some(clean);
        self
    }
}

/// What a stored code version is.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StoredCode {
    /// SHA-256 of the tarball.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its private-store key.
    pub key: String,
    /// What the code says about the job's command (missing or not executable script).
    pub warnings: Vec<telejob_core::advice::Warning>,
}

/// Receives an upload into a temporary file, counting against `max` bytes.
///
/// # Errors
///
/// [`JobError::TooLarge`], [`JobError::Interrupted`], or the `code` field error for a file that
/// is not an archive telejob can open.
pub async fn stage_stream<S, E>(
    mut body: S,
    max: u64,
    uploads: &super::uploads::Uploads,
) -> Result<StagedCode>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut file = tempfile::NamedTempFile::new_in(&uploads.dir)?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| JobError::Interrupted(e.to_string()))?;
        size += chunk.len() as u64;
        if size > max {
            return Err(JobError::TooLarge(max));
        }
        hasher.update(&chunk);
        // Small synchronous writes to a local temporary file, between network reads.
        file.write_all(&chunk)?;
    }
    file.flush()?;
    check(file, hex::encode(hasher.finalize()), size, uploads).await
}

/// Stages a tarball held in memory (a form upload).
///
/// # Errors
///
/// As [`stage_stream`].
pub async fn stage_bytes(
    code: Bytes,
    max: u64,
    uploads: &super::uploads::Uploads,
) -> Result<StagedCode> {
    stage_stream(
        futures::stream::iter([Ok::<_, std::convert::Infallible>(code)]),
        max,
        uploads,
    )
    .await
}

/// Unpacks the upload with the unpacker runs use (into a scratch directory, removed after), so
/// that an archive a run would refuse is refused now, naming the entry, not at the next run.
async fn check(
    file: tempfile::NamedTempFile,
    sha256: String,
    size: u64,
    uploads: &super::uploads::Uploads,
) -> Result<StagedCode> {
    let path = file.path().to_path_buf();
    let _permit = uploads.checks.acquire().await.map_err(|e| {
        JobError::Failed(telejob_core::Error::io(
            "code upload",
            std::io::Error::other(e),
        ))
    })?;
    let (dir, limits) = (uploads.dir.clone(), uploads.limits);
    let unpacked = tokio::task::spawn_blocking(move || {
        let scratch = tempfile::tempdir_in(&dir).map_err(|e| telejob_core::Error::io(&dir, e))?;
        let f = std::fs::File::open(&path).map_err(|e| telejob_core::Error::io(&path, e))?;
        telejob_core::agent::unpack::unpack(std::io::BufReader::new(f), scratch.path(), &limits)
            .map(|_| ())
    })
    .await
    .map_err(|e| JobError::Failed(telejob_core::Error::task("checking the code upload", e)))?;
    match unpacked {
        Ok(()) => Ok(StagedCode {
            file,
            sha256,
            size,
            file_name: None,
        }),
        Err(e @ telejob_core::Error::Io { .. }) => Err(JobError::Failed(e)),
        Err(e) => Err(JobError::Invalid(telejob_core::Error::invalid(
            "code",
            e.to_string(),
        ))),
    }
}

/// Stores a staged code version and makes it the job's current one; the scheduler's copy of
/// the job follows.
async fn store_code(s: &AppState, name: &str, code: StagedCode, by: &str) -> Result<StoredCode> {
    let key = code_key(name, &code.sha256);
    let reader = tokio::fs::File::open(code.file.path()).await?;
    s.stores
        .private
        .put_stream(&key, Box::new(reader), PutOptions::default())
        .await?;
    s.db.add_code(name, &code.sha256, &key, code.size, by)
        .await?;
    if let Some(f) = &code.file_name {
        s.db.name_code_version(name, &code.sha256, f).await?;
    }
    Ok(StoredCode {
        sha256: code.sha256,
        size: code.size,
        key,
        warnings: Vec::new(),
    })
}

/// Hands the job as stored now to the scheduler (wherever it runs) and returns it.
async fn rearm(s: &AppState, name: &str) -> Result<JobRow> {
    s.cluster.job_changed(name).await?;
    s.db.job_fresh(name).await?.ok_or(JobError::NotFound)
}

fn check_spec(s: &AppState, spec: &JobSpec) -> Result<()> {
    if spec.code.is_some() {
        return Err(JobError::Invalid(telejob_core::Error::invalid(
            "code",
            "upload the code with PUT /api/jobs/{name}/code instead",
        )));
    }
    spec.validate(&s.limits)?;
    s.advisor.check(spec)?;
    if let Some(hook) = &spec.notify.webhook {
        super::targets::check_url(hook, s.advisor.allow_private_targets)
            .map_err(|e| JobError::Invalid(telejob_core::Error::invalid("notify.webhook", e)))?;
    }
    if !spec.notify.email.is_empty() && !s.advisor.sends_email {
        return Err(JobError::Invalid(telejob_core::Error::invalid(
            "notify.email",
            "this server sends no email (its config has no [smtp]): use notify.webhook, or ask the operator to configure [smtp]",
        )));
    }
    Ok(())
}

/// Creates a job owned by `owner`, with its first code version when given. Nothing is left
/// behind when a step fails.
///
/// # Errors
///
/// Invalid fields, a taken name, or a failure of the database, the store or the scheduler.
pub async fn create(
    s: &AppState,
    owner: &User,
    spec: &JobSpec,
    code: Option<StagedCode>,
    secrets: &SecretChanges,
) -> Result<JobRow> {
    check_spec(s, spec)?;
    crate::server::db::secret_box::validate(secrets)?;
    // A deleted job's kept data never passes to another owner of its name, nor does what its
    // runs' credentials could still write: such a name is free once they have expired, and
    // its prefix is purged again before anyone else takes it.
    let tomb = s.db.tombstone(&spec.name).await?;
    if let Some(t) = tomb.as_ref().filter(|t| t.owner != owner.name) {
        match &t.free_after {
            None => return Err(JobError::NameReserved(spec.name.clone())),
            Some(until) if until.as_str() > crate::server::db::ts(Utc::now()).as_str() => {
                return Err(JobError::NameHeld {
                    name: spec.name.clone(),
                    until: until.clone(),
                });
            }
            Some(_) => {
                purge(s.stores.public.as_ref(), &spec.name).await?;
            }
        }
    }
    if !s.db.insert_job(spec, &owner.name, Utc::now()).await? {
        return Err(JobError::NameTaken(spec.name.clone()));
    }
    if tomb.is_some() {
        s.db.remove_tombstone(&spec.name).await?;
    }
    let made = async {
        s.db.change_secrets(&spec.name, secrets).await?;
        if let Some(code) = code {
            let warnings =
                crate::server::app::advice::script_warnings(code.file.path(), &spec.command).await;
            store_code(s, &spec.name, code, &owner.name).await?;
            s.db.set_code_warnings(&spec.name, &warnings).await?;
        }
        rearm(s, &spec.name).await
    }
    .await;
    if made.is_err() {
        // Leave no half-made job behind.
        if let Err(e) = s.db.delete_job(&spec.name, None, None).await {
            tracing::error!(job = %spec.name, error = %e, "cannot remove a half-made job");
        }
        if let Err(e) = s.cluster.job_changed(&spec.name).await {
            tracing::error!(job = %spec.name, error = %e, "cannot disarm a half-made job");
        }
    }
    made
}

/// Replaces job `name`'s spec (and its code, when given). Slots before the edit are not made up
/// under the new schedule.
///
/// # Errors
///
/// As [`managed`], invalid fields (a job cannot be renamed), or a failure below.
pub async fn update(
    s: &AppState,
    user: &User,
    name: &str,
    spec: &JobSpec,
    code: Option<StagedCode>,
    secrets: &SecretChanges,
) -> Result<JobRow> {
    let old = managed(s, user, name).await?;
    if spec.name != name {
        return Err(JobError::Invalid(telejob_core::Error::invalid(
            "name",
            "a job cannot be renamed; create a new job instead",
        )));
    }
    check_spec(s, spec)?;
    crate::server::db::secret_box::validate(secrets)?;
    // Secrets first: refused ones (too many in all) leave the code as it was.
    s.db.change_secrets(name, secrets).await?;
    if let Some(code) = code {
        let warnings =
            crate::server::app::advice::script_warnings(code.file.path(), &spec.command).await;
        store_code(s, name, code, &user.name).await?;
        s.db.set_code_warnings(name, &warnings).await?;
    } else if spec.command != old.spec.command
        && let Some(key) = &old.code_key
    {
        recheck_code(s, name, key, &spec.command).await?;
    }
    s.db.update_job_spec(spec, old.cursor.max(Utc::now()))
        .await?;
    rearm(s, name).await
}

/// Checks the stored code at `key` against `command` again (the command or the code version
/// changed) and records what it says.
async fn recheck_code(s: &AppState, name: &str, key: &str, command: &str) -> Result<()> {
    let mut reader = s.stores.private.get_stream(key).await?;
    let tmp = tempfile::NamedTempFile::new_in(&s.uploads.dir)?;
    let mut f = tokio::fs::File::from_std(tmp.reopen()?);
    tokio::io::copy(&mut reader, &mut f).await?;
    drop(f);
    let warnings = crate::server::app::advice::script_warnings(tmp.path(), command).await;
    s.db.set_code_warnings(name, &warnings).await?;
    Ok(())
}

/// Makes a staged upload job `name`'s current code.
///
/// # Errors
///
/// As [`managed`], or a failure of the store, the database or the scheduler.
pub async fn upload_code(
    s: &AppState,
    user: &User,
    name: &str,
    code: StagedCode,
) -> Result<StoredCode> {
    let job = managed(s, user, name).await?;
    let warnings =
        crate::server::app::advice::script_warnings(code.file.path(), &job.spec.command).await;
    let mut stored = store_code(s, name, code, &user.name).await?;
    s.db.set_code_warnings(name, &warnings).await?;
    stored.warnings = warnings;
    rearm(s, name).await?;
    Ok(stored)
}

/// Makes job `name`'s recorded code version `sha256` its current code again (a rollback).
///
/// # Errors
///
/// As [`managed`]; [`JobError::NotFound`] for a version the job does not have.
pub async fn use_code_version(
    s: &AppState,
    user: &User,
    name: &str,
    sha256: &str,
) -> Result<JobRow> {
    let job = managed(s, user, name).await?;
    let v =
        s.db.code_version(name, sha256)
            .await?
            .ok_or(JobError::NotFound)?;
    // The version's row stays as it was (who uploaded it, when); only the job points at it.
    s.db.add_code(
        name,
        &v.sha256,
        &v.key,
        u64::try_from(v.size).unwrap_or(0),
        &v.uploaded_by,
    )
    .await?;
    // What that version says about the command, as its badges show.
    recheck_code(s, name, &v.key, &job.spec.command).await?;
    rearm(s, name).await
}

/// Cancels run `id` if it is in flight (a run that has ended is left as it is); returns its id.
///
/// # Errors
///
/// [`JobError::NotFound`] for no such run (or one `user` may not see), [`JobError::Forbidden`]
/// when `user` may see its job but not manage it, or a failure of the scheduler.
pub async fn cancel_run(s: &AppState, user: &User, id: &str) -> Result<RunId> {
    let run_id = RunId::parse(id).ok_or(JobError::NotFound)?;
    let (run, _) = s.db.run(id).await?.ok_or(JobError::NotFound)?;
    let job = managed_even_deleting(s, user, run.job.as_str()).await?;
    if !run.state.is_terminal() {
        s.cluster.cancel_run(&job.spec.name, &run_id).await?;
    }
    Ok(run_id)
}

/// Pauses or resumes job `name`.
///
/// # Errors
///
/// As [`managed`], or a failure of the database or the scheduler.
pub async fn set_paused(s: &AppState, user: &User, name: &str, paused: bool) -> Result<JobRow> {
    managed(s, user, name).await?;
    // Resuming starts from now: slots that passed while paused are not made up.
    s.db.set_paused(name, paused, Utc::now()).await?;
    rearm(s, name).await
}

/// Starts a run of job `name` now.
///
/// # Errors
///
/// As [`managed`], the `code` field when the job has no code yet, or a scheduler failure.
pub async fn run_now(s: &AppState, user: &User, name: &str) -> Result<RunId> {
    let j = managed(s, user, name).await?;
    if j.code_key.is_none() {
        return Err(JobError::Invalid(telejob_core::Error::invalid(
            "code",
            "the job has no code yet: upload a tarball with PUT /api/jobs/{name}/code",
        )));
    }
    s.quotas.check_queued(&s.db, &j.owner).await?;
    s.quotas.count_call(&j.owner)?;
    Ok(s.cluster.run_now(name).await?)
}

/// Starts a new run of exactly what run `run_id` ran (its code version, spec snapshot and
/// slot), recorded as a replay of it.
///
/// # Errors
///
/// [`JobError::NotFound`] for a run `user` may not see, [`JobError::Forbidden`] if they may not
/// manage its job, the `run` field when it cannot be replayed (made before telejob recorded
/// what runs ran with, never fetched its code, or its code version is gone), or a scheduler
/// failure.
pub async fn replay(s: &AppState, user: &User, run_id: &str) -> Result<RunId> {
    let Some((run, _)) = s.db.run(run_id).await? else {
        return Err(JobError::NotFound);
    };
    let job = managed(s, user, run.job.as_str()).await?;
    let cannot = |why: String| {
        JobError::Invalid(telejob_core::Error::invalid(
            "run",
            format!("run {run_id} cannot be replayed: {why}"),
        ))
    };
    if run.provenance.is_none() {
        return Err(cannot(
            "it was made before telejob recorded what runs ran with".into(),
        ));
    }
    let Some(sha) = run.code_sha256.as_deref() else {
        return Err(cannot("it never fetched its code".into()));
    };
    let version = s.db.code_version(&job.spec.name, sha).await?;
    let present = match &version {
        Some(v) => s.stores.private.head(&v.key).await?.is_some(),
        None => false,
    };
    if !present {
        return Err(cannot(format!(
            "the code version it ran ({sha}) has been deleted"
        )));
    }
    s.quotas.check_queued(&s.db, &job.owner).await?;
    s.quotas.count_call(&job.owner)?;
    Ok(s.cluster.replay(&job.spec.name, run_id).await?)
}

/// A backfill's plan and, unless a dry run, the runs it started.
#[derive(Debug, serde::Serialize)]
pub struct Backfill {
    /// The job.
    pub job: String,
    /// The first day (in the job's time zone).
    pub from: chrono::NaiveDate,
    /// The last day, included.
    pub to: chrono::NaiveDate,
    /// The job's time zone.
    pub timezone: String,
    /// Nothing was run: the plan only.
    pub dry_run: bool,
    /// Runs at once (the job's `backfill_concurrency`).
    pub concurrency: u32,
    /// Every slot of the range, oldest first.
    pub slots: Vec<BackfillSlot>,
}

/// One slot of a backfill.
#[derive(Debug, serde::Serialize)]
pub struct BackfillSlot {
    /// The slot, its status, its attempt and why it is skipped.
    #[serde(flatten)]
    pub plan: PlannedSlot,
    /// The run started for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<RunId>,
}

impl Backfill {
    /// How many runs it starts (or would start).
    pub fn runs(&self) -> usize {
        self.slots.iter().filter(|s| s.plan.runs()).count()
    }
}

/// Plans a backfill of job `name` and, unless `dry_run`, starts its runs (oldest first, at
/// most the job's `backfill_concurrency` at a time).
///
/// # Errors
///
/// [`JobError::NotFound`] / [`JobError::Forbidden`] (a dry run needs only to see the job), the
/// field at fault in the request (`from`, `to`, `slots`), a job without code, or a scheduler
/// failure.
pub async fn backfill(
    s: &AppState,
    user: &User,
    name: &str,
    req: &BackfillRequest,
    dry_run: bool,
) -> Result<Backfill> {
    let job = if dry_run {
        visible(s, user, name).await?
    } else {
        managed(s, user, name).await?
    };
    let schedule = job.spec.schedule.compile()?;
    let now = Utc::now();
    let (start, end) = backfill::range(&schedule, req.from, req.to, now)?;
    let history = s.db.slot_attempts(name, start, end).await?;
    let plan = backfill::plan(&schedule, req, now, &history)?;
    let mut slots: Vec<BackfillSlot> = plan
        .into_iter()
        .map(|plan| BackfillSlot {
            run_id: plan.runs().then(RunId::new),
            plan,
        })
        .collect();
    if !dry_run && slots.iter().any(|s| s.plan.runs()) {
        if job.code_key.is_none() {
            return Err(JobError::Invalid(telejob_core::Error::invalid(
                "code",
                "the job has no code yet: upload a tarball with PUT /api/jobs/{name}/code",
            )));
        }
        let wanted: Vec<_> = slots
            .iter()
            .filter_map(|s| Some((s.plan.slot, s.plan.attempt, s.run_id.clone()?)))
            .collect();
        s.quotas
            .check_backfill(&s.db, &job.owner, wanted.len())
            .await?;
        let ours = s
            .cluster
            .backfill(name, wanted, job.spec.backfill_concurrency)
            .await?;
        for slot in &mut slots {
            if slot.run_id.as_ref().is_some_and(|id| !ours.contains(id)) {
                slot.run_id = None;
                slot.plan.skip = Some("another run of this attempt was recorded first".into());
            }
        }
    }
    if dry_run {
        for slot in &mut slots {
            slot.run_id = None;
        }
    }
    Ok(Backfill {
        job: name.to_string(),
        from: req.from,
        to: req.to,
        timezone: schedule.timezone().to_string(),
        dry_run,
        concurrency: job.spec.backfill_concurrency,
        slots,
    })
}

/// What happens to a deleted job's published data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PublicData {
    /// Kept where it is; the job's name stays reserved to its owner (a tombstone).
    #[default]
    Keep,
    /// Deleted with the job.
    Purge,
}

/// Removes every object under `<name>/` in `store`.
async fn purge(store: &dyn Store, name: &str) -> Result<usize> {
    let objects = store.list(&format!("{name}/")).await?;
    for o in &objects {
        store.delete(&o.key).await?;
    }
    Ok(objects.len())
}

/// Until when credentials the job's runs were given may still write under its name, if that is
/// later than now (compute whose runs hold credentials of their own: EC2).
async fn credentials_valid_until(s: &AppState, name: &str) -> Result<Option<DateTime<Utc>>> {
    let Some(life) = s.cluster.compute_capabilities().run_credentials else {
        return Ok(None);
    };
    let now = Utc::now();
    let oldest = now - chrono::Duration::from_std(life.max.max(life.min)).unwrap_or_default();
    let mut until = None;
    for (run, _) in s.db.runs_of(name, 1000).await? {
        let Some(started) = run.phases.fetch_started.or(run.phases.created_at) else {
            continue;
        };
        if started < oldest {
            continue;
        }
        let timeout = run.provenance.as_ref().map_or(life.max, |p| {
            std::time::Duration::from_secs(p.spec.timeout_seconds)
        });
        let end =
            started + chrono::Duration::from_std(life.for_timeout(timeout)).unwrap_or_default();
        until = until.max(Some(end));
    }
    Ok(until.filter(|t| *t > now))
}

/// How long a delete waits for the job's runs to stop.
const DELETE_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Waits (at most [`DELETE_WAIT`]) until no run of `name` is recorded in flight.
async fn runs_stopped(s: &AppState, name: &str) -> Result<()> {
    let deadline = tokio::time::Instant::now() + DELETE_WAIT;
    while !s.db.in_flight_ids(name).await?.is_empty() {
        if tokio::time::Instant::now() >= deadline {
            return Err(JobError::Deleting(name.to_string()));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Deletes job `name` and what it owns: closes its publish fence (its runs write nothing more),
/// cancels its runs in flight and waits until they have stopped, disarms it, removes its code
/// versions, logs, run records and private output, and its published data too or not
/// (`public`). Stores are emptied after the runs stopped and before the rows go, so a failure
/// leaves the job in place (being deleted) to delete again, never a free name with old data
/// behind it or a run still writing under it.
///
/// # Errors
///
/// As [`managed`]; [`JobError::Deleting`] when its runs did not stop within a minute; a
/// failure of the compute backend, a store or the database.
pub async fn delete(s: &AppState, user: &User, name: &str, public: PublicData) -> Result<()> {
    let row = managed_even_deleting(s, user, name).await?;
    s.db.mark_deleting(name).await?;
    s.cluster.cancel_job_runs(name).await?;
    runs_stopped(s, name).await?;
    purge(s.stores.private.as_ref(), name).await?;
    if public == PublicData::Purge {
        purge(s.stores.public.as_ref(), name).await?;
    }
    let held = credentials_valid_until(s, name).await?;
    let tombstone = (public == PublicData::Keep || held.is_some()).then_some(row.owner.as_str());
    let free_after = if public == PublicData::Keep {
        None
    } else {
        held
    };
    s.db.delete_job(name, tombstone, free_after).await?;
    Ok(s.cluster.job_changed(name).await?)
}

/// Releases the name of a deleted job (admins only): its kept published data is purged first,
/// so releasing never hands old data to a new owner.
///
/// # Errors
///
/// [`JobError::Forbidden`] for anyone but an admin, [`JobError::NotFound`] without a tombstone,
/// or a store or database failure.
pub async fn release(s: &AppState, user: &User, name: &str) -> Result<()> {
    if !user.is_admin {
        return Err(JobError::Forbidden);
    }
    if s.db.tombstone(name).await?.is_none() {
        return Err(JobError::NotFound);
    }
    purge(s.stores.public.as_ref(), name).await?;
    Ok(s.db.remove_tombstone(name).await?)
}

/// Where a pending run waits for a run slot, when this replica leads (the leader's scheduler
/// holds the queue; a follower answers `None`).
pub fn queue_position(
    s: &AppState,
    run: &telejob_core::run::Run,
) -> Option<telejob_core::scheduler::QueuePosition> {
    if run.state != telejob_core::run::RunState::Pending {
        return None;
    }
    s.cluster.scheduler()?.queue_position(&run.id)
}
