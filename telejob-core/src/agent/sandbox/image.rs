//! Images: the read-only root file systems runs start from. An image is a directory tree; each
//! run gets an overlay whose lower layer is the image (shared by every run of it, never copied)
//! and whose upper layer is the run's own, on its disk, thrown away with it.
//!
//! The default image, `default`, is built by telejob itself with Debian's `mmdebstrap` (the one
//! host dependency for it): a bare-bones Debian with the common tools the original service
//! named (git, xz-utils, curl, Python with pip…) and apt's package lists, so that a job's
//! `apt-get install -y jq` works as on a fresh machine. Operators may register other trees (an
//! exported container file system, say) by name. `host` keeps runs what they are without
//! root: restricted processes that see the host's own root file system, read-only.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{Error, Result};

/// The image runs use unless the job or the operator names another.
pub const DEFAULT_IMAGE: &str = "default";
/// The host's own root file system, as an image.
pub const HOST_IMAGE: &str = "host";
/// The Debian suite `telejob image build` uses unless told.
pub const DEFAULT_SUITE: &str = "bookworm";
/// The packages the default image holds beyond Debian's `apt` variant.
pub const DEFAULT_PACKAGES: &[&str] = &[
    "ca-certificates",
    "curl",
    "git",
    "xz-utils",
    "bzip2",
    "zstd",
    "unzip",
    "python3",
    "python3-pip",
    "python3-venv",
    "sudo",
    "procps",
    "less",
];

/// A run's root file system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRoot {
    /// The host's own root file system: runs of `host` are not machines but restricted
    /// processes of the host, as without root (the host read-only, a UID of their own, the
    /// host's network unless it is off).
    Host,
    /// A directory tree, owned by the host's root, id-mapped onto the run's UID block.
    Tree(PathBuf),
}

/// The images of this host: those built under `dir` (`dir/<name>`), those the operator named,
/// and `host`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Images {
    /// Where `telejob image build` puts images.
    pub dir: PathBuf,
    /// Operator-registered trees (`[images]` of the config), by name.
    pub named: BTreeMap<String, PathBuf>,
}

impl Images {
    /// Images built under `dir`, and no others but `host`.
    pub fn in_dir(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            named: BTreeMap::new(),
        }
    }

    /// Every image name this host has, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().join(MARKER).is_file())
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .chain(self.named.keys().cloned())
            .chain([HOST_IMAGE.to_string()])
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Whether `name` is an image here.
    pub fn has(&self, name: &str) -> bool {
        self.resolve(name).is_ok()
    }

    /// The root file system of image `name`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidJob`] (field `image`) for an image this host does not have, saying how
    /// to build it.
    pub fn resolve(&self, name: &str) -> Result<ImageRoot> {
        if name == HOST_IMAGE {
            return Ok(ImageRoot::Host);
        }
        if let Some(p) = self.named.get(name) {
            return if p.is_dir() {
                Ok(ImageRoot::Tree(p.clone()))
            } else {
                Err(Error::invalid(
                    "image",
                    format!(
                        "image {name:?} is registered at {}, which is not a directory",
                        p.display()
                    ),
                ))
            };
        }
        let p = self.dir.join(name);
        if valid_name(name) && p.join(MARKER).is_file() {
            return Ok(ImageRoot::Tree(p));
        }
        let how = if name == DEFAULT_IMAGE {
            "build it with `telejob image build` (needs Debian's mmdebstrap and network access to the Debian archive)"
                .to_string()
        } else {
            format!("choose one of {}", self.names().join(", "))
        };
        Err(Error::invalid(
            "image",
            format!("this host has no image {name:?}: {how}"),
        ))
    }
}

/// The file that marks a finished image (`telejob image build` writes it last).
const MARKER: &str = ".telejob-image";

/// Whether `name` can name an image directory: like a job name.
pub fn valid_name(name: &str) -> bool {
    crate::job::JobName::new(name).is_ok()
}

/// What `telejob image build` builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildOptions {
    /// The Debian suite.
    pub suite: String,
    /// The packages beyond Debian's `apt` variant.
    pub include: Vec<String>,
    /// The Debian mirror (default: mmdebstrap's).
    pub mirror: Option<String>,
}

impl Default for BuildOptions {
    fn default() -> Self {
        Self {
            suite: DEFAULT_SUITE.into(),
            include: DEFAULT_PACKAGES.iter().map(|p| (*p).to_string()).collect(),
            mirror: None,
        }
    }
}

