//! A run as a machine of its own, through the real binary on a root host: root of a user
//! namespace on a throwaway overlay of the default image, its own network and disk, nothing
//! shared with other runs or the host.
//!
//! These tests need root and a built default image (`TELEJOB_IMAGES_DIR`, which `.ci/run`
//! builds once and caches); they skip without, unless `TELEJOB_REQUIRE_MACHINES` is set.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use telejob_e2e::{tarball, telejob_bin};

/// The images directory with a built default image, or why the tests skip.
fn images() -> Option<PathBuf> {
    let root = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    let dir = std::env::var_os("TELEJOB_IMAGES_DIR").map(PathBuf::from);
    let built = dir
        .as_ref()
        .is_some_and(|d| d.join("default/.telejob-image").is_file());
    if root && built {
        return dir;
    }
    assert!(
        std::env::var_os("TELEJOB_REQUIRE_MACHINES").is_none(),
        "TELEJOB_REQUIRE_MACHINES is set but {}",
        if root {
            "TELEJOB_IMAGES_DIR has no built default image (telejob image build --images-dir DIR)"
        } else {
            "the tests do not run as root"
        }
    );
    eprintln!("skipped: needs root and TELEJOB_IMAGES_DIR with a built default image");
    None
}

/// A directory for one test's runs, with a tarball `c.tgz` whose `run.sh` is `script`.
struct Place {
    dir: tempfile::TempDir,
    images: PathBuf,
}

