//! The `telejob` binary as a new user meets it.

use std::time::{Duration, Instant};

use telejob_e2e::{assert_workspace_gone, processes_with, repo_root, telejob, telejob_run};

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn the_example_job_publishes_its_dated_file_and_the_manifest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let code = dir.path().join("slowsql-0.3.tar.gz");
    let pkg = telejob!(
        dir.path(),
        &[
            "package",
            &repo_root().join("examples/slowsql").display().to_string(),
            "-o",
            code.to_str().expect("utf8"),
        ],
    );
    assert!(pkg.status.success(), "package: {}", stderr(&pkg));
    let o = telejob!(
        dir.path(),
        &[
            "run",
            "--code",
            "slowsql-0.3.tar.gz",
            "--scheduled-for",
            "2014-03-08T12:00:00Z",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let data = dir
        .path()
        .join("telejob-output/slowsql/data/slowsql20140307.csv.gz");
    let gz = std::fs::read(&data).expect("the dated file is published");
    let mut csv = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz[..]), &mut csv)
        .expect("gzip");
    assert!(
        csv.starts_with("day,database,slow_queries,mean_ms,max_ms\n2014-03-07,"),
        "{csv}"
    );
    let runs = std::fs::read_dir(dir.path().join("telejob-output/slowsql/runs"))
        .expect("runs")
        .flatten()
        .collect::<Vec<_>>();
    assert_eq!(runs.len(), 1);
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(runs[0].path().join("manifest.json")).expect("manifest"),
    )
    .expect("json");
    assert_eq!(manifest["files"][0]["path"], "slowsql20140307.csv.gz");
    assert_eq!(manifest["files"][0]["size"], gz.len());
    assert_eq!(manifest["scheduled_for"], "2014-03-08T12:00:00Z");
    assert!(stdout(&o).contains("published 1 file"), "{}", stdout(&o));
    // The log is private: not under the publish directory.
    assert!(
        !dir.path()
            .join("telejob-output/slowsql/runs")
            .join(runs[0].file_name())
            .join("log.txt")
            .exists()
    );
}

#[test]
fn a_timeout_ends_within_seconds_with_124_and_no_process_left() {
    let dir = telejob_e2e::code_dir(&[("run.sh", "true", 0o755)]);
    let started = Instant::now();
    let o = telejob_run!(
        dir.path(),
        &[
            "--command",
            "setsid sleep 600.4242 & sleep 600.4242",
            "--timeout",
            "2s",
            "--kill-grace",
            "1s",
        ]
    );
    assert_eq!(o.status.code(), Some(124), "{}", stderr(&o));
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(
        processes_with("600.4242"),
        Vec::<i32>::new(),
        "processes left behind"
    );
    assert!(stderr(&o).contains("timed out"));
}

