//! The agent pipeline: fetch → unpack → run → publish. One implementation serves `telejob run`,
//! scheduled local runs and runs on EC2 instances.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use chrono::{SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::compute::{EventSink, RunEvent};
use crate::error::{Error, Result};
use crate::fetch::{CodeSource, HashingReader, UrlFetcher};
use crate::job::{Visibility, validate_command, validate_output_dir};
use crate::publish::{self, PublishPolicy};
use crate::run::{Manifest, PhaseDurations, Run, RunRequest, RunState, keys};
use crate::sandbox::exec::{ExecSpec, ExitKind, execute};
use crate::sandbox::{SandboxOptions, chown_tree, job_environment};
use crate::store::{PutOptions, Store, StoreExt};
use crate::unpack::{UnpackLimits, unpack};

/// Why a run failed, for exit codes and notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The input was wrong: missing or unsafe code, bad spec. Fix the job.
    BadInput,
    /// The job's own doing: non-zero exit, no output directory, a policy limit.
    Job,
    /// Infrastructure: a store or the host failed. Trying again may help.
    System,
}

impl FailureKind {
    fn of(e: &Error) -> Self {
        if e.is_bad_input() {
            Self::BadInput
        } else if matches!(
            e,
            Error::JobFailed(_)
                | Error::OutputDir { .. }
                | Error::Publish { .. }
                | Error::Timeout(_)
                | Error::Cancelled
        ) {
            Self::Job
        } else {
            Self::System
        }
    }
}

/// The public and private stores a run writes to. They may be the same store.
#[derive(Debug, Clone)]
pub struct RunStores {
    /// Published output of public jobs (`<job>/data/`, manifests).
    pub public: Arc<dyn Store>,
    /// Code, logs, status; output of private jobs.
    pub private: Arc<dyn Store>,
}

/// The pipeline with its settings. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// Where runs write.
    pub stores: RunStores,
    /// Fetches URLs the pipeline cannot (http, s3); `None` rejects them.
    pub fetcher: Option<Arc<dyn UrlFetcher>>,
    /// Caps on unpacking.
    pub unpack_limits: UnpackLimits,
    /// What may be published.
    pub publish_policy: PublishPolicy,
    /// Process containment, user, log cap.
    pub sandbox: SandboxOptions,
    /// Where run workspaces are made (each run gets a fresh one, removed afterwards).
    pub scratch_dir: PathBuf,
}

/// The outcome of [`Pipeline::run`]: the run record and, for failed runs, the error.
#[derive(Debug)]
pub struct RunOutcome {
    /// The final run record (also stored as the run's status).
    pub run: Run,
    /// What went wrong, for runs that did not succeed.
    pub error: Option<Error>,
    /// How the failure is classified.
    pub failure: Option<FailureKind>,
}

struct Ctx<'a> {
    req: &'a RunRequest,
    events: Option<EventSink>,
    run: Run,
    durations: PhaseDurations,
}

impl Ctx<'_> {
    fn emit(&self, e: RunEvent) {
        if let Some(s) = &self.events {
            s.emit(e);
        }
    }
}

impl Pipeline {
    /// A pipeline writing to `stores`, with default limits and sandbox, workspaces in the system
    /// temp directory.
    pub fn new(stores: RunStores) -> Self {
        Self {
            stores,
            fetcher: None,
            unpack_limits: UnpackLimits::default(),
            publish_policy: PublishPolicy::default(),
            sandbox: SandboxOptions::default(),
            scratch_dir: std::env::temp_dir(),
        }
    }

    /// Adds a fetcher for URLs.
    pub fn with_fetcher(mut self, f: Arc<dyn UrlFetcher>) -> Self {
        self.fetcher = Some(f);
        self
    }

    /// Sets the sandbox options.
    pub fn with_sandbox(mut self, s: SandboxOptions) -> Self {
        self.sandbox = s;
        self
    }

    /// Runs `req` to the end: fetch, unpack into a fresh workspace, run the command under the
    /// timeout, publish (or, for a dry run, list) the output, write the manifest last, store log
    /// and status privately, remove the workspace. Never panics on bad input; every failure ends
    /// in the returned record.
    pub async fn run(
        &self,
        req: &RunRequest,
        events: Option<EventSink>,
        cancel: CancellationToken,
    ) -> RunOutcome {
        let mut ctx = Ctx {
            req,
            events,
            run: Run::pending(req),
            durations: PhaseDurations::default(),
        };
        let result = self.run_inner(&mut ctx, &cancel).await;
        let (error, failure) = match result {
            Ok(()) => (None, None),
            Err(e) => {
                let kind = FailureKind::of(&e);
                if ctx.run.state != RunState::TimedOut && ctx.run.state != RunState::Cancelled {
                    ctx.run.state = if matches!(e, Error::Cancelled) {
                        RunState::Cancelled
                    } else {
                        RunState::Failed
                    };
                }
                ctx.run.error = Some(e.to_string());
                (Some(e), Some(kind))
            }
        };
        ctx.run.phases.finished = Some(Utc::now());
        ctx.emit(RunEvent::State(ctx.run.state));
        self.save_status(&ctx.run).await;
        RunOutcome {
            run: ctx.run,
            error,
            failure,
        }
    }

