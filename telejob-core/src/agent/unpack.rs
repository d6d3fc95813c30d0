//! Unpacking a code archive that must be treated as hostile.
//!
//! # Invariant
//!
//! Nothing outside the destination directory is created, modified or chmod-ed, whatever the
//! archive holds. To that end:
//!
//! * entry paths are relative, with no `..` (absolute paths and `..` fail the unpack);
//! * no entry is ever written *through* a symlink: a path whose parent is a symlink fails, and an
//!   existing symlink at an entry's own path is removed (never opened) before the entry is created;
//! * symlinks must be relative and resolve inside the destination, checked when created and again,
//!   against the final tree, once every entry is in place;
//! * hard links must point to a regular file already unpacked;
//! * device nodes, FIFOs and unknown entry types fail the unpack;
//! * modes keep only the permission bits (no setuid, setgid or sticky bit), and the owner can
//!   always read and write (so the workspace can always be removed); ownership is not restored;
//! * caps on total bytes, entry count, path length and depth and extension-header size stop bombs
//!   with flat memory.
//!
//! # Speed
//!
//! A compressed archive is decompressed on a second thread, a few chunks ahead of the thread that
//! writes the files (as GNU tar's separate `gzip`/`zstd` process does). Per file, the writer makes
//! three system calls: `openat(O_CREAT | O_EXCL | O_NOFOLLOW)` with the final mode, `write` and
//! `close`. Parents it has made are not looked at again (a directory is never replaced by a
//! later entry, so they stay real directories); the slot is only examined when the exclusive
//! create finds something there; and `fchmod` is only needed when the umask would strip a bit.
//!
//! A violation fails with [`Error::UnsafeArchive`] naming the entry and the rule; the caller
//! removes the (fresh) destination.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::mpsc;

use tar::EntryType;

use crate::agent::archive::{ArchiveFormat, open_tar, read_up_to};
use crate::error::{Error, Result};

/// Caps that bound what one archive may unpack to. The defaults suit analysis code with sample
/// data; operators can raise them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackLimits {
    /// Total bytes of file content (default 8 GiB).
    pub max_total_bytes: u64,
    /// Number of entries (default 1,000,000).
    pub max_entries: u64,
    /// Bytes in one entry path or link target (default 4096).
    pub max_path_bytes: usize,
    /// Directory depth of one entry (default 128).
    pub max_depth: usize,
    /// Bytes of extension headers (GNU long names, PAX records) before one entry (default 1 MiB).
    pub max_header_bytes: u64,
    /// Bytes of all directory paths together (default 64 MiB): the unpacker remembers every
    /// directory to set its mode at the end, so this bounds its memory.
    pub max_dir_path_bytes: u64,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        Self {
            max_total_bytes: 8 << 30,
            max_entries: 1_000_000,
            max_path_bytes: 4096,
            max_depth: 128,
            max_header_bytes: 1 << 20,
            max_dir_path_bytes: 64 << 20,
        }
    }
}

/// What an unpack produced.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UnpackSummary {
    /// The compression, if any.
    pub format: Option<ArchiveFormat>,
    /// Entries read.
    pub entries: u64,
    /// Regular files written.
    pub files: u64,
    /// Bytes of file content written.
    pub bytes: u64,
}

/// Counts the bytes the tar parser reads between two entries, so that extension headers cannot
/// grow without bound. `since_mark` is `None` while an entry's content is read (that is counted
/// against `max_total_bytes` instead).
struct GuardedReader<R> {
    inner: R,
    since_mark: Rc<Cell<Option<u64>>>,
    limit: u64,
}

impl<R: Read> Read for GuardedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let Some(before) = self.since_mark.get() else {
            return Ok(n);
        };
        let total = before + n as u64;
        self.since_mark.set(Some(total));
        if total > self.limit {
            return Err(io::Error::new(io::ErrorKind::InvalidData, HeaderLimit));
        }
        Ok(n)
    }
}

/// The reader's refusal to read more extension headers, recognised by type wherever the tar
/// parser hands it back.
#[derive(Debug, thiserror::Error)]
#[error("extension headers (long names or PAX records) exceed the header size limit")]
struct HeaderLimit;

