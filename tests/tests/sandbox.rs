//! What a job can reach of the machine and of telejob itself, through the real binary.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use telejob_e2e::{assert_exit, tarball, telejob_bin, telejob_run, write_script_tarball};

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

#[test]
fn a_host_image_run_is_a_uid_of_its_own_and_cannot_read_root_files() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    // Outside /tmp: a run sees a private /tmp, so a secret there would not even be found.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let secret = dir.path().join("vault/secret");
    std::fs::create_dir(dir.path().join("vault")).expect("mkdir");
    std::fs::write(&secret, "hunter2").expect("write");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::fs::write(
        dir.path().join("c.tgz"),
        tarball(&[("run.sh", "true", 0o755)]),
    )
    .expect("write");
    let cmd = format!(
        "mkdir output; id -u > output/who; cat {} > output/stolen",
        secret.display()
    );
    let o = telejob_run!(
        dir.path(),
        &[
            "--command",
            &cmd,
            "--job-name",
            "thief",
            // The host's root file system as the image: a restricted process of the host, as
            // without root, under a UID of its own (tests/tests/machine.rs has the machines).
            "--image",
            "host",
        ]
    );
    assert_exit(&o, 1, "the read must fail");
    let log_dir = dir.path().join("telejob-private/thief/runs");
    let run = std::fs::read_dir(&log_dir)
        .expect("runs")
        .flatten()
        .next()
        .expect("one run");
    let log = std::fs::read_to_string(run.path().join("log.txt")).expect("log");
    assert!(
        log.starts_with("telejob: runs are not machines of their own (image = host)"),
        "{log}"
    );
    assert!(log.contains("Permission denied"), "{log}");
    assert!(!dir.path().join("telejob-output/thief/data/stolen").exists());
}

#[test]
fn a_same_user_job_cannot_read_telejobs_environment() {
    if !is_root() || Command::new("setpriv").arg("--help").output().is_err() {
        eprintln!("skipped: needs root and setpriv to run telejob as an unprivileged user");
        return;
    }
    // telejob itself runs as nobody here, so the job runs as the same user.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let bin = dir.path().join("telejob");
    std::fs::copy(telejob_bin!(), &bin).expect("copy binary");
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let code = write_script_tarball(dir.path().join("c.tgz"), "true");
    std::fs::set_permissions(&code, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let job = "mkdir output; env > output/env.txt; (cat /proc/$PPID/environ || echo DENIED) > output/parent.txt 2>&1";
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&bin)
        .args([
            "run",
            "--code",
            "c.tgz",
            "--command",
            job,
            "--job-name",
            "peek",
            "--cgroup",
            "off",
        ])
        .current_dir(dir.path())
        .env("TELEJOB_TEST_SECRET", "hunter2-secret")
        .env("AWS_SECRET_ACCESS_KEY", "hunter2-aws")
        .output()
        .expect("run telejob as nobody");
    assert_exit(&o, 0, "telejob run as nobody");
    let data = dir.path().join("telejob-output/peek/data");
    let env = std::fs::read_to_string(data.join("env.txt")).expect("env.txt");
    let parent = std::fs::read_to_string(data.join("parent.txt")).expect("parent.txt");
    assert!(
        !env.contains("hunter2"),
        "the job's environment holds telejob's secrets:\n{env}"
    );
    assert!(
        !parent.contains("hunter2"),
        "the job read telejob's environment:\n{parent}"
    );
    assert!(parent.contains("DENIED"), "{parent}");
}