    async fn set_state(&self, ctx: &mut Ctx<'_>, state: RunState) {
        ctx.run.state = state;
        ctx.emit(RunEvent::State(state));
        self.save_status(&ctx.run).await;
    }

    async fn save_status(&self, run: &Run) {
        if let Err(e) = self
            .stores
            .private
            .put_json(&keys::status(&run.job, &run.id), run)
            .await
        {
            tracing::warn!(run = %run.id, error = %e, "could not store the run status");
        }
    }

    async fn run_inner(&self, ctx: &mut Ctx<'_>, cancel: &CancellationToken) -> Result<()> {
        let req = ctx.req;
        validate_command(&req.command)?;
        validate_output_dir(&req.output_dir)?;
        if req.timeout.is_zero() {
            return Err(Error::invalid(
                "timeout",
                "the timeout must be positive, e.g. 90s, 175m, 3h",
            ));
        }
        let source = CodeSource::parse(&req.code)?;

        // A fresh, private run directory: code/ (the workspace), home/, tmp/, the log.
        std::fs::create_dir_all(&self.scratch_dir).map_err(|e| Error::io(&self.scratch_dir, e))?;
        let run_dir = tempfile::Builder::new()
            .prefix(&format!("telejob-{}-", req.job))
            .tempdir_in(&self.scratch_dir)
            .map_err(|e| Error::io(&self.scratch_dir, e))?;
        let result = self
            .in_workspace(ctx, cancel, &source, run_dir.path())
            .await;
        // Up to millions of entries: not on the runtime's threads, which the scheduler and the API
        // share.
        if let Err(e) = tokio::task::spawn_blocking(move || remove_workspace(run_dir)).await {
            tracing::error!(error = %e, "removing the run workspace did not finish");
        }
        result
    }