/// Whether `e`, or any error it wraps, is a [`HeaderLimit`].
fn is_header_limit(e: &io::Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> =
        e.get_ref().map(|x| x as &(dyn std::error::Error + 'static));
    while let Some(err) = cur {
        if err.is::<HeaderLimit>() {
            return true;
        }
        cur = match err.downcast_ref::<io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|x| x as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    false
}

/// Bytes of decompressed data the reading thread hands over at a time.
const CHUNK: usize = 256 * 1024;
/// Chunks queued between the threads: memory stays under ~2 MiB whatever the archive.
const CHUNKS_QUEUED: usize = 4;
/// Bytes written to a file per `write` call at most.
const WRITE_BUF: usize = 256 * 1024;

/// The decompressed stream, read ahead by a thread of its own in chunks of [`CHUNK`] bytes.
struct ReadAhead {
    full: mpsc::Receiver<io::Result<Vec<u8>>>,
    /// Consumed chunks go back to the reading thread, so steady state allocates nothing.
    empty: mpsc::SyncSender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
}

impl ReadAhead {
    /// Starts reading `src` on a thread of `scope`. The thread stops at the end of the input, at
    /// its first error (handed on to the reader) or as soon as the `ReadAhead` is dropped.
    fn start<'scope, R: Read + Send + 'scope>(
        scope: &'scope std::thread::Scope<'scope, '_>,
        mut src: R,
    ) -> io::Result<Self> {
        let (full_tx, full) = mpsc::sync_channel::<io::Result<Vec<u8>>>(CHUNKS_QUEUED);
        let (empty, empty_rx) = mpsc::sync_channel::<Vec<u8>>(CHUNKS_QUEUED + 2);
        std::thread::Builder::new()
            .name("telejob-unpack-read".into())
            .spawn_scoped(scope, move || {
                loop {
                    let mut buf = empty_rx.try_recv().unwrap_or_default();
                    buf.resize(CHUNK, 0);
                    let n = match read_up_to(&mut src, &mut buf) {
                        Ok(n) => n,
                        Err(e) => {
                            let _ = full_tx.send(Err(e));
                            return;
                        }
                    };
                    if n == 0 {
                        return;
                    }
                    buf.truncate(n);
                    if full_tx.send(Ok(buf)).is_err() || n < CHUNK {
                        return; // the reader is gone, or this was the end of the input
                    }
                }
            })?;
        Ok(Self {
            full,
            empty,
            cur: Vec::new(),
            pos: 0,
        })
    }
}

impl Read for ReadAhead {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.full.recv() {
                Ok(Ok(buf)) => {
                    let used = std::mem::replace(&mut self.cur, buf);
                    self.pos = 0;
                    let _ = self.empty.try_send(used);
                }
                Ok(Err(e)) => return Err(e),
                Err(mpsc::RecvError) => return Ok(0),
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// The process's umask, from `/proc/self/status` (reading it with `umask(2)` would change it for
/// every thread for a moment). `None` when unknown.
fn current_umask() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
    u32::from_str_radix(line.trim(), 8).ok()
}

/// Unpacks the (possibly compressed) tar archive read from `input` into `dest`, which must be an
/// existing, empty directory. Compressed input is decompressed on a second thread.
///
/// # Errors
///
/// [`Error::UnsupportedArchive`] for input that is not a tar archive or is corrupt,
/// [`Error::UnsafeArchive`] for an entry that breaks a rule or a limit, [`Error::Io`] for local
/// failures. On error, `dest` may hold part of the archive; remove it.
pub fn unpack(
    input: impl Read + Send,
    dest: &Path,
    limits: &UnpackLimits,
) -> Result<UnpackSummary> {
    let (format, tar_stream) = open_tar(input)?;
    if format == ArchiveFormat::Tar {
        return unpack_tar(tar_stream, format, dest, limits);
    }
    std::thread::scope(|scope| {
        let ahead = ReadAhead::start(scope, tar_stream).map_err(|e| Error::io(dest, e))?;
        // `ahead` is dropped when this returns, which stops the reading thread before the scope
        // waits for it.
        unpack_tar(ahead, format, dest, limits)
    })
}

fn unpack_tar(
    tar_stream: impl Read,
    format: ArchiveFormat,
    dest: &Path,
    limits: &UnpackLimits,
) -> Result<UnpackSummary> {
    let since_mark = Rc::new(Cell::new(Some(0)));
    // Entry content is read by us (and counted against max_total_bytes); what the parser reads
    // in between is headers, padding and extension records.
    let guarded = GuardedReader {
        inner: tar_stream,
        since_mark: since_mark.clone(),
        limit: limits.max_header_bytes.saturating_add(64 * 1024),
    };
    let mut archive = tar::Archive::new(guarded);
    let mut u = Unpacker {
        root: dest.to_path_buf(),
        limits,
        summary: UnpackSummary {
            format: Some(format),
            ..UnpackSummary::default()
        },
        dir_modes: BTreeMap::new(),
        dir_path_bytes: 0,
        symlinks: Vec::new(),
        umask: current_umask(),
        buf: Vec::new(),
    };
    let entries = archive.entries().map_err(corrupt)?;
    for entry in entries {
        let mut entry = entry.map_err(corrupt_or_limit)?;
        since_mark.set(None); // the entry's content follows
        u.entry(&mut entry)?;
        // Drain whatever the entry holds that we did not write (links, directories with data).
        let drained = io::copy(&mut entry, &mut io::sink()).map_err(corrupt)?;
        u.add_bytes(&entry_name(&entry), drained)?;
        since_mark.set(Some(0)); // headers and padding until the next entry
    }
    if u.summary.entries == 0 {
        return Err(Error::UnsupportedArchive(
            "the archive holds no entries; package the code directory".into(),
        ));
    }
    u.finish()?;
    Ok(u.summary)
}

fn corrupt(e: io::Error) -> Error {
    Error::UnsupportedArchive(format!("corrupt archive: {e}"))
}

fn corrupt_or_limit(e: io::Error) -> Error {
    if is_header_limit(&e) {
        Error::unsafe_entry("(extension header)", HeaderLimit.to_string())
    } else {
        corrupt(e)
    }
}

fn entry_name<R: Read>(e: &tar::Entry<'_, R>) -> String {
    String::from_utf8_lossy(&e.path_bytes()).into_owned()
}

struct Unpacker<'a> {
    root: PathBuf,
    limits: &'a UnpackLimits,
    summary: UnpackSummary,
    /// Every directory this unpack made or set by an entry, with the mode it gets once every
    /// entry is written. Nothing replaces a directory later (see `clear_slot` and `make_dir`), so
    /// a path here stays a real directory and needs no second look as a parent.
    dir_modes: BTreeMap<PathBuf, u32>,
    /// Bytes of the paths in `dir_modes`, capped by `max_dir_path_bytes`.
    dir_path_bytes: u64,
    /// Symlinks created (paths relative to root), re-checked against the final tree.
    symlinks: Vec<(PathBuf, String)>,
    /// The umask files are created under, when known.
    umask: Option<u32>,
    /// The copy buffer for file contents.
    buf: Vec<u8>,
}

/// The target a link entry names (empty when it names none).
fn link_target<R: Read>(entry: &tar::Entry<'_, R>) -> Vec<u8> {
    entry
        .link_name_bytes()
        .map(|b| b.into_owned())
        .unwrap_or_default()
}

impl Unpacker<'_> {
    fn add_bytes(&mut self, name: &str, n: u64) -> Result<()> {
        self.summary.bytes += n;
        let max = self.limits.max_total_bytes;
        if self.summary.bytes > max {
            return Err(Error::unsafe_entry(
                name,
                format!("the archive unpacks to more than {max} bytes (max_total_bytes)"),
            ));
        }
        Ok(())
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let name = entry_name(entry);
        self.summary.entries += 1;
        let max = self.limits.max_entries;
        if self.summary.entries > max {
            return Err(Error::unsafe_entry(
                name,
                format!("the archive has more than {max} entries (max_entries)"),
            ));
        }
        let kind = entry.header().entry_type();
        if kind == EntryType::XGlobalHeader {
            return Ok(()); // e.g. the commit id `git archive` records; nothing to unpack
        }
        let rel = self.relative_path(&name, &entry.path_bytes())?;
        let declared = entry.header().entry_size().unwrap_or(0);
        if declared
            > self
                .limits
                .max_total_bytes
                .saturating_sub(self.summary.bytes)
        {
            return Err(Error::unsafe_entry(
                name,
                format!(
                    "the entry declares {declared} bytes, more than the {} left under max_total_bytes",
                    self.limits
                        .max_total_bytes
                        .saturating_sub(self.summary.bytes)
                ),
            ));
        }
        let mode = entry.header().mode().unwrap_or(0o644) & 0o777;
        if rel.as_os_str().is_empty() {
            // `./` itself: the root exists already.
            return match kind {
                EntryType::Directory => Ok(()),
                _ => Err(Error::unsafe_entry(
                    name,
                    "a non-directory entry names the archive root",
                )),
            };
        }
        match kind {
            EntryType::Directory => self.make_dir(&name, &rel, mode),
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.make_file(&name, &rel, mode, entry)
            }
            EntryType::Symlink => self.make_symlink(&name, &rel, &link_target(entry)),
            EntryType::Link => self.make_hardlink(&name, &rel, &link_target(entry)),
            EntryType::Char | EntryType::Block => Err(Error::unsafe_entry(
                name,
                "device nodes are not allowed in code archives",
            )),
            EntryType::Fifo => Err(Error::unsafe_entry(
                name,
                "FIFOs are not allowed in code archives",
            )),
            other => Err(Error::unsafe_entry(
                name,
                format!(
                    "entry type {:?} is not supported; use files, directories and links",
                    other.as_byte() as char
                ),
            )),
        }
    }

    /// The entry path as a clean relative path: `.` and empty segments dropped, `..` and absolute
    /// paths rejected, length and depth capped.
    fn relative_path(&self, name: &str, raw: &[u8]) -> Result<PathBuf> {
        if raw.len() > self.limits.max_path_bytes {
            return Err(Error::unsafe_entry(
                name.chars().take(200).collect::<String>(),
                format!(
                    "the path is longer than {} bytes (max_path_bytes)",
                    self.limits.max_path_bytes
                ),
            ));
        }
        if raw.first() == Some(&b'/') {
            return Err(Error::unsafe_entry(
                name,
                "absolute paths are not allowed; archive paths relative to the code root",
            ));
        }
        // A PAX header can carry any byte; no file name can hold a NUL.
        if raw.contains(&0) {
            return Err(Error::unsafe_entry(
                name.replace('\0', "\\0"),
                "the name holds a NUL byte, which no file name can",
            ));
        }
        let mut out = PathBuf::new();
        let mut depth = 0;
        for seg in raw.split(|b| *b == b'/') {
            match seg {
                b"" | b"." => {}
                b".." => {
                    return Err(Error::unsafe_entry(
                        name,
                        "'..' in a path would leave the code directory",
                    ));
                }
                s => {
                    depth += 1;
                    out.push(OsStr::from_bytes(s));
                }
            }
        }
        if depth > self.limits.max_depth {
            return Err(Error::unsafe_entry(
                name,
                format!(
                    "the path is deeper than {} directories (max_depth)",
                    self.limits.max_depth
                ),
            ));
        }
        Ok(out)
    }

    /// Creates the parents of `rel` as real directories, refusing to pass through a symlink or a
    /// file.
    fn make_parents(&mut self, name: &str, rel: &Path) -> Result<()> {
        let Some(parent) = rel.parent() else {
            return Ok(());
        };
        if parent.as_os_str().is_empty() || self.dir_modes.contains_key(&self.root.join(parent)) {
            return Ok(());
        }
        let mut cur = self.root.clone();
        for c in parent.components() {
            cur.push(c);
            if self.dir_modes.contains_key(&cur) {
                continue;
            }
            match fs::symlink_metadata(&cur) {
                Ok(m) if m.file_type().is_dir() => {} // not made here: checked each time
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(Error::unsafe_entry(
                        name,
                        format!(
                            "the path passes through the symlink {:?}; writing through links is not allowed",
                            cur.strip_prefix(&self.root).unwrap_or(&cur)
                        ),
                    ));
                }
                Ok(_) => {
                    return Err(Error::unsafe_entry(
                        name,
                        format!(
                            "a parent, {:?}, is a file",
                            cur.strip_prefix(&self.root).unwrap_or(&cur)
                        ),
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&cur).map_err(|e| Error::io(&cur, e))?;
                    self.set_dir_mode(name, &cur, None)?;
                }
                Err(e) => return Err(Error::io(&cur, e)),
            }
        }
        Ok(())
    }

    /// Records the mode `path` gets at the end: `mode`, or 0o755 for a parent made implicitly
    /// (which a later directory entry may set).
    fn set_dir_mode(&mut self, name: &str, path: &Path, mode: Option<u32>) -> Result<()> {
        if let Some(m) = self.dir_modes.get_mut(path) {
            if let Some(mode) = mode {
                *m = mode;
            }
            return Ok(());
        }
        self.dir_path_bytes += path.as_os_str().len() as u64;
        if self.dir_path_bytes > self.limits.max_dir_path_bytes {
            return Err(Error::unsafe_entry(
                name,
                format!(
                    "the archive's directory paths take more than {} bytes (max_dir_path_bytes)",
                    self.limits.max_dir_path_bytes
                ),
            ));
        }
        self.dir_modes
            .insert(path.to_path_buf(), mode.unwrap_or(0o755));
        Ok(())
    }

    /// The path of `rel`, with its parents made and the way cleared for a link there (see
    /// [`Self::make_parents`] and [`Self::clear_slot`]).
    fn free_slot(&mut self, name: &str, rel: &Path) -> Result<PathBuf> {
        self.make_parents(name, rel)?;
        let path = self.root.join(rel);
        self.clear_slot(name, &path)?;
        Ok(path)
    }

    /// Clears the way for a non-directory at `path`: an existing file or symlink is unlinked
    /// (never followed); a directory there is an error.
    fn clear_slot(&self, name: &str, path: &Path) -> Result<()> {
        match fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_dir() => Err(Error::unsafe_entry(
                name,
                "the entry would replace a directory",
            )),
            Ok(_) => fs::remove_file(path).map_err(|e| Error::io(path, e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    fn make_dir(&mut self, name: &str, rel: &Path, mode: u32) -> Result<()> {
        self.make_parents(name, rel)?;
        let path = self.root.join(rel);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(Error::unsafe_entry(
                    name,
                    "a directory entry over a symlink of the same archive",
                ));
            }
            Ok(_) => {
                fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
                fs::create_dir(&path).map_err(|e| Error::io(&path, e))?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&path).map_err(|e| Error::io(&path, e))?;
            }
            Err(e) => return Err(Error::io(&path, e)),
        }
        self.set_dir_mode(name, &path, Some(mode))?;
        Ok(())
    }

    fn make_file<R: Read>(
        &mut self,
        name: &str,
        rel: &Path,
        mode: u32,
        data: &mut R,
    ) -> Result<()> {
        self.make_parents(name, rel)?;
        let path = self.root.join(rel);
        // Only permission bits; the owner can always read and write.
        let perm = (mode & 0o777) | 0o600;
        // O_CREAT | O_EXCL never opens what is at the path, a symlink included (O_NOFOLLOW on
        // top, for clarity): whatever is there is examined and cleared only then.
        let create = || {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(perm)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
        };
        let mut file = match create() {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                self.clear_slot(name, &path)?;
                create().map_err(|e| Error::io(&path, e))?
            }
            Err(e) => return Err(Error::io(&path, e)),
        };
        let budget = self
            .limits
            .max_total_bytes
            .saturating_sub(self.summary.bytes)
            .saturating_add(1);
        let written = copy_with(&mut self.buf, &mut data.take(budget), &mut file, &path)?;
        self.add_bytes(name, written)?;
        // The umask may have stripped bits the archive asks for.
        if self.umask.is_none_or(|m| perm & m != 0) {
            file.set_permissions(fs::Permissions::from_mode(perm))
                .map_err(|e| Error::io(&path, e))?;
        }
        self.summary.files += 1;
        Ok(())
    }

    fn make_symlink(&mut self, name: &str, rel: &Path, target: &[u8]) -> Result<()> {
        if target.is_empty() {
            return Err(Error::unsafe_entry(name, "a symlink with an empty target"));
        }
        if target.len() > self.limits.max_path_bytes {
            return Err(Error::unsafe_entry(
                name,
                "the symlink target is longer than max_path_bytes",
            ));
        }
        let shown = String::from_utf8_lossy(target).into_owned();
        if target.first() == Some(&b'/') {
            return Err(Error::unsafe_entry(
                name,
                format!(
                    "the symlink points to the absolute path {shown:?}; links must stay inside the code"
                ),
            ));
        }
        // Lexically, from the link's directory.
        let mut depth: i64 = rel.parent().map_or(0, |p| p.components().count() as i64);
        for seg in target.split(|b| *b == b'/') {
            match seg {
                b"" | b"." => {}
                b".." => depth -= 1,
                _ => depth += 1,
            }
            if depth < 0 {
                return Err(Error::unsafe_entry(
                    name,
                    format!("the symlink target {shown:?} leaves the code directory"),
                ));
            }
        }
        let path = self.free_slot(name, rel)?;
        std::os::unix::fs::symlink(OsStr::from_bytes(target), &path)
            .map_err(|e| Error::io(&path, e))?;
        self.symlinks.push((rel.to_path_buf(), name.to_string()));
        // Through the links already in place, too.
        self.check_link_resolution(rel, name)
    }

    fn make_hardlink(&mut self, name: &str, rel: &Path, target: &[u8]) -> Result<()> {
        let shown = String::from_utf8_lossy(target).into_owned();
        let target_rel = self.relative_path(name, target).map_err(|_| {
            Error::unsafe_entry(
                name,
                format!("the hard link target {shown:?} is outside the code"),
            )
        })?;
        if target_rel.as_os_str().is_empty() {
            return Err(Error::unsafe_entry(name, "a hard link to the archive root"));
        }
        // The target's parents must be real directories inside the root, and the target a regular
        // file unpacked from this archive.
        let mut cur = self.root.clone();
        for c in target_rel.components() {
            cur.push(c);
            let m = fs::symlink_metadata(&cur).map_err(|_| {
                Error::unsafe_entry(
                    name,
                    format!("the hard link target {shown:?} is not an earlier file of the archive"),
                )
            })?;
            if m.file_type().is_symlink() {
                return Err(Error::unsafe_entry(
                    name,
                    format!("the hard link target {shown:?} goes through a symlink"),
                ));
            }
        }
        if !fs::symlink_metadata(&cur).is_ok_and(|m| m.file_type().is_file()) {
            return Err(Error::unsafe_entry(
                name,
                format!("the hard link target {shown:?} is not a regular file"),
            ));
        }
        let path = self.free_slot(name, rel)?;
        fs::hard_link(&cur, &path).map_err(|e| Error::io(&path, e))?;
        self.summary.files += 1;
        Ok(())
    }

    /// Resolves the symlink at `rel` through the tree as it stands; errors if it leaves the root.
    fn check_link_resolution(&self, rel: &Path, name: &str) -> Result<()> {
        match resolve_within(&self.root, rel) {
            Ok(()) => Ok(()),
            Err(why) => Err(Error::unsafe_entry(name, why)),
        }
    }

    fn finish(&mut self) -> Result<()> {
        // Later entries can change what earlier links resolve to: check them all again.
        for (rel, name) in &self.symlinks {
            self.check_link_resolution(rel, name)?;
        }
        // Deepest first, so a read-only parent does not block its children.
        for (path, mode) in self.dir_modes.iter().rev() {
            if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_dir()) {
                fs::set_permissions(path, fs::Permissions::from_mode((mode & 0o777) | 0o700))
                    .map_err(|e| Error::io(path, e))?;
            }
        }
        Ok(())
    }
}