impl Place {
    fn new(images: PathBuf) -> Self {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
        Self { dir, images }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `telejob run` of `script` as job `job`, with `extra` flags; not waited for.
    fn start(&self, job: &str, script: &str, extra: &[&str]) -> std::process::Child {
        let code = self.path().join(format!("{job}.tgz"));
        std::fs::write(&code, tarball(&[("run.sh", script, 0o755)])).expect("write");
        Command::new(telejob_bin!())
            .args(["run", "--code"])
            .arg(&code)
            .args(["--job-name", job, "--timeout", "5m", "-q"])
            .args(extra)
            .current_dir(self.path())
            .env("TELEJOB_IMAGES_DIR", &self.images)
            .env_remove("TELEJOB_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("telejob runs")
    }

    /// [`start`](Self::start), waited for.
    fn run(&self, job: &str, script: &str, extra: &[&str]) -> Output {
        self.start(job, script, extra)
            .wait_with_output()
            .expect("telejob ends")
    }

    /// The file `name` job `job` published.
    fn published(&self, job: &str, name: &str) -> String {
        let p = self
            .path()
            .join("telejob-output")
            .join(job)
            .join("data")
            .join(name);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    /// The log of job `job`'s latest run.
    fn log(&self, job: &str) -> String {
        let runs = self.path().join("telejob-private").join(job).join("runs");
        let mut dirs: Vec<_> = std::fs::read_dir(&runs)
            .expect("runs")
            .flatten()
            .map(|e| e.path())
            .collect();
        dirs.sort();
        std::fs::read_to_string(dirs.last().expect("a run").join("log.txt")).expect("log")
    }
}

fn ok(o: &Output) {
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn a_run_is_root_of_its_own_machine_and_what_it_installs_goes_with_it() {
    let Some(images) = images() else { return };
    let p = Place::new(images);
    let install = r#"set -e
mkdir output
id -u > output/uid
head -1 /proc/self/uid_map > output/uid_map
apt-get install -y -q jq
echo '{"answer": 42}' | jq .answer > output/jq
touch f && chown 1234:1234 f && stat -c %u:%g f > output/chown
pip install -q --disable-pip-version-check six==1.16.0
python3 -c 'import six; print(six.__version__)' > output/six
"#;
    let o = p.run("installer", install, &[]);
    ok(&o);
    assert_eq!(p.published("installer", "uid"), "0\n");
    assert_eq!(p.published("installer", "jq"), "42\n");
    assert_eq!(p.published("installer", "chown"), "1234:1234\n");
    // pip installs system-wide (the machine is the job's: no PEP 668 guard).
    assert_eq!(p.published("installer", "six"), "1.16.0\n");
    // uid 0 inside is the first UID of a leased block outside: not the host's root.
    let map: Vec<u64> = p
        .published("installer", "uid_map")
        .split_whitespace()
        .map(|n| n.parse().expect("number"))
        .collect();
    assert_eq!(map[0], 0);
    assert!(
        map[1] >= 0x7010_0000,
        "block base {} is in the documented range",
        map[1]
    );
    assert_eq!(map[2], 65_536);
    let log = p.log("installer");
    assert!(
        log.starts_with("telejob: a machine of its own: image default"),
        "the log says what the machine is: {log}"
    );
    // The next run starts from the image again.
    let again = "mkdir output; (command -v jq || echo absent) > output/jq; \
                 (python3 -c 'import six' 2>/dev/null && echo present || echo absent) > output/six";
    ok(&p.run("installer", again, &[]));
    assert_eq!(p.published("installer", "jq"), "absent\n");
    assert_eq!(p.published("installer", "six"), "absent\n");
}

#[test]
fn a_run_sees_its_own_machine_not_the_host() {
    let Some(images) = images() else { return };
    let p = Place::new(images);
    let secret = p.path().join("secret");
    std::fs::write(&secret, "hunter2").expect("write");
    let script = format!(
        r#"mkdir output
cat /proc/self/mountinfo > output/mountinfo
find /sys/fs/cgroup -mindepth 1 -type d | wc -l > output/cgroups
tr '\0' ' ' < /proc/1/cmdline > output/pid1
grep VmRSS /proc/1/status | tr -dc 0-9 > output/pid1_rss_kib
(cat {} 2>&1 || true) > output/secret
ls /run /var/run > output/run 2>&1 || true
"#,
        secret.display()
    );
    ok(&p.run("viewer", &script, &["--disk", "256MiB"]));
    let mountinfo = p.published("viewer", "mountinfo");
    for host in [p.path().to_str().expect("utf-8"), "/tmp/", "telejob-run-"] {
        assert!(
            !mountinfo.contains(host),
            "mountinfo shows {host}:\n{mountinfo}"
        );
    }
    assert_eq!(
        p.published("viewer", "cgroups").trim(),
        "0",
        "/sys/fs/cgroup shows groups other than the run's own"
    );
    assert!(
        p.published("viewer", "pid1").starts_with("telejob-init "),
        "PID 1 is the exec'd init"
    );
    let rss: u64 = p.published("viewer", "pid1_rss_kib").parse().expect("kib");
    assert!(
        rss < 64 << 10,
        "PID 1 holds {rss} KiB: not a fork of telejob's memory"
    );
    assert!(
        p.published("viewer", "secret").contains("No such file"),
        "the host's files are not in the machine"
    );
    // No host socket is in the machine's /run: nothing listens that the job did not start.
    let run = p.published("viewer", "run");
    assert!(
        !run.contains("postgresql") && !run.contains("dbus"),
        "{run}"
    );
}

/// A network namespace standing in for the internet: a TCP server at 198.51.100.1 that
/// answers `hello`, reached from the host over a veth pair. Removed on drop.
struct Internet {
    name: String,
    port: u16,
}

impl Internet {
    fn start() -> Self {
        let name = format!("tj-inet-{}", std::process::id());
        let host_if = format!("tjh{}", std::process::id() % 100_000);
        let sh = |cmd: &str| {
            let o = Command::new("sh").args(["-c", cmd]).output().expect("sh");
            assert!(
                o.status.success(),
                "{cmd}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        };
        sh(&format!(
            "ip netns add {name} && ip link add {host_if} type veth peer name eth0 netns {name} \
             && ip addr add 198.51.100.2/24 dev {host_if} && ip link set {host_if} up \
             && ip -n {name} addr add 198.51.100.1/24 dev eth0 && ip -n {name} link set eth0 up \
             && ip -n {name} link set lo up"
        ));
        let (tx, rx) = std::sync::mpsc::channel();
        let ns = format!("/run/netns/{name}");
        std::thread::spawn(move || {
            let f = std::fs::File::open(&ns).expect("netns");
            // SAFETY: setns(2) on this thread only, with a descriptor that lives through it.
            let r = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns");
            let l = TcpListener::bind("198.51.100.1:0").expect("bind");
            tx.send(l.local_addr().expect("addr").port()).expect("send");
            for mut s in l.incoming().flatten() {
                let _ = s.write_all(b"hello\n");
            }
        });
        let port = rx.recv_timeout(Duration::from_secs(10)).expect("listening");
        Self { name, port }
    }
}

impl Drop for Internet {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

#[test]
fn two_tenants_reach_the_internet_but_not_each_other_nor_the_host() {
    let Some(images) = images() else { return };
    let p = Place::new(images);
    let internet = Internet::start();
    // The server's port, on loopback and on every address; a host unix socket.
    let server = TcpListener::bind("0.0.0.0:0").expect("bind");
    let server_port = server.local_addr().expect("addr").port();
    let sock = p.path().join("host.sock");
    let _unix = std::os::unix::net::UnixListener::bind(&sock).expect("unix");
    let host_ip = Command::new("sh")
        .args([
            "-c",
            "ip -4 -o addr show scope global | awk '{print $4}' | cut -d/ -f1 | head -1",
        ])
        .output()
        .expect("ip");
    let host_ip = String::from_utf8_lossy(&host_ip.stdout).trim().to_string();
    // Tenant A serves TCP on 8765 and an abstract unix socket, and checks it reaches both
    // itself; it serves for a while so that B's tries come while it is up.
    let serve = r#"mkdir output
python3 - <<'EOF'
import socket, threading, time
t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind(("0.0.0.0", 8765)); t.listen()
u = socket.socket(socket.AF_UNIX); u.bind("\0tenant-a"); u.listen()
def accept(s):
    while True:
        c, _ = s.accept(); c.sendall(b"secret-of-a\n"); c.close()
for s in (t, u): threading.Thread(target=accept, args=(s,), daemon=True).start()
own = []
c = socket.create_connection(("127.0.0.1", 8765)); own.append(c.recv(64).decode().strip())
c = socket.socket(socket.AF_UNIX); c.connect("\0tenant-a"); own.append(c.recv(64).decode().strip())
open("output/own", "w").write(" ".join(own) + "\n")
time.sleep(12)
EOF
"#;
    let a = p.start("tenant-a", serve, &[]);
    std::thread::sleep(Duration::from_secs(3));
    let probe = format!(
        r#"mkdir output
python3 - <<'EOF' > output/probes
import socket
def tcp(host, port):
    try:
        s = socket.create_connection((host, port), timeout=3); return "reached:" + s.recv(64).decode().strip()
    except OSError as e: return "refused"
def unix(addr):
    try:
        s = socket.socket(socket.AF_UNIX); s.settimeout(3); s.connect(addr); return "reached"
    except OSError as e: return "refused"
print("internet", tcp("198.51.100.1", {inet}))
print("a-loopback", tcp("127.0.0.1", 8765))
print("a-abstract", unix("\0tenant-a"))
print("server-loopback", tcp("127.0.0.1", {server}))
print("server-host", tcp("{host_ip}", {server}))
print("metadata", tcp("169.254.169.254", 80))
print("host-socket", unix("{sock}"))
EOF
"#,
        inet = internet.port,
        server = server_port,
        sock = sock.display(),
    );
    let b = p.run("tenant-b", &probe, &[]);
    let a = a.wait_with_output().expect("a ends");
    ok(&a);
    ok(&b);
    assert_eq!(p.published("tenant-a", "own"), "secret-of-a secret-of-a\n");
    let probes = p.published("tenant-b", "probes");
    assert!(probes.contains("internet reached:hello"), "{probes}");
    for line in probes.lines().filter(|l| !l.starts_with("internet")) {
        assert!(
            line.ends_with("refused"),
            "tenant b reached what it must not: {line}\n{probes}"
        );
    }
    // With network off, not even the internet.
    let off = format!(
        "mkdir output; (exec 3<>/dev/tcp/198.51.100.1/{} && echo reached || echo refused) > output/inet 2>/dev/null",
        internet.port
    );
    ok(&p.run("offline", &off, &["--network", "off"]));
    assert_eq!(p.published("offline", "inet"), "refused\n");
}

#[test]
fn a_full_disk_is_the_runs_alone() {
    let Some(images) = images() else { return };
    let p = Place::new(images);
    // Files open but deleted, and fallocate: the disk is a file system of the limit.
    let filler = r#"mkdir output
for i in 1 2 3 4; do
  exec {fd}>/run/telejob/work/tmp/big$i; rm /run/telejob/work/tmp/big$i
  dd if=/dev/zero bs=1M count=40 >&$fd 2>/dev/null
done
fallocate -l 1G /tmp/huge
"#;
    let steady = r#"mkdir output
sleep 2
dd if=/dev/zero of=output/ten bs=1M count=10 2>/dev/null
stat -c %s output/ten > output/size
"#;
    let fill = p.start("filler", filler, &["--disk", "64MiB"]);
    let other = p.run("steady", steady, &["--disk", "64MiB"]);
    let fill = fill.wait_with_output().expect("filler ends");
    ok(&other);
    assert_eq!(p.published("steady", "size"), "10485760\n");
    assert_eq!(fill.status.code(), Some(1));
    let err = String::from_utf8_lossy(&fill.stderr);
    assert!(
        err.contains("workspace full: limit 64 MiB (limits.disk)"),
        "the run says its disk is full: {err}"
    );
    let log = p.log("filler");
    assert!(log.contains("No space left on device"), "{log}");
}

#[test]
fn keys_do_not_cross_runs() {
    let Some(images) = images() else { return };
    let p = Place::new(images);
    let plant = r#"mkdir output
python3 - <<'EOF' > output/planted
import ctypes, platform, time
nr = {"x86_64": 248, "aarch64": 217}[platform.machine()]
libc = ctypes.CDLL(None, use_errno=True)
def add(ring):
    r = libc.syscall(nr, b"user", b"tj-planted", b"hunter2", 7, ring)
    return "ok" if r > 0 else "denied"
print("session", add(-3))
print("user", add(-4))
print("user-session", add(-5))
time.sleep(6)
EOF
"#;
    let look = "mkdir output; (grep -c tj-planted /proc/keys || true) > output/seen";
    let planter = p.start("planter", plant, &[]);
    std::thread::sleep(Duration::from_secs(3));
    ok(&p.run("concurrent", look, &[]));
    ok(&planter.wait_with_output().expect("planter ends"));
    assert_eq!(
        p.published("planter", "planted"),
        "session ok\nuser denied\nuser-session denied\n"
    );
    assert_eq!(p.published("concurrent", "seen"), "0\n");
    // The planter's block is free again: the next run may lease it.
    ok(&p.run("planter", look, &[]));
    assert_eq!(p.published("planter", "seen"), "0\n");
}

#[test]
fn without_namespaces_the_log_says_what_is_not_isolated() {
    let Some(images) = images() else { return };
    let p = Place::new(images);
    ok(&p.run("plain", "mkdir output", &["--namespaces", "off"]));
    let log = p.log("plain");
    assert!(
        log.starts_with("telejob: runs are not machines of their own (namespaces = off)"),
        "{log}"
    );
}
