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
