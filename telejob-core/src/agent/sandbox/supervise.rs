//! The per-run supervisor and the namespaces a run lives in.
//!
//! `execute` starts `bash` through three processes, all forked from telejob (never exec'd, so no
//! helper binary is needed) and prepared between fork and exec:
//!
//! ```text
//! telejob ── S: supervisor (root; joins the run's cgroups, unshares the namespaces, watches telejob)
//!              └─ I: the run's init, PID 1 of its PID namespace (root; mounts, then reaps)
//!                   └─ bash: the job (its own UID/GID, no capabilities, no_new_privs)
//! ```
//!
//! * S holds the read end of a pipe whose write end only telejob holds. When telejob dies in any
//!   way (`kill -9` included), the pipe reports a hang-up at once and S kills I — and with it, the
//!   kernel kills every process of the PID namespace — and the run's cgroup. Runs do not outlive
//!   the server by more than a scheduler tick.
//! * I sets the mounts up *before* any privilege is dropped: a private mount tree, the host's file
//!   systems read-only, the run's work directory writable, the run's own `/tmp`, `/var/tmp` and
//!   `/dev/shm` bound over the host's, a `/proc` that shows only the run, loopback up in a fresh
//!   network namespace when the job's network is off. When bash exits, I exits, which ends every
//!   process the job left behind.
//! * The job's exit status travels back through I and S, so `execute` sees bash's own status.
//!
//! Everything the children need is allocated before the fork: between fork and exec only
//! async-signal-safe system calls are made.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::OnceLock;

/// Where a run sees its work directory inside its namespaces. An empty directory on the host,
/// used only as a mount point.
pub const JOB_ROOT: &str = "/run/telejob/work";

/// The private directories under the work directory, and what each is bound over.
pub const PRIVATE_DIRS: [(&str, &str); 3] = [
    ("tmp", "/tmp"),
    ("var-tmp", "/var/tmp"),
    ("shm", "/dev/shm"),
];

/// Namespaces a run gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Namespaces {
    /// Mount, PID and IPC namespaces (the private `/tmp` and `/proc`).
    pub private: bool,
    /// A network namespace with loopback only.
    pub no_network: bool,
}

impl Namespaces {
    fn flags(self) -> libc::c_int {
        let mut f = 0;
        if self.private {
            f |= libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWIPC;
        }
        if self.no_network {
            f |= libc::CLONE_NEWNET;
        }
        f
    }
}

/// What the supervisor sets up for one run.
#[derive(Debug, Default)]
pub struct Plan {
    /// Namespaces to unshare.
    pub namespaces: Namespaces,
    /// The run's work directory and where it appears: the one writable place when the rest is
    /// made read-only.
    pub work_dir: Option<(CString, CString)>,
    /// `(source, target)` bind mounts, e.g. the run's `tmp` over `/tmp`, made after the work
    /// directory (so sources may lie in it). A missing target is skipped.
    pub binds: Vec<(CString, CString)>,
    /// `(source, target)` read-only bind mounts (the job's own published data): on a host run
    /// before `binds`; on a machine onto its work directory (relative to the run directory)
    /// before that is bound into the machine.
    pub read_only: Vec<(CString, CString)>,
    /// The job's working directory (entered again after the mounts, so it is the writable view).
    pub chdir: Option<CString>,
    /// The UID and GID to become; `None` keeps the current ones.
    pub ids: Option<(u32, u32)>,
    /// `(resource, limit)` pairs set on the job's process.
    pub rlimits: Vec<(libc::__rlimit_resource_t, u64)>,
    /// `cgroup.procs` files (v2 and v1 controllers) the supervisor joins, opened for writing.
    pub cgroup_procs: Vec<OwnedFd>,
    /// The v2 cgroup's `cgroup.kill`, for the supervisor to kill the run if telejob dies.
    pub cgroup_kill: Option<OwnedFd>,
    /// The run is a machine of its own (see [`MachinePlan`]): the supervisor builds its root
    /// and starts the exec'd init in its namespaces, instead of the namespaces above.
    pub machine: Option<MachinePlan>,
}

