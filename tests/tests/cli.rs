//! The `telejob` binary as a new user meets it.

use std::time::{Duration, Instant};

use telejob_e2e::{processes_with, repo_root, tarball, telejob};

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn walk_files(root: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
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
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("c.tgz"),
        tarball(&[("run.sh", "true", 0o755)]),
    )
    .expect("write");
    let started = Instant::now();
    let o = telejob!(
        dir.path(),
        &[
            "run",
            "--code",
            "c.tgz",
            "--command",
            "setsid sleep 600.4242 & sleep 600.4242",
            "--timeout",
            "2s",
            "--kill-grace",
            "1s",
        ],
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
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("c.tgz"),
        tarball(&[("run.sh", "true", 0o755)]),
    )
    .expect("write");
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
        let published = walk_files(&dir.path().join("telejob-output"));
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
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("c.tgz"),
        tarball(&[(
            "run.sh",
            "mkdir output; echo ok > output/ok.txt; ln -s /etc/passwd output/passwd",
            0o755,
        )]),
    )
    .expect("write");
    let o = telejob!(
        dir.path(),
        &["run", "--code", "c.tgz", "--job-name", "leak"],
    );
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
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("c.tgz"),
        tarball(&[("run.sh", "mkdir output; echo x > output/x; exit 7", 0o755)]),
    )
    .expect("write");
    let o = telejob!(dir.path(), &["run", "--code", "c.tgz"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("status 7"));
    assert!(!dir.path().join("telejob-output/c/data/x").exists());
    let o = telejob!(
        dir.path(),
        &["run", "--code", "c.tgz", "--command", "./not-there.sh"],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("command not found"), "{}", stderr(&o));
}

#[test]
fn dry_run_lists_without_publishing() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("c.tgz"),
        tarball(&[("run.sh", "mkdir output; echo 12345 > output/a.csv", 0o755)]),
    )
    .expect("write");
    let o = telejob!(dir.path(), &["run", "--code", "c.tgz", "--dry-run"]);
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
