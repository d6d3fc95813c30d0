//! Publishing the output directory: only what really belongs to it, all or nothing reported.

use std::fs;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use futures::{StreamExt, TryStreamExt};
use globset::{Glob, GlobSet, GlobSetBuilder};
use sha2::{Digest, Sha256};
use tokio::io::AsyncRead;

use crate::compute::{EventSink, RunEvent};
use crate::error::{Error, Result};
use crate::run::{PublishedFile, SkippedFile};
use crate::store::{MAX_KEY_BYTES, PutOptions, Store, validate_key};

/// What may be published, per job. The defaults are safe for public output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishPolicy {
    /// Total bytes at most (default 10 GiB); more fails the publish.
    pub max_total_bytes: u64,
    /// Files at most (default 100,000); more fails the publish.
    pub max_files: u64,
    /// Globs (relative to the output directory) never published; matches are skipped and reported.
    pub deny: Vec<String>,
    /// Uploads in flight at once (default 8).
    pub concurrency: usize,
}

/// Files that are secrets far more often than results.
pub const DEFAULT_DENY: &[&str] = &[
    "**/.git/**",
    "**/.env",
    "**/*.pem",
    "**/*.key",
    "**/id_rsa*",
    "**/id_ecdsa*",
    "**/id_ed25519*",
    "**/.ssh/**",
    "**/.aws/**",
    "**/.netrc",
    "**/.pgpass",
];

impl Default for PublishPolicy {
    fn default() -> Self {
        Self {
            max_total_bytes: 10 << 30,
            max_files: 100_000,
            deny: DEFAULT_DENY.iter().map(|s| (*s).to_string()).collect(),
            concurrency: 8,
        }
    }
}

impl PublishPolicy {
    fn deny_set(&self) -> Result<GlobSet> {
        let mut b = GlobSetBuilder::new();
        for g in &self.deny {
            let glob = Glob::new(g)
                .map_err(|e| Error::invalid("publish.deny", format!("{g:?} is not a glob: {e}")))?;
            b.add(glob);
        }
        b.build()
            .map_err(|e| Error::invalid("publish.deny", e.to_string()))
    }
}

/// A file that will be published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedFile {
    /// Path relative to the output directory, `/`-separated.
    pub rel: String,
    /// The file to read (the real path, for links that stay inside).
    pub source: PathBuf,
    /// Size at planning time.
    pub size: u64,
}

/// What a publish will do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishPlan {
    /// Files to upload, sorted by path.
    pub files: Vec<PlannedFile>,
    /// Entries left out, with the reason.
    pub skipped: Vec<SkippedFile>,
}

