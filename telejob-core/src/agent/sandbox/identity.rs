//! Who a run executes as. When telejob runs as root, each run gets a UID/GID of its own, leased
//! from a configured range (as systemd's `DynamicUser` does): no two runs in flight share one, and
//! the lease is released when the run is over and its files are gone.
//!
//! Leases are `flock`s on one file per UID in a lock directory that every telejob process of the
//! host shares (`/run/telejob/uids` by default), so a server, its replicas and a `telejob run`
//! beside them never hand out the same UID; a lock dies with its process, so a crash leaks nothing.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The range run UIDs (and GIDs, the same numbers) are leased from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UidRange {
    /// The first UID.
    pub first: u32,
    /// How many UIDs (also the most runs that can be in flight on the host).
    pub count: u32,
    /// Where the lease files are; every telejob process of the host must use the same one.
    pub lock_dir: PathBuf,
}

impl Default for UidRange {
    /// 1879048192–1879113727 (0x70000000 + 65536): systemd's UIDs.md leaves 1879048192–2147483647
    /// unused, so neither its dynamic users nor container ranges land there.
    fn default() -> Self {
        Self {
            first: Self::DEFAULT_FIRST,
            count: Self::DEFAULT_COUNT,
            lock_dir: PathBuf::from("/run/telejob/uids"),
        }
    }
}

/// The error of a UID range setting: `setting` named, with the text and `why`.
pub(super) fn range_error(setting: &str, s: &str, why: &str) -> Error {
    Error::config(setting, format!("{s:?}: {why}"))
}

/// Splits a UID range `FIRST-LAST` (inclusive) into its numbers; `example` shows the form.
pub(super) fn uid_span(setting: &str, s: &str, example: &str) -> Result<(u64, u64)> {
    let bad = |why: String| range_error(setting, s, &why);
    let (a, b) = s
        .trim()
        .split_once('-')
        .ok_or_else(|| bad(format!("write the range as FIRST-LAST, e.g. {example}")))?;
    let number = |t: &str, which: &str| {
        t.trim()
            .parse::<u64>()
            .map_err(|_| bad(format!("{which} is not a number")))
    };
    Ok((number(a, "FIRST")?, number(b, "LAST")?))
}

impl UidRange {
    /// The default range's first UID.
    pub const DEFAULT_FIRST: u32 = 0x7000_0000;
    /// The default range's size.
    pub const DEFAULT_COUNT: u32 = 65_536;

    /// Parses `FIRST-LAST` (inclusive), keeping the default lock directory.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming `setting` when the text is not such a range, is empty, or starts
    /// below 1000 (system accounts).
    pub fn parse(setting: &str, s: &str) -> Result<Self> {
        let bad = |why: &str| range_error(setting, s, why);
        let (first, last) = uid_span(setting, s, "1879048192-1879113727")?;
        if last < first {
            return Err(bad("LAST is below FIRST"));
        }
        if first < 1000 {
            return Err(bad(
                "the range must start at 1000 or above, clear of system accounts",
            ));
        }
        let (Ok(first), Ok(last)) = (u32::try_from(first), u32::try_from(last)) else {
            return Err(bad("LAST must be below 4294967295"));
        };
        if last == u32::MAX {
            return Err(bad("4294967295 is not a valid UID"));
        }
        Ok(Self {
            first,
            count: last - first + 1,
            ..Self::default()
        })
    }

    /// The last UID of the range.
    pub fn last(&self) -> u32 {
        self.first + (self.count - 1)
    }

    fn contains(&self, id: u32) -> bool {
        (self.first..=self.last()).contains(&id)
    }

