//! Processes that try to outlive their run, in both containment modes.

use std::collections::BTreeMap;
use std::time::Instant;

use super::*;
use crate::sandbox::job_environment;
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
    let out = execute(
        f.spec("env", Duration::from_secs(30)),
        &opts(CgroupMode::Auto),
    )
    .await
    .expect("runs");
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
        let out = execute(
            f.spec(
                "(sleep 0.01 &) ; sleep 0.01 & true",
                Duration::from_secs(30),
            ),
            &opts(CgroupMode::Auto),
        )
        .await
        .expect("runs");
        assert_eq!(out.exit, ExitKind::Exited(0));
    }
    let me = std::process::id().to_string();
    let zombies: Vec<String> = std::fs::read_dir("/proc")
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
        .collect();
    assert!(zombies.is_empty(), "zombie children: {zombies:?}");
}

#[tokio::test]
async fn a_missing_command_is_the_jobs_failure() {
    let f = Fixture::new();
    let out = execute(
        f.spec("./no-such-script.sh", Duration::from_secs(30)),
        &opts(CgroupMode::Auto),
    )
    .await
    .expect("runs");
    assert_eq!(out.exit, ExitKind::Exited(127));
    assert!(
        f.log().contains("no-such-script.sh"),
        "bash explains it in the log"
    );
}
