//! The run's user namespace: the job is uid 0 of a namespace that maps a whole block of 65,536
//! host UIDs (and GIDs), leased for this run alone — as systemd-nspawn's
//! `--private-users=pick` does — so that `apt-get`, `dpkg`, `chown` to any user and
//! system-wide `pip install` work, and none of it is root on the host.
//!
//! Blocks are leased like single run UIDs: a `flock` on one file per block in a lock directory
//! every telejob process of the host shares, so replicas and a `telejob run` beside a server
//! never hand out the same block; a lock dies with its process. The default range,
//! 1880096768–2147483647 (4,080 blocks from 0x70100000), lies in the part of the UID space
//! systemd's UIDs.md leaves unused and clear of telejob's single-UID range
//! (1879048192–1879113727).

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;

use crate::error::{Error, Result};

/// UIDs (and GIDs) in one block: a whole 16-bit UID space, as a Linux distribution expects.
pub const BLOCK_SIZE: u32 = 65_536;

/// The blocks runs' user namespaces are leased from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UidBlocks {
    /// The first host UID of the first block (a multiple of [`BLOCK_SIZE`]).
    pub first: u32,
    /// How many blocks (also the most runs with a namespace of their own in flight at once).
    pub count: u32,
    /// Where the lease files are; every telejob process of the host must use the same one.
    pub lock_dir: PathBuf,
}

impl Default for UidBlocks {
    fn default() -> Self {
        Self {
            first: Self::DEFAULT_FIRST,
            count: Self::DEFAULT_COUNT,
            lock_dir: PathBuf::from("/run/telejob/uid-blocks"),
        }
    }
}

impl UidBlocks {
    /// The default range's first UID (0x70100000).
    pub const DEFAULT_FIRST: u32 = 0x7010_0000;
    /// The default range's blocks: up to 2147483647.
    pub const DEFAULT_COUNT: u32 = 4080;

    /// Parses `FIRST-LAST` (inclusive; FIRST a multiple of 65536, the span whole blocks).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming `setting` when the text is not such a range.
    pub fn parse(setting: &str, s: &str) -> Result<Self> {
        let bad = |why: &str| super::identity::range_error(setting, s, why);
        let (first, last) = super::identity::uid_span(setting, s, "1880096768-2147483647")?;
        let size = u64::from(BLOCK_SIZE);
        if first == 0 || !first.is_multiple_of(size) {
            return Err(bad("FIRST must be a non-zero multiple of 65536"));
        }
        if last < first || !(last + 1 - first).is_multiple_of(size) {
            return Err(bad("the range must hold whole blocks of 65536 UIDs"));
        }
        if last >= u64::from(u32::MAX) {
            return Err(bad("LAST must be below 4294967295"));
        }
        Ok(Self {
            first: u32::try_from(first).map_err(|_| bad("FIRST is too large"))?,
            count: u32::try_from((last + 1 - first) / size).map_err(|_| bad("too many blocks"))?,
            ..Self::default()
        })
    }

    /// The host UID block `i` starts at.
    fn base(&self, i: u32) -> u32 {
        self.first + i * BLOCK_SIZE
    }

    /// Whether the range overlaps the single-UID range `[first, last]`.
    pub fn overlaps(&self, first: u32, last: u32) -> bool {
        let (lo, hi) = (
            u64::from(self.first),
            u64::from(self.first) + u64::from(self.count) * u64::from(BLOCK_SIZE) - 1,
        );
        u64::from(first) <= hi && u64::from(last) >= lo
    }

    /// Leases the lowest free block.
    ///
    /// # Errors
    ///
    /// [`Error::Spawn`] when the lock directory cannot be made, or every block is taken.
    pub fn lease(&self) -> Result<BlockLease> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.lock_dir)
            .map_err(|e| Error::spawn("cannot make the UID block lock directory", e))?;
        for i in 0..self.count {
            let base = self.base(i);
            let path = self.lock_dir.join(format!("block-{base}.lock"));
            match super::identity::try_lock_file(&path)
                .map_err(|e| Error::spawn("cannot lock a UID block", e))?
            {
                Some(lock) => {
                    clear_user_keyrings(base);
                    return Ok(BlockLease { base, _lock: lock });
                }
                None => continue,
            }
        }
        Err(Error::spawn(
            "no free UID block",
            io::Error::new(
                io::ErrorKind::ResourceBusy,
                format!(
                    "all {} UID blocks from {} are in use; lower max_concurrent_runs",
                    self.count, self.first
                ),
            ),
        ))
    }
}