impl PublishPlan {
    /// Bytes to upload.
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// Resolves the output directory and lists what would be published.
///
/// The directory is canonicalized here, just before publishing (it may itself be a link), and
/// must lie inside the canonical code root. Only regular files whose real path is inside it are
/// planned; links leaving it, links to directories, FIFOs, sockets and devices are skipped and
/// reported, never opened; names that cannot be object keys are reported, never rewritten.
///
/// # Errors
///
/// [`Error::OutputDir`] when the directory is missing, not a directory or outside the code;
/// [`Error::Publish`] when the policy's size or count limit is exceeded.
pub fn plan(
    code_root: &Path,
    output_dir: &str,
    data_prefix: &str,
    policy: &PublishPolicy,
) -> Result<PublishPlan> {
    let out_err = |reason: String| Error::OutputDir {
        path: output_dir.into(),
        reason,
    };
    let root = fs::canonicalize(code_root).map_err(|e| Error::io(code_root, e))?;
    let raw = code_root.join(output_dir);
    let out = match fs::canonicalize(&raw) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(out_err(format!(
                "the command did not create it; make the command write its results to {output_dir}/ (relative to the code root)"
            )));
        }
        Err(e) => return Err(out_err(e.to_string())),
    };
    if !out.starts_with(&root) {
        return Err(out_err(
            "it is a link that leads outside the code directory; nothing is published".into(),
        ));
    }
    if !out.is_dir() {
        return Err(out_err("it is not a directory".into()));
    }
    let deny = policy.deny_set()?;
    let mut plan = PublishPlan::default();
    let skip = |plan: &mut PublishPlan, rel: &Path, reason: &str| {
        plan.skipped.push(SkippedFile {
            path: rel.to_string_lossy().into_owned(),
            reason: reason.into(),
        });
    };
    for entry in walkdir::WalkDir::new(&out)
        .follow_links(false)
        .sort_by_file_name()
        .min_depth(1)
    {
        let entry = entry.map_err(|e| {
            Error::publish_with(format!("cannot read the output directory: {e}"), e)
        })?;
        let rel = entry
            .path()
            .strip_prefix(&out)
            .unwrap_or(entry.path())
            .to_path_buf();
        let ft = entry.file_type();
        if ft.is_dir() {
            continue;
        }
        let Some(rel_str) = rel.to_str() else {
            skip(
                &mut plan,
                &rel,
                "the name is not UTF-8 and cannot be an object key; rename it",
            );
            continue;
        };
        let key = format!("{data_prefix}{rel_str}");
        if key.len() > MAX_KEY_BYTES || validate_key(&key).is_err() {
            skip(
                &mut plan,
                &rel,
                "the name cannot be an object key (control characters, a backslash, or too long); rename it",
            );
            continue;
        }
        if deny.is_match(&rel) {
            skip(&mut plan, &rel, "matches the publish policy's deny list");
            continue;
        }
        let source = if ft.is_symlink() {
            match fs::canonicalize(entry.path()) {
                Ok(t) if t.starts_with(&out) && t.is_file() => t,
                Ok(t) if t.starts_with(&out) => {
                    skip(
                        &mut plan,
                        &rel,
                        "a symlink to a directory or special file inside the output; not followed",
                    );
                    continue;
                }
                Ok(_) => {
                    skip(
                        &mut plan,
                        &rel,
                        "a symlink that leaves the output directory; never followed",
                    );
                    continue;
                }
                Err(_) => {
                    skip(&mut plan, &rel, "a dangling symlink");
                    continue;
                }
            }
        } else if ft.is_file() {
            entry.path().to_path_buf()
        } else {
            let what = if ft.is_fifo() {
                "a FIFO"
            } else if ft.is_socket() {
                "a socket"
            } else {
                "a device"
            };
            skip(
                &mut plan,
                &rel,
                &format!("{what}, not a regular file; never opened"),
            );
            continue;
        };
        let size = fs::symlink_metadata(&source)
            .map_err(|e| Error::io(&source, e))?
            .len();
        plan.files.push(PlannedFile {
            rel: rel_str.to_string(),
            source,
            size,
        });
        if plan.files.len() as u64 > policy.max_files {
            return Err(Error::publish(format!(
                "the output has more than {} files (publish.max_files); write fewer, larger files or raise the limit",
                policy.max_files
            )));
        }
    }
    if plan.total_bytes() > policy.max_total_bytes {
        return Err(Error::publish(format!(
            "the output holds {} bytes, more than publish.max_total_bytes ({}); publish aggregates or raise the limit",
            plan.total_bytes(),
            policy.max_total_bytes
        )));
    }
    Ok(plan)
}

/// Hashes what is read through it; shares the result through a oneshot when dropped at EOF.
struct HashingAsyncReader {
    inner: tokio::fs::File,
    hasher: Option<Sha256>,
    tx: Option<tokio::sync::oneshot::Sender<String>>,
}

impl AsyncRead for HashingAsyncReader {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if let std::task::Poll::Ready(Ok(())) = &r {
            let new = &buf.filled()[before..];
            if new.is_empty() {
                if let (Some(h), Some(tx)) = (self.hasher.take(), self.tx.take()) {
                    let _ = tx.send(hex::encode(h.finalize()));
                }
            } else if let Some(h) = self.hasher.as_mut() {
                h.update(new);
            }
        }
        r
    }
}

fn open_regular(path: &Path) -> Result<fs::File> {
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| Error::publish_with(format!("cannot read {}: {e}", path.display()), e))?;
    let m = f.metadata().map_err(|e| Error::io(path, e))?;
    if !m.is_file() {
        return Err(Error::publish(format!(
            "{} changed into something else than a file",
            path.display()
        )));
    }
    Ok(f)
}

/// SHA-256 of a file, hex.
fn hash_file(path: &Path) -> Result<String> {
    let mut f = open_regular(path)?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)
        .map_err(|e| Error::publish_with(format!("cannot read {}: {e}", path.display()), e))?;
    Ok(hex::encode(h.finalize()))
}