#[test]
fn bad_input_exits_2_with_one_line_naming_the_problem() {
    let dir = telejob_e2e::code_dir(&[("run.sh", "true", 0o755)]);
    std::fs::write(dir.path().join("page.tgz"), "<html>404</html>").expect("write");
    let cases: &[(&[&str], &str)] = &[
        (&["run", "--code", "missing.tgz"], "missing.tgz"),
        (&["run", "--code", "page.tgz"], "code archive"),
        (&["run", "--code", "c.tgz", "--timeout", "0"], "positive"),
        (&["run", "--code", "c.tgz", "--timeout", "-5m"], "positive"),
        (
            &["run", "--code", "c.tgz", "--output-dir", "../x"],
            "output-dir",
        ),
        (
            &["run", "--code", "c.tgz", "--job-name", "Bad.Name"],
            "job name",
        ),
        (&["schedule", "--weekly"], "--weekly"),
        (&["schedule", "--monthly", "32"], "day_of_month"),
        (&["schedule", "--cron", "0 0 12 * * ? 2030"], "7 fields"),
        (&["schedule", "--daily", "--at", "25:00"], "time of day"),
        (&["schedule", "--daily", "--tz", "Mars/Base"], "time zone"),
    ];
    for (args, needle) in cases {
        let o = telejob!(dir.path(), args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(err.contains(needle), "{args:?}: {err}");
        let published = telejob_e2e::files_below(&dir.path().join("telejob-output"));
        assert!(published.is_empty(), "{args:?} published {published:?}");
    }
}

#[test]
fn an_unsafe_archive_exits_2_naming_the_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.as_mut_bytes()[..9].copy_from_slice(b"../escape");
    h.set_size(1);
    h.set_mode(0o644);
    h.set_cksum();
    b.append(&h, &b"x"[..]).expect("append");
    std::fs::write(dir.path().join("evil.tar"), b.into_inner().expect("tar")).expect("write");
    let o = telejob!(dir.path(), &["run", "--code", "evil.tar"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("\"../escape\""), "{}", stderr(&o));
    assert!(!dir.path().join("escape").exists());
}

#[test]
fn a_symlink_to_a_secret_in_the_output_is_not_published() {
    let dir = telejob_e2e::code_dir(&[(
        "run.sh",
        "mkdir output; echo ok > output/ok.txt; ln -s /etc/passwd output/passwd",
        0o755,
    )]);
    let o = telejob_run!(dir.path(), &["--job-name", "leak"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let data = dir.path().join("telejob-output/leak/data");
    assert!(data.join("ok.txt").is_file());
    assert!(
        !data.join("passwd").exists(),
        "the link target was published"
    );
    assert!(
        stdout(&o).contains("not published: passwd"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn a_failing_command_exits_1_and_publishes_nothing() {
    let dir =
        telejob_e2e::code_dir(&[("run.sh", "mkdir output; echo x > output/x; exit 7", 0o755)]);
    let o = telejob!(dir.path(), &["run", "--code", "c.tgz"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("status 7"));
    assert!(!dir.path().join("telejob-output/c/data/x").exists());
    let o = telejob_run!(dir.path(), &["--command", "./not-there.sh"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("command not found"), "{}", stderr(&o));
}

#[test]
fn dry_run_lists_without_publishing() {
    let dir =
        telejob_e2e::code_dir(&[("run.sh", "mkdir output; echo 12345 > output/a.csv", 0o755)]);
    let o = telejob_run!(dir.path(), &["--dry-run"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("would publish 1 file (6 B)"),
        "{}",
        stdout(&o)
    );
    assert!(stdout(&o).contains("a.csv"));
    assert!(!dir.path().join("telejob-output/c/data").exists());
}

#[test]
fn schedule_previews_are_reproducible() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = telejob!(
        dir.path(),
        &[
            "schedule",
            "--monthly",
            "31",
            "--from",
            "2015-01-31T12:00:00Z",
            "--next",
            "3",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "2015-02-28T12:00:00Z\n2015-03-31T12:00:00Z\n2015-04-30T12:00:00Z\n"
    );
    let o = telejob!(
        dir.path(),
        &[
            "schedule",
            "--cron",
            "30 8 * * MON-FRI",
            "--tz",
            "Europe/Berlin",
            "--from",
            "2014-03-07T09:00:00Z",
            "--next",
            "1",
        ],
    );
    assert_eq!(stdout(&o), "2014-03-10T07:30:00Z  (2014-03-10 08:30 CET)\n");
}

#[test]
fn help_lists_every_command() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = telejob!(dir.path(), &["--help"]);
    let out = stdout(&o);
    for c in ["run", "package", "schedule", "agent"] {
        assert!(out.contains(c), "{out}");
    }
}

#[test]
fn each_verbs_help_lists_only_its_own_options() {
    let dir = tempfile::tempdir().expect("tempdir");
    let help = |args: &[&str]| stdout(&telejob!(dir.path(), args));
    let shell = help(&["worker", "shell", "--help"]);
    assert!(
        shell.contains("--save-to") && shell.contains("--lifetime"),
        "{shell}"
    );
    for other in ["--server", "--token", "--compute", "--config"] {
        assert!(
            !shell.contains(other),
            "a local shell has no {other}: {shell}"
        );
    }
    let launch = help(&["worker", "launch", "--help"]);
    assert!(
        launch.contains("--server") && launch.contains("--compute"),
        "{launch}"
    );
    let list = help(&["jobs", "list", "--help"]);
    assert!(
        list.contains("--output") && list.contains("--server"),
        "{list}"
    );
    let edit = help(&["jobs", "edit", "--help"]);
    assert!(
        edit.contains("--timeout") && edit.contains("--env") && !edit.contains("--timeout-minutes"),
        "{edit}"
    );
}

#[test]
fn an_agent_told_to_refuse_records_the_run_as_failed_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let req = serde_json::json!({
        "run_id": "01890f5e-0000-7000-8000-000000000001", "job": "j", "code": "store:x",
        "command": "true", "output_dir": "output", "timeout": 60.0,
        "scheduled_for": "2014-03-08T12:00:00Z"
    });
    std::fs::write(dir.path().join("req.json"), req.to_string()).expect("request");
    let out = telejob!(
        dir.path(),
        &[
            "agent",
            "--request",
            "req.json",
            "--public",
            "pub",
            "--private",
            "priv",
            "--refuse",
            "no firewall",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let status = std::fs::read_to_string(
        dir.path()
            .join("priv/j/runs/01890f5e-0000-7000-8000-000000000001/status.json"),
    )
    .expect("the status object");
    let run: serde_json::Value = serde_json::from_str(&status).expect("json");
    assert_eq!(run["state"], "failed", "{run}");
    assert_eq!(run["error"], "refused to run: no firewall", "{run}");
    assert!(
        !dir.path().join("pub").join("j").exists(),
        "nothing published"
    );
}

#[test]
fn serve_on_a_taken_port_stops_before_creating_the_admin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let out = telejob!(
        dir.path(),
        &["serve", "--data-dir", "data", "--listen", &addr]
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("--listen"), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("created the admin"),
        "{}",
        stderr(&out)
    );
    assert!(!dir.path().join("data/admin.token").exists());
    assert!(!dir.path().join("data/telejob.db").exists());
}

/// Runs `telejob args…` on a fresh pseudo-terminal (its controlling terminal), typing each
/// line of `input` once `ready` shows; returns everything the terminal showed and the exit
/// status.
/// A worker shell's code: the folder `code/` holding `files` (path, text), beside a scratch
/// folder, in a temporary directory.
struct ShellCode {
    dir: tempfile::TempDir,
    code: std::path::PathBuf,
    scratch: std::path::PathBuf,
}

impl ShellCode {
    fn new(files: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tmp");
        let (code, scratch) = (dir.path().join("code"), dir.path().join("scratch"));
        for (path, text) in files {
            let file = code.join(path);
            std::fs::create_dir_all(file.parent().expect("folder")).expect("mkdir");
            std::fs::write(file, text).expect("write");
        }
        std::fs::create_dir_all(&scratch).expect("scratch");
        Self { dir, code, scratch }
    }

    /// The code folder as `--code` takes it.
    fn arg(&self) -> &str {
        self.code.to_str().expect("utf8")
    }

    /// TMPDIR in the scratch folder. As root with a built image (TELEJOB_IMAGES_DIR), the
    /// shell is a machine of its own; without one, the host's root (never a first-use image
    /// build in a test).
    fn env(&self) -> Vec<(&'static str, &std::path::Path)> {
        let mut env = vec![("TMPDIR", self.scratch.as_path())];
        if std::env::var_os("TELEJOB_IMAGES_DIR").is_none() {
            env.push(("TELEJOB_IMAGE", std::path::Path::new("host")));
        }
        env
    }
}

fn on_a_terminal(
    args: &[&str],
    env: &[(&str, &std::path::Path)],
    ready: &str,
    input: &[&str],
    within: Duration,
) -> (String, Option<i32>) {
    use std::io::{Read, Write};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::process::CommandExt;
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty fills two descriptors; no other memory is passed.
    let r = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(r, 0, "openpty");
    // SAFETY: both descriptors were just opened and are owned here.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let mut cmd = std::process::Command::new(telejob_e2e::telejob_bin!());
    cmd.args(args)
        .stdin(slave.try_clone().expect("dup"))
        .stdout(slave.try_clone().expect("dup"))
        .stderr(slave.try_clone().expect("dup"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    // SAFETY: between fork and exec: setsid and the ioctl that makes the pty the controlling
    // terminal, both async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("telejob");
    // Only the child may hold the terminal's other end: reading ends when it is gone.
    drop(cmd);
    drop(slave);
    let shown = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let mut reader = std::fs::File::from(master.try_clone().expect("dup"));
    let sink = shown.clone();
    let read_thread = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().expect("lock").extend_from_slice(&buf[..n]);
        }
    });
    let text = |s: &std::sync::Mutex<Vec<u8>>| {
        String::from_utf8_lossy(&s.lock().expect("lock")).into_owned()
    };
    let deadline = Instant::now() + within;
    while !text(&shown).contains(ready) {
        assert!(Instant::now() < deadline, "never ready: {}", text(&shown));
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut writer = std::fs::File::from(master);
    for line in input {
        writer.write_all(line.as_bytes()).expect("type");
        writer.write_all(b"\n").expect("type");
        std::thread::sleep(Duration::from_millis(300));
    }
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("telejob did not end: {}", text(&shown));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = writer.as_raw_fd();
    drop(writer);
    let _ = read_thread.join();
    (text(&shown), status.code())
}

#[test]
fn worker_shell_opens_a_sandboxed_shell_and_lists_the_output_on_exit() {
    let fx = ShellCode::new(&[
        ("run.sh", "echo wrapper\n"),
        ("marker.txt", "the-code-is-here\n"),
    ]);
    let (code_arg, scratch, env) = (fx.arg(), &fx.scratch, fx.env());
    let machine = std::env::var_os("TELEJOB_IMAGES_DIR").is_some();
    let typed = [
        "echo uid=$(id -u)",
        "cat marker.txt",
        "echo TJ=${#TELEJOB_RUN_ID}",
        "mkdir -p output && echo 1,2 > output/result.csv",
        "false",
        "exit",
    ];
    let (shown, status) = on_a_terminal(
        &["worker", "shell", "--code", code_arg, "--lifetime", "60s"],
        &env,
        "[telejob worker]",
        &typed,
        Duration::from_secs(60),
    );
    assert_eq!(status, Some(0), "{shown}");
    // SAFETY: geteuid and getuid only read the process's credentials.
    let (euid, uid) = unsafe { (libc::geteuid(), libc::getuid()) };
    let ran_as: u32 = shown
        .split("uid=")
        .filter_map(|s| s.lines().next()?.trim().parse().ok())
        .next()
        .unwrap_or_else(|| panic!("no uid: {shown}"));
    if euid == 0 && machine {
        assert_eq!(ran_as, 0, "root of its own machine: {shown}");
    } else if euid == 0 {
        assert!(
            ran_as >= 1_879_048_192,
            "a run UID of its own, not root: {shown}"
        );
    } else {
        assert_eq!(ran_as, uid, "{shown}");
    }
    assert!(shown.contains("the-code-is-here"), "{shown}");
    assert!(shown.contains("TJ=36"), "the TELEJOB_* variables: {shown}");
    for listed in ["would publish 1 file", "result.csv"] {
        assert!(shown.contains(listed), "the listing on exit: {shown}");
    }
    assert_workspace_gone(scratch);
}

#[test]
fn worker_shell_saves_the_work_back_and_warns_before_its_end() {
    let fx = ShellCode::new(&[
        ("run.sh", "echo old\n"),
        (".git/HEAD", "ref: refs/heads/main\n"),
    ]);
    let (code, code_arg, scratch, env) = (&fx.code, fx.arg(), &fx.scratch, fx.env());
    let tarball = fx.dir.path().join("work.tar.gz");
    let typed = [
        "mkdir -p output",
        "echo 'echo new' > run.sh",
        "mkdir -p lib && echo 'x = 1' > lib/helper.py",
        "exit",
    ];
    // A lifetime of 65 s: the one-minute warning comes after 5 s.
    let (shown, status) = on_a_terminal(
        &[
            "worker",
            "shell",
            "--code",
            code_arg,
            "--lifetime",
            "65s",
            "--save-to",
            code_arg,
            "--package",
            tarball.to_str().expect("utf8"),
        ],
        &env,
        "this worker ends in 1m",
        &typed,
        Duration::from_secs(60),
    );
    assert_eq!(status, Some(0), "{shown}");
    assert!(
        shown.contains("the code directory is saved to"),
        "said at the start: {shown}"
    );
    assert!(shown.contains("saved the code directory to"), "{shown}");
    let read = |p: &str| std::fs::read_to_string(code.join(p)).ok();
    assert_eq!(read("run.sh").as_deref(), Some("echo new\n"), "{shown}");
    assert_eq!(read("lib/helper.py").as_deref(), Some("x = 1\n"));
    assert_eq!(read(".git/HEAD").as_deref(), Some("ref: refs/heads/main\n"));
    // The tarball holds the same work, and unpacks as a run's code would.
    let o = std::process::Command::new("tar")
        .args(["-tzf", tarball.to_str().expect("utf8")])
        .output()
        .expect("tar");
    let listed = String::from_utf8_lossy(&o.stdout);
    assert!(
        listed.contains("lib/helper.py") && listed.contains("run.sh"),
        "{listed}"
    );
    assert_workspace_gone(scratch);
}

#[test]
fn worker_shell_ends_with_everything_it_started_at_its_lifetime() {
    let fx = ShellCode::new(&[("run.sh", "true\n")]);
    let started = Instant::now();
    let (shown, status) = on_a_terminal(
        &["worker", "shell", "--code", fx.arg(), "--lifetime", "4s"],
        &[("TMPDIR", fx.dir.path())],
        "[telejob worker]",
        &["(sleep 1000.4343 &) ; sleep 1000.4344"],
        Duration::from_secs(60),
    );
    assert_eq!(status, Some(124), "{shown}");
    assert!(started.elapsed() < Duration::from_secs(40), "{shown}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !(processes_with("1000.4343").is_empty() && processes_with("1000.4344").is_empty()) {
        assert!(
            Instant::now() < deadline,
            "the shell's processes outlived it"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
