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
    Command::new(bin)
        .args(args)
        .current_dir(cwd)
        .env_remove("TELEJOB_LOG")
        .output()
        .expect("telejob runs")
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

/// A gzip tarball of `(path, body, mode)` files.
pub fn tarball(files: &[(&str, &str, u32)]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    for (p, body, mode) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(*mode);
        b.append_data(&mut h, p, body.as_bytes()).expect("append");
    }
    b.into_inner().expect("tar").finish().expect("gzip")
}

/// Live processes whose command line holds `token`.
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
