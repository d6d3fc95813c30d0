//! A run's workspace on the host: a directory of its own under the scratch directory, locked
//! while a telejob process uses it (so that a sweep after a crash removes only abandoned ones),
//! removed with everything the job made unwritable in it, its UID lease released last.

use std::path::{Path, PathBuf};

use crate::agent::sandbox::UidLease;
use crate::agent::sandbox::disk::RunDisk;
use crate::agent::sandbox::exec::{Isolation, Machine, PRIVATE_DIRS};
use crate::agent::sandbox::userns::BlockLease;
use crate::error::{Error, Result};
use crate::limits::ResourceLimits;

/// A run's workspace as the pipeline lays it out, and how the run is confined.
#[derive(Debug)]
pub(crate) struct Workspace {
    /// The run directory (telejob's).
    pub(crate) dir: PathBuf,
    /// `work/`: all the job may write.
    pub(crate) work: PathBuf,
    /// `work/code`: where the code is unpacked.
    pub(crate) code: PathBuf,
    /// The code root (`code`, or its only directory); known after unpacking.
    pub(crate) root: PathBuf,
    /// The job's `HOME`.
    pub(crate) home: PathBuf,
    /// The job's `TMPDIR` outside namespaces.
    pub(crate) tmp: PathBuf,
    /// The log file (telejob's).
    pub(crate) log: PathBuf,
    pub(crate) isolation: Option<Isolation>,
    pub(crate) ids: Option<(u32, u32)>,
    pub(crate) dedicated_ids: bool,
    pub(crate) user: Option<String>,
    pub(crate) limits: ResourceLimits,
    /// The run's machine, when it is one.
    pub(crate) machine: Option<std::sync::Arc<Machine>>,
    /// The run's disk (a machine's), unmounted when the workspace is dropped.
    pub(crate) disk: Option<RunDisk>,
    /// What the run's log says first: what the machine is.
    pub(crate) preamble: String,
}

impl Workspace {
    /// Makes `work/` (all the job may write: `code`, `home` and the private directories) in
    /// run directory `dir`, confined as nothing yet.
    pub(crate) fn lay_out(dir: &Path) -> Result<Self> {
        let work = dir.join("work");
        let (code, home) = (work.join("code"), work.join("home"));
        for d in [&work, &code, &home]
            .into_iter()
            .cloned()
            .chain(PRIVATE_DIRS.iter().map(|(sub, _)| work.join(sub)))
        {
            std::fs::create_dir(&d).map_err(|e| Error::io(&d, e))?;
        }
        Ok(Self::at(dir, work))
    }

    /// The workspace of run directory `dir` with the work directory `work` (holding `code`,
    /// `home` and `tmp`), confined as nothing yet.
    fn at(dir: &Path, work: PathBuf) -> Self {
        let code = work.join("code");
        Self {
            dir: dir.to_path_buf(),
            root: code.clone(),
            code,
            log: dir.join("run.log"),
            home: work.join("home"),
            tmp: work.join("tmp"),
            work,
            isolation: None,
            ids: None,
            dedicated_ids: false,
            user: None,
            limits: ResourceLimits::default(),
            machine: None,
            disk: None,
            preamble: String::new(),
        }
    }

    /// Lays out a machine's run directory `dir` (blocking): its disk (`limits.disk` bytes, or
    /// a directory without a limit) at `disk/`, owned by the UID block `base`, holding the
    /// overlay's `upper/` and `ovwork/` and the work directory `work/`; the mount points
    /// `lower/` and `root/`. The run directory becomes 0711 so that the machine's init, root of
    /// the run's user namespace only, can pass through it.
    pub(crate) fn lay_out_machine(dir: &Path, disk_bytes: Option<u64>, base: u32) -> Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        let disk = RunDisk::create(dir, disk_bytes, base)
            .map_err(|e| Error::spawn("making the run's disk", e))?;
        let top = disk.path().to_path_buf();
        let upper = top.join("upper");
        for d in [upper.join("run/telejob/work"), top.join("ovwork")] {
            std::fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
        }
        for d in [
            &upper,
            &upper.join("run"),
            &upper.join("run/telejob"),
            &upper.join("run/telejob/work"),
        ] {
            std::os::unix::fs::lchown(d, Some(base), Some(base)).map_err(|e| Error::io(d, e))?;
        }
        for d in ["lower", "root"] {
            let p = dir.join(d);
            std::fs::create_dir(&p).map_err(|e| Error::io(&p, e))?;
        }
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))
            .map_err(|e| Error::io(dir, e))?;
        let work = top.join("work");
        let code = work.join("code");
        let (home, tmp) = (work.join("home"), work.join("tmp"));
        for d in [&work, &code, &home, &tmp] {
            std::fs::create_dir(d).map_err(|e| Error::io(d, e))?;
        }
        Ok(Self {
            ids: Some((base, base)),
            dedicated_ids: true,
            user: Some("root".into()),
            disk: Some(disk),
            ..Self::at(dir, work)
        })
    }
}