    async fn in_workspace(
        &self,
        ctx: &mut Ctx<'_>,
        cancel: &CancellationToken,
        source: &CodeSource,
        dir: &Path,
    ) -> Result<()> {
        let req = ctx.req;
        let ws = dir.join("code");
        let (home, tmp, log_path) = (dir.join("home"), dir.join("tmp"), dir.join("run.log"));
        for d in [&ws, &home, &tmp] {
            std::fs::create_dir(d).map_err(|e| Error::io(d, e))?;
        }

        // Fetch and unpack.
        ctx.run.phases.fetch_started = Some(Utc::now());
        self.set_state(ctx, RunState::Fetching).await;
        let t = Instant::now();
        let archive = self.fetch(source, dir).await?;
        ctx.durations.fetch_ms = ms(t);
        let t = Instant::now();
        let (limits, ws2) = (self.unpack_limits, ws.clone());
        let sha = tokio::task::spawn_blocking(move || -> Result<String> {
            let file = std::fs::File::open(&archive).map_err(|e| Error::io(&archive, e))?;
            let mut hashing =
                HashingReader::new(std::io::BufReader::with_capacity(256 * 1024, file));
            unpack(&mut hashing, &ws2, &limits)?;
            std::io::copy(&mut hashing, &mut std::io::sink())
                .map_err(|e| Error::io(&archive, e))?;
            Ok(hashing.finish().0)
        })
        .await
        .map_err(|e| Error::task("unpacking the code", e))??;
        ctx.durations.unpack_ms = ms(t);
        ctx.run.code_sha256 = Some(sha.clone());
        let root = code_root(&ws);
        if let Some(u) = &self.sandbox.run_as {
            for d in [dir.to_path_buf(), ws.clone(), home.clone(), tmp.clone()] {
                if d == dir {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o711))
                        .map_err(|e| Error::io(&d, e))?;
                } else {
                    chown_tree(&d, u.uid, u.gid)?;
                }
            }
        }

        // Run.
        let output_abs = root.join(&req.output_dir);
        let telejob_env = [
            ("TELEJOB_JOB", req.job.to_string()),
            ("TELEJOB_RUN_ID", req.run_id.to_string()),
            (
                "TELEJOB_SCHEDULED_FOR",
                req.scheduled_for.to_rfc3339_opts(SecondsFormat::Secs, true),
            ),
            ("TELEJOB_OUTPUT_DIR", output_abs.display().to_string()),
        ];
        let user = self.sandbox.run_as.as_ref().map(|u| u.name.as_str());
        let env = job_environment(&req.env, &telejob_env, &home, &tmp, user);
        ctx.run.phases.run_started = Some(Utc::now());
        self.set_state(ctx, RunState::Running).await;
        let t = Instant::now();
        let exec = execute(
            ExecSpec {
                command: req.command.clone(),
                cwd: root.clone(),
                env,
                timeout: req.timeout,
                run_id: req.run_id.to_string(),
                log_path: log_path.clone(),
                events: ctx.events.clone(),
                cancel: cancel.clone(),
            },
            &self.sandbox,
        )
        .await;
        ctx.durations.run_ms = ms(t);
        ctx.run.phases.run_ended = Some(Utc::now());
        // The log is kept whatever happened.
        if log_path.exists() {
            self.store_log(ctx, &log_path).await;
        }
        let exec = exec?;
        ctx.run.log_truncated = exec.log.truncated();
        match exec.exit {
            ExitKind::Exited(0) => {}
            ExitKind::Exited(code) => {
                ctx.run.exit_code = Some(code);
                let hint = if code == 127 {
                    " (command not found: check the command and that the script is in the tarball)"
                } else if code == 126 {
                    " (not executable: chmod +x the script before packaging)"
                } else {
                    ""
                };
                return Err(job_failed(format!(
                    "the command exited with status {code}{hint}; see the run log"
                )));
            }
            ExitKind::Signaled(sig) => {
                ctx.run.signal = Some(sig);
                return Err(job_failed(format!(
                    "the command was killed by signal {sig}; see the run log"
                )));
            }
            ExitKind::TimedOut => {
                ctx.run.state = RunState::TimedOut;
                return Err(Error::Timeout(req.timeout));
            }
            ExitKind::Cancelled => {
                ctx.run.state = RunState::Cancelled;
                return Err(Error::Cancelled);
            }
        }
        ctx.run.exit_code = Some(0);

        // Publish.
        ctx.run.phases.publish_started = Some(Utc::now());
        self.set_state(ctx, RunState::Publishing).await;
        let t = Instant::now();
        let prefix = keys::data_prefix(&req.job);
        let (root2, out_dir, policy, prefix2) = (
            root.clone(),
            req.output_dir.clone(),
            self.publish_policy.clone(),
            prefix.clone(),
        );
        let plan =
            tokio::task::spawn_blocking(move || publish::plan(&root2, &out_dir, &prefix2, &policy))
                .await
                .map_err(|e| Error::task("planning the publish", e))??;
        for s in &plan.skipped {
            ctx.emit(RunEvent::Warning(format!(
                "not published: {}: {}",
                s.path, s.reason
            )));
        }
        if plan.files.is_empty() {
            ctx.emit(RunEvent::Warning(format!(
                "the output directory {} is empty; nothing to publish",
                req.output_dir
            )));
        }
        ctx.run.skipped = plan.skipped.clone();
        let store = self.output_store(req.visibility);
        if req.dry_run {
            ctx.run.published = publish::describe(&plan, &prefix).await?;
        } else {
            ctx.run.published = publish::upload(
                &plan,
                store.as_ref(),
                &prefix,
                self.publish_policy.concurrency,
                ctx.events.as_ref(),
            )
            .await?;
            ctx.durations.publish_ms = ms(t);
            let manifest = Manifest {
                job: req.job.clone(),
                run_id: req.run_id.clone(),
                scheduled_for: req.scheduled_for,
                command: req.command.clone(),
                code_sha256: sha,
                data_prefix: prefix,
                files: ctx.run.published.clone(),
                skipped: ctx.run.skipped.clone(),
                total_bytes: ctx.run.published_bytes(),
                durations: ctx.durations.clone(),
                exit_code: 0,
                published_at: Utc::now(),
            };
            let key = keys::manifest(&req.job, &req.run_id);
            store
                .put_json(&key, &manifest)
                .await
                .map_err(|e| Error::publish_with(format!("writing the manifest: {e}"), e))?;
            ctx.run.manifest_key = Some(key);
        }
        ctx.run.state = RunState::Succeeded;
        Ok(())
    }

    fn output_store(&self, v: Visibility) -> Arc<dyn Store> {
        match v {
            Visibility::Public => self.stores.public.clone(),
            Visibility::Private => self.stores.private.clone(),
        }
    }

    async fn store_log(&self, ctx: &mut Ctx<'_>, path: &Path) {
        let key = keys::log(&ctx.req.job, &ctx.req.run_id);
        let r = match tokio::fs::File::open(path).await {
            Ok(f) => self
                .stores
                .private
                .put_stream(
                    &key,
                    Box::new(f),
                    PutOptions::default().with_content_type("text/plain; charset=utf-8"),
                )
                .await
                .map(|_| ()),
            Err(e) => Err(Error::io(path, e)),
        };
        match r {
            Ok(()) => ctx.run.log_key = Some(key),
            Err(e) => {
                tracing::warn!(run = %ctx.req.run_id, error = %e, "could not store the run log")
            }
        }
    }

    /// Brings the code to a local archive file inside `dir`.
    async fn fetch(&self, source: &CodeSource, dir: &Path) -> Result<PathBuf> {
        let name = self.describe_source(source);
        let not_found = |reason: String| Error::Fetch {
            source_name: name.clone(),
            reason,
            retryable: false,
            source: None,
        };
        match source {
            CodeSource::Path(p) => {
                let meta = std::fs::metadata(p).map_err(|e| {
                    not_found(format!("{e}; give the path of a code tarball or directory"))
                })?;
                if meta.is_dir() {
                    let out = dir.join("code.tar.gz");
                    let (p, out2) = (p.clone(), out.clone());
                    tokio::task::spawn_blocking(move || {
                        let f = std::fs::File::create(&out2).map_err(|e| Error::io(&out2, e))?;
                        crate::archive::pack_dir(&p, std::io::BufWriter::new(f))
                    })
                    .await
                    .map_err(|e| Error::task("packing the code directory", e))??;
                    Ok(out)
                } else if meta.is_file() {
                    Ok(p.clone())
                } else {
                    Err(not_found("not a file or directory".into()))
                }
            }
            CodeSource::Store(key) => {
                let out = dir.join("code.archive");
                let mut reader =
                    self.stores
                        .private
                        .get_stream(key)
                        .await
                        .map_err(|e| match e {
                            Error::NotFound(_) => not_found(
                                "no such object in the private store; upload the code first".into(),
                            ),
                            other => other,
                        })?;
                let mut f = tokio::fs::File::create(&out)
                    .await
                    .map_err(|e| Error::io(&out, e))?;
                tokio::io::copy(&mut reader, &mut f)
                    .await
                    .map_err(|e| Error::Fetch {
                        source_name: name.clone(),
                        reason: e.to_string(),
                        retryable: true,
                        source: None,
                    })?;
                Ok(out)
            }
            CodeSource::Url(url) => {
                let fetcher = self.fetcher.as_ref().filter(|f| f.handles(url)).ok_or_else(|| {
                    not_found("this telejob cannot fetch such URLs; use a local path, file://, http(s):// or an uploaded code version".into())
                })?;
                let out = dir.join("code.archive");
                fetcher
                    .fetch(url, &out, self.unpack_limits.max_total_bytes)
                    .await?;
                Ok(out)
            }
        }
    }

    fn describe_source(&self, s: &CodeSource) -> String {
        match s {
            CodeSource::Path(p) => p.display().to_string(),
            CodeSource::Store(k) => self.stores.private.locate(k),
            CodeSource::Url(u) => u.clone(),
        }
    }
}

