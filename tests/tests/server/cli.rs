//! The client verbs against a live server.

use super::*;

#[tokio::test]
async fn the_cli_verbs_drive_the_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = serve(&dir.path().join("data"), &[]);
    let code = write_script_tarball(
        dir.path().join("c.tgz"),
        "mkdir output; echo hi; echo 1 > output/one.csv",
    );
    let cli = |args: &[&str]| {
        Command::new(telejob_bin!())
            .args(args)
            .env("TELEJOB_SERVER", &srv.base)
            .env("TELEJOB_TOKEN", &srv.token)
            .output()
            .expect("telejob")
    };
    let code_arg = code.to_str().expect("utf8");
    let o = cli(&[
        "jobs",
        "create",
        "--name",
        "viacli",
        "--code",
        code_arg,
        "--frequency",
        "weekly",
        "--day-of-week",
        "monday",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("weekly on monday at 12:00 UTC"));
    assert!(
        !String::from_utf8_lossy(&o.stderr).contains("warning:"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Warnings print on stderr and do not stop the creation: a daily 06:00 job whose command
    // is not in the code.
    let o = cli(&[
        "jobs",
        "create",
        "--name",
        "warned",
        "--code",
        code_arg,
        "--command",
        "./missing.sh",
        "--at",
        "06:00",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("warning: command: ./missing.sh is not in the uploaded code")
            && err.contains("warning: schedule.time_of_day:"),
        "{err}"
    );
    // Backfill from the command line: the plan, then the runs, waited for.
    let (from, to) = (days_ago(15), days_ago(1));
    let o = cli(&[
        "jobs",
        "backfill",
        "viacli",
        "--from",
        &from,
        "--to",
        &to,
        "--dry-run",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let plan = String::from_utf8_lossy(&o.stdout).to_string();
    let mondays = plan
        .lines()
        .filter(|l| l.contains("missed") && l.contains("would run"))
        .count();
    assert!((2..=3).contains(&mondays), "{plan}");
    let o = cli(&[
        "jobs", "backfill", "viacli", "--from", &from, "--to", &to, "--wait",
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        out.lines().filter(|l| l.contains(" run ")).count(),
        mondays,
        "{out}"
    );
    let o = cli(&["jobs", "backfill", "viacli", "--from", &to, "--to", &from]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "a reversed range is the user's mistake"
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("to"));
    let o = cli(&["jobs", "run-now", "viacli", "--wait"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let id = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let o = cli(&["runs", "log", &id]);
    // The log's first line says what the machine was; then what the job printed.
    let log = String::from_utf8_lossy(&o.stdout);
    let mut lines = log.trim().lines();
    assert!(
        lines.next().is_some_and(|l| l.starts_with("telejob: ")),
        "{log}"
    );
    assert_eq!(lines.collect::<Vec<_>>(), ["hi"], "{log}");
    let o = cli(&["runs", "list", "viacli"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("succeeded"));
    let o = cli(&["jobs", "create", "--name", "viacli", "--code", code_arg]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "a taken name is the user's mistake"
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("exists already"));
    assert!(cli(&["jobs", "pause", "viacli"]).status.success());
    assert!(cli(&["jobs", "delete", "viacli"]).status.success());
    let o = cli(&["jobs", "show", "viacli"]);
    assert_eq!(o.status.code(), Some(2));
}

#[tokio::test]
async fn lists_say_when_they_are_empty_and_a_closed_pipe_ends_them_quietly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = serve(&dir.path().join("data"), &[]);
    let cli = |args: &[&str]| {
        let mut c = Command::new(telejob_bin!());
        c.args(args)
            .env("TELEJOB_SERVER", &srv.base)
            .env("TELEJOB_TOKEN", &srv.token)
            .env("RUST_BACKTRACE", "1");
        c
    };
    let o = cli(&["jobs", "list"]).output().expect("telejob");
    assert!(o.status.success());
    assert_eq!(String::from_utf8_lossy(&o.stderr).trim(), "No jobs.");
    assert!(
        o.stdout.is_empty(),
        "the sentence is not a line of the list"
    );
    let api = srv.admin();
    api.post_json("/api/jobs", &json!({"name": "quiet"})).await;
    let o = cli(&["runs", "list", "quiet"]).output().expect("telejob");
    assert_eq!(
        String::from_utf8_lossy(&o.stderr).trim(),
        "No runs of quiet yet."
    );
    // A run in flight, cancelled from the CLI: it waits for the end and prints it.
    admin_sleeper(&api).await;
    let id = api.start_run("sleeper").await;
    let o = cli(&["runs", "cancel", &id]).output().expect("telejob");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains(&id) && out.contains("cancelled"), "{out}");
    let o = cli(&["runs", "list", "nosuch"]).output().expect("telejob");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("no such job") && err.contains("nosuch"),
        "{err}"
    );
    // `telejob jobs list | head -0`: the reader is gone before the first line.
    let mut child = cli(&["jobs", "list"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("telejob");
    drop(child.stdout.take());
    let o = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(
        !err.contains("panicked") && !err.contains("Broken pipe"),
        "{err}"
    );
}

#[tokio::test]
async fn a_job_is_changed_from_the_cli_by_get_apply_and_edit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = serve(&dir.path().join("data"), &[]);
    let code = dir.path().join("code");
    std::fs::create_dir(&code).expect("mkdir");
    std::fs::write(code.join("run.sh"), "mkdir -p output; echo hi").expect("write");
    let cli = |args: &[&str], stdin: Option<&str>| {
        let mut c = Command::new(telejob_bin!());
        c.args(args)
            .env("TELEJOB_SERVER", &srv.base)
            .env("TELEJOB_TOKEN", &srv.token)
            .env("API_KEY", "k-123456789")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = c.spawn().expect("telejob");
        let mut input = child.stdin.take().expect("stdin");
        if let Some(text) = stdin {
            std::io::Write::write_all(&mut input, text.as_bytes()).expect("stdin");
        }
        drop(input);
        let o = child.wait_with_output().expect("wait");
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).to_string(),
            String::from_utf8_lossy(&o.stderr).to_string(),
        )
    };
    // One spelling per option: durations with units, --tz; limits, env and secrets as flags.
    let (rc, _, err) = cli(
        &[
            "jobs",
            "create",
            "--name",
            "edited",
            "--code",
            code.to_str().expect("utf8"),
            "--cron",
            "0 * * * *",
            "--tz",
            "Europe/Berlin",
            "--timeout",
            "3h",
            "--env",
            "A=1",
            "--secret",
            "API_KEY",
            "--memory",
            "1GiB",
            "--processes",
            "64",
        ],
        None,
    );
    assert_eq!(rc, Some(0), "{err}");
    let (rc, _, err) = cli(
        &[
            "jobs",
            "create",
            "--name",
            "unitless",
            "--code",
            code.to_str().expect("utf8"),
            "--timeout",
            "90",
        ],
        None,
    );
    assert_eq!(rc, Some(2));
    assert!(err.contains("--timeout") && err.contains("90m"), "{err}");
    let api = srv.admin();
    let (_, before) = api.get("/api/jobs/edited").await;
    assert_eq!(before["timeout_minutes"], 180, "{before}");
    assert_eq!(before["limits"], json!({"memory": "1GiB", "processes": 64}));
    // What `get` prints, `apply` takes back unchanged: no change, not even a save.
    for format in ["json", "toml"] {
        let (rc, file, err) = cli(&["jobs", "get", "edited", "-o", format], None);
        assert_eq!(rc, Some(0), "{err}");
        let (rc, out, err) = cli(&["jobs", "apply", "-f", "-"], Some(&file));
        assert_eq!(rc, Some(0), "{format}: {err}");
        assert_eq!(out.trim(), "edited unchanged", "{format}: {file}");
    }
    let (_, same) = api.get("/api/jobs/edited").await;
    assert_eq!(
        same["updated_at"], before["updated_at"],
        "apply saved nothing"
    );
    // `edit` merges: the schedule, limits and secrets stay.
    let (rc, out, err) = cli(
        &["jobs", "edit", "edited", "--env", "B=2", "--timeout", "2h"],
        None,
    );
    assert_eq!(rc, Some(0), "{err}");
    assert!(
        out.contains("+ env.B: \"2\"") && out.contains("~ timeout_minutes: 180 → 120"),
        "{out}"
    );
    let (_, after) = api.get("/api/jobs/edited").await;
    assert_eq!(after["env"], json!({"A": "1", "B": "2"}));
    for kept in ["schedule", "limits", "secrets"] {
        assert_eq!(after[kept], before[kept], "{kept}");
    }
    // A changed file is applied, saying what changes; a new name is created.
    let (_, file, _) = cli(&["jobs", "get", "edited"], None);
    let changed = file.replace("timeout_minutes = 120", "timeout_minutes = 45");
    let (rc, out, err) = cli(&["jobs", "apply", "-f", "-"], Some(&changed));
    assert_eq!(rc, Some(0), "{err}");
    assert!(
        out.contains("~ timeout_minutes: 120 → 45") && out.contains("configured edited"),
        "{out}"
    );
    let (_, v) = api.get("/api/jobs/edited").await;
    assert_eq!(v["timeout_minutes"], 45);
    assert_eq!(
        v["secrets"], before["secrets"],
        "a file without secrets keeps them"
    );
    let copy = changed.replace("name = \"edited\"", "name = \"copied\"");
    let (rc, out, err) = cli(
        &[
            "jobs",
            "apply",
            "-f",
            "-",
            "--code",
            code.to_str().expect("utf8"),
        ],
        Some(&copy),
    );
    assert_eq!(rc, Some(0), "{err}");
    assert!(out.contains("created copied"), "{out}");
    let (_, v) = api.get("/api/jobs/copied").await;
    assert_eq!(v["schedule"], before["schedule"]);
    assert!(v["code_sha256"].is_string(), "{v}");
    assert_eq!(
        v["code_versions"][0]["file_name"], "code/",
        "named after what was uploaded"
    );
    // Lists and shows as JSON, for scripts.
    let (rc, out, _) = cli(&["jobs", "list", "-o", "json"], None);
    assert_eq!(rc, Some(0));
    let names: Vec<String> = serde_json::from_str::<Vec<Value>>(&out)
        .expect("json")
        .iter()
        .filter_map(|j| j["name"].as_str().map(str::to_string))
        .collect();
    assert_eq!(names, ["copied", "edited"]);
    let (_, out, _) = cli(&["jobs", "show", "edited", "-o", "json"], None);
    assert_eq!(
        serde_json::from_str::<Value>(&out).expect("json")["name"],
        "edited"
    );
    let (rc, _, err) = cli(&["jobs", "edit", "edited"], None);
    assert_eq!(rc, Some(2));
    assert!(err.contains("nothing to change"), "{err}");
}

#[tokio::test]
async fn runs_log_follow_prints_lines_while_the_run_prints_and_ends_with_it() {
    let (_dir, srv, api) = fresh();
    api.create_with_script(
        json!({"name": "talker"}),
        "mkdir -p output; echo first; sleep 6; echo second",
    )
    .await;
    let id = api.start_run("talker").await;
    let mut child = Command::new(telejob_bin!())
        .args(["runs", "log", &id, "--follow"])
        .env("TELEJOB_SERVER", &srv.base)
        .env("TELEJOB_TOKEN", &srv.token)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("telejob");
    let (tx, rx) = std::sync::mpsc::channel();
    let out = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let first = loop {
        let line = rx.recv_timeout(Duration::from_secs(30)).expect("a line");
        if line == "first" {
            break line;
        }
    };
    let (_, run) = api.get(&format!("/api/runs/{id}")).await;
    assert_eq!(
        run["state"], "running",
        "{first} came while the run printed: {run}"
    );
    let rest: Vec<String> = rx.iter().collect();
    assert!(rest.contains(&"second".to_string()), "{rest:?}");
    let status = child.wait().expect("wait");
    assert_eq!(
        status.code(),
        Some(0),
        "it ends with the run, and as it ended"
    );
    let (_, run) = api.get(&format!("/api/runs/{id}")).await;
    assert_eq!(run["state"], "succeeded");
}

/// A job whose runs sleep until cancelled.
async fn admin_sleeper(api: &Api) {
    api.create_with_script(json!({"name": "sleeper", "command": "sleep 300"}), "true")
        .await;
}