/// What the supervisor does for a run that is a machine of its own, before the init starts.
/// Its working directory is the run directory; the paths below are relative to it, so that the
/// host's paths appear in none of the run's mount options.
#[derive(Debug)]
pub struct MachinePlan {
    /// The image's tree, id-mapped onto the run's UID block at `lower`.
    pub image: CString,
    /// The overlay's options (`lowerdir=…,upperdir=disk/upper,workdir=disk/ovwork`).
    pub overlay: CString,
    /// The run's user namespace.
    pub userns: OwnedFd,
    /// The init's plan (a memfd), given to it as descriptor 3.
    pub plan: OwnedFd,
    /// telejob's go-ahead for the job (network attached), given to the init as descriptor 6.
    pub go: Option<OwnedFd>,
    /// The run's network namespace, made beforehand (owned by `userns`) for pasta to attach
    /// to early; `None`: a new one (loopback only).
    pub netns: Option<OwnedFd>,
}

/// The process-wide lifeline: S polls the read end; the write end is never written and never
/// closed while telejob lives.
fn lifeline() -> io::Result<RawFd> {
    static LIFELINE: OnceLock<Option<(OwnedFd, OwnedFd)>> = OnceLock::new();
    let pair = LIFELINE.get_or_init(|| {
        let (r, w) = std::io::pipe().ok()?;
        Some((OwnedFd::from(r), OwnedFd::from(w)))
    });
    pair.as_ref()
        .map(|(r, _)| r.as_raw_fd())
        .ok_or_else(|| io::Error::other("cannot create the supervisor's lifeline pipe"))
}

/// Reads what a failed set-up step reported, once the supervisor has exited.
#[derive(Debug)]
pub struct SetupReport(std::io::PipeReader);

impl SetupReport {
    /// The failed step and its OS error, if a step failed.
    pub fn failure(mut self) -> Option<(String, io::Error)> {
        use std::io::Read;
        let mut buf = Vec::new();
        // Every holder of the write end has exited or exec'd: this reads to EOF.
        let _ = self.0.read_to_end(&mut buf);
        if buf.len() < 4 {
            return None;
        }
        let errno = i32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let end = buf[4..]
            .iter()
            .position(|b| *b == 0)
            .map_or(buf.len(), |p| p + 4);
        let step = String::from_utf8_lossy(&buf[4..end]).into_owned();
        Some((step, io::Error::from_raw_os_error(errno)))
    }
}

/// The exit status S uses when a set-up step failed (the report says which).
pub const SETUP_FAILED: i32 = 125;

/// Arranges for `cmd` to start through the supervisor with `plan`. Returns the reader of set-up
/// failures; drop `cmd` after spawning so that its end of the report pipe closes.
///
/// # Errors
///
/// When a pipe cannot be made.
pub fn install(cmd: &mut tokio::process::Command, plan: Plan) -> io::Result<SetupReport> {
    let lifeline_r = lifeline()?;
    let (report_r, report_w) = std::io::pipe()?;
    let report_w = OwnedFd::from(report_w);
    let state = ChildState {
        plan,
        lifeline_r,
        report_w,
    };
    // SAFETY: the closure runs between fork and exec. It only reads memory prepared before the
    // fork and makes async-signal-safe system calls; see `ChildState::supervisor`.
    unsafe {
        cmd.pre_exec(move || state.supervisor());
    }
    Ok(SetupReport(report_r))
}

struct ChildState {
    plan: Plan,
    lifeline_r: RawFd,
    report_w: OwnedFd,
}

/// The signals S and I ignore (a timeout's SIGTERM is for the job) and bash gets back.
const SHIELDED: [libc::c_int; 5] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGPIPE,
];