/// Creates (or truncates) a file only telejob's user may read: the code archive, the log.
pub(crate) fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

/// The code root: the workspace, or its only entry when that is a directory (archives made with a
/// top-level folder, like `git archive --prefix` or GitHub tarballs).
pub(crate) fn code_root(ws: &Path) -> PathBuf {
    let mut it = std::fs::read_dir(ws).into_iter().flatten().flatten();
    match (it.next(), it.next()) {
        (Some(only), None) if only.file_type().is_ok_and(|t| t.is_dir()) => only.path(),
        _ => ws.to_path_buf(),
    }
}

/// A run's directory under the scratch directory, locked (`flock` on its `.lock`) while a
/// telejob process uses it, so that a sweep after a crash removes only abandoned ones.
pub(crate) struct RunDir {
    dir: tempfile::TempDir,
    lock: std::fs::File,
    pub(crate) lease: Option<UidLease>,
    /// A machine's UID block, released with the directory.
    pub(crate) block: Option<BlockLease>,
}

/// Run directories are named `telejob-run-<random>`.
const RUN_DIR_PREFIX: &str = "telejob-run-";

impl RunDir {
    pub(crate) fn create(scratch: &Path) -> Result<Self> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(scratch)
            .map_err(|e| Error::io(scratch, e))?;
        let dir = tempfile::Builder::new()
            .prefix(RUN_DIR_PREFIX)
            .rand_bytes(20)
            .tempdir_in(scratch)
            .map_err(|e| Error::io(scratch, e))?;
        let path = dir.path().join(".lock");
        let lock = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        if !try_flock(&lock) {
            return Err(Error::io(&path, std::io::Error::last_os_error()));
        }
        Ok(Self {
            dir,
            lock,
            lease: None,
            block: None,
        })
    }

    /// What a crash leaves: the directory, unlocked. Returns its path.
    #[cfg(test)]
    pub(crate) fn abandon(self) -> PathBuf {
        let Self { dir, lock, .. } = self;
        drop(lock);
        dir.keep()
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn sweep(scratch: &Path) -> usize {
        let mut removed = 0;
        for e in std::fs::read_dir(scratch).into_iter().flatten().flatten() {
            let name = e.file_name();
            if !name.to_string_lossy().starts_with(RUN_DIR_PREFIX) {
                continue;
            }
            let path = e.path();
            let abandoned = match std::fs::OpenOptions::new()
                .write(true)
                .open(path.join(".lock"))
            {
                // Held while in use; a lock we get is a lock nobody holds.
                Ok(f) => try_flock(&f),
                // Being created this instant, or left half-made: only old ones go.
                Err(_) => std::fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| {
                        t.elapsed().unwrap_or_default() > std::time::Duration::from_secs(600)
                    }),
            };
            if abandoned {
                // A crashed machine's disk is still mounted in it.
                crate::agent::sandbox::disk::unmount_below(&path);
                remove_tree(&path);
                removed += 1;
            }
        }
        removed
    }
}

fn try_flock(f: &std::fs::File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: flock(2) on an open file; no memory is involved.
    unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

/// Removes `path` and everything below it, even where the job made parts of it unwritable.
fn remove_tree(path: &Path) {
    if std::fs::remove_dir_all(path).is_ok() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    for e in walkdir::WalkDir::new(path)
        .follow_links(false)
        .into_iter()
        .flatten()
    {
        if e.file_type().is_dir() {
            let _ = std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o700));
        }
    }
    if let Err(e) = std::fs::remove_dir_all(path) {
        tracing::warn!(dir = %path.display(), error = %e, "could not remove the run workspace");
    }
}

/// Removes a run directory, even where the job made parts of it unwritable; then releases its
/// UID and its lock.
pub(crate) fn remove_workspace(run: RunDir) {
    let RunDir {
        dir,
        lock,
        lease,
        block,
    } = run;
    let path = dir.path().to_path_buf();
    // Dropped last (in reverse order): the UIDs only once their files are gone, and the lock so
    // a sweep never sees the directory unlocked while it is in use.
    let (_lock, _lease, _block) = (lock, lease, block);
    // Whatever is still mounted in it (a disk whose workspace was not dropped) goes first.
    crate::agent::sandbox::disk::unmount_below(&path);
    remove_tree(&path);
    let _ = dir.keep();
}
