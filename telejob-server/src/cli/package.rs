//! `telejob package`: a code tarball from a directory.

use std::io::BufWriter;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use telejob_core::agent::archive::pack_dir;
use telejob_core::agent::fetch::HashingReader;
use telejob_core::agent::unpack::{UnpackLimits, unpack};

use crate::error::bad;

#[derive(Debug, Args)]
pub struct PackageArgs {
    /// The directory holding the job's code (its wrapper script at the top).
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// Where to write the tarball. Default: <DIR's name>.tar.gz in the current directory.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
}

pub async fn package(a: PackageArgs) -> anyhow::Result<ExitCode> {
    if !a.dir.is_dir() {
        return Err(bad(format!(
            "{}: not a directory; give the directory holding the job's code",
            a.dir.display()
        )));
    }
    let dir = std::fs::canonicalize(&a.dir).with_context(|| a.dir.display().to_string())?;
    let name = dir
        .file_name()
        .map_or("code".into(), |n| n.to_string_lossy().into_owned());
    let out = a
        .output
        .unwrap_or_else(|| PathBuf::from(format!("{name}.tar.gz")));
    if std::fs::canonicalize(
        out.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(".".as_ref()),
    )
    .is_ok_and(|p| p.starts_with(&dir))
    {
        return Err(bad(format!(
            "-o {}: the tarball would be written inside the directory it packs; write it elsewhere",
            out.display()
        )));
    }
    let (sha, size, files) = pack_checked(&dir, &out).await?;
    say!("{}", out.display());
    eprintln!("telejob: {files} files, {size} bytes, sha256 {sha}");
    Ok(ExitCode::SUCCESS)
}

/// Packs `dir` into the tarball `out` (written whole or not at all) and checks it with the
/// unpacker runs use, so that a tarball that packs also runs. Returns its SHA-256, size and
/// number of files.
pub(super) async fn pack_checked(
    dir: &std::path::Path,
    out: &std::path::Path,
) -> anyhow::Result<(String, u64, u64)> {
    let (dir, out) = (dir.to_path_buf(), out.to_path_buf());
    tokio::task::spawn_blocking(move || pack_checked_now(&dir, &out)).await?
}

/// [`pack_checked`] on this thread.
pub(super) fn pack_checked_now(
    dir: &std::path::Path,
    out: &std::path::Path,
) -> anyhow::Result<(String, u64, u64)> {
    let check = tempfile::tempdir()?;
    pack_checked_into(dir, out, check.path())
}

/// [`pack_checked_now`], keeping what the check unpacked in the empty directory `into`.
pub(super) fn pack_checked_into(
    dir: &std::path::Path,
    out: &std::path::Path,
    into: &std::path::Path,
) -> anyhow::Result<(String, u64, u64)> {
    let tmp_out = out.with_extension("tmp-telejob");
    let summary = (|| -> anyhow::Result<(String, u64, u64)> {
        let f = std::fs::File::create(&tmp_out).with_context(|| tmp_out.display().to_string())?;
        pack_dir(dir, BufWriter::new(f))?;
        let mut r = HashingReader::new(std::io::BufReader::new(std::fs::File::open(&tmp_out)?));
        let s = unpack(&mut r, into, &UnpackLimits::default())?;
        std::io::copy(&mut r, &mut std::io::sink())?;
        let (sha, size) = r.finish();
        Ok((sha, size, s.files))
    })();
    match summary {
        Ok(s) => {
            std::fs::rename(&tmp_out, out).with_context(|| out.display().to_string())?;
            Ok(s)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp_out);
            Err(e)
        }
    }
}
