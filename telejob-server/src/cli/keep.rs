//! What `telejob worker shell` keeps of the workspace it ends with (the workspace itself is
//! discarded): the code directory copied back to the host (`--save-to DIR`) or packed
//! (`--package FILE`), both through the unpacker runs use, so that nothing the worker made
//! (a link out, a path that climbs) lands on the host.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::Context;

use crate::error::bad;

/// What to keep, and since when the host's copies count as changed by someone else.
#[derive(Debug, Clone)]
pub struct Keep {
    /// Copy the code directory back here.
    pub save_to: Option<PathBuf>,
    /// Pack the code directory into this tarball.
    pub package: Option<PathBuf>,
    /// Overwrite files changed on the host during the session.
    pub force: bool,
    /// When the session started.
    pub since: SystemTime,
}

impl Keep {
    /// Whether nothing is kept.
    pub fn is_nothing(&self) -> bool {
        self.save_to.is_none() && self.package.is_none()
    }

    /// Keeps the code directory `code` as asked; returns what was done, one line each.
    ///
    /// # Errors
    ///
    /// A host file changed during the session (without `force`: nothing is overwritten and the
    /// worker's copy stays beside it, named), or the code that does not pack or unpack.
    pub fn keep(&self, code: &Path) -> anyhow::Result<Vec<String>> {
        let mut done = Vec::new();
        if let Some(file) = &self.package {
            if !self.force && changed_since(file, self.since) {
                return Err(bad(format!(
                    "--package {}: the file changed on this host during the session; not overwritten (use --force)",
                    file.display()
                )));
            }
            let (sha, size, files) = super::package::pack_checked_now(code, file)?;
            done.push(format!(
                "packed the code directory into {} ({files} files, {size} bytes, sha256 {sha})",
                file.display()
            ));
        }
        if let Some(dir) = &self.save_to {
            done.push(self.save(code, dir)?);
        }
        Ok(done)
    }

    /// Copies `code` over `dir`: each file whole (renamed into place), the files the worker
    /// removed removed; `.git` (which packing leaves out) untouched.
    fn save(&self, code: &Path, dir: &Path) -> anyhow::Result<String> {
        let shown = dir.display();
        std::fs::create_dir_all(dir).with_context(|| format!("--save-to {shown}"))?;
        let parent = dir.parent().filter(|p| !p.as_os_str().is_empty());
        let staging = tempfile::Builder::new()
            .prefix(".telejob-save-")
            .tempdir_in(parent.unwrap_or(Path::new(".")))
            .with_context(|| format!("--save-to {shown}"))?;
        // Packed and unpacked by the runs' unpacker: what lands here passed its checks.
        let tree = staging.path().join("code");
        std::fs::create_dir(&tree)?;
        super::package::pack_checked_into(code, &staging.path().join("code.tar.gz"), &tree)?;
        let theirs = files(&tree)?;
        let ours = files(dir)?;
        let conflicts: Vec<&PathBuf> = ours
            .iter()
            .filter(|rel| {
                changed_since(&dir.join(rel), self.since)
                    && !same_file(&dir.join(rel), &tree.join(rel))
            })
            .collect();
        if !conflicts.is_empty() && !self.force {
            let kept = staging.keep();
            let names: Vec<String> = conflicts.iter().map(|p| p.display().to_string()).collect();
            return Err(bad(format!(
                "--save-to {shown}: {} changed on this host during the session ({}), so nothing was overwritten; the worker's copy is in {} (use --force to overwrite)",
                if names.len() == 1 { "a file" } else { "files" },
                names.join(", "),
                kept.join("code").display()
            )));
        }
        let owner = std::fs::metadata(dir).map(|m| (m.uid(), m.gid()))?;
        let mut changed = 0;
        for rel in &theirs {
            let (from, to) = (tree.join(rel), dir.join(rel));
            if same_file(&from, &to) {
                continue;
            }
            if let Some(p) = to.parent() {
                std::fs::create_dir_all(p)?;
            }
            if to.symlink_metadata().is_ok_and(|m| m.is_dir()) {
                std::fs::remove_dir_all(&to)?;
            }
            std::fs::rename(&from, &to).with_context(|| to.display().to_string())?;
            // Written as root (a machine needs it), the files are the directory owner's again.
            let now = std::fs::symlink_metadata(&to).map(|m| (m.uid(), m.gid()))?;
            if now != owner {
                std::os::unix::fs::lchown(&to, Some(owner.0), Some(owner.1))
                    .with_context(|| to.display().to_string())?;
            }
            changed += 1;
        }
        let mut removed = 0;
        for rel in ours.difference(&theirs) {
            std::fs::remove_file(dir.join(rel))?;
            removed += 1;
        }
        Ok(format!(
            "saved the code directory to {shown}: {} files, {changed} written, {removed} removed",
            theirs.len()
        ))
    }
}

