//! A cgroup v2 per run: every process the job starts lands in it, whatever it does to its
//! process group or session, and `cgroup.kill` ends them all at once.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Where the cgroup2 hierarchy is mounted: the first `cgroup2` entry of `/proc/self/mounts`.
/// On hosts with the hybrid layout that is `/sys/fs/cgroup/unified`, not `/sys/fs/cgroup`.
pub fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_dev, dir, kind) = (f.next()?, f.next()?, f.next()?);
        (kind == "cgroup2").then(|| PathBuf::from(unescape_mount_path(dir)))
    })
}

/// `/proc/self/mounts` escapes spaces and a few other bytes as octal `\040`.
fn unescape_mount_path(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// This process's cgroup v2 path (the `0::` line of `/proc/self/cgroup`).
fn own_cgroup() -> Option<String> {
    let s = fs::read_to_string("/proc/self/cgroup").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_string))
}

/// A cgroup made for one run.
#[derive(Debug)]
pub struct RunCgroup {
    dir: PathBuf,
    /// `cgroup.procs`, opened before the fork so the child can join with one `write`.
    procs: OwnedFd,
}

/// The directory `telejob-<name>` would have under this process's cgroup.
fn dir_for(name: &str) -> io::Result<PathBuf> {
    let mount = cgroup2_mount()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no cgroup2 mount"))?;
    let own = own_cgroup()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no cgroup v2 membership"))?;
    Ok(mount
        .join(own.trim_start_matches('/'))
        .join(format!("telejob-{name}")))
}

/// Kills every process left in the cgroup of run `name` (made by an earlier telejob process of
/// this host, e.g. before a crash) and removes it. Returns whether such a cgroup existed.
pub fn kill_existing(name: &str) -> bool {
    let Ok(dir) = dir_for(name) else { return false };
    if !dir.is_dir() {
        return false;
    }
    let _ = fs::write(dir.join("cgroup.kill"), b"1");
    for _ in 0..200 {
        if fs::remove_dir(&dir).is_ok() {
            return true;
        }
        for pid in fs::read_to_string(dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse::<i32>().ok())
        {
            // SAFETY: kill(2) with a pid read from the run's cgroup; no memory is involved.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    true
}

impl RunCgroup {
    /// Creates `telejob-<name>` under this process's own cgroup.
    ///
    /// # Errors
    ///
    /// Any I/O error: no cgroup2 mount, no permission to create or join it.
    pub fn create(name: &str) -> io::Result<Self> {
        let mount = cgroup2_mount()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no cgroup2 mount"))?;
        let own = own_cgroup()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no cgroup v2 membership"))?;
        let parent = mount.join(own.trim_start_matches('/'));
        let dir = parent.join(format!("telejob-{name}"));
        fs::create_dir(&dir)?;
        let procs = match fs::OpenOptions::new()
            .write(true)
            .open(dir.join("cgroup.procs"))
        {
            Ok(f) => OwnedFd::from(f),
            Err(e) => {
                let _ = fs::remove_dir(&dir);
                return Err(e);
            }
        };
        Ok(Self { dir, procs })
    }

    /// The cgroup's directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The raw fd of `cgroup.procs`, for the child to write `0` to between fork and exec.
    pub fn procs_fd(&self) -> i32 {
        self.procs.as_raw_fd()
    }

    /// The pids in the cgroup.
    pub fn pids(&self) -> Vec<i32> {
        fs::read_to_string(self.dir.join("cgroup.procs"))
            .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// Whether no process is left.
    pub fn is_empty(&self) -> bool {
        match fs::read_to_string(self.dir.join("cgroup.events")) {
            Ok(ev) => ev.lines().any(|l| l.trim() == "populated 0"),
            Err(_) => self.pids().is_empty(),
        }
    }

    /// Sends `sig` to every process. SIGKILL uses `cgroup.kill` where the kernel has it (5.14+),
    /// which also catches processes forked while it runs; otherwise the group is frozen, every
    /// process signalled, and thawed.
    pub fn signal(&self, sig: i32) {
        if sig == libc::SIGKILL && fs::write(self.dir.join("cgroup.kill"), b"1").is_ok() {
            return;
        }
        let frozen = fs::write(self.dir.join("cgroup.freeze"), b"1").is_ok();
        for pid in self.pids() {
            // SAFETY: kill(2) with a pid read from the cgroup; no memory is involved.
            unsafe { libc::kill(pid, sig) };
        }
        if frozen {
            let _ = fs::write(self.dir.join("cgroup.freeze"), b"0");
        }
    }
}

impl Drop for RunCgroup {
    fn drop(&mut self) {
        if !self.is_empty() {
            self.signal(libc::SIGKILL);
        }
        // rmdir fails while a dying process is still listed; retry briefly.
        for _ in 0..200 {
            match fs::remove_dir(&self.dir) {
                Ok(()) => return,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return,
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
            }
        }
        tracing::warn!(cgroup = %self.dir.display(), "could not remove the run's cgroup");
    }
}

/// Joins the cgroup whose `cgroup.procs` is open as `fd`. Called in the child between fork and
/// exec: async-signal-safe (one `write`).
pub(crate) fn join_in_child(fd: i32) -> io::Result<()> {
    // SAFETY: writes two bytes from a static buffer to an fd the parent opened and keeps open.
    let n = unsafe { libc::write(fd, b"0\n".as_ptr().cast(), 2) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_paths_are_unescaped() {
        assert_eq!(
            unescape_mount_path("/sys/fs/cgroup/unified"),
            "/sys/fs/cgroup/unified"
        );
        assert_eq!(unescape_mount_path("/a\\040b"), "/a b");
    }
}
