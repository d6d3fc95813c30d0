//! Processes that try to outlive their run, in both containment modes.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use super::*;
use crate::agent::sandbox::job_environment;
use crate::testing::processes_with;

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// Runs `command` under 30 s with the host's default containment.
    async fn run(&self, command: &str) -> ExecOutcome {
        execute(
            self.spec(command, Duration::from_secs(30)),
            &opts(CgroupMode::Auto),
        )
        .await
        .expect("runs")
    }

    fn spec(&self, command: &str, timeout: Duration) -> ExecSpec {
        let run_id = crate::run::RunId::new().to_string();
        let env = job_environment(
            &BTreeMap::new(),
            &[("TELEJOB_RUN_ID", run_id.clone())],
            self.dir.path(),
            self.dir.path(),
            None,
        );
        ExecSpec {
            command: command.into(),
            cwd: self.dir.path().into(),
            env,
            timeout,
            run_id,
            log_path: self.dir.path().join("log"),
            events: None,
            cancel: CancellationToken::new(),
            confinement: Confinement::default(),
            mask: Vec::new(),
            preamble: String::new(),
            interactive: false,
        }
    }

    fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(self.dir.path().join("log")).expect("log"))
            .into_owned()
    }
}

fn opts(cgroup: CgroupMode) -> SandboxOptions {
    SandboxOptions {
        cgroup,
        kill_grace: Duration::from_millis(500),
        ..SandboxOptions::default()
    }
}

/// The modes to test: tracking always; cgroup where the host allows it (required in CI).
fn modes() -> Vec<CgroupMode> {
    let mut m = vec![CgroupMode::Off];
    match super::super::cgroup::RunCgroup::create(&format!("probe-{}", crate::run::RunId::new())) {
        Ok(_) => m.push(CgroupMode::Required),
        Err(e) if std::env::var_os("TELEJOB_REQUIRE_CGROUP").is_some() => {
            panic!("TELEJOB_REQUIRE_CGROUP is set but no cgroup can be made: {e}")
        }
        Err(e) => eprintln!("skipping cgroup mode: {e}"),
    }
    m
}

async fn escapes_are_killed(mode: CgroupMode, token: &str, command: &str) {
    let f = Fixture::new();
    let started = Instant::now();
    let out = execute(f.spec(command, Duration::from_secs(1)), &opts(mode))
        .await
        .expect("runs");
    assert_eq!(out.exit, ExitKind::TimedOut, "{mode:?}: {command}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{mode:?}: took {:?}",
        started.elapsed()
    );
    assert_eq!(out.survivors, 0, "{mode:?}: {command}");
    assert_eq!(
        processes_with(token),
        Vec::<i32>::new(),
        "{mode:?}: {command} left processes behind"
    );
    let want = if mode == CgroupMode::Off {
        Containment::Tracked
    } else {
        Containment::Cgroup
    };
    assert_eq!(out.containment, want);
}

#[tokio::test]
async fn a_timeout_kills_everything_the_job_started() {
    for mode in modes() {
        for (token, command) in [
            ("601.11", "sleep 601.11"),
            ("601.12", "setsid sleep 601.12 & disown; sleep 601.12"),
            ("601.13", "( ( sleep 601.13 & ) & ); sleep 601.13"),
            (
                "601.14",
                "nohup sleep 601.14 >/dev/null 2>&1 & disown; sleep 601.14",
            ),
            (
                "601.15",
                "trap '' TERM; sleep 601.15 & trap '' TERM; wait; sleep 601.15",
            ),
            (
                "601.16",
                "bash -c 'trap \"\" TERM; while true; do sleep 601.16; done' & wait",
            ),
        ] {
            escapes_are_killed(mode, token, command).await;
        }
    }
}

#[tokio::test]
async fn the_cgroup_catches_a_process_that_drops_every_marker() {
    if !modes().contains(&CgroupMode::Required) {
        return;
    }
    escapes_are_killed(
        CgroupMode::Required,
        "601.21",
        "setsid env -i sleep 601.21 & disown; sleep 601.21",
    )
    .await;
}

#[tokio::test]
async fn leftovers_die_when_the_main_process_exits_and_cannot_hang_the_run() {
    for mode in modes() {
        let f = Fixture::new();
        // The background sleep keeps stdout open; the run must still end at once.
        let started = Instant::now();
        let out = execute(
            f.spec(
                "sleep 602.31 & echo started; exit 3",
                Duration::from_secs(60),
            ),
            &opts(mode),
        )
        .await
        .expect("runs");
        assert_eq!(out.exit, ExitKind::Exited(3));
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{mode:?}: hung for {:?}",
            started.elapsed()
        );
        assert_eq!(processes_with("602.31"), Vec::<i32>::new());
        assert!(f.log().contains("started"));
    }
}

