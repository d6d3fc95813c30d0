//! The run's disk: all the run may write (its work directory, the upper layer of its root file
//! system, `/tmp`, `/var/tmp`) lives on an ext4 file system of exactly `limits.disk` bytes,
//! made for the run in a sparse file and mounted through a loop device. A write past the limit
//! fails with `ENOSPC` inside the run, open-but-deleted files count, and the host's file system
//! cannot be filled. The file system is made with its root owned by the run's UID block, so
//! that the job is its owner.
//!
//! The disk is mounted on the host, in the run's directory (which only telejob can enter), so
//! that telejob unpacks the code onto it before the run and publishes from it after; it is
//! unmounted (and its loop device released, `autoclear`) when the run is over, and at the next
//! start for runs a crash interrupted.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The smallest disk a run can have: ext4's own structures need a few MiB.
pub const MIN_DISK_BYTES: u64 = 16 << 20;

/// A run's disk.
#[derive(Debug)]
pub(crate) struct RunDisk {
    mount: PathBuf,
    mounted: bool,
}

impl RunDisk {
    /// Makes the disk of the run directory `dir`: with `size`, an ext4 file system of that
    /// many bytes in `dir/disk.img`, mounted at `dir/disk`; without, the plain directory
    /// `dir/disk`. Either way its root is owned by `owner` (the run's UID block).
    ///
    /// # Errors
    ///
    /// When the file cannot be made, `mkfs.ext4` or `mount` fail (their message says why).
    pub(crate) fn create(dir: &Path, size: Option<u64>, owner: u32) -> io::Result<Self> {
        let mount = dir.join("disk");
        std::fs::create_dir(&mount)?;
        let Some(size) = size else {
            std::os::unix::fs::lchown(&mount, Some(owner), Some(owner))?;
            return Ok(Self {
                mount,
                mounted: false,
            });
        };
        if size < MIN_DISK_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "limits.disk: {} is too small for a run's disk; give at least 16MiB",
                    crate::limits::Bytes(size)
                ),
            ));
        }
        let image = dir.join("disk.img");
        {
            use std::os::unix::fs::OpenOptionsExt;
            let f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&image)?;
            // Sparse: the host gives the blocks only as the run writes them.
            f.set_len(size)?;
        }
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0", "-O", "^has_journal", "-E"])
            .arg(format!(
                "root_owner={owner}:{owner},lazy_itable_init=1,nodiscard"
            ))
            .arg(&image))?;
        run(Command::new("mount")
            .args(["-t", "ext4", "-o", "loop,nodev,nosuid,noatime"])
            .arg(&image)
            .arg(&mount))?;
        // lost+found belongs to root: the job has no use for it.
        let _ = std::fs::remove_dir(mount.join("lost+found"));
        Ok(Self {
            mount,
            mounted: true,
        })
    }

    /// Where the disk is.
    pub(crate) fn path(&self) -> &Path {
        &self.mount
    }

    /// Whether the disk is all but full: less than 1 MiB (or 1 %) left. A command that failed
    /// with the disk in this state most likely failed for want of space.
    pub(crate) fn is_full(&self) -> bool {
        if !self.mounted {
            return false;
        }
        let Ok(c) = CString::new(self.mount.as_os_str().as_bytes()) else {
            return false;
        };
        // SAFETY: statvfs(2) into a zeroed struct of the right type; the path is NUL-terminated.
        // fsblkcnt_t and c_ulong are not u64 on every target.
        #[allow(clippy::useless_conversion)]
        let (free, total) = unsafe {
            let mut st: libc::statvfs = std::mem::zeroed();
            if libc::statvfs(c.as_ptr(), &mut st) != 0 {
                return false;
            }
            (
                u64::from(st.f_bavail) * st.f_frsize,
                u64::from(st.f_blocks) * st.f_frsize,
            )
        };
        free < (1 << 20).max(total / 100)
    }

    /// Unmounts the disk (the loop device goes with it); its files go with the run directory.
    #[cfg(test)]
    pub(crate) fn release(mut self) {
        self.unmount();
    }

    fn unmount(&mut self) {
        if std::mem::take(&mut self.mounted) {
            unmount(&self.mount);
        }
    }
}

impl Drop for RunDisk {
    fn drop(&mut self) {
        self.unmount();
    }
}

/// Detaches the mount at `path` (lazily: what still uses it keeps it until done).
pub(crate) fn unmount(path: &Path) {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return;
    };
    // SAFETY: umount2(2) of a NUL-terminated path.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
        tracing::warn!(path = %path.display(), error = %io::Error::last_os_error(), "cannot unmount a run's disk");
    }
}

/// Unmounts every mount at or below `dir`, deepest first: a crashed run's disk before its
/// directory is removed. Returns how many.
pub(crate) fn unmount_below(dir: &Path) -> usize {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return 0;
    };
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(super::cgroup::unescape_mount_path(p)))
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.dedup();
    for p in &points {
        unmount(p);
    }
    points.len()
}

fn run(cmd: &mut Command) -> io::Result<()> {
    let what = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd.output().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("{what}: {e} (install e2fsprogs and util-linux)"),
        )
    })?;
    if out.status.success() {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    #[test]
    fn a_disk_holds_its_size_and_not_a_byte_more() {
        if !root() {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let disk = RunDisk::create(dir.path(), Some(32 << 20), 4242).expect("disk");
        let meta = std::fs::metadata(disk.path()).expect("root");
        assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 4242);
        let f = disk.path().join("big");
        let r = std::fs::write(&f, vec![7u8; 40 << 20]);
        let e = r.expect_err("40 MiB do not fit on a 32 MiB disk");
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
        assert!(disk.is_full());
        // Deleting the file frees the disk.
        std::fs::remove_file(&f).expect("rm");
        assert!(!disk.is_full());
        let (mount, image) = (disk.path().to_path_buf(), dir.path().join("disk.img"));
        disk.release();
        assert!(
            !std::fs::read_to_string("/proc/self/mountinfo")
                .expect("mountinfo")
                .contains(&*mount.to_string_lossy())
        );
        assert!(
            std::fs::metadata(&image).expect("image").len() == 32 << 20,
            "the image stays until the run directory goes"
        );
        std::fs::create_dir(dir.path().join("x")).expect("dir");
        let e = RunDisk::create(&dir.path().join("x"), Some(1 << 20), 1).expect_err("too small");
        assert!(e.to_string().contains("limits.disk"), "{e}");
    }

    #[test]
    fn leftover_mounts_below_a_directory_are_found_and_unmounted() {
        if !root() {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let run = dir.path().join("telejob-run-x");
        std::fs::create_dir(&run).expect("run dir");
        let disk = RunDisk::create(&run, Some(16 << 20), 0).expect("disk");
        std::mem::forget(disk); // a crash: nobody unmounts it
        assert_eq!(unmount_below(dir.path()), 1);
        assert_eq!(unmount_below(dir.path()), 0);
    }
}
