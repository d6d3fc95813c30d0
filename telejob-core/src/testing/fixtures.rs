//! What the checks and the backends' own tests run on: tarballs, requests, process probes.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

use crate::job::JobName;
use crate::run::RunRequest;

/// A gzip tarball of `(path, body, mode)` files.
#[cfg(feature = "agent")]
pub fn tarball(files: &[(&str, &str, u32)]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    for (path, body, mode) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(*mode);
        h.set_mtime(1_400_000_000);
        b.append_data(&mut h, path, body.as_bytes())
            .expect("append to the test tarball");
    }
    b.into_inner().expect("tar").finish().expect("gzip")
}

/// A gzip tarball with `run.sh` (writes `output/hello.txt`, prints to stdout and stderr) and
/// `fail.sh` (exits 3), both executable.
#[cfg(feature = "agent")]
pub fn sample_tarball() -> Vec<u8> {
    tarball(&[
        (
            "run.sh",
            "#!/bin/bash\nset -e\nmkdir -p output/sub\necho \"hello from $TELEJOB_JOB\" > output/hello.txt\necho nested > output/sub/n.txt\necho to-stdout\necho to-stderr >&2\n",
            0o755,
        ),
        ("fail.sh", "#!/bin/bash\necho failing\nexit 3\n", 0o755),
    ])
}

/// Live (non-zombie) processes whose command line holds `token`: to check that nothing a run
/// started outlived it.
pub fn processes_with(token: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let zombie = stat
                .rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'));
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            !zombie && String::from_utf8_lossy(&cmd).contains(token)
        })
        .collect()
}

/// A request for `job` running `command` on `code`.
pub fn request(job: &str, code: &str, command: &str, timeout: Duration) -> RunRequest {
    RunRequest::new(
        JobName::new(job).expect("valid test job name"),
        code,
        command,
    )
    .with_timeout(timeout)
    .with_scheduled_for(
        Utc.with_ymd_and_hms(2014, 3, 8, 12, 0, 0)
            .single()
            .expect("instant"),
    )
}

/// The instant `s` (RFC 3339), for tables of test cases.
///
/// # Panics
///
/// When `s` is not RFC 3339.
pub fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{s:?} is not an RFC 3339 instant: {e}"))
        .with_timezone(&Utc)
}

/// Runs `cmd` to its end and returns what it printed.
///
/// # Panics
///
/// When it cannot be started, or exits unsuccessfully (the panic shows `what` and its standard
/// error).
pub fn output_of(cmd: &mut std::process::Command, what: &str) -> std::process::Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