#[tokio::test]
async fn cancel_uses_the_same_path() {
    for mode in modes() {
        let f = Fixture::new();
        let spec = f.spec(
            "setsid sleep 603.41 & sleep 603.41",
            Duration::from_secs(600),
        );
        let cancel = spec.cancel.clone();
        let run = tokio::spawn(async move { execute(spec, &opts(mode)).await });
        // Cancel once the job is visibly running.
        while processes_with("603.41").len() < 2 {
            tokio::task::yield_now().await;
        }
        cancel.cancel();
        let out = run.await.expect("join").expect("runs");
        assert_eq!(out.exit, ExitKind::Cancelled);
        assert_eq!(processes_with("603.41"), Vec::<i32>::new());
    }
}

#[tokio::test]
async fn output_floods_are_drained_and_capped_visibly() {
    let f = Fixture::new();
    let mut o = opts(CgroupMode::Auto);
    o.log_cap_bytes = 1 << 20;
    // 20 MB on stdout and stderr at once, then a last line.
    let cmd = "head -c 10000000 /dev/zero | tr '\\0' a & head -c 10000000 /dev/zero | tr '\\0' b >&2; wait; echo THE-END";
    let out = execute(f.spec(cmd, Duration::from_secs(60)), &o)
        .await
        .expect("runs");
    assert_eq!(out.exit, ExitKind::Exited(0));
    assert!(out.log.truncated());
    assert_eq!(out.log.produced, 20_000_000 + 8);
    let log = f.log();
    assert!(log.contains("[telejob: log truncated:"), "marker missing");
    assert!(log.trim_end().ends_with("THE-END"), "the tail is kept");
    assert!(
        log.len() < (1 << 20) + 70 * 1024 + 200,
        "log is {} bytes",
        log.len()
    );
}

#[tokio::test]
async fn the_job_sees_only_the_allowlisted_environment() {
    let f = Fixture::new();
    let out = f.run("env").await;
    assert_eq!(out.exit, ExitKind::Exited(0));
    let log = f.log();
    let keys: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .collect();
    // bash adds PWD, SHLVL and _ itself.
    let allowed = |k: &str| {
        [
            "PATH",
            "LANG",
            "LANGUAGE",
            "TZ",
            "HOME",
            "TMPDIR",
            "SHELL",
            "TELEJOB_RUN_ID",
            "PWD",
            "SHLVL",
            "_",
        ]
        .contains(&k)
            || k.starts_with("LC_")
    };
    let leaked: Vec<_> = keys.iter().filter(|k| !allowed(k)).collect();
    assert!(leaked.is_empty(), "leaked into the job: {leaked:?}");
    // The test process itself has CARGO_* variables: they must not be there.
    assert!(
        std::env::vars().any(|(k, _)| k.starts_with("CARGO")),
        "precondition"
    );
    assert!(keys.contains(&"TELEJOB_RUN_ID"));
}

#[tokio::test]
async fn many_runs_leave_no_zombies() {
    for _ in 0..30 {
        let f = Fixture::new();
        let out = f.run("(sleep 0.01 &) ; sleep 0.01 & true").await;
        assert_eq!(out.exit, ExitKind::Exited(0));
    }
    let me = std::process::id().to_string();
    let scan = || -> Vec<String> {
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
            .filter(|s| {
                s.rsplit_once(')').is_some_and(|(_, r)| {
                    let f: Vec<&str> = r.split_whitespace().collect();
                    f.first() == Some(&"Z") && f.get(1) == Some(&me.as_str())
                })
            })
            .collect()
    };
    // Other tests of this process run children too: one of theirs may be between its exit and
    // its reaping at any instant. A leaked zombie stays; theirs go within moments.
    let mut zombies = scan();
    for _ in 0..40 {
        if zombies.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        zombies = scan();
    }
    assert!(zombies.is_empty(), "zombie children: {zombies:?}");
}

#[tokio::test]
async fn a_missing_command_is_the_jobs_failure() {
    let f = Fixture::new();
    let out = f.run("./no-such-script.sh").await;
    assert_eq!(out.exit, ExitKind::Exited(127));
    assert!(
        f.log().contains("no-such-script.sh"),
        "bash explains it in the log"
    );
}

