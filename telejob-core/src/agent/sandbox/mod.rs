//! The run sandbox: environment allowlist, unprivileged user, process containment and kill,
//! and the capped log. SECURITY.md states what each defence covers.

pub(crate) mod cgroup;
pub(crate) mod disk;
pub(crate) mod exec;
mod identity;
pub mod image;
pub mod init;
pub(crate) mod log;
pub mod network;
mod seccomp;
pub(crate) mod supervise;
mod tracker;
pub mod userns;

use std::collections::BTreeMap;
use std::ffi::{CStr, CString, OsString};
use std::path::Path;
use std::time::Duration;

use crate::error::{Error, Result};

pub use identity::{UidLease, UidRange};
pub use image::{ImageRoot, Images};
pub use init::run_if_init;
pub use userns::UidBlocks;

/// Runs as machines of their own: what telejob needs to give each run a root file system from
/// an image, root in a user namespace of its own UID block, a network namespace and a disk.
/// They need telejob to run as root on Linux; elsewhere runs go on without, and say so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineOptions {
    /// The images of this host.
    pub images: Images,
    /// The image runs use unless their job names one.
    pub image: String,
    /// The UID blocks runs' user namespaces are leased from.
    pub blocks: UidBlocks,
}

impl MachineOptions {
    /// Machines from the images under `images_dir`, the default image, the default blocks.
    pub fn new(images_dir: impl Into<std::path::PathBuf>) -> Self {
        Self {
            images: Images::in_dir(images_dir),
            image: image::DEFAULT_IMAGE.into(),
            blocks: UidBlocks::default(),
        }
    }
}

/// Whether this process can give runs mount, PID, IPC and network namespaces of their own: it
/// runs as root on Linux and the kernel allows them. Probed once, by starting `true` in them.
pub fn namespaces_available() -> bool {
    supervise::namespaces_available()
}

/// The cgroup controllers that runs on this host can be limited by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitControllers {
    /// `memory` (`limits.memory`).
    pub memory: bool,
    /// `pids` (`limits.processes`).
    pub processes: bool,
    /// `cpu` (`limits.cpu`).
    pub cpu: bool,
}

/// The controllers this host lets a run have (cgroup v2, or writable v1 hierarchies).
pub fn limit_controllers() -> LimitControllers {
    let (memory, processes, cpu) = cgroup::LimitGroups::support();
    LimitControllers {
        memory,
        processes,
        cpu,
    }
}

/// Whether runs get a cgroup v2 of their own (and, as [`NamespaceMode`], namespaces of their
/// own).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CgroupMode {
    /// Use it where the host allows it; otherwise do without (the default).
    #[default]
    Auto,
    /// Never use it.
    Off,
    /// Fail runs when it cannot be had.
    Required,
}

/// Whether runs get mount, PID, IPC and network namespaces of their own: the same three modes.
pub type NamespaceMode = CgroupMode;

/// A mode that is not `auto`, `off` or `required`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a mode: use auto, off or required")]
pub struct UnknownCgroupMode(pub String);

impl std::str::FromStr for CgroupMode {
    type Err = UnknownCgroupMode;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s.trim() {
            "auto" => Ok(Self::Auto),
            "off" => Ok(Self::Off),
            "required" => Ok(Self::Required),
            other => Err(UnknownCgroupMode(other.to_string())),
        }
    }
}

/// An unprivileged user that jobs run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    /// The user's name.
    pub name: String,
    /// Its uid.
    pub uid: u32,
    /// Its primary gid.
    pub gid: u32,
}

impl RunAs {
    /// Looks `name` up in the user database.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] (setting `run_as`) when there is no such user or it is root.
    pub fn lookup(name: &str) -> Result<Self> {
        Self::lookup_for("run_as", name)
    }

    /// As [`RunAs::lookup`], naming `setting` (`--run-as`, `TELEJOB_RUN_AS`) in errors.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming `setting`.
    pub fn lookup_for(setting: &str, name: &str) -> Result<Self> {
        let bad = |why: &str| Error::config(setting, format!("user {name:?}: {why}"));
        let c = CString::new(name).map_err(|_| bad("holds a NUL byte"))?;
        let mut pwd: libc::passwd = unsafe_zeroed_passwd();
        let mut buf = vec![0 as libc::c_char; 16 * 1024];
        let mut out: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: getpwnam_r writes into `pwd` and `buf`, both valid for the lengths given, and sets
        // `out` to `&pwd` or null.
        let rc = unsafe {
            libc::getpwnam_r(c.as_ptr(), &mut pwd, buf.as_mut_ptr(), buf.len(), &mut out)
        };
        if rc != 0 || out.is_null() {
            return Err(bad(
                "no such user; create it or choose another (e.g. nobody)",
            ));
        }
        if pwd.pw_uid == 0 {
            return Err(bad("is root; jobs must run as an unprivileged user"));
        }
        // SAFETY: pw_name points into `buf`, NUL-terminated, valid while `buf` lives.
        let real = unsafe { CStr::from_ptr(pwd.pw_name) }
            .to_string_lossy()
            .into_owned();
        Ok(Self {
            name: real,
            uid: pwd.pw_uid,
            gid: pwd.pw_gid,
        })
    }
}