/// Copies `src` to `file` through `buf` (grown to [`WRITE_BUF`] bytes once), so that a large
/// file takes few `write` calls and a small one a single call. Read errors mean a corrupt
/// archive; write errors are local I/O errors.
fn copy_with(
    buf: &mut Vec<u8>,
    src: &mut impl Read,
    file: &mut fs::File,
    path: &Path,
) -> Result<u64> {
    use std::io::Write;
    buf.resize(WRITE_BUF, 0);
    let mut total = 0u64;
    loop {
        let n = read_up_to(src, buf).map_err(corrupt)?;
        if n == 0 {
            return Ok(total);
        }
        file.write_all(&buf[..n]).map_err(|e| Error::io(path, e))?;
        total += n as u64;
        if n < buf.len() {
            return Ok(total);
        }
    }
}

/// Follows `rel` (relative to `root`) through the real tree, symlink by symlink, without ever
/// leaving `root`. Missing components are taken lexically. Errors describe an escape.
pub(crate) fn resolve_within(root: &Path, rel: &Path) -> std::result::Result<(), String> {
    let mut stack: Vec<std::ffi::OsString> = Vec::new();
    let mut todo: Vec<std::ffi::OsString> = rel.iter().rev().map(|c| c.to_os_string()).collect();
    let mut hops = 0;
    while let Some(seg) = todo.pop() {
        match seg.as_bytes() {
            b"" | b"." => continue,
            b".." => {
                if stack.pop().is_none() {
                    return Err("a symlink resolves outside the code directory".into());
                }
                continue;
            }
            _ => {}
        }
        let here: PathBuf = root.join(stack.iter().collect::<PathBuf>()).join(&seg);
        match fs::symlink_metadata(&here) {
            Ok(m) if m.file_type().is_symlink() => {
                hops += 1;
                if hops > 40 {
                    return Err("too many levels of symlinks".into());
                }
                let target = fs::read_link(&here).map_err(|e| e.to_string())?;
                if target.is_absolute() {
                    return Err(format!(
                        "a symlink points to the absolute path {}",
                        target.display()
                    ));
                }
                for c in target.iter().rev() {
                    todo.push(c.to_os_string());
                }
            }
            _ => stack.push(seg),
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "unpack_tests.rs"]
mod tests;