/// Whether `p` was modified after `since`.
fn changed_since(p: &Path, since: SystemTime) -> bool {
    std::fs::symlink_metadata(p)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t > since)
}

/// Whether `a` and `b` are both files (or links) with the same content (or target).
fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::symlink_metadata(a), std::fs::symlink_metadata(b)) {
        (Ok(x), Ok(y)) if x.is_symlink() && y.is_symlink() => {
            std::fs::read_link(a).ok() == std::fs::read_link(b).ok()
        }
        (Ok(x), Ok(y)) if x.is_file() && y.is_file() => {
            x.len() == y.len()
                && x.mode() == y.mode()
                && std::fs::read(a).ok() == std::fs::read(b).ok()
        }
        _ => false,
    }
}

/// The files and links under `root`, relative to it, `.git` left out (as packing does).
fn files(root: &Path) -> std::io::Result<BTreeSet<PathBuf>> {
    let mut out = BTreeSet::new();
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        for e in std::fs::read_dir(root.join(&rel))? {
            let e = e?;
            let sub = rel.join(e.file_name());
            if rel.as_os_str().is_empty() && e.file_name() == ".git" {
                continue;
            }
            if e.file_type()?.is_dir() {
                todo.push(sub);
            } else {
                out.insert(sub);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(p: &Path, s: &str) {
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, s).expect("write");
    }

    #[test]
    fn the_work_is_saved_back_without_overwriting_what_changed_on_the_host() {
        let t = tempfile::tempdir().expect("tmp");
        let (host, worker) = (t.path().join("host"), t.path().join("worker"));
        write(&host.join("run.sh"), "old");
        write(&host.join("gone.txt"), "removed in the worker");
        write(&host.join(".git/HEAD"), "ref: main");
        let since = SystemTime::now();
        std::thread::sleep(std::time::Duration::from_millis(20));
        write(&worker.join("run.sh"), "edited in the worker");
        write(&worker.join("lib/new.py"), "print(1)");
        let keep = Keep {
            save_to: Some(host.clone()),
            package: None,
            force: false,
            since,
        };
        let said = keep.keep(&worker).expect("saved");
        assert!(
            said[0].contains("2 files, 2 written, 1 removed"),
            "{said:?}"
        );
        let read = |p: &str| std::fs::read_to_string(host.join(p)).ok();
        assert_eq!(read("run.sh").as_deref(), Some("edited in the worker"));
        assert_eq!(read("lib/new.py").as_deref(), Some("print(1)"));
        assert_eq!(read("gone.txt"), None);
        assert_eq!(read(".git/HEAD").as_deref(), Some("ref: main"), "git stays");
        // Edited on the host meanwhile: refused, naming it, and the worker's copy kept.
        write(&host.join("run.sh"), "edited on the host");
        write(&worker.join("run.sh"), "edited in the worker again");
        let e = keep.keep(&worker).expect_err("a newer file");
        let msg = e.to_string();
        assert!(msg.contains("run.sh") && msg.contains("--force"), "{msg}");
        assert_eq!(read("run.sh").as_deref(), Some("edited on the host"));
        let copy = msg
            .split("copy is in ")
            .nth(1)
            .and_then(|s| s.split(' ').next());
        let copy = PathBuf::from(copy.expect("named"));
        assert_eq!(
            std::fs::read_to_string(copy.join("run.sh")).ok().as_deref(),
            Some("edited in the worker again")
        );
        let forced = Keep {
            force: true,
            ..keep
        };
        forced.keep(&worker).expect("forced");
        assert_eq!(
            read("run.sh").as_deref(),
            Some("edited in the worker again")
        );
    }
}
