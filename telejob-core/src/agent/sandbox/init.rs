//! The run's init: PID 1 of a run's machine, an exec'd program — the telejob binary itself,
//! started again in init mode — never a fork that keeps the server's memory.
//!
//! The supervisor starts it in the run's namespaces (user, mount, PID, IPC, network, UTS,
//! cgroup) with the run's root file system mounted but not yet entered. The init then, as root
//! of the run's user namespace:
//!
//! 1. mounts what a machine has: `/proc` (this PID namespace's), `/dev` (a tmpfs with the
//!    host's `null`, `zero`, `full`, `random`, `urandom` and `tty`, a `devpts` of its own, a
//!    `/dev/shm` of bounded size), `/sys` read-only, `/sys/fs/cgroup` (the run's own group as
//!    its root), and writes `/etc/hostname`, `/etc/hosts` and `/etc/resolv.conf`;
//! 2. enters the root (`pivot_root`) and detaches the host's tree, so that nothing of the host
//!    is reachable by path and `/proc/self/mountinfo` shows only the run's mounts;
//! 3. sets the host name and brings loopback up; with network on, waits for telejob to attach
//!    the outbound link;
//! 4. forks the job: resource limits, a fresh session keyring, `no_new_privs`, the system call
//!    filter, then `bash -c COMMAND` with the job's environment;
//! 5. reaps every process, and when the job ends reports its status to the supervisor and
//!    exits, which ends whatever the job left running.
//!
//! A binary that runs jobs in machines calls [`run_if_init`] first thing in `main`.

use std::ffi::{CString, OsString};
use std::io::{self, Read, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The argument that starts a binary in init mode: `BINARY --telejob-run-init`.
pub const INIT_ARG: &str = "--telejob-run-init";

/// The descriptors the supervisor gives the init (the plan, the status and report pipes, the
/// network go-ahead).
pub(crate) const PLAN_FD: RawFd = 3;
pub(crate) const STATUS_FD: RawFd = 4;
pub(crate) const REPORT_FD: RawFd = 5;
pub(crate) const GO_FD: RawFd = 6;

/// The exit status of an init whose set-up failed (the report says which step).
const SETUP_FAILED: i32 = super::supervise::SETUP_FAILED;

/// What the init sets up and runs, written by telejob into a memfd before the run starts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct InitPlan {
    /// The run's root file system, relative to the init's working directory.
    pub root: PathBuf,
    /// The machine's host name.
    pub hostname: String,
    /// `/etc/resolv.conf` of the machine (network on).
    pub resolv_conf: Option<String>,
    /// The size of `/dev/shm`.
    pub shm_bytes: u64,
    /// Wait for telejob's go-ahead on [`GO_FD`] (the outbound link) before starting the job.
    pub wait_for_network: bool,
    /// The job.
    pub job: JobPlan,
}

/// The job's process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct JobPlan {
    /// The program and its arguments (`bash -c COMMAND`).
    pub argv: Vec<Vec<u8>>,
    /// Its whole environment, `NAME=VALUE`.
    pub env: Vec<Vec<u8>>,
    /// Its working directory, as the machine sees it.
    pub cwd: PathBuf,
    /// `(resource, limit)` pairs.
    pub rlimits: Vec<(u32, u64)>,
}

impl JobPlan {
    /// `bash -c command` with `env`.
    pub(crate) fn bash(command: &str, env: &[(OsString, OsString)], cwd: PathBuf) -> Self {
        let kv = |(k, v): &(OsString, OsString)| {
            let mut b = k.clone().into_vec();
            b.push(b'=');
            b.extend_from_slice(v.as_bytes());
            b
        };
        Self {
            argv: vec![
                b"/bin/bash".to_vec(),
                b"-c".to_vec(),
                command.as_bytes().to_vec(),
            ],
            env: env.iter().map(kv).collect(),
            cwd,
            rlimits: Vec::new(),
        }
    }
}