/// The files of `plan` with their keys and hashes, without uploading (dry runs).
///
/// # Errors
///
/// [`Error::Publish`] when a file cannot be read.
pub async fn describe(plan: &PublishPlan, data_prefix: &str) -> Result<Vec<PublishedFile>> {
    let mut out = Vec::with_capacity(plan.files.len());
    for f in &plan.files {
        let src = f.source.clone();
        let sha256 = tokio::task::spawn_blocking(move || hash_file(&src))
            .await
            .map_err(|e| Error::task("hashing an output file", e))??;
        out.push(PublishedFile {
            path: f.rel.clone(),
            key: format!("{data_prefix}{}", f.rel),
            size: f.size,
            sha256,
        });
    }
    Ok(out)
}

/// Files uploaded between two looks at the [`Fence`].
pub const FENCE_BATCH: usize = 256;

/// The fence a publish asks before each batch of files, with the run asking.
#[derive(Debug, Clone, Copy)]
pub struct Fence<'a> {
    /// The fence.
    pub fence: &'a dyn crate::store::PublishFence,
    /// The run's job.
    pub job: &'a crate::job::JobName,
    /// The run.
    pub run: &'a crate::run::RunId,
}

impl Fence<'_> {
    /// Whether the run may still write.
    ///
    /// # Errors
    ///
    /// The fence's refusal.
    pub async fn check(&self) -> Result<()> {
        self.fence.check(self.job, self.run).await
    }
}

/// Uploads every planned file under `data_prefix`, `concurrency` at a time, asking `fence`
/// (when given) before each batch of [`FENCE_BATCH`] files.
///
/// # Errors
///
/// [`Error::Publish`] naming the first file that could not be read or uploaded, or the fence's
/// refusal. Files uploaded before the failure stay; the caller writes no manifest, so readers
/// know the set is incomplete.
pub async fn upload(
    plan: &PublishPlan,
    store: &dyn Store,
    data_prefix: &str,
    concurrency: usize,
    events: Option<&EventSink>,
    fence: Option<Fence<'_>>,
) -> Result<Vec<PublishedFile>> {
    let mut files = Vec::with_capacity(plan.files.len());
    for batch in plan.files.chunks(FENCE_BATCH) {
        if let Some(f) = &fence {
            f.check().await?;
        }
        let uploads: Vec<futures::future::BoxFuture<'_, Result<PublishedFile>>> = batch
            .iter()
            .map(
                |f| -> futures::future::BoxFuture<'_, Result<PublishedFile>> {
                    Box::pin(upload_one(f, store, data_prefix, events))
                },
            )
            .collect();
        let done: Vec<PublishedFile> = futures::stream::iter(uploads)
            .buffer_unordered(concurrency.max(1))
            .try_collect()
            .await?;
        files.extend(done);
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

async fn upload_one(
    f: &PlannedFile,
    store: &dyn Store,
    data_prefix: &str,
    events: Option<&EventSink>,
) -> Result<PublishedFile> {
    {
        {
            let key = format!("{data_prefix}{}", f.rel);
            let file = open_regular(&f.source)?;
            let (tx, rx) = tokio::sync::oneshot::channel();
            let reader = HashingAsyncReader {
                inner: tokio::fs::File::from_std(file),
                hasher: Some(Sha256::new()),
                tx: Some(tx),
            };
            let size = store
                .put_stream(
                    &key,
                    Box::new(reader),
                    PutOptions::default().with_content_type(content_type_for(&f.rel)),
                )
                .await
                .map_err(|e| Error::publish_with(format!("uploading {}: {e}", f.rel), e))?;
            let sha256 = rx.await.map_err(|_| {
                Error::publish(format!(
                    "uploading {}: the store did not read the whole file",
                    f.rel
                ))
            })?;
            if let Some(ev) = events {
                ev.emit(RunEvent::Published {
                    path: f.rel.clone(),
                    size,
                });
            }
            Ok::<_, Error>(PublishedFile {
                path: f.rel.clone(),
                key,
                size,
                sha256,
            })
        }
    }
}

#[cfg(test)]
#[path = "publish_tests.rs"]
mod tests;

/// The media type a published file is served with, guessed from its name: `data.csv.gz` is
/// `application/gzip`, `summary.json` is `application/json`; `application/octet-stream` when the
/// name says nothing.
pub fn content_type_for(name: &str) -> String {
    mime_guess::from_path(name)
        .first_or_octet_stream()
        .essence_str()
        .to_string()
}