/// Builds image `name` under `images.dir` with mmdebstrap, calling `progress` with each line
/// it prints; the image appears (atomically, by a rename) only once complete. Returns its
/// directory.
///
/// # Errors
///
/// [`Error::Config`] for a bad name or a missing mmdebstrap; [`Error::Spawn`] when mmdebstrap
/// fails (its last lines say why).
pub fn build(
    images: &Images,
    name: &str,
    opts: &BuildOptions,
    mut progress: impl FnMut(&str),
) -> Result<PathBuf> {
    if !valid_name(name) || name == HOST_IMAGE {
        return Err(Error::config(
            "image",
            format!("{name:?} cannot name an image: use lowercase letters, digits and dashes"),
        ));
    }
    std::fs::create_dir_all(&images.dir).map_err(|e| Error::io(&images.dir, e))?;
    let target = images.dir.join(name);
    let partial = images
        .dir
        .join(format!(".{name}.partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&partial);
    let mut cmd = Command::new("mmdebstrap");
    cmd.args(["--variant=apt", "--mode=root", "--skip=cleanup/apt/lists"])
        .arg(format!("--include={}", opts.include.join(",")))
        // The machine is the job's and thrown away after the run: `pip install` system-wide
        // is the job's to do, so PEP 668's guard against mixing pip and apt is lifted.
        .arg(r#"--customize-hook=rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED"#)
        // The image trusts what the host trusts: the host's own local CAs (a TLS-inspecting
        // proxy's, say), so that HTTPS from runs works where it works on the host.
        .arg(concat!(
            "--customize-hook=if [ -d /usr/local/share/ca-certificates ]; then ",
            r#"cp -a /usr/local/share/ca-certificates/. "$1"/usr/local/share/ca-certificates/ && "#,
            r#"chroot "$1" update-ca-certificates >/dev/null; fi"#
        ))
        .arg(&opts.suite)
        .arg(&partial);
    if let Some(m) = &opts.mirror {
        cmd.arg(m);
    }
    // mmdebstrap (as root) mounts /proc, /sys and /dev into the tree it builds: in a mount
    // namespace of its own, those mounts go with it however it ends, and a build cut short
    // (telejob killed) leaves no host /dev or /sys mounted under the data directory for a later
    // clean-up to walk into. It ends with telejob.
    // SAFETY: prctl(2), unshare(2) and mount(2) between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
            if libc::unshare(libc::CLONE_NEWNS) != 0
                || libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            Error::config(
                "image",
                format!("cannot run mmdebstrap ({e}): install Debian's mmdebstrap package"),
            )
        })?;
    let mut tail: Vec<String> = Vec::new();
    if let Some(err) = child.stderr.take() {
        for line in BufReader::new(err).lines().map_while(std::io::Result::ok) {
            progress(&line);
            tail.push(line);
            if tail.len() > 5 {
                tail.remove(0);
            }
        }
    }
    let status = child.wait().map_err(|e| Error::spawn("mmdebstrap", e))?;
    if !status.success() {
        let _ = std::fs::remove_dir_all(&partial);
        return Err(Error::spawn(
            format!("mmdebstrap failed: {}", tail.join(" / ")),
            std::io::Error::other(status.to_string()),
        ));
    }
    let marker = serde_json::json!({
        "suite": opts.suite,
        "include": opts.include,
        "built_at": chrono::Utc::now().to_rfc3339(),
    });
    std::fs::write(partial.join(MARKER), marker.to_string()).map_err(|e| Error::io(&partial, e))?;
    if target.exists() {
        let old = images
            .dir
            .join(format!(".{name}.old-{}", std::process::id()));
        std::fs::rename(&target, &old).map_err(|e| Error::io(&target, e))?;
        let _ = std::fs::remove_dir_all(&old);
    }
    std::fs::rename(&partial, &target).map_err(|e| Error::io(&target, e))?;
    Ok(target)
}

/// A one-line description of `root` for run logs: the image's name and, for a built one, its
/// suite.
pub fn describe(name: &str, root: &ImageRoot) -> String {
    match root {
        ImageRoot::Host => "host (runs see this host's root file system, read-only)".into(),
        ImageRoot::Tree(p) => {
            let suite = std::fs::read_to_string(p.join(MARKER))
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .and_then(|v| v["suite"].as_str().map(str::to_string));
            match suite {
                Some(s) => format!("{name} (Debian {s})"),
                None => name.to_string(),
            }
        }
    }
}

/// Whether `path` is a directory an image can be (for operator-registered trees).
pub fn looks_like_a_root(path: &Path) -> bool {
    path.join("bin").exists() && path.join("etc").is_dir()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_resolve_by_name_and_a_missing_one_says_how_to_build_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let images = Images::in_dir(dir.path());
        assert_eq!(images.resolve("host").expect("host"), ImageRoot::Host);
        let e = images
            .resolve("default")
            .expect_err("not built")
            .to_string();
        assert!(
            e.contains("image") && e.contains("telejob image build"),
            "{e}"
        );
        std::fs::create_dir_all(dir.path().join("default")).expect("dir");
        assert!(
            !images.has("default"),
            "a tree without its marker is unfinished"
        );
        std::fs::write(
            dir.path().join("default").join(MARKER),
            "{\"suite\": \"bookworm\"}",
        )
        .expect("marker");
        assert_eq!(
            images.resolve("default").expect("built"),
            ImageRoot::Tree(dir.path().join("default"))
        );
        assert_eq!(images.names(), ["default", "host"]);
        let e = images.resolve("alpine").expect_err("unknown").to_string();
        assert!(e.contains("default, host"), "{e}");
        assert_eq!(
            describe("default", &images.resolve("default").expect("x")),
            "default (Debian bookworm)"
        );
        assert!(images.resolve("../etc").is_err());
    }
}