    /// Checks that no local account, group or subordinate ID range (`/etc/passwd`, `/etc/group`,
    /// `/etc/subuid`, `/etc/subgid`) falls in the range. Accounts only a directory service knows
    /// are checked one by one when a UID is leased.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] (setting `uid_range`) naming the colliding entry.
    pub fn check_against_accounts(&self) -> Result<()> {
        let collide = |file: &str, what: String| {
            Error::config(
                "uid_range",
                format!(
                    "{}-{} overlaps {what} in {file}; choose a range no account uses",
                    self.first,
                    self.last()
                ),
            )
        };
        for file in ["/etc/passwd", "/etc/group"] {
            for line in std::fs::read_to_string(file).unwrap_or_default().lines() {
                let mut f = line.split(':');
                let (Some(name), _, Some(id)) = (f.next(), f.next(), f.next()) else {
                    continue;
                };
                if id.parse::<u32>().is_ok_and(|id| self.contains(id)) {
                    return Err(collide(file, format!("{name:?} ({id})")));
                }
            }
        }
        for file in ["/etc/subuid", "/etc/subgid"] {
            for line in std::fs::read_to_string(file).unwrap_or_default().lines() {
                let mut f = line.split(':');
                let (Some(name), Some(start), Some(n)) = (f.next(), f.next(), f.next()) else {
                    continue;
                };
                let (Ok(start), Ok(n)) = (start.trim().parse::<u64>(), n.trim().parse::<u64>())
                else {
                    continue;
                };
                let (lo, hi) = (u64::from(self.first), u64::from(self.last()));
                if n > 0 && start <= hi && start + n > lo {
                    return Err(collide(file, format!("{name:?}'s range {start}+{n}")));
                }
            }
        }
        Ok(())
    }

    /// Leases the lowest free UID of the range.
    ///
    /// # Errors
    ///
    /// [`Error::Spawn`] when the lock directory cannot be made, or every UID is taken.
    pub fn lease(&self) -> Result<UidLease> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.lock_dir)
            .map_err(|e| Error::spawn("cannot make the UID lock directory", e))?;
        let in_use = ProcessUids::scan();
        for uid in self.first..=self.last() {
            let Some(file) = try_lock(&self.lock_dir, uid)
                .map_err(|e| Error::spawn("cannot lock a run UID", e))?
            else {
                continue;
            };
            // A process of this UID that outlived its lease (it cannot, under the supervisor;
            // this is the belt to its braces), or an account a directory service knows.
            if in_use.has(uid) || account_exists(uid) {
                continue;
            }
            return Ok(UidLease { uid, _lock: file });
        }
        Err(Error::spawn(
            "no free run UID",
            io::Error::new(
                io::ErrorKind::ResourceBusy,
                format!(
                    "all {} UIDs of uid_range {}-{} are in use; widen the range or lower max_concurrent_runs",
                    self.count,
                    self.first,
                    self.last()
                ),
            ),
        ))
    }
}

/// A UID leased for one run; dropping it releases the UID.
#[derive(Debug)]
pub struct UidLease {
    uid: u32,
    _lock: File,
}

impl UidLease {
    /// The UID (the GID is the same number).
    pub fn uid(&self) -> u32 {
        self.uid
    }
}

fn try_lock(dir: &Path, uid: u32) -> io::Result<Option<File>> {
    try_lock_file(&dir.join(format!("uid-{uid}.lock")))
}

/// Opens (making it, mode 0600) and `flock`s the lease file `path` without waiting: `None`
/// when another process holds it.
pub(crate) fn try_lock_file(path: &Path) -> io::Result<Option<File>> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)?;
    // SAFETY: flock(2) on a file we own; no memory is involved.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        Ok(Some(f))
    } else {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::WouldBlock {
            Ok(None)
        } else {
            Err(e)
        }
    }
}

/// Whether the user or group database knows `id` (through NSS, so directory services count).
fn account_exists(id: u32) -> bool {
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: both calls write only into the structs and the buffer given, with their lengths,
    // and set `out` to the struct or null.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut out: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwuid_r(id, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut out);
        if rc == 0 && !out.is_null() {
            return true;
        }
        let mut grp: libc::group = std::mem::zeroed();
        let mut out: *mut libc::group = std::ptr::null_mut();
        let rc = libc::getgrgid_r(id, &mut grp, buf.as_mut_ptr(), buf.len(), &mut out);
        rc == 0 && !out.is_null()
    }
}

