//! A throwaway PostgreSQL cluster for the tests: Debian's server binaries (off `PATH`, under
//! `/usr/lib/postgresql/<version>/bin`), `initdb` into a temporary directory as a non-root user
//! (`postgres` when the tests run as root), a free local port, trust authentication on
//! 127.0.0.1 only. One cluster per test binary, started on first use, and gone with the test
//! process (parent-death signal, and an exit hook that removes its directory). No mock.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A running cluster.
#[derive(Debug)]
pub struct Postgres {
    bin: PathBuf,
    port: u16,
}

static CLUSTER: OnceLock<Result<Postgres, String>> = OnceLock::new();
static PID: AtomicI32 = AtomicI32::new(0);
static DIR: OnceLock<PathBuf> = OnceLock::new();

/// The cluster, started on first use; `None` (with a message on stderr) where PostgreSQL is not
/// installed. With `TELEJOB_REQUIRE_POSTGRES=1` (CI), a cluster that cannot start fails the test.
pub fn postgres() -> Option<&'static Postgres> {
    match CLUSTER.get_or_init(start) {
        Ok(p) => Some(p),
        Err(why) => {
            assert!(
                std::env::var_os("TELEJOB_REQUIRE_POSTGRES").is_none_or(|v| v != "1"),
                "TELEJOB_REQUIRE_POSTGRES=1 but no PostgreSQL cluster: {why}"
            );
            eprintln!("skipped: no PostgreSQL here ({why}); install Debian's postgresql package");
            None
        }
    }
}

