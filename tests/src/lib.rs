//! Helpers for the end-to-end tests: the `telejob` binary and archives built in code.

use std::path::{Path, PathBuf};

use std::process::{Command, Output};

/// The `telejob` binary of this build. The test files are test targets of `telejob-server`
/// (see its Cargo.toml), so cargo builds the binary before running them.
#[macro_export]
macro_rules! telejob_bin {
    () => {
        ::std::path::Path::new(env!("CARGO_BIN_EXE_telejob"))
    };
}

/// Runs `telejob args…` in `cwd` and returns its output.
#[macro_export]
macro_rules! telejob {
    ($cwd:expr, $args:expr $(,)?) => {
        $crate::run_bin($crate::telejob_bin!(), $cwd, $args)
    };
}

/// Runs `telejob run --code c.tgz more…` in `cwd` (a [`code_dir`], say) and returns its output.
#[macro_export]
macro_rules! telejob_run {
    ($cwd:expr, $more:expr $(,)?) => {
        $crate::run_code($crate::telejob_bin!(), $cwd, $more)
    };
}

/// Runs `bin run --code c.tgz more…` in `cwd` and returns its output.
pub fn run_code(bin: &Path, cwd: &Path, more: &[&str]) -> Output {
    let mut args = vec!["run", "--code", "c.tgz"];
    args.extend_from_slice(more);
    run_bin(bin, cwd, &args)
}

/// Asserts that the command of `o` exited with `code`, showing `what` and its stderr if not.
#[track_caller]
pub fn assert_exit(o: &Output, code: i32, what: &str) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "{what}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Runs `bin args…` in `cwd` and returns its output.
pub fn run_bin(bin: &Path, cwd: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(bin);
    cmd.args(args).current_dir(cwd).env_remove("TELEJOB_LOG");
    no_first_use_image_build(&mut cmd);
    cmd.output().expect("telejob runs")
}

/// Runs of `cmd` (a `telejob` that may run jobs) start from the images of `TELEJOB_IMAGES_DIR`
/// (`.ci/run` builds the default one once) or, without it, from the host's own root: a test
/// never builds an image on first use into its own data directory.
pub fn no_first_use_image_build(cmd: &mut Command) {
    if std::env::var_os("TELEJOB_IMAGES_DIR").is_none() {
        cmd.env("TELEJOB_IMAGE", "host");
    }
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

pub use telejob_core::testing::{processes_with, tarball};

/// Signs in to the dashboard at `base` with `token`: a client that follows no redirects, and
/// the session cookie (`name=value`).
///
/// # Panics
///
/// When the server does not answer with a session cookie.
pub async fn dashboard_sign_in(base: &str, token: &str) -> (reqwest::Client, String) {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let signed_in = http
        .post(format!("{base}/login"))
        .header("Origin", base)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!("token={token}"))
        .send()
        .await
        .expect("sign in");
    let session = signed_in
        .headers()
        .get("set-cookie")
        .expect("session cookie")
        .to_str()
        .expect("ascii")
        .split(';')
        .next()
        .expect("pair")
        .to_string();
    (http, session)
}

/// A temporary directory holding `c.tgz`, a tarball of `files` (path, body, mode).
///
/// # Panics
///
/// When it cannot be written.
pub fn code_dir(files: &[(&str, &str, u32)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("c.tgz"), tarball(files)).expect("write c.tgz");
    dir
}

/// Asserts that `got`, an API answer (status, JSON body), is a refusal with `status` whose
/// body names `field` (when given) and whose message contains `words`.
///
/// # Panics
///
/// When it is not.
#[track_caller]
pub fn assert_refused(
    got: (u16, &serde_json::Value),
    status: u16,
    field: Option<&str>,
    words: &str,
) {
    let (s, v) = got;
    assert_eq!(s, status, "{v}");
    if let Some(f) = field {
        assert_eq!(v["field"], f, "{v}");
    }
    assert!(
        v["error"].as_str().is_some_and(|e| e.contains(words)),
        "the error should say {words:?}: {v}"
    );
}

/// The string `key` of each object of the JSON array `v`, in order (those without it left
/// out).
///
/// # Panics
///
/// When `v` is not an array.
pub fn strings_of<'a>(v: &'a serde_json::Value, key: &str) -> Vec<&'a str> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .filter_map(|o| o[key].as_str())
        .collect()
}

/// The run ids of a backfill's answer (`slots[].run_id`), in its order.
pub fn slot_run_ids(v: &serde_json::Value) -> Vec<String> {
    strings_of(&v["slots"], "run_id")
        .into_iter()
        .map(str::to_string)
        .collect()
}

/// The date `n` days before today (UTC), as a backfill's `from` or `to` takes it.
pub fn days_ago(n: i64) -> String {
    (chrono::Utc::now() - chrono::Duration::days(n))
        .format("%Y-%m-%d")
        .to_string()
}

/// The CSRF token of the dashboard form in `html`.
///
/// # Panics
///
/// When the page has none.
pub fn csrf_of(html: &str) -> String {
    html.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("csrf field")
        .to_string()
}

/// Asserts that `dir` holds nothing (a run's or a worker's workspace was removed).
///
/// # Panics
///
/// When something is left.
#[track_caller]
pub fn assert_workspace_gone(dir: &Path) {
    let left: Vec<_> = std::fs::read_dir(dir)
        .expect("scratch")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "the workspace is gone: {left:?}");
}

/// Writes a tarball holding `run.sh` with `script` (mode 0755) to `path`; the path.
///
/// # Panics
///
/// When it cannot be written.
pub fn write_script_tarball(path: PathBuf, script: &str) -> PathBuf {
    std::fs::write(&path, tarball(&[("run.sh", script, 0o755)])).expect("write the tarball");
    path
}

/// Every file below `root` that is not a directory (none when it does not exist).
pub fn files_below(root: &Path) -> Vec<PathBuf> {
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

pub mod postgres;
pub mod server;

pub use server::{Api, ServeCommand, Server, page, token_for};

/// An HTTP server that records the bodies of the requests it gets (a webhook's receiver):
/// its URL, and the bodies as they come.
pub fn webhook_sink() -> (String, std::sync::mpsc::Receiver<String>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/hook", l.local_addr().expect("addr"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let mut s = s;
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
                .ok();
            loop {
                let n = std::io::Read::read(&mut s, &mut chunk).unwrap_or(0);
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf);
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if body.len() >= len {
                        let _ = tx.send(body.to_string());
                        break;
                    }
                }
            }
            let _ = std::io::Write::write_all(
                &mut s,
                b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
        }
    });
    (url, rx)
}