/// mount(2) with optional strings (`None`: a null pointer): whether it succeeded (errno says
/// why not). Async-signal-safe, like the call it makes.
fn try_mount(
    source: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> bool {
    let ptr = |s: Option<&CStr>| s.map_or(std::ptr::null(), CStr::as_ptr);
    // SAFETY: every pointer is null or a NUL-terminated string that outlives the call.
    unsafe {
        libc::mount(
            ptr(source),
            target.as_ptr(),
            ptr(fstype),
            flags,
            ptr(data).cast(),
        ) == 0
    }
}

/// The job's process just before exec, in the host's sandbox and in a machine's init alike:
/// the [`SHIELDED`] signals back to their defaults, death with its parent, and `rlimits` (soft
/// and hard). Whether every limit was set (errno says why not). Async-signal-safe.
pub(super) fn job_process_defaults(
    rlimits: impl IntoIterator<Item = (libc::__rlimit_resource_t, u64)>,
) -> bool {
    // SAFETY: signal(2), prctl(2) and setrlimit(2) on this process, with values on the stack.
    unsafe {
        for s in SHIELDED {
            libc::signal(s, libc::SIG_DFL);
        }
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        for (res, v) in rlimits {
            let l = libc::rlimit {
                rlim_cur: v,
                rlim_max: v,
            };
            if libc::setrlimit(res, &l) != 0 {
                return false;
            }
        }
    }
    true
}

impl ChildState {
    /// [`try_mount`], or the setup fails at `step`.
    fn mount(
        &self,
        source: Option<&CStr>,
        target: &CStr,
        fstype: Option<&CStr>,
        flags: libc::c_ulong,
        step: &str,
    ) {
        if !try_mount(source, target, fstype, flags, None) {
            self.fail(step);
        }
    }

    /// Makes every mount of this (new) mount namespace private: what is mounted here stays here.
    fn make_mounts_private(&self) {
        self.mount(
            None,
            c"/",
            None,
            libc::MS_REC | libc::MS_PRIVATE,
            "making the run's mounts private",
        );
    }

    /// Reports `step` with the current errno and exits. Never returns.
    fn fail(&self, step: &str) -> ! {
        let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
        let mut buf = [0u8; 128];
        buf[..4].copy_from_slice(&errno.to_ne_bytes());
        let n = step.len().min(buf.len() - 5);
        buf[4..4 + n].copy_from_slice(&step.as_bytes()[..n]);
        // SAFETY: write(2) of a stack buffer to a pipe we hold; _exit(2) ends this process.
        unsafe {
            libc::write(self.report_w.as_raw_fd(), buf.as_ptr().cast(), 4 + n + 1);
            libc::_exit(SETUP_FAILED)
        }
    }

    /// S: runs in the forked child of telejob. Returns only in the job's process (to exec bash).
    fn supervisor(&self) -> io::Result<()> {
        let p = &self.plan;
        // SAFETY (whole function): async-signal-safe system calls on this process, with
        // arguments prepared before the fork.
        unsafe {
            libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
            let no_core = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &no_core);
            for s in SHIELDED {
                libc::signal(s, libc::SIG_IGN);
            }
            for fd in &p.cgroup_procs {
                if libc::write(fd.as_raw_fd(), b"0\n".as_ptr().cast(), 2) < 0 {
                    self.fail("joining the run's cgroup");
                }
            }
            let kill_fd = p.cgroup_kill.as_ref().map_or(-1, AsRawFd::as_raw_fd);
            if let Some(m) = &p.machine {
                let fd = |o: &OwnedFd| o.as_raw_fd();
                close_all_but(&[
                    self.lifeline_r,
                    self.report_w.as_raw_fd(),
                    kill_fd,
                    fd(&m.userns),
                    fd(&m.plan),
                    m.go.as_ref().map_or(-1, fd),
                    m.netns.as_ref().map_or(-1, fd),
                ]);
                return self.machine(m, kill_fd);
            }
            close_all_but(&[self.lifeline_r, self.report_w.as_raw_fd(), kill_fd]);
            let (init, sp) = self.fork_init(p.namespaces.flags());
            if init == 0 {
                libc::close(sp[0]);
                return self.init(sp[1]);
            }
            libc::close(sp[1]);
            self.watch(init, sp[0], kill_fd)
        }
    }

    /// S for a machine: the root file system (the image id-mapped onto the run's UID block,
    /// the overlay, the work directory), then the run's namespaces, then the init. Returns
    /// only in the init's process, to exec the init program.
    /// S: enters the new namespaces `flags` (none when 0), makes the status pipe and forks
    /// the run's init: what the fork answered (0 in the init) and the pipe (read, write end).
    /// Any error fails the run's setup.
    unsafe fn fork_init(&self, flags: libc::c_int) -> (libc::pid_t, [RawFd; 2]) {
        // SAFETY: unshare(2), pipe2(2) into a stack array and fork(2), async-signal-safe.
        unsafe {
            if flags != 0 && libc::unshare(flags) != 0 {
                self.fail("creating the run's namespaces (unshare)");
            }
            let mut sp = [0 as RawFd; 2];
            if libc::pipe2(sp.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
                self.fail("creating the status pipe");
            }
            let init = libc::fork();
            if init < 0 {
                self.fail("forking the run's init");
            }
            (init, sp)
        }
    }

    unsafe fn machine(&self, m: &MachinePlan, kill_fd: RawFd) -> io::Result<()> {
        // SAFETY: as in `supervisor`.
        unsafe {
            // A mount namespace of the host's, private: what is mounted here is the run's and
            // goes with it.
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                self.fail("making a mount namespace for the run's machine");
            }
            self.make_mounts_private();
            {
                let image = &m.image;
                let tree = libc::syscall(
                    libc::SYS_open_tree,
                    libc::AT_FDCWD,
                    image.as_ptr(),
                    OPEN_TREE_CLONE
                        | libc::O_CLOEXEC as libc::c_uint
                        | AT_RECURSIVE as libc::c_uint,
                ) as RawFd;
                if tree < 0 {
                    self.fail("opening the image");
                }
                let attr = MountAttr {
                    attr_set: MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY,
                    userns_fd: m.userns.as_raw_fd() as u64,
                    ..MountAttr::default()
                };
                if libc::syscall(
                    libc::SYS_mount_setattr,
                    tree,
                    c"".as_ptr(),
                    libc::AT_EMPTY_PATH | AT_RECURSIVE,
                    &raw const attr,
                    size_of::<MountAttr>(),
                ) != 0
                {
                    self.fail("mapping the image onto the run's UID block (idmapped mount)");
                }
                if libc::syscall(
                    libc::SYS_move_mount,
                    tree,
                    c"".as_ptr(),
                    libc::AT_FDCWD,
                    c"lower".as_ptr(),
                    MOVE_MOUNT_F_EMPTY_PATH,
                ) != 0
                {
                    self.fail("mounting the image");
                }
                libc::close(tree);
            }
            if !try_mount(
                Some(c"overlay"),
                c"root",
                Some(c"overlay"),
                libc::MS_NODEV,
                Some(&m.overlay),
            ) {
                self.fail("mounting the run's root file system (overlay)");
            }
            self.bind_read_only(&self.plan.read_only);
            self.mount(
                Some(c"disk/work"),
                c"root/run/telejob/work",
                None,
                libc::MS_BIND | libc::MS_REC,
                "binding the run's work directory",
            );
            if libc::setns(m.userns.as_raw_fd(), libc::CLONE_NEWUSER) != 0 {
                self.fail("entering the run's user namespace");
            }
            // Root of the run's namespace (the block's base UID outside), so that the init
            // keeps its capabilities there across exec; none of the host root's groups.
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setresgid(0, 0, 0) != 0
                || libc::setresuid(0, 0, 0) != 0
            {
                self.fail("becoming root of the run's user namespace");
            }
            let net = match &m.netns {
                // Root of the run's user namespace, which owns it: allowed to join.
                Some(n) => {
                    if libc::setns(n.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                        self.fail("entering the run's network namespace");
                    }
                    0
                }
                None => libc::CLONE_NEWNET,
            };
            let flags = libc::CLONE_NEWNS
                | libc::CLONE_NEWPID
                | libc::CLONE_NEWIPC
                | net
                | libc::CLONE_NEWUTS
                | libc::CLONE_NEWCGROUP;
            let (init, sp) = self.fork_init(flags);
            if init == 0 {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
                libc::close(sp[0]);
                // The init's descriptors at fixed numbers: the plan, the status pipe, the
                // report pipe, the go-ahead. Moved high first, so that no move clobbers one
                // not yet moved.
                let go = m.go.as_ref().map_or(-1, AsRawFd::as_raw_fd);
                let from = [m.plan.as_raw_fd(), sp[1], self.report_w.as_raw_fd(), go];
                let mut high = [-1 as RawFd; 4];
                for (i, f) in from.iter().enumerate() {
                    if *f >= 0 {
                        high[i] = libc::fcntl(*f, libc::F_DUPFD_CLOEXEC, 64);
                        if high[i] < 0 {
                            self.fail("handing the init its descriptors");
                        }
                    }
                }
                for (i, h) in high.iter().enumerate() {
                    let target = 3 + i as RawFd;
                    if *h < 0 {
                        libc::close(target);
                    } else if libc::dup2(*h, target) < 0 {
                        self.fail("handing the init its descriptors");
                    }
                }
                libc::syscall(
                    libc::SYS_close_range,
                    7 as libc::c_uint,
                    libc::c_uint::MAX,
                    0,
                );
                // The init program is exec'd by the caller of this closure.
                return Ok(());
            }
            libc::close(sp[1]);
            for fd in [m.plan.as_raw_fd(), m.userns.as_raw_fd()] {
                libc::close(fd);
            }
            if let Some(n) = &m.netns {
                libc::close(n.as_raw_fd());
            }
            if let Some(g) = &m.go {
                libc::close(g.as_raw_fd());
            }
            self.watch(init, sp[0], kill_fd)
        }
    }

    /// Binds each `(source, target)` read-only (and without set-uid, devices or execution).
    fn bind_read_only(&self, binds: &[(CString, CString)]) {
        for (src, dst) in binds {
            let ok = try_mount(Some(src), dst, None, libc::MS_BIND, None)
                && try_mount(
                    None,
                    dst,
                    None,
                    libc::MS_REMOUNT
                        | libc::MS_BIND
                        | libc::MS_RDONLY
                        | libc::MS_NOSUID
                        | libc::MS_NODEV
                        | libc::MS_NOEXEC,
                    None,
                );
            if !ok {
                self.fail("binding the job's published data read-only");
            }
        }
    }

    /// S after the fork: waits for I, or for telejob to die.
    unsafe fn watch(&self, init: libc::pid_t, status_r: RawFd, kill_fd: RawFd) -> ! {
        // SAFETY: as in `supervisor`.
        unsafe {
            let pidfd = libc::syscall(libc::SYS_pidfd_open, init, 0) as RawFd;
            loop {
                let mut fds = [
                    libc::pollfd {
                        fd: self.lifeline_r,
                        events: libc::POLLIN,
                        revents: 0,
                    },
                    libc::pollfd {
                        fd: pidfd,
                        events: libc::POLLIN,
                        revents: 0,
                    },
                ];
                // Without pidfds (Linux < 5.3) look at I every 50 ms.
                let timeout = if pidfd >= 0 { -1 } else { 50 };
                libc::poll(fds.as_mut_ptr(), 2, timeout);
                if fds[0].revents != 0 {
                    // telejob is gone: so is the run.
                    if kill_fd >= 0 {
                        libc::write(kill_fd, b"1".as_ptr().cast(), 1);
                    }
                    libc::kill(init, libc::SIGKILL);
                    libc::kill(0, libc::SIGKILL);
                    libc::_exit(137);
                }
                let mut st = 0;
                if libc::waitpid(init, &mut st, libc::WNOHANG) == init {
                    let mut job = [0u8; 4];
                    let n = libc::read(status_r, job.as_mut_ptr().cast(), 4);
                    let status = if n == 4 { i32::from_ne_bytes(job) } else { st };
                    exit_like(status);
                }
            }
        }
    }

    /// I: PID 1 of the run's namespaces. Sets the mounts up, forks the job, reaps, and reports
    /// the job's status on `status_w`. Returns only in the job's process.
    unsafe fn init(&self, status_w: RawFd) -> io::Result<()> {
        let p = &self.plan;
        // SAFETY: as in `supervisor`.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
            if p.namespaces.private {
                self.mounts();
            }
            if let Some(dir) = &p.chdir
                && libc::chdir(dir.as_ptr()) != 0
            {
                self.fail("entering the code directory");
            }
            if p.namespaces.no_network && !loopback_up() {
                self.fail("bringing loopback up in the run's network namespace");
            }
            let job = libc::fork();
            if job < 0 {
                self.fail("forking the job");
            }
            if job == 0 {
                libc::close(status_w);
                return self.job();
            }
            loop {
                let mut st = 0;
                let w = libc::waitpid(-1, &mut st, 0);
                if w == job {
                    libc::write(status_w, (&raw const st).cast(), 4);
                    // As PID 1, leaving ends every process still in the namespace.
                    libc::_exit(0);
                }
                if w < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                    libc::_exit(0);
                }
            }
        }
    }

    /// I's mounts, in a mount namespace of its own (nothing propagates back to the host).
    unsafe fn mounts(&self) {
        let p = &self.plan;
        // SAFETY: as in `supervisor`; every path is a NUL-terminated string made before the fork.
        unsafe {
            self.make_mounts_private();
            // The host read-only (Linux 5.12+; older kernels keep the host's own modes).
            let attr = MountAttr {
                attr_set: MOUNT_ATTR_RDONLY,
                ..MountAttr::default()
            };
            libc::syscall(
                libc::SYS_mount_setattr,
                libc::AT_FDCWD,
                c"/".as_ptr(),
                AT_RECURSIVE,
                &raw const attr,
                size_of::<MountAttr>(),
            );
            if let Some((work, target)) = &p.work_dir {
                self.mount(
                    Some(work),
                    target,
                    None,
                    libc::MS_BIND | libc::MS_REC,
                    "binding the run's work directory",
                );
                self.mount(
                    None,
                    target,
                    None,
                    libc::MS_REMOUNT | libc::MS_BIND | libc::MS_NOSUID | libc::MS_NODEV,
                    "making the run's work directory writable",
                );
            }
            // Before the private directories: a source may be under the host's /tmp.
            self.bind_read_only(&p.read_only);
            for (src, dst) in &p.binds {
                if !try_mount(Some(src), dst, None, libc::MS_BIND, None)
                    && io::Error::last_os_error().raw_os_error() != Some(libc::ENOENT)
                {
                    self.fail("binding the run's temporary directories");
                }
            }
            self.mount(
                Some(c"proc"),
                c"/proc",
                Some(c"proc"),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                "mounting the run's /proc",
            );
        }
    }

    /// The job's process, just before exec: default signals, limits, then the run's identity
    /// with no way back to privilege.
    unsafe fn job(&self) -> io::Result<()> {
        let p = &self.plan;
        // SAFETY: as in `supervisor`.
        unsafe {
            if !job_process_defaults(p.rlimits.iter().copied()) {
                self.fail("setting the run's resource limits");
            }
            if let Some((uid, gid)) = p.ids {
                if libc::setgroups(0, std::ptr::null()) != 0 {
                    self.fail("dropping supplementary groups");
                }
                if libc::setresgid(gid, gid, gid) != 0 {
                    self.fail("switching to the run's group");
                }
                if libc::setresuid(uid, uid, uid) != 0 {
                    self.fail("switching to the run's user");
                }
            }
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
        }
        Ok(())
    }
}

