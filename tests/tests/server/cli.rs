//! The client verbs against a live server.

use super::*;

#[tokio::test]
async fn the_cli_verbs_drive_the_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = serve(&dir.path().join("data"), &[]);
    let code = dir.path().join("c.tgz");
    std::fs::write(
        &code,
        tarball(&[(
            "run.sh",
            "mkdir output; echo hi; echo 1 > output/one.csv",
            0o755,
        )]),
    )
    .expect("write");
    let cli = |args: &[&str]| {
        Command::new(telejob_bin!())
            .args(args)
            .env("TELEJOB_SERVER", &srv.base)
            .env("TELEJOB_TOKEN", &srv.token)
            .output()
            .expect("telejob")
    };
    let o = cli(&[
        "jobs",
        "create",
        "--name",
        "viacli",
        "--code",
        code.to_str().expect("utf8"),
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
        code.to_str().expect("utf8"),
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
    let day = |n: i64| {
        (chrono::Utc::now() - chrono::Duration::days(n))
            .format("%Y-%m-%d")
            .to_string()
    };
    let (from, to) = (day(15), day(1));
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
    let o = cli(&[
        "jobs",
        "create",
        "--name",
        "viacli",
        "--code",
        code.to_str().expect("utf8"),
    ]);
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

/// A job whose runs sleep until cancelled.
async fn admin_sleeper(api: &Api) {
    api.create_with_code(
        json!({"name": "sleeper", "command": "sleep 300"}),
        &[("run.sh", "true", 0o755)],
    )
    .await;
}