/// Writes `plan` into a fresh memfd for the init, rewound.
pub(crate) fn plan_fd(plan: &InitPlan) -> io::Result<std::fs::File> {
    // SAFETY: memfd_create(2) with a NUL-terminated name; the fd is owned by the File.
    let fd = unsafe { libc::memfd_create(c"telejob-init-plan".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor this function owns.
    let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
    f.write_all(&serde_json::to_vec(plan).map_err(io::Error::other)?)?;
    std::io::Seek::rewind(&mut f)?;
    Ok(f)
}

/// When this process was started as a run's init (`--telejob-run-init` as its first
/// argument), runs the init and exits; otherwise returns at once. Call it first thing in
/// `main`, before any thread is started.
pub fn run_if_init() {
    let mut args = std::env::args_os();
    let _ = args.next();
    if args.next().as_deref() != Some(std::ffi::OsStr::new(INIT_ARG)) {
        return;
    }
    let code = match init() {
        Ok(code) => code,
        Err((step, e)) => {
            report(step, &e);
            SETUP_FAILED
        }
    };
    std::process::exit(code);
}

/// Reports a failed step to the supervisor, as the supervisor's own steps do.
fn report(step: &str, e: &io::Error) {
    let errno = e.raw_os_error().unwrap_or(libc::EIO);
    let mut buf = errno.to_ne_bytes().to_vec();
    let detail = if e.raw_os_error().is_some() {
        step.to_string()
    } else {
        format!("{step}: {e}")
    };
    buf.extend_from_slice(detail.as_bytes());
    buf.push(0);
    // SAFETY: the report descriptor is the supervisor's pipe, given at a fixed number.
    let mut f = unsafe { std::fs::File::from_raw_fd(REPORT_FD) };
    let _ = f.write_all(&buf);
    std::mem::forget(f);
}

type Step<T> = std::result::Result<T, (&'static str, io::Error)>;

fn at<T>(step: &'static str, r: io::Result<T>) -> Step<T> {
    r.map_err(|e| (step, e))
}

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn mount(src: &str, dst: &Path, fstype: &str, flags: libc::c_ulong, data: &str) -> io::Result<()> {
    let (src, dst, fstype) = (CString::new(src)?, cstr(dst)?, CString::new(fstype)?);
    let data = CString::new(data)?;
    // SAFETY: mount(2) with NUL-terminated strings that live through the call.
    check(unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            fstype.as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    })
}

/// Makes the directory `dir` and mounts a new file system of type `fstype` on it (its source
/// named like its type), failing at `step`.
fn mount_fresh(
    step: &'static str,
    dir: &Path,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> Step<()> {
    at(step, std::fs::create_dir_all(dir))?;
    at(step, mount(fstype, dir, fstype, flags, data))
}

/// The pointers of `strings` followed by a null pointer, as execve(2) takes them.
fn null_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain([std::ptr::null()])
        .collect()
}

fn bind(src: &Path, dst: &Path) -> io::Result<()> {
    mount_flags(src, dst, libc::MS_BIND)
}

/// mount(2) of `src` on `dst` with `flags`, no type and no data: a bind (`MS_BIND` in
/// `flags`), or a change of propagation (where `src` is ignored).
fn mount_flags(src: &Path, dst: &Path, flags: libc::c_ulong) -> io::Result<()> {
    let (s, d) = (cstr(src)?, cstr(dst)?);
    // SAFETY: mount(2) with NUL-terminated strings that live through the call.
    check(unsafe {
        libc::mount(
            s.as_ptr(),
            d.as_ptr(),
            std::ptr::null(),
            flags,
            std::ptr::null(),
        )
    })
}

/// Replaces `path` (a file, or a dangling link such as a resolver's) with `content`.
fn write_file(path: &Path, content: &str) -> io::Result<()> {
    let _ = std::fs::remove_file(path);
    std::fs::write(path, content)
}

fn init() -> Step<i32> {
    // SAFETY: the plan descriptor is ours, given at a fixed number.
    let mut f = unsafe { std::fs::File::from_raw_fd(PLAN_FD) };
    let mut text = Vec::new();
    at("reading the run's plan", f.read_to_end(&mut text))?;
    drop(f);
    let plan: InitPlan = at(
        "reading the run's plan",
        serde_json::from_slice(&text).map_err(io::Error::other),
    )?;
    // SAFETY: prctl(2) and fcntl(2) on this process's own descriptors: the job inherits none
    // of the supervisor's pipes.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        for fd in [STATUS_FD, REPORT_FD, GO_FD] {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }
    machine(&plan)?;
    if plan.wait_for_network {
        let mut b = [0u8; 1];
        // SAFETY: the go-ahead descriptor is ours, given at a fixed number.
        let mut go = unsafe { std::fs::File::from_raw_fd(GO_FD) };
        let n = go.read(&mut b).unwrap_or(0);
        if n != 1 {
            return Err((
                "waiting for the run's network",
                io::Error::other("telejob could not attach the outbound link"),
            ));
        }
    }
    let programs = at(
        "preparing the system call filter",
        super::seccomp::programs(),
    )?;
    let job = prepare_job(&plan.job)?;
    // SAFETY: fork(2); the child only runs `exec_job`, which execs or exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(("forking the job", io::Error::last_os_error()));
    }
    if pid == 0 {
        exec_job(&plan.job, &job, &programs);
    }
    Ok(reap(pid))
}

/// The job's argv and env as C strings.
struct JobArgs {
    argv: Vec<CString>,
    env: Vec<CString>,
    cwd: CString,
}

fn prepare_job(j: &JobPlan) -> Step<JobArgs> {
    let c = |b: &Vec<u8>| {
        CString::new(b.clone()).map_err(|_| {
            (
                "preparing the job",
                io::Error::from(io::ErrorKind::InvalidInput),
            )
        })
    };
    Ok(JobArgs {
        argv: j.argv.iter().map(c).collect::<Step<_>>()?,
        env: j.env.iter().map(c).collect::<Step<_>>()?,
        cwd: at("preparing the job", cstr(&j.cwd))?,
    })
}

/// The job's process: its limits, a session keyring of its own, `no_new_privs`, the filter,
/// then exec. Never returns.
fn exec_job(plan: &JobPlan, job: &JobArgs, programs: &[seccompiler::BpfProgram]) -> ! {
    let fail = |step: &str| -> ! {
        report(step, &io::Error::last_os_error());
        // SAFETY: _exit(2).
        unsafe { libc::_exit(SETUP_FAILED) }
    };
    // SAFETY (block): system calls on this process with arguments made before the fork.
    unsafe {
        let limits = plan.rlimits.iter().map(|&(res, v)| (res as _, v));
        if !super::supervise::job_process_defaults(limits) {
            fail("setting the run's resource limits");
        }
        if libc::chdir(job.cwd.as_ptr()) != 0 {
            fail("entering the code directory");
        }
        // KEYCTL_JOIN_SESSION_KEYRING with no name: a new anonymous session keyring, the
        // run's alone.
        if libc::syscall(libc::SYS_keyctl, 1, std::ptr::null::<libc::c_char>()) < 0 {
            fail("making the run's session keyring");
        }
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
        if let Err(e) = super::seccomp::install(programs) {
            report("installing the system call filter", &e);
            libc::_exit(SETUP_FAILED);
        }
        let (argv, envp) = (null_terminated(&job.argv), null_terminated(&job.env));
        libc::execve(argv[0], argv.as_ptr(), envp.as_ptr());
        fail("starting /bin/bash in the machine (does the image have bash?)");
    }
}

/// Reaps every process until the job ends; reports its status on [`STATUS_FD`]. Returns the
/// init's exit code (0: the status was reported).
fn reap(job: libc::pid_t) -> i32 {
    loop {
        let mut st = 0;
        // SAFETY: waitpid(2) into a local.
        let w = unsafe { libc::waitpid(-1, &mut st, 0) };
        if w == job {
            // SAFETY: the status descriptor is the supervisor's pipe, given at a fixed number.
            let mut f = unsafe { std::fs::File::from_raw_fd(STATUS_FD) };
            let _ = f.write_all(&st.to_ne_bytes());
            std::mem::forget(f);
            return 0;
        }
        if w < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return 0;
        }
    }
}