impl Postgres {
    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A new, empty database; returns its URL.
    ///
    /// # Panics
    ///
    /// When the database cannot be created.
    pub fn new_database(&self) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "t{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        self.psql(&format!("CREATE DATABASE {name}"));
        self.url(&name)
    }

    /// The URL of database `name`, through `port` (the cluster's own, or a proxy's).
    pub fn url_via(&self, port: u16, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{port}/{name}")
    }

    fn url(&self, name: &str) -> String {
        self.url_via(self.port, name)
    }

    /// Runs one SQL statement as the superuser, in database `postgres`.
    ///
    /// # Panics
    ///
    /// When it fails.
    pub fn psql(&self, sql: &str) -> String {
        self.psql_in("postgres", sql)
    }

    /// Runs one SQL statement in database `db`; returns its unaligned output.
    ///
    /// # Panics
    ///
    /// When it fails.
    pub fn psql_in(&self, db: &str, sql: &str) -> String {
        let out = telejob_core::testing::output_of(
            Command::new(self.bin.join("psql"))
                .args([
                    "-X",
                    "-q",
                    "-A",
                    "-t",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-h",
                    "127.0.0.1",
                    "-U",
                    "postgres",
                ])
                .args(["-p", &self.port.to_string(), "-d", db, "-c", sql]),
            &format!("psql {sql:?}"),
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

/// The newest installed server's binaries.
fn bin_dir() -> Result<PathBuf, String> {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| format!("/usr/lib/postgresql: {e}"))?
        .filter_map(|e| {
            let e = e.ok()?;
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    dirs.sort();
    dirs.pop()
        .map(|(_, d)| d)
        .ok_or_else(|| "no /usr/lib/postgresql/<version>/bin/initdb".to_string())
}

/// The user the cluster runs as: `postgres` when we are root (initdb refuses root), else us.
fn cluster_user() -> Result<Option<(u32, u32)>, String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let name = c"postgres";
    // SAFETY: a valid C string; the result is read at once, before any other getpw call.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return Err("running as root and there is no postgres user".into());
    }
    // SAFETY: pw is non-null and points to a static passwd record.
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    Ok(Some((uid, gid)))
}

fn as_cluster_user(cmd: &mut Command, user: Option<(u32, u32)>) -> &mut Command {
    if let Some((u, g)) = user {
        cmd.uid(u).gid(g);
    }
    cmd
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

extern "C" fn stop_cluster() {
    let pid = PID.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: signalling a child we started. SIGQUIT: immediate shutdown.
        unsafe { libc::kill(pid, libc::SIGQUIT) };
        let deadline = Instant::now() + Duration::from_secs(5);
        // SAFETY: kill with signal 0 only probes.
        while unsafe { libc::kill(pid, 0) } == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    if let Some(d) = DIR.get() {
        let _ = std::fs::remove_dir_all(d);
    }
}

fn start() -> Result<Postgres, String> {
    let bin = bin_dir()?;
    let user = cluster_user()?;
    let dir = tempfile::Builder::new()
        .prefix("telejob-pg-")
        .tempdir()
        .map_err(|e| e.to_string())?
        .keep();
    let _ = DIR.set(dir.clone());
    let data = dir.join("data");
    let sock = dir.join("sock");
    std::fs::create_dir_all(&sock).map_err(|e| e.to_string())?;
    if let Some((u, g)) = user {
        for p in [&dir, &sock] {
            std::os::unix::fs::chown(p, Some(u), Some(g))
                .map_err(|e| format!("{}: {e}", p.display()))?;
        }
    }
    let out = as_cluster_user(Command::new(bin.join("initdb")).current_dir(&dir), user)
        .args(["-D"])
        .arg(&data)
        .args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-sync",
        ])
        .output()
        .map_err(|e| format!("initdb: {e}"))?;
    if !out.status.success() {
        return Err(format!("initdb: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let port = free_port()?;
    let mut cmd = Command::new(bin.join("postgres"));
    as_cluster_user(cmd.current_dir(&dir), user)
        .arg("-D")
        .arg(&data)
        .args(["-p", &port.to_string(), "-k"])
        .arg(&sock)
        .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
        .args(["-c", "synchronous_commit=off", "-c", "full_page_writes=off"])
        .args(["-c", "max_connections=400"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("postgres.log")).map_err(|e| e.to_string())?);
    // SAFETY: prctl is async-signal-safe; run between fork and exec, after the UID change
    // (which would reset the parent-death signal).
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // The parent-death signal follows the *thread* that forked: fork from one that lives as
    // long as the cluster.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || match cmd.spawn() {
        Ok(mut child) => {
            let _ = tx.send(Ok(child.id()));
            let _ = child.wait();
        }
        Err(e) => {
            let _ = tx.send(Err(format!("postgres: {e}")));
        }
    });
    let pid = rx.recv().map_err(|e| e.to_string())??;
    PID.store(pid as i32, Ordering::SeqCst);
    // SAFETY: registering a plain extern "C" function.
    unsafe { libc::atexit(stop_cluster) };
    let pg = Postgres { bin, port };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ok = Command::new(pg.bin.join("pg_isready"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                "postgres",
                "-q",
            ])
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Ok(pg);
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.join("postgres.log")).unwrap_or_default();
            return Err(format!("the cluster did not start in 30 s: {log}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A TCP proxy the test owns, in front of the cluster: cutting it silently stops every byte
/// both ways (connections stay open, nothing flows, new ones hang), as a network partition
/// does; healing it lets new connections through again.
#[derive(Debug)]
pub struct Proxy {
    port: u16,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Proxy {
    /// A proxy to 127.0.0.1:`target`.
    ///
    /// # Panics
    ///
    /// When it cannot listen.
    pub fn start(target: u16) -> Self {
        use std::sync::Arc;
        use std::sync::atomic::AtomicBool;
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("proxy listens");
        let port = l.local_addr().expect("addr").port();
        let cut = Arc::new(AtomicBool::new(false));
        let c = cut.clone();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(down) = conn else { continue };
                let c = c.clone();
                std::thread::spawn(move || {
                    while c.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    let Ok(up) = std::net::TcpStream::connect(("127.0.0.1", target)) else {
                        return;
                    };
                    let pipe = |mut from: std::net::TcpStream,
                                mut to: std::net::TcpStream,
                                c: Arc<AtomicBool>| {
                        use std::io::{Read, Write};
                        let mut buf = [0u8; 16384];
                        loop {
                            let n = match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            // A cut holds the bytes back for ever: the connection is dead
                            // without either side being told.
                            while c.load(Ordering::SeqCst) {
                                std::thread::sleep(Duration::from_millis(50));
                                if !c.load(Ordering::SeqCst) {
                                    return;
                                }
                            }
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    };
                    let (d2, u2) = (
                        down.try_clone().expect("clone"),
                        up.try_clone().expect("clone"),
                    );
                    let c2 = c.clone();
                    std::thread::spawn(move || pipe(d2, u2, c2));
                    pipe(up, down, c);
                });
            }
        });
        Self { port, cut }
    }

    /// Where clients connect.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Cuts (`true`) or heals (`false`) the link.
    pub fn set_cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::SeqCst);
    }
}
