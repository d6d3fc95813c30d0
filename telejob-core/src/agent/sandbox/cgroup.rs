//! A cgroup v2 per run: every process the job starts lands in it, whatever it does to its
//! process group or session, and `cgroup.kill` ends them all at once.

use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::limits::ResourceLimits;

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
pub(crate) fn unescape_mount_path(s: &str) -> String {
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

/// The cgroup v2 directory run cgroups are made in: this process's own cgroup as it was at the
/// first run (it may move itself to a leaf below it to delegate controllers, see
/// [`v2_controllers`]).
pub(crate) fn v2_base() -> Option<PathBuf> {
    static BASE: OnceLock<Option<PathBuf>> = OnceLock::new();
    BASE.get_or_init(|| {
        let mount = cgroup2_mount()?;
        let own = own_cgroup()?;
        Some(mount.join(own.trim_start_matches('/')))
    })
    .clone()
}

/// The controllers (`memory`, `pids`, `cpu`) run cgroups get in v2. Enabled once: where this
/// process sits in a cgroup that offers them but has them off for its children, it moves itself
/// into a leaf (`telejob-server`) — a cgroup with processes cannot delegate controllers — and
/// turns them on. On hybrid hosts (v2 mounted without controllers) this is empty and v1 is used.
pub fn v2_controllers() -> &'static [&'static str] {
    static ENABLED: OnceLock<Vec<&'static str>> = OnceLock::new();
    ENABLED.get_or_init(|| {
        let Some(base) = v2_base() else {
            return Vec::new();
        };
        let read = |f: &str| fs::read_to_string(base.join(f)).unwrap_or_default();
        let offered = read("cgroup.controllers");
        let wanted: Vec<&'static str> = ["memory", "pids", "cpu"]
            .into_iter()
            .filter(|c| offered.split_whitespace().any(|o| o == *c))
            .collect();
        let on = |c: &str| {
            read("cgroup.subtree_control")
                .split_whitespace()
                .any(|o| o == c)
        };
        let enable = |c: &str| fs::write(base.join("cgroup.subtree_control"), format!("+{c}"));
        for c in &wanted {
            if on(c) {
                continue;
            }
            if enable(c).is_err() {
                // "No internal processes": move this process into a leaf, then try again.
                let leaf = base.join("telejob-server");
                let _ = fs::create_dir(&leaf);
                let moved = fs::write(leaf.join("cgroup.procs"), std::process::id().to_string());
                if moved.is_err() || enable(c).is_err() {
                    tracing::debug!(controller = c, "cannot delegate the cgroup v2 controller");
                }
            }
        }
        wanted.into_iter().filter(|c| on(c)).collect()
    })
}

/// Where the v1 hierarchy of `controller` is mounted, and this process's path in it.
fn v1_place(controller: &str) -> Option<PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mounts").ok()?;
    let mount = mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 3 && f[2] == "cgroup" && f[3].split(',').any(|o| o == controller))
            .then(|| PathBuf::from(unescape_mount_path(f[1])))
    })?;
    let own = fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = own.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
        ctrls
            .split(',')
            .any(|c| c == controller)
            .then(|| path.to_string())
    })?;
    Some(mount.join(path.trim_start_matches('/')))
}

/// A cgroup made for one run.
#[derive(Debug)]
pub struct RunCgroup {
    dir: PathBuf,
    /// `cgroup.procs`, opened before the fork so the child can join with one `write`.
    procs: OwnedFd,
}

/// The directory `telejob-<name>` would have in the v2 base.
fn dir_for(name: &str) -> io::Result<PathBuf> {
    let base = v2_base()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no cgroup v2 membership"))?;
    Ok(base.join(format!("telejob-{name}")))
}

/// Kills every process left in the cgroup of run `name` (made by an earlier telejob process of
/// this host, e.g. before a crash) and removes it. Returns whether such a cgroup existed.
pub fn kill_existing(name: &str) -> bool {
    for c in ["memory", "pids", "cpu"] {
        if let Some(p) = v1_place(c) {
            let _ = fs::remove_dir(p.join(format!("telejob-{name}")));
        }
    }
    let Ok(dir) = dir_for(name) else { return false };
    kill_and_remove(&dir)
}