/// Exits the way `status` (a `waitpid` status) says: with its code, or killed by its signal.
unsafe fn exit_like(status: libc::c_int) -> ! {
    // SAFETY: signal(2), kill(2) and _exit(2) on this process.
    unsafe {
        if libc::WIFSIGNALED(status) {
            let sig = libc::WTERMSIG(status);
            libc::signal(sig, libc::SIG_DFL);
            libc::kill(libc::getpid(), sig);
            libc::_exit(128 + sig);
        }
        libc::_exit(libc::WEXITSTATUS(status))
    }
}

/// Closes every descriptor above 2 but `keep` (negative entries are ignored).
unsafe fn close_all_but(keep: &[RawFd]) {
    let mut sorted = [-1 as RawFd; 8];
    for (i, k) in keep.iter().take(8).enumerate() {
        sorted[i] = *k;
    }
    sorted.sort_unstable();
    let mut from: libc::c_uint = 3;
    // SAFETY: close_range(2) on descriptor numbers; nothing else.
    unsafe {
        for &k in sorted.iter().filter(|k| **k >= 3) {
            let k = k as libc::c_uint;
            if k > from {
                libc::syscall(libc::SYS_close_range, from, k - 1, 0);
            }
            from = k + 1;
        }
        libc::syscall(libc::SYS_close_range, from, libc::c_uint::MAX, 0);
    }
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const AT_RECURSIVE: libc::c_int = 0x8000;
const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

/// `struct mount_attr` of mount_setattr(2).
#[repr(C)]
#[derive(Default)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// `struct ifreq` with the flags member, for SIOCGIFFLAGS / SIOCSIFFLAGS.
#[repr(C)]
struct IfReqFlags {
    name: [u8; 16],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Brings `lo` up in the current network namespace.
pub(crate) fn bring_loopback_up() -> bool {
    // SAFETY: see `loopback_up`.
    unsafe { loopback_up() }
}

/// Brings `lo` up in the current network namespace.
unsafe fn loopback_up() -> bool {
    // SAFETY: socket(2), ioctl(2) on a stack struct of the layout the kernel expects, close(2).
    unsafe {
        let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if s < 0 {
            return false;
        }
        let mut req = IfReqFlags {
            name: [0; 16],
            flags: 0,
            _pad: [0; 22],
        };
        req.name[..2].copy_from_slice(b"lo");
        let ok = libc::ioctl(s, libc::SIOCGIFFLAGS, &raw mut req) == 0 && {
            req.flags |= libc::IFF_UP as libc::c_short;
            libc::ioctl(s, libc::SIOCSIFFLAGS, &raw mut req) == 0
        };
        libc::close(s);
        ok
    }
}

/// Whether this process can give runs their namespaces: it runs as root, the mount point
/// [`JOB_ROOT`] exists or can be made, and the kernel allows mount, PID, IPC and
/// network namespaces. Probed once, by starting `true` in them.
pub fn namespaces_available() -> bool {
    static PROBE: OnceLock<bool> = OnceLock::new();
    *PROBE.get_or_init(|| {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return false;
        }
        if std::fs::create_dir_all(JOB_ROOT).is_err() {
            return false;
        }
        let mut cmd = std::process::Command::new("/bin/true");
        // SAFETY: unshare(2) between fork and exec.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                let f = Namespaces {
                    private: true,
                    no_network: true,
                }
                .flags();
                if libc::unshare(f) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.status().is_ok_and(|s| s.success())
    })
}