/// A run in its own namespaces as a UID of its own, with `limits`; `None` (after saying why)
/// where the host cannot (not root), unless `TELEJOB_REQUIRE_NAMESPACES` is set.
struct Isolated {
    f: Fixture,
    work: PathBuf,
    _lease: crate::agent::sandbox::UidLease,
    uid: u32,
}

impl Isolated {
    /// [`Isolated::new`] where memory and process limits can be set too (see
    /// [`limit_controllers`]).
    fn with_limits() -> Option<Self> {
        let iso = Self::new()?;
        limit_controllers().then_some(iso)
    }

    fn new() -> Option<Self> {
        if !super::super::supervise::namespaces_available() {
            assert!(
                std::env::var_os("TELEJOB_REQUIRE_NAMESPACES").is_none(),
                "TELEJOB_REQUIRE_NAMESPACES is set but this host gives no namespaces"
            );
            eprintln!("skipping: namespaces need root");
            return None;
        }
        let f = Fixture::new();
        let range = crate::agent::sandbox::UidRange {
            lock_dir: f.dir.path().join("uids"),
            ..crate::agent::sandbox::UidRange::default()
        };
        let lease = range.lease().expect("lease");
        let uid = lease.uid();
        let work = f.dir.path().join("work");
        for d in ["", "code", "home", "tmp", "var-tmp", "shm"] {
            std::fs::create_dir_all(work.join(d)).expect("mkdir");
        }
        crate::agent::sandbox::chown_tree(&work, uid, uid).expect("chown");
        Some(Self {
            f,
            work,
            _lease: lease,
            uid,
        })
    }

    async fn run(&self, command: &str, limits: crate::limits::ResourceLimits) -> ExecOutcome {
        execute(self.spec(command, limits), &opts(CgroupMode::Auto))
            .await
            .expect("runs")
    }

    fn spec(&self, command: &str, limits: crate::limits::ResourceLimits) -> ExecSpec {
        let mut spec = self.f.spec(command, Duration::from_secs(60));
        spec.cwd = self.work.join("code");
        spec.env
            .push(("HOME".into(), format!("{JOB_ROOT}/home").into()));
        spec.confinement = Confinement {
            ids: Some((self.uid, self.uid)),
            dedicated_ids: true,
            isolation: Some(Isolation {
                work_dir: self.work.clone(),
            }),
            limits,
            disk_root: Some(self.work.clone()),
            machine: None,
            published: None,
        };
        spec
    }
}

#[tokio::test]
async fn an_isolated_run_sees_only_itself_and_writes_only_its_work_directory() {
    let Some(iso) = Isolated::new() else { return };
    let marker = format!("telejob-probe-{}", crate::run::RunId::new());
    let script = format!(
        r#"set -u
echo "uid=$(id -u) gid=$(id -g) groups=$(id -G)"
echo "pwd=$PWD"
echo "procs=$(ls /proc | grep -c '^[0-9]')"
echo "init-environ=$(cat /proc/1/environ >/dev/null 2>&1 && echo readable || echo hidden)"
echo private > /tmp/{marker} && echo "tmp=ok"
echo private > /dev/shm/{marker} && echo "shm=ok"
touch /etc/{marker} 2>/dev/null && echo "etc=WRITABLE" || echo "etc=refused"
touch /run/telejob/{marker} 2>/dev/null && echo "run=WRITABLE" || echo "run=refused"
echo out > {JOB_ROOT}/code/{marker} && echo "work=ok"
"#
    );
    let out = iso.run(&script, Default::default()).await;
    let log = iso.f.log();
    assert_eq!(out.exit, ExitKind::Exited(0), "{log}");
    let uid = iso.uid;
    assert!(
        log.contains(&format!("uid={uid} gid={uid} groups={uid}\n")),
        "{log}"
    );
    assert!(log.contains(&format!("pwd={JOB_ROOT}/code\n")), "{log}");
    // init, bash, and the pipeline's ls and grep: nothing of the host or other runs.
    let procs: usize = log
        .lines()
        .find_map(|l| l.strip_prefix("procs="))
        .and_then(|n| n.parse().ok())
        .expect("procs line");
    assert!(procs <= 5, "the run sees {procs} processes: {log}");
    for want in [
        "init-environ=hidden",
        "tmp=ok",
        "shm=ok",
        "etc=refused",
        "run=refused",
        "work=ok",
    ] {
        assert!(log.contains(want), "{want}: {log}");
    }
    // The private directories held what the job wrote there; the host's did not.
    assert!(iso.work.join("tmp").join(&marker).exists());
    assert!(iso.work.join("shm").join(&marker).exists());
    assert!(!Path::new("/tmp").join(&marker).exists());
    assert!(!Path::new("/dev/shm").join(&marker).exists());
    assert!(iso.work.join("code").join(&marker).exists());
}