/// Kills every process of the v2 cgroup `dir` and removes it. Returns whether it existed.
pub(crate) fn kill_and_remove(dir: &Path) -> bool {
    if !dir.is_dir() {
        return false;
    }
    let _ = fs::write(dir.join("cgroup.kill"), b"1");
    for _ in 0..200 {
        if fs::remove_dir(dir).is_ok() {
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
        let dir = dir_for(name)?;
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

    /// A copy of the open `cgroup.procs`, for the supervisor to join with.
    ///
    /// # Errors
    ///
    /// When the descriptor cannot be duplicated.
    pub fn procs_fd(&self) -> io::Result<OwnedFd> {
        self.procs.try_clone()
    }

    /// `cgroup.kill` opened for writing, where the kernel has it (5.14+).
    pub fn kill_fd(&self) -> Option<OwnedFd> {
        fs::OpenOptions::new()
            .write(true)
            .open(self.dir.join("cgroup.kill"))
            .ok()
            .map(OwnedFd::from)
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

/// What the limit controllers saw during a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitEvents {
    /// Processes the kernel killed for memory.
    pub oom_kills: u64,
    /// Forks refused at the process limit.
    pub pids_max: u64,
}

/// The run's memory, process and CPU limits, in cgroup v2 where the controllers are delegated,
/// else in cgroup v1 (hybrid hosts mount v2 without controllers and v1 for them).
#[derive(Debug, Default)]
pub struct LimitGroups {
    /// The run's v2 cgroup, when it carries controllers.
    v2: Option<PathBuf>,
    /// `(controller, directory, cgroup.procs)` of the run's v1 groups.
    v1: Vec<(&'static str, PathBuf, OwnedFd)>,
    /// Which of memory, processes and CPU are enforced.
    memory: bool,
    processes: bool,
    cpu: bool,
}

impl LimitGroups {
    /// The controllers this host lets a run have: `(memory, processes, cpu)`.
    pub fn support() -> (bool, bool, bool) {
        let v2 = v2_base().is_some() && cgroup2_mount().is_some();
        let has = |c: &str| (v2 && v2_controllers().contains(&c)) || v1_writable(c);
        (has("memory"), has("pids"), has("cpu"))
    }

    /// Applies `limits` for run `name`: in `run_v2` (the run's v2 cgroup) for controllers v2
    /// carries, in a v1 group `telejob-<name>` for the others.
    ///
    /// # Errors
    ///
    /// When a limit cannot be written.
    pub fn create(name: &str, run_v2: Option<&RunCgroup>, l: &ResourceLimits) -> io::Result<Self> {
        let mut g = Self::default();
        let wanted = [
            ("memory", l.memory.is_some()),
            ("pids", l.processes.is_some()),
            ("cpu", l.cpu.is_some()),
        ];
        for (controller, want) in wanted {
            if !want {
                continue;
            }
            let dir = if let Some(cg) = run_v2.filter(|_| v2_controllers().contains(&controller)) {
                g.v2 = Some(cg.path().to_path_buf());
                cg.path().to_path_buf()
            } else if let Some(parent) = v1_place(controller) {
                let dir = parent.join(format!("telejob-{name}"));
                match fs::create_dir(&dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(e),
                }
                let procs = fs::OpenOptions::new()
                    .write(true)
                    .open(dir.join("cgroup.procs"))?;
                g.v1.push((controller, dir.clone(), OwnedFd::from(procs)));
                dir
            } else {
                continue;
            };
            let v1 = g.v2.as_deref() != Some(dir.as_path());
            match controller {
                "memory" => {
                    let m = l.memory.map_or(0, |b| b.0).to_string();
                    if v1 {
                        fs::write(dir.join("memory.limit_in_bytes"), &m)?;
                        // No swap on top, where swap is accounted.
                        let _ = fs::write(dir.join("memory.memsw.limit_in_bytes"), &m);
                    } else {
                        fs::write(dir.join("memory.max"), &m)?;
                        let _ = fs::write(dir.join("memory.swap.max"), "0");
                    }
                    g.memory = true;
                }
                "pids" => {
                    let p = l.processes.unwrap_or(u32::MAX).to_string();
                    fs::write(dir.join("pids.max"), p)?;
                    g.processes = true;
                }
                _ => {
                    let quota = u64::from(l.cpu.map_or(0, |c| c.0)) * 100;
                    if v1 {
                        fs::write(dir.join("cpu.cfs_period_us"), "100000")?;
                        fs::write(dir.join("cpu.cfs_quota_us"), quota.to_string())?;
                    } else {
                        fs::write(dir.join("cpu.max"), format!("{quota} 100000"))?;
                    }
                    g.cpu = true;
                }
            }
        }
        Ok(g)
    }

    /// Copies of the v1 groups' open `cgroup.procs`, for the supervisor to join.
    ///
    /// # Errors
    ///
    /// When a descriptor cannot be duplicated.
    pub fn procs_fds(&self) -> io::Result<Vec<OwnedFd>> {
        self.v1.iter().map(|(_, _, fd)| fd.try_clone()).collect()
    }

    /// OOM kills and refused forks so far.
    pub fn events(&self) -> LimitEvents {
        let count = |dir: &Path, file: &str, key: &str| -> u64 {
            fs::read_to_string(dir.join(file))
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
                .unwrap_or(0)
        };
        let mut ev = LimitEvents::default();
        if let Some(d) = &self.v2 {
            ev.oom_kills += count(d, "memory.events", "oom_kill ");
            ev.pids_max += count(d, "pids.events", "max ");
        }
        for (c, d, _) in &self.v1 {
            match *c {
                "memory" => ev.oom_kills += count(d, "memory.oom_control", "oom_kill "),
                "pids" => ev.pids_max += count(d, "pids.events", "max "),
                _ => {}
            }
        }
        ev
    }
}

impl Drop for LimitGroups {
    fn drop(&mut self) {
        for (_, dir, _) in &self.v1 {
            for pid in fs::read_to_string(dir.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.trim().parse::<i32>().ok())
            {
                // SAFETY: kill(2) with a pid read from the run's own group.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            for _ in 0..200 {
                match fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
                }
            }
        }
    }
}

/// Whether a v1 group of `controller` can be made here (probed once per controller).
fn v1_writable(controller: &str) -> bool {
    static PROBES: OnceLock<std::sync::Mutex<std::collections::HashMap<String, bool>>> =
        OnceLock::new();
    let m = PROBES.get_or_init(Default::default);
    let mut m = m.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    *m.entry(controller.to_string()).or_insert_with(|| {
        let Some(parent) = v1_place(controller) else {
            return false;
        };
        let probe = parent.join(format!("telejob-probe-{}", std::process::id()));
        let ok = fs::create_dir(&probe).is_ok();
        let _ = fs::remove_dir(&probe);
        ok
    })
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