/// Steps 1–3: the machine's mounts, its root, its name and loopback.
fn machine(plan: &InitPlan) -> Step<()> {
    let root = &plan.root;
    at(
        "making the run's mounts private",
        mount_flags(
            Path::new("none"),
            Path::new("/"),
            libc::MS_REC | libc::MS_PRIVATE,
        ),
    )?;
    // The root as telejob mounted it is locked in this namespace (made by the host's), and a
    // locked mount cannot become the root: a bind of it, made here, can.
    at(
        "binding the machine's root",
        mount_flags(root, root, libc::MS_BIND | libc::MS_REC),
    )?;
    let nosuid = libc::MS_NOSUID | libc::MS_NODEV;
    at(
        "mounting the machine's /proc",
        mount(
            "proc",
            &root.join("proc"),
            "proc",
            nosuid | libc::MS_NOEXEC,
            "",
        ),
    )?;
    let dev = root.join("dev");
    mount_fresh(
        "mounting the machine's /dev",
        &dev,
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NOEXEC,
        "mode=755,size=4m",
    )?;
    for n in ["null", "zero", "full", "random", "urandom", "tty"] {
        let node = dev.join(n);
        at("making the machine's devices", std::fs::write(&node, b""))?;
        at(
            "making the machine's devices",
            bind(&Path::new("/dev").join(n), &node),
        )?;
    }
    mount_fresh(
        "mounting the machine's /dev/pts",
        &dev.join("pts"),
        "devpts",
        libc::MS_NOSUID | libc::MS_NOEXEC,
        "newinstance,ptmxmode=0666,mode=0620",
    )?;
    let links = [
        ("pts/ptmx", "ptmx"),
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
    ];
    for (target, name) in links {
        at(
            "making the machine's /dev links",
            std::os::unix::fs::symlink(target, dev.join(name)),
        )?;
    }
    mount_fresh(
        "mounting the machine's /dev/shm",
        &dev.join("shm"),
        "tmpfs",
        nosuid,
        &format!("mode=1777,size={}", plan.shm_bytes.max(1 << 20)),
    )?;
    // /sys and the run's cgroup: best effort (a host without them still runs jobs).
    let sys = root.join("sys");
    if std::fs::create_dir_all(&sys).is_ok()
        && mount(
            "sysfs",
            &sys,
            "sysfs",
            nosuid | libc::MS_NOEXEC | libc::MS_RDONLY,
            "",
        )
        .is_ok()
    {
        let cg = sys.join("fs/cgroup");
        let _ = mount("cgroup2", &cg, "cgroup2", nosuid | libc::MS_NOEXEC, "");
    }
    let etc = root.join("etc");
    at("making the machine's /etc", std::fs::create_dir_all(&etc))?;
    at(
        "writing the machine's /etc/hostname",
        write_file(&etc.join("hostname"), &format!("{}\n", plan.hostname)),
    )?;
    at(
        "writing the machine's /etc/hosts",
        write_file(
            &etc.join("hosts"),
            &format!(
                "127.0.0.1\tlocalhost {h}\n::1\tlocalhost ip6-localhost ip6-loopback {h}\n",
                h = plan.hostname
            ),
        ),
    )?;
    if let Some(r) = &plan.resolv_conf {
        at(
            "writing the machine's /etc/resolv.conf",
            write_file(&etc.join("resolv.conf"), r),
        )?;
    }
    // Enter the root, then let go of the host's tree.
    let r = at("entering the machine's root", cstr(root))?;
    // SAFETY: chdir, pivot_root and umount2 with NUL-terminated paths.
    unsafe {
        at(
            "entering the machine's root",
            check(libc::chdir(r.as_ptr())),
        )?;
        at(
            "entering the machine's root (pivot_root)",
            check(libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) as libc::c_int),
        )?;
        at(
            "letting go of the host's file systems",
            check(libc::umount2(c".".as_ptr(), libc::MNT_DETACH)),
        )?;
        at(
            "entering the machine's root",
            check(libc::chdir(c"/".as_ptr())),
        )?;
        let name = plan.hostname.as_bytes();
        at(
            "setting the machine's host name",
            check(libc::sethostname(name.as_ptr().cast(), name.len())),
        )?;
    }
    if !super::supervise::bring_loopback_up() {
        return Err((
            "bringing loopback up in the machine",
            io::Error::last_os_error(),
        ));
    }
    Ok(())
}