#[tokio::test]
async fn network_off_cuts_even_the_hosts_loopback() {
    let Some(iso) = Isolated::new() else { return };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let cmd = format!(
        "exec 3<>/dev/tcp/127.0.0.1/{port} && echo connected || {{ echo refused; exit 7; }}"
    );
    let network = |n| crate::limits::ResourceLimits {
        network: Some(n),
        ..Default::default()
    };
    let on = iso.run(&cmd, network(Network::On)).await;
    assert_eq!(on.exit, ExitKind::Exited(0), "control: {}", iso.f.log());
    let off = iso.run(&cmd, network(Network::Off)).await;
    assert_eq!(off.exit, ExitKind::Exited(7), "{}", iso.f.log());
    // Loopback inside the namespace works.
    let own = iso
        .run(
            "python3 -c 'import socket; s=socket.socket(); s.bind((\"127.0.0.1\", 0)); s.listen(); c=socket.create_connection(s.getsockname()); print(\"loopback-ok\")'",
            network(Network::Off),
        )
        .await;
    assert_eq!(own.exit, ExitKind::Exited(0), "{}", iso.f.log());
}

/// Limit tests need cgroups for memory and processes: required in CI where they are writable.
fn limit_controllers() -> bool {
    let (memory, pids, _) = super::super::cgroup::LimitGroups::support();
    if memory && pids {
        return true;
    }
    assert!(
        std::env::var_os("TELEJOB_REQUIRE_LIMITS").is_none(),
        "TELEJOB_REQUIRE_LIMITS is set but no memory and pids controllers can be used"
    );
    eprintln!("skipping: no memory/pids cgroup controllers");
    false
}

#[tokio::test]
async fn a_memory_hog_ends_with_its_reason() {
    let Some(iso) = Isolated::with_limits() else {
        return;
    };
    let limits = crate::limits::ResourceLimits {
        memory: Some(Bytes::mib(64)),
        ..Default::default()
    };
    let out = iso
        .run(
            "a=$(head -c 400000000 /dev/zero | tr '\\0' a); echo survived",
            limits,
        )
        .await;
    assert_eq!(
        out.exit,
        ExitKind::OverLimit(LimitHit::Memory(Bytes::mib(64))),
        "{}",
        iso.f.log()
    );
    assert!(out.limit_events.oom_kills > 0);
    assert_eq!(
        LimitHit::Memory(Bytes::mib(64)).to_string(),
        "out of memory: limit 64 MiB (limits.memory)"
    );
}

#[tokio::test]
async fn a_fork_bomb_ends_with_its_reason() {
    let Some(iso) = Isolated::with_limits() else {
        return;
    };
    let limits = crate::limits::ResourceLimits {
        processes: Some(20),
        ..Default::default()
    };
    let started = Instant::now();
    let out = iso
        .run(
            "for i in $(seq 100); do sleep 30 & done; wait; echo survived",
            limits,
        )
        .await;
    assert_eq!(
        out.exit,
        ExitKind::OverLimit(LimitHit::Processes(20)),
        "{}",
        iso.f.log()
    );
    assert!(started.elapsed() < Duration::from_secs(45));
}

#[tokio::test]
async fn a_disk_filler_ends_with_its_reason() {
    let Some(iso) = Isolated::new() else { return };
    let limits = crate::limits::ResourceLimits {
        disk: Some(Bytes::mib(20)),
        ..Default::default()
    };
    // Many files under the limit each, together over it: the measurement catches them.
    let out = iso.run("for i in $(seq 60); do head -c 1000000 /dev/zero > /tmp/f$i; done; sleep 20; echo survived",
            limits,).await;
    assert_eq!(
        out.exit,
        ExitKind::OverLimit(LimitHit::Disk(Bytes::mib(20))),
        "{}",
        iso.f.log()
    );
    // One file over the limit: the file-size floor stops it at once.
    let out = iso.run("head -c 50000000 /dev/zero > big", limits).await;
    assert_eq!(
        out.exit,
        ExitKind::OverLimit(LimitHit::Disk(Bytes::mib(20))),
        "{}",
        iso.f.log()
    );
}