fn unsafe_zeroed_passwd() -> libc::passwd {
    // SAFETY: passwd is a plain C struct of integers and pointers; all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}

/// Who runs execute as.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Identity {
    /// As telejob itself (the only choice when it does not run as root).
    #[default]
    Current,
    /// As one existing user, shared by every run (`run_as`).
    Fixed(RunAs),
    /// Each run as a UID/GID of its own, leased from the range (the default as root).
    Dynamic(UidRange),
}

impl Identity {
    /// The identity the settings ask for, each given as `(setting, value)` so that errors name
    /// where it came from (`config run_as`, `--uid-range`, `TELEJOB_RUN_AS`): one user for every
    /// run (`run_as`), a UID of its own per run from a range (`uid_range`, checked against the
    /// accounts of this host), or with neither the default for this process
    /// ([`Identity::default_for_current_user`]). The one place these rules live.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when both are given, the user does not exist or is root, or the range
    /// is malformed or overlaps accounts.
    pub fn from_settings(
        run_as: Option<(&str, &str)>,
        uid_range: Option<(&str, &str)>,
    ) -> Result<Self> {
        match (run_as, uid_range) {
            (Some((a, _)), Some((b, _))) => Err(Error::config(
                format!("{a}, {b}"),
                "they exclude each other; keep one",
            )),
            (Some((setting, user)), None) => {
                Ok(Self::Fixed(RunAs::lookup_for(setting, user.trim())?))
            }
            (None, Some((setting, range))) => {
                let range = UidRange::parse(setting, range)?;
                range.check_against_accounts()?;
                Ok(Self::Dynamic(range))
            }
            (None, None) => Ok(Self::default_for_current_user()),
        }
    }

    /// [`Identity::Dynamic`] with the default range when this process runs as root, else
    /// [`Identity::Current`].
    pub fn default_for_current_user() -> Self {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            Self::Dynamic(UidRange::default())
        } else {
            Self::Current
        }
    }
}

/// How runs are sandboxed on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxOptions {
    /// cgroup use.
    pub cgroup: CgroupMode,
    /// Namespaces (private `/tmp`, `/proc`, IPC; network off on request). They need root.
    pub namespaces: NamespaceMode,
    /// Who runs execute as.
    pub identity: Identity,
    /// Time between SIGTERM and SIGKILL at a timeout or cancel.
    pub kill_grace: Duration,
    /// Log bytes kept from the start (the last 64 KiB are kept too).
    pub log_cap_bytes: u64,
    /// Runs are machines of their own, where this host allows it (root, namespaces on);
    /// `None`: runs are restricted processes of the host, as without root.
    pub machine: Option<MachineOptions>,
    /// This whole host is the run's machine (an EC2 instance launched for it, thrown away
    /// after): the job runs as this process's user, root, with no namespaces, and the log's
    /// first line names the host with this description.
    pub own_host: Option<String>,
}

impl SandboxOptions {
    /// Which resource limits runs get on this host with these options.
    pub fn limit_support(&self) -> crate::limits::LimitSupport {
        let (memory, processes, cpu) = if self.cgroup == CgroupMode::Off {
            (false, false, false)
        } else {
            cgroup::LimitGroups::support()
        };
        crate::limits::LimitSupport {
            memory,
            cpu,
            processes: processes || matches!(self.identity, Identity::Dynamic(_)),
            disk: true,
            network: self.namespaces_available(),
        }
    }

    /// The machine runs get with these options on this host: `None` when runs are restricted
    /// processes of the host instead (no machine options, namespaces off, or not root).
    pub fn machine_here(&self) -> Option<&MachineOptions> {
        self.machine
            .as_ref()
            .filter(|_| self.namespaces_available())
    }

    /// The machine options and the image a run whose job names `image` (if any) starts from:
    /// `None` when the run is a restricted process of the host instead (no machines here, or
    /// the image `host`, which is just that).
    pub fn machine_image(&self, image: Option<&str>) -> Option<(&MachineOptions, String)> {
        let m = self.machine_here()?;
        let name = image.unwrap_or(&m.image);
        (name != image::HOST_IMAGE).then(|| (m, name.to_string()))
    }