/// Empties the user and user-session keyrings of host UID `uid` (the block's root), so that
/// nothing a run of the block kept there reaches the next. Jobs cannot name those keyrings (the
/// system call filter), so they are empty unless something slipped past it; this is the second
/// line. Needs root; does nothing otherwise.
fn clear_user_keyrings(uid: u32) {
    const KEYCTL_GET_KEYRING_ID: libc::c_long = 0;
    const KEYCTL_CLEAR: libc::c_long = 7;
    // SAFETY: the child only calls setres[ug]id, keyctl and _exit, which are async-signal-safe,
    // so forking a multi-threaded process is sound; the parent reaps it.
    unsafe {
        if libc::geteuid() != 0 {
            return;
        }
        let pid = libc::fork();
        if pid == 0 {
            if libc::setresgid(uid, uid, uid) != 0 || libc::setresuid(uid, uid, uid) != 0 {
                libc::_exit(1);
            }
            for ring in [-4 as libc::c_long, -5] {
                let id = libc::syscall(libc::SYS_keyctl, KEYCTL_GET_KEYRING_ID, ring, 0);
                if id > 0 {
                    libc::syscall(libc::SYS_keyctl, KEYCTL_CLEAR, id);
                }
            }
            libc::_exit(0);
        }
        if pid > 0 {
            let mut st = 0;
            libc::waitpid(pid, &mut st, 0);
        }
    }
}

/// A block leased for one run; dropping it releases the block.
#[derive(Debug)]
pub struct BlockLease {
    base: u32,
    _lock: File,
}

impl BlockLease {
    /// The block's first host UID: uid 0 of the run's namespace.
    pub fn base(&self) -> u32 {
        self.base
    }
}

/// A user namespace made for one run, mapping uid and gid 0–65535 to its block: an open
/// handle (`/proc/<pid>/ns/user` of a process that has since gone), which keeps it alive until
/// the run's processes have joined it.
#[derive(Debug)]
pub struct RunUserNs {
    fd: OwnedFd,
}

impl RunUserNs {
    /// Makes the namespace for block `base`: a holder process unshares a user namespace, this
    /// process (root on the host) writes its maps and keeps a handle to it, and the holder
    /// exits.
    ///
    /// # Errors
    ///
    /// When the kernel refuses user namespaces or the maps.
    pub fn create(base: u32) -> io::Result<Self> {
        use std::os::unix::process::CommandExt;
        use std::process::{Command, Stdio};
        // The holder waits on its stdin for this process to have written the maps and opened
        // the namespace. `cat` is on every host this runs on (coreutils).
        let mut cmd = Command::new("cat");
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: unshare(2) between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::unshare(libc::CLONE_NEWUSER) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut holder = cmd.spawn()?;
        let pid = holder.id();
        let result = (|| {
            let map = format!("0 {base} {BLOCK_SIZE}\n");
            std::fs::write(format!("/proc/{pid}/uid_map"), &map)?;
            std::fs::write(format!("/proc/{pid}/gid_map"), &map)?;
            let f = File::open(format!("/proc/{pid}/ns/user"))?;
            Ok(Self { fd: f.into() })
        })();
        // Closing its stdin ends the holder; the namespace lives on in the handle.
        if let Some(mut stdin) = holder.stdin.take() {
            let _ = stdin.flush();
        }
        let _ = holder.kill();
        let _ = holder.wait();
        result
    }

    /// The raw handle, for `setns(2)` and idmapped mounts.
    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// A second handle to the namespace (for the supervisor, which closes its own).
    ///
    /// # Errors
    ///
    /// When the descriptor cannot be duplicated.
    pub fn try_clone_fd(&self) -> io::Result<OwnedFd> {
        self.fd.try_clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_ranges_parse_and_bad_ones_name_the_setting() {
        let b = UidBlocks::parse("uid_blocks", "1880096768-1880227839").expect("two blocks");
        assert_eq!((b.first, b.count), (1_880_096_768, 2));
        assert_eq!(b.base(1), 1_880_096_768 + 65_536);
        for bad in [
            "",
            "5-6",
            "1880096769-1880227839",
            "1880096768-1880096768",
            "a-b",
        ] {
            let e = UidBlocks::parse("uid_blocks", bad)
                .expect_err(bad)
                .to_string();
            assert!(e.contains("uid_blocks"), "{bad}: {e}");
        }
        assert!(!UidBlocks::default().overlaps(1_879_048_192, 1_879_113_727));
        assert!(UidBlocks::default().overlaps(1_880_096_768, 1_880_096_768));
    }

    #[test]
    fn block_leases_are_exclusive_until_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blocks = UidBlocks {
            first: UidBlocks::DEFAULT_FIRST,
            count: 2,
            lock_dir: dir.path().to_path_buf(),
        };
        let a = blocks.lease().expect("first");
        let b = blocks.lease().expect("second");
        assert_ne!(a.base(), b.base());
        assert_eq!(b.base() - a.base(), BLOCK_SIZE);
        let e = blocks.lease().expect_err("full").to_string();
        assert!(e.contains("in use"), "{e}");
        let freed = a.base();
        drop(a);
        assert_eq!(blocks.lease().expect("again").base(), freed);
    }

    #[test]
    fn a_run_namespace_maps_its_block_to_uid_0() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let ns = RunUserNs::create(UidBlocks::DEFAULT_FIRST).expect("user namespace");
        let link = std::fs::read_link(format!("/proc/self/fd/{}", ns.raw_fd())).expect("link");
        assert!(link.to_string_lossy().starts_with("user:["), "{link:?}");
    }
}