fn job_failed(msg: String) -> Error {
    Error::JobFailed(msg)
}

fn ms(t: Instant) -> u64 {
    t.elapsed().as_millis().try_into().unwrap_or(u64::MAX)
}

/// The code root: the workspace, or its only entry when that is a directory (archives made with a
/// top-level folder, like `git archive --prefix` or GitHub tarballs).
fn code_root(ws: &Path) -> PathBuf {
    let mut it = std::fs::read_dir(ws).into_iter().flatten().flatten();
    match (it.next(), it.next()) {
        (Some(only), None) if only.file_type().is_ok_and(|t| t.is_dir()) => only.path(),
        _ => ws.to_path_buf(),
    }
}

/// Removes a run directory, even where the job made parts of it unwritable.
fn remove_workspace(dir: tempfile::TempDir) {
    let path = dir.path().to_path_buf();
    if std::fs::remove_dir_all(&path).is_ok() {
        let _ = dir.keep();
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    for e in walkdir::WalkDir::new(&path)
        .follow_links(false)
        .into_iter()
        .flatten()
    {
        if e.file_type().is_dir() {
            let _ = std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o700));
        }
    }
    if let Err(e) = dir.close() {
        tracing::warn!(dir = %path.display(), error = %e, "could not remove the run workspace");
    }
}

#[cfg(test)]
#[path = "pipeline_tests.rs"]
mod tests;