    /// What runs of a job naming `image` lack on this host with these options, for the start
    /// of the server and every run's log: `None` when they are machines of their own.
    pub fn not_isolated(&self, image: Option<&str>) -> Option<String> {
        if self.machine_image(image).is_some() || self.own_host.is_some() {
            return None;
        }
        let why = if self.machine_here().is_some() {
            "image = host"
        } else if self.namespaces == CgroupMode::Off {
            "namespaces = off"
        } else if !supervise::namespaces_available() {
            "telejob does not run as root"
        } else {
            "no image is configured"
        };
        Some(format!(
            "runs are not machines of their own ({why}): they share this host's root file system (read-only), its network and its kernel keyring, cannot install packages, and limits.disk is measured, not enforced by a file system"
        ))
    }

    /// Whether runs get their own namespaces with these options on this host.
    pub fn namespaces_available(&self) -> bool {
        self.namespaces != CgroupMode::Off && supervise::namespaces_available()
    }
}

impl Default for SandboxOptions {
    fn default() -> Self {
        Self {
            cgroup: CgroupMode::Auto,
            namespaces: NamespaceMode::Auto,
            identity: Identity::Current,
            kill_grace: Duration::from_secs(10),
            log_cap_bytes: 10 << 20,
            machine: None,
            own_host: None,
        }
    }
}

/// Variables passed through from the launching process (values as they are there). Nothing else
/// of its environment reaches a job: not `AWS_*`, tokens, database URLs.
pub const ENV_ALLOWLIST: &[&str] = &["PATH", "LANG", "LANGUAGE", "TZ"];

/// The environment of a job: the allowlist, `LC_*`, the job's own variables, a fresh `HOME` and
/// `TMPDIR`, and the `TELEJOB_*` contract.
pub fn job_environment(
    job_env: &BTreeMap<String, String>,
    telejob: &[(&str, String)],
    home: &Path,
    tmp: &Path,
    user: Option<&str>,
) -> Vec<(OsString, OsString)> {
    let mut env: BTreeMap<OsString, OsString> = BTreeMap::new();
    for (k, v) in std::env::vars_os() {
        let pass = k
            .to_str()
            .is_some_and(|k| ENV_ALLOWLIST.contains(&k) || k.starts_with("LC_"));
        if pass {
            env.insert(k, v);
        }
    }
    env.entry("PATH".into())
        .or_insert_with(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    env.insert("HOME".into(), home.into());
    env.insert("TMPDIR".into(), tmp.into());
    env.insert("SHELL".into(), "/bin/bash".into());
    if let Some(u) = user {
        env.insert("USER".into(), u.into());
        env.insert("LOGNAME".into(), u.into());
    }
    for (k, v) in job_env {
        env.insert(k.into(), v.into());
    }
    for (k, v) in telejob {
        env.insert((*k).into(), v.into());
    }
    env.into_iter().collect()
}

/// Kills whatever of run `run_id` still runs on this host (its cgroup, then any process with its
/// marker), after a crash or `kill -9` of the process that launched it. Returns whether anything
/// was found.
pub fn kill_leftovers(run_id: &str) -> bool {
    let cg = cgroup::kill_existing(run_id);
    let marked = tracker::kill_marked(run_id);
    let pasta = network::kill_leftover(run_id);
    cg || marked > 0 || pasta
}

/// Makes this process non-dumpable, so processes of the same user (jobs run without a separate
/// user) cannot read its memory or `/proc/<pid>/environ`, nor attach a debugger. Jobs are not
/// affected: `execve` makes them dumpable again.
pub fn harden_current_process() {
    // SAFETY: prctl(PR_SET_DUMPABLE, 0) changes a flag of this process; no memory is involved.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
}

/// Gives `uid:gid` ownership of `root` and everything below it, without following links.
///
/// # Errors
///
/// [`Error::Io`] on the first failure.
pub fn chown_tree(root: &Path, uid: u32, gid: u32) -> Result<()> {
    for e in walkdir::WalkDir::new(root).follow_links(false) {
        let e = e.map_err(|e| {
            Error::io(
                root,
                e.into_io_error()
                    .unwrap_or_else(|| std::io::Error::other("walk failed")),
            )
        })?;
        std::os::unix::fs::lchown(e.path(), Some(uid), Some(gid))
            .map_err(|err| Error::io(e.path(), err))?;
    }
    Ok(())
}