/// The real, effective, saved and file-system UIDs of every process of the host.
struct ProcessUids(std::collections::HashSet<u32>);

impl ProcessUids {
    fn scan() -> Self {
        let mut set = std::collections::HashSet::new();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            if !e
                .file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
            {
                continue;
            }
            let Ok(status) = std::fs::read_to_string(e.path().join("status")) else {
                continue;
            };
            if let Some(l) = status.lines().find(|l| l.starts_with("Uid:")) {
                set.extend(
                    l[4..]
                        .split_whitespace()
                        .filter_map(|u| u.parse::<u32>().ok()),
                );
            }
        }
        Self(set)
    }

    fn has(&self, uid: u32) -> bool {
        self.0.contains(&uid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(dir: &Path, first: u32, count: u32) -> UidRange {
        UidRange {
            first,
            count,
            lock_dir: dir.to_path_buf(),
        }
    }

    #[test]
    fn ranges_parse_and_bad_ones_name_the_setting() {
        let r = UidRange::parse("uid_range", "2000000-2000009").expect("must work");
        assert_eq!((r.first, r.count, r.last()), (2_000_000, 10, 2_000_009));
        for bad in ["", "5", "10-5", "0-100", "a-b", "2000-4294967295"] {
            let e = UidRange::parse("uid_range", bad)
                .expect_err("must be refused")
                .to_string();
            assert!(e.contains("uid_range"), "{bad}: {e}");
        }
    }

    #[test]
    fn leases_are_exclusive_until_dropped() {
        let dir = tempfile::tempdir().expect("must work");
        let r = range(dir.path(), 1_879_100_000, 2);
        let a = r.lease().expect("must work");
        let b = r.lease().expect("must work");
        assert_ne!(a.uid(), b.uid());
        let e = r.lease().expect_err("must be refused").to_string();
        assert!(e.contains("in use"), "{e}");
        let freed = a.uid();
        drop(a);
        assert_eq!(r.lease().expect("must work").uid(), freed);
    }

    #[test]
    fn a_lease_held_by_another_process_is_respected() {
        let dir = tempfile::tempdir().expect("must work");
        let lock = dir.path().join(format!("uid-{}.lock", 1_879_200_000));
        // flock(1) from util-linux holds the lock in a separate process (-o: itself, not the sleep).
        let mut holder = std::process::Command::new("flock")
            .arg("-o")
            .arg(&lock)
            .args(["sleep", "30"])
            .spawn()
            .expect("flock(1)");
        for _ in 0..200 {
            if lock.exists()
                && try_lock(dir.path(), 1_879_200_000)
                    .expect("must work")
                    .is_none()
            {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let r = range(dir.path(), 1_879_200_000, 2);
        assert_eq!(r.lease().expect("must work").uid(), 1_879_200_001);
        holder.kill().expect("must work");
        holder.wait().expect("must work");
        assert_eq!(r.lease().expect("must work").uid(), 1_879_200_000);
    }

    #[test]
    fn accounts_in_the_range_are_found() {
        // Every Debian system has root (0) in /etc/passwd; a range cannot start at 0, so use the
        // check's own logic on a range holding an existing account instead.
        let nobody = 65_534;
        let r = UidRange {
            first: nobody - 1,
            count: 3,
            lock_dir: PathBuf::new(),
        };
        if std::fs::read_to_string("/etc/passwd")
            .unwrap_or_default()
            .contains(":65534:")
        {
            let e = r
                .check_against_accounts()
                .expect_err("must be refused")
                .to_string();
            assert!(e.contains("uid_range") && e.contains("nobody"), "{e}");
            assert!(account_exists(nobody));
        }
        assert!(UidRange::default().check_against_accounts().is_ok());
    }
}
